/**
 * The `recurrence` target: consumes `task-events`; when a task with a recurrence is completed it creates the
 * next occurrence through the task store (which writes that task's own `task.created` outbox event in the
 * same transaction). Also serves `POST /api/tasks/:id/skip` and `GET /api/tasks/:id/occurrences`.
 *
 * One transaction per completion: the processed event id, the series state, the new task with its event
 * and the occurrence-ledger row commit together. The ledger allows one successor per task, so a redelivered
 * completion, or complete -> reopen -> complete of the same occurrence, creates one next occurrence.
 *
 * Semantics (docs/adr/0003-recurrence-engine.md for the rule evaluation):
 * - the next occurrence copies title, description, priority, tags, reminders (absolute reminder instants
 *   move with the due date), recurrence and series_id of the completed task; it is pending, due at
 *   nextOccurrence(rule of the completed task, series anchor, ...);
 * - the series anchor (DTSTART) is the first due date (the first completion time, to the minute, when there was none);
 *   an edited rule, or a due date the user moved, re-anchors the series at the task's due date: edits apply to
 *   future occurrences (seriesStart: an edited rule restarts COUNT, a moved due date does not);
 * - a completion handled after the task changed again (reopened, its rule or due date edited, completed again
 *   before this service caught up) creates the next occurrence of the task as it is now, the one read in the
 *   transaction: its last completion, with the rule it was completed with last (the later completion's event
 *   then finds it made);
 * - a completion handled after the task was deleted waits for its `task.deleted` (deferCompletion), which says
 *   how the task ended: completed, the series goes on from it as it was deleted; pending, the completion was
 *   taken back (reopened) before the delete and makes nothing. Going on with the completion's own copy made
 *   a next occurrence of a series its user had unticked and deleted;
 * - when no next occurrence exists (COUNT/UNTIL exhausted) the series is recorded as ended.
 */
import { PermanentError } from '../../bus/types.ts';
import type { CloudEvent } from '../../contracts/cloudevent.ts';
import type { TaskEventData } from '../../contracts/events.ts';
import { recurrenceManifest } from './manifest.ts';
import { NotFoundError } from '../../domain/errors.ts';
import { nextOccurrence, seriesAnchor } from '../../domain/recurrence.ts';
import type { Task, TaskFields } from '../../domain/task.ts';
import type { Runtime } from '../../runtime.ts';
import type { Tx } from '../../store/db.ts';
import { reminderPlanner } from '../../store/reminder-plan.ts';
import { TaskStore } from '../../store/tasks.ts';
import { UserSettingsStore } from '../../store/user-settings.ts';
import { consumerTarget, transactional, type ConsumedEvent } from '../consumer-target.ts';
import { periodicPass } from '../periodic-pass.ts';
import { registerRecurrenceRoutes } from './routes.ts';
import {
  adoptSeries,
  carryReminders,
  deferCompletion,
  deletedAs,
  lockSeries,
  occurrenceIndex,
  pruneForgottenSeries,
  recordEnd,
  recordDeletion,
  recordOccurrence,
  removeOccurrence,
  successorOf,
  takeDeferredCompletion,
} from './series.ts';

export const RECURRENCE_SOURCE = '/taskflow/recurrence';

/** How often a recurrence target forgets the series whose tasks are gone (pruneForgottenSeries); also at start. */
const PRUNE_EVERY_MS = 3_600_000;

/**
 * A completion that may have a next occurrence (a recurring task completed, or created completed), or a
 * deletion that may leave the occurrence ledger or decide a completion handled after it (deferCompletion).
 */
function accepts(event: CloudEvent): boolean {
  if (event.type !== 'task.completed' && event.type !== 'task.deleted' && event.type !== 'task.created')
    return false;
  const task = (event.data as TaskEventData).task;
  if (!task.series_id) return false;
  if (event.type === 'task.deleted' && task.status === 'pending') return true;
  return !!task.recurrence && task.status === 'completed';
}

/** What a new completion or deletion does to its series, in the consumer's transaction. */
function seriesEffect(rt: Runtime, store: TaskStore) {
  return async (tx: Tx, consumed: readonly ConsumedEvent[]): Promise<void> => {
    for (const { event, traceparent } of consumed) {
      const task = (event.data as TaskEventData).task;
      // A pending occurrence deleted (by its user, or taken back by a reopen of the occurrence before it,
      // see TaskStore.change) leaves the ledger and no longer counts against COUNT, so the occurrence it
      // came from gets a successor again when it is completed again.
      // A deletion also decides a completion of the task handled after it was gone (deferCompletion): deleted
      // pending, the completion was taken back; deleted completed, the series goes on from the task as it was.
      if (event.type === 'task.deleted') {
        const deferred = await takeDeferredCompletion(tx, task.id);
        await recordDeletion(tx, task.id, task.status, task.series_id!);
        if (task.status === 'pending') await removeOccurrence(tx, task.id);
        else if (deferred) await nextOccurrenceOf(rt, store, tx, task, event.time, traceparent, true);
      } else await nextOccurrenceOf(rt, store, tx, task, event.time, traceparent);
    }
  };
}

async function nextOccurrenceOf(
  rt: Runtime,
  store: TaskStore,
  tx: Tx,
  completed: Task,
  eventTime: string,
  traceparent: string,
  /** `completed` is the task as it was deleted, deciding a completion handled after that (deferCompletion). */
  deleted = false,
): Promise<void> {
  const read = (forUpdate: boolean) =>
    store.get(completed.user_id, completed.id, tx, forUpdate).catch((err: unknown) => {
      if (err instanceof NotFoundError) return null; // deleted since: its task.deleted decides
      throw err;
    });
  const seen = deleted ? null : await read(false);
  // Reopened before this completion was handled: the completion was taken back, it creates nothing.
  if (seen?.status === 'pending') return;
  // Deleted before it was handled: whether it was taken back first, only its task.deleted says; handled
  // already (out of order), it said how the task ended; else it comes after this completion.
  if (!seen && !deleted) {
    const ended = await deletedAs(tx, completed.id);
    if (ended === null) return deferCompletion(tx, completed.id);
    if (ended === 'pending') return;
  }
  const first = seen ?? completed;
  if (!first.recurrence || !first.series_id) return; // its rule removed before it was completed again
  const seriesId = first.series_id; // set once, never changed
  const locked = await lockSeries(tx, {
    seriesId,
    userId: first.user_id,
    rule: first.recurrence,
    anchor: seriesAnchor(first.due_date, first.completed_at ?? eventTime),
  });
  // Read again under the task's row lock, taken after the series' (the order a skip takes them in): a reopen
  // that committed since the read above is seen here, and one that comes later waits for this transaction and
  // then takes the next occurrence made here back. Unlocked, a reopen between the two reads left the series
  // with two pending occurrences.
  const current = seen ? await read(true) : null;
  if (current?.status === 'pending') return;
  if (seen && !current) return deferCompletion(tx, completed.id); // deleted meanwhile
  // Changed since (reopened, edited and completed again): the task as it is now goes on, not this event's
  // older version (its rule and due date were taken back). The event of the later completion then finds the
  // next occurrence made: one, made once.
  const done = current ?? completed;
  if (!done.recurrence) return; // its rule removed meanwhile
  const rule = done.recurrence;
  const completedAt = done.completed_at ?? eventTime;
  const log = () => rt.log.child({ task_id: done.id, series_id: seriesId });
  if (await successorOf(tx, done.id)) return; // this occurrence already has its successor
  const index = await occurrenceIndex(tx, seriesId, done.id, done.due_date);
  const series = await adoptSeries(tx, locked, { taskId: done.id, rule, due: done.due_date }, completedAt);
  let due: string | null;
  try {
    due = nextOccurrence(rule, {
      anchor: series.anchor,
      previousDue: done.due_date,
      completedAt,
      occurrencesSoFar: series.occurrences,
    });
  } catch (err) {
    throw new PermanentError(`cannot evaluate the recurrence of task ${done.id}`, { cause: err });
  }
  if (due === null) {
    await recordEnd(tx, seriesId, done.id, rt.clock.now().toISOString());
    tx.afterCommit(() => log().info('series ended: no further occurrence'));
    return;
  }
  const fields: TaskFields = {
    title: done.title,
    description: done.description,
    status: 'pending',
    priority: done.priority,
    tags: done.tags,
    due_date: due,
    reminders: carryReminders(done.reminders, done.due_date, due),
    recurrence: rule,
  };
  const next = await store.create(
    done.user_id,
    fields,
    { source: RECURRENCE_SOURCE, traceparent },
    { seriesId, tx },
  );
  await recordOccurrence(tx, {
    seriesId,
    index: index + 1,
    taskId: next.id,
    sourceTaskId: done.id,
    dueDate: due,
  });
  tx.afterCommit(() =>
    log().info({ next_task_id: next.id, due_date: next.due_date }, 'next occurrence created'),
  );
}

export const recurrenceTarget = consumerTarget({
  manifest: recurrenceManifest,
  async setup(rt) {
    const store = new TaskStore(rt.db, rt.clock);
    const settings = new UserSettingsStore(rt.db, rt.config.defaultTimezone);
    await registerRecurrenceRoutes(rt.http.app, {
      db: rt.db,
      store,
      clock: rt.clock,
      verify: rt.verify,
      source: RECURRENCE_SOURCE,
      // A skip moves the due date: its answer says where the reminders went, as a PATCH's does.
      planReminders: reminderPlanner(settings, rt.config.reminderGraceMs),
      settings,
    });
    // Hourly (and a second after start), on the consumer's lane: the series whose tasks are all gone go past
    // LEDGER_RETENTION_MS, with their ledgers (they grew with every series ever). Every instance does it: the
    // batches skip what another holds.
    const log = rt.log.child({ component: 'recurrence' });
    const pruning = periodicPass(async (goOn) => {
      try {
        const gone = await pruneForgottenSeries(rt.db, rt.config.ledgerRetentionMs, undefined, goOn);
        if (gone.series > 0)
          log.info(
            { series: gone.series, occurrences: gone.occurrences },
            'series whose tasks are gone forgotten past the ledger retention',
          );
      } catch (err) {
        log.warn({ err }, 'forgetting series failed; it runs again in an hour');
      }
    }, PRUNE_EVERY_MS);
    const service = transactional({
      db: rt.db,
      group: recurrenceManifest.consumes.group,
      accepts,
      effect: seriesEffect(rt, store),
    });
    return {
      ...service,
      stop: () => pruning.stop(),
    };
  },
});
