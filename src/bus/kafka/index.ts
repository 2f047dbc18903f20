/**
 * The Kafka transport (BUS=kafka) over @platformatic/kafka (pure TypeScript, maintained, installs from npm
 * alone and runs on Node 20 with its major version 1; docs/adr/0004-kafka-client.md).
 * - Producer: idempotent, acks=all, one request per batch, key = user id, CloudEvents binary content mode.
 * - Consumer: one consumer group per subscription; messages of a partition are handled one at a time in
 *   order, partitions in parallel; the offset is committed only after the handler resolved (or the message
 *   was dead-lettered), so a crash redelivers instead of losing.
 * - Topics may carry a prefix (KAFKA_TOPIC_PREFIX) so several environments share one cluster.
 * One file per concern: connection.ts (settings, client options, errors), codec.ts (event <-> record: JSON or
 * Avro), publisher.ts, group-member.ts (consumer groups), admin.ts (topics, lag, reading a topic); this file
 * puts them together as a Bus.
 */
import { DEFAULT_RETRY } from '../../retry.ts';
import { assembleBus, type Bus } from '../types.ts';
import { EventCodec } from './codec.ts';
import { KafkaAdmin } from './admin.ts';
import type { KafkaBusOptions, KafkaSettings } from './connection.ts';
import { KafkaSubscriber } from './group-member.ts';
import { KafkaPublisher } from './publisher.ts';

export { KafkaAdmin } from './admin.ts';
export {
  connectionOptions,
  describeKafkaError,
  kafkaRequestCounts,
  type KafkaBusOptions,
  type KafkaSettings,
} from './connection.ts';
export { fetchWait, KafkaSubscriber } from './group-member.ts';
export { chunkBySize, KafkaPublisher, MAX_REQUEST_BYTES, recordSizeBound } from './publisher.ts';

export function createKafkaBus(s: KafkaSettings, opts: KafkaBusOptions): Bus {
  const cfg: Required<KafkaBusOptions> = {
    log: opts.log,
    retry: opts.retry ?? DEFAULT_RETRY,
    sessionTimeoutMs: opts.sessionTimeoutMs ?? 10_000,
    heartbeatIntervalMs: opts.heartbeatIntervalMs ?? 1_000,
    maxBuffered: opts.maxBuffered ?? 1_000,
    topicWaitMs: opts.topicWaitMs ?? 60_000,
    codec: opts.codec ?? new EventCodec({ encoding: 'json', log: opts.log }),
    partitionCheckMs: opts.partitionCheckMs ?? 30_000,
  };
  const publisher = new KafkaPublisher(s, opts.log, cfg.codec);
  const subscriber = new KafkaSubscriber(s, publisher, cfg);
  const admin = new KafkaAdmin(s, opts.log, cfg.codec);
  return assembleBus('kafka', { publisher, subscriber, admin });
}
