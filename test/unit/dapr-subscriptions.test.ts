/** The subscription list daprd reads (GET /dapr/subscribe): a group without dead letters names no topic for them. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { DaprSubscriber } from '../../src/bus/dapr/subscriber.ts';
import { createLogger } from '../../src/observability/logger.ts';

describe('DaprSubscriber.subscriptions', () => {
  it('names the dead-letter topic of a group, and none for a group without dead letters', async () => {
    const app = Fastify();
    const subscriber = new DaprSubscriber(
      { httpPort: 3500, pubsubName: 'pubsub-kafka' },
      createLogger({ level: 'silent' }),
      app,
    );
    const handler = async () => undefined;
    await subscriber.subscribe({ group: 'taskflow-audit', topics: ['task-events'], handler });
    await subscriber.subscribe({
      group: 'taskflow-gateway-pod1',
      topics: ['task-updates'],
      handler,
      deadLetters: false,
    });
    const byTopic = Object.fromEntries(subscriber.subscriptions().map((s) => [s.topic, s]));
    assert.equal(byTopic['task-events']!.deadLetterTopic, 'taskflow-audit.dlq');
    assert.equal('deadLetterTopic' in byTopic['task-updates']!, false);
    await subscriber.close();
    await app.close();
  });
});
