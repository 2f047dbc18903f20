/**
 * The consumer rules of Kafka and the embedded bus: every message of a partition, in order, through the whole
 * pipeline of middleware.ts (a CONSUMER span, validation, retries with backoff, dead-lettering), and runs of
 * valid messages through a group's batch handler first. The caller commits the position only after a run
 * resolves, so nothing is skipped silently.
 */
import { eventProblems } from '../contracts/schemas.ts';
import type { Logger } from '../observability/logger.ts';
import { startSpan, traceparentOf } from '../observability/tracing.ts';
import type { BatchHandler, BusMessage, ConsumeHooks, MessageHandler, Publisher } from './types.ts';
import { errorText } from '../error-text.ts';
import type { RetryPolicy } from '../retry.ts';
import {
  Aborted,
  compose,
  consumerSpanOptions,
  deadLettered,
  forThisGroup,
  handlerOf,
  measured,
  newDelivery,
  publishDeadLetter,
  replayedForAnother,
  retried,
  retryUpTo,
  traced,
  validated,
  type Handle,
} from './middleware.ts';

/**
 * Subscribers commit a partition's position at most this often while it is busy, and within this interval
 * once it is idle (and at once on a clean stop); not per message or per batch, which at moderate rates costs
 * a broker or database round trip per event. After a crash, at most the handled but uncommitted messages of
 * this interval are redelivered: handlers are idempotent.
 */
export const COMMIT_INTERVAL_MS = 1_000;

/** Most messages handed to a `batchHandler` at once, unless the subscription says otherwise. */
export const DEFAULT_MAX_BATCH = 100;

export type { ConsumeHooks };

export interface ConsumeContext {
  group: string;
  policy: RetryPolicy;
  /** Publishes dead letters; the same transport as the source. */
  publisher: Publisher;
  log: Logger;
  /** Aborted on shutdown: pending retries stop and the message stays uncommitted (redelivered later). */
  signal?: AbortSignal;
  /**
   * Whether the partition is still this member's, asked before each message and attempt (the embedded bus's
   * lease): false stops the delivery as `signal` does.
   */
  stillOwned?: () => boolean;
  hooks?: ConsumeHooks;
}

export type ConsumeOutcome = 'handled' | 'dead-lettered' | 'aborted';

/**
 * The whole chain around `handler`: span, dead-lettering, validation, retries, metrics. `deadLetters: false`
 * (SubscribeOptions): what would be dead-lettered is dropped, with a warning.
 */
export function consumerPipeline(
  handler: MessageHandler,
  ctx: ConsumeContext,
  opts: { deadLetters?: boolean | undefined } = {},
): Handle {
  const { log, hooks, policy, signal, stillOwned } = ctx;
  return compose(
    handlerOf(handler),
    forThisGroup,
    traced,
    deadLettered({
      log,
      hooks,
      isPoison: () => true,
      dropsInstead: opts.deadLetters === false,
      send: publishDeadLetter(ctx.publisher, policy, log, signal),
    }),
    validated({ log, hooks }),
    retried({ policy, signal, stillOwned, shouldRetry: retryUpTo(policy), log, hooks }),
    measured(hooks),
  );
}

/** Shut down, or the partition no longer this member's: what is left stays uncommitted. */
const stopped = (ctx: ConsumeContext) => ctx.signal?.aborted === true || ctx.stillOwned?.() === false;

/** One message through the pipeline: how it ended. */
export async function deliver(pipeline: Handle, message: BusMessage, group: string): Promise<ConsumeOutcome> {
  const d = newDelivery(message, group);
  try {
    await pipeline(d);
  } catch (err) {
    if (err instanceof Aborted) return 'aborted';
    throw err; // the pipeline dead-letters every handler failure: this is a fault of the rules (a hook)
  }
  return d.deadLettered === undefined ? 'handled' : 'dead-lettered';
}

/** `deliver` through a pipeline built for this one message (tests; transports build theirs once). */
export const consumeWithRetry = (message: BusMessage, handler: MessageHandler, ctx: ConsumeContext) =>
  deliver(consumerPipeline(handler, ctx), message, ctx.group);

/**
 * A delivery's messages as runs, in order: runs of two or more a batch handler can take at once (valid events
 * of this group's), and each other message alone (one that breaks its schema, of a type this build does not
 * know, replayed for another group), for the pipeline. A message that cannot go in a batch splits the batch
 * around it: it sent the whole delivery one by one (a newer build's new type, during a rollout).
 */
export function batchRuns(
  messages: readonly BusMessage[],
  group: string,
): { messages: readonly BusMessage[]; batch: boolean }[] {
  const runs: { messages: readonly BusMessage[]; batch: boolean }[] = [];
  let start = 0;
  const close = (end: number) => {
    if (end > start)
      runs.push({
        messages: start === 0 && end === messages.length ? messages : messages.slice(start, end),
        batch: end - start >= 2,
      });
  };
  messages.forEach((m, i) => {
    if (eventProblems(m.event).length > 0 || replayedForAnother(m, group)) {
      close(i);
      runs.push({ messages: [m], batch: false });
      start = i + 1;
    }
  });
  close(messages.length);
  return runs;
}

/**
 * Hands a run of `batchRuns` to the batch handler at once, one CONSUMER span per message (each handed to it
 * as the message's `traceparent`). True when it took effect; false when the handler threw and nothing of it
 * took effect.
 */
export async function handledAsBatch(
  messages: readonly BusMessage[],
  batchHandler: BatchHandler,
  ctx: { group: string; log: Logger; hooks?: ConsumeHooks | undefined },
): Promise<boolean> {
  const spans = messages.map((m) => startSpan(`process ${m.topic}`, consumerSpanOptions(m, ctx.group)));
  const started = performance.now();
  try {
    await batchHandler(messages.map((message, i) => ({ message, traceparent: traceparentOf(spans[i]) })));
  } catch (err) {
    const failure = err ?? new Error('batch handler failed');
    for (const span of spans) {
      span?.addEvent('batch failed; handled alone', { error: errorText(failure).slice(0, 500) });
      span?.end();
    }
    ctx.log.warn(
      { group: ctx.group, err: errorText(failure), messages: messages.length },
      'batch handler failed; handling its messages one by one',
    );
    return false;
  }
  const each = (performance.now() - started) / messages.length;
  messages.forEach((m, i) => {
    spans[i]?.setAttribute('taskflow.outcome', 'handled');
    spans[i]?.setAttribute('taskflow.batch_size', messages.length);
    spans[i]?.end();
    ctx.hooks?.onHandled?.(m, each);
  });
  return true;
}

/**
 * The consumer of one subscription: `run` handles consecutive messages of one partition in order and
 * resolves how many of them are done (handled or dead-lettered), all of them unless shutdown aborted it.
 * With a `batchHandler` a run of valid messages goes to it at once; if that throws, every message is
 * handled alone, with retries and dead-lettering, so one poison message costs its neighbours only a second
 * try.
 */
export function consumer(
  handlers: {
    handler: MessageHandler;
    batchHandler?: BatchHandler | undefined;
    deadLetters?: boolean | undefined;
  },
  ctx: ConsumeContext,
): (messages: readonly BusMessage[]) => Promise<number> {
  const pipeline = consumerPipeline(handlers.handler, ctx, { deadLetters: handlers.deadLetters });
  const { batchHandler } = handlers;
  /** The run's messages one at a time from `done` on: how many of the delivery are done after them. */
  const oneByOne = async (run: readonly BusMessage[], done: number): Promise<number> => {
    for (let i = 0; i < run.length; i++) {
      // Stopped (shutdown, or the partition went to another member): the rest stays uncommitted, for the
      // partition's next reader.
      if (stopped(ctx)) return done + i;
      if ((await deliver(pipeline, run[i]!, ctx.group)) === 'aborted') return done + i;
    }
    return done + run.length;
  };
  return async (messages) => {
    if (!batchHandler) return oneByOne(messages, 0);
    let done = 0;
    for (const run of batchRuns(messages, ctx.group)) {
      if (run.batch && !stopped(ctx) && (await handledAsBatch(run.messages, batchHandler, ctx))) {
        done += run.messages.length;
        continue;
      }
      const after = await oneByOne(run.messages, done);
      if (after < done + run.messages.length) return after;
      done = after;
    }
    return done;
  };
}
