/**
 * The `reminders` target: consumes `task-events` and keeps a durable reminder schedule (one row per
 * reminder of each task), produces `reminder.scheduled` / `reminder.dismissed` as tasks change, and fires
 * due reminders (`reminder.triggered`, or `reminder.missed` when later than the grace window) from a ticker
 * loop. Serves snooze / dismiss / list under /api/tasks/:id/reminders.
 *
 * Environment (read in manifest.ts, and REMINDER_GRACE_MS in src/config.ts): REMINDER_TICK_MS (default 1000), REMINDER_GRACE_MS (default 900000 = 15 min),
 * REMINDER_BATCH_SIZE (default 500).
 */
import type { ReminderChannel, TaskEventData } from '../../contracts/events.ts';
import { REMINDER_CHANNELS } from '../../contracts/schemas.ts';
import { remindersManifest, type RemindersConfig } from './manifest.ts';
import type { TargetDefinition } from '../../runtime.ts';
import { consumerTarget, transactional } from '../consumer-target.ts';
import { periodicPass } from '../periodic-pass.ts';
import { registerReminderRoutes } from './routes.ts';
import { ReminderScheduler, type SchedulerOptions } from './scheduler.ts';
import { applyTaskEvents, pruneDeletedTasks } from './store.ts';

export { ReminderScheduler } from './scheduler.ts';

/** How often a reminders target forgets what deleted tasks left (pruneDeletedTasks); also a second after start. */
const PRUNE_EVERY_MS = 3_600_000;

/** Overrides of the REMINDER_* variables, plus test hooks. */
export interface RemindersOptions extends Partial<RemindersConfig & { graceMs: number }> {
  /** Channels named on the reminder events (the notifications service applies the user's preferences). */
  channels?: readonly ReminderChannel[];
  /** Run the scheduler loop (default true); false leaves only the consumer and the HTTP API. */
  scheduler?: boolean;
  /** Test hook, see SchedulerOptions.afterClaim. */
  afterClaim?: SchedulerOptions['afterClaim'];
  /** Receives the scheduler instance once started (tests). */
  onScheduler?: (s: ReminderScheduler) => void;
}

export function createRemindersTarget(options?: RemindersOptions): TargetDefinition {
  return consumerTarget({
    manifest: remindersManifest,
    async setup(rt) {
      rt.metrics.of(remindersManifest); // on /metrics from the start, with or without the scheduler
      const opts = {
        ...remindersManifest.config(rt.config.env),
        graceMs: rt.config.reminderGraceMs,
        ...options,
      };
      const { graceMs } = opts;
      const channels = opts.channels ?? REMINDER_CHANNELS;
      const scheduler = new ReminderScheduler(rt, {
        tickMs: opts.tickMs,
        graceMs,
        batchSize: opts.batchSize,
        channels,
        ...(opts.afterClaim ? { afterClaim: opts.afterClaim } : {}),
      });
      await registerReminderRoutes(rt.http.app, {
        db: rt.db,
        clock: rt.clock,
        verify: rt.verify,
        channels,
        onRescheduled: () => scheduler.poke(),
      });
      if (opts.scheduler !== false) {
        scheduler.start();
        opts.onScheduler?.(scheduler);
      }
      const log = rt.log.child({ component: 'reminders' });

      /**
       * Task events applied to the schedule in delivery order (a new event id's first occurrence wins; the
       * dedupe is in applyTaskEvents' first statement), with the reminder events they cause.
       */
      const service = transactional({
        db: rt.db,
        group: remindersManifest.consumes.group,
        accepts: (e) => e.type.startsWith('task.'),
        dedupesItself: true,
        batches: true,
        async effect(tx, consumed) {
          const now = rt.clock.now();
          const events = await applyTaskEvents(
            tx,
            consumed.map(({ event: e, traceparent }) => ({
              id: e.id,
              type: e.type,
              data: e.data as TaskEventData,
              eventTime: new Date(e.time),
              traceparent,
            })),
            { dedupe: remindersManifest.consumes.group, graceMs, now, channels },
          );
          // A reminder due already fires without waiting for the tick (the tick finds the others).
          if (
            events.some(
              (e) => e.type === 'reminder.scheduled' && Date.parse(e.data.remind_at) <= now.getTime(),
            )
          )
            tx.afterCommit(() => scheduler.poke());
          if (events.length)
            log.debug({ events: events.length, tasks: consumed.length }, 'reminders updated');
        },
      });

      // Hourly (and a second after start), on the consumer's lane: the markers of tasks deleted past
      // LEDGER_RETENTION_MS go, with their reminders (they grew with every task ever deleted). Every instance
      // does it: the batches skip what another holds.
      const pruning = periodicPass(async (goOn) => {
        try {
          const gone = await pruneDeletedTasks(rt.db, rt.config.ledgerRetentionMs, undefined, goOn);
          if (gone.tasks > 0)
            log.info(
              { tasks: gone.tasks, reminders: gone.reminders },
              'deleted tasks forgotten, with their reminders, past the ledger retention',
            );
        } catch (err) {
          log.warn({ err }, 'forgetting deleted tasks failed; it runs again in an hour');
        }
      }, PRUNE_EVERY_MS);

      return {
        ...service,
        async stop() {
          await pruning.stop();
          if (opts.scheduler !== false) await scheduler.stop();
        },
      };
    },
  });
}

export const remindersTarget: TargetDefinition = createRemindersTarget();
