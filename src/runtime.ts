/** What a target gets from the process that runs it, and what it must give back. */
import type { Verifier } from './auth.ts';
import type { Config } from './config.ts';
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
}

export interface RunningTarget {
  stop(): Promise<void>;
}

export interface TargetDefinition {
  name: string;
  start(rt: Runtime): Promise<RunningTarget>;
  /** Loads the target's modules ahead of `start`, while the database opens (start-up time). */
  preload?(): Promise<unknown>;
}
