/** What a target gets from the process that runs it, and what it must give back. */
import type { Verifier } from './auth.ts';
import type { Registry } from 'prom-client';
import type { Config, Env } from './config.ts';
import type { EventType } from './contracts/schemas.ts';
import type { TopicName } from './contracts/topics.ts';
import type { Bus } from './bus/types.ts';
import type { Clock } from './domain/clock.ts';
import type { HttpServer } from './http/server.ts';
import type { Logger } from './observability/logger.ts';
import type { Metrics } from './observability/metrics.ts';
import type { Db } from './store/db.ts';

export interface Runtime {
  config: Config;
  db: Db;
  bus: Bus;
  log: Logger;
  clock: Clock;
  metrics: Metrics;
  http: HttpServer;
  /** Checks a bearer token: one per process, so every target shares its token cache and key set. */
  verify: Verifier;
  /** Every target of the binary, not only those this process runs (the AsyncAPI document). */
  catalog: readonly TargetManifest[];
}

/** The consumer groups among `manifests` with a dead-letter topic (`<group>.dlq`). */
export const deadLetterGroups = (manifests: readonly TargetManifest[]): string[] =>
  manifests.flatMap((t) => (t.consumes?.deadLetters ? [t.consumes.group] : []));

/** The topics each consumer group of `manifests` reads (not the per-instance ones: their names are the instances'). */
export const subscribedTopics = (manifests: readonly TargetManifest[]): Map<string, readonly string[]> =>
  new Map(
    manifests.flatMap((t) =>
      t.consumes && !t.consumes.perInstance ? [[t.consumes.group, t.consumes.topics] as const] : [],
    ),
  );

export interface RunningTarget {
  stop(): Promise<void>;
}

export interface TargetDefinition {
  name: string;
  start(rt: Runtime): Promise<RunningTarget>;
  /** Loads the target's modules ahead of `start`, while the database opens (start-up time). */
  preload?(): Promise<unknown>;
  /** Reads and checks its configuration section (ConfigError): start-up runs it before it opens anything. */
  config?(env: Env): unknown;
}

/** A consumer group of a target: what it reads, and whether what it cannot handle goes to `<group>.dlq`. */
export interface ConsumerGroupSpec {
  group: string;
  topics: readonly TopicName[];
  deadLetters: boolean;
  /** One group per instance (`<group>-<instance id>`), so that every instance sees every message. */
  perInstance?: boolean;
}

/**
 * What a target is, in its own folder (`manifest.ts`): the one list of targets (services/index.ts) is made
 * of these. The groups, the dead-letter topics, the AsyncAPI document and the README's table of targets are
 * derived from them; `produces` is checked against what the target writes
 * (test/integration/target-manifests.test.ts).
 */
export interface TargetManifest {
  name: string;
  description: string;
  /** Its inputs other than the bus (HTTP routes, the outbox), for the table of targets. */
  serves?: string;
  /**
   * The paths it serves, each with what is under it (`:name` a segment): a process that does not run it answers
   * a request there that this target serves it (process.ts, servedElsewhere).
   */
  routes?: readonly string[];
  consumes?: ConsumerGroupSpec;
  /** The event types it writes. */
  produces: readonly EventType[];
  /** The CloudEvent `source` of the events it writes. */
  sources?: readonly string[];
  /** Its effects outside the bus (email, WebSocket frames, an API), for the table of targets. */
  effects?: string;
  /** The tables it owns. */
  owns: readonly string[];
  /** Its configuration section from the environment; a bad value is a ConfigError of one line. */
  config?(env: Env): unknown;
  /** Its Prometheus metrics, registered once per process (`Metrics.of`). */
  metrics?(registry: Registry): unknown;
}

/**
 * A target of the list: its manifest, and its modules loaded only by a process that runs it (`load`, the
 * module's `start`), ahead of the start while the database opens.
 */
export function lazyTarget<const T extends TargetManifest>(
  manifest: T,
  load: () => Promise<{ start(rt: Runtime): Promise<RunningTarget> }>,
): T & TargetDefinition {
  let loading: ReturnType<typeof load> | undefined;
  const preload = () => (loading ??= load());
  return { ...manifest, preload, start: async (rt: Runtime) => (await preload()).start(rt) };
}
