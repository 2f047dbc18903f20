/**
 * The `reminders` target: consumes `task-events` and keeps a durable reminder schedule (one row per
 * reminder of each task), produces `reminder.scheduled` / `reminder.dismissed` as tasks change, and fires
 * due reminders (`reminder.triggered`, or `reminder.missed` when later than the grace window) from a ticker
 * loop. Serves snooze / dismiss / list under /api/tasks/:id/reminders.
 *
 * Environment (read in src/config.ts): REMINDER_TICK_MS (default 1000), REMINDER_GRACE_MS (default 900000 = 15 min),
 * REMINDER_BATCH_SIZE (default 500).
 */
import type { BusMessage } from '../../bus/types.ts';
import type { ReminderChannel, TaskEventData } from '../../contracts/events.ts';
import { REMINDER_CHANNELS } from '../../contracts/schemas.ts';
import { GROUPS, SUBSCRIPTIONS } from '../../contracts/topics.ts';
import type { Config } from '../../config.ts';
import { childTraceparent } from '../../observability/trace.ts';
import type { TargetDefinition } from '../../runtime.ts';
import { consumerTarget } from '../consumer-target.ts';
import { registerReminderRoutes } from './routes.ts';
import { ReminderScheduler, type SchedulerOptions } from './scheduler.ts';
import { applyTaskEvents } from './store.ts';

export { ReminderScheduler } from './scheduler.ts';

/** Overrides of `config.reminders` (REMINDER_* variables), plus test hooks. */
export interface RemindersOptions extends Partial<Config['reminders']> {
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
    name: 'reminders',
    group: SUBSCRIPTIONS.reminders.group,
    topics: SUBSCRIPTIONS.reminders.topics,
    async setup(rt) {
      const opts = { ...rt.config.reminders, ...options };
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
       * A run of task events in one transaction: the new ones (by event id; the first occurrence of an id in
       * the run wins) are applied in order, and the reminder events they cause are appended with them.
       */
      const run = async (items: readonly { message: BusMessage; traceparent: string | undefined }[]) => {
        const tasks = items.filter((i) => i.message.event.type.startsWith('task.'));
        if (tasks.length === 0) return;
        const now = rt.clock.now();
        const events = await rt.db.transaction((tx) =>
          applyTaskEvents(
            tx,
            tasks.map(({ message: { event: e }, traceparent }) => ({
              id: e.id,
              type: e.type,
              data: e.data as TaskEventData,
              eventTime: new Date(e.time),
              traceparent: traceparent ?? childTraceparent(e.traceparent),
            })),
            { dedupe: GROUPS.reminders, graceMs, now, channels },
          ),
        );
        if (events.length) {
          // A reminder due already fires without waiting for the tick (the tick finds the others).
          if (
            events.some(
              (e) => e.type === 'reminder.scheduled' && Date.parse(e.data.remind_at) <= now.getTime(),
            )
          )
            scheduler.poke();
          log.debug({ events: events.length, tasks: tasks.length }, 'reminders updated');
        }
      };

      return {
        // The handler runs in the message's CONSUMER span: the reminder events continue from it.
        handle: (message: BusMessage) => run([{ message, traceparent: undefined }]),
        handleBatch: (items) => run(items),
        stop: () => (opts.scheduler !== false ? scheduler.stop() : Promise.resolve()),
      };
    },
  });
}

export const remindersTarget: TargetDefinition = createRemindersTarget();
