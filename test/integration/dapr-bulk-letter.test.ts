/**
 * A bulk entry whose event is invalid for its traceparent, a value fetch cannot send as a header (a newline),
 * is dead-lettered by the app: the Dapr publisher copied the traceparent into the request's headers, fetch threw
 * every time, and the dead letter was tried for good, holding the partition (a review of the change that has
 * the app write bulk dead letters). A plain HTTP server stands for the sidecar's publish API. And a bulk delivery
 * one of whose entries has a "__proto__" key is answered entry by entry on the process's own HTTP server, whose
 * JSON parser refused the whole body (400): daprd redelivered and then dead-lettered every entry, unhandled.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { it } from 'node:test';
import Fastify from 'fastify';
import { DaprPublisher } from '../../src/bus/dapr/publisher.ts';
import { DaprSubscriber } from '../../src/bus/dapr/subscriber.ts';
import { createHttpServer } from '../../src/http/server.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { Metrics } from '../../src/observability/metrics.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';

it('a bulk entry with a traceparent fetch cannot send is dead-lettered, not held for good', async () => {
  const letters: string[] = [];
  const sidecar = createServer((req, res) => {
    letters.push(req.url ?? '');
    req.resume();
    req.on('end', () => res.writeHead(204).end());
  });
  await new Promise<void>((r) => sidecar.listen(0, '127.0.0.1', r));
  const s = { httpPort: (sidecar.address() as AddressInfo).port, pubsubName: 'pubsub', bulk: false };
  const log = createLogger({ level: 'silent' });
  const app = Fastify();
  const publisher = new DaprPublisher(s, log);
  const subscriber = new DaprSubscriber(s, log, app, publisher);
  await subscriber.subscribe({
    group: 'g',
    topics: ['t'],
    handler: async () => undefined,
    batchHandler: async () => undefined,
    batchIntervalMs: 100,
  });
  const event = {
    specversion: '1.0',
    id: '6b0f4f9e-5d2b-4a53-9a47-0a3b0d3f6a11',
    source: '/x',
    type: 'task.created',
    time: '2026-03-01T12:00:00Z',
    traceparent: '00-bad\nvalue',
    data: {},
  };
  const answer = subscriber.deliverBulk('g', 't', {
    entries: [{ entryId: 'e1', event, metadata: { __key: 'u1', __partition: '0', __offset: '5' } }],
  });
  const outcome = await Promise.race([
    answer,
    new Promise((r) => setTimeout(() => r('still held after 8 s'), 8_000)),
  ]);
  await app.close(); // preClose aborts the dead letter's retries
  await subscriber.close();
  sidecar.close();
  assert.deepEqual(
    outcome,
    [{ entryId: 'e1', status: 'SUCCESS' }],
    `sidecar got ${letters.length} request(s)`,
  );
});

it('a bulk entry a batch cannot take (a newer build type) splits the batch around it, every entry answered', async () => {
  const s = { httpPort: 1, pubsubName: 'pubsub', bulk: false };
  const log = createLogger({ level: 'silent' });
  const app = Fastify();
  const subscriber = new DaprSubscriber(s, log, app, new DaprPublisher(s, log));
  const order: string[] = [];
  const batches: number[] = [];
  const title = (e: { data: unknown }) => (e.data as { task: { title: string } }).task.title;
  await subscriber.subscribe({
    group: 'g',
    topics: ['task-events'],
    handler: async (m) => void order.push(`alone ${title(m.event)}`),
    batchHandler: async (items) => {
      batches.push(items.length);
      for (const { message } of items) order.push(`batch ${title(message.event)}`);
    },
    batchIntervalMs: 100,
  });
  const titles = ['a', 'b', 'newer', 'c', 'd', 'e'];
  const answer = await subscriber.deliverBulk('g', 'task-events', {
    entries: titles.map((t, i) => {
      const event = taskCreated('u1', t);
      return {
        entryId: `e${i}`,
        event: t === 'newer' ? { ...event, type: 'task.archived' } : event,
        metadata: { __key: 'u1', __partition: '0', __offset: String(i) },
      };
    }),
  });
  await app.close();
  await subscriber.close();
  assert.deepEqual(
    answer.map((a) => a.status),
    titles.map(() => 'SUCCESS'),
  );
  assert.deepEqual(batches, [2, 3]);
  assert.deepEqual(order, ['batch a', 'batch b', 'batch c', 'batch d', 'batch e']);
});

it('answers a bulk delivery entry by entry when one entry has a "__proto__" key, on the process\'s server', async () => {
  const log = createLogger({ level: 'silent' });
  const { app } = await createHttpServer({ log, metrics: new Metrics({ defaultMetrics: false }) });
  const s = { httpPort: 1, pubsubName: 'pubsub-kafka', bulk: false };
  const subscriber = new DaprSubscriber(s, log, app, new DaprPublisher(s, log));
  const handled: string[] = [];
  await subscriber.subscribe({
    group: 'taskflow-audit',
    topics: ['task-events'],
    handler: async (m) => void handled.push(titleOf(m.event)),
    batchHandler: async (items) => void handled.push(...items.map((i) => titleOf(i.message.event))),
    batchIntervalMs: 100,
  });
  await app.ready();
  try {
    const entry = (n: number, event: unknown) => ({
      entryId: String(n),
      event,
      contentType: 'application/cloudevents+json',
      metadata: { __key: `u${n}`, __partition: '0', __offset: String(n + 1) },
    });
    // As daprd forwards it (a Go map keeps the key), written by another producer of the topic.
    const body = JSON.stringify({
      id: 'bulk-1',
      topic: 'task-events',
      pubsubname: 'pubsub-kafka',
      type: 'com.dapr.event.sent.bulk',
      entries: [
        entry(0, taskCreated('u0', 'a')),
        entry(1, taskCreated('u1', 'b')),
        entry(2, taskCreated('u2', 'odd')),
      ],
    }).replace('"title":"odd"', '"title":"odd","__proto__":{"x":1}');
    const res = await app.inject({
      method: 'POST',
      url: '/dapr/events/taskflow-audit/task-events',
      headers: { 'content-type': 'application/json' },
      payload: body,
    });
    assert.equal(res.statusCode, 200, res.body);
    const statuses = (res.json() as { statuses: { entryId: string; status: string }[] }).statuses;
    assert.deepEqual(
      statuses.map((x) => x.entryId),
      ['0', '1', '2'],
    );
    assert.deepEqual(handled.slice(0, 2), ['a', 'b']);
    assert.equal(({} as Record<string, unknown>).x, undefined, 'no prototype polluted');
  } finally {
    await app.close();
    await subscriber.close();
  }
});
