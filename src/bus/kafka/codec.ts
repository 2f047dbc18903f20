/**
 * How an event becomes a Kafka record and back (CloudEvents Kafka binding, binary content mode: attributes as
 * `ce_*` headers, `data` as the value). The value is JSON (`content-type: application/json`, the default) or,
 * with EVENT_ENCODING=avro, Avro in Confluent framing (`content-type: application/avro`; magic byte 0, the
 * schema id as a 4-byte big-endian integer, the Avro binary). Readers take both on every topic, so a topic is
 * migrated by switching its producers; an Avro value is read with the writer's schema fetched from the
 * registry by id (once per process) and resolved to this build's schema of the type, so a consumer reads
 * events of a newer or older compatible version (a rolling upgrade).
 */
import type { Message } from '@platformatic/kafka';
import type avsc from 'avsc';
import { AVRO_CONTENT_TYPE, avroSchemaOf, jsonDataOf } from '../../contracts/avro.ts';
import {
  fromBinaryHeaders,
  mediaTypeOf,
  toBinaryHeaders,
  unreadDataJson,
  withData,
  type CloudEvent,
} from '../../contracts/cloudevent.ts';
import { isEventType, schemaVersionOf, type EventType } from '../../contracts/schemas.ts';
import { errorMessage } from '../../error-text.ts';
import type { Logger } from '../../observability/logger.ts';
import { retryWithBackoff } from '../../retry.ts';
import { avroSubjectOf, RegistryError, type SchemaRegistryClient } from '../schema-registry.ts';
import { UNDECODABLE_EVENT_TYPE, type BusMessage } from '../types.ts';

export type EventEncoding = 'json' | 'avro';
export { AVRO_CONTENT_TYPE };

export interface EncodedRecord {
  headers: Map<string, string>;
  value: Buffer;
}

/** A Kafka record's value and headers as this module reads them. */
export interface RawRecord {
  headers: Map<string, string>;
  value: Buffer | null | undefined;
}

/** Registry lookups of a codec: tried again with backoff while the registry cannot be reached. */
const REGISTRY_RETRY = { maxAttempts: 0, baseDelayMs: 250, maxDelayMs: 10_000 };

// avsc is loaded by the first Avro value written or read (about 13 ms of start-up a JSON process never pays).
let avscModule: typeof avsc | undefined;
const loadAvsc = async () => (avscModule ??= (await import('avsc')).default);
const avroTypes = new Map<EventType, avsc.Type>();
/** The avsc Type of `type`'s data, built once per process (after `loadAvsc`). */
export function avroTypeOf(type: EventType): avsc.Type {
  let t = avroTypes.get(type);
  if (!t) {
    if (!avscModule) throw new Error('avsc is not loaded');
    t = avscModule.Type.forSchema(avroSchemaOf(type) as avsc.Schema);
    avroTypes.set(type, t);
  }
  return t;
}

/**
 * Whether a failed schema lookup is waited out (retried with backoff, the records held): the registry cannot
 * be reached, fails (5xx), times out, limits the rate, or refuses this process's credentials (fixed by
 * configuration, as a missing SCHEMA_REGISTRY_URL is). Any other answer (404: no such id) is final for the id.
 */
function registryWaits(err: unknown): boolean {
  if (!(err instanceof RegistryError)) return true;
  const { status } = err;
  return status === 0 || status >= 500 || [401, 403, 408, 429].includes(status);
}

/** The avsc Type of a writer schema fetched by `id`, or why it cannot be one (not Avro, not buildable). */
async function writerTypeOf(
  id: number,
  { schema, schemaType }: { schema: string; schemaType: string },
): Promise<avsc.Type | Error> {
  if (schemaType !== 'AVRO') return new Error(`schema id ${id} is a ${schemaType} schema, not Avro`);
  const { Type } = await loadAvsc();
  try {
    return Type.forSchema(JSON.parse(schema) as avsc.Schema);
  } catch (err) {
    return new Error(`schema id ${id} cannot be read as an Avro schema: ${errorMessage(err)}`);
  }
}

const isAvro = (r: RawRecord) => {
  const contentType = r.headers.get('content-type');
  return contentType !== undefined && mediaTypeOf(contentType) === AVRO_CONTENT_TYPE;
};

/** The schema id of a Confluent-framed value, or undefined when the value is not one. */
function schemaIdOf(value: Buffer | null | undefined): number | undefined {
  return value && value.length >= 5 && value[0] === 0 ? value.readInt32BE(1) : undefined;
}

export class EventCodec {
  /** Writer schema ids of this process's own event types (EVENT_ENCODING=avro), registered on first use. */
  private readonly writerIds = new Map<EventType, Promise<number>>();
  private readonly resolvedIds = new Map<EventType, number>();
  /** Writer schemas by id, or why an id cannot be read (not in the registry, not Avro). */
  private readonly writers = new Map<number, avsc.Type | Error>();
  private readonly resolvers = new Map<string, avsc.Resolver | Error>();

  constructor(
    private readonly opts: {
      encoding: EventEncoding;
      registry?: SchemaRegistryClient | undefined;
      /** Schema ids by subject that start-up registered (no request for those). */
      registered?: ReadonlyMap<string, number>;
      /** KAFKA_TOPIC_PREFIX, part of the subject names. */
      subjectPrefix?: string;
      log?: Logger | undefined;
    },
  ) {
    if (opts.encoding === 'avro' && !opts.registry)
      throw new Error('EVENT_ENCODING=avro needs a schema registry (SCHEMA_REGISTRY_URL)');
  }

  /** Resolves the writer schema id of each event type about to be encoded as Avro (a request per new type). */
  async prepareEncode(events: readonly CloudEvent[], signal?: AbortSignal): Promise<void> {
    if (this.opts.encoding !== 'avro') return;
    await loadAvsc();
    for (const { type } of events) {
      if (!isEventType(type) || this.resolvedIds.has(type)) continue;
      let id = this.writerIds.get(type);
      if (!id) {
        const subject = avroSubjectOf(type, this.opts.subjectPrefix);
        const known = this.opts.registered?.get(subject);
        // Registering is idempotent (the registered schema's id comes back): for a process whose start-up
        // did not register (a CLI command replaying dead letters).
        id =
          known !== undefined
            ? Promise.resolve(known)
            : this.opts.registry!.register(subject, JSON.stringify(avroSchemaOf(type)), 'AVRO');
        id.catch(() => this.writerIds.delete(type));
        this.writerIds.set(type, id);
      }
      if (signal?.aborted) return;
      this.resolvedIds.set(type, await id);
    }
  }

  /**
   * The record of `event`: Avro when this process writes Avro and the type's schema id is resolved
   * (`prepareEncode`) and the data fits the schema, JSON otherwise (an invalid event on its way to a
   * dead-letter topic, a type this build does not know).
   */
  encode(event: CloudEvent, extra?: Record<string, string>): EncodedRecord {
    const headers = toBinaryHeaders(event, extra);
    // An event of a newer version than this build's (a newer api wrote it to the outbox during a rolling
    // upgrade, ADR 0012) goes as JSON: Avro of this build's schema dropped its new fields, for every consumer.
    const id =
      this.opts.encoding === 'avro' && isEventType(event.type) && !newerThanOurs(event)
        ? this.resolvedIds.get(event.type)
        : undefined;
    if (id !== undefined) {
      let avro: Buffer | undefined;
      try {
        avro = avroTypeOf(event.type as EventType).toBuffer(event.data);
      } catch {
        // not representable: stays JSON, which every reader takes
      }
      if (avro) {
        const value = Buffer.allocUnsafe(5 + avro.length);
        value[0] = 0;
        value.writeInt32BE(id, 1);
        avro.copy(value, 5);
        headers.set('content-type', AVRO_CONTENT_TYPE);
        return { headers, value };
      }
    }
    return { headers, value: Buffer.from(unreadDataJson(event) ?? JSON.stringify(event.data)) };
  }

  /**
   * A record received before, written again as it was (OutgoingMessage.asReceived: a dead letter of an Avro
   * record): its value, its `content-type`, `ce_*` and `traceparent` headers, then `extra`. Other transport
   * headers of the received record (those of an earlier dead letter or replay) are not the event's.
   */
  encodeAsReceived(
    received: { value: Buffer; headers: Record<string, string> },
    extra?: Record<string, string>,
  ): EncodedRecord {
    const headers = new Map<string, string>();
    for (const [k, v] of Object.entries(received.headers))
      if (k === 'content-type' || k === 'traceparent' || k.startsWith('ce_')) headers.set(k, v);
    if (extra) for (const k in extra) headers.set(k, extra[k]!);
    return { headers, value: received.value };
  }

  /**
   * Fetches the writer schema of every Avro value not seen before, once per id. A registry that cannot be
   * reached is tried again with backoff (the records wait: nothing is dead-lettered for an outage; see
   * `registryWaits`); an id the registry does not have, or a schema that is not Avro or that avsc cannot
   * build, makes those records undecodable (dead-lettered with the reason, the partition reads on). Without a
   * registry, `hold` (a consumer) waits until `signal` aborts, logging why; otherwise (reading a topic to show
   * it) the records are undecodable.
   */
  async prepareDecode(
    records: readonly RawRecord[],
    signal: AbortSignal,
    opts: { hold?: boolean } = {},
  ): Promise<void> {
    for (const r of records) {
      if (!isAvro(r)) continue;
      const id = schemaIdOf(r.value);
      if (id === undefined || this.writers.has(id)) continue;
      const registry = this.opts.registry;
      if (!registry) {
        const why = `an Avro value (schema id ${id}) and no SCHEMA_REGISTRY_URL to read it with`;
        // A consumer waits (nothing is lost; set the variable and restart); a reader of a topic shows it.
        if (opts.hold) await this.holdUntilAborted(why, signal);
        else this.writers.set(id, new Error(why));
        continue;
      }
      let fetched: { schema: string; schemaType: string } | undefined;
      await retryWithBackoff(
        async () => {
          try {
            fetched = await registry.schemaById(id);
          } catch (err) {
            if (registryWaits(err)) throw err;
            this.writers.set(
              id,
              new Error(
                err instanceof RegistryError && err.status === 404
                  ? `schema id ${id} is not in the schema registry`
                  : `schema id ${id} cannot be fetched: ${errorMessage(err)}`,
              ),
            );
          }
        },
        {
          policy: REGISTRY_RETRY,
          signal,
          onFailure: (err, attempt, wait) =>
            this.opts.log?.warn(
              { err: errorMessage(err), schema_id: id, attempt, retry_in_ms: wait },
              'cannot read the schema of an Avro event yet',
            ),
        },
      );
      // Building the writer schema is outside the retry: an id never changes meaning in a registry, so a
      // schema avsc cannot build (one with Confluent schema references to other subjects, say) never will be.
      // Retried as an outage, it held the partition for good; now its records are dead-lettered with the reason.
      if (fetched) this.writers.set(id, await writerTypeOf(id, fetched));
    }
  }

  private async holdUntilAborted(why: string, signal: AbortSignal): Promise<void> {
    await retryWithBackoff(() => Promise.reject(new Error(why)), {
      policy: { ...REGISTRY_RETRY, maxDelayMs: 60_000 },
      signal,
      onFailure: (err, attempt, wait) =>
        this.opts.log?.error(
          { err: errorMessage(err), attempt, retry_in_ms: wait },
          'cannot read an Avro event: this consumer waits until it is restarted with SCHEMA_REGISTRY_URL',
        ),
    });
  }

  /**
   * The event of a record, given its attributes read from the headers (`fromBinaryHeaders`; after
   * `prepareDecode` for Avro values); throws when it cannot be decoded.
   */
  decode(r: RawRecord, envelope: CloudEvent): CloudEvent {
    if (!isAvro(r)) return withData(envelope, r.value ? r.value.toString('utf8') : '');
    const id = schemaIdOf(r.value);
    if (id === undefined) throw new Error('an application/avro value without the Confluent framing');
    envelope.data = jsonDataOf(envelope.type, this.readData(id, envelope.type, r.value!.subarray(5)));
    envelope.datacontenttype = 'application/json'; // the event as it is held: data is JSON now
    return envelope;
  }

  /** Avro `bytes` written under schema `id`, read as this build's `type` (as written, for a type it does not know). */
  private readData(id: number, type: string, bytes: Buffer): unknown {
    const writer = this.writers.get(id);
    if (writer === undefined) throw new Error(`schema id ${id} was not loaded`);
    if (writer instanceof Error) throw writer;
    if (!isEventType(type)) return writer.fromBuffer(bytes);
    const key = `${id}/${type}`;
    let resolver = this.resolvers.get(key);
    if (!resolver) {
      try {
        resolver = avroTypeOf(type).createResolver(writer);
      } catch (err) {
        resolver = new Error(`schema id ${id} cannot be read as ${type}: ${errorMessage(err)}`);
      }
      this.resolvers.set(key, resolver);
    }
    if (resolver instanceof Error) throw resolver;
    return avroTypeOf(type).fromBuffer(bytes, resolver);
  }
}

/** The codec of a process that neither writes Avro nor knows a registry: JSON, and Avro values refused. */
export const JSON_CODEC = new EventCodec({ encoding: 'json' });

/** An undecodable value as text for its dead letter: UTF-8, or base64 for a binary (Avro) one. */
const rawText = (value: Buffer | null | undefined, contentType: string | undefined) =>
  value
    ? value
        .subarray(0, 10_000)
        .toString(!contentType || mediaTypeOf(contentType) === 'application/json' ? 'utf8' : 'base64')
    : '';

/** What `decodeRecord` reads of a Kafka record: a consumer's message, or one fetched without a group. */
export type StoredRecord = Pick<
  Message<string, Buffer, string, string>,
  'topic' | 'partition' | 'offset' | 'key' | 'value' | 'headers' | 'timestamp'
>;

const hasIdAndType = (e: unknown): boolean =>
  typeof e === 'object' &&
  e !== null &&
  typeof (e as CloudEvent).id === 'string' &&
  (e as CloudEvent).id !== '' &&
  typeof (e as CloudEvent).type === 'string' &&
  (e as CloudEvent).type !== '';

/** A record as a bus message (after `codec.prepareDecode` for it). */
export function decodeRecord(
  m: StoredRecord,
  unprefix: (t: string) => string,
  codec: EventCodec,
): BusMessage {
  const { headers, envelope } = fromBinaryHeaders(m.headers);
  let event: CloudEvent;
  let rawValue: Buffer | undefined;
  try {
    event = codec.decode(m, envelope);
    // Read with this build's schema, an Avro value of a newer version lost its new fields: its bytes are kept
    // for its dead letter and a replay (BusMessage.rawValue).
    if (isAvro(m) && m.value) rawValue = m.value;
    // A record without an event's id and type (a plain JSON value, no ce_* headers) cannot be addressed,
    // deduplicated or replayed as an event: it is kept as bytes, as an undecodable one is. A structured
    // CloudEvent in the value (what daprd writes) is one: the Dapr transport unwraps it (dapr/wire.ts).
    if (!hasIdAndType(event) && !hasIdAndType(event.data))
      throw new Error('not a CloudEvent: no id or type (ce_id and ce_type headers, or a structured event)');
    // A JSON value is decoded whole, but a build that writes Avro would encode it with its version's schema.
    rawValue ??= m.value ?? undefined;
  } catch (err) {
    // Undecodable bytes still get a CloudEvent shape so the DLQ can hold them; validation rejects it.
    event = {
      specversion: '1.0',
      id: `undecodable-${m.topic}-${m.partition}-${m.offset}`,
      source: 'taskflow/kafka',
      type: UNDECODABLE_EVENT_TYPE,
      time: new Date().toISOString(),
      datacontenttype: 'application/json',
      data: { raw: rawText(m.value, headers['content-type']), error: errorMessage(err) },
    };
  }
  return {
    topic: unprefix(m.topic),
    partition: m.partition,
    offset: m.offset.toString(),
    key: m.key ?? '',
    headers,
    event,
    timestamp: recordTime(m.timestamp),
    ...(rawValue ? { rawValue } : {}),
  };
}

/** Whether `event` (of a known type) names a schema version above the one this build writes. */
const newerThanOurs = (event: CloudEvent) =>
  Number(event.schemaversion ?? 0) > schemaVersionOf(event.type as EventType);

/**
 * A record's timestamp as an instant. Any int64 is a valid CreateTime to the broker (a foreign producer's clock
 * in microseconds, -1): one beyond what Date holds threw out of the decode and ended the process, at the same
 * record again after every restart. Such a time reads as the epoch.
 */
function recordTime(timestamp: bigint): string {
  const at = new Date(Number(timestamp));
  return Number.isNaN(at.getTime()) ? new Date(0).toISOString() : at.toISOString();
}
