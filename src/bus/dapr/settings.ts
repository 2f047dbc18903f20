/** How a process reaches its Dapr sidecar (DAPR_HTTP_PORT, DAPR_PUBSUB_NAME) and publishes through it. */
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../../observability/logger.ts';
import type { KafkaSettings } from '../kafka/connection.ts';

export interface DaprSettings {
  /** The sidecar's HTTP API port (DAPR_HTTP_PORT). */
  httpPort: number;
  /** Defaults to 127.0.0.1: the sidecar runs next to the process. */
  host?: string;
  /** The pub/sub component name (DAPR_PUBSUB_NAME). */
  pubsubName: string;
  /** The brokers behind the component, for the admin (topics, lag, dead letters); none: admin unsupported. */
  kafka?: KafkaSettings;
  publishTimeoutMs?: number;
  /** Use the bulk publish API (default; falls back to single publishes when the sidecar lacks it). */
  bulk?: boolean;
  /** Without bulk: how many messages (of distinct keys) are published concurrently. */
  publishConcurrency?: number;
}

export interface DaprBusOptions {
  log: Logger;
  /** The process HTTP server that daprd delivers to; needed to subscribe (not to publish). */
  app?: FastifyInstance;
}
