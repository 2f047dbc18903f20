/**
 * The embedded bus and the relay on a real PostgreSQL server shared by two processes' connection pools: an
 * append in one wakes a consumer (or a commit wakes the relay) in the other through LISTEN/NOTIFY (its poll is set to a minute, so only the notification
 * can deliver in time), also after the listening connection was killed and re-established.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createEmbeddedBus } from '../../src/bus/embedded/index.ts';
import type { Subscription } from '../../src/bus/types.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { openDb } from '../../src/store/db.ts';
import { startApp, waitFor } from '../helpers/app.ts';
import { postgresBackend } from '../helpers/db.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';

describe(
  'embedded bus across processes on PostgreSQL',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    it('wakes a consumer of another pool at once through NOTIFY, and again after its listener was killed', async () => {
      const { db: consumerDb, url, drop } = await postgresBackend!.fresh();
      const producerDb = await openDb(url, { poolSize: 2 });
      const slow = {
        log: silentLogger,
        pollIntervalMs: 60_000,
        heartbeatIntervalMs: 200,
        sessionTimeoutMs: 2_000,
      };
      const consumerBus = createEmbeddedBus(consumerDb, slow);
      const producerBus = createEmbeddedBus(producerDb, slow);
      const got: string[] = [];
      let sub: Subscription | undefined;
      try {
        sub = await consumerBus.subscriber.subscribe({
          group: 'far-away',
          topics: ['task-events'],
          handler: async (m) => void got.push(titleOf(m.event)),
        });
        // Let the consumer's workers reach their idle wait (the first fetch finds nothing).
        await new Promise((r) => setTimeout(r, 1_000));
        await producerBus.publisher.publish([
          { topic: 'task-events', key: 'u1', event: taskCreated('u1', 'first') },
        ]);
        await waitFor(() => got.includes('first'), 10_000, 'the first event, woken by NOTIFY');

        const killed = await producerDb.query<{ n: string }>(
          `SELECT count(pg_terminate_backend(pid))::text AS n FROM pg_stat_activity
          WHERE datname = current_database() AND query LIKE 'LISTEN %'`,
        );
        assert.equal(killed.rows[0]!.n, '1', 'one listening connection');
        await waitFor(
          async () =>
            (
              await producerDb.query<{ n: string }>(
                `SELECT count(*)::text AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'`,
              )
            ).rows[0]!.n === '1',
          10_000,
          'the listener reconnected',
        );
        await producerBus.publisher.publish([
          { topic: 'task-events', key: 'u2', event: taskCreated('u2', 'second') },
        ]);
        await waitFor(() => got.includes('second'), 10_000, 'the second event after the reconnect');
      } finally {
        await sub?.close();
        await consumerBus.close();
        await producerBus.close();
        await producerDb.close();
        await drop();
      }
    });

    it('wakes a relay in another pool at once when the api commits (outbox trigger NOTIFY)', async () => {
      const { db: apiDb, url, drop } = await postgresBackend!.fresh();
      const relayDb = await openDb(url, { poolSize: 3 });
      const slowRelay = { RELAY_POLL_MS: '60000', EMBEDDED_POLL_MS: '60000' };
      const relay = await startApp(relayDb, { targets: ['relay'], env: slowRelay });
      const api = await startApp(apiDb, { targets: ['api'], env: slowRelay });
      try {
        await new Promise((r) => setTimeout(r, 1_000)); // the relay's first round found nothing and waits
        assert.equal((await api.call('far', 'POST', '/api/tasks', { title: 'relay me' })).status, 201);
        await waitFor(
          async () =>
            (
              await apiDb.query<{ n: string }>(
                'SELECT count(*)::text AS n FROM outbox WHERE published_at IS NULL',
              )
            ).rows[0]!.n === '0',
          10_000,
          'the event published long before the relay poll',
        );
      } finally {
        await api.stop();
        await relay.stop();
        await relayDb.close();
        await drop();
      }
    });
  },
);
