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
import type { RetryPolicy } from '../../src/bus/consumer.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';

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

export type HarnessFactory = { name: string; create(): Promise<TransportHarness> };

const suffix = () => randomBytes(4).toString('hex');

export const embeddedHarness: HarnessFactory = {
  name: 'embedded',
  async create() {
    // PGlite in a directory: a restart really closes the database and opens it again.
    const dir = mkdtempSync(join(tmpdir(), 'taskflow-bus-'));
    let db: Db | null = null;
    let users = 0;
    const run = suffix();
    let n = 0;
    return {
      name: 'embedded',
      unique: (base) => `${base}-${run}-${++n}`,
      async start(opts = {}) {
        if (!db) {
          db = await openDb(dir);
          await migrate(db);
        }
        users++;
        const bus = createEmbeddedBus(db, {
          log: silentLogger,
          retry: opts.retry ?? FAST_RETRY,
          pollIntervalMs: 20,
          heartbeatIntervalMs: 100,
          sessionTimeoutMs: 1_000,
        });
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

export const harnesses: HarnessFactory[] = [embeddedHarness];

/** A real Apache Kafka broker (scripts/kafka, started by scripts/test): TEST_KAFKA_BROKERS. */
export const kafkaBrokers = process.env.TEST_KAFKA_BROKERS;
if (!kafkaBrokers && process.env.REQUIRE_KAFKA === '1')
  throw new Error('REQUIRE_KAFKA=1 but TEST_KAFKA_BROKERS is not set (scripts/test starts Kafka)');

export const kafkaHarness: HarnessFactory = {
  name: 'kafka',
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

if (kafkaBrokers) harnesses.push(kafkaHarness);
