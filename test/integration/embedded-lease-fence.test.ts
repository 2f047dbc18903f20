/**
 * The embedded bus's fence on a partition's lease (group-member.ts), on PostgreSQL, against another member that
 * claims the partition as soon as the lease has lapsed in the database (a review found both): a member whose
 * event loop was held past its session while its handler awaited the database went on with the rest of its run
 * (the lapse was noticed by a timer, which runs after the database's answer resumes the handler); and a member
 * whose wall clock was stepped back kept a lease the database had given to another member. Both members then
 * handled the partition: each message twice, out of the user's order. And heartbeats missed in a database
 * stall are not queued up to run back to back after it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createEmbeddedBus } from '../../src/bus/embedded/index.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { waitFor } from '../helpers/app.ts';
import { postgresBackend } from '../helpers/db.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';

const busOn = (db: Db) =>
  createEmbeddedBus(db, {
    log: silentLogger,
    pollIntervalMs: 20,
    heartbeatIntervalMs: 100,
    sessionTimeoutMs: 1_000,
  });

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

describe(
  'the embedded bus fence on a lease',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    let fresh: Awaited<ReturnType<NonNullable<typeof postgresBackend>['fresh']>>;
    before(async () => {
      fresh = await postgresBackend!.fresh();
    });
    after(async () => {
      await fresh.drop();
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

    it('holds a lease by the monotonic clock: a wall clock stepped back does not keep it', async () => {
      const realNow = Date.now;
      const topic = 'clock';
      const group = 'clock-group';
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
            Date.now = () => realNow() - 5_000; // the wall clock stepped back 5 s (NTP, a resumed VM)
            await dbA.query('SELECT pg_sleep(2.5)'); // A's heartbeats wait behind it: its lease lapses
          } else await sleep(20);
          log.push(`A ${title}`);
        },
      });
      try {
        await waitFor(() => inHand, 10_000, 'A with m1 in hand');
        const subB = await busB.subscriber.subscribe({
          group,
          topics: [topic],
          handler: async (m) => void log.push(`B ${titleOf(m.event)}`),
        });
        try {
          await waitFor(() => log.includes('B m5'), 20_000, 'B to take the partition over and handle m1..m5');
          await waitFor(() => log.includes('A m1'), 10_000, 'A to finish m1');
          await sleep(1_000);
          assert.deepEqual(
            log.filter((l) => l.startsWith('A ')),
            ['A m1'],
            `A went on after its lease lapsed: ${log.join(', ')}`,
          );
        } finally {
          Date.now = realNow;
          await subB.close();
        }
      } finally {
        Date.now = realNow;
        await subA.close();
        await busA.close();
        await busB.close();
        await dbA.close();
        await dbB.close();
      }
    });
  },
);

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
