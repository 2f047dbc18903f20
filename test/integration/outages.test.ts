/**
 * Consumers across outages of their dependencies, with real servers stopped and started again: a
 * PostgreSQL instance of its own (scripts/postgres) under a consumer target on Kafka.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { createKafkaBus } from '../../src/bus/kafka/index.ts';
import { GROUPS } from '../../src/services/index.ts';
import type { Subscription } from '../../src/bus/types.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp, waitFor } from '../helpers/app.ts';
import { createPgDatabase } from '../helpers/db.ts';
import { deadLetterLines } from '../helpers/dlq.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { kafka } from '../helpers/kafka.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const run = promisify(execFile);
const postgresScript = fileURLToPath(new URL('../../scripts/postgres', import.meta.url));
const postgres = async (command: 'start' | 'stop' | 'reset', name: string) =>
  (
    await run(
      postgresScript,
      [command, '--name', name, ...(command === 'start' ? ['--fast', '--ignore-env'] : [])],
      {
        timeout: 120_000,
      },
    )
  ).stdout;

describe('consumers across outages', { skip: kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS' }, () => {
  it(
    'a connection killed in the middle of a transaction rejects it, without an uncaught error, and the pool recovers',
    { skip: process.env.TEST_DATABASE_URL ? false : 'needs TEST_DATABASE_URL' },
    async () => {
      const database = await createPgDatabase(process.env.TEST_DATABASE_URL!);
      const db = await openDb(database.url, { poolSize: 2 });
      const uncaught: unknown[] = [];
      const onUncaught = (err: unknown) => uncaught.push(err);
      process.on('uncaughtException', onUncaught);
      try {
        await assert.rejects(
          db.transaction(async (tx) => {
            const pid = (await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
            await db.query('SELECT pg_terminate_backend($1)', [pid]);
            // The backend sends its FATAL, then exits: once it is gone, the FATAL has reached the client idle
            // in the transaction (an 'error' event there), not an answer to the next query.
            await waitFor(
              async () =>
                (await db.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rows.length === 0,
              10_000,
              'the terminated backend to exit',
            );
            await new Promise((r) => setImmediate(r));
            await tx.query('SELECT 1');
          }),
          /not queryable/, // the client had the connection error before this query: the path under test
        );
        await new Promise((r) => setImmediate(r));
        assert.deepEqual(uncaught, []);
        for (let i = 0; i < 4; i++)
          assert.equal((await db.transaction((tx) => tx.query('SELECT 1'))).rowCount, 1);
      } finally {
        process.off('uncaughtException', onUncaught);
        await db.close();
        await database.drop();
      }
    },
  );

  it('pauses on a PostgreSQL outage instead of dead-lettering, and handles every event once it is back', async () => {
    const instance = `outage-${randomBytes(3).toString('hex')}`;
    const base = /DATABASE_URL=(\S+)/.exec(await postgres('start', instance))![1]!;
    const p = `pgout${randomBytes(3).toString('hex')}.`;
    const database = await createPgDatabase(base);
    const db = await openDb(database.url, { poolSize: 4 });
    await migrate(db);
    const bus = createKafkaBus(
      { brokers: kafkaBrokers!.split(','), clientId: 'outage-producer', topicPrefix: p },
      { log: silentLogger },
    );
    let app: Awaited<ReturnType<typeof startApp>> | undefined;
    try {
      app = await startApp(db, {
        targets: ['audit'],
        // 3 attempts 5-20 ms apart: without the pause, the outage would dead-letter each event in ~50 ms.
        env: { BUS: 'kafka', KAFKA_BROKERS: kafkaBrokers!, KAFKA_TOPIC_PREFIX: p },
      });
      const users = ['ua', 'ub', 'uc'];
      const publish = (from: number, n: number) =>
        bus.publisher.publish(
          Array.from({ length: n }, (_, i) => {
            const user = users[(from + i) % users.length]!;
            return { topic: 'task-events', key: user, event: taskCreated(user, `t${from + i}`) };
          }),
        );
      const audited = async () =>
        Number((await db.query<{ n: string }>('SELECT count(*)::text AS n FROM audit_log')).rows[0]!.n);
      await publish(0, 6);
      await waitFor(async () => (await audited()) === 6, 30_000, 'events before the outage');

      const retries = async () =>
        (await app!.proc.runtime.metrics.handlerRetries.get()).values
          .filter((v) => v.labels.group === GROUPS.audit)
          .reduce((n, v) => n + v.value, 0);
      const retriedBefore = await retries();
      await postgres('stop', instance);
      await publish(6, 24);
      // The outage lasts until the consumer has retried more often than the 24 events' retry budgets allow
      // (CONSUMER_MAX_ATTEMPTS=3: 2 retries each), so at least one was retried past its budget instead of
      // being dead-lettered.
      await waitFor(
        async () => (await retries()) - retriedBefore > 24 * 2,
        60_000,
        'the consumer to retry past the retry budgets',
      );
      // Meanwhile a request that needs the database is a 503 to retry, not a 500.
      const during = await app.call('ua', 'GET', '/api/audit');
      assert.equal(during.status, 503, JSON.stringify(during.body));
      assert.equal(during.headers.get('retry-after'), '5');
      assert.match(during.body.detail, /a dependency is unavailable/);
      // And the process (a consumer target, no API) says it is not ready, naming the database.
      const notReady = await fetch(`${app.url}/readyz`);
      assert.equal(notReady.status, 503);
      const why = ((await notReady.json()) as { checks: Record<string, string> }).checks.database;
      assert.ok(why !== 'ok' && why !== 'failing', why);
      // Through a proxy (an ingress's catch-all rule) it says which check fails, not the error's text.
      const proxied = await fetch(`${app.url}/readyz`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
      assert.equal(proxied.status, 503);
      assert.deepEqual(
        ((await proxied.json()) as { checks: Record<string, string> }).checks.database,
        'failing',
      );
      await postgres('start', instance);

      await waitFor(async () => (await audited()) === 30, 60_000, 'every event handled after the outage');
      assert.equal((await fetch(`${app.url}/readyz`)).status, 200, 'ready again');
      // Read without swallowing errors: a failure to read the DLQ fails the test instead of passing as empty.
      assert.deepEqual(await deadLetterLines(bus.admin, GROUPS.audit), [], 'nothing dead-lettered');
      const perUser = await db.query<{ user_id: string; n: string; max: string }>(
        'SELECT user_id, count(*)::text AS n, max(user_seq)::text AS max FROM audit_log GROUP BY user_id ORDER BY 1',
      );
      assert.deepEqual(
        perUser.rows.map((r) => [r.user_id, Number(r.n), Number(r.max)]),
        users.map((u) => [u, 10, 10]),
        'each user chain has every event once',
      );
    } finally {
      await app?.stop().catch(() => undefined);
      await bus.close();
      await db.close().catch(() => undefined);
      await postgres('reset', instance).catch(() => undefined);
    }
  });

  it('a running Kafka consumer resumes after the broker is down for a while, and misses nothing', async () => {
    const env = await kafka('start', 'consumer-outage');
    const brokers = env.KAFKA_BROKERS!.split(',');
    const p = `brout${randomBytes(3).toString('hex')}.`;
    const bus = createKafkaBus(
      { brokers, clientId: 'outage', topicPrefix: p },
      { log: silentLogger, sessionTimeoutMs: 6_000, heartbeatIntervalMs: 500 },
    );
    const seen = new Map<string, number>();
    let sub: Subscription | undefined;
    try {
      await bus.admin.ensureTopics([{ name: 'work', partitions: 2, retentionMs: 3_600_000 }]);
      sub = await bus.subscriber.subscribe({
        group: 'survivors',
        topics: ['work'],
        handler: async (m) => void seen.set(titleOf(m.event), (seen.get(titleOf(m.event)) ?? 0) + 1),
      });
      const publish = (titles: string[]) =>
        bus.publisher.publish(titles.map((t) => ({ topic: 'work', key: t, event: taskCreated(t, t) })));
      await publish(['a1', 'a2', 'a3']);
      await waitFor(() => seen.size === 3, 30_000, 'events before the outage');
      // Offsets are committed at most once a second: wait until these are, so that none is due again after
      // the outage (what was committed must not be re-read; the rest would be, at least once).
      await waitFor(
        async () =>
          (await bus.admin.lag('survivors', new Map([['survivors', ['work']]]))).every((l) => l.lag === 0),
        30_000,
        'the offsets committed',
      );
      await kafka('stop', 'consumer-outage');
      // Not a condition but the outage under test: longer than the client's own reconnect attempts. Nothing
      // is decided by it; the events published after it decide.
      await new Promise((r) => setTimeout(r, 20_000));
      await kafka('start', 'consumer-outage');
      await waitFor(
        async () =>
          publish(['b1', 'b2', 'b3']).then(
            () => true,
            () => false,
          ),
        60_000,
        'publishing again',
      );
      await waitFor(() => ['b1', 'b2', 'b3'].every((t) => seen.has(t)), 60_000, 'events after the outage');
      assert.deepEqual(
        [...seen.values()].filter((n) => n !== 1),
        [],
        'each event handled once',
      );
    } finally {
      await sub?.close().catch(() => undefined);
      await bus.close();
      await kafka('stop', 'consumer-outage').catch(() => undefined);
      await kafka('reset', 'consumer-outage').catch(() => undefined);
    }
  });
});
