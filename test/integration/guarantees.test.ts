/**
 * Guarantees that scripts/mutants breaks and no other test noticed: one lease holder at a time (one active
 * relay), the relay publishing a backlog in outbox id order per key (also with two relays on one PostgreSQL
 * database), a consumer's position never moving past a message whose handler had not finished, and the
 * outbox refusing an event that breaks its schema, and JWT_ISSUER / JWT_AUDIENCE being enforced.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AuthError, createVerifier, signDevToken } from '../../src/auth.ts';
import type { BusMessage } from '../../src/bus/types.ts';
import { TOPICS } from '../../src/contracts/topics.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { releaseLease, tryAcquireLease } from '../../src/store/lease.ts';
import { appendEvents } from '../../src/store/outbox.ts';
import { TEST_SECRET, outboxRelayed, startApp, waitFor } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { harnesses, type TransportHarness } from '../helpers/transports.ts';

const DAY = 86_400_000;

/** The task-events log as the bus holds it: per key, the titles in offset order, and each event id's count. */
async function taskEventsLog(db: Db) {
  const r = await db.query<{ key: string; value: { id: string; data: { task: { title: string } } } }>(
    `SELECT key, value FROM bus_messages WHERE topic = $1 ORDER BY partition, "offset"`,
    [TOPICS.taskEvents],
  );
  const byKey = new Map<string, string[]>();
  const copies = new Map<string, number>();
  for (const m of r.rows) {
    byKey.set(m.key, [...(byKey.get(m.key) ?? []), m.value.data.task.title]);
    copies.set(m.value.id, (copies.get(m.value.id) ?? 0) + 1);
  }
  return { byKey, copies, total: r.rows.length };
}

/** Writes `perKey` events for each key, interleaved across keys and transactions; titles are `<key>-<n>`. */
async function writeBacklog(db: Db, keys: readonly string[], perKey: number) {
  for (let n = 0; n < perKey; n += 5)
    await db.transaction((tx) =>
      appendEvents(
        tx,
        Array.from({ length: 5 }, (_, i) => n + i).flatMap((i) =>
          keys.map((k) => taskCreated(k, `${k}-${i}`)),
        ),
      ),
    );
}

const inOrder = (titles: readonly string[]) => {
  const n = titles.map((t) => Number(t.split('-').at(-1)));
  return n.every((x, i) => i === 0 || x > n[i - 1]!);
};

for (const backend of backends) {
  describe(`lease on ${backend.name}`, () => {
    let db: Db;
    let drop: () => Promise<void>;
    before(async () => {
      ({ db, drop } = await backend.fresh());
    });
    after(() => drop());

    it('has one holder at a time: refused to others while renewed, handed over on release or expiry', async () => {
      const take = (name: string, holder: string, ttlMs: number) => tryAcquireLease(db, name, holder, ttlMs);
      assert.deepEqual(
        await take('relay-test', 'a', 60_000),
        { held: true, continued: false, previous: null },
        'a takes the free lease',
      );
      assert.equal((await take('relay-test', 'b', 60_000)).held, false, 'b while a holds it');
      assert.deepEqual(
        await take('relay-test', 'a', 60_000),
        { held: true, continued: true, previous: 'a' },
        'a renews',
      );
      assert.equal((await take('relay-test', 'b', 60_000)).held, false, 'b after the renewal');
      assert.equal((await take('other', 'b', 60_000)).held, true, 'another lease is independent');
      await releaseLease(db, 'relay-test', 'b'); // not b's: changes nothing
      assert.equal((await take('relay-test', 'b', 60_000)).held, false, "b's release of a's lease");
      await releaseLease(db, 'relay-test', 'a');
      assert.deepEqual(
        await take('relay-test', 'b', 1),
        { held: true, continued: false, previous: null },
        'b once a released it',
      );
      const expired = () =>
        waitFor(
          async () =>
            (await db.query(`SELECT 1 FROM leases WHERE name = 'relay-test' AND lease_until < now()`)).rows
              .length,
          5_000,
          'the lease of 1 ms to expire by the database clock',
        );
      await expired();
      // Renewed after it ran out, with no one holding it meanwhile: continued (nothing to look for on the bus).
      assert.deepEqual(
        await take('relay-test', 'b', 1),
        { held: true, continued: true, previous: 'b' },
        'b again, after a lapse',
      );
      await expired();
      assert.deepEqual(
        await take('relay-test', 'a', 60_000),
        { held: true, continued: false, previous: 'b' },
        "a once b's lease expired: held by another since a's (b, whose batch size a reads back by)",
      );
      assert.equal((await take('relay-test', 'b', 60_000)).held, false, 'b, expired, is out');
    });
  });

  describe(`outbox relay order on ${backend.name}`, () => {
    let db: Db;
    let url: string;
    let drop: () => Promise<void>;
    before(async () => {
      ({ db, url, drop } = await backend.fresh());
    });
    after(() => drop());

    it('publishes a backlog written before it started in outbox id order per key, each event once', async () => {
      const keys = ['ann', 'bob', 'cid'];
      await writeBacklog(db, keys, 40);
      const app = await startApp(db, { targets: ['relay'], env: { RELAY_BATCH_SIZE: '16' } });
      try {
        // Every row marked published (in the transaction that put it on the bus); stopping the relay then ends
        // its last round: nothing can be published after, so the log below is final.
        await outboxRelayed(db, 20_000);
      } finally {
        await app.stop();
      }
      const log = await taskEventsLog(db);
      assert.equal(log.total, 120);
      assert.ok(
        [...log.copies.values()].every((n) => n === 1),
        'each event once',
      );
      for (const k of keys) {
        assert.equal(log.byKey.get(k)!.length, 40, k);
        assert.ok(inOrder(log.byKey.get(k)!), `${k} in commit order: ${log.byKey.get(k)!.join(' ')}`);
      }
    });

    it(
      'with two relays on one database (two processes), publishes each event once and in order per key',
      { skip: backend.name === 'postgres' ? false : 'one process per PGlite database' },
      async () => {
        await db.query('DELETE FROM bus_messages');
        await db.query('DELETE FROM outbox');
        const db2 = await openDb(url);
        // The writer has no bus, so its events go to the outbox for the relays (a process with the embedded
        // bus appends to the bus's log itself, and the relays would have nothing to publish).
        const writer = await openDb(url);
        const env = { RELAY_BATCH_SIZE: '8', RELAY_POLL_MS: '5' };
        const [a, b] = [
          await startApp(db, { targets: ['relay'], env }),
          await startApp(db2, { targets: ['relay'], env }),
        ];
        const keys = ['dan', 'eve', 'fay', 'gus'];
        try {
          // Written while both relays run: each round is a race between them unless one holds the lease.
          await writeBacklog(writer, keys, 60);
          // Every row published (a published row is deleted); stopping both relays then ends their last rounds
          // (a round that read rows before another marked them has published them by then), so the log below
          // is final.
          await outboxRelayed(db, 30_000);
        } finally {
          await a.stop();
          await b.stop();
          await db2.close();
          await writer.close();
        }
        const left = await db.query<{ n: string }>('SELECT count(*)::text AS n FROM outbox');
        assert.equal(left.rows[0]!.n, '0', 'the relays published the outbox');
        const log = await taskEventsLog(db);
        assert.equal(log.total, 240, 'each event once');
        for (const k of keys) assert.ok(inOrder(log.byKey.get(k)!), `${k} in commit order`);
      },
    );
  });

  describe(`producer schema check on ${backend.name}`, () => {
    let db: Db;
    let drop: () => Promise<void>;
    before(async () => {
      ({ db, drop } = await backend.fresh());
    });
    after(() => drop());

    it('refuses an event that breaks its schema before writing anything', async () => {
      const invalid = taskCreated('hal', 'x');
      (invalid.data as { task: { title: string } }).task.title = ''; // titles are 1-500 characters
      await assert.rejects(db.transaction((tx) => appendEvents(tx, [taskCreated('hal', 'fine'), invalid])));
      const n = await db.query<{ outbox: string; streams: string }>(
        `SELECT (SELECT count(*) FROM outbox)::text AS outbox, (SELECT count(*) FROM event_streams)::text AS streams`,
      );
      assert.deepEqual(n.rows[0], { outbox: '0', streams: '0' });
    });
  });
}

for (const factory of harnesses) {
  describe(`consumer position on ${factory.name}`, { skip: factory.skip }, () => {
    let h: TransportHarness;
    before(async () => {
      h = await factory.create();
    });
    after(() => h.cleanup());

    it('moves only past handled messages: one whose handler had not succeeded when the consumer stopped comes again', async () => {
      const topic = h.unique('position');
      const group = h.unique('position');
      let p = await h.start({ retry: { maxAttempts: 10_000, baseDelayMs: 5, maxDelayMs: 20 } });
      await p.bus.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: DAY }]);
      await p.bus.publisher.publish(
        ['a', 'b', 'c'].map((t) => ({ topic, key: 'k', event: taskCreated('k', t) })),
      );
      const first: string[] = [];
      let attemptsOnB = 0;
      let sub = await p.bus.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m: BusMessage) => {
          if (titleOf(m.event) === 'b') {
            attemptsOnB++;
            throw new Error('the effect of b did not happen');
          }
          first.push(titleOf(m.event));
        },
      });
      await waitFor(() => attemptsOnB >= 3, 20_000, 'b failing again and again');
      await sub.close(); // a shutdown (or a crash) while b is still being retried
      await p.close();
      assert.deepEqual(first, ['a'], 'c waits behind b');

      p = await h.start();
      await p.bus.publisher.publish([{ topic, key: 'k', event: taskCreated('k', 'd') }]);
      const second: string[] = [];
      sub = await p.bus.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m: BusMessage) => void second.push(titleOf(m.event)),
      });
      try {
        await waitFor(() => second.includes('d'), 20_000, 'd after the restart');
      } finally {
        await sub.close();
        await p.close();
      }
      // At least once: b and c come again (a may too, if its position had not been committed yet).
      assert.deepEqual(
        second.filter((t) => t !== 'a'),
        ['b', 'c', 'd'],
      );
    });
  });
}

describe('JWT issuer and audience', () => {
  it('refuses a token from another issuer or for another audience when JWT_ISSUER / JWT_AUDIENCE are set', async () => {
    const verify = createVerifier({
      secret: TEST_SECRET,
      issuer: 'https://idp.example',
      audience: 'taskflow',
    });
    const sign = (opts: { issuer?: string; audience?: string }) => signDevToken(TEST_SECRET, 'ivy', opts);
    const good = await sign({ issuer: 'https://idp.example', audience: 'taskflow' });
    assert.equal((await verify(good)).userId, 'ivy');
    for (const [name, opts] of [
      ['another issuer', { issuer: 'https://evil.example', audience: 'taskflow' }],
      ['no issuer', { audience: 'taskflow' }],
      ['another audience', { issuer: 'https://idp.example', audience: 'billing' }],
      ['no audience', { issuer: 'https://idp.example' }],
    ] as const)
      await assert.rejects(verify(await sign(opts)), AuthError, name);
    // Unset, neither is checked.
    assert.equal((await createVerifier({ secret: TEST_SECRET })(await sign({ issuer: 'x' }))).userId, 'ivy');
  });
});
