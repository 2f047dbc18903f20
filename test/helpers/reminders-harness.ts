/** The api and reminders targets on PGlite with the embedded bus and a ManualClock, for reminder tests. */
import assert from 'node:assert/strict';
import { ManualClock } from '../../src/domain/clock.ts';
import { findTargets } from '../../src/services/index.ts';
import { createRemindersTarget, type ReminderScheduler } from '../../src/services/reminders/index.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp, waitFor, type TestApp } from './app.ts';

export const MIN = 60_000;
export const HOUR = 60 * MIN;

/** A task as the API answers it (the fields these tests read). */
export interface TaskAnswer {
  id: string;
  due_date: string | null;
  [field: string]: unknown;
}

/** A row of reminder_schedule as these tests read it. */
export interface ReminderRowView {
  id: string;
  status: string;
  dismiss_reason: string | null;
  snoozed: boolean;
  fire_count: number;
  remind_at: string;
  planned_at: string;
  specs: string[];
}

/** An event of the `reminders` topic. */
export interface ReminderEventView {
  type: string;
  data: { task_id: string; due_at?: string | null; [field: string]: unknown };
}

export interface Harness {
  db: Db;
  app: TestApp;
  clock: ManualClock;
  scheduler(): ReminderScheduler;
  at(ms: number): string;
  createTask(user: string, body: object): Promise<TaskAnswer>;
  /** Waits until the reminders target applied the task at `version` (or its deletion). */
  applied(taskId: string, version: number): Promise<void>;
  rows(taskId: string): Promise<ReminderRowView[]>;
  events(taskId: string, type?: string): Promise<ReminderEventView[]>;
  stop(): Promise<void>;
}

export async function harness(
  opts: { start?: string; extraTargets?: string[]; env?: Record<string, string> } = {},
): Promise<Harness> {
  const db = await openDb('memory://');
  await migrate(db);
  const clock = new ManualClock(opts.start ?? '2026-03-01T12:00:00Z');
  let sched: ReminderScheduler | undefined;
  const app = await startApp(db, {
    clock,
    ...(opts.env ? { env: opts.env } : {}),
    targets: [
      ...findTargets(['api', ...(opts.extraTargets ?? [])]),
      createRemindersTarget({ tickMs: 20, onScheduler: (s) => (sched = s) }),
    ],
  });
  const at = (ms: number) => new Date(clock.now().getTime() + ms).toISOString();
  return {
    db,
    app,
    clock,
    scheduler: () => sched!,
    at,
    async createTask(user, body) {
      const r = await app.call(user, 'POST', '/api/tasks', body);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body as TaskAnswer;
    },
    async applied(taskId, version) {
      await waitFor(
        async () => {
          const r = await db.query<{ version: number }>(
            'SELECT version FROM reminder_tasks WHERE task_id = $1',
            [taskId],
          );
          return r.rows[0] && r.rows[0].version >= version;
        },
        20_000,
        `reminders target to apply ${taskId} v${version}`,
      );
    },
    async rows(taskId) {
      return (
        await db.query<ReminderRowView & { remind_at: Date; planned_at: Date }>(
          `SELECT id::text, status, dismiss_reason, snoozed, fire_count, remind_at, planned_at, specs
             FROM reminder_schedule WHERE task_id = $1 ORDER BY planned_at`,
          [taskId],
        )
      ).rows.map((r) => ({
        ...r,
        remind_at: new Date(r.remind_at).toISOString(),
        planned_at: new Date(r.planned_at).toISOString(),
      }));
    },
    async events(taskId, type) {
      const r = await db.query<{ event: ReminderEventView }>(
        `SELECT value AS event FROM bus_messages WHERE topic = 'reminders' ORDER BY created_at, "offset"`,
      );
      return r.rows
        .map((x) => x.event)
        .filter((e) => e.data.task_id === taskId && (!type || e.type === type));
    },
    async stop() {
      await app.stop();
      await db.close();
    },
  };
}
