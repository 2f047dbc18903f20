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

/** The letters a replay of all settles: those below each partition's end when it started. */
type ReplayRange = {
  /** The end of each partition (its next offset) when the replay started. */
  ends: Offsets;
  /** Partitions read up to their end (a letter at or past it was read): read no more. */
  done: Set<number>;
};

/**
 * The replay cursor of `group`, and its first `limit` dead letters from it on (`all`: from the beginning). With
 * `range`, the read skips the partitions read up to their end in it (a letter written since does not take a
 * page's room from the partitions not read yet), and nothing is read when none is left.
 */
async function readLetters(
  admin: BusAdmin,
  group: string,
  opts: { limit: number; all: boolean; range?: ReplayRange },
): Promise<{ cursor: Offsets; letters: DeadLetter[] }> {
  const cursor = await replayCursor(admin, group);
  let from: Offsets = cursor;
  if (opts.range) {
    const { ends, done } = opts.range;
    // From past any offset on a partition: none of it (a partition the topic did not have then too, once read).
    const bounded = new Map([...cursor.keys(), ...done].map((p) => [p, NOTHING] as const));
    for (const [p, end] of ends) {
      const at = cursor.get(p) ?? 0n;
      bounded.set(p, done.has(p) || at >= end ? NOTHING : at);
    }
    if ([...ends.keys()].every((p) => bounded.get(p) === NOTHING)) return { cursor, letters: [] };
    from = bounded;
  }
  const read = await admin.read(dlqTopic(group), {
    limit: opts.limit,
    ...(opts.all ? {} : { from }),
  });
  return { cursor, letters: read.map((m) => letterOf(group, m, cursor)) };
}

/** A message of the dead-letter topic of `group` as a letter, its record as received kept for a replay. */
function letterOf(group: string, m: StoredMessage, cursor: Offsets): DeadLetter {
  const d = toDeadLetter(group, m, cursor);
  if (m.rawValue) received.set(d, { value: m.rawValue, headers: m.headers });
  return d;
}

/** Letters a search by event id (`dlq show`, `dlq replay --id`) reads at a time: all it holds but what it finds. */
const SEARCH_PAGE = 1000;

/**
 * The retained letters of `group` whose event id is one of `ids` (replayed or not), in order per partition, and
 * the replay cursor. The topic has no index by event id, and an event has a letter for each time it failed (once
 * more after a replay, say): the search reads every partition from its start to its end, `pageSize` letters at a
 * time, and keeps what it finds. It read the whole topic in one read: 200,000 letters took 1.5 GB (a 512 MB heap
 * died). `blockers`: of each partition, the first other letter at or after the cursor, where a replay of the ids
 * leaves the cursor (advance).
 */
async function searchLetters(
  admin: BusAdmin,
  group: string,
  ids: readonly string[],
  pageSize = SEARCH_PAGE,
): Promise<{ cursor: Offsets; found: DeadLetter[]; blockers: DeadLetter[] }> {
  const cursor = await replayCursor(admin, group);
  const wanted = new Set(ids);
  const from = new Map<number, bigint>();
  const found: DeadLetter[] = [];
  const blockers = new Map<number, DeadLetter>();
  for (;;) {
    // Per partition the read gives a run from `from` on (the first `pageSize` of them all): the next page
    // starts past it.
    const page = await admin.read(dlqTopic(group), { limit: pageSize, from });
    for (const m of page) {
      const offset = BigInt(m.offset);
      from.set(m.partition, offset + 1n);
      if (wanted.has(m.event.id)) found.push(letterOf(group, m, cursor));
      else if (!blockers.has(m.partition) && offset >= (cursor.get(m.partition) ?? 0n))
        blockers.set(m.partition, letterOf(group, m, cursor));
    }
    if (page.length < pageSize) break;
  }
  // The pages of a transport that reads partitions side by side (Kafka) interleave them.
  return { cursor, found: byPosition(found), blockers: [...blockers.values()] };
}

const byPosition = (letters: DeadLetter[]) =>
  letters.sort(
    (a, b) => a.dlqPartition - b.dlqPartition || Number(BigInt(a.dlqOffset) - BigInt(b.dlqOffset)),
  );

/** The retained letters of `group` whose event id is one of `ids`, replayed or not (see searchLetters). */
export async function findDeadLetters(
  admin: BusAdmin,
  group: string,
  ids: readonly string[],
  opts: { pageSize?: number } = {},
): Promise<DeadLetter[]> {
  return (await searchLetters(admin, group, ids, opts.pageSize)).found;
}

/** An offset no partition reaches (the largest a Kafka or PostgreSQL offset can be): read from it, nothing. */
const NOTHING = 2n ** 63n - 1n;

/**
 * The end of each partition of the dead-letter topic of `group` (its next offset) now, from the lag of the
 * replay cursor on it: it names every partition of the topic, those the cursor never moved on too.
 */
async function deadLetterEnds(admin: BusAdmin, group: string): Promise<Offsets> {
  const cursor = dlqReplayCursor(group);
  const topic = dlqTopic(group);
  const lag = await admin.lag(cursor, new Map([[cursor, [topic]]]));
  return new Map(lag.filter((l) => l.topic === topic).map((l) => [l.partition, BigInt(l.end)]));
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
 * of those there when it started (kept ones too: they were reported, and `list --all` still shows them; and a
 * letter of an event it sent already) when `ids` is not given; with `ids`, the
 * run of them that starts at the cursor (a letter replayed out of order stays listed until those before it are).
 *
 * A replay of all goes `pageSize` letters at a time (read, published, cursor moved; `onPage` after each), so a
 * large dead-letter topic is neither read in one bounded read nor published in one request, and a replay that
 * stops part way leaves only its last page to send again. It replays the letters written before it started (up
 * to each partition's end then): a letter written while it runs (a replayed event the group failed again) is
 * neither sent nor passed by, it stays listed and counted for the next replay. An event with several letters in
 * that range is sent once. A replay by id searches the whole topic, `pageSize` letters at a time (searchLetters).
 */
export async function replayDeadLetters(
  bus: Bus,
  group: string,
  opts: { ids?: readonly string[]; pageSize?: number; onPage?: (replayedSoFar: number) => void } = {},
): Promise<ReplayOutcome> {
  // An event dead-lettered more than once is sent once, whichever pages its letters are in.
  const seen = new Set<string>();
  if (opts.ids) return replayPage(bus, group, opts.ids, opts.pageSize ?? SEARCH_PAGE, seen);
  const pageSize = opts.pageSize ?? REPLAY_PAGE;
  const range: ReplayRange = { ends: await deadLetterEnds(bus.admin, group), done: new Set() };
  const all: ReplayOutcome = { replayed: [], notEvents: [], noSource: [], missing: [] };
  let last: string | undefined;
  for (;;) {
    const done = [...range.done].join();
    const page = await replayPage(bus, group, undefined, pageSize, seen, range);
    // A full page read from where the last one began: the cursor did not move, and no partition was read to its
    // end (it would replay it for good).
    const from = `${[...page.cursor].join()} ${done}`;
    if (from === last) throw new Error(`the replay position of ${dlqTopic(group)} did not move`);
    last = from;
    all.replayed.push(...page.replayed);
    all.notEvents.push(...page.notEvents);
    all.noSource.push(...page.noSource);
    if (page.read < pageSize) return all;
    opts.onPage?.(all.replayed.length);
  }
}

/**
 * One read of letters, replayed: with `ids`, a search of all retained for theirs (`limit` at a time), else the
 * first `limit` from the cursor; with `range`, those in it (the others are neither sent nor settled).
 */
async function replayPage(
  bus: Bus,
  group: string,
  ids: readonly string[] | undefined,
  limit: number,
  /** Event ids sent by the replay so far (a later page's letter of one is not sent again). */
  seen: Set<string>,
  range?: ReplayRange,
): Promise<ReplayOutcome & { read: number; cursor: Offsets }> {
  const { admin } = bus;
  // By id: any retained letter, replayed before or not; with the letters that end the cursor's run (advance).
  const { cursor, letters: read } = ids
    ? await searchLetters(admin, group, ids, limit).then((s) => ({
        cursor: s.cursor,
        letters: byPosition([...s.found, ...s.blockers]),
      }))
    : await readLetters(admin, group, { limit, all: false, ...(range ? { range } : {}) });
  // Letters read in order per partition: past one at or after the partition's end, none of it is in range.
  const inRange = (d: DeadLetter) => BigInt(d.dlqOffset) < (range?.ends.get(d.dlqPartition) ?? 0n);
  const current = range ? read.filter(inRange) : read;
  if (range) for (const d of read) if (!inRange(d)) range.done.add(d.dlqPartition);
  const letters = current.filter((d) => !ids || ids.includes(d.event.id));
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
  // Without ids, all it read in range (sent, kept ones reported, or an event sent in the range before); with
  // ids, the letters of the events it sent.
  const sent = new Set(unique.map((d) => d.event.id));
  const settled = new Set(
    (ids ? letters.filter((d) => sent.has(d.event.id)) : current).map(
      (d) => `${d.dlqPartition}:${d.dlqOffset}`,
    ),
  );
  await admin.advanceOffsets(dlqReplayCursor(group), dlqTopic(group), advance(cursor, current, settled));
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
