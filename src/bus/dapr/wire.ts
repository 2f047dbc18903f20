/**
 * What daprd sends and stores: the answers a delivery gets, the event of a delivery (structured, or Kafka binary
 * mode) without daprd's additions, bulk deliveries, and a stored record in the shape the other transports use.
 */
import { fromBinary, mediaTypeOf, type CloudEvent } from '../../contracts/cloudevent.ts';
import { isDlqTopic } from '../../contracts/topics.ts';
import { DLQ_HEADERS } from '../middleware.ts';
import type { StoredMessage } from '../types.ts';

export type DaprStatus = 'SUCCESS' | 'RETRY' | 'DROP';

/** Attributes daprd adds to every event it delivers; not part of our events, removed before handlers see them. */
const DAPR_ATTRIBUTES = ['topic', 'pubsubname', 'traceid', 'tracestate'] as const;
const ZERO_TRACE = /^00-0{32}-/;

/** The event as our producers wrote it: without daprd's additions (and without a zero traceparent). */
export function cleanDaprEvent(raw: Record<string, unknown>): CloudEvent {
  const event: Record<string, unknown> = { ...raw };
  for (const k of DAPR_ATTRIBUTES) delete event[k];
  if (typeof event.traceparent === 'string' && ZERO_TRACE.test(event.traceparent)) delete event.traceparent;
  // `application/json; charset=utf-8` from another producer is the event's `application/json`.
  if (typeof event.datacontenttype === 'string') event.datacontenttype = mediaTypeOf(event.datacontenttype);
  return event as unknown as CloudEvent;
}

export const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The CloudEvent of a delivery: structured (what Dapr producers write), or Kafka binary mode (`ce_*` headers
 * and the data as body, what the Kafka transport writes) so Dapr consumers also read those.
 */
export function eventFromDelivery(body: unknown, headers: Record<string, string>): CloudEvent {
  if (isObject(body) && body.specversion !== undefined) return cleanDaprEvent(body);
  if (headers.ce_specversion) {
    const ce: Record<string, string> = { 'content-type': 'application/json' };
    for (const [k, v] of Object.entries(headers)) if (k.startsWith('ce_')) ce[k] = v;
    return fromBinary(ce, JSON.stringify(body ?? null));
  }
  return (isObject(body) ? cleanDaprEvent(body) : { data: body }) as CloudEvent;
}

/** One entry of a bulk delivery (Dapr's bulk subscribe, alpha in 1.16): the CloudEvent and Kafka's metadata. */
export interface BulkEntry {
  entryId: string;
  event: unknown;
  metadata?: Record<string, string>;
}
export interface BulkDelivery {
  entries: BulkEntry[];
}
export const isBulkDelivery = (body: unknown): body is BulkDelivery =>
  isObject(body) &&
  Array.isArray(body.entries) &&
  body.entries.every((e: unknown) => isObject(e) && typeof e.entryId === 'string');

/**
 * A record as daprd wrote it, in the shape the other transports store: the structured CloudEvent unwrapped
 * (the Kafka admin decodes binary mode, so it sees the whole envelope as `data`), and for a dead letter
 * written by daprd, the failure headers derived from the ones it copies from the source record.
 */
export function normalizeStored(m: StoredMessage): StoredMessage {
  let event = m.event;
  const inner = (event as { data?: unknown }).data;
  if (!event.specversion && isObject(inner) && inner.specversion !== undefined) event = cleanDaprEvent(inner);
  const headers = { ...m.headers };
  if (isDlqTopic(m.topic) && !headers[DLQ_HEADERS.sourceTopic] && headers.__topic) {
    headers[DLQ_HEADERS.sourceTopic] = headers.__topic;
    headers[DLQ_HEADERS.sourcePartition] = headers.__partition ?? '0';
    headers[DLQ_HEADERS.sourceOffset] = headers.__offset ?? '';
    headers[DLQ_HEADERS.group] ??= m.topic.slice(0, -'.dlq'.length);
    headers[DLQ_HEADERS.lastFailure] ??= m.timestamp;
    headers[DLQ_HEADERS.error] ??=
      'dead-lettered by daprd: the subscriber answered DROP (invalid event or permanent error) or the resiliency retries were used up; the reason is in the subscriber log';
  }
  return { ...m, key: m.key || headers.__key || '', headers, event };
}
