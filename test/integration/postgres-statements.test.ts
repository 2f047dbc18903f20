/**
 * PostgreSQL statements run as named prepared statements (store/db.ts), on a real server: each connection
 * prepares a text once, and a schema change by another process under a prepared statement is survived. And
 * the sessions: idle in a transaction they end, instants are read in UTC whatever the server's zone, and a
 * transaction a caught statement aborted fails at its COMMIT.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { newTask, type Task } from '../../src/domain/task.ts';
import { uuidv7 } from '../../src/ids.ts';
import { applyTaskEvents, type TaskEventInput } from '../../src/services/reminders/store.ts';
import { openDb } from '../../src/store/db.ts';
import { postgresBackend } from '../helpers/db.ts';
import { plainFields, taskEventInput } from '../helpers/events.ts';

describe(
  'PostgreSQL prepared statements',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    it('prepares each text once per connection and runs it again by name', async () => {
      const { url, drop } = await postgresBackend!.fresh();
      const db = await openDb(url, { poolSize: 1 });
      try {
        await db.exec(`CREATE TABLE t (id int PRIMARY KEY, name text)`);
        for (let i = 0; i < 3; i++) await db.query(`INSERT INTO t (id, name) VALUES ($1, $2)`, [i, `n${i}`]);
        await db.transaction((tx) => tx.query(`SELECT name FROM t WHERE id = $1`, [1]));
        const prepared = await db.query<{ statement: string }>(
          `SELECT statement FROM pg_prepared_statements ORDER BY statement`,
        );
        assert.deepEqual(
          prepared.rows.map((r) => r.statement).filter((sql) => / t\b/.test(sql)),
          [`INSERT INTO t (id, name) VALUES ($1, $2)`, `SELECT name FROM t WHERE id = $1`],
        );
      } finally {
        await db.close();
        await drop();
      }
    });

    it('prepares a statement anew when another process changed the columns it returns', async () => {
      const { url, drop, db: migrator } = await postgresBackend!.fresh();
      const db = await openDb(url, { poolSize: 1 });
      try {
        await migrator.exec(`CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)`);
        assert.deepEqual((await db.query(`SELECT * FROM t`)).rows, [{ id: 1 }]);
        await migrator.exec(`ALTER TABLE t ADD COLUMN extra text DEFAULT 'e'`);
        assert.deepEqual((await db.query(`SELECT * FROM t`)).rows, [{ id: 1, extra: 'e' }]);
        // In a transaction the failed statement aborts it: it fails once, and its retry succeeds.
        const read = () => db.transaction((tx) => tx.query(`SELECT * FROM t WHERE id = $1`, [1]));
        await read();
        await migrator.exec(`ALTER TABLE t ADD COLUMN more int DEFAULT 2`);
        await assert.rejects(read(), { code: '0A000' });
        assert.deepEqual((await read()).rows, [{ id: 1, extra: 'e', more: 2 }]);
      } finally {
        await db.close();
        await drop();
      }
    });
  },
);

describe(
  'PostgreSQL sessions idle in a transaction',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    it("end after the timeout, freeing their row locks for the others' writes (a stopped process held them)", async () => {
      const { url, drop } = await postgresBackend!.fresh();
      const stopped = await openDb(url, { poolSize: 1, idleInTransactionMs: 300 });
      const other = await openDb(url, { poolSize: 1 });
      try {
        assert.deepEqual(
          (
            await other.query<{ t: string }>(
              "SELECT current_setting('idle_in_transaction_session_timeout') AS t",
            )
          ).rows,
          [{ t: '1min' }],
          'the default',
        );
        await other.exec(`CREATE TABLE s (key text PRIMARY KEY, n int); INSERT INTO s VALUES ('ann', 0)`);
        let locked!: () => void;
        const holding = new Promise<void>((resolve) => (locked = resolve));
        // A transaction that takes the row and then does nothing, as a process stopped in the middle of one.
        const held = stopped.transaction(async (tx) => {
          await tx.query(`UPDATE s SET n = n + 1 WHERE key = 'ann'`);
          locked();
          await sleep(3_000);
        });
        const ended = held.then(
          () => 'committed',
          (err: unknown) => String(err),
        );
        await holding;
        const started = performance.now();
        await other.query(`UPDATE s SET n = n + 10 WHERE key = 'ann'`);
        const waited = performance.now() - started;
        assert.ok(waited < 2_000, `the other write waited ${Math.round(waited)} ms`);
        assert.notEqual(await ended, 'committed');
        assert.deepEqual(
          (await other.query('SELECT n FROM s')).rows,
          [{ n: 10 }],
          'the stopped one rolled back',
        );
      } finally {
        await stopped.close().catch(() => undefined);
        await other.close();
        await drop();
      }
    });
  },
);

describe(
  'PostgreSQL sessions of a server in another time zone',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    it('read instants in UTC: a task due in 1850 is completed and its reminder dismissed', async () => {
      const { url, drop, db: admin } = await postgresBackend!.fresh();
      // As a server set up on a host in New York: its sessions start in that zone.
      await admin.exec(
        `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'America/New_York'); END $$`,
      );
      const db = await openDb(url, { poolSize: 1 });
      try {
        assert.deepEqual((await db.query('SHOW timezone')).rows, [{ TimeZone: 'UTC' }]);
        const now = new Date('2026-03-01T12:00:00Z');
        const input = (type: string, task: Task, changes: string[] = []) =>
          taskEventInput(type, task, now, changes);
        const apply = (inputs: TaskEventInput[]) =>
          db.transaction((tx) =>
            applyTaskEvents(tx, inputs, { dedupe: 'reminders', graceMs: 900_000, now, channels: ['in_app'] }),
          );
        // Read in New York's zone, its instants were written with a local-mean-time offset ("-04:56:02")
        // that Date cannot read: the completion threw, was dead-lettered, and the reminder fired.
        const created = newTask(
          uuidv7(),
          'ann',
          plainFields('Old letter', {
            due_date: '1850-01-01T00:00:00.000Z',
            reminders: ['2026-03-02T09:00:00.000Z'],
          }),
          now,
        );
        await apply([input('task.created', created)]);
        const done = {
          ...created,
          status: 'completed' as const,
          completed_at: now.toISOString(),
          version: 2,
        };
        await apply([input('task.completed', done, ['status', 'completed_at'])]);
        assert.deepEqual((await db.query<{ status: string }>('SELECT status FROM reminder_schedule')).rows, [
          { status: 'dismissed' },
        ]);
      } finally {
        await db.close();
        await drop();
      }
    });

    it("run in UTC with the URL's own startup options too, which they keep", async () => {
      const { url, drop, db: admin } = await postgresBackend!.fresh();
      await admin.exec(
        `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'America/New_York'); END $$`,
      );
      const withOptions = new URL(url);
      // A zone named in the URL as well: the sessions' instants are read as UTC whatever it says.
      withOptions.searchParams.set('options', '-c statement_timeout=4321 -c TimeZone=Asia/Tokyo');
      const db = await openDb(withOptions.toString(), { poolSize: 1 });
      try {
        assert.deepEqual((await db.query('SHOW timezone')).rows, [{ TimeZone: 'UTC' }]);
        assert.deepEqual((await db.query('SHOW statement_timeout')).rows, [{ statement_timeout: '4321ms' }]);
      } finally {
        await db.close();
      }
      // The same in the form WHATWG's URL parser refuses and node-postgres takes: credentials, no host before
      // the path, the host a parameter (Cloud SQL's Unix socket form).
      const parsed = new URL(url);
      const socketForm =
        `postgres://${parsed.username}${parsed.password ? `:${parsed.password}` : ''}@${parsed.pathname}` +
        `?host=${parsed.hostname}&port=${parsed.port}&options=${encodeURIComponent('-c statement_timeout=4321')}`;
      assert.throws(() => new URL(socketForm));
      const bySocketForm = await openDb(socketForm, { poolSize: 1 });
      try {
        assert.deepEqual((await bySocketForm.query('SHOW timezone')).rows, [{ TimeZone: 'UTC' }]);
        assert.deepEqual((await bySocketForm.query('SHOW statement_timeout')).rows, [
          { statement_timeout: '4321ms' },
        ]);
      } finally {
        await bySocketForm.close();
        await drop();
      }
    });
  },
);

describe(
  'PostgreSQL transactions a caught statement aborted',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    it('fail at COMMIT (which answers ROLLBACK), without running their after-commit callbacks', async () => {
      const { url, drop } = await postgresBackend!.fresh();
      const db = await openDb(url, { poolSize: 1 });
      try {
        await db.exec(`CREATE TABLE a (n int)`);
        let ran = false;
        await assert.rejects(
          db.transaction(async (tx) => {
            tx.afterCommit(() => (ran = true));
            await tx.query(`INSERT INTO a VALUES (1)`);
            await tx.query(`SELECT 1 / 0`).catch(() => undefined);
          }),
          /aborted by an earlier failed statement/,
        );
        assert.equal(ran, false, 'nothing committed, nothing to signal');
        assert.deepEqual((await db.query('SELECT n FROM a')).rows, []);
        // The connection is good for the next transaction.
        await db.transaction((tx) => tx.query(`INSERT INTO a VALUES (2)`));
        assert.deepEqual((await db.query('SELECT n FROM a')).rows, [{ n: 2 }]);
      } finally {
        await db.close();
        await drop();
      }
    });
  },
);
