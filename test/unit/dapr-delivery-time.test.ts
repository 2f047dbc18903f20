/**
 * The time a Dapr delivery was on the bus comes from daprd's `__timestamp` (the Kafka record's time). Without one,
 * or with one that is not a time, the message's timestamp is empty and the consume latency is not observed: it was
 * the handling's own time (a latency of 0 in `taskflow_event_consume_latency_seconds`), and a `__timestamp` that is not
 * a number threw a RangeError for every delivery of the partition.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import Fastify from 'fastify';
import { DaprPublisher } from '../../src/bus/dapr/publisher.ts';
import { DaprSubscriber } from '../../src/bus/dapr/subscriber.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { Metrics } from '../../src/observability/metrics.ts';
import { taskCreated } from '../helpers/events.ts';

const event = (title: string) => taskCreated('u1', title);

it("takes a delivery's time from __timestamp, and leaves it empty (no latency observed) without a time", async () => {
  const s = { httpPort: 1, pubsubName: 'pubsub', bulk: false };
  const log = createLogger({ level: 'silent' });
  const app = Fastify();
  const subscriber = new DaprSubscriber(s, log, app, new DaprPublisher(s, log));
  const metrics = new Metrics({ defaultMetrics: false });
  const seen: string[] = [];
  await subscriber.subscribe({
    group: 'g',
    topics: ['t'],
    handler: async (m) => void seen.push(m.timestamp),
    hooks: metrics.consumerHooks('g'),
  });
  try {
    const at = Date.parse('2026-03-01T12:00:05Z');
    const headers = (more: Record<string, string>) => ({ __key: 'u1', __partition: '0', ...more });
    assert.equal(
      await subscriber.deliver('g', 't', event('a1'), headers({ __offset: '1', __timestamp: String(at) })),
      'SUCCESS',
    );
    assert.equal(await subscriber.deliver('g', 't', event('a2'), headers({ __offset: '2' })), 'SUCCESS');
    assert.equal(
      await subscriber.deliver('g', 't', event('a3'), headers({ __offset: '3', __timestamp: 'soon' })),
      'SUCCESS',
    );
    assert.deepEqual(seen, ['2026-03-01T12:00:05.000Z', '', '']);
    assert.match(
      await metrics.exposition(),
      /^taskflow_event_consume_latency_seconds_count\{group="g"\} 1$/m,
    );
  } finally {
    await app.close();
    await subscriber.close();
  }
});
