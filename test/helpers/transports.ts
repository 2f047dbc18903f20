/**
 * Transports under the bus contract suite. Each harness makes isolated topics and groups, and can make a new
 * bus instance ("a process") on the same durable state, to test restarts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createEmbeddedBus } from '../../src/bus/embedded/index.ts';
import type { Bus } from '../../src/bus/types.ts';
import type { RetryPolicy } from '../../src/retry.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { postgresBackend } from './db.ts';

export const FAST_RETRY: RetryPolicy = { maxAttempts: 3, baseDelayMs: 5, maxDelayMs: 20 };

export interface BusProcess {
  bus: Bus;
  /** Stops like a graceful shutdown (positions committed). */
  close(): Promise<void>;
}

export interface TransportHarness {
  name: string;
  /** A unique name (topic or group) for this test run. */
  unique(base: string): string;
  /** A new bus over the same durable state (broker or database), as a new process would have. */
  start(opts?: { retry?: RetryPolicy }): Promise<BusProcess>;
  cleanup(): Promise<void>;
}

export interface HarnessFactory {
  name: string;
  /** Why its suites are skipped (the server it needs is not configured), or false. */
  skip: string | false;
  create(): Promise<TransportHarness>;
}

const suffix = () => randomBytes(4).toString('hex');

/** A new embedded bus on `db`, as a process would make one (fast polls, heartbeats and retries). */
const embeddedBus = (db: Db, retry?: RetryPolicy) =>
  createEmbeddedBus(db, {
    log: silentLogger,
    retry: retry ?? FAST_RETRY,
    pollIntervalMs: 20,
    heartbeatIntervalMs: 100,
    sessionTimeoutMs: 1_000,
  });

/** `unique` of a harness: names no other run shares. */
const uniqueNames = () => {
  const run = suffix();
  let n = 0;
  return (base: string) => `${base}-${run}-${++n}`;
};

export const embeddedHarness: HarnessFactory = {
  name: 'embedded on pglite',
  skip: false,
  async create() {
    // PGlite in a directory: a restart really closes the database and opens it again. One process at a time
    // can open the directory, so the "processes" alive at the same time share one Db.
    const dir = mkdtempSync(join(tmpdir(), 'taskflow-bus-'));
    let db: Db | null = null;
    let users = 0;
    return {
      name: 'embedded on pglite',
      unique: uniqueNames(),
      async start(opts = {}) {
        if (!db) {
          db = await openDb(dir);
          await migrate(db);
        }
        users++;
        const bus = embeddedBus(db, opts.retry);
        return {
          bus,
          close: async () => {
            await bus.close();
            if (--users === 0 && db) {
              await db.close();
              db = null;
            }
          },
        };
      },
      async cleanup() {
        if (db) await db.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

/**
 * The embedded bus on a real PostgreSQL server (TEST_DATABASE_URL): each "process" opens a connection pool
 * of its own on one database, so members of a group are woken across pools by NOTIFY and contend for
 * partitions with real concurrency, and a restart closes a pool and opens another.
 */
export const embeddedPostgresHarness: HarnessFactory = {
  name: 'embedded on postgres',
  skip: postgresBackend ? false : 'needs TEST_DATABASE_URL (scripts/test starts PostgreSQL)',
  async create() {
    const { url, drop } = await postgresBackend!.fresh();
    return {
      name: 'embedded on postgres',
      unique: uniqueNames(),
      async start(opts = {}) {
        const db = await openDb(url);
        const bus = embeddedBus(db, opts.retry);
        return {
          bus,
          close: async () => {
            await bus.close();
            await db.close();
          },
        };
      },
      cleanup: drop,
    };
  },
};

/** A real Apache Kafka broker (scripts/kafka, started by scripts/test): TEST_KAFKA_BROKERS. */
export const kafkaBrokers = process.env.TEST_KAFKA_BROKERS;
if (!kafkaBrokers && process.env.REQUIRE_KAFKA === '1')
  throw new Error('REQUIRE_KAFKA=1 but TEST_KAFKA_BROKERS is not set (scripts/test starts Kafka)');

export const kafkaHarness: HarnessFactory = {
  name: 'kafka',
  skip: kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS (scripts/test starts Kafka)',
  async create() {
    const { createKafkaBus } = await import('../../src/bus/kafka/index.ts');
    const run = suffix();
    let n = 0;
    const settings = {
      brokers: kafkaBrokers!.split(','),
      clientId: 'taskflow-test',
      topicPrefix: `t${run}.`,
    };
    return {
      name: 'kafka',
      unique: (base) => `${base}-${++n}`,
      async start(opts = {}) {
        const bus = createKafkaBus(settings, {
          log: silentLogger,
          retry: opts.retry ?? FAST_RETRY,
          sessionTimeoutMs: 6_000,
          heartbeatIntervalMs: 500,
        });
        return { bus, close: () => bus.close() };
      },
      async cleanup() {},
    };
  },
};

/** Every transport; a suite per harness, skipped (with the reason) when its server is not configured. */
export const harnesses: readonly HarnessFactory[] = [embeddedHarness, embeddedPostgresHarness, kafkaHarness];
