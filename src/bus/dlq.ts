/**
 * Dead-letter inspection and replay, the same for every transport (`taskflow dlq list|show|replay`).
 * Replay publishes the original event, unchanged (same id), back to its source topic with a header naming the
 * group (REPLAY_FOR_HEADER): that group handles it again, the others pass it by (and would skip it by its id
 * anyway while their dedupe ledgers remember it: consumers are idempotent). On Kafka it is the letter's record
 * as received (value, content type and ce_* headers), not the event this build decoded from it: a build older
 * than its producer reads an Avro value without the newer fields, and would write a JSON one as Avro of its own
 * version. The embedded bus and Dapr keep the event whole (JSON) and publish it.
 *
 * The dead-letter topic is a log, so a replayed letter stays in it. How far a group's letters were replayed is a
 * cursor on it: the positions of a consumer group no process consumes with (dlqReplayCursor), committed after the
 * replayed events are on the bus. Letters before it are replayed: `list` leaves them out (unless `all`), a
 * replay of all letters does not send them again, and the DLQ-size metric does not count them. A replay that
 * dies before moving the cursor leaves its letters listed, and sends them again next time (at-least-once).
 */
import { dlqReplayCursor, dlqTopic } from '../contracts/topics.ts';
import type { CloudEvent } from '../contracts/cloudevent.ts';
import { DLQ_HEADERS, REPLAY_FOR_HEADER } from './middleware.ts';
import {
  UNDECODABLE_EVENT_TYPE,
  type Bus,
  type BusAdmin,
  type Offsets,
  type OutgoingMessage,
  type StoredMessage,
} from './types.ts';

export interface DeadLetter {
  group: string;
  dlqOffset: string;
  dlqPartition: number;
  key: string;
  event: CloudEvent;
  error: string;
  attempts: number;
  firstFailure: string | null;
  lastFailure: string | null;
  source: { topic: string; partition: number; offset: string };
  /** Before the group's replay cursor: replayed by `taskflow dlq replay` (or passed by it, kept). */
  replayed: boolean;
}

const toDeadLetter = (group: string, m: StoredMessage, cursor: Offsets): DeadLetter => ({
  group,
  dlqOffset: m.offset,
  dlqPartition: m.partition,
  key: m.key,
  event: m.event,
  error: m.headers[DLQ_HEADERS.error] ?? '',
  attempts: Number(m.headers[DLQ_HEADERS.attempts] ?? 0),
  firstFailure: m.headers[DLQ_HEADERS.firstFailure] ?? null,
  lastFailure: m.headers[DLQ_HEADERS.lastFailure] ?? null,
  source: {
    topic: m.headers[DLQ_HEADERS.sourceTopic] ?? '',
    partition: Number(m.headers[DLQ_HEADERS.sourcePartition] ?? 0),
    offset: m.headers[DLQ_HEADERS.sourceOffset] ?? '',
  },
  replayed: BigInt(m.offset) < (cursor.get(m.partition) ?? 0n),
});

/**
 * The record of a letter as received, where the transport keeps it (StoredMessage.rawValue: Kafka), which a
 * replay sends as it is. Beside DeadLetter, which `dlq list --json` and `dlq show` print.
 */
const received = new WeakMap<DeadLetter, NonNullable<OutgoingMessage['asReceived']>>();

/** How far the dead letters of `group` were replayed, by partition of its dead-letter topic. */
export const replayCursor = (admin: BusAdmin, group: string): Promise<Offsets> =>
  admin.committedOffsets(dlqReplayCursor(group), dlqTopic(group));

/**
 * The first `limit` dead letters of `group` not replayed yet (oldest first per partition), or with `all` the
 * first `limit` retained; `limit` `Infinity` reads them all.
 */
export async function listDeadLetters(
  admin: BusAdmin,
  group: string,
  opts: { limit?: number; all?: boolean } = {},
): Promise<DeadLetter[]> {
  return (await readLetters(admin, group, { limit: opts.limit ?? 1000, all: opts.all === true })).letters;
}

/** The replay cursor of `group`, and its first `limit` dead letters from it on (`all`: from the beginning). */
async function readLetters(
  admin: BusAdmin,
  group: string,
  opts: { limit: number; all: boolean },
): Promise<{ cursor: Offsets; letters: DeadLetter[] }> {
  const cursor = await replayCursor(admin, group);
  const read = await admin.read(dlqTopic(group), {
    limit: opts.limit,
    ...(opts.all ? {} : { from: cursor }),
  });
  const letters = read.map((m) => {
    const d = toDeadLetter(group, m, cursor);
    if (m.rawValue) received.set(d, { value: m.rawValue, headers: m.headers });
    return d;
  });
  return { cursor, letters };
}

/**
 * Commits the replay position of `group` again, unchanged. Kafka deletes the offsets of a group no consumer is a
 * member of `offsets.retention.minutes` (7 days by default) after their last commit, while the dead-letter topic
 * keeps its letters 30 days: without this, replayed letters would be listed and counted again a week after the
 * replay. The position only moves forward (advanceOffsets), so a replay committing meanwhile is not undone.
 */
export async function renewReplayCursor(admin: BusAdmin, group: string): Promise<void> {
  const cursor = await replayCursor(admin, group);
  if (cursor.size) await admin.advanceOffsets(dlqReplayCursor(group), dlqTopic(group), cursor);
}

/** Unreplayed dead letters of `group`, counted from the offsets alone (the DLQ-size metric). */
export async function unreplayedCount(admin: BusAdmin, group: string): Promise<number> {
  if (!admin.messageCount) return NaN;
  return admin.messageCount(dlqTopic(group), await replayCursor(admin, group));
}

/** Letters a replay of all reads, publishes and moves the cursor over at a time. */
const REPLAY_PAGE = 1000;

type ReplayOutcome = {
  replayed: DeadLetter[];
  notEvents: DeadLetter[];
  noSource: DeadLetter[];
  missing: string[];
};

/**
 * Republishes dead letters of `group`: those not replayed yet, or those whose event id is in `ids` (replayed
 * before or not): `replayed`. Kept back: those whose bytes are not an event (`notEvents`,
 * UNDECODABLE_EVENT_TYPE: replayed, their stand-in event went to the source topic as if it were one, and came
 * back to the dead-letter topic) and those that do not say their source topic (`noSource`: written by hand, or by
 * another tool). When an id of `ids` is not among the letters (`missing`), nothing is published: a partial replay
 * under an error was easy to run twice.
 *
 * Then the replay cursor moves, per partition, over the letters from it on that this replay settled: all it read
 * (kept ones too: they were reported, and `list --all` still shows them) when `ids` is not given; with `ids`, the
 * run of them that starts at the cursor (a letter replayed out of order stays listed until those before it are).
 *
 * A replay of all goes `pageSize` letters at a time (read, published, cursor moved; `onPage` after each), so a
 * large dead-letter topic is neither read in one bounded read nor published in one request, and a replay that
 * stops part way leaves only its last page to send again.
 */
export async function replayDeadLetters(
  bus: Bus,
  group: string,
  opts: { ids?: readonly string[]; pageSize?: number; onPage?: (replayedSoFar: number) => void } = {},
): Promise<ReplayOutcome> {
  // An event dead-lettered more than once is sent once, whichever pages its letters are in.
  const seen = new Set<string>();
  if (opts.ids) return replayPage(bus, group, opts.ids, Infinity, seen);
  const pageSize = opts.pageSize ?? REPLAY_PAGE;
  const all: ReplayOutcome = { replayed: [], notEvents: [], noSource: [], missing: [] };
  let last: string | undefined;
  for (;;) {
    const page = await replayPage(bus, group, undefined, pageSize, seen);
    // A full page read from where the last one began: the cursor did not move (it would replay it for good).
    const from = [...page.cursor].join();
    if (from === last) throw new Error(`the replay position of ${dlqTopic(group)} did not move`);
    last = from;
    all.replayed.push(...page.replayed);
    all.notEvents.push(...page.notEvents);
    all.noSource.push(...page.noSource);
    if (page.read < pageSize) return all;
    opts.onPage?.(all.replayed.length);
  }
}

/** One read of letters (all retained with `ids`, else the first `limit` from the cursor), replayed. */
async function replayPage(
  bus: Bus,
  group: string,
  ids: readonly string[] | undefined,
  limit: number,
  /** Event ids sent by the replay so far (a later page's letter of one is not sent again). */
  seen: Set<string>,
): Promise<ReplayOutcome & { read: number; cursor: Offsets }> {
  const { admin } = bus;
  // By id: any retained letter, replayed before or not.
  const { cursor, letters: read } = await readLetters(admin, group, { limit, all: ids !== undefined });
  const letters = read.filter((d) => !ids || ids.includes(d.event.id));
  const missing = (ids ?? []).filter((id) => !letters.some((d) => d.event.id === id));
  const notEvents = letters.filter((d) => d.event.type === UNDECODABLE_EVENT_TYPE);
  const noSource = letters.filter((d) => d.event.type !== UNDECODABLE_EVENT_TYPE && !d.source.topic);
  if (missing.length) return { replayed: [], notEvents, noSource, missing, read: read.length, cursor };
  const unique = letters.filter(
    (d) =>
      d.source.topic &&
      d.event.type !== UNDECODABLE_EVENT_TYPE &&
      !seen.has(d.event.id) &&
      seen.add(d.event.id),
  );
  await bus.publisher.publish(
    unique.map((d) => {
      // Its value and event headers (content type, schema id, ce_*) as written, without the failure headers.
      const asReceived = received.get(d);
      return {
        topic: d.source.topic,
        key: d.key,
        event: d.event,
        headers: { [REPLAY_FOR_HEADER]: group },
        ...(asReceived ? { asReceived } : {}),
      };
    }),
  );
  // Without ids, all it read (kept ones were reported); with ids, the letters of the events it sent.
  const sent = new Set(unique.map((d) => d.event.id));
  const settled = new Set(
    (ids ? letters.filter((d) => sent.has(d.event.id)) : read).map((d) => `${d.dlqPartition}:${d.dlqOffset}`),
  );
  await admin.advanceOffsets(dlqReplayCursor(group), dlqTopic(group), advance(cursor, read, settled));
  return { replayed: unique, notEvents, noSource, missing, read: read.length, cursor };
}

/**
 * The cursor moved, per partition, past the letters from it on that are `settled` (partition:offset), up to the
 * first that is not: only the partitions where it moves.
 */
function advance(cursor: Offsets, read: readonly DeadLetter[], settled: ReadonlySet<string>): Offsets {
  const moved = new Map<number, bigint>();
  const blocked = new Set<number>();
  for (const d of read) {
    const offset = BigInt(d.dlqOffset);
    if (blocked.has(d.dlqPartition) || offset < (cursor.get(d.dlqPartition) ?? 0n)) continue;
    if (settled.has(`${d.dlqPartition}:${d.dlqOffset}`)) moved.set(d.dlqPartition, offset + 1n);
    else blocked.add(d.dlqPartition);
  }
  return moved;
}
