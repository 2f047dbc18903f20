/**
 * The seam between services and transports (as in Watermill): a Publisher and a Subscriber. Kafka, Dapr and
 * the embedded log implement it; retry, dead-lettering and validation are shared around it (consumer.ts).
 */
import type { CloudEvent } from '../contracts/cloudevent.ts';
import type { Tx } from '../store/db.ts';

/** Observers of a consumer's work (metrics): a message handled, retried, dead-lettered. */
export interface ConsumeHooks {
  onHandled?(message: BusMessage, ms: number): void;
  onRetry?(message: BusMessage, attempt: number, error: unknown): void;
  onDeadLetter?(message: BusMessage, error: string): void;
  /** A poison message of a group that keeps no dead-letter topic (the gateway's): dropped, sent nowhere. */
  onDropped?(message: BusMessage, error: string): void;
  /** A message passed by without reaching the handler: an event of a type this build does not know. */
  onPassedBy?(message: BusMessage): void;
}

export interface OutgoingMessage {
  topic: string;
  /** Partition key: the user id, so one user's events stay in order. */
  key: string;
  event: CloudEvent;
  /** Extra transport headers (the dead-letter failure headers, for instance). */
  headers?: Record<string, string>;
  /**
   * The record as it was received (BusMessage.rawValue and its headers), which the Kafka publisher writes as
   * it is, with `headers` added, instead of encoding `event`: a dead letter, and its replay, keep the data of
   * a newer version that this build read without its new fields (Avro) or would encode with its own schema.
   * Other transports carry `event`.
   */
  asReceived?: { value: Buffer; headers: Record<string, string> };
}

export interface BusMessage {
  topic: string;
  partition: number;
  /** Position in the partition, as a decimal string (Kafka offsets are 64-bit). */
  offset: string;
  key: string;
  headers: Record<string, string>;
  /** The CloudEvent as decoded from the wire; validated by the consumer wrapper before a handler sees it. */
  event: CloudEvent;
  /** When the broker took the message (ISO 8601); empty when the transport does not say. */
  timestamp: string;
  /**
   * The record's value as received (Kafka): an Avro value is read with this build's schema of the type, which
   * leaves out the fields of a newer version, and a JSON one would be written as Avro of this build's version
   * by a publisher with EVENT_ENCODING=avro. Its dead letter and that letter's replay are these bytes
   * (OutgoingMessage.asReceived), so a replay after the upgrade has the whole event.
   */
  rawValue?: Buffer;
}

export interface Publisher {
  /** Resolves when every message is durably accepted (acks=all on Kafka, committed on the embedded log). */
  publish(messages: readonly OutgoingMessage[]): Promise<void>;
  close(): Promise<void>;
}

/**
 * A publisher whose bus is a log in the application's own database (the embedded bus): it can append inside
 * a transaction of the caller, so moving outbox rows onto it is exactly once.
 */
export interface TransactionalPublisher extends Publisher {
  publishIn(tx: Tx, messages: readonly OutgoingMessage[]): Promise<void>;
}

export const publishesInTransaction = (p: Publisher): p is TransactionalPublisher =>
  typeof (p as Partial<TransactionalPublisher>).publishIn === 'function';

/**
 * The type of the stand-in event of a record whose bytes are not an event (kafka/codec.ts): it can be
 * dead-lettered and shown, not handled or replayed.
 */
export const UNDECODABLE_EVENT_TYPE = 'taskflow.undecodable';

/**
 * A publish that did not go through whole, and what became of each message, as the bus answered per message
 * (Dapr's bulk publish names the entries it refused): positions in the messages given. `written` are on the bus
 * once; `refused` were answered not written (too large for the topic, say); the others were not sent (behind a
 * refused message of their key, or after a failure that stopped the publish). A caller may take the written
 * ones for sent; per key, one written after a message of its key that was not is out of order there.
 */
export class PartialPublishError extends Error {
  constructor(
    message: string,
    readonly written: readonly number[],
    readonly refused: readonly number[],
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'PartialPublishError';
  }
}

/** A handler's failure that retrying cannot fix: the message goes to the dead-letter topic at once. */
export class PermanentError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PermanentError';
  }
}

export type MessageHandler = (message: BusMessage) => Promise<void>;

/** A message of a batch, with the `traceparent` of its CONSUMER span (events it causes continue from it). */
export interface BatchItem {
  message: BusMessage;
  traceparent: string | undefined;
}

/**
 * Handles consecutive messages of one partition together and all or nothing (one database transaction for
 * all of them, say). On a throw the transport hands each message to the `MessageHandler` instead.
 */
export type BatchHandler = (items: readonly BatchItem[]) => Promise<void>;

export interface SubscribeOptions {
  group: string;
  topics: readonly string[];
  /** Called for each message of a partition in order; a throw means "not handled" (retry, then DLQ). */
  handler: MessageHandler;
  /**
   * Optional: runs of up to `maxBatch` messages already fetched from one partition go to it at once (Kafka,
   * embedded bus; on Dapr with `batchIntervalMs` too, through daprd's bulk subscribe). See `consumer` in consumer.ts.
   */
  batchHandler?: BatchHandler;
  /** Most messages per `batchHandler` call (default 100). */
  maxBatch?: number;
  /**
   * While messages keep coming, the least time between two batches of a partition (embedded bus, Kafka): a batch
   * then holds what arrived meanwhile, so a busy consumer runs one transaction for many messages instead of
   * one each. Embedded bus: the first message after a quiet spell is handled at once. Kafka: the broker holds
   * the group's fetch until 8 KiB are ready or 500 ms have passed (fetchWait), so at low rates a message may
   * wait up to that. Latency traded for cost: 0 (the default) handles every message as soon as it is there.
   */
  batchIntervalMs?: number;
  /** Where a new group starts: the oldest retained message (default) or only new ones. */
  fromBeginning?: boolean;
  /**
   * false: a message this group cannot handle (invalid, or failing past its retries) is dropped with a warning,
   * not written to a dead-letter topic (the gateway: a per-instance group, whose clients resume by sequence).
   */
  deadLetters?: boolean;
  /** Observers of handling, retries and dead letters (metrics). */
  hooks?: ConsumeHooks;
}

export interface Subscription {
  /** Finishes the in-flight message, commits its position, leaves the group. */
  close(): Promise<void>;
}

export interface Subscriber {
  subscribe(opts: SubscribeOptions): Promise<Subscription>;
  close(): Promise<void>;
}

/** Read-only views used by `taskflow lag`, `taskflow dlq` and the metrics. */
export interface PartitionLag {
  group: string;
  topic: string;
  partition: number;
  /**
   * The next offset the group reads; null when it committed nothing there: its lag counts from the earliest, or
   * is 0 for a group of one per instance (a new instance starts at the end, and commits where it starts).
   */
  committed: string | null;
  end: string;
  lag: number;
  /**
   * Of a group of one per instance (perInstanceGroups): whether a member of it runs. A stopped instance leaves
   * its group behind, to resume from when it comes back with the same id; its lag grows until then.
   */
  running?: boolean;
}

/**
 * Which topics each consumer group reads: lag lists every partition of them, committed on or not. A key made by
 * perInstanceGroups stands for every group of one per instance of that target.
 */
export type Subscribed = ReadonlyMap<string, readonly string[]>;

const INSTANCE = '<instance>';

/** The key of Subscribed for a target's groups of one per instance, `<group>-<instance id>` (docs/adr/0005). */
export const perInstanceGroups = (group: string) => `${group}-${INSTANCE}`;

/** Whether `key` of Subscribed is one of perInstanceGroups (no group's name). */
export const isPerInstanceKey = (key: string) => key.endsWith(`-${INSTANCE}`);

/** The topics `group` reads as `subscribed` says, and whether it is a group of one per instance. */
export function readsOf(
  subscribed: Subscribed,
  group: string,
): { topics: readonly string[]; perInstance: boolean } {
  if (isPerInstanceKey(group)) return { topics: [], perInstance: false };
  const own = subscribed.get(group);
  if (own) return { topics: own, perInstance: false };
  for (const [key, topics] of subscribed) {
    const prefix = key.slice(0, -INSTANCE.length); // `<group>-`
    if (isPerInstanceKey(key) && group.length > prefix.length && group.startsWith(prefix))
      return { topics, perInstance: true };
  }
  return { topics: [], perInstance: false };
}

/** A message as an admin read returns it (`taskflow dlq`, the DLQ replay): the same as a consumer gets it. */
export type StoredMessage = BusMessage;

/** Offsets in a topic, by partition. */
export type Offsets = ReadonlyMap<number, bigint>;

export interface BusAdmin {
  /**
   * Creates the missing topics. An existing one keeps its partitions unless `grow`, where the bus adds them
   * itself (the embedded bus; Kafka's are added with the broker's tools): a key may then hash to another
   * partition, and a user's events not consumed yet be handled after newer ones, so only `taskflow topics
   * ensure` grows, and only a topic no group has a backlog on.
   */
  ensureTopics(
    topics: readonly { name: string; partitions: number; retentionMs: number }[],
    opts?: { grow?: boolean },
  ): Promise<void>;
  describeTopics(): Promise<{ name: string; partitions: number; retentionMs: number | null }[]>;
  /**
   * The lag of each group (or of `group`) on every partition it committed on, and on every partition of the
   * topics `subscribed` names for it where it committed nothing yet (a new or stuck group: all its lag). A group
   * of one per instance (perInstanceGroups) is listed when it exists (committed, or a member runs), with
   * `running`.
   */
  lag(group?: string, subscribed?: Subscribed): Promise<PartitionLag[]>;
  /**
   * Messages of a topic, for DLQ inspection and replay: the first `limit` (default 1,000; `Infinity`: all), from
   * the beginning or, on the partitions `from` names, from its offset.
   */
  read(topic: string, opts?: { limit?: number; from?: Offsets }): Promise<StoredMessage[]>;
  /** A group's committed positions on `topic` (the next offset it reads), by partition; none for a new group. */
  committedOffsets(group: string, topic: string): Promise<Offsets>;
  /**
   * Moves a group's positions on `topic` forward to `offsets`, never back (a partition already past one keeps
   * its own): a group no process consumes with (the DLQ's replay cursor), which two writers may move at once.
   */
  advanceOffsets(group: string, topic: string, offsets: Offsets): Promise<void>;
  listGroups(): Promise<string[]>;
  /**
   * The event ids among the last `lastPerPartition` messages of each partition of `topic`, where the bus keeps
   * a log a publisher can read back (Kafka): the relay's check for what a lost predecessor sent.
   */
  publishedEventIds?(topic: string, lastPerPartition: number): Promise<Set<string>>;
  /** Deletes what is past each topic's retention, where the bus keeps its log itself (the embedded bus). */
  applyRetention?(): Promise<number>;
  /**
   * Messages currently retained in a topic over all partitions (on the partitions `from` names, those from its
   * offset), 0 if it does not exist (DLQ-size metric).
   */
  messageCount?(topic: string, from?: Offsets): Promise<number>;
  /** Follows a topic without a consumer group (no positions are stored) until `signal` aborts. */
  tail(
    topic: string,
    opts: { fromBeginning: boolean; signal: AbortSignal },
    onMessage: (m: StoredMessage) => void,
  ): Promise<void>;
  close(): Promise<void>;
}

export interface Bus {
  readonly kind: 'embedded' | 'kafka' | 'dapr';
  publisher: Publisher;
  subscriber: Subscriber;
  admin: BusAdmin;
  close(): Promise<void>;
}

/**
 * A transport's parts as a Bus. Closing it stops the subscriptions first (a message in hand may still
 * publish a dead letter), then the publisher, then the admin.
 */
export function assembleBus<P extends Publisher, A extends BusAdmin>(
  kind: Bus['kind'],
  parts: { publisher: P; subscriber: Subscriber; admin: A },
): Bus & { publisher: P; admin: A } {
  return {
    kind,
    ...parts,
    close: async () => {
      await parts.subscriber.close();
      await parts.publisher.close();
      await parts.admin.close();
    },
  };
}
