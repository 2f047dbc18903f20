/**
 * The reminders HTTP API (served by the `reminders` target on the process's HTTP server):
 *   GET  /api/tasks/:id/reminders
 *   POST /api/tasks/:id/reminders/:reminder_id/snooze   { "duration": "PT10M" } | { "until": "<instant>" }
 *   POST /api/tasks/:id/reminders/:reminder_id/dismiss
 * The user comes from the bearer token; a task this service does not know for that user is a 404.
 */
import { okWith, problemDoc } from '../../http/openapi.ts';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Verifier } from '../../auth.ts';
import { authenticatedScope } from '../../http/authenticated.ts';
import type { ReminderChannel } from '../../contracts/events.ts';
import type { Clock } from '../../domain/clock.ts';
import { ConflictError, NotFoundError, ValidationError } from '../../domain/errors.ts';
import { bodyJsonSchema } from '../../domain/fields.ts';
import {
  DISMISS_REASONS,
  dismissedBecause,
  parseSnooze,
  REMINDER_STATUSES,
  SNOOZE_FIELDS,
} from '../../domain/reminders.ts';
import { childTraceparent } from '../../observability/trace.ts';
import type { Db } from '../../store/db.ts';
import { isUuid } from '../../domain/text.ts';
import { appendEvents } from '../../store/outbox.ts';
import {
  listForTask,
  lockReminder,
  ownsTask,
  reminderEvent,
  toView,
  type ReminderRow,
  type ReminderView,
} from './store.ts';

export interface ReminderRoutesDeps {
  db: Db;
  clock: Clock;
  verify: Verifier;
  channels: readonly ReminderChannel[];
  /** Called after a snooze, so the scheduler looks at the new instant without waiting for its tick. */
  onRescheduled(): void;
}

const security = [{ bearerAuth: [] }];
const taskParam = { type: 'object', properties: { id: { type: 'string', format: 'uuid' } } } as const;
const params = {
  type: 'object',
  properties: {
    id: { type: 'string', format: 'uuid' },
    reminder_id: { type: 'string', format: 'uuid' },
  },
} as const;

/** A reminder as the routes answer it (ReminderView). */
const reminderDoc = {
  type: 'object',
  required: ['id', 'task_id', 'title', 'specs', 'due_at', 'planned_at', 'remind_at', 'status', 'snoozed'],
  properties: {
    id: { type: 'string' },
    task_id: { type: 'string' },
    title: { type: 'string' },
    specs: {
      type: 'array',
      items: { type: 'string' },
      description: 'the offsets or instants it came from',
    },
    due_at: { type: ['string', 'null'] },
    planned_at: { type: 'string', description: 'when it was planned to fire' },
    remind_at: { type: 'string', description: 'when it fires (later when snoozed)' },
    status: { type: 'string', enum: REMINDER_STATUSES },
    dismiss_reason: { type: ['string', 'null'], enum: [...DISMISS_REASONS, null] },
    snoozed: { type: 'boolean' },
    fire_count: { type: 'integer' },
    triggered_at: { type: ['string', 'null'] },
  },
} as const;

export async function registerReminderRoutes(app: FastifyInstance, deps: ReminderRoutesDeps): Promise<void> {
  const { db, clock } = deps;

  type Req = FastifyRequest<{ Params: { id: string; reminder_id?: string } }>;
  const ids = (req: Req) => {
    const { id, reminder_id } = req.params;
    if (!isUuid(id)) throw new NotFoundError();
    // Not an id any reminder has: the reminder is not found (the task may well be).
    if (reminder_id !== undefined && !isUuid(reminder_id)) throw new NotFoundError('reminder');
    return { taskId: id, reminderId: reminder_id ?? '' };
  };

  /** Runs `change` on the locked reminder and writes its event in the same transaction. */
  const mutate = async (
    userId: string,
    req: Req,
    change: (
      row: ReminderRow,
      now: Date,
    ) => { sql?: [string, unknown[]]; event?: Parameters<typeof reminderEvent> } | null,
  ): Promise<ReminderView> => {
    const { taskId, reminderId } = ids(req);
    const traceparent = childTraceparent(req.headers.traceparent as string | undefined);
    const view = await db.transaction(async (tx) => {
      if (!(await ownsTask(tx, userId, taskId, { lock: true }))) throw new NotFoundError();
      const row = await lockReminder(tx, userId, taskId, reminderId);
      if (!row) throw new NotFoundError('reminder');
      const now = clock.now();
      const plan = change(row, now);
      if (plan?.sql) await tx.query(plan.sql[0], plan.sql[1]);
      if (plan?.event) {
        const [type, r, ctx, extra] = plan.event;
        await appendEvents(tx, [reminderEvent(type, r, { ...ctx, traceparent }, extra)]);
      }
      const after = await lockReminder(tx, userId, taskId, reminderId);
      return toView(after!);
    });
    return view;
  };

  await authenticatedScope(app, deps, async (scope, userOf) => {
    scope.get(
      '/api/tasks/:id/reminders',
      {
        schema: {
          tags: ['reminders'],
          summary: 'The reminders of a task (scheduled, fired, missed, dismissed)',
          description:
            "Reminders are planned from the task's events: until the reminders service has received a new task's first event (usually a few milliseconds) this answers 404, as it does after the task's deletion has reached it.",
          security,
          params: taskParam,
          response: okWith("The task's reminders", {
            type: 'object',
            required: ['items'],
            properties: { items: { type: 'array', items: reminderDoc } },
          }),
        },
      },
      async (req: Req) => {
        const userId = await userOf(req);
        const { taskId } = ids(req);
        if (!(await ownsTask(db, userId, taskId))) throw new NotFoundError();
        return { items: (await listForTask(db, userId, taskId)).map(toView) };
      },
    );

    scope.post(
      '/api/tasks/:id/reminders/:reminder_id/snooze',
      {
        schema: {
          tags: ['reminders'],
          summary: 'Snooze a reminder: fire it again after a duration or at an instant',
          security,
          params,
          // Exactly one of duration and until (the body has no other property).
          body: bodyJsonSchema(SNOOZE_FIELDS, { minProperties: 1, maxProperties: 1 }),
          response: { ...okWith('The reminder, scheduled again', reminderDoc), 409: problemDoc },
        },
      },
      async (req: Req) => {
        const view = await mutate(userOf(req), req, (row, now) => {
          const parsed = parseSnooze(req.body, now);
          if (!parsed.ok) throw new ValidationError(parsed.issues);
          if (row.status === 'dismissed')
            throw new ConflictError('the reminder was dismissed; it cannot be snoozed');
          // Fired, then its task was completed, deleted or moved: it no longer applies.
          if (row.dismiss_reason !== null)
            throw new ConflictError(
              `the reminder no longer applies (${dismissedBecause(row.dismiss_reason)}); it cannot be snoozed`,
            );
          const at = parsed.value;
          // A snooze delays: a planned reminder that has not fired is not brought forward by one (it was).
          if (row.status === 'scheduled' && !row.snoozed && at.getTime() < new Date(row.remind_at).getTime())
            throw new ConflictError(
              `the reminder has not fired yet and fires at ${new Date(row.remind_at).toISOString()}, before the snooze would end; a snooze only delays a reminder (to be reminded earlier, change the task's reminders)`,
            );
          return {
            sql: [
              `UPDATE reminder_schedule SET status = 'scheduled', remind_at = $2, snoozed = true, updated_at = now()
                WHERE id = $1`,
              [row.id, at.toISOString()],
            ],
            event: [
              'reminder.scheduled',
              { ...row, remind_at: at },
              { now, channels: deps.channels },
              { reason: 'snoozed' },
            ],
          };
        });
        deps.onRescheduled();
        return view;
      },
    );

    scope.post(
      '/api/tasks/:id/reminders/:reminder_id/dismiss',
      {
        schema: {
          tags: ['reminders'],
          summary: 'Dismiss a reminder (it will not fire)',
          security,
          params,
          response: okWith('The reminder, dismissed', reminderDoc),
        },
      },
      async (req: Req) =>
        mutate(userOf(req), req, (row, now) => {
          // Idempotent once the user has dismissed it. One a task change set aside (completed, moved) is
          // dismissed by the user now: only a user's dismissal is final (reconcileReminders), so reopening
          // the task, or moving its due date back, brought it back, and it fired.
          if (row.status === 'dismissed' && row.dismiss_reason === 'user') return null;
          return {
            sql: [
              `UPDATE reminder_schedule SET status = 'dismissed', dismiss_reason = 'user', updated_at = now()
                WHERE id = $1`,
              [row.id],
            ],
            event: [
              'reminder.dismissed',
              row,
              { now, channels: deps.channels },
              { reason: 'dismissed_by_user' },
            ],
          };
        }),
    );
  });
}
