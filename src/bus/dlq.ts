/**
 * Dead-letter inspection and replay, the same for every transport (`taskflow dlq list|show|replay`).
 * Replay publishes the original event, unchanged (same id), back to its source topic with a header naming the
 * group (REPLAY_FOR_HEADER): that group handles it again, the others pass it by (and would skip it by its id
 * anyway while their dedupe ledgers remember it: consumers are idempotent).
 */
import { dlqTopic } from '../contracts/topics.ts';
import type { CloudEvent } from '../contracts/cloudevent.ts';
import { DLQ_HEADERS, REPLAY_FOR_HEADER } from './middleware.ts';
import { UNDECODABLE_EVENT_TYPE, type Bus, type BusAdmin, type StoredMessage } from './types.ts';

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
}

const toDeadLetter = (group: string, m: StoredMessage): DeadLetter => ({
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
});

/** The first `limit` dead letters of `group` (oldest first per partition); `Infinity` reads them all. */
export async function listDeadLetters(admin: BusAdmin, group: string, limit = 1000): Promise<DeadLetter[]> {
  return (await admin.read(dlqTopic(group), { limit })).map((m) => toDeadLetter(group, m));
}

/**
 * Republishes dead letters of `group` (all, or those whose event id is in `ids`): `replayed`. Kept back:
 * those whose bytes are not an event (`notEvents`, UNDECODABLE_EVENT_TYPE: replayed, their stand-in event went
 * to the source topic as if it were one, and came back to the dead-letter topic) and those that do not say
 * their source topic (`noSource`: written by hand, or by another tool). When an id of `ids` is not among the
 * letters (`missing`), nothing is published: a partial replay under an error was easy to run twice.
 */
export async function replayDeadLetters(
  bus: Bus,
  group: string,
  opts: { ids?: readonly string[] } = {},
): Promise<{ replayed: DeadLetter[]; notEvents: DeadLetter[]; noSource: DeadLetter[]; missing: string[] }> {
  const letters = (await listDeadLetters(bus.admin, group, Infinity)).filter(
    (d) => !opts.ids || opts.ids.includes(d.event.id),
  );
  const missing = (opts.ids ?? []).filter((id) => !letters.some((d) => d.event.id === id));
  const notEvents = letters.filter((d) => d.event.type === UNDECODABLE_EVENT_TYPE);
  const noSource = letters.filter((d) => d.event.type !== UNDECODABLE_EVENT_TYPE && !d.source.topic);
  if (missing.length) return { replayed: [], notEvents, noSource, missing };
  const seen = new Set<string>();
  const unique = letters.filter(
    (d) =>
      d.source.topic &&
      d.event.type !== UNDECODABLE_EVENT_TYPE &&
      !seen.has(d.event.id) &&
      seen.add(d.event.id),
  );
  await bus.publisher.publish(
    unique.map((d) => ({
      topic: d.source.topic,
      key: d.key,
      event: d.event,
      headers: { [REPLAY_FOR_HEADER]: group },
    })),
  );
  return { replayed: unique, notEvents, noSource, missing };
}
