/**
 * The Kafka publisher: an idempotent producer (acks=all, one request per chunk of a batch, key = user id, Java's
 * partitioner) writing each event as its codec says (CloudEvents binary content mode).
 */
import { ProduceAcks, compatibilityPartitioner, Producer, stringSerializer } from '@platformatic/kafka';
import { topicSpec } from '../../contracts/topics.ts';
import type { Logger } from '../../observability/logger.ts';
import type { OutgoingMessage, Publisher } from '../types.ts';
import { errorMessage } from '../../error-text.ts';
import { JSON_CODEC, type EventCodec } from './codec.ts';
import { connectionOptions, describeKafkaError, type KafkaSettings } from './connection.ts';
import { KafkaAdmin } from './admin.ts';

/**
 * The most bytes of records one produce request carries. The broker refuses a partition's record batch above
 * `message.max.bytes` (1,048,588 by default; Redpanda's `kafka_batch_max_bytes`, 1 MiB) with error 10, and the
 * records of a request bound each of its partitions' batches (plus a 61-byte header), so a request under this
 * is accepted. A record larger than this would go alone; the API's field limits keep an event under about
 * 150 KB (an update carrying two tasks of escaped text at their limits).
 */
export const MAX_REQUEST_BYTES = 1_000_000;

/**
 * Header names as Buffers, each encoded once: a record carries about 13 of them (CloudEvents binary mode),
 * and encoding every name of every record cost about 1.1 µs per record (1,161-1,411 against 97-161 ns for
 * 13 names, cached). The client only reads them. Beyond 256 distinct names, a name is encoded each time.
 */
const headerNames = new Map<string, Buffer>();
function headerNameSerializer(name?: string): Buffer | undefined {
  if (typeof name !== 'string') return undefined;
  let encoded = headerNames.get(name);
  if (encoded === undefined) {
    encoded = Buffer.from(name, 'utf-8');
    if (headerNames.size < 256) headerNames.set(name, encoded);
  }
  return encoded;
}

/**
 * An upper bound of the bytes `record` takes in a record batch: key, value and headers as UTF-8, exactly (a
 * header of CJK text takes three bytes a character), and the varints around them, at most 5 bytes each (10 for
 * the timestamp delta). It replaced the value's length plus 512, which was both too much and too little: it
 * split each relay batch of 500 of bench:relay's task events (555-byte values) into two requests (the second
 * of nine or ten records: a broker round trip more), and one user's burst of events with long non-ASCII headers
 * (a user agent) went out as one batch that the broker refused on every retry, stopping the relay.
 */
export function recordSizeBound(record: {
  key: string;
  value: Buffer;
  headers: Map<string, string>;
}): number {
  headerBytes = 0;
  record.headers.forEach(countHeader); // not for...of: each entry would be a new [name, value] array
  return 36 + Buffer.byteLength(record.key) + record.value.length + headerBytes;
}

let headerBytes = 0;
const countHeader = (value: string, name: string) => {
  headerBytes += 10 + headerNameSerializer(name)!.length + Buffer.byteLength(value);
};

/** The publisher's serializers (bench:relay's raw producer uses them too). */
export const PUBLISHER_SERIALIZERS = {
  key: stringSerializer,
  headerKey: headerNameSerializer,
  headerValue: stringSerializer,
};

/** Splits items, in order, into chunks whose estimated encoded size (`sizeOf`) stays under `limit` bytes. */
export function chunkBySize<T>(messages: readonly T[], limit: number, sizeOf: (m: T) => number): T[][] {
  const chunks: T[][] = [];
  let current: T[] = [];
  let size = 0;
  for (const m of messages) {
    const estimate = sizeOf(m);
    if (current.length && size + estimate > limit) {
      chunks.push(current);
      current = [];
      size = 0;
    }
    current.push(m);
    size += estimate;
  }
  if (current.length) chunks.push(current);
  return chunks;
}

/**
 * Produce errors the broker answered that wrote nothing of the request: the records were refused whole. Its
 * own timeout (REQUEST_TIMED_OUT) and NOT_ENOUGH_REPLICAS_AFTER_APPEND are not here: both come after the
 * leader appended.
 */
const REFUSALS = new Set([
  'CORRUPT_MESSAGE',
  'INVALID_RECORD',
  'INVALID_REQUIRED_ACKS',
  'INVALID_TIMESTAMP',
  'INVALID_TOPIC_EXCEPTION',
  'LEADER_NOT_AVAILABLE',
  'MESSAGE_TOO_LARGE',
  'NOT_ENOUGH_REPLICAS',
  'NOT_LEADER_OR_FOLLOWER',
  'RECORD_LIST_TOO_LARGE',
  'TOPIC_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
  'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
  'UNKNOWN_TOPIC_OR_PARTITION',
  'UNSUPPORTED_FOR_MESSAGE_FORMAT',
]);

/**
 * Whether a Produce response (the client's ResponseError carries it) has a partition the broker answered
 * without an error: its records were written, whatever the other partitions of the request were refused.
 */
function wrotePartOf(response: unknown): boolean {
  const topics = (response as { responses?: unknown } | undefined)?.responses;
  if (!Array.isArray(topics)) return false;
  return topics.some((t: { partitionResponses?: unknown }) =>
    (Array.isArray(t?.partitionResponses) ? t.partitionResponses : []).some(
      (p: { errorCode?: unknown }) => p?.errorCode === 0,
    ),
  );
}

/**
 * Whether a failed send may have written its records all the same: unless every error in it is a refusal the
 * broker answered (REFUSALS) or the client's own check before sending, it may (no answer, a lost connection,
 * a sequence out of order, or an error this list does not know). Decided by the client's error codes, not
 * their text: a failure told wrongly as a refusal would keep a producer whose next send the broker drops.
 * A refusal is per partition: a request whose answer says another partition was written was written in part
 * (the client then keeps that partition's sequence number, and the broker took the next send of as many
 * records there for a duplicate and dropped it).
 */
export function mayHaveBeenWritten(err: unknown): boolean {
  const seen = new Set<unknown>();
  const walk = (e: unknown): boolean => {
    if (!e || typeof e !== 'object') return true;
    if (seen.has(e)) return false;
    seen.add(e);
    const x = e as { code?: unknown; apiId?: unknown; errors?: unknown; cause?: unknown; response?: unknown };
    if (wrotePartOf(x.response)) return true;
    if (x.code === 'PLT_KFK_PROTOCOL') return !REFUSALS.has(String(x.apiId));
    if (x.code === 'PLT_KFK_USER' || x.code === 'PLT_KFK_UNSUPPORTED_FORMAT') return false;
    const inner = [...(Array.isArray(x.errors) ? x.errors : []), ...(x.cause ? [x.cause] : [])];
    return inner.length === 0 || inner.some(walk);
  };
  return walk(err);
}

export class KafkaPublisher implements Publisher {
  private producer: Producer<string, Buffer, string, string>;
  /** Sends under way, by producer; and the producers replaced, closed when their last send ends. */
  private readonly inFlight = new Map<Producer<string, Buffer, string, string>, number>();
  private readonly retired = new Set<Producer<string, Buffer, string, string>>();
  private closed = false;
  /** Topics known to exist; others (a new group's DLQ) are created with their spec before the first send. */
  private readonly known = new Set<string>();
  private admin: KafkaAdmin | undefined;
  constructor(
    private readonly s: KafkaSettings,
    private readonly log?: Logger,
    readonly codec: EventCodec = JSON_CODEC,
  ) {
    this.producer = this.newProducer();
  }

  private newProducer(): Producer<string, Buffer, string, string> {
    return new Producer<string, Buffer, string, string>({
      ...connectionOptions(this.s),
      idempotent: true,
      acks: ProduceAcks.ALL,
      // Java's partitioner (murmur2 of the key), as the embedded bus uses: a key lands on the same partition
      // number whichever client or transport produced it.
      partitioner: compatibilityPartitioner,
      serializers: PUBLISHER_SERIALIZERS,
    });
  }

  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    if (messages.length === 0) return;
    // A record's time (CreateTime) is when it was asked to go, as Java's producer stamps it in send(): under
    // the caller's checks (the relay's lease), not when the client gets to encoding it, which can come later
    // (a topic to create, a schema to fetch, metadata, a retry, a pause of the process).
    const timestamp = BigInt(Date.now());
    const unknown = [...new Set(messages.map((m) => m.topic))].filter((t) => !this.known.has(t));
    // KAFKA_ENSURE_TOPICS=false: the topics are the platform's to create; a missing one fails the send.
    if (unknown.length && this.s.ensureTopics !== false) {
      this.admin ??= new KafkaAdmin(this.s, this.log);
      try {
        await this.admin.ensureTopics(unknown.map((t) => topicSpec(t, this.s.topicOverrides)));
      } catch (err) {
        throw new Error(`Kafka publish failed: ${describeKafkaError(err)}`, { cause: err });
      }
      for (const t of unknown) this.known.add(t);
    }
    const prefix = this.s.topicPrefix ?? '';
    try {
      await this.codec.prepareEncode(messages.flatMap((m) => (m.asReceived ? [] : [m.event])));
    } catch (err) {
      throw new Error(`Kafka publish failed: ${errorMessage(err)}`, { cause: err });
    }
    const records = messages.map((m) => {
      const { headers, value } = m.asReceived
        ? this.codec.encodeAsReceived(m.asReceived, m.headers)
        : this.codec.encode(m.event, m.headers);
      return { topic: prefix + m.topic, key: m.key, value, headers, timestamp };
    });
    // Chunks of bounded size keep every request valid (MAX_REQUEST_BYTES). They go one after another: per-key
    // order holds.
    for (const chunk of chunkBySize(records, MAX_REQUEST_BYTES, recordSizeBound)) {
      const producer = this.producer;
      this.inFlight.set(producer, (this.inFlight.get(producer) ?? 0) + 1);
      try {
        await producer.send({ messages: chunk });
      } catch (err) {
        const described = describeKafkaError(err);
        // A send that failed without an answer may still be written (the broker stalled past the client's
        // timeout and resumed), and the client does not move its sequence numbers past it: the next send of as
        // many records was taken by the broker for a duplicate and dropped (acknowledged, never written), one
        // of another count refused as out of order for good. The next sends go through a new producer, with a
        // new producer id and its own sequence; what the failed one wrote, the relay finds on the bus (docs/adr/
        // 0010). Not for a refusal (a record too large, a topic unknown): nothing of it was written.
        if (this.producer === producer && !this.closed && mayHaveBeenWritten(err)) {
          this.producer = this.newProducer();
          this.retired.add(producer);
        }
        const hint =
          this.s.ensureTopics === false && /unknown topic/i.test(described)
            ? ' (KAFKA_ENSURE_TOPICS=false: Taskflow creates no topic; create it, e.g. with `taskflow topics ensure` run with it true)'
            : '';
        throw new Error(`Kafka publish failed: ${described}${hint}`, { cause: err });
      } finally {
        // A producer replaced is closed once the sends still on it have ended (the relay's and a consumer's dead
        // letter share it): closed at once, it failed them too.
        const left = this.inFlight.get(producer)! - 1;
        if (left > 0) this.inFlight.set(producer, left);
        else {
          this.inFlight.delete(producer);
          if (this.retired.delete(producer)) void producer.close().catch(() => undefined);
        }
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([this.producer, ...this.retired].map((p) => p.close().catch(() => undefined)));
    this.retired.clear();
    await this.admin?.close();
  }
}
