/**
 * The task store: the only code that writes tasks. Every change writes its CloudEvent to the outbox in the
 * same transaction (docs/architecture.md section 2). Used by the API (REST and MCP) and by the recurrence service.
 */
import { uuidv7 } from '../ids.ts';
import { makeEvent } from '../contracts/cloudevent.ts';
import type { TaskEventData } from '../contracts/events.ts';
import type { Clock } from '../domain/clock.ts';
import {
  ConflictError,
  IdempotencyMismatchError,
  NotFoundError,
  ValidationError,
  assertVersion,
  type ExpectedVersion,
  type Result,
} from '../domain/errors.ts';
import { dueWindowRange, encodeCursor, type TaskQuery } from '../domain/query.ts';
import { isUuid } from '../domain/text.ts';
import {
  PRIORITY_RANK,
  applyPatch,
  newTask,
  type Task,
  type TaskEventType,
  type TaskFields,
  type TaskPatch,
  type Transition,
} from '../domain/task.ts';
import type { CloudEvent } from '../contracts/cloudevent.ts';
import type { Db, Queryable, Tx } from './db.ts';
import { withTaskChanges } from '../contracts/task-changed.ts';
import { GroupCommit } from './group-commit.ts';
import { isUnavailable } from '../retry.ts';
import { appendEvents, eventWrite, runWithEvents } from './outbox.ts';

/** Request context carried into the events (CloudEvents extensions) for tracing and the audit trail. */
export interface EventMeta {
  source: string;
  traceparent?: string;
  clientIp?: string;
  userAgent?: string;
}

export interface TaskPage {
  items: Task[];
  next_cursor: string | null;
}

const COLUMNS = `id::text AS id, user_id, title, description, status, priority, tags, due_date, reminders, recurrence,
  series_id::text AS series_id, created_at, updated_at, completed_at, version`;

interface TaskRow {
  id: string;
  user_id: string;
  title: string;
  description: string;
  status: Task['status'];
  priority: Task['priority'];
  tags: string[];
  due_date: Date | null;
  reminders: string[] | null;
  recurrence: Task['recurrence'];
  series_id: string | null;
  created_at: Date;
  updated_at: Date;
  completed_at: Date | null;
  version: number;
}

const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);

function toTask(r: TaskRow): Task {
  return {
    id: r.id,
    user_id: r.user_id,
    title: r.title,
    description: r.description,
    status: r.status,
    priority: r.priority,
    tags: r.tags ?? [],
    due_date: iso(r.due_date),
    reminders: r.reminders,
    recurrence: r.recurrence,
    series_id: r.series_id,
    created_at: iso(r.created_at)!,
    updated_at: iso(r.updated_at)!,
    completed_at: iso(r.completed_at),
    version: r.version,
  };
}

function unwrap<T>(r: Result<T>): T {
  if (!r.ok) throw new ValidationError(r.issues);
  return r.value;
}

/** Sort expressions that never yield NULL, so keyset pagination stays a simple row comparison (`due`: list). */
const SORT_EXPR = {
  priority: { asc: 'priority_rank', desc: 'priority_rank' },
  created: { asc: 'created_at', desc: 'created_at' },
  updated: { asc: 'updated_at', desc: 'updated_at' },
} as const;

/**
 * A title's sort key (`text`: the column or a cursor's value): in ICU's root collation where the database has
 * it (PGlite and PostgreSQL built with ICU), so "Äpfel" sorts with the a's and "École" with the e's, and case
 * folds beyond ASCII; the database's own collation otherwise (in C, the byte order put every accented initial
 * after "z").
 */
const titleKey = (text: string, icu: boolean) =>
  icu ? `lower(${text} COLLATE "und-x-icu")` : `lower(${text})`;

/**
 * What each database's text functions do, asked once (a failed ask is asked again next time): whether it has
 * ICU's root collation, and whether its own lower() folds letters beyond ASCII (not in the C locale, which
 * `initdb` takes on a host without a UTF-8 locale: ILIKE there found "École" for "ÉCOLE" but not for "école").
 */
const textTraitsOf = new WeakMap<Db, Promise<{ icu: boolean; folds: boolean }>>();
function textTraits(db: Db): Promise<{ icu: boolean; folds: boolean }> {
  let known = textTraitsOf.get(db);
  if (!known) {
    known = db
      .query<{ icu: boolean; folds: boolean }>(
        `SELECT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu') AS icu,
                lower('ÉΣ') = 'éσ' AS folds`,
      )
      .then(
        (r) => ({ icu: r.rows[0]?.icu === true, folds: r.rows[0]?.folds === true }),
        () => (textTraitsOf.delete(db), { icu: false, folds: true }),
      );
    textTraitsOf.set(db, known);
  }
  return known;
}

function cursorValue(task: Task, sort: TaskQuery['sort'], order: TaskQuery['order']): string | number {
  switch (sort) {
    case 'due':
      return task.due_date ?? (order === 'asc' ? 'infinity' : '-infinity');
    case 'priority':
      return PRIORITY_RANK[task.priority];
    case 'created':
      return task.created_at;
    case 'updated':
      return task.updated_at;
    case 'title':
      // As written: the query lowers it as it lowers the column (JavaScript's toLowerCase differs from the
      // database's lower() for some letters, İ and a final Σ among them, and the pages then looped).
      return task.title;
  }
}

/**
 * A create's idempotency key (Idempotency-Key header, MCP `idempotency_key`) and the hash of its request: the
 * first answer to the key is kept 24 hours, written in the statement that creates the task.
 */
export interface IdempotencyKey {
  key: string;
  requestHash: string;
}

/** The first answer to `key` within 24 h (its task), a mismatch (IdempotencyMismatchError), or none. */
const REPLAY_SQL = `WITH expired AS (
     DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND created_at <= now() - interval '24 hours'
   )
   SELECT request_hash, response,
          EXISTS (SELECT 1 FROM tasks t WHERE t.id = (k.response->>'id')::uuid AND t.user_id = $1) AS task_exists
     FROM idempotency_keys k
    WHERE user_id = $1 AND key = $2 AND created_at > now() - interval '24 hours'`;

type Create = { task: Task; event: CloudEvent; idempotency?: IdempotencyKey };

/** The sizes of the board's views (TaskStore.counts). */
export interface TaskCounts {
  total: number;
  pending: number;
  completed: number;
  overdue: number;
  today: number;
  upcoming: number;
}

/**
 * A create's own rows taken: its task id, or its event's id in the outbox (the statement's main INSERT, which
 * PostgreSQL runs before the task's: a committed create written again failed there first, and was answered the
 * error).
 */
function ownRowsTaken(err: unknown): boolean {
  const e = err as { code?: string; constraint?: string };
  return e.code === '23505' && (e.constraint === 'tasks_pkey' || e.constraint === 'outbox_event_id_key');
}

export class TaskStore {
  private readonly group: GroupCommit<Create>;

  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
    /** Admission control: once a create has waited this long (ms) unwritten, new ones are refused (503). */
    opts: { createQueueMaxMs?: number } = {},
  ) {
    this.group = new GroupCommit(
      (items) => this.insertConfirmingLostAnswer(items),
      // One group in flight on PostgreSQL too (PGlite has one connection anyway): the creates that arrive
      // during a statement make the next one. Measured with every target on Kafka at 800 writes/s, against
      // four groups in flight: 0.35-0.55 instead of 0.68-0.81 task statements per write, PostgreSQL CPU
      // 0.52-0.54 instead of 0.57-0.63 ms per write, no higher HTTP p99 (docs/benchmarks.md).
      {
        inFlight: 1,
        maxGroup: 64,
        overlap: db.kind === 'postgres',
        ...(opts.createQueueMaxMs ? { maxWaitMs: opts.createQueueMaxMs } : {}),
      },
    );
  }

  /** How long the oldest create not yet written has waited (ms); 0 when none. */
  createQueueAge(): number {
    return this.group.queuedFor();
  }

  private event(type: TaskEventType, task: Task, previous: Task | null, changes: string[], meta: EventMeta) {
    const extensions: Record<string, string> = {};
    if (meta.clientIp) extensions.clientip = meta.clientIp;
    if (meta.userAgent) extensions.useragent = meta.userAgent.slice(0, 512);
    return makeEvent<TaskEventData>({
      type,
      source: meta.source,
      subject: task.id,
      key: task.user_id,
      time: this.clock.now(),
      ...(meta.traceparent ? { traceparent: meta.traceparent } : {}),
      extensions,
      data: { user_id: task.user_id, task, previous, changes },
    });
  }

  /** The INSERT of `n` rows, each numbered as `rowParams` (17 parameters a row). */
  private static insertSql(n: number): string {
    const rows = Array.from(
      { length: n },
      (_, r) => `(${Array.from({ length: 17 }, (_, c) => `$${r * 17 + c + 1}`).join(',')})`,
    );
    return `INSERT INTO tasks (id, user_id, title, description, status, priority, priority_rank, tags, tag_keys,
       due_date, reminders, recurrence, series_id, created_at, updated_at, completed_at, version)
     VALUES ${rows.join(', ')}`;
  }

  /** Every column but the key, numbered as in `insertSql` (created_at is rewritten unchanged). */
  private static readonly UPDATE_SQL = `UPDATE tasks SET title=$3, description=$4, status=$5, priority=$6,
       priority_rank=$7, tags=$8, tag_keys=$9, due_date=$10, reminders=$11, recurrence=$12, series_id=$13,
       created_at=$14, updated_at=$15, completed_at=$16, version=$17
     WHERE id = $1 AND user_id = $2`;

  /** A task's columns, in the order of `insertSql` and UPDATE_SQL. */
  private static rowParams(t: Task): unknown[] {
    return [
      t.id,
      t.user_id,
      t.title,
      t.description,
      t.status,
      t.priority,
      PRIORITY_RANK[t.priority],
      t.tags,
      t.tags.map((x) => x.toLowerCase()),
      t.due_date,
      t.reminders === null ? null : JSON.stringify(t.reminders),
      t.recurrence === null ? null : JSON.stringify(t.recurrence),
      t.series_id,
      t.created_at,
      t.updated_at,
      t.completed_at,
      t.version,
    ];
  }

  /**
   * Creates a task with its `task.created` event. In the caller's transaction (`opts.tx`) it is one more
   * statement there; otherwise it goes through group commit: the creates that arrive while the previous group
   * is being written are written together, rows and events in one statement, and each caller is answered once
   * that statement committed. At low rates a group is one create and nothing waits; under load one statement
   * does the work of many. A group that fails is written again one create at a time, so a create that cannot
   * be written fails alone.
   */
  async create(
    userId: string,
    fields: TaskFields,
    meta: EventMeta,
    opts: { seriesId?: string | null; tx?: Tx; idempotency?: IdempotencyKey } = {},
  ): Promise<Task> {
    const task = newTask(uuidv7(), userId, fields, this.clock.now(), opts.seriesId);
    const event = this.event('task.created', task, null, [], meta);
    const item: Create = { task, event, ...(opts.idempotency ? { idempotency: opts.idempotency } : {}) };
    if (opts.tx) await this.insert(opts.tx, [item]);
    else await this.group.submit(item);
    return task;
  }

  /**
   * `create` at most once per idempotency key and user within 24 hours: a repeated key with the same
   * request answers the task the first one created (`replayed`; ConflictError when it was deleted since), with
   * another request IdempotencyMismatchError.
   * Two concurrent requests with one key: the key's row is written with the task, so one insert fails on
   * it and its request answers the other's task.
   */
  async createOnce(
    userId: string,
    fields: TaskFields,
    meta: EventMeta,
    idempotency: IdempotencyKey,
  ): Promise<{ task: Task; replayed: boolean }> {
    const earlier = await this.replay(userId, idempotency);
    if (earlier) return { task: earlier, replayed: true };
    try {
      return { task: await this.create(userId, fields, meta, { idempotency }), replayed: false };
    } catch (err) {
      const e = err as { code?: string; constraint?: string };
      if (e.code !== '23505' || e.constraint !== 'idempotency_keys_pkey') throw err;
      const other = await this.replay(userId, idempotency);
      if (!other) throw err;
      return { task: other, replayed: true };
    }
  }

  private async replay(userId: string, idempotency: IdempotencyKey): Promise<Task | null> {
    const r = await this.db.query<{ request_hash: string; response: Task; task_exists: boolean }>(
      REPLAY_SQL,
      [userId, idempotency.key],
    );
    const row = r.rows[0];
    if (!row) return null;
    if (row.request_hash !== idempotency.requestHash) throw new IdempotencyMismatchError(idempotency.key);
    // The first answer named a task deleted since: answering it again would hand out an id that is gone.
    if (!row.task_exists)
      throw new ConflictError(
        `the task Idempotency-Key "${idempotency.key}" created (${row.response.id}) was deleted since; send a new key to create another`,
      );
    return row.response;
  }

  /**
   * The rows, their idempotency keys and their events in one statement: atomic on its own, without
   * BEGIN/COMMIT round trips.
   */
  /**
   * A group's write; when its connection went while the statement ran, whether it committed is read back (one
   * statement: all of the group or none): the answer may have been lost after the commit (a proxy, a failover,
   * the network), and the creates were answered 503 "not applied" for tasks that were there (a client's retry
   * made each twice), or written again one at a time and refused as duplicates. Committed, the callers get
   * their tasks; the consumers find the events on the bus by their own reads (no in-process hand-off).
   */
  private async insertConfirmingLostAnswer(items: readonly Create[]): Promise<void> {
    try {
      await this.insert(this.db, items);
    } catch (err) {
      // Written again one at a time after a group's connection went (GroupCommit), a create whose group had
      // committed finds its own rows taken: it is there (a unique check waits for the row's writer to end).
      if (ownRowsTaken(err)) return this.confirm(items, err);
      if (!isUnavailable(err)) throw err;
      // The connection went while the statement ran. PostgreSQL runs a statement on after its client has gone
      // (waiting on a user's stream lock, say) and may commit it after any read of ours: a read found nothing,
      // the creates were answered 503 "not applied", and committed a moment later (a client's retry made each
      // twice). Written again with the same ids, the statement waits for the first and then writes (it did not
      // commit) or finds its own rows (it did): one outcome either way.
      try {
        await this.insert(this.db, items);
      } catch (again) {
        if (ownRowsTaken(again)) return this.confirm(items, err);
        if (isUnavailable(again)) throw err; // still unreachable: not known, so not applied as far as told
        throw again;
      }
    }
  }

  /** The group's first task is there (one statement: all of it or none), or `err` goes on. */
  private async confirm(items: readonly Create[], err: unknown): Promise<void> {
    const there = await this.db
      .query('SELECT 1 FROM tasks WHERE id = $1 AND user_id = $2', [
        items[0]!.task.id,
        items[0]!.task.user_id,
      ])
      .then(
        (r) => r.rows.length > 0,
        () => false,
      );
    if (!there) throw err;
  }

  private async insert(q: Tx, items: readonly Create[]): Promise<void> {
    const params = items.flatMap((i) => TaskStore.rowParams(i.task));
    const keys = items.filter((i) => i.idempotency);
    const keyRows = keys.map((i) => {
      const at = params.length + 1;
      params.push(i.task.user_id, i.idempotency!.key, i.idempotency!.requestHash, JSON.stringify(i.task));
      return `($${at}, $${at + 1}, $${at + 2}, $${at + 3}::jsonb)`;
    });
    const idem = keyRows.length
      ? `, idem AS (INSERT INTO idempotency_keys (user_id, key, request_hash, response) VALUES ${keyRows.join(', ')})`
      : '';
    const w = await eventWrite(q, withTaskChanges(items.map((i) => i.event)), params.length + 1);
    await runWithEvents(
      q,
      w,
      `WITH task AS (${TaskStore.insertSql(items.length)})${idem}, ${w.ctes} ${w.insert}`,
      [...params, ...w.params],
    );
  }

  /** The user's task; `forUpdate` locks its row until `q`'s transaction ends. */
  async get(userId: string, id: string, q: Queryable = this.db, forUpdate = false): Promise<Task> {
    if (!isUuid(id)) throw new NotFoundError();
    const r = await q.query<TaskRow>(
      `SELECT ${COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2${forUpdate ? ' FOR UPDATE' : ''}`,
      [id, userId],
    );
    if (!r.rows[0]) throw new NotFoundError();
    return toTask(r.rows[0]);
  }

  /**
   * Loads the task under a row lock, applies `change`, writes the new row and its event. `expectedVersion`
   * (from If-Match) makes it a compare-and-set. Answers the task as written.
   */
  async change(
    userId: string,
    id: string,
    change: (task: Task, now: Date) => Result<Transition>,
    meta: EventMeta,
    expectedVersion?: ExpectedVersion,
  ): Promise<Task> {
    return (await this.transition(userId, id, change, meta, expectedVersion)).task;
  }

  /**
   * `change`, answering what it did too: the event written (none when nothing changed) and the fields. In the
   * caller's transaction when given (`tx`: a skip moves the task and its series together).
   */
  async transition(
    userId: string,
    id: string,
    change: (task: Task, now: Date) => Result<Transition>,
    meta: EventMeta,
    expectedVersion?: ExpectedVersion,
    inTx?: Tx,
  ): Promise<Transition> {
    if (!isUuid(id)) throw new NotFoundError();
    const run = <T>(fn: (tx: Tx) => Promise<T>) => (inTx ? fn(inTx) : this.db.transaction(fn));
    const result = await run(async (tx) => {
      const r = await tx.query<TaskRow>(
        `SELECT ${COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2 FOR UPDATE`,
        [id, userId],
      );
      if (!r.rows[0]) throw new NotFoundError();
      const before = toTask(r.rows[0]);
      assertVersion(expectedVersion, before.version);
      const done = unwrap(change(before, this.clock.now()));
      const { task, changes, eventType } = done;
      if (!eventType) return { task: before, changes: [], eventType: null };
      if (eventType === 'task.reopened' && before.series_id)
        await this.takeBackNextOccurrence(tx, before, meta);
      // The row and its event in one statement (the row lock above keeps the read-modify-write safe).
      const params = TaskStore.rowParams(task);
      const w = await eventWrite(
        tx,
        withTaskChanges([this.event(eventType, task, before, changes, meta)]),
        params.length + 1,
      );
      await runWithEvents(tx, w, `WITH task AS (${TaskStore.UPDATE_SQL}), ${w.ctes} ${w.insert}`, [
        ...params,
        ...w.params,
      ]);
      return done;
    });
    return result;
  }

  async update(
    userId: string,
    id: string,
    patch: TaskPatch,
    meta: EventMeta,
    expectedVersion?: ExpectedVersion,
  ) {
    return (await this.updateTransition(userId, id, patch, meta, expectedVersion)).task;
  }

  /** `update`, answering the transition (`transition`); in the caller's transaction when given. */
  updateTransition(
    userId: string,
    id: string,
    patch: TaskPatch,
    meta: EventMeta,
    expectedVersion?: ExpectedVersion,
    tx?: Tx,
  ) {
    return this.transition(userId, id, (t, now) => applyPatch(t, patch, now), meta, expectedVersion, tx);
  }

  /** The store's clock: a new task's rule is checked against it (its first repeat comes after now). */
  now(): Date {
    return this.clock.now();
  }

  async delete(
    userId: string,
    id: string,
    meta: EventMeta,
    expectedVersion?: ExpectedVersion,
  ): Promise<Task> {
    if (!isUuid(id)) throw new NotFoundError();
    const result = await this.db.transaction(async (tx) => {
      const r = await tx.query<TaskRow>(
        `DELETE FROM tasks WHERE id = $1 AND user_id = $2 RETURNING ${COLUMNS}`,
        [id, userId],
      );
      if (!r.rows[0]) throw new NotFoundError();
      const task = toTask(r.rows[0]);
      assertVersion(expectedVersion, task.version); // a conflict rolls the delete back
      await appendEvents(tx, withTaskChanges([this.deletedEvent(task, meta)]));
      return task;
    });
    return result;
  }

  /**
   * Reopening an occurrence of a recurring series takes its completion back, so a series never has two
   * pending occurrences: the next occurrence that this completion created (pending, never changed since) is
   * deleted with its `task.deleted` event in the same transaction. Refused (409) when that would lose or
   * contradict something: the next occurrence was changed (edited, skipped), a later completion went on from
   * it (only the latest completed occurrence can be reopened), or another occurrence of the series is pending.
   * A completion not yet handled by the recurrence service creates nothing once the task is pending again.
   *
   * Occurrences are ordered by completion, as the occurrence ledger (recurrence_occurrences, written with each
   * next occurrence in the recurrence service's transaction) links them: each next occurrence to the task
   * whose completion made it (`source_task_id`). Not by due date: in `after_completion` mode an occurrence
   * completed early makes a next one due before its own due date, and the due order named the latest
   * completion's predecessor as "later" (refusing its reopen) and let an older one delete the latest one's
   * next occurrence, leaving the series with none.
   */
  private async takeBackNextOccurrence(tx: Tx, task: Task, meta: EventMeta): Promise<void> {
    // The first task that still exists down this task's line of successors, through ones deleted since (a
    // completed occurrence deleted keeps its ledger row): its next occurrence, or a later one.
    const chain = await tx.query<{ id: string; depth: number }>(
      `WITH RECURSIVE chain (task_id, depth) AS (
         SELECT task_id, 1 FROM recurrence_occurrences WHERE source_task_id = $1
         UNION ALL
         SELECT o.task_id, c.depth + 1 FROM chain c JOIN recurrence_occurrences o ON o.source_task_id = c.task_id
          WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.id = c.task_id)
       )
       SELECT c.task_id::text AS id, c.depth FROM chain c JOIN tasks t ON t.id = c.task_id AND t.user_id = $2
        ORDER BY c.depth LIMIT 1`,
      [task.id, task.user_id],
    );
    const after = chain.rows[0];
    // That one, and every pending occurrence of the series, locked.
    const r = await tx.query<TaskRow>(
      `SELECT ${COLUMNS} FROM tasks
        WHERE user_id = $1 AND series_id = $2 AND id <> $3 AND (status = 'pending' OR id = $4)
        ORDER BY due_date NULLS FIRST, id FOR UPDATE`,
      [task.user_id, task.series_id, task.id, after?.id ?? null],
    );
    const others = r.rows.map(toTask);
    const later = others.find((t) => t.id === after?.id && t.status === 'completed');
    if (later)
      throw new ConflictError(
        `a later occurrence of this series (${later.id}) is completed; only the latest completed occurrence can be reopened`,
      );
    const next =
      after?.depth === 1 ? others.find((t) => t.id === after.id && t.status === 'pending') : undefined;
    const other = others.find((t) => t.status === 'pending' && t.id !== next?.id);
    if (other)
      throw new ConflictError(
        `another occurrence of this series (${other.id}) is pending and was not created by this one's completion; complete or delete it, then reopen this one`,
      );
    if (!next) return;
    if (next.version > 1)
      throw new ConflictError(
        `the next occurrence of this series (${next.id}) was changed since it was created; complete or delete it, then reopen this one`,
      );
    await tx.query(`DELETE FROM tasks WHERE id = $1`, [next.id]);
    await appendEvents(tx, withTaskChanges([this.deletedEvent(next, meta)]));
  }

  /** The `task.deleted` of a task just deleted: the task as it was, stamped with the time of deletion. */
  private deletedEvent(task: Task, meta: EventMeta) {
    return this.event(
      'task.deleted',
      { ...task, updated_at: this.clock.now().toISOString() },
      task,
      [],
      meta,
    );
  }

  /**
   * How many of the user's tasks are in each view of the board: all, pending, completed, and of the pending
   * ones those overdue, due today and upcoming (from tomorrow), days in the user's `timeZone`. One statement.
   */
  async counts(userId: string, timeZone: string): Promise<TaskCounts> {
    const now = this.clock.now();
    const today = dueWindowRange('today', now, timeZone);
    const r = await this.db.query<TaskCounts>(
      `SELECT count(*)::int AS total,
              count(*) FILTER (WHERE status = 'pending')::int AS pending,
              count(*) FILTER (WHERE status = 'completed')::int AS completed,
              count(*) FILTER (WHERE status = 'pending' AND due_date < $2)::int AS overdue,
              count(*) FILTER (WHERE status = 'pending' AND due_date >= $3 AND due_date < $4)::int AS today,
              count(*) FILTER (WHERE status = 'pending' AND due_date >= $4)::int AS upcoming
         FROM tasks WHERE user_id = $1`,
      [userId, now.toISOString(), today.from, today.to],
    );
    return r.rows[0]!;
  }

  /** `timeZone`: the user's, needed when the query names a due window (`due=today`). */
  async list(userId: string, q: TaskQuery, opts: { timeZone?: string } = {}): Promise<TaskPage> {
    const now = this.clock.now();
    const where: string[] = ['user_id = $1'];
    const params: unknown[] = [userId];
    const p = (v: unknown) => {
      params.push(v);
      return `$${params.length}`;
    };
    if (q.status !== 'all') where.push(`status = ${p(q.status)}`);
    if (q.priorities.length) where.push(`priority = ANY(${p(q.priorities)}::text[])`);
    if (q.tags.length) where.push(`tag_keys ${q.tagMode === 'all' ? '@>' : '&&'} ${p(q.tags)}::text[]`);
    if (q.dueBefore) where.push(`due_date < ${p(q.dueBefore)}`);
    if (q.dueAfter) where.push(`due_date > ${p(q.dueAfter)}`);
    if (q.due) {
      const range = dueWindowRange(q.due, now, opts.timeZone ?? 'UTC');
      where.push(`due_date >= ${p(range.from)}`);
      if (range.to) where.push(`due_date < ${p(range.to)}`);
    }
    if (q.overdue === true) where.push(`status = 'pending' AND due_date < ${p(now.toISOString())}`);
    if (q.overdue === false)
      where.push(`NOT (status = 'pending' AND due_date IS NOT NULL AND due_date < ${p(now.toISOString())})`);
    if (q.q) {
      const likeOf = (text: string) => `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      const traits = await textTraits(this.db);
      // Where the database's lower() folds ASCII only, the text's part of a word is matched in ICU's folding.
      const contains =
        !traits.folds && traits.icu
          ? (column: string, pattern: string) =>
              `lower(${column} COLLATE "und-x-icu") LIKE lower(${pattern} COLLATE "und-x-icu")`
          : (column: string, pattern: string) => `${column} ILIKE ${pattern}`;
      const inText = (pattern: string) =>
        `${contains('title', pattern)} OR ${contains('description', pattern)}`;
      // Every word of the text, each as written or by its English stem (migration 010), or the text as any
      // part of a word. No operators: websearch_to_tsquery read "-bar" as NOT bar, which matched every task
      // without it. A word each: the stems of the whole text drop English stop words ("pay with" found "Pay
      // bills"); a word's stem query is empty then, and `||` keeps the word as written. A word with a sign the
      // text search drops (C++, C#, node.js, #home) is found as written, as part of the title or description:
      // its lexemes alone ("c") found "C#" for "C++". Sentence punctuation around a word is not a sign.
      const words = q.q
        .split(/\s+/)
        .map((w) => w.replace(/^[.,;:!?"'()]+|[.,;:!?"'()]+$/g, ''))
        .filter(Boolean);
      const signed = (w: string) => /[^\p{L}\p{N}\p{M}'’_-]/u.test(w);
      const lexemes = words
        .filter((w) => !signed(w))
        .map((w) => {
          const word = p(w);
          return `(plainto_tsquery('simple', ${word}) || plainto_tsquery('english', ${word}))`;
        });
      const every = [
        ...(lexemes.length ? [`search @@ (${lexemes.join(' && ')})`] : []),
        ...words.filter(signed).map((w) => `(${inText(p(likeOf(w)))})`),
      ];
      const whole = inText(p(likeOf(q.q)));
      where.push(every.length ? `((${every.join(' AND ')}) OR ${whole})` : `(${whole})`);
    }
    const icu = q.sort === 'title' && (await textTraits(this.db)).icu;
    const cmp = q.order === 'asc' ? '>' : '<';
    let sql: string;
    if (q.sort === 'due') {
      // Those with a due date, then those without, each a walk of the (user_id, due_date, id) index from the
      // cursor and at most a page: sorted by coalesce(due_date, ±infinity), every page read and sorted all of
      // the user's tasks (70 ms a page at 100,000, docs/benchmarks.md). A cursor of the undated part holds
      // ±infinity, as before.
      const order = `tasks.due_date ${q.order}, tasks.id ${q.order}`; // tasks.id: not the text of it
      const inUndated = q.cursor && (q.cursor.v === 'infinity' || q.cursor.v === '-infinity');
      const filters = where.join(' AND ');
      const dated = inUndated
        ? 'false'
        : `due_date IS NOT NULL${q.cursor ? ` AND (due_date, id) ${cmp} (${p(q.cursor.v)}::timestamptz, ${p(q.cursor.id)}::uuid)` : ''}`;
      const undated = `due_date IS NULL${inUndated ? ` AND id ${cmp} ${p(q.cursor!.id)}::uuid` : ''}`;
      const limit = p(q.limit + 1);
      const branch = (only: string) =>
        `(SELECT ${COLUMNS}, tasks.id AS uuid FROM tasks WHERE ${filters} AND ${only} ORDER BY ${order} LIMIT ${limit})`;
      sql = `SELECT * FROM (${branch(dated)} UNION ALL ${branch(undated)}) page
        ORDER BY due_date ${q.order} NULLS LAST, uuid ${q.order} LIMIT ${limit}`;
    } else {
      const expr = q.sort === 'title' ? titleKey('title', icu) : SORT_EXPR[q.sort][q.order];
      if (q.cursor) {
        const value =
          q.sort === 'priority'
            ? `${p(q.cursor.v)}::smallint`
            : q.sort === 'title'
              ? titleKey(`${p(q.cursor.v)}::text`, icu)
              : `${p(q.cursor.v)}::timestamptz`;
        where.push(`(${expr}, id) ${cmp} (${value}, ${p(q.cursor.id)}::uuid)`);
      }
      sql = `SELECT ${COLUMNS} FROM tasks WHERE ${where.join(' AND ')}
        ORDER BY ${expr} ${q.order}, tasks.id ${q.order} LIMIT ${p(q.limit + 1)}`;
    }
    const rows = (await this.db.query<TaskRow>(sql, params)).rows.map(toTask);
    const items = rows.slice(0, q.limit);
    const last = items[items.length - 1];
    const next_cursor =
      rows.length > q.limit && last
        ? encodeCursor({
            v: cursorValue(last, q.sort, q.order),
            id: last.id,
            s: q.sort,
            o: q.order,
            f: q.filters,
          })
        : null;
    return { items, next_cursor };
  }
}
