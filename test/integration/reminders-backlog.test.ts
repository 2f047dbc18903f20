/**
 * The reminders consumer after an outage: 2,000 task events (each a task with a due date and a reminder)
 * wait on the bus while no reminders target runs; then one starts, and the backlog must drain in batches
 * (one transaction per run of a partition, not one per message) with exactly one scheduled reminder per
 * task. On the embedded bus (PGlite) and on Kafka when scripts/test started a broker. The drain time is
 * printed (docs/benchmarks.md); the bound checked here is loose, for a loaded machine.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GROUPS, MANIFESTS } from '../../src/services/index.ts';
import { subscribedTopics } from '../../src/runtime.ts';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { appendEvents } from '../../src/store/outbox.ts';
import { outboxRelayed, startApp, waitFor } from '../helpers/app.ts';
import { taskCreated } from '../helpers/events.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const BACKLOG = 2_000;
const USERS = 20;

/** A task.created of a task due in a week with a reminder an hour before (the clock is 2026-03-01). */
const dueTaskCreated = (user: string, i: number) =>
  taskCreated(user, `backlog-${i}`, { due_date: '2026-03-08T09:00:00.000Z', reminders: ['PT1H'] });

const transports: [string, Record<string, string>][] = [
  ['embedded', { BUS: 'embedded' }],
  ...(kafkaBrokers
    ? [
        [
          'kafka',
          {
            BUS: 'kafka',
            KAFKA_BROKERS: kafkaBrokers,
            KAFKA_TOPIC_PREFIX: `rb${Math.random().toString(36).slice(2, 8)}.`,
          },
        ] as [string, Record<string, string>],
      ]
    : []),
];

for (const [name, env] of transports) {
  describe(`reminders backlog on ${name}`, () => {
    it(`drains ${BACKLOG} waiting task events in batches, one reminder scheduled per task`, async (t) => {
      const db = await openDb('memory://');
      await migrate(db);
      // The backlog: committed while no reminders target runs, put on the bus by the relay.
      const publisher = await startApp(db, { targets: ['relay'], env });
      try {
        for (let i = 0; i < BACKLOG; i += 100)
          await db.transaction((tx) =>
            appendEvents(
              tx,
              Array.from({ length: 100 }, (_, j) => dueTaskCreated(`u${(i + j) % USERS}`, i + j)),
            ),
          );
        await outboxRelayed(db);
      } finally {
        await publisher.stop();
      }
      const commits = () => db.statements.byKind.get('COMMIT') ?? 0;
      const commitsBefore = commits();
      const started = performance.now();
      const app = await startApp(db, { targets: ['reminders'], env });
      try {
        const scheduled = async () =>
          Number(
            (await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM reminder_schedule`)).rows[0]!.n,
          );
        await waitFor(async () => (await scheduled()) >= BACKLOG, 120_000, `${BACKLOG} reminders scheduled`);
        const drainedMs = performance.now() - started;
        await waitFor(
          async () =>
            (await app.proc.runtime.bus.admin.lag(GROUPS.reminders, subscribedTopics(MANIFESTS))).every(
              (l) => l.lag === 0,
            ),
          30_000,
          'the reminders group to commit its positions',
        );
        assert.equal(await scheduled(), BACKLOG, 'one reminder per task, none twice');
        // Batches: one transaction per run of a partition's messages (up to 100), not one per message.
        const transactions = commits() - commitsBefore;
        assert.ok(transactions <= BACKLOG / 10, `${transactions} transactions for ${BACKLOG} messages`);
        t.diagnostic(
          `reminders backlog on ${name}: ${BACKLOG} task events drained in ${Math.round(drainedMs)} ms ` +
            `from the target's start (${Math.round((BACKLOG / drainedMs) * 1000)} events/s, ${transactions} transactions)`,
        );
        assert.ok(drainedMs < 60_000, `drained in ${Math.round(drainedMs)} ms`);
      } finally {
        await app.stop();
        await db.close();
      }
    });
  });
}
