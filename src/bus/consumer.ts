/**
 * Transport-independent consumer semantics (docs/architecture.md section 4): validate the event, call the handler,
 * retry transient failures with exponential backoff and full jitter, and after `maxAttempts` (or at once for
 * an invalid event / PermanentError) publish it to the group's dead-letter topic with failure headers. The
 * caller commits the position only after this resolves, so nothing is skipped silently.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { dlqTopic } from '../contracts/topics.ts';
import { eventProblems } from '../contracts/schemas.ts';
import type { Logger } from '../observability/logger.ts';
import {
  SpanKind,
  SpanStatusCode,
  currentTraceparent,
  startSpan,
  traceparentOf,
  withSpan,
  type SpanOptions,
} from '../observability/tracing.ts';
import type { Span } from '@opentelemetry/api';
import {
  PermanentError,
  type BatchHandler,
  type ConsumeHooks,
  type BusMessage,
  type MessageHandler,
  type Publisher,
} from './types.ts';
import { errorText } from '../error-text.ts';
import { backoffDelay, type RetryPolicy } from '../retry.ts';

/**
 * Subscribers commit a partition's position at most this often while it is busy, and within this interval
 * once it is idle (and at once on a clean stop); not per message or per batch, which at moderate rates costs
 * a broker or database round trip per event. After a crash, at most the handled but uncommitted messages of
 * this interval are redelivered: handlers are idempotent.
 */
export const COMMIT_INTERVAL_MS = 1_000;

/** Most messages handed to a `batchHandler` at once, unless the subscription says otherwise. */
export const DEFAULT_MAX_BATCH = 100;

const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  '57P01', // admin_shutdown: the server is restarting
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: starting up or in recovery
  '53300', // too_many_connections
]);

/**
 * Whether an error says a dependency is unreachable (the database or the network) rather than that the
 * message cannot be handled: a socket error, a PostgreSQL connection-class SQLSTATE (08xxx, shutdown,
 * recovery) or the `pg` driver's own connection errors. Follows `cause` chains.
 */
export function isUnavailable(err: unknown, depth = 0): boolean {
  if (!err || typeof err !== 'object' || depth > 5) return false;
  const { code, message, cause } = err as { code?: unknown; message?: unknown; cause?: unknown };
  // Class 08 is connection trouble, except 08P01 (protocol_violation), which a statement can cause every time.
  if (
    typeof code === 'string' &&
    (UNAVAILABLE_CODES.has(code) || (/^08[0-9A-Z]{3}$/.test(code) && code !== '08P01'))
  )
    return true;
  if (
    typeof message === 'string' &&
    /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error)/.test(
      message,
    )
  )
    return true;
  return isUnavailable(cause, depth + 1);
}

export const DLQ_HEADERS = {
  error: 'x-dlq-error',
  attempts: 'x-dlq-attempts',
  firstFailure: 'x-dlq-first-failure',
  lastFailure: 'x-dlq-last-failure',
  sourceTopic: 'x-dlq-source-topic',
  sourcePartition: 'x-dlq-source-partition',
  sourceOffset: 'x-dlq-source-offset',
  group: 'x-dlq-group',
} as const;

export type { ConsumeHooks };

export interface ConsumeContext {
  group: string;
  policy: RetryPolicy;
  /** Publishes dead letters; the same transport as the source. */
  publisher: Publisher;
  log: Logger;
  /** Aborted on shutdown: pending retries stop and the message stays uncommitted (redelivered later). */
  signal?: AbortSignal;
  hooks?: ConsumeHooks;
}

export type ConsumeOutcome = 'handled' | 'dead-lettered' | 'aborted';

/** The CONSUMER span options of a message: parent the transport header, else the event's traceparent. */
function consumerSpanOptions(message: BusMessage, group: string): SpanOptions {
  const headerParent = message.headers?.traceparent;
  const eventParent = message.event?.traceparent;
  return {
    kind: SpanKind.CONSUMER,
    parent: headerParent ?? eventParent,
    ...(headerParent && eventParent && headerParent !== eventParent ? { links: [eventParent] } : {}),
    attributes: {
      'messaging.operation.type': 'process',
      'messaging.destination.name': message.topic,
      'messaging.destination.partition.id': String(message.partition),
      'messaging.consumer.group.name': group,
      'messaging.message.id': String(message.event?.id ?? ''),
      'taskflow.bus.offset': message.offset,
      'cloudevents.event_type': String(message.event?.type ?? ''),
    },
  };
}

/**
 * Handles consecutive messages of one partition in order and resolves how many of them are done (handled
 * or dead-lettered): all of them unless shutdown aborted the run. With a `batchHandler` and more than one
 * valid message, the whole run goes to it at once (one CONSUMER span per message, each handed to it); if
 * that throws, nothing of it took effect and every message is handled alone by `handler`, with retries
 * and dead-lettering, so one poison message costs its neighbours only a second try.
 */
export async function consumeRun(
  messages: readonly BusMessage[],
  handlers: { handler: MessageHandler; batchHandler?: BatchHandler | undefined },
  ctx: ConsumeContext,
): Promise<number> {
  const { batchHandler } = handlers;
  if (
    batchHandler &&
    messages.length > 1 &&
    !ctx.signal?.aborted &&
    messages.every((m) => eventProblems(m.event).length === 0)
  ) {
    const spans = messages.map((m) => startSpan(`process ${m.topic}`, consumerSpanOptions(m, ctx.group)));
    const started = performance.now();
    let failure: unknown = null;
    try {
      await batchHandler(messages.map((message, i) => ({ message, traceparent: traceparentOf(spans[i]) })));
    } catch (err) {
      failure = err ?? new Error('batch handler failed');
    }
    if (failure === null) {
      const each = (performance.now() - started) / messages.length;
      messages.forEach((m, i) => {
        spans[i]?.setAttribute('taskflow.outcome', 'handled');
        spans[i]?.setAttribute('taskflow.batch_size', messages.length);
        spans[i]?.end();
        ctx.hooks?.onHandled?.(m, each);
      });
      return messages.length;
    }
    for (const span of spans) {
      span?.addEvent('batch failed; handled alone', { error: errorText(failure).slice(0, 500) });
      span?.end();
    }
    ctx.log.warn(
      { group: ctx.group, err: errorText(failure), messages: messages.length },
      'batch handler failed; handling its messages one by one',
    );
  }
  for (let i = 0; i < messages.length; i++) {
    if ((await consumeWithRetry(messages[i]!, handlers.handler, ctx)) === 'aborted') return i;
  }
  return messages.length;
}

/**
 * Handles one message (validation, retries, dead-lettering) inside a CONSUMER span whose parent is the
 * transport's `traceparent` header (the relay's publish span) or else the event's own `traceparent`; the
 * handler runs with that span active, so events it produces continue the trace (tracing.ts).
 */
export async function consumeWithRetry(
  message: BusMessage,
  handler: MessageHandler,
  ctx: ConsumeContext,
): Promise<ConsumeOutcome> {
  return withSpan(`process ${message.topic}`, consumerSpanOptions(message, ctx.group), async (span) => {
    const outcome = await consume(message, handler, ctx, span);
    span.setAttribute('taskflow.outcome', outcome);
    if (outcome === 'dead-lettered') span.setStatus({ code: SpanStatusCode.ERROR, message: 'dead-lettered' });
    return outcome;
  });
}

async function consume(
  message: BusMessage,
  handler: MessageHandler,
  ctx: ConsumeContext,
  span: Span,
): Promise<ConsumeOutcome> {
  // Built only when something is logged: the happy path logs nothing.
  const log = () =>
    ctx.log.child({
      group: ctx.group,
      topic: message.topic,
      partition: message.partition,
      offset: message.offset,
      event_id: message.event?.id,
      event_type: message.event?.type,
      trace_id: message.event?.traceparent?.split('-')[1],
    });
  const problems = eventProblems(message.event);
  const first = new Date().toISOString();
  if (problems.length) {
    const error = `invalid event: ${problems.join('; ')}`;
    log().warn({ error }, 'invalid event, dead-lettering');
    return deadLetter(message, ctx, error, 0, first);
  }
  for (let attempt = 1; ; attempt++) {
    if (ctx.signal?.aborted) return 'aborted';
    const started = performance.now();
    try {
      await handler(message);
      ctx.hooks?.onHandled?.(message, performance.now() - started);
      return 'handled';
    } catch (err) {
      const permanent = err instanceof PermanentError;
      // A dependency outage (the database restarting) is no fault of the message: keep retrying, which
      // pauses this partition, rather than dead-letter everything that arrives during the outage.
      if (permanent || (attempt >= ctx.policy.maxAttempts && !isUnavailable(err))) {
        log().error(
          { err, attempt },
          permanent ? 'permanent failure, dead-lettering' : 'retries exhausted, dead-lettering',
        );
        return deadLetter(message, ctx, errorText(err), attempt, first);
      }
      ctx.hooks?.onRetry?.(message, attempt, err);
      span.addEvent('retry', { attempt, error: errorText(err).slice(0, 500) });
      const delay = backoffDelay(attempt, ctx.policy);
      log().warn({ err: errorText(err), attempt, retry_in_ms: delay }, 'handler failed, retrying');
      try {
        await sleep(delay, undefined, ctx.signal ? { signal: ctx.signal } : undefined);
      } catch {
        return 'aborted';
      }
    }
  }
}

async function deadLetter(
  message: BusMessage,
  ctx: ConsumeContext,
  error: string,
  attempts: number,
  firstFailure: string,
): Promise<ConsumeOutcome> {
  const headers: Record<string, string> = {
    [DLQ_HEADERS.error]: error.slice(0, 4000),
    [DLQ_HEADERS.attempts]: String(attempts),
    [DLQ_HEADERS.firstFailure]: firstFailure,
    [DLQ_HEADERS.lastFailure]: new Date().toISOString(),
    [DLQ_HEADERS.sourceTopic]: message.topic,
    [DLQ_HEADERS.sourcePartition]: String(message.partition),
    [DLQ_HEADERS.sourceOffset]: message.offset,
    [DLQ_HEADERS.group]: ctx.group,
  };
  const traceparent = currentTraceparent(); // the consumer span: the dead letter continues its trace
  if (traceparent) headers.traceparent = traceparent;
  // The dead letter must be durable before the source position moves on: keep trying until it is.
  for (let attempt = 1; ; attempt++) {
    try {
      await ctx.publisher.publish([
        { topic: dlqTopic(ctx.group), key: message.key, event: message.event, headers },
      ]);
      ctx.hooks?.onDeadLetter?.(message, error);
      return 'dead-lettered';
    } catch (err) {
      if (ctx.signal?.aborted) return 'aborted';
      ctx.log.error({ err: errorText(err), attempt }, 'could not publish dead letter, retrying');
      try {
        await sleep(
          backoffDelay(attempt, ctx.policy),
          undefined,
          ctx.signal ? { signal: ctx.signal } : undefined,
        );
      } catch {
        return 'aborted';
      }
    }
  }
}
