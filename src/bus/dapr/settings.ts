/** How a process reaches its Dapr sidecar (DAPR_HTTP_PORT, DAPR_PUBSUB_NAME) and publishes through it. */
import { createHash, timingSafeEqual } from 'node:crypto';
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
  /** DAPR_API_TOKEN: sent to the sidecar (`dapr-api-token`) when its API requires one (Kubernetes: dapr.io/api-token-secret). */
  apiToken?: string;
  /**
   * APP_API_TOKEN: what the sidecar sends to this process (`dapr-api-token`; Kubernetes: dapr.io/app-token-secret).
   * Set, the delivery routes refuse every request without it: without it any pod that reaches the port could
   * post events to the consumers.
   */
  appToken?: string;
}

/** The header of the API tokens both ways (Dapr's name). */
export const DAPR_TOKEN_HEADER = 'dapr-api-token';

/** Whether a header carries `secret`, compared in constant time. */
export function sameSecret(header: string | string[] | undefined, secret: string): boolean {
  if (typeof header !== 'string') return false;
  const got = createHash('sha256').update(header).digest();
  return timingSafeEqual(got, createHash('sha256').update(secret).digest());
}

/** The headers of a request to the sidecar. */
export const sidecarHeaders = (s: DaprSettings): Record<string, string> =>
  s.apiToken ? { [DAPR_TOKEN_HEADER]: s.apiToken } : {};

export interface DaprBusOptions {
  log: Logger;
  /** The process HTTP server that daprd delivers to; needed to subscribe (not to publish). */
  app?: FastifyInstance;
  /** Adds a check of the process's /readyz (the sidecar has read the subscriptions). */
  readiness?: (name: string, check: () => Promise<void>) => void;
}

/** What GET /v1.0/metadata tells of the sidecar: its components and the subscriptions it holds for the app. */
export interface SidecarMetadata {
  components?: { name?: string; type?: string }[];
  subscriptions?: { pubsubname?: string; topic?: string; rules?: { path?: string }[] }[];
}

/** The sidecar's metadata (GET /v1.0/metadata), or an error that says why there is none (for /readyz). */
export async function sidecarMetadata(s: DaprSettings): Promise<SidecarMetadata> {
  const url = `http://${s.host ?? '127.0.0.1'}:${s.httpPort}/v1.0/metadata`;
  const r = await fetch(url, { headers: sidecarHeaders(s), signal: AbortSignal.timeout(2_000) }).catch(
    (err: unknown) => {
      throw new Error(`the Dapr sidecar does not answer at ${url} (DAPR_HTTP_PORT)`, { cause: err });
    },
  );
  if (r.status === 401)
    throw new Error(`the Dapr sidecar refused ${url} (401): set DAPR_API_TOKEN to its API token`);
  if (!r.ok) throw new Error(`the Dapr sidecar answered ${r.status} at ${url}`);
  return (await r.json()) as SidecarMetadata;
}

/**
 * Readiness of a process on BUS=dapr: its sidecar answers and has the pub/sub component DAPR_PUBSUB_NAME
 * names. A misspelt name was silent: daprd subscribed the app "through" a component it does not have, and
 * nothing was delivered while /readyz said ready.
 */
export async function checkDaprComponent(s: DaprSettings): Promise<void> {
  const { components = [] } = await sidecarMetadata(s);
  const pubsubs = components.filter((c) => c.type?.startsWith('pubsub.')).map((c) => c.name);
  if (!pubsubs.includes(s.pubsubName))
    throw new Error(
      `the Dapr sidecar has no pub/sub component named "${s.pubsubName}" (DAPR_PUBSUB_NAME); it has ${pubsubs.length ? pubsubs.map((n) => `"${n}"`).join(', ') : 'none'}`,
    );
}
