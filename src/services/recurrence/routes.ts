/**
 * HTTP routes served by the recurrence target (same JWT auth as the API; a task of another user is a 404):
 *
 * - `POST /api/tasks/:id/skip`: skips the current occurrence of a recurring task. The task's due date moves
 *   to the next occurrence (a `task.updated` event through the task store) and the skipped date is recorded
 *   in the series, in one transaction. The skipped occurrence counts against COUNT. In `after_completion`
 *   mode the next one counts from the due date when that is still ahead (from now when overdue). 409 when
 *   the task does not recur, is completed, or is the last occurrence of its series.
 * - `GET /api/tasks/:id/occurrences?count=N` (1..100, default 5): the next N due dates of the series, as
 *   completing the task now and each next one on its due date would create them (upcomingOccurrences);
 *   with `recurrence=` or `due=`, the same for the task as that change would leave it (seriesStart: a moved
 *   due date re-anchors the series, as completion does).
 */
import { instantDoc, okWith, problemDoc } from '../../http/openapi.ts';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Verifier } from '../../auth.ts';
import { authenticatedScope, eventMeta } from '../../http/authenticated.ts';
import type { Clock } from '../../domain/clock.ts';
import { ConflictError, ValidationError, assertVersion } from '../../domain/errors.ts';
import { singleValuedParameterIssues } from '../../domain/fields.ts';
import {
  RECURRENCE_PRESETS,
  nextOccurrence,
  parseRecurrence,
  upcomingOccurrences,
  seriesAnchor,
} from '../../domain/recurrence.ts';
import { parseInstant, type Task } from '../../domain/task.ts';
import { problem, sendProblem } from '../../http/problem.ts';
import { etag, ifMatchHeaderDoc, parseIfMatch } from '../../http/task-version.ts';
import type { Db } from '../../store/db.ts';
import { changedAnswer } from '../../http/task-answers.ts';
import { withPlanOfChange, type ReminderPlanner } from '../../store/reminder-plan.ts';
import type { UserSettingsStore } from '../../store/user-settings.ts';
import type { EventMeta, TaskStore } from '../../store/tasks.ts';
import {
  adoptSeries,
  carryReminders,
  lockSeries,
  occurrenceIndex,
  plannedDue,
  readSeries,
  recordSkip,
  seriesStart,
  successorOf,
} from './series.ts';

export interface RecurrenceRouteDeps {
  db: Db;
  store: TaskStore;
  clock: Clock;
  verify: Verifier;
  source: string;
  planReminders: ReminderPlanner;
  /** The user's time zone, for a rule previewed before it is saved. */
  settings: UserSettingsStore;
}

export const PREVIEW_DEFAULT = 5;
export const PREVIEW_MAX = 100;

const PREVIEW_PARAMETERS = ['count', 'recurrence', 'due'] as const;

/**
 * The preview's query as it was meant, or a 400: an unknown parameter (`due_date=`, the task field's name, a
 * typo) was ignored and the task's own dates answered as if it had applied, and a parameter given twice took
 * its last value; the task list refuses both.
 */
function previewQuery(
  query: Record<string, unknown>,
): Partial<Record<(typeof PREVIEW_PARAMETERS)[number], string>> {
  const issues = singleValuedParameterIssues(query, PREVIEW_PARAMETERS);
  if (issues.length) throw new ValidationError(issues);
  return query as Partial<Record<(typeof PREVIEW_PARAMETERS)[number], string>>;
}

function parseCount(s: string | undefined): number {
  if (s === undefined) return PREVIEW_DEFAULT;
  const n = /^\d{1,4}$/.test(s) ? Number(s) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > PREVIEW_MAX)
    throw new ValidationError([
      { path: 'count', message: `must be an integer from 1 to ${PREVIEW_MAX} (default ${PREVIEW_DEFAULT})` },
    ]);
  return n;
}

const security = [{ bearerAuth: [] }];
const idParam = { type: 'object', properties: { id: { type: 'string', format: 'uuid' } } } as const;

export async function registerRecurrenceRoutes(
  app: FastifyInstance,
  deps: RecurrenceRouteDeps,
): Promise<void> {
  const { db, store, clock } = deps;
  const meta = (req: FastifyRequest): EventMeta => eventMeta(req, deps.source);

  await authenticatedScope(app, deps, async (scope, userOf) => {
    const skip = async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
      const userId = userOf(req);
      const expected = parseIfMatch(req.headers['if-match']);
      const task: Task = await store.get(userId, req.params.id);
      assertVersion(expected, task.version);
      if (!task.recurrence || !task.series_id)
        return sendProblem(
          reply,
          problem(409, 'the task does not recur; only a recurring task can be skipped'),
        );
      if (task.status !== 'pending')
        return sendProblem(reply, problem(409, 'the task is completed; reopen it to skip this occurrence'));
      const { recurrence: rule, series_id: seriesId } = task;
      const now = clock.now().toISOString();
      // One transaction: the task moved and the skip recorded in its series, or neither (a retry of a skip
      // that failed half way skipped a second occurrence). A 409 thrown here rolls back what was written.
      const updated = await db.transaction(async (tx) => {
        const anchor = seriesAnchor(task.due_date, now);
        const locked = await lockSeries(tx, { seriesId, userId, rule, anchor });
        const successor = await successorOf(tx, task.id);
        if (successor)
          throw new ConflictError(
            `this occurrence already has its next occurrence (task ${successor}); skip that one`,
          );
        // In the ledger (occurrence #1 is entered the first time it is seen), so that a later move of its due
        // date by the user is told from this skip's.
        await occurrenceIndex(tx, seriesId, task.id, task.due_date);
        const series = await adoptSeries(tx, locked, { taskId: task.id, rule, due: task.due_date }, now);
        // Skipping is completing it without doing it: after_completion counts from the due date when that is
        // still ahead (counted from now, a task not yet due came back on its own due date: nothing moved).
        const completedAt =
          rule.mode === 'after_completion' && task.due_date !== null && task.due_date > now
            ? task.due_date
            : now;
        const next = nextOccurrence(rule, {
          anchor: series.anchor,
          previousDue: task.due_date,
          completedAt,
          occurrencesSoFar: series.occurrences,
        });
        if (next === null)
          throw new ConflictError('this is the last occurrence of its series; complete or delete it instead');
        const reminders = carryReminders(task.reminders, task.due_date, next);
        const patch = {
          due_date: next,
          ...(JSON.stringify(reminders) !== JSON.stringify(task.reminders) ? { reminders } : {}),
        };
        // Compare-and-set on the version read above: a concurrent change (a completion) makes this a 412.
        const moved = await store.updateTransition(userId, task.id, patch, meta(req), task.version, tx);
        // Never a skip recorded that did not move the task (it would count against COUNT for nothing).
        if (moved.eventType === null)
          throw new ConflictError(`the next occurrence is due when this one is (${next}); nothing to skip`);
        await recordSkip(tx, { seriesId, taskId: task.id, skippedDue: task.due_date, nextDue: next });
        return moved;
      });
      return reply
        .header('etag', etag(updated.task))
        .send(await withPlanOfChange(deps.planReminders, userId, updated));
    };

    const occurrences = async (req: FastifyRequest<{ Params: { id: string } }>) => {
      const userId = userOf(req);
      const query = previewQuery((req.query as Record<string, unknown> | undefined) ?? {});
      const count = parseCount(query.count);
      const task = await store.get(userId, req.params.id);
      const proposed = query.recurrence !== undefined || query.due !== undefined;
      // A rule (and due date) the task does not have yet: what the task's own preview would be once changed
      // (an editor's preview), so that it shows what completing the changed task creates.
      const { rule, due } = proposed
        ? await proposal(userId, task, query)
        : { rule: task.recurrence, due: task.due_date };
      if (!rule || (!proposed && !task.series_id))
        return { task_id: task.id, series_id: task.series_id, recurrence: null, occurrences: [] };
      const now = clock.now().toISOString();
      const series = task.series_id ? await readSeries(db, task.series_id) : null;
      const planned = series ? await plannedDue(db, task.id) : undefined;
      const start = seriesStart(series, { taskId: task.id, rule, due }, planned, now);
      return {
        task_id: task.id,
        series_id: task.series_id,
        recurrence: rule,
        anchor: start.anchor,
        // What completing it now, and each next one on its due date, would create (an overdue task's missed
        // dates are skipped; after_completion restarts at the completion), as completion and skip do.
        ...upcomingOccurrences(
          rule,
          { anchor: start.anchor, due, occurrencesSoFar: start.occurrences },
          now,
          count,
        ),
        ...(proposed ? { proposed: true } : {}),
      };
    };

    /** The `recurrence` (a preset) and `due` of a preview query, each the task's when not given. */
    const proposal = async (userId: string, task: Task, query: Record<string, unknown>) => {
      const issues: { path: string; message: string }[] = [];
      let rule = task.recurrence;
      if (query.recurrence !== undefined) {
        const parsed = parseRecurrence(String(query.recurrence), (await deps.settings.get(userId)).timezone);
        if (parsed.ok) rule = parsed.value;
        else issues.push(...parsed.issues);
      }
      const due = query.due === undefined ? task.due_date : parseInstant(query.due);
      if (query.due !== undefined && !due)
        issues.push({ path: 'due', message: 'must be an ISO 8601 date-time with an offset' });
      if (issues.length) throw new ValidationError(issues);
      // Well-formed, but the task lacks what a preview needs: its state, not the request, is in the way.
      if (!rule) throw new ConflictError('the task has no rule to preview: give recurrence');
      if (!due) throw new ConflictError('a rule repeats from a due date, and the task has none: give due');
      return { rule, due };
    };

    scope.post(
      '/api/tasks/:id/skip',
      {
        schema: {
          tags: ['recurrence'],
          summary: 'Skip the current occurrence of a recurring task (its due date moves to the next one)',
          description:
            'The next occurrence is the one completing it would create, counted in after_completion mode from the due date when that is still ahead; the skip counts against COUNT. The task and its series change together, or neither.',
          security,
          params: idParam,
          headers: ifMatchHeaderDoc,
          // The task with its next due date, and reminder_plan when the skip moved its reminders.
          response: {
            200: changedAnswer,
            409: problemDoc,
            412: problemDoc,
          },
        },
      },
      skip,
    );
    scope.get(
      '/api/tasks/:id/occurrences',
      {
        schema: {
          tags: ['recurrence'],
          summary: 'Preview the next due dates of a recurring task',
          description:
            'What completing the task now, and each next one on its due date, would create. With recurrence= or due=, what that would be once the task is changed so (a due date moved goes on from its new day and time; a new rule restarts COUNT).',
          security,
          params: idParam,
          querystring: {
            type: 'object',
            properties: {
              count: { type: 'integer', minimum: 1, maximum: PREVIEW_MAX, default: PREVIEW_DEFAULT },
              recurrence: {
                type: 'string',
                enum: RECURRENCE_PRESETS,
                description: 'preview this rule instead of the task’s (what a change to it would give)',
              },
              due: { ...instantDoc, description: 'preview from this due date instead of the task’s' },
            },
            additionalProperties: false,
          },
          response: {
            ...okWith('The next due dates', {
              type: 'object',
              required: ['task_id', 'series_id', 'recurrence', 'occurrences'],
              properties: {
                task_id: { type: 'string' },
                series_id: { type: ['string', 'null'] },
                recurrence: { type: ['object', 'null'], description: 'the rule previewed' },
                anchor: { type: 'string', description: 'the series start the dates are counted from' },
                after: {
                  type: 'string',
                  description:
                    'the dates are after this instant: the due date, or now when the task is overdue or repeats after completion',
                },
                occurrences: {
                  type: 'array',
                  items: { type: 'string' },
                  description: 'due instants (ISO 8601), within 200 years of the search start',
                },
                proposed: { type: 'boolean', description: 'a change previewed (recurrence= or due=)' },
              },
            }),
            409: problemDoc,
          },
        },
      },
      occurrences,
    );
  });
}
