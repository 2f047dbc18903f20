/**
 * The consumer middlewares composed as the transports compose them (bus/consumer.ts for Kafka and the
 * embedded bus, the Dapr chain up to its outcome): what reaches the handler, how often, and how a delivery
 * ends. The transports themselves are covered on real brokers by test/integration/bus-contract.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { consumeWithRetry, consumer, type ConsumeContext } from '../../src/bus/consumer.ts';
import {
  Aborted,
  compose,
  deadLettered,
  DLQ_HEADERS,
  handlerOf,
  newDelivery,
  retried,
  validated,
} from '../../src/bus/middleware.ts';
import {
  PermanentError,
  UNDECODABLE_EVENT_TYPE,
  type BusMessage,
  type OutgoingMessage,
} from '../../src/bus/types.ts';
import { pino } from 'pino';
import { createLogger } from '../../src/observability/logger.ts';
import { Metrics } from '../../src/observability/metrics.ts';
import { taskCreated } from '../helpers/events.ts';

const log = createLogger({ level: 'silent' });
const message = (event = taskCreated('ada', 'write tests')): BusMessage => ({
  topic: 'task-events',
  partition: 1,
  offset: '41',
  key: 'ada',
  headers: {},
  event,
  timestamp: new Date().toISOString(),
});
const refused = (code: string) => Object.assign(new Error('connect ECONNREFUSED'), { code });

function context(over: Partial<ConsumeContext> = {}) {
  const letters: OutgoingMessage[] = [];
  const seen = { retries: [] as number[], handled: 0, deadLetters: [] as string[] };
  const ctx: ConsumeContext = {
    group: 'g',
    policy: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 2 },
    publisher: { publish: async (m) => void letters.push(...m), close: async () => undefined },
    log,
    hooks: {
      onRetry: (_m, attempt) => seen.retries.push(attempt),
      onHandled: () => seen.handled++,
      onDeadLetter: (_m, error) => seen.deadLetters.push(error),
    },
    ...over,
  };
  return { ctx, letters, seen };
}

describe('consumer pipeline (Kafka and embedded chain)', () => {
  it('retries a failing handler and reports each retry, then the success', async () => {
    const { ctx, letters, seen } = context();
    let calls = 0;
    const outcome = await consumeWithRetry(
      message(),
      async () => {
        if (++calls < 3) throw new Error('flaky');
      },
      ctx,
    );
    assert.equal(outcome, 'handled');
    assert.equal(calls, 3);
    assert.deepEqual(seen.retries, [1, 2]);
    assert.equal(seen.handled, 1);
    assert.equal(letters.length, 0);
  });

  it('dead-letters after maxAttempts with the failure headers', async () => {
    const { ctx, letters, seen } = context();
    let calls = 0;
    const m = message();
    const outcome = await consumeWithRetry(
      m,
      async () => {
        calls++;
        throw new Error('always');
      },
      ctx,
    );
    assert.equal(outcome, 'dead-lettered');
    assert.equal(calls, 3);
    assert.equal(letters.length, 1);
    const letter = letters[0]!;
    assert.equal(letter.topic, 'g.dlq');
    assert.equal(letter.key, 'ada');
    assert.equal(letter.event.id, m.event.id);
    assert.equal(letter.headers?.[DLQ_HEADERS.attempts], '3');
    assert.equal(letter.headers?.[DLQ_HEADERS.error], 'Error: always');
    assert.equal(letter.headers?.[DLQ_HEADERS.sourceOffset], '41');
    assert.equal(letter.headers?.[DLQ_HEADERS.sourcePartition], '1');
    assert.deepEqual(seen.deadLetters, ['Error: always']);
    assert.equal(seen.handled, 0);
  });

  it('drops what it would dead-letter for a group without dead letters (the gateway), writing nothing', async () => {
    const { ctx, letters, seen } = context();
    const invalid = message(taskCreated('ada', 'x'));
    (invalid.event.data as { task: { status: string } }).task.status = 'archived';
    const failing = async () => {
      throw new PermanentError('never works');
    };
    const lines: string[] = [];
    const captured = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
    assert.equal(
      await consumer(
        { handler: failing, deadLetters: false },
        { ...ctx, log: captured },
      )([invalid, message()]),
      2,
    );
    assert.deepEqual(letters, []);
    // Not counted as dead letters (the dead-letters alert's runbook lists them: none there).
    assert.deepEqual(seen.deadLetters, []);
    // Said once, as what happened: not "dead-lettering" and then "dropped".
    assert.deepEqual(
      lines.map((l) => (JSON.parse(l) as { msg: string }).msg),
      [
        'invalid event, dropped: this group keeps no dead-letter topic',
        'permanent failure, dropped: this group keeps no dead-letter topic',
      ],
    );
    assert.equal(await consumer({ handler: failing }, ctx)([invalid]), 1);
    assert.equal(letters.length, 1, 'others keep their dead-letter topic');
  });

  it('dead-letters bytes that were no event with the reason they were not', async () => {
    const { ctx, letters } = context();
    const bytes = message({
      ...taskCreated('ada', 'x'),
      type: UNDECODABLE_EVENT_TYPE,
      data: { raw: '{"hello":"world"}', error: 'not a CloudEvent: no id or type' } as never,
    });
    assert.equal(await consumeWithRetry(bytes, async () => undefined, ctx), 'dead-lettered');
    assert.equal(
      letters[0]?.headers?.[DLQ_HEADERS.error],
      'invalid event: not an event (not a CloudEvent: no id or type)',
    );
  });

  it('dead-letters an invalid event and a PermanentError at once, the invalid one without calling the handler', async () => {
    const { ctx, letters } = context();
    let calls = 0;
    const invalid = message(taskCreated('ada', 'x'));
    (invalid.event.data as { task: { status: string } }).task.status = 'archived';
    assert.equal(await consumeWithRetry(invalid, async () => void calls++, ctx), 'dead-lettered');
    assert.equal(calls, 0);
    assert.match(letters[0]!.headers![DLQ_HEADERS.error]!, /^invalid event: /);
    assert.equal(letters[0]!.headers![DLQ_HEADERS.attempts], '0');
    assert.equal(
      await consumeWithRetry(
        message(),
        async () => {
          calls++;
          throw new PermanentError('cannot ever');
        },
        ctx,
      ),
      'dead-lettered',
    );
    assert.equal(calls, 1);
    assert.equal(letters[1]!.headers![DLQ_HEADERS.attempts], '1');
  });

  it('passes by an event of a type this build does not know (a newer build writes it), logged once per type and counted', async () => {
    // ADR 0012: a breaking change is a new type, and targets upgrade in any order. Consumers of the old build
    // dead-lettered every event of it ("invalid event: unknown event type task.archived").
    const lines: string[] = [];
    const metrics = new Metrics({ defaultMetrics: false });
    const { ctx, letters } = context({
      log: pino({ level: 'info' }, { write: (line: string) => void lines.push(line) }),
      hooks: metrics.consumerHooks('g'),
    });
    let calls = 0;
    const newer = (title: string) =>
      message({
        ...taskCreated('ada', title),
        type: 'task.archived',
        dataschema: 'urn:taskflow:schema:task.archived:v1',
      });
    for (const title of ['a', 'b', 'c'])
      assert.equal(await consumeWithRetry(newer(title), async () => void calls++, ctx), 'handled');
    assert.equal(calls, 0, 'the handler does not see it');
    assert.equal(letters.length, 0, 'nothing dead-lettered');
    const logged = lines.filter((l) => l.includes('task.archived'));
    assert.equal(logged.length, 1, `logged once for the type: ${lines.join('')}`);
    assert.equal((JSON.parse(logged[0]!) as { level: number }).level, 30, 'at info');
    assert.match(
      await metrics.exposition(),
      /^taskflow_events_consumed_total\{group="g",topic="task-events",type="unknown",outcome="passed_by"\} 3$/m,
    );
    // A known type that breaks its schema is still dead-lettered.
    const broken = message(taskCreated('ada', 'x'));
    (broken.event.data as { task: { status: string } }).task.status = 'archived';
    assert.equal(await consumeWithRetry(broken, async () => void calls++, ctx), 'dead-lettered');
    assert.match(letters[0]!.headers![DLQ_HEADERS.error]!, /^invalid event: \/data\/task\/status/);
  });

  it('a message a batch cannot take splits the batch around it, in order (it sent the whole run one by one)', async () => {
    const { ctx, letters } = context();
    const order: string[] = [];
    const batches: number[] = [];
    const titled = (title: string, type = 'task.created') =>
      message({ ...taskCreated('ada', title), type, dataschema: `urn:taskflow:schema:${type}:v1` });
    const broken = titled('x');
    (broken.event.data as { task: { status: string } }).task.status = 'archived';
    const run = [
      titled('a'),
      titled('b'),
      titled('newer', 'task.archived'), // passed by
      titled('c'),
      titled('d'),
      broken, // dead-lettered
      titled('e'), // alone: a run of one
    ];
    const done = await consumer(
      {
        handler: async (m) =>
          void order.push(`alone ${(m.event.data as { task: { title: string } }).task.title}`),
        batchHandler: async (items) => {
          batches.push(items.length);
          for (const { message: m } of items)
            order.push(`batch ${(m.event.data as { task: { title: string } }).task.title}`);
        },
      },
      ctx,
    )(run);
    assert.equal(done, run.length);
    assert.deepEqual(batches, [2, 2]);
    assert.deepEqual(order, ['batch a', 'batch b', 'batch c', 'batch d', 'alone e']);
    assert.equal(letters.length, 1, 'the broken one dead-lettered');
  });

  it('keeps retrying past maxAttempts while a dependency is unavailable', async () => {
    const { ctx, letters } = context();
    let calls = 0;
    const outcome = await consumeWithRetry(
      message(),
      async () => {
        if (++calls < 7) throw refused('ECONNREFUSED');
      },
      ctx,
    );
    assert.equal(outcome, 'handled');
    assert.equal(calls, 7);
    assert.equal(letters.length, 0);
  });

  it('ends as aborted, publishing nothing, when shutdown interrupts the backoff', async () => {
    const stop = new AbortController();
    const { ctx, letters } = context({
      signal: stop.signal,
      policy: { maxAttempts: 5, baseDelayMs: 60_000, maxDelayMs: 60_000 },
    });
    const outcome = consumeWithRetry(
      message(),
      async () => {
        setImmediate(() => stop.abort());
        throw new Error('slow down');
      },
      ctx,
    );
    assert.equal(await outcome, 'aborted');
    assert.equal(letters.length, 0);
  });
});

describe('consumer pipeline (the Dapr chain: up to the outcome)', () => {
  // As dapr/subscriber.ts composes it: poison is only what no redelivery can fix; other failures go up (RETRY).
  const chain = (handler: (m: BusMessage) => Promise<void>) =>
    compose(
      handlerOf(handler),
      deadLettered({ log, isPoison: (err) => err instanceof PermanentError }),
      validated({ log }),
      retried({ policy: { maxAttempts: 0, baseDelayMs: 1, maxDelayMs: 1 }, shouldRetry: () => false, log }),
    );

  it('marks a PermanentError dead-lettered without sending anything itself (daprd does, on DROP)', async () => {
    const d = newDelivery(message(), 'g');
    await chain(async () => {
      throw new PermanentError('no');
    })(d);
    assert.equal(d.deadLettered, 'PermanentError: no');
  });

  it('lets a transient failure go up, for daprd to redeliver', async () => {
    const d = newDelivery(message(), 'g');
    await assert.rejects(
      chain(async () => {
        throw new Error('later');
      })(d),
      /later/,
    );
    assert.equal(d.deadLettered, undefined);
    assert.equal(d.attempts, 1);
  });

  it('an abort is never taken for poison', async () => {
    const d = newDelivery(message(), 'g');
    await assert.rejects(
      chain(async () => {
        throw new Aborted();
      })(d),
      Aborted,
    );
    assert.equal(d.deadLettered, undefined);
  });
});
