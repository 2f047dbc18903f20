/**
 * The embedded bus's log as the database's event sink (BUS=embedded): a transaction's events are appended
 * to the partitioned log in the statement that writes them, so the log is the transactional outbox and
 * there is nothing to relay (docs/adr/0008-the-cost-of-a-write.md).
 *
 * - Offsets: a per-partition counter row hands out gap-free offsets; its row lock, held to the commit, makes
 *   offset order equal commit order, so readers never skip an offset that commits late. Partition rows are
 *   locked in (topic, partition) order, so two multi-partition writers cannot deadlock.
 * - In-process delivery: once a write committed, its messages (with the event objects the writer built) go
 *   to a small per-partition tail in memory and wake only that partition's workers in this process, which
 *   take them from the tail instead of reading them back. Workers in other processes (PostgreSQL) are woken
 *   by the statement's NOTIFY and read the table; so does any worker whose position is not in the tail.
 */
import { EventEmitter } from 'node:events';
import type { CloudEvent } from '../../contracts/cloudevent.ts';
import {
  assertValidEvent,
  isEventType,
  numberedSql,
  sequenceStreamOf,
  topicOf,
} from '../../contracts/schemas.ts';
import { topicSpec } from '../../contracts/topics.ts';
import {
  jsonArrayParam,
  notifyEvent,
  type Db,
  type EventSink,
  type EventWrite,
  type Queryable,
  type Tx,
} from '../../store/db.ts';
import { partitionFor } from '../partitioner.ts';
import { producerSpans } from '../producer-spans.ts';
import type { BusMessage } from '../types.ts';
import { headerText } from '../../error-text.ts';

/** The NOTIFY channel appends announce themselves on (payload `topic/partition`), for other processes. */
export const LOG_NOTIFY_CHANNEL = 'taskflow_bus';

/**
 * An expression that fails the statement, naming the partition, when it is evaluated: for a message whose
 * partition row does not exist, so the event is never dropped silently. `random()` keeps the planner from
 * evaluating it ahead (constant folding) when the partition is known from parameters.
 */
const missingPartition = (name: string) =>
  `('embedded log: no partition ' || ${name} || left(random()::text, 0))::bigint`;

/** What an append returns of each message; `sequence` when it numbers key-sequenced events. */
const returning = (numbered: boolean) =>
  `topic, partition, "offset"::text AS "offset", created_at${numbered ? `, value #>> '{data,sequence}' AS sequence` : ''}`;

/** Up to this many messages an append is written with one row per message (`smallWrite`). */
const SMALL_WRITE = 8;

/** Messages kept per partition for in-process delivery; a consumer further behind reads the table. */
const TAIL_SIZE = 256;

export const partitionId = (topic: string, partition: number) => `${topic}/${partition}`;

/** A message's headers as `jsonb` takes them: values that hold a NUL or a lone surrogate made safe (headerText). */
function headersJson(headers: Record<string, string> | undefined): string {
  if (!headers) return '{}';
  let safe: Record<string, string> | undefined;
  for (const k in headers) {
    const v = headers[k]!;
    const clean = headerText(v, v.length);
    if (clean !== v) (safe ??= { ...headers })[k] = clean;
  }
  return JSON.stringify(safe ?? headers);
}

/**
 * Text in code-unit order, as PostgreSQL's "C" collation orders it: rows locked in this order from JavaScript and
 * in `ORDER BY … COLLATE "C"` from SQL come in one order (a database's default collation may put `task-updates`
 * after `taskflow-x.dlq`, which code units put first).
 */
export const byCodeUnits = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

export async function ensureTopic(q: Queryable, name: string): Promise<number> {
  const existing = await q.query<{ partitions: number }>(
    'SELECT partitions FROM bus_topics WHERE topic = $1',
    [name],
  );
  if (existing.rows[0]) return existing.rows[0].partitions;
  const spec = topicSpec(name);
  const [created] = await createTopics(q, [spec]);
  return created!.partitions;
}

/**
 * Creates topics and their partitions, or updates existing ones (their retention; with `grow`, more partitions
 * where more are asked: never fewer), two statements for any number; resolves the partition count of each.
 */
export async function createTopics(
  q: Queryable,
  topics: readonly { name: string; partitions: number; retentionMs: number }[],
  grow = false,
) {
  const names = topics.map((t) => t.name);
  const counts = await q.query<{ topic: string; partitions: number }>(
    `INSERT INTO bus_topics (topic, partitions, retention_ms)
     SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[])
     ON CONFLICT (topic) DO UPDATE SET retention_ms = excluded.retention_ms,
       partitions = CASE WHEN $4 THEN greatest(bus_topics.partitions, excluded.partitions)
                         ELSE bus_topics.partitions END
     RETURNING topic, partitions`,
    [names, topics.map((t) => t.partitions), topics.map((t) => t.retentionMs), grow],
  );
  await q.query(
    `INSERT INTO bus_partitions (topic, partition)
     SELECT t.topic, g FROM bus_topics t, generate_series(0, t.partitions - 1) g WHERE t.topic = ANY($1)
     ON CONFLICT DO NOTHING`,
    [names],
  );
  return counts.rows;
}

/** The last messages of one partition committed by this process, by offset. */
class Tail {
  private readonly messages = new Map<number, BusMessage>();
  /** The highest offset added. */
  high = -1;
  add(m: BusMessage): void {
    const offset = Number(m.offset);
    this.messages.set(offset, m);
    if (offset > this.high) this.high = offset;
    if (this.messages.size > TAIL_SIZE) this.messages.delete(this.messages.keys().next().value!);
  }
  /** The consecutive messages from `from` on, at most `max`; empty when `from` is not here. */
  take(from: number, max: number): BusMessage[] {
    const out: BusMessage[] = [];
    for (let o = from; out.length < max; o++) {
      const m = this.messages.get(o);
      if (!m) break;
      out.push(m);
    }
    return out;
  }
}

export interface LogMessage {
  topic: string;
  key: string;
  event: CloudEvent;
  headers?: Record<string, string> | undefined;
  /**
   * The `event_streams` row that numbers this event's `data.sequence` in the append (a new key-sequenced
   * event, `compose`); re-appended messages (relayed, replayed) keep the sequence they have.
   */
  sequenceStream?: string | undefined;
}

/** A message's value in the append: its JSON, with `data.sequence` set to `sequence` when numbered. */
const valueSql = (json: string, sequence: string | undefined) =>
  sequence === undefined ? `${json}::jsonb` : numberedSql(`${json}::jsonb`, sequence);

export class EmbeddedLog implements EventSink {
  /** Called for each message once its append committed (metrics). */
  onAppended: ((topic: string, event: CloudEvent) => void) | undefined;
  /** Wakes the workers of a partition (event name: partitionId) after a commit in this process. */
  readonly appended = new EventEmitter();
  private readonly partitions = new Map<string, number>();
  private readonly loading = new Map<string, Promise<void>>();
  /** Topics created inside a transaction not committed yet (see `ready`). */
  private readonly uncommitted = new Map<string, number>();
  private readonly tails = new Map<string, Tail>();

  /** One log per database: every embedded bus on it shares the tails and wake-ups. */
  static of(db: Db): EmbeddedLog {
    if (db.events instanceof EmbeddedLog) return db.events;
    const log = new EmbeddedLog(db);
    db.events = log;
    return log;
  }

  private constructor(private readonly db: Db) {
    this.appended.setMaxListeners(0);
  }

  /** Partitions of `topic`, once `ready` has loaded them. */
  partitionCount(topic: string): number | undefined {
    return this.partitions.get(topic);
  }

  /**
   * Loads the partition counts of `topics` (creating missing topics). Through the database, and cached, when
   * `q` is the database itself or a pool has other connections (PostgreSQL). Inside a PGlite transaction the
   * one connection is busy with it, so the lookup goes through `q`, and a topic it has to create is used for
   * this write only (cached once it is found committed).
   */
  ready(topics: readonly string[], q?: Tx): Promise<void> | undefined {
    let missing: string[] | undefined;
    for (const t of topics) if (!this.partitions.has(t)) (missing ??= []).push(t);
    if (!missing) return undefined;
    const inTransaction = q !== undefined && q.db !== q && this.db.kind === 'pglite';
    return Promise.all(missing.map((t) => (inTransaction ? this.loadIn(q, t) : this.load(t)))).then(
      () => undefined,
    );
  }

  private load(topic: string): Promise<void> {
    let p = this.loading.get(topic);
    if (!p) {
      p = ensureTopic(this.db, topic).then(
        (n) => this.grown(topic, n),
        (err: unknown) => {
          this.loading.delete(topic);
          throw err;
        },
      );
      this.loading.set(topic, p);
    }
    return p;
  }

  private async loadIn(tx: Queryable, topic: string): Promise<void> {
    const r = await tx.query<{ partitions: number }>('SELECT partitions FROM bus_topics WHERE topic = $1', [
      topic,
    ]);
    if (r.rows[0]) this.grown(topic, r.rows[0].partitions);
    else this.uncommitted.set(topic, await ensureTopic(tx, topic));
  }

  /**
   * Records a topic's partition count after its partitions may have grown (partitions only grow, so a smaller
   * count read earlier never replaces it). The count is replaced, never dropped: a writer between its `ready`
   * and its `compose` must find it (topics are provisioned while the API already serves).
   */
  grown(topic: string, partitions: number): void {
    this.partitions.set(topic, Math.max(partitions, this.partitions.get(topic) ?? 0));
  }

  /** The events of a state change; with tracing on, each is put on the bus in a PRODUCER span. */
  compose(events: readonly CloudEvent[], first = 1): EventWrite {
    const traced = producerSpans(
      events.map((e) => {
        assertValidEvent(e);
        if (!isEventType(e.type)) throw new Error(`unknown event type ${e.type}`);
        if (!e.partitionkey) throw new Error(`event ${e.id} has no partitionkey`);
        return {
          topic: topicOf(e.type),
          key: e.partitionkey,
          event: e,
          sequenceStream: sequenceStreamOf(e),
        };
      }),
      'embedded',
    );
    const w = this.write(traced.messages, first);
    return {
      ...w,
      committed: (rows) => {
        traced.end();
        w.committed(rows);
      },
    };
  }

  /**
   * Appends messages of any topic (dead letters, replays, relayed outbox rows) as SQL to compose; the topics'
   * partitions must be `ready`.
   */
  write(messages: readonly LogMessage[], first = 1): EventWrite {
    const topic: string[] = [];
    const part: number[] = [];
    const key: string[] = [];
    const headers: string[] = [];
    const value: string[] = [];
    const stream: (string | null)[] = [];
    const byPartition = new Map<string, LogMessage[]>();
    // A small write renders each message into its own rows (smallWrite); only the set-based form takes arrays.
    const large = messages.length > SMALL_WRITE;
    for (const m of messages) {
      const count = this.partitions.get(m.topic) ?? this.uncommitted.get(m.topic);
      if (count === undefined) throw new Error(`embedded log: topic ${m.topic} is not ready`);
      const p = partitionFor(m.key, count);
      if (large) {
        topic.push(m.topic);
        part.push(p);
        key.push(m.key);
        headers.push(headersJson(m.headers));
        value.push(JSON.stringify(m.event));
        stream.push(m.sequenceStream ?? null);
      }
      const id = partitionId(m.topic, p);
      const list = byPartition.get(id);
      if (list) list.push(m);
      else byPartition.set(id, [m]);
    }
    const sql = large
      ? this.largeWrite(first, [topic, part, key, jsonArrayParam(headers), jsonArrayParam(value), stream])
      : this.smallWrite(byPartition, first);
    return {
      ...sql,
      committed: (rows) => this.committed(byPartition, rows),
    };
  }

  /** On PostgreSQL an append NOTIFYs each partition it appends to (sent at commit, duplicates folded). */
  private notify(topic: string, partition: string): string {
    return this.db.kind === 'postgres'
      ? `, pg_notify('${LOG_NOTIFY_CHANNEL}', ${topic} || '/' || ${partition})`
      : '';
  }

  /**
   * A few messages (the common write: one event): one counter UPDATE per partition, each a CTE read in
   * (topic, partition) order, so partition rows are locked in that order, and one row per message. Cheaper to
   * plan and run than the set-based form (about a third of its cost on PGlite). A missing partition row fails
   * the statement (the cast of the message) instead of dropping the event.
   */
  private smallWrite(
    byPartition: Map<string, LogMessage[]>,
    first: number,
  ): { ctes: string; insert: string; params: unknown[] } {
    const params: unknown[] = [];
    const $ = (v: unknown) => {
      params.push(v);
      return `$${first + params.length - 1}`;
    };
    const ctes: string[] = [];
    const rows: string[] = [];
    let numbered = false;
    // In the order largeWrite locks them (a topic's partitions by number, not as text: `t/10` before `t/2` let
    // a small and a large write each hold a row the other waited for, and PostgreSQL aborted one).
    const groups = [...byPartition]
      .map(([id, list]) => ({ list, partition: Number(id.slice(id.lastIndexOf('/') + 1)) }))
      .sort((a, b) => byCodeUnits(a.list[0]!.topic, b.list[0]!.topic) || a.partition - b.partition);
    groups.forEach(({ list, partition }, g) => {
      const topic = $(list[0]!.topic);
      ctes.push(
        `ev_p${g} AS (UPDATE bus_partitions SET next_offset = next_offset + ${list.length}
           WHERE topic = ${topic} AND partition = ${partition}
           RETURNING next_offset - ${list.length} AS first${this.notify('topic', 'partition::text')})`,
      );
      // Each sequence stream of the partition: its counter row, locked after the partition's (it reads ev_p).
      const streams = new Map<string, { cte: string; count: number }>();
      for (const m of list)
        if (m.sequenceStream !== undefined) {
          const s = streams.get(m.sequenceStream);
          if (s) s.count++;
          else streams.set(m.sequenceStream, { cte: `ev_s${g}_${streams.size}`, count: 1 });
        }
      for (const [name, s] of [...streams].sort(([a], [b]) => byCodeUnits(a, b)))
        ctes.push(
          `${s.cte} AS (INSERT INTO event_streams (stream_key, last_seq) SELECT ${$(name)}, ${s.count} FROM ev_p${g}
             ON CONFLICT (stream_key) DO UPDATE SET last_seq = event_streams.last_seq + excluded.last_seq
             RETURNING last_seq - ${s.count} AS first)`,
        );
      const taken = new Map<string, number>();
      list.forEach((m, i) => {
        const s = m.sequenceStream === undefined ? undefined : streams.get(m.sequenceStream);
        const nth = s ? (taken.get(s.cte) ?? 0) + 1 : 0;
        if (s) taken.set(s.cte, nth);
        numbered ||= s !== undefined;
        rows.push(
          `SELECT ${topic}::text, ${partition}, coalesce(ev_p${g}.first, ${missingPartition(`${topic} || '/${partition}'`)}) + ${i},
                  ${$(m.key)}::text, ${$(headersJson(m.headers))}::jsonb,
                  ${valueSql($(JSON.stringify(m.event)), s ? `${s.cte}.first + ${nth}` : undefined)}
             FROM (VALUES (1)) one LEFT JOIN ev_p${g} ON true${s ? ` LEFT JOIN ${s.cte} ON true` : ''}`,
        );
      });
    });
    return {
      ctes: ctes.join(', '),
      insert: `INSERT INTO bus_messages (topic, partition, "offset", key, headers, value) ${rows.join(' UNION ALL ')}
       RETURNING ${returning(numbered)}`,
      params,
    };
  }

  /** Many messages (a scheduler claim, a backlog): the same write as one set-based statement. */
  private largeWrite(first: number, params: unknown[]): { ctes: string; insert: string; params: unknown[] } {
    const $ = (i: number) => `$${first + i}`;
    return {
      ctes: `ev AS (
         SELECT * FROM ROWS FROM (unnest(${$(0)}::text[]), unnest(${$(1)}::int[]), unnest(${$(2)}::text[]),
                                  jsonb_array_elements(${$(3)}::jsonb), jsonb_array_elements(${$(4)}::jsonb),
                                  unnest(${$(5)}::text[]))
           WITH ORDINALITY AS t(topic, part, key, headers, value, stream, ord)
       ), ev_count AS (
         SELECT topic, part, count(*) AS n FROM ev GROUP BY topic, part
       ), ev_lock AS MATERIALIZED (
         SELECT p.topic, p.partition FROM bus_partitions p JOIN ev_count c ON p.topic = c.topic AND p.partition = c.part
          ORDER BY p.topic COLLATE "C", p.partition FOR UPDATE OF p
       ), ev_first AS (
         UPDATE bus_partitions p SET next_offset = p.next_offset + c.n FROM ev_count c
          WHERE p.topic = c.topic AND p.partition = c.part AND (p.topic, p.partition) IN (SELECT topic, partition FROM ev_lock)
         RETURNING p.topic, p.partition, p.next_offset - c.n AS first${this.notify('p.topic', 'p.partition::text')}
       ), ev_seq AS (
         INSERT INTO event_streams (stream_key, last_seq)
         SELECT stream, count(*) FROM ev WHERE stream IS NOT NULL AND EXISTS (SELECT 1 FROM ev_first)
          GROUP BY stream ORDER BY stream COLLATE "C"
         ON CONFLICT (stream_key) DO UPDATE SET last_seq = event_streams.last_seq + excluded.last_seq
         RETURNING stream_key, last_seq
       )`,
      insert: `INSERT INTO bus_messages (topic, partition, "offset", key, headers, value)
       SELECT ev.topic, ev.part,
              coalesce(f.first, ${missingPartition(`ev.topic || '/' || ev.part`)})
                + row_number() OVER (PARTITION BY ev.topic, ev.part ORDER BY ev.ord) - 1,
              ev.key, ev.headers::jsonb,
              CASE WHEN ev.stream IS NULL THEN ev.value::jsonb
                   ELSE ${valueSql('ev.value', 's.last_seq - count(*) OVER (PARTITION BY ev.stream) + row_number() OVER (PARTITION BY ev.stream ORDER BY ev.ord)')} END
         FROM ev LEFT JOIN ev_first f ON f.topic = ev.topic AND f.partition = ev.part
                 LEFT JOIN ev_seq s ON s.stream_key = ev.stream
       RETURNING ${returning(true)}`,
      params,
    };
  }

  /**
   * After the commit: each partition's returned offsets, ascending, belong to its messages in write order
   * (the offsets were numbered in that order); they go to the tail and wake that partition's workers.
   */
  private committed(byPartition: Map<string, LogMessage[]>, rows: readonly Record<string, unknown>[]) {
    const offsets = new Map<string, { offset: string; at: string; sequence: unknown }[]>();
    for (const r of rows) {
      const id = partitionId(String(r.topic), Number(r.partition));
      const at = r.created_at instanceof Date ? r.created_at.toISOString() : new Date().toISOString();
      const entry = { offset: String(r.offset), at, sequence: r.sequence };
      const list = offsets.get(id);
      if (list) list.push(entry);
      else offsets.set(id, [entry]);
    }
    for (const [id, written] of byPartition) {
      const got = offsets.get(id);
      if (!got || got.length !== written.length) {
        // Cannot pair them: the partition's workers in this process read the table instead (a process does
        // not hear its own NOTIFY, so it is told here, as a NOTIFY would).
        this.db.signals.emit(notifyEvent(LOG_NOTIFY_CHANNEL), id);
        continue;
      }
      got.sort((a, b) => Number(a.offset) - Number(b.offset));
      let tail = this.tails.get(id);
      if (!tail) this.tails.set(id, (tail = new Tail()));
      const partition = Number(id.slice(id.lastIndexOf('/') + 1));
      written.forEach((m, i) => {
        // The event object the writer built gets the sequence the statement gave it.
        if (m.sequenceStream !== undefined && got[i]!.sequence != null)
          (m.event.data as { sequence: number }).sequence = Number(got[i]!.sequence);
        tail.add({
          topic: m.topic,
          partition,
          offset: got[i]!.offset,
          key: m.key,
          headers: m.headers ?? {},
          event: m.event,
          timestamp: got[i]!.at,
        });
        this.onAppended?.(m.topic, m.event);
      });
      this.appended.emit(id);
    }
  }

  /** Messages of a partition from offset `from` on that this process committed recently (shared, read-only). */
  take(topic: string, partition: number, from: number, max: number): BusMessage[] {
    return this.tails.get(partitionId(topic, partition))?.take(from, max) ?? [];
  }

  /** Whether this process committed a message at or past `from` in the partition. */
  hasFrom(topic: string, partition: number, from: number): boolean {
    return (this.tails.get(partitionId(topic, partition))?.high ?? -1) >= from;
  }
}
