/**
 * The embedded bus and the relay on a real PostgreSQL server shared by two processes' connection pools: an
 * append in one wakes a consumer (or an outbox write wakes the relay) in the other through LISTEN/NOTIFY, also
 * after the listening connection was killed and re-established. Their polls are set to a minute, and each
 * test first proves the consumer (the relay) has done its first read and waits: only the notification can
 * deliver in time. A process is not told of its own NOTIFYs: its commits signal in-process.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createEmbeddedBus } from '../../src/bus/embedded/index.ts';
import type { Subscription } from '../../src/bus/types.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { notifyEvent, openDb } from '../../src/store/db.ts';
import { appendEvents } from '../../src/store/outbox.ts';
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
        // Barrier: an event appended by the consumer's own process (it wakes its worker in-process) and
        // handled shows the worker of u1's partition has done its reads; the next table read comes when a
        // notification asks for it, or with the poll in a minute.
        await consumerBus.publisher.publish([
          { topic: 'task-events', key: 'u1', event: taskCreated('u1', 'warm-up') },
        ]);
        await waitFor(() => got.includes('warm-up'), 10_000, 'the warm-up event, appended in-process');
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

    it('wakes a relay in another pool at once when another process writes to the outbox (trigger NOTIFY)', async () => {
      // The writer has no bus, so its events go to the outbox (an api process with the embedded bus appends
      // to the bus's log itself and leaves the relay nothing to publish).
      const { db: writerDb, url, drop } = await postgresBackend!.fresh();
      const relayDb = await openDb(url, { poolSize: 3 });
      const write = (title: string) =>
        writerDb.transaction((tx) => appendEvents(tx, [taskCreated('far', title)]));
      // Published: on the bus's log, and gone from the outbox (the relay deletes what it published).
      const published = async (title: string) =>
        (
          await writerDb.query(
            `SELECT 1 FROM bus_messages WHERE topic = 'task-events' AND value->'data'->'task'->>'title' = $1
                AND NOT EXISTS (SELECT 1 FROM outbox WHERE event->'data'->'task'->>'title' = $1)`,
            [title],
          )
        ).rows.length === 1;
      // Barrier: an event written before the relay starts, published by its first round, shows the relay has
      // read the outbox and now waits for the poll in a minute unless a notification wakes it.
      await write('before');
      const relay = await startApp(relayDb, {
        targets: ['relay'],
        env: { RELAY_POLL_MS: '60000', EMBEDDED_POLL_MS: '60000' },
      });
      try {
        await waitFor(() => published('before'), 10_000, 'the first round to publish the backlog');
        await write('relay me');
        await waitFor(() => published('relay me'), 10_000, 'the event published long before the relay poll');
      } finally {
        await relay.stop();
        await relayDb.close();
        await drop();
      }
    });

    it("passes on other processes' NOTIFYs, not those its own connections sent (their commits signal in-process)", async () => {
      const { db, url, drop } = await postgresBackend!.fresh();
      const other = await openDb(url, { poolSize: 1 });
      const heard: string[] = [];
      db.signals.on(notifyEvent('taskflow_test'), (payload: string) => heard.push(payload));
      try {
        db.listen('taskflow_test');
        // The listener is up once a NOTIFY of another pool comes through.
        await waitFor(
          async () => {
            await other.query(`SELECT pg_notify('taskflow_test', 'ready')`);
            return heard.includes('ready');
          },
          10_000,
          'the listener',
        );
        await db.query(`SELECT pg_notify('taskflow_test', 'own')`);
        await db.transaction((tx) => tx.query(`SELECT pg_notify('taskflow_test', 'own in a transaction')`));
        await other.query(`SELECT pg_notify('taskflow_test', 'theirs')`);
        // Notifications reach the listener in commit order: once "theirs" is heard, the own ones would have been.
        await waitFor(() => heard.includes('theirs'), 10_000, "the other pool's notification");
        // ('*' is the listener's own signal after it connected: notifications may have been missed.)
        assert.deepEqual(
          heard.filter((p) => p !== 'ready' && p !== '*'),
          ['theirs'],
        );
      } finally {
        await other.close();
        await drop();
      }
    });
  },
);
