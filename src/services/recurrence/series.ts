/**
 * The recurrence target's own tables (migration 003): per-series state and the occurrence ledger. Every
 * function runs inside the caller's transaction.
 */
import { deleteOldestFirst } from '../../store/oldest-first.ts';
import { isOffsetSpec } from '../../domain/task.ts';
import { seriesAnchor, type Recurrence } from '../../domain/recurrence.ts';
import { sameInstant } from '../../domain/time.ts';
import type { Queryable } from '../../store/db.ts';

export interface SeriesState {
  seriesId: string;
  userId: string;
  rule: Recurrence;
  /** DTSTART of `rule` (ISO instant). */
  anchor: string;
  /** Occurrences used so far under `rule` (created or skipped), including the current one. */
  occurrences: number;
  skipped: string[];
  endedAt: string | null;
}

interface SeriesRow {
  series_id: string;
  user_id: string;
  rule: Recurrence;
  anchor: Date;
  occurrences: number;
  skipped: Date[] | string | null;
  ended_at: Date | null;
}

const iso = (d: Date | string) => new Date(d).toISOString();

/** Both drivers parse timestamptz[]; fall back to the text form `{"2026-...","..."}` just in case. */
function isoArray(v: SeriesRow['skipped']): string[] {
  if (!v) return [];
  if (Array.isArray(v)) return v.map(iso);
  return v
    .replace(/^\{|\}$/g, '')
    .split(',')
    .filter(Boolean)
    .map((s) => iso(s.replace(/^"|"$/g, '')));
}

function toState(r: SeriesRow): SeriesState {
  return {
    seriesId: r.series_id,
    userId: r.user_id,
    rule: r.rule,
    anchor: iso(r.anchor),
    occurrences: r.occurrences,
    skipped: isoArray(r.skipped),
    endedAt: r.ended_at ? iso(r.ended_at) : null,
  };
}

const COLUMNS = 'series_id::text AS series_id, user_id, rule, anchor, occurrences, skipped, ended_at';

/** The stored rule, without the display-only preset name. */
const ruleKey = (r: Recurrence) => ({ rrule: r.rrule, mode: r.mode, timezone: r.timezone });

export const sameRule = (a: Recurrence, b: Recurrence) =>
  a.rrule === b.rrule && a.mode === b.mode && a.timezone === b.timezone;

export async function readSeries(q: Queryable, seriesId: string): Promise<SeriesState | null> {
  const r = await q.query<SeriesRow>(`SELECT ${COLUMNS} FROM recurrence_series WHERE series_id = $1`, [
    seriesId,
  ]);
  return r.rows[0] ? toState(r.rows[0]) : null;
}

/** Creates the series row when missing (anchored at `anchor`) and locks it until commit. */
export async function lockSeries(
  tx: Queryable,
  s: { seriesId: string; userId: string; rule: Recurrence; anchor: string },
): Promise<SeriesState> {
  await tx.query(
    `INSERT INTO recurrence_series (series_id, user_id, rule, anchor) VALUES ($1, $2, $3, $4)
     ON CONFLICT (series_id) DO NOTHING`,
    [s.seriesId, s.userId, JSON.stringify(ruleKey(s.rule)), s.anchor],
  );
  const r = await tx.query<SeriesRow>(
    `SELECT ${COLUMNS} FROM recurrence_series WHERE series_id = $1 FOR UPDATE`,
    [s.seriesId],
  );
  return toState(r.rows[0]!);
}

/** The occurrence of a series whose next due dates are wanted: the task as it is now. */
export interface Occurrence {
  taskId: string;
  rule: Recurrence;
  due: string | null;
}

/** Where a series goes on from an occurrence: its anchor and the occurrences used (checked against COUNT). */
export interface SeriesStart {
  anchor: string;
  occurrences: number;
  /** The stored series does not say this (none yet, an edited rule, a moved due date): it is rewritten. */
  changed: boolean;
}

/**
 * Where the series goes on from `o`, given `planned`, the due date the series gave it (the ledger's; undefined
 * when the ledger does not know the task). What completion, skip and every preview use, so they agree:
 * - no series yet: anchored at the due date (`at`, to the minute, without one), occurrence 1;
 * - the rule edited: re-anchored at the due date, and COUNT restarts (the edit applies from this one on);
 * - the due date moved by the user (not the one the series gave it): re-anchored at it, so the next ones keep
 *   its new weekday and time (an occurrence #1 moved before the series existed already did), but COUNT goes on:
 *   the rule is the same, and moving one date does not make the series longer;
 * - else the series as stored.
 */
export function seriesStart(
  state: SeriesState | null,
  o: Occurrence,
  planned: string | null | undefined,
  at: string,
): SeriesStart {
  const anchor = seriesAnchor(o.due, at);
  if (state === null) return { anchor, occurrences: 1, changed: true };
  if (!sameRule(state.rule, o.rule)) return { anchor, occurrences: 1, changed: true };
  if (planned !== undefined && !sameInstant(planned, o.due))
    return { anchor, occurrences: state.occurrences, changed: true };
  return { anchor: state.anchor, occurrences: state.occurrences, changed: false };
}

/** The due date the series gave `taskId` (created with, or moved to by a skip); undefined: not in the ledger. */
export async function plannedDue(q: Queryable, taskId: string): Promise<string | null | undefined> {
  const r = await q.query<{ due_date: Date | null }>(
    'SELECT due_date FROM recurrence_occurrences WHERE task_id = $1',
    [taskId],
  );
  if (!r.rows[0]) return undefined;
  return r.rows[0].due_date === null ? null : iso(r.rows[0].due_date);
}

/**
 * The series as it goes on from `o` (seriesStart), written when that changed it: the rule, anchor and count,
 * and the ledger's due date of `o`, which the series now starts from (a later move of it is the user's again).
 * Call with the series locked, `o` in the ledger (occurrenceIndex), after checking the occurrence is not stale.
 */
export async function adoptSeries(
  tx: Queryable,
  state: SeriesState,
  o: Occurrence,
  at: string,
): Promise<SeriesState> {
  const start = seriesStart(state, o, await plannedDue(tx, o.taskId), at);
  if (!start.changed) return state;
  const u = await tx.query<SeriesRow>(
    `UPDATE recurrence_series SET rule = $2, anchor = $3, occurrences = $4, ended_at = NULL, ended_by = NULL,
       updated_at = now()
     WHERE series_id = $1 RETURNING ${COLUMNS}`,
    [state.seriesId, JSON.stringify(ruleKey(o.rule)), start.anchor, start.occurrences],
  );
  await tx.query('UPDATE recurrence_occurrences SET due_date = $2 WHERE task_id = $1', [o.taskId, o.due]);
  return toState(u.rows[0]!);
}

/** The task created as the successor of `taskId`, if any (each task has at most one). */
export async function successorOf(tx: Queryable, taskId: string): Promise<string | null> {
  const r = await tx.query<{ task_id: string }>(
    'SELECT task_id::text AS task_id FROM recurrence_occurrences WHERE source_task_id = $1',
    [taskId],
  );
  return r.rows[0]?.task_id ?? null;
}

/**
 * The ledger index of `taskId` in its series. The first task of a series is not created by this service, so
 * it is entered as occurrence 1 the first time it is seen. A task the ledger does not know in a series that
 * has entries (not expected) counts as the latest occurrence.
 */
export async function occurrenceIndex(
  tx: Queryable,
  seriesId: string,
  taskId: string,
  dueDate: string | null,
): Promise<number> {
  const own = await tx.query<{ i: number }>(
    'SELECT occurrence_index AS i FROM recurrence_occurrences WHERE task_id = $1',
    [taskId],
  );
  if (own.rows[0]) return own.rows[0].i;
  const max = await tx.query<{ i: number | null }>(
    'SELECT max(occurrence_index) AS i FROM recurrence_occurrences WHERE series_id = $1',
    [seriesId],
  );
  const latest = max.rows[0]?.i ?? null;
  if (latest !== null) return latest;
  await tx.query(
    `INSERT INTO recurrence_occurrences (series_id, occurrence_index, task_id, source_task_id, due_date)
     VALUES ($1, 1, $2, NULL, $3)`,
    [seriesId, taskId, dueDate],
  );
  return 1;
}

/** Records the successor of `sourceTaskId`; throws on a duplicate (rolling the new task back with it). */
export async function recordOccurrence(
  tx: Queryable,
  o: { seriesId: string; index: number; taskId: string; sourceTaskId: string; dueDate: string },
): Promise<void> {
  await tx.query(
    `INSERT INTO recurrence_occurrences (series_id, occurrence_index, task_id, source_task_id, due_date)
     VALUES ($1, $2, $3, $4, $5)`,
    [o.seriesId, o.index, o.taskId, o.sourceTaskId, o.dueDate],
  );
  await tx.query(
    'UPDATE recurrence_series SET occurrences = occurrences + 1, updated_at = now() WHERE series_id = $1',
    [o.seriesId],
  );
}

/** Removes a successor from the ledger, and from its series' count (nothing when it is not a successor). */
export async function removeOccurrence(tx: Queryable, taskId: string): Promise<void> {
  await tx.query(
    `WITH gone AS (
       DELETE FROM recurrence_occurrences WHERE task_id = $1 AND source_task_id IS NOT NULL RETURNING series_id
     )
     UPDATE recurrence_series SET occurrences = greatest(occurrences - 1, 1), updated_at = now()
      WHERE series_id IN (SELECT series_id FROM gone)`,
    [taskId],
  );
}

/**
 * A completion handled when its task was gone (deleted before this service caught up) is decided by the
 * task's `task.deleted`, which comes after it on the task's partition and carries the task as it was last:
 * completed, the completion stood and the series goes on from it; pending, it was taken back (reopened) before
 * the delete and makes nothing. Until then the completion is remembered here, in the consumers' dedupe ledger
 * (`processed_events`, under a consumer name of its own, keyed by the task id; pruned by age with the rest,
 * LEDGER_RETENTION_MS, longer than any topic keeps the deletion that follows). Without it a task deleted
 * completed would go on again after its next occurrence was deleted too.
 */
const DEFERRED = 'taskflow-recurrence/completion-of-a-deleted-task';

/** Remembers that a completion of `taskId` was handled with the task gone (idempotent). */
export async function deferCompletion(tx: Queryable, taskId: string): Promise<void> {
  await tx.query('INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING', [
    DEFERRED,
    taskId,
  ]);
}

/** Whether a completion of `taskId` waits for its deletion (deferCompletion); forgets it. */
export async function takeDeferredCompletion(tx: Queryable, taskId: string): Promise<boolean> {
  const r = await tx.query('DELETE FROM processed_events WHERE consumer = $1 AND event_id = $2 RETURNING 1', [
    DEFERRED,
    taskId,
  ]);
  return r.rows.length > 0;
}

/**
 * How a task ended, once its `task.deleted` was handled: deleted pending or completed. A completion handled
 * after that (out of order: its dead letter replayed, a redelivery) reads it here rather than waiting for a
 * deletion that was handled already (it waited for good, and a completion that stood made nothing). Kept in the
 * same ledger, under consumer names of their own, keyed by the task id.
 */
const DELETED = {
  pending: 'taskflow-recurrence/deleted-pending',
  completed: 'taskflow-recurrence/deleted-completed',
};

/**
 * Records how `taskId` ended (its task.deleted handled; idempotent), and that its series (`seriesId`) changed
 * then: a series is forgotten once its tasks are gone and it has not changed for LEDGER_RETENTION_MS
 * (pruneForgottenSeries), so not before this record is, which a completion of the task handled later reads
 * (deletedAs: deleted completed, the series goes on from it, as it stood).
 */
export async function recordDeletion(
  tx: Queryable,
  taskId: string,
  status: string,
  seriesId: string,
): Promise<void> {
  await tx.query(
    `WITH touched AS (UPDATE recurrence_series SET updated_at = now() WHERE series_id = $3)
     INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
    [status === 'pending' ? DELETED.pending : DELETED.completed, taskId, seriesId],
  );
}

/** How `taskId` ended, when its task.deleted was handled (recordDeletion); null when not (yet). */
export async function deletedAs(tx: Queryable, taskId: string): Promise<'pending' | 'completed' | null> {
  const r = await tx.query<{ consumer: string }>(
    'SELECT consumer FROM processed_events WHERE consumer = ANY($1::text[]) AND event_id = $2',
    [[DELETED.pending, DELETED.completed], taskId],
  );
  const consumer = r.rows[0]?.consumer;
  return consumer === undefined ? null : consumer === DELETED.pending ? 'pending' : 'completed';
}

/** The series one statement of pruneForgottenSeries forgets, with their occurrence ledgers. */
const PRUNE_BATCH = 500;

/**
 * Forgets the series none of whose tasks exists any more (the first, whose id is the series', and each the ledger
 * records) and which have not changed for `olderThanMs` (LEDGER_RETENTION_MS; a deletion of one of their tasks
 * handled is a change, recordDeletion), with their occurrence ledgers: a batch a statement, oldest first, until a
 * statement finds fewer or `goOn` says to stop (asked before each batch but the first). Resolves what it deleted.
 * They were kept for good (deleted only when a reopen took an occurrence back), growing with every series ever.
 *
 * Nothing needs them once no copy of the series' task events can arrive: no task of the series is left to be
 * completed, skipped, reopened or previewed (the ledger of a series with a task left stays whole: a reopen walks
 * its deleted occurrences, TaskStore.takeBackNextOccurrence), and past the retention every copy of its events is
 * gone from the topics, the dead letters too. A completion of one of its tasks arriving later all the same (a dead
 * letter replayed onto a topic and not handled for that long) finds neither the task nor how it was deleted
 * (deletedAs: the dedupe ledger forgets that at the same age) and waits for a deletion that came long ago: it makes nothing.
 * A deletion handled later changes nothing either (no ledger row to leave). The one case that would make
 * something: the task's completion and its deletion both arriving after that time (neither was handled before),
 * whose series then starts over from that task as its first occurrence (its due date the anchor, COUNT from one).
 */
export async function pruneForgottenSeries(
  q: Queryable,
  olderThanMs: number,
  batch = PRUNE_BATCH,
  goOn: () => boolean = () => true,
): Promise<{ series: number; occurrences: number }> {
  // Series that still have a task, passed over, are not read again in this pass.
  const gone = await deleteOldestFirst<{ deleted: number; occurrences: number }>(
    q,
    `WITH doomed AS (
       SELECT s.series_id, s.updated_at FROM recurrence_series s
        WHERE s.updated_at >= $1::timestamptz
          AND s.updated_at < now() - ($2::bigint * interval '1 millisecond')
          AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = s.series_id)
          AND NOT EXISTS (SELECT 1 FROM recurrence_occurrences o JOIN tasks t ON t.id = o.task_id
                           WHERE o.series_id = s.series_id)
        ORDER BY s.updated_at LIMIT $3 FOR UPDATE OF s SKIP LOCKED
     ), occurrences AS (
       DELETE FROM recurrence_occurrences o USING doomed d WHERE o.series_id = d.series_id RETURNING 1
     ), series AS (
       DELETE FROM recurrence_series s USING doomed d WHERE s.series_id = d.series_id RETURNING d.updated_at
     )
     SELECT (SELECT count(*) FROM series)::int AS deleted, (SELECT count(*) FROM occurrences)::int AS occurrences,
            (SELECT max(updated_at) FROM series)::text AS last`,
    [olderThanMs],
    batch,
    goOn,
  );
  return { series: gone.deleted, occurrences: gone.occurrences };
}

/** No further occurrence: the series has ended (idempotent; the first end time is kept). */
export async function recordEnd(tx: Queryable, seriesId: string, taskId: string, at: string): Promise<void> {
  await tx.query(
    `UPDATE recurrence_series SET ended_at = coalesce(ended_at, $3), ended_by = $2, updated_at = now()
     WHERE series_id = $1`,
    [seriesId, taskId, at],
  );
}

/** A skipped occurrence: counts as used, its due date is kept in `skipped`, the task's ledger due moves. */
export async function recordSkip(
  tx: Queryable,
  s: { seriesId: string; taskId: string; skippedDue: string | null; nextDue: string },
): Promise<void> {
  await tx.query(
    `UPDATE recurrence_series SET occurrences = occurrences + 1,
       skipped = CASE WHEN $2::timestamptz IS NULL THEN skipped ELSE array_append(skipped, $2::timestamptz) END,
       updated_at = now()
     WHERE series_id = $1`,
    [s.seriesId, s.skippedDue],
  );
  await tx.query('UPDATE recurrence_occurrences SET due_date = $2 WHERE task_id = $1', [s.taskId, s.nextDue]);
}

/**
 * Reminders of the next occurrence: offsets before due carry over as they are; absolute instants move with
 * the due date (the same distance before it), and are dropped when there was no due date to measure from.
 */
export function carryReminders(
  reminders: string[] | null,
  previousDue: string | null,
  nextDue: string,
): string[] | null {
  if (reminders === null) return null;
  const shift = previousDue === null ? null : Date.parse(nextDue) - Date.parse(previousDue);
  return reminders.flatMap((r) => {
    if (isOffsetSpec(r)) return [r];
    if (shift === null) return [];
    return [new Date(Date.parse(r) + shift).toISOString()];
  });
}
