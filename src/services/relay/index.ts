/**
 * The relay target: moves outbox rows onto the bus in id order (which, per user, is commit order; see
 * store/outbox.ts), marks them published, and backs off while the bus is unreachable. One relay is active at
 * a time (a lease); others stand by, so a key's events are never published out of order.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { EmbeddedAdmin, EmbeddedPublisher } from '../../bus/embedded/index.ts';
import type { OutgoingMessage } from '../../bus/types.ts';
import {
  SpanKind,
  recordError,
  startSpan,
  traceparentOf,
  tracingEnabled,
} from '../../observability/tracing.ts';
import { backoffDelay } from '../../bus/consumer.ts';
import type { Runtime, RunningTarget, TargetDefinition } from '../../runtime.ts';
import { releaseLease, tryAcquireLease } from '../../store/lease.ts';
import {
  OUTBOX_SIGNAL,
  markPublished,
  outboxStats,
  pendingOutbox,
  pruneOutbox,
  recordPublishFailure,
  type OutboxRow,
} from '../../store/outbox.ts';
import { waitForEvent } from '../../wait.ts';

const LEASE = 'relay';
const LEASE_TTL_MS = 10_000;
const HOUSEKEEPING_MS = 60_000;
const OUTBOX_KEEP_MS = 24 * 3_600_000;
const LINGER_MS = 3;
const STATS_INTERVAL_MS = 2_000;

const toMessage = (r: OutboxRow): OutgoingMessage => ({ topic: r.topic, key: r.key, event: r.event });

/**
 * With tracing on: a PRODUCER span per event, child of the event's `traceparent` (the operation that wrote
 * it), whose context rides along as the `traceparent` transport header (Kafka header, embedded log headers)
 * so each consumer's span is its child. The event itself is published unchanged.
 */
function tracedMessages(rows: readonly OutboxRow[], system: string) {
  if (!tracingEnabled()) return { messages: rows.map(toMessage), end: () => undefined };
  const spans = rows.map((r) =>
    startSpan(`publish ${r.topic}`, {
      kind: SpanKind.PRODUCER,
      parent: r.event.traceparent,
      attributes: {
        'messaging.system': system,
        'messaging.operation.type': 'publish',
        'messaging.destination.name': r.topic,
        'messaging.message.id': r.event.id,
        'cloudevents.event_type': r.event.type,
        'taskflow.outbox.id': r.id,
      },
    }),
  );
  const messages = rows.map((r, i): OutgoingMessage => {
    const traceparent = traceparentOf(spans[i]);
    return traceparent ? { ...toMessage(r), headers: { traceparent } } : toMessage(r);
  });
  return {
    messages,
    end: (err?: unknown) => {
      for (const span of spans) {
        if (!span) continue;
        if (err !== undefined) recordError(span, err);
        span.end();
      }
    },
  };
}

export class Relay {
  private readonly holder = randomUUID();
  private readonly stopping = new AbortController();
  private loop: Promise<void> | undefined;
  private lastHousekeeping = 0;
  private readonly wake = new EventEmitter();
  private readonly onSignal = () => this.wake.emit('wake');

  constructor(private readonly rt: Runtime) {}

  start(): void {
    this.rt.db.signals.on(OUTBOX_SIGNAL, this.onSignal);
    this.loop = this.run();
  }

  /** Waits for a commit signal (or `ms`); after a signal, lingers briefly so a burst forms one batch. */
  private async idle(ms: number) {
    const woken = await waitForEvent(this.wake, 'wake', ms, this.stopping.signal);
    if (woken) await sleep(LINGER_MS, undefined, { signal: this.stopping.signal }).catch(() => undefined);
  }

  private async run(): Promise<void> {
    const { db, bus, log, config, metrics } = this.rt;
    let failures = 0;
    let leader = false;
    let renewedAt = 0;
    let statsAt = 0;
    while (!this.stopping.signal.aborted) {
      try {
        // Renew the lease a few times per TTL, not per batch: a database round trip saved on the hot path.
        let isLeader: boolean = leader;
        if (!leader || Date.now() - renewedAt > LEASE_TTL_MS / 3) {
          isLeader = await tryAcquireLease(db, LEASE, this.holder, LEASE_TTL_MS);
          if (isLeader) renewedAt = Date.now();
        }
        if (isLeader !== leader)
          log.info({ holder: this.holder }, isLeader ? 'relay is active' : 'relay is standby');
        leader = isLeader;
        if (!leader) {
          await this.idle(LEASE_TTL_MS / 3);
          continue;
        }
        await this.housekeeping();
        const published = await this.publishBatch(config.relay.batchSize);
        if (failures > 0) log.info({ after_failures: failures }, 'relay recovered');
        failures = 0;
        if (published === 0) await this.idle(config.relay.pollIntervalMs);
      } catch (err) {
        failures++;
        const delay = backoffDelay(failures, { maxAttempts: 0, baseDelayMs: 250, maxDelayMs: 15_000 });
        log.warn(
          { err: err instanceof Error ? err.message : String(err), failures, retry_in_ms: delay },
          'relay could not publish; will retry',
        );
        await sleep(delay, undefined, { signal: this.stopping.signal }).catch(() => undefined);
      }
      if (Date.now() - statsAt > STATS_INTERVAL_MS) {
        statsAt = Date.now();
        const stats = await outboxStats(db).catch(() => null);
        if (stats) {
          metrics.outboxPending.set(stats.pending);
          metrics.outboxOldestAge.set(stats.oldestPendingAgeSeconds);
        }
      }
    }
    if (leader) await releaseLease(db, LEASE, this.holder).catch(() => undefined);
    void bus;
  }

  /** Publishes one batch; returns how many rows it published. */
  async publishBatch(limit: number): Promise<number> {
    const { db, bus, metrics } = this.rt;
    const publisher = bus.publisher;
    if (publisher instanceof EmbeddedPublisher) {
      // Same database: append to the log and mark the rows in one transaction (exactly once).
      let traced: ReturnType<typeof tracedMessages> | undefined;
      let n: number;
      try {
        n = await db.transaction(async (tx) => {
          const rows = await pendingOutbox(tx, limit);
          if (rows.length === 0) return 0;
          traced = tracedMessages(rows, bus.kind);
          await publisher.publishIn(tx, traced.messages);
          await markPublished(
            tx,
            rows.map((r) => r.id),
          );
          for (const r of rows) metrics.eventsProduced.inc({ topic: r.topic, type: r.event.type });
          return rows.length;
        });
      } catch (err) {
        traced?.end(err);
        throw err;
      }
      traced?.end();
      if (n > 0) publisher.notify();
      return n;
    }
    const rows = await pendingOutbox(db, limit);
    if (rows.length === 0) return 0;
    const traced = tracedMessages(rows, bus.kind);
    try {
      await publisher.publish(traced.messages);
    } catch (err) {
      traced.end(err);
      await recordPublishFailure(
        db,
        rows.map((r) => r.id),
        err instanceof Error ? err.message : String(err),
      ).catch(() => undefined);
      throw err;
    }
    traced.end();
    await markPublished(
      db,
      rows.map((r) => r.id),
    );
    for (const r of rows) metrics.eventsProduced.inc({ topic: r.topic, type: r.event.type });
    return rows.length;
  }

  private async housekeeping() {
    const now = Date.now();
    if (now - this.lastHousekeeping < HOUSEKEEPING_MS) return;
    this.lastHousekeeping = now;
    await pruneOutbox(this.rt.db, OUTBOX_KEEP_MS);
    if (this.rt.bus.admin instanceof EmbeddedAdmin) await this.rt.bus.admin.applyRetention();
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    this.rt.db.signals.off(OUTBOX_SIGNAL, this.onSignal);
    await this.loop;
  }
}

export const relayTarget: TargetDefinition = {
  name: 'relay',
  description: 'publishes outbox rows to the bus (transactional outbox relay)',
  async start(rt): Promise<RunningTarget> {
    const relay = new Relay(rt);
    relay.start();
    return { stop: () => relay.stop() };
  },
};
