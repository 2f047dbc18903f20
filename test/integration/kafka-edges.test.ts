/**
 * Edges of the Kafka transport a review found, each failing before its fix, on real brokers:
 * - a group whose committed position the broker no longer keeps (retention deleted the records while it was
 *   away: `task-updates` keeps an hour) had every fetch refused and rejoined at the same position for good;
 * - after a send that failed on the client while the broker was stalled (and wrote it when it resumed), the
 *   idempotent producer reused its sequence numbers: the next send of as many records was acknowledged and
 *   never written, one of another count refused for good;
 * - an offset commit that failed in a broker outage was never tried again, not even on close: the partition
 *   stayed one message behind, and the next member handled it again.
 * - (of that fix) a publish the broker refused (a record too large) replaced the producer under the publishes in
 *   flight beside it, which failed too: only a send without an answer replaces it, closed once its sends end.
 * The last two stall and stop a broker of their own (scripts/kafka, instance `kafka-edges`).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Admin } from '@platformatic/kafka';
import { pino } from 'pino';
import { KafkaAdmin, KafkaPublisher, createKafkaBus } from '../../src/bus/kafka/index.ts';
import { silentLogger, type Logger } from '../../src/observability/logger.ts';
import { waitFor } from '../helpers/app.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { kafka } from '../helpers/kafka.ts';
import { FAST_RETRY, kafkaBrokers } from '../helpers/transports.ts';

const DAY = 86_400_000;
const skip = kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS';

/** A logger that keeps every line. */
function recordingLogger(): { log: Logger; lines: { level: number; msg: string }[] } {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { log: log as unknown as Logger, lines };
}

const busOn = (brokers: string[], prefix: string, log: Logger = silentLogger) =>
  createKafkaBus(
    { brokers, clientId: 'kafka-edges', topicPrefix: prefix },
    { log, retry: FAST_RETRY, sessionTimeoutMs: 6_000, heartbeatIntervalMs: 500 },
  );

describe('a Kafka group whose committed position is no longer kept', { skip }, () => {
  it('reads on from the oldest record kept', async () => {
    const brokers = kafkaBrokers!.split(',');
    const prefix = `kafka-edges-${randomBytes(3).toString('hex')}.`;
    const raw = new Admin({ clientId: 'kafka-edges-admin', bootstrapBrokers: brokers });
    const topic = 'kept';
    const group = 'kept-group';
    const setup = busOn(brokers, prefix);
    try {
      await setup.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: DAY }]);
      await setup.publisher.publish(
        Array.from({ length: 5 }, (_, i) => ({ topic, key: 'u1', event: taskCreated('u1', `a${i}`) })),
      );
      await setup.admin.advanceOffsets(group, topic, new Map([[0, 2n]])); // it had handled a0 and a1
      // Records before offset 4 deleted while the group was away (retention, kafka-delete-records).
      await raw.deleteRecords({
        topics: [{ name: prefix + topic, partitions: [{ partition: 0, offset: 4n }] }],
      });
      await setup.publisher.publish([{ topic, key: 'u1', event: taskCreated('u1', 'b0') }]);
    } finally {
      await setup.close();
      await raw.close();
    }
    const { log, lines } = recordingLogger();
    const bus = busOn(brokers, prefix, log);
    const got: string[] = [];
    const sub = await bus.subscriber.subscribe({
      group,
      topics: [topic],
      handler: async (m) => void got.push(titleOf(m.event)),
    });
    try {
      await waitFor(() => got.includes('b0'), 30_000, 'the records after the deleted ones');
      assert.deepEqual(got, ['a4', 'b0']);
      assert.ok(
        lines.some((l) => /position is no longer kept/.test(l.msg)),
        'and says so',
      );
    } finally {
      await sub.close();
      await bus.close();
    }
  });
});

describe('one Kafka publisher shared by the relay and the dead letters', { skip }, () => {
  it('a publish the broker refuses does not fail another in flight beside it', async () => {
    const s = {
      brokers: kafkaBrokers!.split(','),
      clientId: 'kafka-edges-swap',
      topicPrefix: `swap-${randomBytes(3).toString('hex')}.`,
    };
    const admin = new KafkaAdmin(s, silentLogger);
    const publisher = new KafkaPublisher(s, silentLogger);
    const event = (title: string, pad: number) => {
      const e = taskCreated('u1', title);
      (e.data as unknown as { pad: string }).pad = 'x'.repeat(pad);
      return e;
    };
    const failures: string[] = [];
    try {
      await admin.ensureTopics([
        { name: 'ok', partitions: 1, retentionMs: DAY },
        { name: 'small', partitions: 1, retentionMs: DAY },
      ]);
      await publisher.publish([{ topic: 'ok', key: 'u', event: event('warm', 0) }]);
      for (let round = 0; round < 3; round++) {
        // A record over the broker's size limit: refused, nothing of it written.
        const refused = publisher.publish([{ topic: 'small', key: 'u', event: event('too big', 1_500_000) }]);
        const beside = publisher.publish(
          Array.from({ length: 50 }, (_, i) => ({
            topic: 'ok',
            key: `u${i % 7}`,
            event: event(`g${i}`, 200),
          })),
        );
        const [b, r] = await Promise.allSettled([beside, refused]);
        if (b.status === 'rejected') failures.push(`round ${round}: ${String((b.reason as Error).message)}`);
        if (r.status === 'fulfilled') failures.push(`round ${round}: the oversize record was taken`);
      }
    } finally {
      await publisher.close();
      await admin.close();
    }
    assert.deepEqual(failures, []);
  });
});

describe('on a Kafka broker of its own, stalled and stopped', { skip, timeout: 600_000 }, () => {
  const name = 'kafka-edges';
  let brokers: string[];
  const pidFile = fileURLToPath(new URL(`../../.cache/kafka/run/${name}/pid`, import.meta.url));
  const pid = () => Number(readFileSync(pidFile, 'utf8').trim());
  before(async () => {
    brokers = (await kafka('start', name)).KAFKA_BROKERS!.split(',');
  });
  after(async () => {
    try {
      process.kill(pid(), 'SIGCONT');
    } catch {
      // not running
    }
    await kafka('stop', name).catch(() => undefined);
  });

  /** `send` while the broker is stalled past the client's timeout and retries: it fails on the client. */
  async function stalled(send: () => Promise<void>) {
    process.kill(pid(), 'SIGSTOP');
    try {
      await assert.rejects(send(), /Kafka publish failed/);
    } finally {
      process.kill(pid(), 'SIGCONT');
    }
    await sleep(3_000); // the broker writes what it was sent
  }

  it('the publisher writes every later event after a send failed while the broker stalled', async () => {
    const s = {
      brokers,
      clientId: 'kafka-edges-stall',
      topicPrefix: `stall-${randomBytes(3).toString('hex')}.`,
    };
    const publisher = new KafkaPublisher(s, silentLogger);
    const admin = new KafkaAdmin(s, silentLogger);
    try {
      const topic = 'stall';
      await admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: DAY }]);
      const send = (...titles: string[]) =>
        publisher.publish(titles.map((t) => ({ topic, key: 'u1', event: taskCreated('u1', t) })));
      await send('e0');
      await stalled(() => send('e1'));
      await send('e2'); // as many records as the stalled send: taken for its duplicate, not written
      await send('f0', 'f1'); // another count: refused as out of order for good
      const titles = (await admin.read(topic)).map((m) => titleOf(m.event));
      for (const t of ['e0', 'e2', 'f0', 'f1'])
        assert.ok(titles.includes(t), `${t} on the broker: ${titles}`);
    } finally {
      await publisher.close();
      await admin.close();
    }
  });

  it('a member commits what it handled before an outage, at the latest when it closes', async () => {
    const prefix = `outage-${randomBytes(3).toString('hex')}.`;
    const { log, lines } = recordingLogger();
    const bus = busOn(brokers, prefix, log);
    const topic = 'outage';
    const group = 'outage-group';
    await bus.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: DAY }]);
    await bus.publisher.publish(
      Array.from({ length: 4 }, (_, i) => ({ topic, key: 'u1', event: taskCreated('u1', `m${i}`) })),
    );
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const got: string[] = [];
    let inHand = false;
    const sub = await bus.subscriber.subscribe({
      group,
      topics: [topic],
      handler: async (m) => {
        if (titleOf(m.event) === 'm4') {
          inHand = true;
          await gate;
        }
        got.push(titleOf(m.event));
      },
    });
    try {
      await waitFor(() => got.length === 4, 30_000, 'm0 to m3');
      await sleep(2_000); // committed
      await bus.publisher.publish([{ topic, key: 'u1', event: taskCreated('u1', 'm4') }]);
      await waitFor(() => inHand, 20_000, 'm4 in hand');
      await kafka('stop', name); // the broker goes while m4 is handled: its commit fails
      open();
      await waitFor(() => got.includes('m4'), 5_000, 'm4 handled');
      await waitFor(
        () => lines.some((l) => /stream ended; reconnecting/.test(l.msg)),
        90_000,
        'the stream ends',
      );
      brokers = (await kafka('start', name)).KAFKA_BROKERS!.split(',');
      await waitFor(() => lines.some((l) => /consumer reconnected/.test(l.msg)), 120_000, 'reconnected');
      await sleep(3_000); // joined again, idle
    } finally {
      open();
      await sub.close();
    }
    const committed = await bus.admin.committedOffsets(group, topic);
    await bus.close();
    assert.deepEqual(got, ['m0', 'm1', 'm2', 'm3', 'm4'], 'each once');
    assert.equal(committed.get(0), 5n, 'the position after m4');
  });
});
