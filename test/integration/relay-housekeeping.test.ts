/**
 * The relay's housekeeping (old outbox rows, Idempotency-Key rows, the consumers' dedupe ledger) runs beside
 * its rounds, not inside them: an event committed while a prune of a large ledger backlog is under way is
 * published before the prune ends, the active relay keeps its lease meanwhile (a standby does not take over),
 * and stop() ends the prune between two batches. The outbox prune finds the rows older relays marked published
 * by their own index, not by reading every pending row. PostgreSQL and a real Kafka broker.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { createKafkaBus } from '../../src/bus/kafka/index.ts';
import type { Bus } from '../../src/bus/types.ts';
import { loadConfig } from '../../src/config.ts';
import { TOPIC_SPECS } from '../../src/contracts/topics.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { Metrics } from '../../src/observability/metrics.ts';
import type { Runtime } from '../../src/runtime.ts';
import { Relay } from '../../src/services/relay/index.ts';
import { openDb, type Db, type Queryable } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { appendEvents, pruneOutbox } from '../../src/store/outbox.ts';
import { TEST_SECRET } from '../helpers/app.ts';
import { createPgDatabase } from '../helpers/db.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const pgUrl = process.env.TEST_DATABASE_URL;
const skip =
  !pgUrl || !kafkaBrokers
    ? 'needs TEST_DATABASE_URL and TEST_KAFKA_BROKERS (scripts/test starts both)'
    : false;

/**
 * Ledger rows past their retention, seeded before the relay starts: its first housekeeping pass deletes them,
 * which takes seconds (about 2 s here), longer than the relay's lease.
 */
const BACKLOG = 600_000;
/** The rows one statement of the ledger prune deletes (store/idempotency.ts). */
const PRUNE_BATCH = 5_000;
/** A statement of the ledger prune (it answers the rows it deleted as `deleted`). */
const PRUNES_LEDGER = /\bDELETE FROM processed_events\b/;
/** The relay's lease statement (taken or renewed). */
const ASKS_LEASE = /INSERT INTO leases/;
const DAY = 24 * 3_600_000;

/** `db` whose statements go through `around(sql, run)`, which may note what `run` answered. */
function hooked(
  db: Db,
  around: (sql: string, run: () => Promise<{ rowCount: number; rows: unknown[] }>) => Promise<unknown>,
): Db {
  const wrapped = Object.create(db) as Db;
  wrapped.query = ((sql: string, params?: readonly unknown[]) =>
    around(sql, () => db.query(sql, params))) as Db['query'];
  return wrapped;
}

/**
 * `db` that notes the ledger prune's statements: how many started and were answered, and when the last one
 * was (one that deleted less than a batch).
 */
function watchingThePrune(db: Db) {
  const prune = { started: 0, answered: 0, endedAt: undefined as number | undefined };
  return {
    prune,
    db: hooked(db, async (sql, run) => {
      if (!PRUNES_LEDGER.test(sql)) return run();
      prune.started++;
      const r = await run();
      prune.answered++;
      if ((r.rows[0] as { deleted: number }).deleted < PRUNE_BATCH) prune.endedAt ??= performance.now();
      return r;
    }),
  };
}

/** A fresh database with `BACKLOG` ledger rows past their retention, a Kafka bus on topics of its own, relays. */
async function setup() {
  const created = await createPgDatabase(pgUrl!);
  const db = await openDb(created.url);
  await migrate(db);
  // Filled in one statement (a day's worth at a high rate, or a retention lowered).
  await db.query(
    `INSERT INTO processed_events (consumer, event_id, processed_at)
     SELECT 'taskflow-audit', 'e' || g, now() - interval '400 days' FROM generate_series(1, $1::int) g`,
    [BACKLOG],
  );
  await db.query('ANALYZE processed_events');
  const prefix = `rh${randomBytes(3).toString('hex')}.`;
  const bus: Bus = createKafkaBus(
    { brokers: kafkaBrokers!.split(','), clientId: 'relay-housekeeping', topicPrefix: prefix },
    { log: silentLogger },
  );
  // Made beforehand: a first send to a missing topic creates it, which is not what is measured.
  await bus.admin.ensureTopics?.(TOPIC_SPECS);
  const config = loadConfig({
    DATABASE_URL: created.url,
    JWT_SECRET: TEST_SECRET,
    BUS: 'kafka',
    KAFKA_BROKERS: kafkaBrokers!,
    KAFKA_TOPIC_PREFIX: prefix,
  });
  // What the relay uses of a runtime: its configuration, database, bus, log and metrics.
  const relayOn = (relayDb: Db, metrics = new Metrics()) =>
    new Relay({ config, db: relayDb, bus, log: silentLogger, metrics } as unknown as Runtime);
  const ledgerRows = async () =>
    Number((await db.query<{ n: string }>('SELECT count(*)::text AS n FROM processed_events')).rows[0]!.n);
  const leaseHolder = async () =>
    (await db.query<{ holder: string }>(`SELECT holder FROM leases WHERE name = 'relay'`)).rows[0]?.holder;
  const close = async () => {
    await bus.close();
    await db.close();
    await created.drop();
  };
  return { db, bus, relayOn, ledgerRows, leaseHolder, close };
}

/** Events a relay counted as acknowledged by the broker (taskflow_events_produced_total). */
const produced = async (metrics: Metrics) =>
  (await metrics.eventsProduced.get()).values.reduce((sum, v) => sum + v.value, 0);

async function until<T>(what: string, check: () => Promise<T | undefined>, withinMs: number): Promise<T> {
  const deadline = performance.now() + withinMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (performance.now() > deadline) throw new Error(`${what}: not within ${withinMs} ms`);
    await sleep(10);
  }
}

describe('relay housekeeping beside the rounds, on PostgreSQL and Kafka', { skip }, () => {
  it('publishes an event while it prunes a large ledger backlog, and keeps its lease meanwhile', async (t) => {
    const s = await setup();
    try {
      const active = watchingThePrune(s.db);
      const activeMetrics = new Metrics();
      const relay = s.relayOn(active.db, activeMetrics);
      let standbyTookLease = false;
      const standbyMetrics = new Metrics();
      const standby = s.relayOn(
        hooked(s.db, async (sql, run) => {
          const r = await run();
          if (ASKS_LEASE.test(sql) && r.rows.length > 0) standbyTookLease = true;
          return r;
        }),
        standbyMetrics,
      );
      relay.start();
      try {
        // Active, and into its first housekeeping pass (a fresh relay's first round starts one).
        await until('the prune started', async () => (active.prune.answered > 0 ? true : undefined), 30_000);
        assert.equal(await s.leaseHolder(), relay.holder);
        standby.start();
        const committedAt = performance.now();
        await appendEvents(s.db, [taskCreated('ann', 'during the prune')]);
        const publishedAt = await until(
          'the event was published',
          async () =>
            (await produced(activeMetrics)) + (await produced(standbyMetrics)) > 0
              ? performance.now()
              : undefined,
          60_000,
        );
        const pruneEndedAt = active.prune.endedAt;
        const leftThen = await s.ledgerRows();
        // The pass goes on to the end beside the rounds.
        await until('the prune ended', async () => active.prune.endedAt, 120_000);
        const latency = publishedAt - committedAt;
        t.diagnostic(
          `published ${Math.round(latency)} ms after its commit, ${leftThen} of ${BACKLOG} ledger rows left then; the prune ended ${Math.round(active.prune.endedAt! - committedAt)} ms after the commit`,
        );
        assert.equal(standbyTookLease, false, 'a standby took the lease while the active relay pruned');
        assert.equal(await produced(activeMetrics), 1, 'published by the active relay');
        assert.ok(
          pruneEndedAt === undefined || publishedAt < pruneEndedAt,
          `the event was published ${Math.round(publishedAt - pruneEndedAt!)} ms after the prune ended (it waited for it)`,
        );
        assert.ok(leftThen > 0, 'ledger rows past retention were left when the event was published');
        assert.ok(latency < 3_000, `the event was published ${Math.round(latency)} ms after its commit`);
        assert.equal(await s.ledgerRows(), 0);
        assert.equal(
          (await activeMetrics.registry.getSingleMetric('taskflow_ledger_pruned_rows_total')!.get())
            .values[0]!.value,
          BACKLOG,
        );
        assert.equal(await s.leaseHolder(), relay.holder);
      } finally {
        await standby.stop();
        await relay.stop();
      }
      const onBroker = (await s.bus.admin.read('task-events', { limit: Infinity })).map((m) =>
        titleOf(m.event),
      );
      assert.deepEqual(onBroker, ['during the prune']);
    } finally {
      await s.close();
    }
  });

  it('stops between two batches of a long prune', async () => {
    const s = await setup();
    try {
      const active = watchingThePrune(s.db);
      const relay = s.relayOn(active.db);
      relay.start();
      let stopped = false;
      try {
        await until(
          'the prune deleted two batches',
          async () => (active.prune.answered >= 2 ? true : undefined),
          30_000,
        );
      } finally {
        await relay.stop();
        stopped = true;
      }
      assert.ok(stopped);
      const { started, answered } = active.prune;
      assert.equal(answered, started, 'no statement of the prune is running after stop()');
      const left = await s.ledgerRows();
      assert.ok(left > 0, 'stop() waited for the whole prune');
      await sleep(200);
      assert.equal(active.prune.started, started, 'the prune went on after stop()');
      assert.equal(await s.ledgerRows(), left);
    } finally {
      await s.close();
    }
  });
});

describe('outbox prune', { skip: pgUrl ? false : 'needs TEST_DATABASE_URL' }, () => {
  it('deletes the rows older relays marked published a day ago, by index, without reading the pending rows', async () => {
    const created = await createPgDatabase(pgUrl!);
    const db = await openDb(created.url);
    try {
      await migrate(db);
      // A backlog of pending rows (a broker outage), and rows relays before 2026-12-05 marked published.
      await db.query(
        `INSERT INTO outbox (topic, key, stream_seq, event_id, event_type, event, published_at)
         SELECT 'task-events', 'u' || (g % 100), g, 'e' || g, 'task.created', jsonb_build_object('id', 'e' || g),
                CASE WHEN g <= 3 THEN now() - interval '2 days' WHEN g <= 5 THEN now() - interval '1 hour' END
           FROM generate_series(1, 20000) g`,
      );
      await db.query('ANALYZE outbox');
      // The prune's own statement, planned (EXPLAIN) before it runs.
      const plans: unknown[] = [];
      const explaining: Queryable = Object.create(db) as Db;
      explaining.query = (async (sql: string, params?: readonly unknown[]) => {
        plans.push(
          (await db.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${sql}`, params)).rows[0]![
            'QUERY PLAN'
          ],
        );
        return db.query(sql, params);
      }) as Db['query'];
      assert.equal(await pruneOutbox(explaining, DAY), 3);
      assert.equal(plans.length, 1);
      const scans: string[] = [];
      const walk = (node: {
        'Node Type': string;
        'Relation Name'?: string;
        'Index Name'?: string;
        Plans?: unknown[];
      }) => {
        if (node['Relation Name'] === 'outbox' && node['Node Type'].endsWith('Scan'))
          scans.push(`${node['Node Type']} ${node['Index Name'] ?? ''}`.trim());
        for (const p of node.Plans ?? []) walk(p as typeof node);
      };
      walk((plans[0] as { Plan: Parameters<typeof walk>[0] }[])[0]!.Plan);
      assert.ok(
        scans.length > 0 && scans.every((scan) => scan.endsWith('outbox_published')),
        `the prune reads the outbox by its index of published rows, not all of it: ${scans.join(', ')}`,
      );
      const left = await db.query<{ n: string; published: string }>(
        'SELECT count(*)::text AS n, count(published_at)::text AS published FROM outbox',
      );
      assert.deepEqual(left.rows[0], { n: String(20_000 - 3), published: '2' });
    } finally {
      await db.close();
      await created.drop();
    }
  });
});
