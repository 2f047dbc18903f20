/**
 * The consumer rules as a pipeline of middlewares (as Watermill's router middleware): a `Handle` takes one
 * delivery of a message, a `Middleware` wraps one. Each transport composes the chain it needs: Kafka and the
 * embedded bus the whole of it (consumer.ts), Dapr the chain up to the outcome it answers daprd with
 * (dapr/subscriber.ts). The rules themselves are written once, here.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { dlqTopic } from '../contracts/topics.ts';
import { eventProblems, isEventType } from '../contracts/schemas.ts';
import type { Logger } from '../observability/logger.ts';
import { traceIdOf } from '../observability/trace.ts';
import {
  SpanKind,
  SpanStatusCode,
  addSpanEvent,
  currentTraceparent,
  recordError,
  withSpan,
  type SpanOptions,
} from '../observability/tracing.ts';
import {
  PermanentError,
  UNDECODABLE_EVENT_TYPE,
  type BusMessage,
  type ConsumeHooks,
  type Publisher,
} from './types.ts';
import { errorText, headerText } from '../error-text.ts';
import { backoffDelay, isUnavailable, type RetryPolicy } from '../retry.ts';

/** One delivery of a message to a group, as it passes down the pipeline. */
export interface Delivery {
  readonly message: BusMessage;
  readonly group: string;
  /** When handling began: the dead letter's first-failure header. */
  readonly startedAt: string;
  /** Attempts that failed so far (`retried` counts them). */
  attempts: number;
  /** Set by `deadLettered`: why the message went (or, on Dapr, goes) to the dead-letter topic. */
  deadLettered?: string;
  /** Set by `validated`: why the message was passed by, as done, without reaching the handler. */
  passedBy?: string;
}

export type Handle = (delivery: Delivery) => Promise<void>;
export type Middleware = (next: Handle) => Handle;

export const newDelivery = (message: BusMessage, group: string): Delivery => ({
  message,
  group,
  startedAt: new Date().toISOString(),
  attempts: 0,
});

/** `handle` wrapped in `middlewares`, the first one outermost. */
export const compose = (handle: Handle, ...middlewares: readonly Middleware[]): Handle =>
  middlewares.reduceRight((next, middleware) => middleware(next), handle);

/**
 * The header a dead letter's replay carries (`taskflow dlq replay`): the group it is for. The event goes back
 * to its source topic, so every group reads it again; the others pass it by here, without relying on their
 * dedupe ledgers still remembering it (a dead letter can outlive them).
 */
export const REPLAY_FOR_HEADER = 'taskflow-replay-for';

/** Whether `message` is a replay for another group than `group`. */
export const replayedForAnother = (message: BusMessage, group: string): boolean => {
  const target = message.headers[REPLAY_FOR_HEADER];
  return target !== undefined && target !== group;
};

/** Passes by, as done, a replay meant for another group (outermost: nothing is measured or traced). */
export const forThisGroup: Middleware = (next) => (d) =>
  replayedForAnother(d.message, d.group) ? Promise.resolve() : next(d);

/** The terminal Handle: the target's handler, which sees only the message. */
export const handlerOf =
  (handler: (message: BusMessage) => Promise<void>): Handle =>
  (d) =>
    handler(d.message);

/** Thrown down the pipeline when shutdown stops a delivery: nothing is decided, the message stays uncommitted. */
export class Aborted extends Error {
  constructor() {
    super('aborted by shutdown');
    this.name = 'Aborted';
  }
}

/** An event that breaks its schema: dead-lettered at once, without reaching the handler. */
export class InvalidEvent extends PermanentError {
  constructor(problems: readonly string[]) {
    super(`invalid event: ${problems.join('; ')}`);
    this.name = 'InvalidEvent';
  }
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

/** The delivery's logger; build it only when something is logged: the happy path logs nothing. */
export const logOf = (log: Logger, d: Delivery): Logger =>
  log.child({
    group: d.group,
    topic: d.message.topic,
    partition: d.message.partition,
    offset: d.message.offset,
    event_id: d.message.event?.id,
    event_type: d.message.event?.type,
    // The event's own attribute, whatever a producer put there: only a well-formed one names a trace.
    trace_id: traceIdOf(
      typeof d.message.event?.traceparent === 'string' ? d.message.event.traceparent : undefined,
    ),
  });

/** The CONSUMER span options of a message: parent the transport header, else the event's traceparent. */
export function consumerSpanOptions(message: BusMessage, group: string): SpanOptions {
  // Strings only: an event is data from the bus, and a parent that is not one was taken for a context.
  const stringOr = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const headerParent = stringOr(message.headers?.traceparent);
  const eventParent = stringOr(message.event?.traceparent);
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
 * Runs the rest in a CONSUMER span whose parent is the transport's `traceparent` header (the relay's
 * publish span) or else the event's own; events the handler produces continue the trace (tracing.ts). The
 * span's `taskflow.outcome` says how the delivery ended: handled, dead-lettered, aborted or failed.
 */
export const traced: Middleware = (next) => async (d) => {
  const failure = await withSpan(
    `process ${d.message.topic}`,
    consumerSpanOptions(d.message, d.group),
    async (span) => {
      try {
        await next(d);
      } catch (err) {
        span.setAttribute('taskflow.outcome', err instanceof Aborted ? 'aborted' : 'failed');
        if (!(err instanceof Aborted)) recordError(span, err);
        return { err };
      }
      span.setAttribute(
        'taskflow.outcome',
        d.deadLettered !== undefined ? 'dead-lettered' : d.passedBy !== undefined ? 'passed-by' : 'handled',
      );
      if (d.deadLettered !== undefined)
        span.setStatus({ code: SpanStatusCode.ERROR, message: 'dead-lettered' });
      return undefined;
    },
  );
  if (failure) throw failure.err;
};

/** Event types passed by and logged so far (logged once each; bounded: any writer of a topic can make them up). */
const passedByTypes = new Set<string>();
const MAX_PASSED_BY_TYPES_LOGGED = 100;

/**
 * Refuses an event that breaks its schema (InvalidEvent) before anything else sees it, and passes by, as
 * done, an event of a type this build does not know: a newer build's (ADR 0012: a breaking change is a new
 * type, and targets upgrade in any order), which no handler of this one would act on. It was dead-lettered,
 * by every consumer of the topic that was not upgraded yet. Logged once per type, counted (`onPassedBy`).
 */
export const validated =
  (opts: { log: Logger; hooks?: ConsumeHooks | undefined }): Middleware =>
  (next) =>
  (d) => {
    const { event } = d.message;
    // Bytes that were no event: the reason they were not, rather than "unknown event type".
    if (event.type === UNDECODABLE_EVENT_TYPE)
      return Promise.reject(
        new InvalidEvent([`not an event (${(event.data as { error?: string }).error ?? 'undecodable'})`]),
      );
    if (typeof event.type === 'string' && event.type !== '' && !isEventType(event.type)) {
      d.passedBy = `unknown event type ${event.type}`;
      opts.hooks?.onPassedBy?.(d.message);
      if (!passedByTypes.has(event.type) && passedByTypes.size < MAX_PASSED_BY_TYPES_LOGGED) {
        passedByTypes.add(event.type);
        logOf(opts.log, d).info(
          'an event of a type this build does not know (a newer build writes it): passed by, as will be the others of the type',
        );
      }
      return Promise.resolve();
    }
    const problems = eventProblems(event);
    return problems.length ? Promise.reject(new InvalidEvent(problems)) : next(d);
  };

/** Tells `onHandled` how long a successful handling took. */
export const measured =
  (hooks: ConsumeHooks | undefined): Middleware =>
  (next) => {
    const onHandled = hooks?.onHandled;
    if (!onHandled) return next;
    return async (d) => {
      const started = performance.now();
      await next(d);
      onHandled(d.message, performance.now() - started);
    };
  };

/** Waits `ms`; an abort throws Aborted. */
async function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(ms, undefined, signal ? { signal } : undefined);
  } catch {
    throw new Aborted();
  }
}

export interface RetryOptions {
  policy: RetryPolicy;
  /** Shutdown: the wait ends and the delivery is Aborted (checked before every attempt too). */
  signal?: AbortSignal | undefined;
  /** False once the partition is another member's: the delivery is Aborted before its next attempt. */
  stillOwned?: (() => boolean) | undefined;
  /** Whether failed attempt number `attempt` is tried again; otherwise its error goes on up. */
  shouldRetry(err: unknown, attempt: number): boolean;
  log: Logger;
  hooks?: ConsumeHooks | undefined;
}

/** Tries the rest again with exponential backoff and full jitter while `shouldRetry` says so. */
export const retried =
  (opts: RetryOptions): Middleware =>
  (next) =>
  async (d) => {
    for (let attempt = 1; ; attempt++) {
      if (opts.signal?.aborted || opts.stillOwned?.() === false) throw new Aborted();
      try {
        return await next(d);
      } catch (err) {
        d.attempts = attempt;
        if (err instanceof Aborted || !opts.shouldRetry(err, attempt)) throw err;
        opts.hooks?.onRetry?.(d.message, attempt, err);
        addSpanEvent('retry', { attempt, error: errorText(err).slice(0, 500) });
        const delay = backoffDelay(attempt, opts.policy);
        logOf(opts.log, d).warn(
          { err: errorText(err), attempt, retry_in_ms: delay },
          isUnavailable(err) ? 'a dependency is unavailable; retrying' : 'handler failed, retrying',
        );
        await pause(delay, opts.signal);
      }
    }
  };

/**
 * Kafka and the embedded bus: retry up to `policy.maxAttempts`, except a PermanentError (never) and a
 * dependency outage (for as long as it lasts: it is no fault of the message, and dead-lettering everything
 * that arrives while the database restarts would be wrong). Retrying pauses the partition.
 */
export const retryUpTo =
  (policy: RetryPolicy) =>
  (err: unknown, attempt: number): boolean =>
    !(err instanceof PermanentError) && (attempt < policy.maxAttempts || isUnavailable(err));

export interface DeadLetterOptions {
  log: Logger;
  hooks?: ConsumeHooks | undefined;
  /** The failures that send a message to the dead-letter topic; the others go on up. */
  isPoison(err: unknown): boolean;
  /**
   * Writes the dead letter and resolves once it is durable (the source position moves on after it). Without
   * one the transport's caller does it (Dapr: daprd, told DROP).
   */
  send?(d: Delivery, error: string): Promise<void>;
  /** The group keeps no dead-letter topic (the gateway's): what would go there is dropped, and logged so. */
  dropsInstead?: boolean;
}

/** Catches a poison failure: the message goes to the group's dead-letter topic and the delivery is done. */
export const deadLettered =
  (opts: DeadLetterOptions): Middleware =>
  (next) =>
  async (d) => {
    try {
      await next(d);
    } catch (err) {
      if (err instanceof Aborted || !opts.isPoison(err)) throw err;
      const error = err instanceof InvalidEvent ? err.message : errorText(err);
      const outcome = opts.dropsInstead ? 'dropped: this group keeps no dead-letter topic' : 'dead-lettering';
      if (err instanceof InvalidEvent) logOf(opts.log, d).warn({ error }, `invalid event, ${outcome}`);
      else
        logOf(opts.log, d).error(
          { err, attempt: d.attempts },
          `${err instanceof PermanentError ? 'permanent failure' : 'retries exhausted'}, ${outcome}`,
        );
      if (!opts.dropsInstead) await opts.send?.(d, error);
      // Counted as a dead letter only when one was sent: the dead-letters alert's runbook lists them.
      if (opts.dropsInstead) opts.hooks?.onDropped?.(d.message, error);
      else opts.hooks?.onDeadLetter?.(d.message, error);
      d.deadLettered = error;
    }
  };

/**
 * The dead letter on the same transport: `<group>.dlq` with the failure headers and the consumer span's
 * `traceparent`, published again (backoff) until it is durable, or until shutdown (Aborted).
 */
export const publishDeadLetter =
  (publisher: Publisher, policy: RetryPolicy, log: Logger, signal: AbortSignal | undefined) =>
  async (d: Delivery, error: string): Promise<void> => {
    const { message } = d;
    const headers: Record<string, string> = {
      [DLQ_HEADERS.error]: headerText(error, 4000),
      [DLQ_HEADERS.attempts]: String(d.attempts),
      [DLQ_HEADERS.firstFailure]: d.startedAt,
      [DLQ_HEADERS.lastFailure]: new Date().toISOString(),
      [DLQ_HEADERS.sourceTopic]: message.topic,
      [DLQ_HEADERS.sourcePartition]: String(message.partition),
      [DLQ_HEADERS.sourceOffset]: message.offset,
      [DLQ_HEADERS.group]: d.group,
    };
    const traceparent = currentTraceparent(); // the consumer span: the dead letter continues its trace
    if (traceparent) headers.traceparent = traceparent;
    let cut = false;
    for (let attempt = 1; ; attempt++) {
      try {
        await publisher.publish([
          cut
            ? { topic: dlqTopic(d.group), key: message.key, event: cutLetterEvent(message), headers }
            : {
                topic: dlqTopic(d.group),
                key: message.key,
                event: message.event,
                headers,
                // The record's bytes where the transport keeps them (Kafka): the letter keeps the whole event
                // (an Avro value of a newer version was read without its new fields) for a replay after the
                // upgrade.
                ...(message.rawValue
                  ? { asReceived: { value: message.rawValue, headers: message.headers } }
                  : {}),
              },
        ]);
        return;
      } catch (err) {
        if (signal?.aborted) throw new Aborted();
        // The source topic took the record, but not with the failure headers: refused on every try, the
        // partition was stuck for good.
        if (!cut && TOO_LARGE.test(errorText(err))) {
          cut = true;
          log.error(
            { err: errorText(err) },
            'dead letter too large for its topic; writing the first 10,000 characters of the event instead',
          );
          continue;
        }
        log.error({ err: errorText(err), attempt }, 'could not publish dead letter, retrying');
        await pause(backoffDelay(attempt, policy), signal);
      }
    }
  };

/** A refusal of a record for its size (Kafka's MESSAGE_TOO_LARGE and RECORD_LIST_TOO_LARGE): it never passes. */
const TOO_LARGE = /MESSAGE_TOO_LARGE|RECORD_LIST_TOO_LARGE|larger than the max message size/i;

/**
 * What a letter too large for its topic holds instead of the event: its first 10,000 characters as JSON text,
 * as an undecodable record's letter holds its bytes (`dlq list` shows it, `dlq replay` keeps it back). The
 * record itself stays on its source topic, at the letter's x-dlq-source-* position, until retention.
 */
function cutLetterEvent(message: BusMessage): BusMessage['event'] {
  const { event } = message;
  // The attributes go as headers: a foreign record's bulk can be one of them (a ce_source of a megabyte).
  const short = (text: unknown) => (typeof text === 'string' && text.length <= 200 ? text : undefined);
  return {
    specversion: '1.0',
    id: short(event.id) ?? `undecodable-${message.topic}-${message.partition}-${message.offset}`,
    source: short(event.source) ?? 'taskflow/dead-letter',
    type: UNDECODABLE_EVENT_TYPE,
    time: short(event.time) ?? new Date().toISOString(),
    datacontenttype: 'application/json',
    data: {
      raw: headerText(JSON.stringify(event), 10_000),
      error: `too large for the dead-letter topic; the whole record is at ${message.topic}/${message.partition}/${message.offset}`,
    },
  };
}
