/** Picks the transport from `BUS` and provisions the topics of docs/architecture.md section 3 when allowed. */
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.ts';
import {
  TOPIC_SPECS,
  dlqTopic,
  topicSpec,
  type TopicOverrides,
  type TopicSpec,
} from '../contracts/topics.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { Db } from '../store/db.ts';
import type { KafkaSettings } from './kafka/index.ts';
import type { SchemaRegistryClient } from './schema-registry.ts';
import type { Bus } from './types.ts';

/**
 * Every topic the system uses: the three event topics and the dead-letter topic of each consumer group that
 * dead-letters (`deadLetterGroups`, from the targets' manifests).
 */
export function allTopics(config: Config, deadLetterGroups: readonly string[]): TopicSpec[] {
  const overrides = topicOverrides(config);
  return [...TOPIC_SPECS.map((t) => t.name), ...deadLetterGroups.map(dlqTopic)].map((name) =>
    topicSpec(name, overrides),
  );
}

/**
 * The topics of `wanted` that exist with fewer partitions than asked (`partitionsOf`: an existing topic's
 * count, undefined for one that does not exist): what a start leaves as it is, and `topics ensure` may grow.
 */
export const shortOfPartitions = (
  wanted: readonly TopicSpec[],
  partitionsOf: (topic: string) => number | undefined,
): TopicSpec[] => wanted.filter((t) => (partitionsOf(t.name) ?? t.partitions) < t.partitions);

const topicOverrides = (config: Config): TopicOverrides => ({
  partitions: config.kafka.topicPartitions,
  retentionMs: config.kafka.topicRetentionMs,
});

export function kafkaSettings(config: Config): KafkaSettings {
  return {
    brokers: config.kafka.brokers,
    clientId: config.kafka.clientId,
    ...(config.kafka.sasl ? { sasl: config.kafka.sasl } : {}),
    ...(config.kafka.ssl ? { ssl: config.kafka.ssl } : {}),
    topicPrefix: config.kafka.topicPrefix,
    replicationFactor: config.kafka.replicationFactor,
    ensureTopics: config.kafka.ensureTopics,
    topicOverrides: topicOverrides(config),
  };
}

/** Each transport's module (and its client library), loaded only when chosen. */
const loadTransport = {
  embedded: () => import('./embedded/index.ts'),
  kafka: () => import('./kafka/index.ts'),
  dapr: () => import('./dapr/index.ts'),
};

/** Loads the transport's modules ahead of `createBus`, while the database opens (start-up time). */
export function preloadBus(config: Config): Promise<unknown> {
  return loadTransport[config.bus]();
}

/**
 * Whether Taskflow creates its topics: always on the embedded bus (its own log); on Kafka when
 * KAFKA_ENSURE_TOPICS allows; behind Dapr only with broker access (KAFKA_BROKERS), else the platform does.
 */
export function provisionsTopics(config: Config): boolean {
  if (config.bus === 'embedded') return true;
  return config.kafka.ensureTopics && (config.bus === 'kafka' || config.dapr.kafkaAdmin);
}

/** What start-up registered (process.ts): the client, and the schema id of each subject. */
export interface RegisteredSchemas {
  client: SchemaRegistryClient;
  ids: ReadonlyMap<string, number>;
}

/**
 * With a registry, Kafka reads Avro values (and writes them with EVENT_ENCODING=avro), through the client
 * and with the ids of start-up's registration when there was one (a CLI command has none: it looks them up).
 */
async function eventCodec(config: Config, log: Logger, registered?: RegisteredSchemas) {
  const [{ EventCodec }, { SchemaRegistryClient }] = await Promise.all([
    import('./kafka/codec.ts'),
    import('./schema-registry.ts'),
  ]);
  return new EventCodec({
    encoding: config.eventEncoding,
    registry: registered?.client ?? new SchemaRegistryClient(config.schemaRegistry!),
    ...(registered ? { registered: registered.ids } : {}),
    subjectPrefix: config.kafka.topicPrefix,
    log,
  });
}

export async function createBus(
  config: Config,
  db: Db,
  log: Logger,
  metrics: Metrics,
  /**
   * `http`: the process HTTP server, where daprd delivers (BUS=dapr subscribers). `schemas`: what start-up
   * registered with the schema registry.
   */
  opts: {
    http?: FastifyInstance;
    schemas?: RegisteredSchemas;
    /** Adds a check of the process's /readyz (BUS=dapr: the sidecar and its pub/sub component). */
    readiness?: (name: string, check: () => Promise<void>) => void;
  } = {},
): Promise<Bus> {
  const busLog = log.child({ component: 'bus' });
  let bus: Bus;
  switch (config.bus) {
    case 'embedded': {
      const { createEmbeddedBus } = await loadTransport.embedded();
      bus = createEmbeddedBus(db, {
        log: busLog,
        retry: config.retry,
        pollIntervalMs: config.embedded.pollIntervalMs,
        heartbeatIntervalMs: config.embedded.heartbeatIntervalMs,
        sessionTimeoutMs: config.embedded.sessionTimeoutMs,
        onAppended: (topic, event) => {
          metrics.eventsProduced.inc({ topic, type: event.type });
          const at = Date.parse(event.time);
          if (at > 0) metrics.publishLatency.observe({ topic }, Math.max(0, Date.now() - at) / 1000);
        },
      });
      break;
    }
    case 'kafka': {
      const { createKafkaBus, kafkaRequestCounts } = await loadTransport.kafka();
      bus = createKafkaBus(kafkaSettings(config), {
        log: busLog,
        retry: config.retry,
        ...(config.schemaRegistry ? { codec: await eventCodec(config, busLog, opts.schemas) } : {}),
      });
      metrics.trackKafkaRequests(kafkaRequestCounts());
      break;
    }
    case 'dapr': {
      const { createDaprBus, checkDaprComponent } = await loadTransport.dapr();
      // Topics/lag/dead letters go to the brokers behind the component, when the app knows them.
      const settings = {
        httpPort: config.dapr.httpPort,
        pubsubName: config.dapr.pubsubName,
        ...(config.dapr.kafkaAdmin ? { kafka: kafkaSettings(config) } : {}),
        ...(config.dapr.apiToken ? { apiToken: config.dapr.apiToken } : {}),
        ...(config.dapr.appToken ? { appToken: config.dapr.appToken } : {}),
      };
      bus = createDaprBus(settings, {
        log: busLog,
        ...(opts.http ? { app: opts.http } : {}),
        ...(opts.readiness ? { readiness: opts.readiness } : {}),
      });
      opts.readiness?.('dapr pub/sub component', () => checkDaprComponent(settings));
      break;
    }
  }

  return bus;
}
