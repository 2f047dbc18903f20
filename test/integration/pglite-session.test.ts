/**
 * PGlite with statements kept prepared (src/store/pglite-session.ts), on a real PGlite: values and rows as
 * `PGlite.query` gives them, a bounded set of prepared statements, errors that leave the session usable,
 * transactions that are isolated from statements queued behind them, and DDL that changes a result shape.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import { openDb, type Db } from '../../src/store/db.ts';
import { PGliteSession } from '../../src/store/pglite-session.ts';

describe('PGlite session with prepared statements', () => {
  let db: Db;
  before(async () => {
    db = await openDb('memory://');
    await db.exec(
      `CREATE TABLE t (id int PRIMARY KEY, name text, doc jsonb, tags text[], at timestamptz, big bigint, ok boolean)`,
    );
  });
  after(() => db.close());

  it('writes and reads values as PGlite.query does, and counts rows like node-postgres', async () => {
    const at = new Date('0050-06-15T12:00:00.000Z');
    const ins = await db.query(
      `INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7), ($8, NULL, NULL, NULL, NULL, NULL, NULL)`,
      [1, 'a\nb "c"', { nested: [1, 'x'] }, ['x', 'y z'], at, '9007199254740993', true, 2],
    );
    assert.equal(ins.rowCount, 2);
    const sel = await db.query<Record<string, unknown>>(`SELECT * FROM t ORDER BY id`);
    assert.equal(sel.rowCount, 2);
    assert.deepEqual(sel.rows[0], {
      id: 1,
      name: 'a\nb "c"',
      doc: { nested: [1, 'x'] },
      tags: ['x', 'y z'],
      at,
      big: 9007199254740993n,
      ok: true,
    });
    assert.deepEqual(sel.rows[1], {
      id: 2,
      name: null,
      doc: null,
      tags: null,
      at: null,
      big: null,
      ok: null,
    });
    assert.equal((await db.query(`UPDATE t SET name = 'n' WHERE id > $1`, [0])).rowCount, 2);
    assert.equal((await db.query(`DELETE FROM t WHERE id = $1`, [99])).rowCount, 0);
    await db.query(`DELETE FROM t`);
  });

  it('keeps at most its capacity of statements prepared, closing the least recently used', async () => {
    const pglite = await PGlite.create();
    try {
      const session = new PGliteSession(pglite, 3);
      const run = (sql: string) => session.run<{ n: number }>(sql, [], true);
      for (let i = 0; i < 3; i++) await run(`SELECT ${i} AS n`);
      await run(`SELECT 0 AS n`); // used again: now the most recent
      await run(`SELECT 3 AS n`); // evicts SELECT 1
      const prepared = await pglite.query<{ statement: string }>(
        `SELECT statement FROM pg_prepared_statements`,
      );
      assert.deepEqual(prepared.rows.map((r) => r.statement).sort(), [
        'SELECT 0 AS n',
        'SELECT 2 AS n',
        'SELECT 3 AS n',
      ]);
      assert.equal((await run(`SELECT 1 AS n`)).rows[0]!.n, 1); // prepared again
    } finally {
      await pglite.close();
    }
  });

  it('rejects bad statements and bad values with their SQLSTATE and stays usable', async () => {
    await assert.rejects(db.query(`SELEC 1`), { code: '42601' });
    await assert.rejects(db.query(`SELECT $1::uuid AS id`, ['nope']), { code: '22P02' });
    await db.query(`INSERT INTO t (id) VALUES (1)`);
    await assert.rejects(db.query(`INSERT INTO t (id) VALUES ($1)`, [1]), { code: '23505' });
    assert.deepEqual(
      (await db.query(`SELECT $1::uuid AS id`, ['00000000-0000-0000-0000-000000000001'])).rows,
      [{ id: '00000000-0000-0000-0000-000000000001' }],
    );
    await db.query(`DELETE FROM t`);
  });

  it('rolls back a transaction that throws, and refuses to report a commit of an aborted one', async () => {
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO t (id) VALUES (10)`);
        throw new Error('boom');
      }),
      /boom/,
    );
    let ranAfterCommit = false;
    await assert.rejects(
      db.transaction(async (tx) => {
        tx.afterCommit(() => (ranAfterCommit = true));
        await tx.query(`INSERT INTO t (id) VALUES (11)`);
        await tx.query(`INSERT INTO t (id) VALUES (11)`).catch(() => undefined); // aborts the transaction
      }),
      /aborted/,
    );
    assert.equal(ranAfterCommit, false);
    assert.equal((await db.query(`SELECT id FROM t`)).rowCount, 0);
    const committed = await db.transaction(async (tx) => {
      tx.afterCommit(() => (ranAfterCommit = true));
      return (await tx.query<{ id: number }>(`INSERT INTO t (id) VALUES (12) RETURNING id`)).rows[0]!.id;
    });
    assert.equal(committed, 12);
    assert.equal(ranAfterCommit, true);
    await db.query(`DELETE FROM t`);
  });

  it('sends BEGIN with the first statement: a first statement that fails rolls back; none runs, none is sent', async () => {
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO t (id) VALUES ($1)`, ['not a number']);
      }),
      { code: '22P02' },
    );
    await assert.rejects(
      db.transaction((tx) => tx.query(`SELEC 1`)),
      { code: '42601' },
    );
    let ran = false;
    assert.equal(await db.transaction(async (tx) => (tx.afterCommit(() => (ran = true)), 7)), 7);
    assert.equal(ran, true);
    await db.transaction((tx) => tx.query(`INSERT INTO t (id) VALUES (40)`));
    assert.deepEqual((await db.query(`SELECT id FROM t`)).rows, [{ id: 40 }]); // not inside a leftover transaction
    await db.query(`DELETE FROM t`);
  });

  it('runs a statement issued during a transaction after it, never inside it', async () => {
    let count: Promise<{ rows: { n: number }[] }> | undefined;
    const tx = db.transaction(async (t) => {
      await t.query(`INSERT INTO t (id) VALUES (20)`);
      count = db.query<{ n: number }>(`SELECT count(*)::int AS n FROM t`); // not in the transaction
      // A barrier instead of a pause: PGlite takes statements in the order they are issued, so had the count
      // not been queued behind the transaction, it would have run inside it, before this statement's answer
      // and the ROLLBACK.
      await t.query(`SELECT 'issued after the count'`);
      throw new Error('rolled back');
    });
    await assert.rejects(tx, /rolled back/);
    assert.deepEqual((await count!).rows, [{ n: 0 }]);
  });

  it('answers with the new shape after DDL changed what a prepared statement returns', async () => {
    await db.query(`INSERT INTO t (id) VALUES (30)`);
    assert.equal(Object.keys((await db.query(`SELECT * FROM t`)).rows[0]!).length, 7);
    await db.exec(`ALTER TABLE t ADD COLUMN extra text DEFAULT 'e'`);
    assert.equal((await db.query<{ extra: string }>(`SELECT * FROM t`)).rows[0]!.extra, 'e');
  });
});

describe('PGlite lanes: background work yields to foreground work, for a bounded time', () => {
  /** Holds the session with a transaction until the returned function is called. */
  async function hold(db: Db): Promise<() => Promise<void>> {
    let release!: () => void;
    let started!: () => void;
    const inside = new Promise<void>((r) => (started = r));
    const tx = db.transaction(async (t) => {
      await t.query(`SELECT 1`);
      started();
      await new Promise<void>((r) => (release = r));
    });
    await inside;
    return async () => {
      release();
      await tx;
    };
  }

  /**
   * Opens a database whose background work yields for `backgroundMaxWaitMs`, holds its session, and runs
   * `queue` with `record(label, work)`: the order in which the queued work finished, once the hold ends.
   */
  async function finishingOrder(
    backgroundMaxWaitMs: number,
    queue: (db: Db, record: (label: string, work: Promise<unknown>) => void) => Promise<void>,
  ): Promise<string[]> {
    const db = await openDb('memory://', { backgroundMaxWaitMs });
    try {
      const order: string[] = [];
      const queued: Promise<unknown>[] = [];
      const release = await hold(db);
      await queue(db, (label, work) => queued.push(work.then(() => order.push(label))));
      await release();
      await Promise.all(queued);
      assert.equal(db.background().background(), db.background());
      assert.equal(db.background().events, db.events);
      return order;
    } finally {
      await db.close();
    }
  }

  it('runs waiting foreground work before background work that has not waited long', async () => {
    const order = await finishingOrder(60_000, async (db, record) => {
      record('background', db.background().query(`SELECT 'b'`));
      record(
        'background tx',
        db.background().transaction((tx) => tx.query(`SELECT 't'`)),
      );
      record('foreground', db.query(`SELECT 'f'`));
    });
    assert.deepEqual(order, ['foreground', 'background', 'background tx']);
  });

  it('runs background work that has waited its bound before foreground work', async () => {
    const order = await finishingOrder(30, async (db, record) => {
      record('background', db.background().query(`SELECT 'b'`));
      await sleep(60); // not a condition: the background work must have waited longer than its bound, 30 ms
      record('foreground', db.query(`SELECT 'f'`));
    });
    assert.deepEqual(order, ['background', 'foreground']);
  });
});
