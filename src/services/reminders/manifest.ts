/** The `reminders` target: what it is and its REMINDER_* settings (the list of targets: services/index.ts). */
import { Gauge, Histogram, type Registry } from 'prom-client';
import { int, type Env, TIMER_MAX_MS } from '../../config.ts';
import { TOPICS } from '../../contracts/topics.ts';
import type { TargetManifest } from '../../runtime.ts';

export const remindersManifest = {
  name: 'reminders',
  routes: ['/api/tasks/:id/reminders'],
  description: 'reminder scheduler: task-events -> reminder schedule -> reminders topic; snooze/dismiss API',
  serves: 'snooze / dismiss under `/api/tasks/:id/reminders`',
  consumes: { group: 'taskflow-reminders', topics: [TOPICS.taskEvents], deadLetters: true },
  produces: ['reminder.scheduled', 'reminder.triggered', 'reminder.dismissed', 'reminder.missed'],
  sources: ['/taskflow/reminders'],
  owns: ['reminder schedule'],
  // REMINDER_GRACE_MS is shared with the api and recurrence targets: Config.reminderGraceMs.
  config: (env: Env) => ({
    tickMs: int(env, 'REMINDER_TICK_MS', 1_000, 1, TIMER_MAX_MS),
    batchSize: int(env, 'REMINDER_BATCH_SIZE', 500, 1),
  }),
  metrics: (registry: Registry) => ({
    pending: new Gauge({
      name: 'taskflow_reminders_pending',
      help: 'Reminders scheduled and not yet fired, missed or dismissed',
      registers: [registry],
    }),
    lateness: new Histogram({
      name: 'taskflow_reminder_trigger_lateness_seconds',
      help: 'How long after its time a reminder was fired (or found missed), by outcome',
      labelNames: ['outcome'] as const,
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600],
      registers: [registry],
    }),
  }),
} as const satisfies TargetManifest;

export type RemindersConfig = ReturnType<typeof remindersManifest.config>;
