/** Connecting to Kafka: the settings, the options every client shares, and the errors it reports. */
import { readFileSync } from 'node:fs';
import { connectionsApiChannel, protocolAPIsById, type Consumer } from '@platformatic/kafka';
import type { ConnectionOptions as TlsOptions } from 'node:tls';
import type { Logger } from '../../observability/logger.ts';
import type { RetryPolicy } from '../../retry.ts';
import { errorWithCause } from '../../error-text.ts';
import type { EventCodec } from './codec.ts';
import type { TopicOverrides } from '../../contracts/topics.ts';

export interface KafkaSettings {
  brokers: string[];
  clientId: string;
  sasl?: { mechanism: 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512'; username: string; password: string };
  ssl?: { caFile?: string; certFile?: string; keyFile?: string; rejectUnauthorized: boolean };
  topicPrefix?: string;
  replicationFactor?: number;
  /** KAFKA_ENSURE_TOPICS: false, the platform creates the topics and a send never does (default true). */
  ensureTopics?: boolean;
  /** The sizes a topic created on first send gets (KAFKA_TOPIC_PARTITIONS, KAFKA_TOPIC_RETENTION_MS). */
  topicOverrides?: TopicOverrides;
}

export interface KafkaBusOptions {
  log: Logger;
  retry?: RetryPolicy;
  sessionTimeoutMs?: number;
  heartbeatIntervalMs?: number;
  /** Messages buffered per subscription before the fetch stream is paused. */
  maxBuffered?: number;
  /**
   * How long a subscribe waits for its topics to exist (they are created in the background at start-up, or
   * by `taskflow topics ensure`) before it fails.
   */
  topicWaitMs?: number;
  /** How events become records and back (JSON, or Avro with a schema registry; ./codec.ts). */
  codec?: EventCodec;
  /**
   * How often a group member looks for partitions added to its topics (`kafka-topics --alter`): more than at
   * its last look makes it rejoin, and the group's leader assigns them. Kafka's own consumers notice at their
   * metadata refresh (metadata.max.age.ms, 5 minutes); this client does not by itself, so a running group
   * never read an added partition until something else rebalanced it.
   */
  partitionCheckMs?: number;
}

/** Connection options shared by producer, consumers and admin. */
export function connectionOptions(s: KafkaSettings) {
  let tls: TlsOptions | undefined;
  if (s.ssl) {
    tls = { rejectUnauthorized: s.ssl.rejectUnauthorized };
    if (s.ssl.caFile) tls.ca = readFileSync(s.ssl.caFile);
    if (s.ssl.certFile) tls.cert = readFileSync(s.ssl.certFile);
    if (s.ssl.keyFile) tls.key = readFileSync(s.ssl.keyFile);
  }
  return {
    clientId: s.clientId,
    bootstrapBrokers: s.brokers,
    ...(tls ? { tls } : {}),
    ...(s.sasl
      ? { sasl: { mechanism: s.sasl.mechanism, username: s.sasl.username, password: s.sasl.password } }
      : {}),
    // Fail within seconds (a wrong password, an unreachable broker) and let our own loops retry with backoff. A
    // request once connected keeps the client's 30 s (a JoinGroup waits for the rebalance it is part of).
    connectTimeout: 5_000,
    retries: 2,
    retryDelay: 250,
  };
}

/** Closes a consumer even with a stream still open; never throws (shutdown paths). */
export const forceClose = (c: Consumer<string, Buffer, string, string>) =>
  new Promise<void>((resolve) => c.close(true, () => resolve()));

/** Whether the broker does not know (yet) one of the topics asked for. */
export function isUnknownTopic(err: unknown): boolean {
  return /unknown topic/i.test(describeKafkaError(err));
}

/** Finds the most useful message in the library's nested errors (authentication first, else the innermost). */
export function describeKafkaError(err: unknown): string {
  const seen = new Set<unknown>();
  const walk = (e: unknown): string | null => {
    if (!e || typeof e !== 'object' || seen.has(e)) return null;
    seen.add(e);
    const x = e as { name?: string; message?: string; errors?: unknown[]; cause?: unknown; code?: string };
    if (x.code === 'PLT_KFK_AUTHENTICATION' || x.name === 'AuthenticationError')
      return `Kafka authentication failed (check KAFKA_SASL_MECHANISM/USERNAME/PASSWORD): ${x.message ?? ''}`.trim();
    for (const inner of [...(x.errors ?? []), x.cause]) {
      const found = walk(inner);
      if (found) return found;
    }
    return null;
  };
  return walk(err) ?? errorWithCause(err);
}

const requests = new Map<string, number>();
let counting = false;

/**
 * The requests this process has sent to Kafka brokers, by API (Produce, Fetch, OffsetCommit...), counted from
 * the client's diagnostics channel from the first call on: with the SQL statements, what a write costs in
 * round trips (`taskflow_kafka_requests_total`).
 */
export function kafkaRequestCounts(): ReadonlyMap<string, number> {
  if (!counting) {
    counting = true;
    connectionsApiChannel.start.subscribe((message) => {
      const key = (message as { apiKey?: number }).apiKey ?? -1;
      const api = protocolAPIsById[key as keyof typeof protocolAPIsById] ?? `api-${key}`;
      requests.set(api, (requests.get(api) ?? 0) + 1);
    });
  }
  return requests;
}
