/**
 * Edges of the embedded log a review found, each failing before its fix:
 * - a dead letter whose error text `jsonb` cannot hold (a NUL from upstream, or an emoji cut in half by the
 *   header's 4,000-character bound) was refused on every try, and its partition (every later event of its
 *   users) stood still: the text is made safe, on PGlite and PostgreSQL;
 * - a small append (8 messages or fewer) locked a topic's partitions as text (`t/10` before `t/2`), the
 *   set-based one by number: on a topic of more than 10 partitions the two deadlocked and PostgreSQL aborted
 *   one. Two sessions holding one partition row each line the writers up;
 * - a member whose lease lapsed (its heartbeats stuck behind the handler in hand) went on through the rest of
 *   its run, which another member had claimed and handled: each event twice, the second time after the user's
 *   later ones; so did one whose wall clock was stepped back (the lease is on the monotonic clock now), and one
 *   whose event loop was held past its session (the lapse was noticed by a timer that ran after the database's
 *   answer resumed the handler: the lease is asked before each message now); heartbeats missed in a database
 *   stall were queued up and ran back to back after it;
 * - members of one group reading different topics (a rolling upgrade whose new version reads one more) left
 *   partitions of the added topic to no one.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { createEmbeddedBus } from '../../src/bus/embedded/index.ts';
import { listDeadLetters } from '../../src/bus/dlq.ts';
import { PermanentError } from '../../src/bus/types.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { assignPartitions } from '../../src/bus/embedded/group-member.ts';
import { waitFor } from '../helpers/app.ts';
import { postgresBackend } from '../helpers/db.ts';
import { keyPerPartition, taskCreated, titleOf } from '../helpers/events.ts';
import { embeddedHarness, embeddedPostgresHarness, type TransportHarness } from '../helpers/transports.ts';

const cases: [string, string][] = [
  // "PermanentError: " is 16 characters: the slice at 4,000 keeps the high half of the emoji at index 3999.
  ['a long error whose 4,000th character is half an emoji', 'x'.repeat(4000 - 16 - 1) + '😀 and more'],
  ['an error with a NUL from upstream', 'upstream answered "bad\u0000byte"'],
];

for (const factory of [embeddedHarness, embeddedPostgresHarness]) {
  describe(`dead letter error text on ${factory.name}`, { skip: factory.skip }, () => {
    let h: TransportHarness;
    before(async () => {
      h = await factory.create();
    });
    after(async () => {
      await h.cleanup();
    });
    for (const [name, message] of cases)
      it(`dead-letters ${name} and goes on with the user's next event`, async () => {
        const topic = h.unique('dlqtext');
        const group = h.unique('dlqtext-group');
        const p = await h.start();
        try {
          await p.bus.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: 86_400_000 }]);
          await p.bus.publisher.publish([
            { topic, key: 'u1', event: taskCreated('u1', 'poison') },
            { topic, key: 'u1', event: taskCreated('u1', 'next') },
          ]);
          const handled: string[] = [];
          const sub = await p.bus.subscriber.subscribe({
            group,
            topics: [topic],
            handler: async (m) => {
              if (titleOf(m.event) === 'poison') throw new PermanentError(message);
              handled.push(titleOf(m.event));
            },
          });
          try {
            await waitFor(
              () => handled.includes('next'),
              8_000,
              "the user's next event after the poison one",
            );
            const letters = await listDeadLetters(p.bus.admin, group);
            assert.equal(letters.length, 1);
          } finally {
            await Promise.race([sub.close(), new Promise((r) => setTimeout(r, 2_000))]);
          }
        } finally {
          await Promise.race([p.close(), new Promise((r) => setTimeout(r, 2_000))]);
        }
      });
  });
}

describe(
  'embedded log lock order on a topic of 12 partitions',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    let fresh: Awaited<ReturnType<NonNullable<typeof postgresBackend>['fresh']>>;
    let db: Db;
    before(async () => {
      fresh = await postgresBackend!.fresh();
      db = fresh.db;
    });
    after(async () => {
      await fresh.drop();
    });

    it('a small and a large multi-partition append do not deadlock each other', async () => {
      const topic = 'wide-topic';
      const bus = createEmbeddedBus(db, { log: silentLogger });
      await bus.admin.ensureTopics([{ name: topic, partitions: 12, retentionMs: 86_400_000 }]);
      const keys = keyPerPartition(12, 'k');
      const k2 = keys[2]!;
      const k10 = keys[10]!;
      // Two sessions, each holding one partition row in an open transaction.
      const hold = async (partition: number) => {
        const c = new pg.Client({ connectionString: fresh.url });
        await c.connect();
        await c.query('BEGIN');
        await c.query('SELECT 1 FROM bus_partitions WHERE topic = $1 AND partition = $2 FOR UPDATE', [
          topic,
          partition,
        ]);
        return c;
      };
      const watcher = new pg.Client({ connectionString: fresh.url });
      await watcher.connect();
      /** The writers (texts starting WITH) waiting on a lock, by the event they wait on. */
      const waiting = async () =>
        (
          await watcher.query(
            `SELECT wait_event FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'WITH%' ORDER BY 1`,
          )
        ).rows.map((r) => r.wait_event as string);
      const h2 = await hold(2);
      const h10 = await hold(10);
      try {
        const msg = (key: string, i: number) => ({ topic, key, event: taskCreated(key, `t${i}`) });
        const outcome = (p: Promise<void>) =>
          p.then(
            () => 'ok',
            (e: Error & { code?: string }) => `${e.code}: ${e.message}`,
          );
        // The small form (2 messages) asks for partition 10 first; the set-based form (10) for partition 2.
        const small = outcome(bus.publisher.publish([msg(k2, 0), msg(k10, 1)]));
        const large = outcome(
          bus.publisher.publish(Array.from({ length: 10 }, (_, i) => msg(i % 2 ? k10 : k2, i))),
        );
        await waitFor(async () => (await waiting()).length === 2, 10_000, 'both writers waiting');
        // Partition 10 free: the small append takes it and then waits for partition 2 (behind the large one).
        await h10.query('COMMIT');
        await waitFor(
          async () => (await waiting()).includes('tuple'),
          10_000,
          'the small append waiting for partition 2',
        );
        // Partition 2 free: the large append takes it, then needs partition 10, which the small one holds.
        await h2.query('COMMIT');
        assert.deepEqual({ small: await small, large: await large }, { small: 'ok', large: 'ok' });
      } finally {
        await h2.end();
        await h10.end();
        await watcher.end();
        await bus.close();
      }
    });
  },
);

/**
 * Member "B" in another process (this one's event loop is to be held): claims partition 0 of `topic` for
 * `group` with the statement a member's heartbeat uses, once the owner's lease has lapsed; prints when.
 */
const CLAIMER = `
import pg from 'pg';
const [url, group, topic] = process.argv.slice(1);
const c = new pg.Client({ connectionString: url });
await c.connect();
console.log('ready');
for (;;) {
  const r = await c.query(
    \`INSERT INTO bus_partition_owners (group_id, topic, partition, member_id, lease_until)
     VALUES ($1, $2, 0, 'B', now() + interval '60 seconds')
     ON CONFLICT (group_id, topic, partition) DO UPDATE SET member_id = excluded.member_id, lease_until = excluded.lease_until
     WHERE bus_partition_owners.member_id = excluded.member_id OR bus_partition_owners.lease_until < now()
     RETURNING member_id\`,
    [group, topic],
  );
  if (r.rowCount) { console.log('claimed ' + Date.now()); break; }
  await new Promise((r) => setTimeout(r, 50));
}
await c.end();
`;

const busOn = (db: Awaited<ReturnType<typeof openDb>>) =>
  createEmbeddedBus(db, {
    log: silentLogger,
    pollIntervalMs: 20,
    heartbeatIntervalMs: 100,
    sessionTimeoutMs: 1_000,
  });

describe(
  'a member whose lease lapsed in the middle of a run',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    let fresh: Awaited<ReturnType<NonNullable<typeof postgresBackend>['fresh']>>;
    before(async () => {
      fresh = await postgresBackend!.fresh();
    });
    after(async () => {
      await fresh.drop();
    });

    for (const stepped of [false, true])
      it(`handles no message after the one in hand once another member has the partition${stepped ? ', its wall clock stepped back' : ''}`, async () => {
        const realNow = Date.now;
        const topic = stepped ? 'lapse-stepped' : 'lapse';
        const group = `${topic}-group`;
        const dbA = await openDb(fresh.url, { poolSize: 1 });
        const dbB = await openDb(fresh.url);
        const busA = busOn(dbA);
        const busB = busOn(dbB);
        await busA.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: 86_400_000 }]);
        await busA.publisher.publish(
          Array.from({ length: 5 }, (_, i) => ({ topic, key: 'u1', event: taskCreated('u1', `m${i + 1}`) })),
        );
        const log: string[] = [];
        let inHand = false;
        const subA = await busA.subscriber.subscribe({
          group,
          topics: [topic],
          handler: async (m) => {
            const title = titleOf(m.event);
            if (title === 'm1' && !inHand) {
              inHand = true;
              if (stepped) Date.now = () => realNow() - 5_000; // NTP, a resumed VM
              // The message in hand keeps A's one connection for 2.5 s: its heartbeats wait behind it.
              await dbA.query('SELECT pg_sleep(2.5)');
            } else await sleep(20); // an effect outside the database (a mail, a webhook)
            log.push(`A ${title}`);
          },
        });
        await waitFor(() => inHand, 10_000, 'A with m1 in hand');
        const subB = await busB.subscriber.subscribe({
          group,
          topics: [topic],
          handler: async (m) => {
            log.push(`B ${titleOf(m.event)}`);
          },
        });
        try {
          await waitFor(() => log.includes('B m5'), 15_000, 'B to take the partition over and handle m1..m5');
          await waitFor(() => log.includes('A m1'), 10_000, 'A to finish m1');
          await sleep(1_000);
          const byA = log.filter((l) => l.startsWith('A '));
          assert.deepEqual(byA, ['A m1'], `A went on after its lease lapsed: ${log.join(', ')}`);
        } finally {
          Date.now = realNow;
          await subB.close();
          await subA.close();
          await busA.close();
          await busB.close();
          await dbA.close();
          await dbB.close();
        }
      });

    it('stops a run between messages once the lease lapsed while the event loop was held', async () => {
      const topic = 'stall';
      const group = 'stall-group';
      const db = await openDb(fresh.url);
      const bus = busOn(db);
      await bus.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: 86_400_000 }]);
      await bus.publisher.publish(
        ['m1', 'm2', 'm3'].map((t) => ({ topic, key: 'u1', event: taskCreated('u1', t) })),
      );
      const byA: { title: string; at: number }[] = [];
      let bOut = '';
      const sub = await bus.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m) => {
          const title = titleOf(m.event);
          byA.push({ title, at: Date.now() });
          if (title !== 'm1') return;
          const b = spawn(process.execPath, ['--input-type=module', '-e', CLAIMER, fresh.url, group, topic]);
          b.stdout.on('data', (d) => (bOut += String(d)));
          await waitFor(() => bOut.includes('ready'), 10_000, 'B connected');
          // m1's effect is a statement; meanwhile other work of the process holds the event loop for 2.5 s (two
          // and a half sessions), during which B takes the partition.
          setTimeout(() => {
            const until = Date.now() + 2_500;
            while (Date.now() < until);
          }, 0);
          await db.query('SELECT pg_sleep(0.2)');
        },
      });
      try {
        await waitFor(() => /claimed (\d+)/.test(bOut), 15_000, 'B to claim the partition');
        const claimedAt = Number(/claimed (\d+)/.exec(bOut)![1]);
        await sleep(1_000);
        const owner = await db.query<{ member_id: string }>(
          'SELECT member_id FROM bus_partition_owners WHERE group_id = $1 AND topic = $2 AND partition = 0',
          [group, topic],
        );
        assert.equal(owner.rows[0]?.member_id, 'B', 'B owns the partition');
        assert.deepEqual(
          byA.filter((x) => x.at > claimedAt).map((x) => x.title),
          [],
          `A handled messages after B claimed the partition at ${claimedAt}: ${byA.map((x) => `${x.title}@${x.at}`).join(', ')}`,
        );
      } finally {
        await sub.close();
        await bus.close();
        await db.close();
      }
    });
  },
);

describe('an embedded group whose members read different topics', () => {
  let h: TransportHarness;
  before(async () => {
    h = await embeddedHarness.create();
  });
  after(async () => {
    await h.cleanup();
  });

  it('has every partition of every subscribed topic consumed', async () => {
    const x = h.unique('x');
    const y = h.unique('y');
    const group = h.unique('mixed');
    const p = await h.start();
    await p.bus.admin.ensureTopics([
      { name: x, partitions: 3, retentionMs: 86_400_000 },
      { name: y, partitions: 3, retentionMs: 86_400_000 },
    ]);
    const keys = keyPerPartition(3, 'k');
    await p.bus.publisher.publish(
      [x, y].flatMap((topic) => keys.map((key) => ({ topic, key, event: taskCreated(key, `${topic}`) }))),
    );
    const seen = new Set<string>();
    const handler = async (m: { topic: string; partition: number }) =>
      void seen.add(`${m.topic}/${m.partition}`);
    const old = await p.bus.subscriber.subscribe({ group, topics: [x], handler }); // the old version
    const upgraded = await p.bus.subscriber.subscribe({ group, topics: [x, y], handler }); // the new one
    try {
      await waitFor(
        () => seen.size === 6,
        8_000,
        `all six partitions handled (got ${[...seen].sort().join(' ')})`,
      ).catch((err: Error) => assert.fail(`${err.message}; handled: ${[...seen].sort().join(', ')}`));
    } finally {
      await old.close();
      await upgraded.close();
      await p.close();
    }
  });
});

it('assignPartitions: each partition to one member that reads its topic, round robin', () => {
  const parts = ['x/0', 'x/1', 'x/2', 'y/0', 'y/1', 'y/2'].map((id) => ({ topic: id[0]!, id }));
  const split = assignPartitions(parts, [
    { member_id: 'a', topics: ['x'] },
    { member_id: 'b', topics: ['x', 'y'] },
  ]);
  const ids = (m: string) => (split.get(m) ?? []).map((p) => p.id);
  assert.deepEqual(ids('a'), ['x/0', 'x/2']);
  assert.deepEqual(ids('b'), ['x/1', 'y/0', 'y/1', 'y/2']);
  assert.equal(assignPartitions(parts, []).size, 0);
});

describe(
  'the embedded bus heartbeats through a database stall',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    it('are not queued up: one runs when the database answers again, not one per tick missed', async () => {
      const { url, drop } = await postgresBackend!.fresh();
      const db = await openDb(url, { poolSize: 1 });
      const bus = createEmbeddedBus(db, {
        log: silentLogger,
        pollIntervalMs: 1_000,
        heartbeatIntervalMs: 50,
        sessionTimeoutMs: 10_000,
      });
      const beats = () =>
        [...db.statements.byKind]
          .filter(([kind]) => kind.includes('bus_group_members'))
          .reduce((n, [, c]) => n + c, 0);
      try {
        await bus.admin.ensureTopics([{ name: 'beats', partitions: 1, retentionMs: 86_400_000 }]);
        const sub = await bus.subscriber.subscribe({
          group: 'beats',
          topics: ['beats'],
          handler: async () => undefined,
        });
        try {
          // The pool's one connection held for 2 s: 40 ticks of the heartbeat come and go.
          await db.transaction((tx) => tx.query('SELECT pg_sleep(2)'));
          const before = beats();
          await sleep(300);
          const ran = beats() - before;
          assert.ok(ran <= 8, `${ran} heartbeats in the 300 ms after the stall (6 ticks)`);
        } finally {
          await sub.close();
        }
      } finally {
        await bus.close();
        await db.close();
        await drop();
      }
    });
  },
);
