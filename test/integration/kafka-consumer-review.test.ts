/**
 * The Kafka consumer side under rebalances, on the dev broker (a review, each failing before its fix):
 * - a partition the group never committed on, taken from a member that had fetched (and queued) some of it,
 *   then given back to that member before anyone committed on it, was read on from where that member's own
 *   fetches had left off: what it had queued and dropped at the revocation was never handled by anyone;
 * - a rejoin the client's heartbeat started, failing through the client's retries (the broker went while the
 *   rebalance waited for a stalled member), was an 'error' event of the consumer nobody listened to: the
 *   process ended (uncaught 'rejoinGroup failed 3 times.'). It stalls and kills a broker of its own
 *   (scripts/kafka, instance `kafka-review`).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { createKafkaBus } from '../../src/bus/kafka/index.ts';
import type { Bus, BusMessage } from '../../src/bus/types.ts';
import { silentLogger, type Logger } from '../../src/observability/logger.ts';
import type { RetryPolicy } from '../../src/retry.ts';
import { waitFor } from '../helpers/app.ts';
import { keyPerPartition, taskCreated, titleOf } from '../helpers/events.ts';
import { kafka } from '../helpers/kafka.ts';
import { FAST_RETRY, kafkaBrokers } from '../helpers/transports.ts';

const DAY = 86_400_000;
const skip = kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS';

const busOn = (
  prefix: string,
  retry: RetryPolicy = FAST_RETRY,
  brokers = kafkaBrokers!.split(','),
  log: Logger = silentLogger,
): Bus =>
  createKafkaBus(
    { brokers, clientId: 'kafka-consumer-review', topicPrefix: prefix },
    { log, retry, sessionTimeoutMs: 6_000, heartbeatIntervalMs: 500 },
  );

/** A logger that keeps every line. */
function recordingLogger(): { log: Logger; lines: { level: number; msg: string }[] } {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { log: log as unknown as Logger, lines };
}

describe('a Kafka partition taken from a member and given back', { skip, timeout: 180_000 }, () => {
  it('is read from the group position, not from where the member had fetched: what it dropped is handled', async () => {
    const prefix = `review-${randomBytes(3).toString('hex')}.`;
    const topic = 'back';
    const group = 'back-group';
    const a = busOn(prefix);
    // B's handler fails until B stops, and its retries wait long: B commits nothing (its store is down, say).
    const b = busOn(prefix, { maxAttempts: 1_000, baseDelayMs: 60_000, maxDelayMs: 60_000 });
    const keys = keyPerPartition(2, 'back');
    const send = (suffix: string) =>
      a.publisher.publish(keys.map((key) => ({ topic, key, event: taskCreated(key, `${key} ${suffix}`) })));
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const inHand = new Set<number>();
    const byA: string[] = [];
    const byB = new Set<number>();
    let failB!: () => void;
    const bFails = new Promise<void>((resolve) => (failB = resolve));
    try {
      await a.admin.ensureTopics([{ name: topic, partitions: 2, retentionMs: DAY }]);
      for (let i = 0; i < 5; i++) await send(String(i));
      // A takes both partitions, fetches (and queues) all five messages of each, and holds the first in hand.
      const subA = await a.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m: BusMessage) => {
          inHand.add(m.partition);
          await gate;
          byA.push(titleOf(m.event));
        },
      });
      await waitFor(() => inHand.size === 2, 30_000, 'A with the first message of each partition in hand');
      // B joins: one partition goes to B (A drops what it queued of it), B commits nothing of it...
      const subB = await b.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m: BusMessage) => {
          byB.add(m.partition);
          await bFails;
          throw new Error('B cannot reach its store');
        },
      });
      await waitFor(() => byB.size > 0, 30_000, 'B with a message of its partition in hand');
      // ...and leaves: the partition comes back to A, the group still without a position on it.
      failB();
      await subB.close();
      await b.close();
      open();
      await send('after');
      await waitFor(
        () => keys.every((key) => byA.includes(`${key} after`)),
        60_000,
        'A to handle a message published after B left, on each partition',
      );
      await subA.close();
      const missing = keys.flatMap((key) =>
        ['0', '1', '2', '3', '4'].map((i) => `${key} ${i}`).filter((t) => !byA.includes(t)),
      );
      assert.deepEqual(missing, [], `every message handled (by A, as B handled none): ${byA.join(', ')}`);
    } finally {
      open();
      failB();
      await b.close();
      await a.close();
    }
  });
});

describe('on a Kafka broker of its own, gone during a rebalance', { skip, timeout: 600_000 }, () => {
  const name = 'kafka-review';
  let brokers: string[];
  const pidFile = fileURLToPath(new URL(`../../.cache/kafka/run/${name}/pid`, import.meta.url));
  const brokerPid = () => Number(readFileSync(pidFile, 'utf8').trim());
  before(async () => {
    brokers = (await kafka('start', name)).KAFKA_BROKERS!.split(',');
  });
  after(async () => {
    await kafka('stop', name).catch(() => undefined);
  });

  it('a member whose rejoin fails (the broker went while it waited for a stalled member) rides it out', async () => {
    const prefix = `rejoin-${randomBytes(3).toString('hex')}.`;
    const topic = 'rejoin';
    const group = 'rejoin-group';
    const { log, lines } = recordingLogger();
    const a = busOn(prefix, FAST_RETRY, brokers, log);
    const b = busOn(prefix, FAST_RETRY, brokers);
    const keys = keyPerPartition(2, 'rejoin');
    const got: string[] = [];
    // C: a member in another process, stalled (SIGSTOP) so that a rebalance waits for it.
    const module = (path: string) => new URL(path, import.meta.url).href;
    const c = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        `const { createKafkaBus } = await import(${JSON.stringify(module('../../src/bus/kafka/index.ts'))});
         const { silentLogger } = await import(${JSON.stringify(module('../../src/observability/logger.ts'))});
         const bus = createKafkaBus({ brokers: ${JSON.stringify(brokers)}, clientId: 'stalled', topicPrefix: ${JSON.stringify(prefix)} },
           { log: silentLogger, sessionTimeoutMs: 6000, heartbeatIntervalMs: 500 });
         await bus.subscriber.subscribe({ group: ${JSON.stringify(group)}, topics: [${JSON.stringify(topic)}], handler: async () => {} });
         console.log('ready');`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      await a.admin.ensureTopics([{ name: topic, partitions: 2, retentionMs: DAY }]);
      const subA = await a.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m: BusMessage) => void got.push(titleOf(m.event)),
      });
      await new Promise<void>((resolve, reject) => {
        c.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        c.on('exit', (code) => reject(new Error(`member C exited with ${code}`)));
      });
      process.kill(c.pid!, 'SIGSTOP');
      // B joins: a rebalance, which waits for C; A's heartbeat sees it and A asks to join again...
      const subB = b.subscriber
        .subscribe({ group, topics: [topic], handler: async () => {} })
        .catch(() => undefined);
      await sleep(2_000);
      // ...and the broker goes before it answers: A's rejoin fails, the client's own retries too.
      process.kill(brokerPid(), 'SIGKILL');
      await sleep(5_000);
      c.kill('SIGKILL');
      brokers = (await kafka('start', name)).KAFKA_BROKERS!.split(',');
      await (await subB)?.close();
      await b.close();
      await a.publisher.publish(keys.map((key) => ({ topic, key, event: taskCreated(key, `${key} after`) })));
      await waitFor(
        () => keys.every((key) => got.includes(`${key} after`)),
        120_000,
        'A to handle what was published once the broker was back, on each partition',
      );
      await subA.close();
      assert.ok(
        lines.some((l) => /could not rejoin its group/.test(l.msg)),
        `and says what happened: ${lines.map((l) => l.msg).join(' | ')}`,
      );
    } finally {
      c.kill('SIGKILL');
      await b.close();
      await a.close();
    }
  });
});
