/** Topics, lag and dead letters behind Dapr: the Kafka brokers of the component, read as daprd writes. */
import { TOPIC_SPECS, TOPICS } from '../../contracts/topics.ts';
import type { KafkaAdmin } from '../kafka/admin.ts';
import {
  type BusAdmin,
  type Offsets,
  type PartitionLag,
  type StoredMessage,
  type Subscribed,
} from '../types.ts';
import { normalizeStored } from './wire.ts';

/**
 * Dapr's API has no topic, offset or dead-letter access: delegate to the Kafka brokers behind the component
 * (KAFKA_BROKERS), and read what daprd writes: structured CloudEvents in the record value, and dead letters
 * that carry the source position in `__topic`/`__partition`/`__offset` headers instead of our failure headers.
 */
export class DaprAdmin implements BusAdmin {
  /**
   * The messages on a topic (a group's dead letters, for taskflow_dlq_messages and its alert), when the
   * brokers are known: without it the dead letters daprd writes were counted nowhere.
   */
  readonly messageCount?: (topic: string, from?: Offsets) => Promise<number>;

  constructor(private readonly kafka: KafkaAdmin | null) {
    if (kafka) this.messageCount = (topic, from) => kafka.messageCount(topic, from);
  }

  private need(what: string): KafkaAdmin {
    if (!this.kafka)
      throw new Error(
        `${what} is not supported on BUS=dapr without KAFKA_BROKERS: Dapr's API has no topic, offset or dead-letter access; set KAFKA_BROKERS (and KAFKA_SASL_*/KAFKA_SSL*) to the brokers behind the pub/sub component`,
      );
    return this.kafka;
  }

  async ensureTopics(
    topics: readonly { name: string; partitions: number; retentionMs: number }[],
  ): Promise<void> {
    await this.need('creating topics').ensureTopics(topics);
  }

  /**
   * The topics on the brokers but those of Kafka-transport environments sharing them: their topics carry a
   * KAFKA_TOPIC_PREFIX (Dapr's have none), and were listed here as this deployment's (`taskflow dlq list` took
   * `staging.taskflow-audit.dlq` for a group `staging.taskflow-audit`). A prefix is known by its environment's
   * `<prefix>task-events`; a topic is that environment's when it is the prefix and a name this deployment has
   * too (or a name of the topic table). Others' unprefixed topics (another Dapr deployment's) cannot be told.
   */
  async describeTopics() {
    const topics = await this.need('describing topics').describeTopics();
    const names = new Set(topics.map((t) => t.name));
    const prefixes = [...names]
      .filter((n) => n !== TOPICS.taskEvents && n.endsWith(TOPICS.taskEvents))
      .map((n) => n.slice(0, -TOPICS.taskEvents.length));
    const known = (rest: string) => names.has(rest) || TOPIC_SPECS.some((t) => t.name === rest);
    const othersOf = (n: string) => prefixes.some((p) => n.startsWith(p) && known(n.slice(p.length)));
    return prefixes.length === 0 ? topics : topics.filter((t) => !othersOf(t.name));
  }

  async lag(group?: string, subscribed?: Subscribed): Promise<PartitionLag[]> {
    return this.need('consumer lag').lag(group, subscribed);
  }

  async listGroups(): Promise<string[]> {
    return this.need('listing consumer groups').listGroups();
  }

  async read(topic: string, opts?: { limit?: number; from?: Offsets }): Promise<StoredMessage[]> {
    return (await this.need('reading a topic').read(topic, opts)).map(normalizeStored);
  }

  async committedOffsets(group: string, topic: string): Promise<Offsets> {
    return this.need('reading committed offsets').committedOffsets(group, topic);
  }

  async advanceOffsets(group: string, topic: string, offsets: Offsets): Promise<void> {
    await this.need('committing offsets').advanceOffsets(group, topic, offsets);
  }

  async tail(
    topic: string,
    opts: { fromBeginning: boolean; signal: AbortSignal },
    onMessage: (m: StoredMessage) => void,
  ): Promise<void> {
    return this.need('tailing a topic').tail(topic, opts, (m) => onMessage(normalizeStored(m)));
  }

  async close(): Promise<void> {
    await this.kafka?.close();
  }
}
