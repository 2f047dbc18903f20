/**
 * Builds a target that consumes topics as one consumer group: validation, retries, dead-lettering and
 * metrics come from the bus layer; the service supplies only its handler.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { renewReplayCursor, unreplayedCount } from '../bus/dlq.ts';
import type { BatchItem, BusMessage, SubscribeOptions, Subscription } from '../bus/types.ts';
import type { CloudEvent } from '../contracts/cloudevent.ts';
import { childTraceparent } from '../observability/trace.ts';
import type { Db, Tx } from '../store/db.ts';
import { firstTimeMany } from '../store/idempotency.ts';
import { appendEvents } from '../store/outbox.ts';
import type { ConsumerGroupSource } from '../observability/metrics.ts';
import { retryWithBackoff } from '../retry.ts';
import type { ConsumerGroupSpec, Runtime, RunningTarget, TargetDefinition } from '../runtime.ts';
import { errorMessage } from '../error-text.ts';

export interface ConsumerTargetSpec {
  /** The target's manifest: its name, and the group and topics it consumes. */
  manifest: { name: string; consumes: Pick<ConsumerGroupSpec, 'group'> & { topics: readonly string[] } };
  /**
   * The least time between two batches of a partition while messages keep coming (SubscribeOptions): off
   * the real-time path a consumer can wait a little and handle many messages in one transaction.
   */
  batchIntervalMs?: number;
  /**
   * On the real-time path (API commit to the user's socket): its database work does not yield. Otherwise
   * (the default) the consumer gets the database's background lane (Db.background).
   */
  realTime?: boolean;
  /** Creates the handler once per process (stores, clients...). */
  setup(rt: Runtime): Promise<ConsumerService>;
}

export interface ConsumerService {
  handle(message: BusMessage): Promise<void>;
  /** Optional: handles a run of messages at once, all or nothing (see BatchHandler). */
  handleBatch?(items: readonly BatchItem[]): Promise<void>;
  stop?(): Promise<void>;
}

/** An event handed to a transactional effect, with the `traceparent` the events it causes continue from. */
export interface ConsumedEvent {
  event: CloudEvent;
  traceparent: string;
}

export interface TransactionalOptions {
  db: Db;
  /** The consumer group: its processed-event ledger deduplicates. */
  group: string;
  /** The events the effect is for; the others are done without a transaction. */
  accepts(event: CloudEvent): boolean;
  /**
   * The target's effect, inside the transaction, on the new events in delivery order (an event already
   * processed by the group is left out, and a run's repeat of an id counts once). It resolves the events it
   * causes, appended in the same transaction (the relay or the bus is woken after commit); other wake-ups
   * go through `tx.afterCommit`.
   */
  effect(tx: Tx, events: readonly ConsumedEvent[]): Promise<readonly CloudEvent[] | void>;
  /**
   * The effect records the event ids in the group's ledger itself, in its own first statement (one statement
   * saved per transaction), and is handed every accepted event: reminders and audit do.
   */
  dedupesItself?: boolean;
  /** Runs go to the effect whole (one transaction for many events) as well as one message at a time. */
  batches?: boolean;
}

/**
 * A consumer whose effect is written in the database: dedupe by event id, the effect and the events it causes
 * commit in one transaction, so a redelivery (at least once) changes nothing twice. The handler of a target
 * is then its effect only.
 */
export function transactional(opts: TransactionalOptions): ConsumerService {
  const { db, group, accepts, effect } = opts;
  const run = async (items: readonly { message: BusMessage; traceparent: string | undefined }[]) => {
    const consumed: ConsumedEvent[] = [];
    for (const { message, traceparent } of items)
      if (accepts(message.event))
        consumed.push({
          event: message.event,
          traceparent: traceparent ?? childTraceparent(message.event.traceparent),
        });
    if (consumed.length === 0) return;
    await db.transaction(async (tx) => {
      let todo = consumed;
      if (!opts.dedupesItself) {
        const fresh = await firstTimeMany(
          tx,
          group,
          consumed.map((c) => c.event.id),
        );
        todo = consumed.filter((c) => fresh.delete(c.event.id)); // the first occurrence of an id wins
        if (todo.length === 0) return;
      }
      const caused = await effect(tx, todo);
      if (caused?.length) await appendEvents(tx, caused);
    });
  };
  return {
    handle: (message) => run([{ message, traceparent: undefined }]),
    ...(opts.batches ? { handleBatch: run } : {}),
  };
}

export function consumerTarget(spec: ConsumerTargetSpec): TargetDefinition {
  return {
    name: spec.manifest.name,
    async start(rt: Runtime): Promise<RunningTarget> {
      const { group, topics } = spec.manifest.consumes;
      const service = await spec.setup(spec.realTime ? rt : { ...rt, db: rt.db.background() });
      const batchHandler = service.handleBatch?.bind(service);
      const subscription = await subscribeWhenReachable(rt, {
        group,
        topics,
        handler: (m) => service.handle(m),
        ...(batchHandler ? { batchHandler } : {}),
        batchIntervalMs: spec.batchIntervalMs ?? rt.config.consumerBatchIntervalMs,
        hooks: rt.metrics.consumerHooks(group),
      });
      const untrack = rt.metrics.trackConsumerGroup(group, consumerGroupSource(rt, group, topics));
      // The DLQ's replay position, kept from expiring on Kafka (renewReplayCursor): at start, then daily.
      const renew = () => void renewReplayCursor(rt.bus.admin, group).catch(() => undefined);
      const renewal = setInterval(renew, REPLAY_POSITION_RENEW_MS).unref();
      const first = setTimeout(renew, 1_000).unref();
      return {
        stop: async () => {
          clearInterval(renewal);
          clearTimeout(first);
          untrack();
          await subscription.close();
          await service.stop?.();
        },
      };
    },
  };
}

/**
 * Lag and DLQ size of a group as the bus admin reports them (for /metrics; every transport): on every partition
 * of the `topics` it reads, those it committed nothing on yet too.
 */
export function consumerGroupSource(
  rt: Runtime,
  group: string,
  topics: readonly string[],
): ConsumerGroupSource {
  const admin = rt.bus.admin;
  const subscribed = new Map([[group, topics]]);
  return {
    lag: () => admin.lag(group, subscribed),
    // Those not replayed yet: a replayed letter stays in the topic (bus/dlq.ts).
    ...(admin.messageCount ? { deadLetters: () => unreplayedCount(admin, group) } : {}),
  };
}

/** How often a consumer target commits its group's DLQ replay position again (Kafka expires idle ones). */
const REPLAY_POSITION_RENEW_MS = 24 * 3_600_000;

const RESUBSCRIBE = { maxAttempts: 0, baseDelayMs: 1_000, maxDelayMs: 30_000 };
/** How long start-up waits for a first subscribe that is still trying (e.g. waiting for its topics). */
const FIRST_ATTEMPT_WAIT_MS = 5_000;

/**
 * Subscribes; when that fails (the broker is down or unreachable, the topics do not exist yet) keeps trying in
 * the background with capped backoff instead of failing the process, so the API of `taskflow up` keeps
 * answering while events wait in the outbox. Start-up waits for the first attempt at most
 * FIRST_ATTEMPT_WAIT_MS. Until the group is subscribed, /readyz names it as not ready.
 */
export async function subscribeWhenReachable(rt: Runtime, opts: SubscribeOptions): Promise<Subscription> {
  const { group } = opts;
  let current: Subscription | undefined;
  let lastError = 'subscribing';
  const firstAttempt = rt.bus.subscriber.subscribe(opts);
  let next: Promise<Subscription> | undefined = firstAttempt;
  const stop = new AbortController();
  // The first attempt is the one started above; later ones start after a backoff.
  const subscribing = retryWithBackoff(
    async (attempt) => {
      const subscription = next ?? rt.bus.subscriber.subscribe(opts);
      next = undefined;
      current = await subscription;
      if (attempt > 1) rt.log.info({ group, attempts: attempt }, 'subscribed');
    },
    {
      policy: RESUBSCRIBE,
      random: () => 0.5 + Math.random() / 2,
      signal: stop.signal,
      onFailure: (err, _attempt, delay) => {
        lastError = errorMessage(err);
        rt.log.warn({ group, err: lastError, retry_in_ms: delay }, 'could not subscribe yet; retrying');
      },
    },
  );
  const outcome = await Promise.race([
    firstAttempt.then(
      () => 'subscribed' as const,
      () => 'failed' as const,
    ),
    sleep(FIRST_ATTEMPT_WAIT_MS, 'pending' as const, { ref: false }),
  ]);
  if (outcome === 'subscribed') return firstAttempt;

  rt.http.addReadinessCheck(`consumer group ${group}`, async () => {
    if (!current) throw new Error(`not subscribed yet: ${lastError}`);
  });
  if (outcome === 'pending') rt.log.warn({ group }, 'still subscribing; starting without waiting');
  return {
    close: async () => {
      stop.abort();
      await subscribing;
      await current?.close();
    },
  };
}
