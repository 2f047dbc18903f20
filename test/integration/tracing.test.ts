/**
 * One trace from an API request through the outbox, the relay, the bus and a consumer's handler, into the
 * event that consumer produces (the reminder scheduler's reminder.scheduled) and that event's own consumer;
 * the task.changed written with the request's own event; also for an MCP tool call. Spans are collected with an in-memory exporter (the same SDK that exports over OTLP).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { SpanKind } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-node';
import { pino } from 'pino';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { consumeWithRetry } from '../../src/bus/consumer.ts';
import type { BusMessage, Publisher } from '../../src/bus/types.ts';
import {
  initTracing,
  shutdownTracing,
  withSpan,
  currentTraceparent,
} from '../../src/observability/tracing.ts';
import { childTraceparent } from '../../src/observability/trace.ts';
import { consumerTarget } from '../../src/services/consumer-target.ts';
import { apiTarget } from '../../src/services/api/index.ts';
import { relayTarget } from '../../src/services/relay/index.ts';
import { remindersTarget } from '../../src/services/reminders/index.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { writtenEvents, startApp, waitFor, type TestApp } from '../helpers/app.ts';
import { taskCreated } from '../helpers/events.ts';

const exporter = new InMemorySpanExporter();
const spanIdOf = (traceparent: string | undefined) => traceparent?.split('-')[2];
const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;

describe('tracing across the API, the outbox, the relay, the bus and consumers', () => {
  let db: Db;
  let app: TestApp;
  const updates: BusMessage[] = [];
  const probe = consumerTarget({
    manifest: {
      name: 'trace-probe',
      consumes: { group: 'taskflow-trace-probe', topics: ['task-updates', 'reminders'] },
    },
    async setup() {
      return { handle: async (m) => void updates.push(m) };
    },
  });

  before(async () => {
    assert.equal(await initTracing({ serviceName: 'taskflow-test', exporter, simple: true }), true);
    db = await openDb('memory://');
    await migrate(db);
    app = await startApp(db, { targets: [apiTarget, relayTarget, remindersTarget, probe] });
  });
  after(async () => {
    await app.stop();
    await db.close();
    await shutdownTracing();
  });

  /** Waits for the probe to see a `type` event of `taskId`, then returns the finished spans of its trace. */
  async function traceOf(taskId: string, type: string) {
    const update = await waitFor(
      () => updates.find((m) => m.event.subject === taskId && m.event.type === type),
      10_000,
      `the ${type} at the probe`,
    );
    const traceId = update.event.traceparent!.split('-')[1]!;
    // The probe's span ends after its handler returned.
    const spans = await waitFor(
      () => {
        const all = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
        return (
          all.some(
            (s) =>
              s.kind === SpanKind.CONSUMER &&
              s.attributes['messaging.consumer.group.name'] === 'taskflow-trace-probe' &&
              s.attributes['messaging.message.id'] === update.event.id,
          ) && all
        );
      },
      5_000,
      'the probe span',
    );
    return { traceId, spans, update };
  }

  const one = (spans: ReadableSpan[], pred: (s: ReadableSpan) => boolean, what: string) => {
    const found = spans.filter(pred);
    assert.equal(found.length, 1, `exactly one ${what}: ${found.map((s) => s.name).join(', ')}`);
    return found[0]!;
  };
  /** The PRODUCER span that put the event `eventId` on the bus. */
  const published = (spans: ReadableSpan[], eventId: string, what: string) =>
    one(spans, (s) => s.kind === SpanKind.PRODUCER && s.attributes['messaging.message.id'] === eventId, what);

  it('links request -> outbox event -> relay -> consumer -> produced event -> relay -> consumer', async () => {
    const callerTrace = randomBytes(16).toString('hex');
    const callerSpan = randomBytes(8).toString('hex');
    const created = await app.call(
      'alice',
      'POST',
      '/api/tasks',
      { title: 'traced', due_date: '2099-01-01T09:00:00Z', reminders: ['PT1H'] },
      {
        traceparent: `00-${callerTrace}-${callerSpan}-01`,
      },
    );
    assert.equal(created.status, 201);
    const { traceId, spans, update } = await traceOf(created.body.id, 'reminder.scheduled');
    assert.equal(traceId, callerTrace, 'the caller’s trace continues');

    const server = one(spans, (s) => s.kind === SpanKind.SERVER, 'HTTP server span');
    assert.equal(server.name, 'POST /api/tasks');
    assert.equal(parentOf(server), callerSpan, 'the request span is a child of the caller');
    assert.equal(server.attributes['http.response.status_code'], 201);

    // The outbox event names the request span as its parent.
    const [createdEvent] = (await writtenEvents(db)).filter(
      (e) => e.event_type === 'task.created' && e.event.subject === created.body.id,
    );
    assert.equal(spanIdOf(createdEvent!.event.traceparent), server.spanContext().spanId);

    // The relay publishes it in a PRODUCER span, child of the request span.
    const publishCreated = published(spans, createdEvent!.event.id, 'relay span of task.created');
    assert.equal(publishCreated.name, 'publish task-events');
    assert.equal(parentOf(publishCreated), server.spanContext().spanId);

    // The task.changed written with it is in the request's trace too, and relayed in its own PRODUCER span.
    const [changedEvent] = (await writtenEvents(db)).filter(
      (e) => e.event_type === 'task.changed' && e.event.subject === created.body.id,
    );
    assert.equal(spanIdOf(changedEvent!.event.traceparent), server.spanContext().spanId);
    const publishChange = published(spans, changedEvent!.event.id, 'relay span of task.changed');
    assert.equal(parentOf(publishChange), server.spanContext().spanId);

    // The reminder scheduler handles the task.created in a CONSUMER span, child of the relay span (the bus
    // header), linked to the event.
    const scheduled = one(
      spans,
      (s) =>
        s.kind === SpanKind.CONSUMER &&
        s.attributes['messaging.consumer.group.name'] === 'taskflow-reminders',
      'reminder scheduler span',
    );
    assert.equal(scheduled.name, 'process task-events');
    assert.equal(parentOf(scheduled), publishCreated.spanContext().spanId);
    assert.equal(scheduled.attributes['messaging.message.id'], createdEvent!.event.id);
    assert.equal(scheduled.attributes['taskflow.outcome'], 'handled');
    assert.deepEqual(
      scheduled.links.map((l) => l.context.spanId),
      [server.spanContext().spanId],
    );

    // The event the scheduler produced continues from its handler span...
    assert.equal(spanIdOf(update.event.traceparent), scheduled.spanContext().spanId);
    const publishChanged = published(spans, update.event.id, 'relay span of reminder.scheduled');
    assert.equal(parentOf(publishChanged), scheduled.spanContext().spanId);
    // ...the bus carries the relay span as the transport header...
    assert.equal(spanIdOf(update.headers.traceparent), publishChanged.spanContext().spanId);
    // ...and its consumer's span is a child of that.
    const consumed = one(
      spans,
      (s) =>
        s.kind === SpanKind.CONSUMER &&
        s.attributes['messaging.consumer.group.name'] === 'taskflow-trace-probe' &&
        s.attributes['messaging.message.id'] === update.event.id,
      'probe span',
    );
    assert.equal(consumed.name, 'process reminders');
    assert.equal(parentOf(consumed), publishChanged.spanContext().spanId);
    assert.ok(spans.every((s) => s.spanContext().traceId === callerTrace));
  });

  it('starts a new trace for a request without traceparent, and traces MCP tool calls', async () => {
    const client = new Client({ name: 'trace-test', version: '1.0.0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${await app.token('dora')}` } },
      }),
    );
    try {
      const result = (await client.callTool({ name: 'add_task', arguments: { title: 'via mcp' } })) as {
        structuredContent?: any;
      };
      const { spans } = await traceOf(result.structuredContent.task_id, 'task.changed');
      const server = one(spans, (s) => s.kind === SpanKind.SERVER, 'HTTP server span');
      assert.equal(server.name, 'POST /mcp');
      assert.equal(parentOf(server), undefined, 'a new trace: the request span is the root');
      const tool = one(spans, (s) => s.name === 'mcp tools/call add_task', 'MCP tool span');
      assert.equal(parentOf(tool), server.spanContext().spanId);
      const [event] = (await writtenEvents(db)).filter(
        (e) => e.event_type === 'task.created' && e.event.subject === result.structuredContent.task_id,
      );
      assert.equal(spanIdOf(event!.event.traceparent), tool.spanContext().spanId);
      const publish = published(spans, event!.event.id, 'relay span');
      assert.equal(parentOf(publish), tool.spanContext().spanId);
    } finally {
      await client.close();
    }
  });

  it('childTraceparent() and currentTraceparent() follow the active span', async () => {
    assert.equal(currentTraceparent(), undefined, 'no active span outside an operation');
    await withSpan('outer', {}, async (span) => {
      const tp = currentTraceparent()!;
      assert.equal(spanIdOf(tp), span.spanContext().spanId);
      assert.equal(childTraceparent(), tp);
      assert.equal(childTraceparent(`00-${span.spanContext().traceId}-${'1'.repeat(16)}-01`), tp);
      // A parent of another trace is continued as before (new span id in that trace).
      const other = `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`;
      assert.match(childTraceparent(other), new RegExp(`^00-${'a'.repeat(32)}-[0-9a-f]{16}-01$`));
    });
  });

  it('logs handler failures with trace_id and event_id, and dead letters carry the trace', async () => {
    const lines: Record<string, unknown>[] = [];
    const log = pino(
      { level: 'debug' },
      new Writable({
        write(chunk, _enc, cb) {
          lines.push(JSON.parse(String(chunk)));
          cb();
        },
      }),
    );
    const event = taskCreated('erin', 'fails');
    event.traceparent = `00-${'c'.repeat(32)}-${'d'.repeat(16)}-01`;
    const published: { headers?: Record<string, string> }[] = [];
    const publisher: Publisher = {
      publish: async (msgs) => void published.push(...msgs),
      close: async () => undefined,
    };
    const outcome = await consumeWithRetry(
      { topic: 'task-events', partition: 0, offset: '7', key: 'erin', headers: {}, event, timestamp: '' },
      async () => {
        throw new Error('boom');
      },
      { group: 'g', policy: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 1 }, publisher, log },
    );
    assert.equal(outcome, 'dead-lettered');
    const failures = lines.filter((l) => /retrying|dead-lettering/.test(String(l.msg)));
    assert.equal(failures.length, 2);
    for (const l of failures) {
      assert.equal(l.trace_id, 'c'.repeat(32));
      assert.equal(l.event_id, event.id);
    }
    const span = exporter
      .getFinishedSpans()
      .find((s) => s.kind === SpanKind.CONSUMER && s.attributes['messaging.consumer.group.name'] === 'g')!;
    assert.equal(span.spanContext().traceId, 'c'.repeat(32));
    assert.equal(span.events.filter((e) => e.name === 'retry').length, 1);
    assert.equal(spanIdOf(published[0]!.headers!.traceparent), span.spanContext().spanId);
  });
});
