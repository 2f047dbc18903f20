/**
 * CloudEvents 1.0 envelope (https://github.com/cloudevents/spec). Every event of every topic is one of these;
 * `id` is the idempotency key of consumers, the Kafka/bus key is `partitionkey` (the user id).
 */
import { uuidv7 } from '../ids.ts';
import { dataschemaFor, isEventType, schemaVersionOf } from './schemas.ts';

export interface CloudEvent<T = unknown> {
  specversion: '1.0';
  id: string;
  source: string;
  type: string;
  subject?: string;
  time: string;
  datacontenttype: 'application/json';
  dataschema?: string;
  /** Extension: the version of the type's schema the event was written under (`dataschema` names it too). */
  schemaversion?: string;
  /** Extension (Distributed Tracing): W3C trace context of the producing operation. */
  traceparent?: string;
  /** Extension (Partitioning): the key used for per-user ordering. */
  partitionkey?: string;
  /** Extensions set by the API for the audit trail when the request knew them. */
  clientip?: string;
  useragent?: string;
  data: T;
}

export interface NewEventInput<T> {
  type: string;
  source: string;
  subject?: string;
  key: string;
  data: T;
  time?: Date;
  traceparent?: string;
  extensions?: Record<string, string>;
}

export function makeEvent<T>(input: NewEventInput<T>): CloudEvent<T> {
  const event: CloudEvent<T> = {
    specversion: '1.0',
    id: uuidv7(),
    source: input.source,
    type: input.type,
    time: (input.time ?? new Date()).toISOString(),
    datacontenttype: 'application/json',
    partitionkey: input.key,
    data: input.data,
  };
  // The schema and version it is written under (a type this build does not know fails validation anyway).
  if (isEventType(input.type)) {
    const version = schemaVersionOf(input.type);
    event.dataschema = dataschemaFor(input.type, version);
    event.schemaversion = String(version);
  }
  if (input.subject) event.subject = input.subject;
  if (input.traceparent) event.traceparent = input.traceparent;
  for (const [k, v] of Object.entries(input.extensions ?? {})) {
    if (!/^[a-z0-9]{1,20}$/.test(k)) throw new Error(`invalid CloudEvents extension name: ${k}`);
    (event as unknown as Record<string, unknown>)[k] = v;
  }
  return event;
}

const DATA_JSON = Symbol('taskflow.dataJson');

/** Where an event from `withDataJson` keeps its data: the JSON text until first read, then the value. */
interface DataJsonState {
  unread: string | undefined;
  value: unknown;
}
type WithDataJsonState = { [DATA_JSON]: DataJsonState };

/** One accessor for every such event (a closure pair per event cost 3.4 µs, this 0.5-0.6 with its state). */
const DATA_ACCESSOR: PropertyDescriptor & ThisType<WithDataJsonState> = {
  enumerable: true,
  configurable: true,
  get() {
    const state = this[DATA_JSON];
    if (state.unread !== undefined) {
      state.value = JSON.parse(state.unread) as unknown;
      state.unread = undefined;
    }
    return state.value;
  },
  set(value: unknown) {
    const state = this[DATA_JSON];
    state.unread = undefined;
    state.value = value;
  },
};

/**
 * `envelope` (an event without `data`) with its `data` given as JSON text, parsed only when first read: the
 * relay reads an outbox row's data as text and a JSON codec writes that text as the record's value unparsed
 * (`unreadDataJson`), which halves the CPU of the relay's read and encode per event (docs/benchmarks.md). Reading
 * `data` (JSON.stringify, a spread, a codec writing Avro) parses it; from then on, or once `data` is set, the
 * event is an ordinary one and the text is not used again (the parsed value may be changed in place).
 */
export function withDataJson(envelope: Omit<CloudEvent, 'data'>, json: string): CloudEvent {
  const state: DataJsonState = { unread: json, value: undefined };
  Object.defineProperty(envelope, DATA_JSON, { value: state }); // not enumerable: a copy does not carry it
  Object.defineProperty(envelope, 'data', DATA_ACCESSOR);
  return envelope as CloudEvent;
}

/** The JSON text of `event.data` when it came from `withDataJson` and has not been read or set since. */
export const unreadDataJson = (event: CloudEvent): string | undefined =>
  (event as unknown as Partial<WithDataJsonState>)[DATA_JSON]?.unread;

/** Kafka binary content mode: attributes as `ce_*` headers, `data` as the JSON body. */
export function toBinary(event: CloudEvent): { headers: Record<string, string>; body: string } {
  return { headers: Object.fromEntries(toBinaryHeaders(event)), body: JSON.stringify(event.data) };
}

/**
 * `ce_<attribute>`, one string per attribute name: no concatenation per header of every record, and a string
 * whose hash is computed once for the Maps that look it up (the publisher's encoded header names). Beyond 64
 * names (extensions are few), built each time.
 */
const ceHeaderNames = new Map<string, string>();
function ceHeaderName(attribute: string): string {
  let name = ceHeaderNames.get(attribute);
  if (name === undefined) {
    name = `ce_${attribute}`;
    if (ceHeaderNames.size < 64) ceHeaderNames.set(attribute, name);
  }
  return name;
}

/**
 * The `ce_*` headers of `event` straight into the Map the Kafka client takes, with `extra` transport headers
 * after them, in one pass (a producer builds one per event; no intermediate objects). `content-type` is the
 * event's (a codec writing another encoding sets its own).
 */
export function toBinaryHeaders(event: CloudEvent, extra?: Record<string, string>): Map<string, string> {
  const headers = new Map<string, string>([['content-type', event.datacontenttype]]);
  for (const k in event) {
    if (k === 'data' || k === 'datacontenttype') continue; // data: not read, see withDataJson
    const v = (event as unknown as Record<string, unknown>)[k];
    if (v === undefined) continue;
    headers.set(ceHeaderName(k), String(v));
  }
  if (event.traceparent) headers.set('traceparent', event.traceparent);
  if (extra) for (const k in extra) headers.set(k, extra[k]!);
  return headers;
}

export function fromBinary(headers: Record<string, string>, body: string): CloudEvent {
  return withData(envelopeOf(Object.entries(headers), headers['content-type']), body);
}

/**
 * A Kafka record's headers as an object, and the event's attributes from its `ce_*` ones (`data` null), in
 * one pass over the client's Map: each consumer group decodes every record of its topics.
 */
export function fromBinaryHeaders(entries: Map<string, string>): {
  headers: Record<string, string>;
  envelope: CloudEvent;
} {
  const headers: Record<string, string> = {};
  for (const [k, v] of entries) headers[k] = v;
  return { headers, envelope: envelopeOf(entries, entries.get('content-type')) };
}

/**
 * A content type as its media type alone, lower case: `application/json; charset=utf-8` (parameters are
 * allowed by RFC 2046 and CloudEvents, and other producers write them) is `application/json`, which is what
 * events carry and their schema requires (a parameter dead-lettered the event).
 */
export const mediaTypeOf = (contentType: string): string =>
  contentType.includes(';') || /[A-Z\s]/.test(contentType)
    ? contentType.split(';', 1)[0]!.trim().toLowerCase()
    : contentType;

function envelopeOf(entries: Iterable<[string, string]>, contentType: string | undefined): CloudEvent {
  const event: Record<string, unknown> = {
    datacontenttype: contentType === undefined ? 'application/json' : mediaTypeOf(contentType),
  };
  for (const [k, v] of entries) if (k.startsWith('ce_')) event[k.slice(3)] = v;
  event.data = null;
  return event as unknown as CloudEvent;
}

/** `envelope` with its `data` parsed from a JSON body (null when the body is empty). */
export function withData(envelope: CloudEvent, body: string): CloudEvent {
  envelope.data = body.length ? (JSON.parse(body) as unknown) : null;
  return envelope;
}
