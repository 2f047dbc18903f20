/**
 * The transactional outbox. `appendEvents` runs inside the caller's transaction, after validating each
 * event against its schema: the state change and its events commit or roll back together. Where the events
 * go is the database's event sink (Db.events): this outbox table, from which the relay publishes to Kafka or
 * Dapr, or, with the embedded bus, the bus's log itself (bus/embedded/log.ts, docs/adr/0008). A row the relay
 * published is deleted (the bus keeps the event): the table holds what is pending.
 */
import { withDataJson, type CloudEvent } from '../contracts/cloudevent.ts';
import {
  assertValidEvent,
  isEventType,
  keyLockStream,
  numberedSql,
  sequenceStreamOf,
  topicOf,
} from '../contracts/schemas.ts';
import {
  bigintArrayParam,
  jsonArrayParam,
  notifyEvent,
  type EventWrite,
  type Queryable,
  type Tx,
} from './db.ts';

/**
 * The last sequence number a key-sequenced stream (`keySequenceStream`) has given out and committed: 0 when it
 * has given none.
 */
export async function streamHead(q: Queryable, stream: string): Promise<number> {
  const r = await q.query<{ last_seq: string }>(
    'SELECT last_seq::text AS last_seq FROM event_streams WHERE stream_key = $1',
    [stream],
  );
  return r.rows[0] ? Number(r.rows[0].last_seq) : 0;
}

/** In-process wake-up of the relay after a commit that wrote events (other processes poll). */
export const OUTBOX_SIGNAL = 'outbox-append';
/** The channel of the outbox trigger's NOTIFY (migration 007), and the `signals` event it becomes. */
export const OUTBOX_NOTIFY_CHANNEL = 'taskflow_outbox';
export const OUTBOX_NOTIFY_EVENT = notifyEvent(OUTBOX_NOTIFY_CHANNEL);

/**
 * The write of `events` into `q`'s database sink, as SQL to compose into one statement (see EventWrite);
 * awaits the sink's preparation first (the embedded log loads a topic's partitions once).
 */
export async function eventWrite(q: Tx, events: readonly CloudEvent[], first = 1): Promise<EventWrite> {
  const sink = q.db.events;
  if (!sink) {
    const w = outboxWrite(events, first);
    return { ...w, committed: () => q.db.signals.emit(OUTBOX_SIGNAL) };
  }
  const preparing = sink.ready(topicsOf(events), q);
  if (preparing) await preparing;
  return sink.compose(events, first);
}

/** Runs a statement that includes an event write, and hands the write its rows once committed. */
export async function runWithEvents<T>(
  q: Tx,
  w: EventWrite,
  sql: string,
  params: readonly unknown[],
): Promise<T[]> {
  const r = await q.query<T>(sql, params);
  q.afterCommit(() => w.committed(r.rows as Record<string, unknown>[]));
  return r.rows;
}

const topicsOf = (events: readonly CloudEvent[]) => {
  const topics: string[] = [];
  for (const e of events) {
    const t = isEventType(e.type) ? topicOf(e.type) : undefined;
    if (t && !topics.includes(t)) topics.push(t);
  }
  return topics;
};

/**
 * Writes events, in one statement whatever the batch size (a scheduler claim writes hundreds), to the
 * database's sink inside the caller's transaction; the relay or the log's consumers are woken after commit.
 */
export async function appendEvents(tx: Tx, events: readonly CloudEvent[]): Promise<void> {
  if (events.length === 0) return;
  const w = await eventWrite(tx, events);
  await runWithEvents(tx, w, `WITH ${w.ctes} ${w.insert}`, w.params);
}

/**
 * The outbox write as SQL to compose: `WITH <ctes>, ... <insert>` with the parameters numbered from `$first`.
 * A state change written as one more data-modifying CTE of the same statement commits with its events
 * without an explicit transaction (TaskStore.create). It takes each stream's row lock (held until commit;
 * rows locked in stream order, so two transactions sharing streams cannot deadlock), advances the stream's
 * sequence, and inserts the rows in the given order. A stream is an event's key (`keyLockStream`), or for a
 * key-sequenced type (`isKeySequenced`: task.changed) its own `type/key` stream, whose sequence becomes the event's
 * `data.sequence`. Transactions of one key are serialized by that lock, so for a key outbox ids and sequence
 * numbers follow commit order (the relay publishes in id order).
 */
export function outboxWrite(
  events: readonly CloudEvent[],
  first = 1,
): { ctes: string; insert: string; params: unknown[] } {
  const cols = {
    topic: [] as string[],
    key: [] as string[],
    stream: [] as string[],
    numbered: [] as boolean[],
    id: [] as string[],
    type: [] as string[],
  };
  const bodies: string[] = []; // one jsonb parameter (jsonArrayParam)
  for (const e of events) {
    assertValidEvent(e);
    if (!isEventType(e.type)) throw new Error(`unknown event type ${e.type}`);
    if (!e.partitionkey) throw new Error(`event ${e.id} has no partitionkey`);
    const stream = sequenceStreamOf(e);
    cols.topic.push(topicOf(e.type));
    cols.key.push(e.partitionkey);
    cols.stream.push(stream ?? keyLockStream(e.partitionkey));
    cols.numbered.push(stream !== undefined);
    cols.id.push(e.id);
    cols.type.push(e.type);
    bodies.push(JSON.stringify(e));
  }
  const $ = (i: number) => `$${first + i}`;
  return {
    ctes: `ev AS (
       SELECT topic, key, stream, numbered, id, type, body, ord,
              row_number() OVER (PARTITION BY stream ORDER BY ord) AS rn,
              count(*) OVER (PARTITION BY stream) AS n
         FROM ROWS FROM (unnest(${$(0)}::text[]), unnest(${$(1)}::text[]), unnest(${$(2)}::text[]),
                         unnest(${$(3)}::boolean[]), unnest(${$(4)}::text[]), unnest(${$(5)}::text[]),
                         jsonb_array_elements(${$(6)}::jsonb))
              WITH ORDINALITY AS t(topic, key, stream, numbered, id, type, body, ord)
     ), streams AS (
       INSERT INTO event_streams (stream_key, last_seq)
       SELECT stream, count(*) FROM ev GROUP BY stream ORDER BY stream COLLATE "C"
       ON CONFLICT (stream_key) DO UPDATE SET last_seq = event_streams.last_seq + excluded.last_seq
       RETURNING stream_key, last_seq
     )`,
    insert: `INSERT INTO outbox (topic, key, stream_seq, event_id, event_type, event)
     SELECT ev.topic, ev.key, streams.last_seq - ev.n + ev.rn, ev.id, ev.type,
            CASE WHEN ev.numbered
                 THEN ${numberedSql('ev.body', 'streams.last_seq - ev.n + ev.rn')}
                 ELSE ev.body END
       FROM ev JOIN streams ON streams.stream_key = ev.stream
      ORDER BY ev.ord`,
    params: [cols.topic, cols.key, cols.stream, cols.numbered, cols.id, cols.type, jsonArrayParam(bodies)],
  };
}

export interface OutboxRow {
  id: string;
  topic: string;
  key: string;
  event: CloudEvent;
}

/**
 * An outbox row's columns as the relay reads them: the event's attributes as JSON (parsed by the driver) and its
 * data as JSON text, which a JSON codec writes as the record's value without parsing it (withDataJson).
 */
const ROW_COLUMNS = `id::text AS id, topic, key, event - 'data' AS envelope, (event -> 'data')::text AS data`;

interface OutboxColumns {
  id: string;
  topic: string;
  key: string;
  envelope: Omit<CloudEvent, 'data'>;
  data: string | null;
}

const outboxRowOf = (r: OutboxColumns): OutboxRow => ({
  id: r.id,
  topic: r.topic,
  key: r.key,
  event: r.data === null ? (r.envelope as CloudEvent) : withDataJson(r.envelope, r.data),
});

/**
 * The first `limit` unpublished rows but those of `except` (sent, their marking maybe not yet committed) and
 * those of the keys `heldKeys` (a key whose event the bus refused waits whole: the relay's holds), in id order.
 * Always from the lowest id, never after the last row read: a transaction that took a smaller id may commit
 * after a larger one was read, and its key's next event, whose transaction waited for it on the stream lock,
 * has a larger id still; reading on from the last id would send that one first.
 */
export async function pendingOutbox(
  db: Queryable,
  limit: number,
  except: readonly string[] = [],
  heldKeys: readonly string[] = [],
): Promise<OutboxRow[]> {
  const r = await db.query<OutboxColumns>(
    `SELECT ${ROW_COLUMNS} FROM outbox
      WHERE published_at IS NULL AND id <> ALL($2::bigint[])${heldKeys.length ? ' AND key <> ALL($3::text[])' : ''}
      ORDER BY outbox.id LIMIT $1`,
    heldKeys.length ? [limit, bigintArrayParam(except), heldKeys] : [limit, bigintArrayParam(except)],
  );
  return r.rows.map(outboxRowOf);
}

/**
 * Marks rows published, i.e. deletes them (a DELETE writes no new row version and no index entry: a seventh of
 * the CPU and a twenty-fifth of the WAL of an UPDATE of `published_at`, docs/benchmarks.md), if `holder` still
 * holds the lease `lease` (fencing: a relay that lost it marks nothing); resolves whether it held it (both
 * read in the statement's one snapshot).
 */
export async function markPublished(
  db: Queryable,
  ids: readonly string[],
  fence: { lease: string; holder: string },
): Promise<boolean> {
  if (ids.length === 0) return true;
  const r = await db.query<{ held: boolean }>(
    `WITH marked AS (
       DELETE FROM outbox WHERE id = ANY($1::bigint[])
          AND EXISTS (SELECT 1 FROM leases WHERE name = $2 AND holder = $3)
     )
     SELECT EXISTS (SELECT 1 FROM leases WHERE name = $2 AND holder = $3) AS held`,
    [bigintArrayParam(ids), fence.lease, fence.holder],
  );
  return r.rows[0]?.held === true;
}

/**
 * `markPublished` of rows sent earlier and the read of the first `limit` unpublished rows after them but those of
 * `heldKeys` (as pendingOutbox), in one statement (a relay's round at moderate rates: one round trip instead of
 * two). The read's snapshot does not see the marking, so it leaves those rows out itself. `marked` is false when
 * the fence refused the marking.
 */
export async function markAndReadPending(
  db: Queryable,
  sent: readonly string[],
  limit: number,
  fence: { lease: string; holder: string },
  heldKeys: readonly string[] = [],
): Promise<{ marked: boolean; rows: OutboxRow[] }> {
  const r = await db.query<Omit<OutboxColumns, 'id'> & { id: string | null; held: boolean }>(
    `WITH marked AS (
       DELETE FROM outbox WHERE id = ANY($1::bigint[])
          AND EXISTS (SELECT 1 FROM leases WHERE name = $3 AND holder = $4)
     )
     SELECT h.held, o.id, o.topic, o.key, o.envelope, o.data
       FROM (SELECT EXISTS (SELECT 1 FROM leases WHERE name = $3 AND holder = $4) AS held) h
       LEFT JOIN LATERAL (
         SELECT ${ROW_COLUMNS} FROM outbox
          WHERE published_at IS NULL AND id <> ALL($1::bigint[])${heldKeys.length ? ' AND key <> ALL($5::text[])' : ''}
          ORDER BY outbox.id LIMIT $2
       ) o ON true
      ORDER BY o.id::bigint`,
    [bigintArrayParam(sent), limit, fence.lease, fence.holder, ...(heldKeys.length ? [heldKeys] : [])],
  );
  const rows: OutboxRow[] = [];
  for (const x of r.rows) if (x.id !== null) rows.push(outboxRowOf(x as OutboxColumns));
  return { marked: sent.length === 0 || r.rows[0]?.held === true, rows };
}

/** The topics of the first `scan` unpublished rows (a relay taking over reads back what is on each of them). */
export async function pendingTopics(db: Queryable, scan: number): Promise<string[]> {
  const r = await db.query<{ topic: string }>(
    `SELECT DISTINCT topic FROM (SELECT topic FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1) first
      ORDER BY topic`,
    [scan],
  );
  return r.rows.map((x) => x.topic);
}

/**
 * Marks the unpublished rows of `topic` whose event is one of `eventIds` (found on the bus) published, i.e.
 * deletes them, if `holder` still holds the lease (fencing, as markPublished); resolves whether it held it and
 * how many rows it marked.
 */
export async function markPublishedEvents(
  db: Queryable,
  topic: string,
  eventIds: readonly string[],
  fence: { lease: string; holder: string },
): Promise<{ held: boolean; marked: number }> {
  if (eventIds.length === 0) return { held: true, marked: 0 };
  const r = await db.query<{ held: boolean; marked: number }>(
    `WITH marked AS (
       DELETE FROM outbox WHERE event_id = ANY($1::text[]) AND topic = $2 AND published_at IS NULL
          AND EXISTS (SELECT 1 FROM leases WHERE name = $3 AND holder = $4)
       RETURNING 1
     )
     SELECT EXISTS (SELECT 1 FROM leases WHERE name = $3 AND holder = $4) AS held,
            (SELECT count(*)::int FROM marked) AS marked`,
    [eventIds, topic, fence.lease, fence.holder],
  );
  return { held: r.rows[0]?.held === true, marked: r.rows[0]?.marked ?? 0 };
}

/** Marks those of `ids` still unpublished as published (deletes them); resolves the ones it marked. */
export async function markUnpublished(db: Queryable, ids: readonly string[]): Promise<Set<string>> {
  const r = await db.query<{ id: string }>(
    `DELETE FROM outbox WHERE id = ANY($1::bigint[]) AND published_at IS NULL RETURNING id::text AS id`,
    [bigintArrayParam(ids)],
  );
  return new Set(r.rows.map((x) => x.id));
}

export async function recordPublishFailure(
  db: Queryable,
  ids: readonly string[],
  error: string,
): Promise<void> {
  if (ids.length)
    await db.query(
      `UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1::bigint[])`,
      [bigintArrayParam(ids), error.slice(0, 2000)],
    );
}

/** The first pending row: the relay sends nothing behind it until it goes (per-key order holds, see pendingOutbox). */
export interface OutboxHead {
  id: string;
  eventId: string;
  type: string;
  key: string;
  topic: string;
  /** Sends of it that failed (each failed send counts for every row of its batch), and the last one's error. */
  attempts: number;
  lastError: string | null;
}

export interface OutboxStats {
  pending: number;
  oldestPendingAgeSeconds: number;
  /**
   * Pending rows with failed sends. On Kafka a batch fails whole, and which of its records the broker refused it
   * does not say; on Dapr only the rows the bus did not take count (daprd names the entries it refused).
   */
  failing: number;
  head: OutboxHead | null;
}

/**
 * How many rows wait, the age of the oldest, and the first of them, in one statement (the head is one probe of
 * the pending index): what the relay's gauges and `taskflow lag` show.
 */
export async function outboxStats(db: Queryable): Promise<OutboxStats> {
  const r = await db.query<{
    pending: string;
    oldest: string | null;
    failing: string;
    id: string | null;
    event_id: string;
    event_type: string;
    key: string;
    topic: string;
    attempts: number;
    last_error: string | null;
  }>(
    `SELECT s.pending, s.oldest, s.failing, h.id, h.event_id, h.event_type, h.key, h.topic, h.attempts, h.last_error
       FROM (SELECT count(*)::text AS pending, extract(epoch FROM now() - min(created_at))::text AS oldest,
                    (count(*) FILTER (WHERE attempts > 0))::text AS failing
               FROM outbox WHERE published_at IS NULL) s
       LEFT JOIN LATERAL (
         SELECT id::text AS id, event_id, event_type, key, topic, attempts, last_error
           FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 1
       ) h ON true`,
  );
  const x = r.rows[0];
  return {
    pending: Number(x?.pending ?? 0),
    oldestPendingAgeSeconds: Number(x?.oldest ?? 0),
    failing: Number(x?.failing ?? 0),
    head:
      x && x.id !== null
        ? {
            id: x.id,
            eventId: x.event_id,
            type: x.event_type,
            key: x.key,
            topic: x.topic,
            attempts: x.attempts,
            lastError: x.last_error,
          }
        : null,
  };
}

/**
 * Deletes rows marked published more than `olderThanMs` ago: versions before 2026-12-05 set `published_at` and
 * kept the row a day; a relay now deletes what it publishes. Found by their own index (migration 022), not by
 * reading the pending rows, which are millions after a broker outage.
 */
export async function pruneOutbox(db: Queryable, olderThanMs: number): Promise<number> {
  const r = await db.query(
    `DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < now() - ($1::bigint * interval '1 millisecond')`,
    [olderThanMs],
  );
  return r.rowCount;
}
