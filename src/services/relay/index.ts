/**
 * The relay target: moves outbox rows onto the bus in id order (which, per user, is commit order; see
 * store/outbox.ts), marks them published, and backs off while the bus is unreachable. One relay is active at
 * a time (a lease, RELAY_LEASE_MS); others stand by and take over within a lease and a third after the active
 * one dies. Fencing: a send starts only while the lease is surely held (measured on this process's monotonic
 * clock, which keeps counting while the process is paused), the lease is renewed between the batches of a
 * round, and marking rows published checks the holder, so a relay that lost the lease neither sends again nor
 * marks. What it had sent before losing it, the next one finds on the bus and marks instead of sending again
 * (Kafka; on Dapr, which cannot be read back, it is sent again: at-least-once; per key, first deliveries stay
 * in order: docs/adr/0010-relay-failover.md). A send the bus took in part, answering for each event (Dapr's bulk
 * publish names the entries the broker refused: too large for the topic, say), marks what it took; the keys of
 * the refused events wait a while (held, with backoff) and the other keys' events go on past them.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { PartialPublishError, publishesInTransaction } from '../../bus/types.ts';
import { producerSpans } from '../../bus/producer-spans.ts';
import type { Runtime, RunningTarget, TargetDefinition } from '../../runtime.ts';
import { expireLease, tryAcquireLease } from '../../store/lease.ts';
import {
  OUTBOX_NOTIFY_CHANNEL,
  OUTBOX_NOTIFY_EVENT,
  OUTBOX_SIGNAL,
  markAndReadPending,
  markPublished,
  markPublishedEvents,
  markUnpublished,
  outboxStats,
  pendingOutbox,
  pendingTopics,
  pruneOutbox,
  recordPublishFailure,
  type OutboxRow,
} from '../../store/outbox.ts';
import { TickLoop, type IdleRound } from '../../tick-loop.ts';
import { errorMessage } from '../../error-text.ts';
import { backoffDelay } from '../../retry.ts';
import { pruneIdempotencyKeys, pruneProcessed } from '../../store/idempotency.ts';
import { relayManifest, type RelayOptions } from './manifest.ts';

const LEASE = 'relay';
/** The header naming the relay that published a message (failover forensics: who sent what, when). */
export const RELAY_HEADER = 'taskflow-relay';
const HOUSEKEEPING_MS = 60_000;
const OUTBOX_KEEP_MS = 24 * 3_600_000;
const LINGER_MS = 3;
const STATS_INTERVAL_MS = 2_000;
/**
 * A takeover reads back the topics of the first this-many pending rows (100 batches, at least 50,000): the rows
 * a predecessor left unmarked (two batches) come first, but for those of transactions that took smaller ids and
 * committed after it read them (as many as were in flight then). Bounded, so a takeover during a backlog of
 * millions of rows does not scan them all.
 */
const pendingTopicsScan = (batch: number) => Math.max(100 * batch, 50_000);
/**
 * The longest a read-back keeps the lease renewed: a read that hangs (a broker that never answers the reader's
 * group join) must not hold the lease from a standby forever.
 */
const READ_BACK_MAX_MS = 60_000;

/**
 * How long a key whose event the bus refused waits before that event is sent again: doubling from 250 ms to 15 s
 * (the loop's own backoff) while it is refused. At most MAX_HELD_KEYS keys wait so at once; beyond, a refused
 * key's rows are read again at once (and refused again).
 */
const HOLD = { maxAttempts: 0, baseDelayMs: 250, maxDelayMs: 15_000 };
const MAX_HELD_KEYS = 10_000;
/** A hold run out this long ago, not tried since (its rows went by another relay, or none are left), is forgotten. */
const HOLD_FORGET_MS = 60_000;

/** PRODUCER spans of a batch (bus/producer-spans.ts), naming each event's outbox row. */
const tracedMessages = (rows: readonly OutboxRow[], system: string, headers: Record<string, string>) =>
  producerSpans(
    rows.map((r) => ({ topic: r.topic, key: r.key, event: r.event, outboxId: r.id, headers })),
    system,
    (m) => ({ 'taskflow.outbox.id': m.outboxId }),
  );

/**
 * Counts a sent batch in the produced counter and the publish latency histogram: labels looked up once per run
 * of rows of one topic and type (a batch is mostly one run), not per row.
 */
function countPublished(metrics: Runtime['metrics'], rows: readonly OutboxRow[]): void {
  if (rows.length === 0) return;
  const now = Date.now();
  let run = 0;
  let latency = metrics.publishLatency.labels({ topic: rows[0]!.topic });
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    const next = rows[i + 1];
    run++;
    if (!next || next.topic !== r.topic || next.event.type !== r.event.type) {
      metrics.eventsProduced.inc({ topic: r.topic, type: r.event.type }, run);
      run = 0;
    }
    const at = Date.parse(r.event.time);
    if (at > 0) latency.observe(Math.max(0, now - at) / 1000);
    if (next && next.topic !== r.topic) latency = metrics.publishLatency.labels({ topic: next.topic });
  }
}

/** Where a relay publishes, as its holder name says it (`kafka:staging.`): the bus, and its topic namespace. */
function destinationOf(config: Runtime['config']): string {
  if (config.bus === 'kafka') return `kafka:${config.kafka.topicPrefix}`;
  if (config.bus === 'dapr') return `dapr:${config.dapr.pubsubName}`;
  return 'embedded';
}

/** The destination a relay's holder name carries (`.../to=kafka:staging./batch=500`), or null (an older one). */
const destinationOfHolder = (holder: string | null): string | null =>
  /\/to=([^/]*)\/batch=\d{1,9}$/.exec(holder ?? '')?.[1] ?? null;

/** The batch size a relay's holder name ends with (`.../batch=500`), or 0 when it names none. */
const batchOfHolder = (holder: string | null): number =>
  Number(/\/batch=(\d{1,9})$/.exec(holder ?? '')?.[1] ?? 0);

export class Relay {
  /**
   * Who holds the lease: host and pid for operators, a random part for two relays of one process, and the batch
   * size, which a relay taking over from this one reads back by (markWhatWasSent).
   */
  readonly holder: string;
  /** Where this relay publishes (destinationOf); in its holder name, so a takeover can compare. */
  private readonly destination: string;
  private readonly holderHeader: Record<string, string>;
  /** The batch size of the relay this one took the lease from, from its holder name (markWhatWasSent). */
  private predecessorBatch = 0;
  private readonly loop: TickLoop;
  private readonly onSignal = () => this.loop.poke();
  private readonly leaseMs: number;
  private readonly options: RelayOptions;
  private readonly metrics: ReturnType<typeof relayManifest.metrics>;
  private leader = false;
  /** performance.now() until which the lease is surely held: when its renewal was asked, plus its length. */
  private leaseUntil = 0;
  /** Whether, since taking the lease, this relay has looked on the bus for what a predecessor sent unmarked. */
  private reconciled = false;
  /** How many times the lease was found held by another relay since this one last held it (see holdLease). */
  private handovers = 0;
  /**
   * performance.now() until which this relay leaves the lease to others: after a round failed while it was the
   * active one (see standAside).
   */
  private standAsideUntil = 0;
  private statsReading: Promise<void> | undefined;
  private statsTimer: NodeJS.Timeout | undefined;
  private lastHousekeeping = 0;
  /** The housekeeping pass under way (startHousekeeping), which stop() waits for. */
  private housekeeping: Promise<void> | undefined;
  /**
   * The last batch of the last round: sent, and marked published by the statement that begins the next round
   * (a round is poked by the next commit, or runs after RELAY_POLL_MS), or on stop. At most this batch and the
   * one being marked are sent and unmarked at any time, as markWhatWasSent expects.
   */
  private sentUnmarked: string[] = [];
  /**
   * Keys whose first pending event the bus refused on its own, its other messages written (Dapr answers per
   * entry: an event too large for the topic, say): their rows are left out of the reads until `until`
   * (performance.now()), then sent again, so the other keys' events go on past an event refused for good
   * while per key the order holds. `refusals` lengthens the wait (HOLD).
   */
  private readonly held = new Map<string, { until: number; refusals: number }>();

  constructor(private readonly rt: Runtime) {
    this.options = relayManifest.config(rt.config.env);
    this.destination = destinationOf(rt.config);
    this.holder = `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}/to=${this.destination}/batch=${this.options.batchSize}`;
    this.holderHeader = { [RELAY_HEADER]: this.holder };
    this.metrics = rt.metrics.of(relayManifest);
    this.leaseMs = this.options.leaseMs;
    // After a commit signal, linger briefly so a burst of commits is published as one batch; while commits
    // keep coming, publish at most every RELAY_BATCH_INTERVAL_MS (one send and one mark for all of them). At
    // 100 writes/s its 25 ms makes batches of about 2.5: a quarter less CPU per write than 10 ms (ADR 0008).
    this.loop = new TickLoop({
      name: 'relay',
      log: rt.log,
      round: () => this.round(),
      lingerMs: LINGER_MS,
      minIntervalMs: this.options.batchIntervalMs,
    });
  }

  start(): void {
    // Commits in this process signal directly; on PostgreSQL the outbox trigger's NOTIFY brings those of
    // other processes (an api target running apart), so the poll only bounds a missed wake-up.
    this.rt.db.signals.on(OUTBOX_SIGNAL, this.onSignal);
    this.rt.db.signals.on(OUTBOX_NOTIFY_EVENT, this.onSignal);
    this.rt.db.listen(OUTBOX_NOTIFY_CHANNEL);
    this.loop.start();
    this.updateStats();
    this.statsTimer = setInterval(() => this.updateStats(), STATS_INTERVAL_MS).unref();
  }

  /** Publishes a batch if this relay holds the lease; resolves how long to wait before the next round. */
  private async round(): Promise<number | IdleRound> {
    const { config } = this.rt;
    const standby: IdleRound = { idle: true, waitMs: this.leaseMs / 3 };
    if (performance.now() < this.standAsideUntil || !(await this.holdLease())) return standby;
    let published: number;
    let drained: boolean;
    this.startHousekeeping();
    try {
      ({ published, drained } = await this.publishPending(this.options.batchSize));
    } catch (err) {
      await this.standAside();
      throw err;
    }
    // Drained: the last read found less than a batch. Commits since then poke the loop (TickLoop keeps a
    // poke that comes during a round), so there is nothing to read again until then.
    if (published > 0 && !drained) return 0;
    // Embedded: nothing is written to the outbox in the normal course (see publishPending), so look rarely.
    return publishesInTransaction(this.rt.bus.publisher)
      ? Math.max(this.options.pollIntervalMs, config.embedded.pollIntervalMs)
      : this.options.pollIntervalMs;
  }

  /**
   * Whether this relay holds the lease for at least two thirds of its length from now: renewed (one statement)
   * once a third of it has passed, so a few times per lease and not per batch. The database sets the expiry
   * after the renewal was asked, so the lease is surely held until the time of asking plus its length; after a
   * pause longer than that (SIGSTOP, a stalled event loop) the relay asks again before it sends anything.
   */
  private async holdLease(): Promise<boolean> {
    if (this.leader && this.leaseUntil - performance.now() >= (2 * this.leaseMs) / 3) return true;
    const asked = performance.now();
    const { held, continued, previous } = await tryAcquireLease(this.rt.db, LEASE, this.holder, this.leaseMs);
    this.leaseUntil = held ? asked + this.leaseMs : 0;
    if (held !== this.leader)
      this.rt.log.info({ holder: this.holder }, held ? 'relay is active' : 'relay is standby');
    // Another relay held the lease since this one last did (a takeover; or a pause past the lease, which another
    // one used): it may have sent batches it did not mark, so look on the bus first. A lapse no other relay
    // used (this one's own read-back or send outlasting the lease) changes nothing: treating it as a takeover
    // made a read-back slower than the lease start over at every round, and the relay never sent again.
    if (!held || !continued) {
      this.reconciled = false;
      this.handovers++;
    }
    if (held && !continued) {
      this.predecessorBatch = batchOfHolder(previous);
      // The outbox of one database goes to one place: a relay set up for another (a topic prefix or bus of
      // another environment) drains it there, and that environment's consumers never see those events.
      const before = destinationOfHolder(previous);
      if (before !== null && before !== this.destination)
        this.rt.log.warn(
          { holder: this.holder, previous },
          `relay took over from one that published to ${before}; this one publishes to ${this.destination}: if that is not a deliberate move, stop it (BUS, KAFKA_TOPIC_PREFIX or DAPR_PUBSUB_NAME differ)`,
        );
    }
    if (!held) this.sentUnmarked = []; // the next holder finds them on the bus, or sends them again
    this.leader = held;
    // Held when the database answered, but an answer this process saw only after the lease it asked for ran out
    // (a GC pause, a stalled event loop, SIGSTOP between the answer and here) says nothing of now: another relay
    // may have taken it and sent these rows meanwhile. Not surely held: the next check asks again.
    return held && performance.now() < this.leaseUntil;
  }

  /**
   * After a failed round as the active relay (a broker this process cannot reach, while another relay may):
   * the lease is ended at once and not asked for again for half its length, in which every standby asks for it
   * at least once (each asks every third of it). Without this a failing relay kept renewing the lease between
   * its retries, which back off to 15 s: with RELAY_LEASE_MS above that it held the lease for good, and no
   * event was published while a standby that could was waiting. Alone, it takes the lease again after that
   * half. The batches it may have sent unmarked are the next holder's to look for on the bus, as after any
   * takeover: the lease keeps this relay's name (expireLease), so the next holder reads back by its batch size.
   */
  private async standAside(): Promise<void> {
    if (!this.leader) return;
    this.leader = false;
    this.leaseUntil = 0;
    this.reconciled = false;
    this.sentUnmarked = [];
    this.standAsideUntil = performance.now() + this.leaseMs / 2;
    // Given up in the database when it can be reached; otherwise it runs out (another relay cannot reach the
    // database either then).
    const released = await expireLease(this.rt.db, LEASE, this.holder).then(
      () => true,
      () => false,
    );
    this.rt.log.info(
      { holder: this.holder, for_ms: this.leaseMs / 2 },
      released
        ? 'relay is standby: a round failed, so the lease is left to another relay for a while'
        : 'relay is standby: a round failed and the database cannot be reached; the lease runs out by itself',
    );
  }

  /**
   * Refreshes the outbox gauges, on a timer of their own: read at the start of a round, they stood still through
   * a long drain or a send that hangs. One read at a time (one that hangs keeps the last figures).
   */
  private updateStats(): void {
    this.statsReading ??= outboxStats(this.rt.db)
      .catch(() => null)
      .then((stats) => {
        this.statsReading = undefined;
        // Unknown while the database cannot be read: NaN, not the last figures (0 pending through an outage).
        this.metrics.outboxPending.set(stats?.pending ?? NaN);
        this.metrics.outboxOldestAge.set(stats?.oldestPendingAgeSeconds ?? NaN);
        this.metrics.outboxHeadAttempts.set(stats ? (stats.head?.attempts ?? 0) : NaN);
      });
  }

  /** Publishes what is pending, batch by batch; resolves how many rows, and whether the last read was short. */
  async publishPending(limit: number): Promise<{ published: number; drained: boolean }> {
    const { db, bus, metrics } = this.rt;
    const publisher = bus.publisher;
    if (publishesInTransaction(publisher)) {
      // With the embedded bus, writers append to its log in their own transaction (bus/embedded/log.ts): the
      // outbox holds only what a process without the bus wrote, or rows from before an upgrade. Look first
      // (one statement), then move what is there into the log and mark it, in one transaction.
      const pending = await pendingOutbox(db, limit);
      if (pending.length === 0) return { published: 0, drained: true };
      let traced: ReturnType<typeof tracedMessages> | undefined;
      let n: number;
      try {
        n = await db.transaction(async (tx) => {
          const marked = await markUnpublished(
            tx,
            pending.map((r) => r.id),
          );
          const rows = pending.filter((r) => marked.has(r.id));
          if (rows.length === 0) return 0;
          traced = tracedMessages(rows, bus.kind, this.holderHeader);
          await publisher.publishIn(tx, traced.messages); // the log counts them (events produced)
          return rows.length;
        });
      } catch (err) {
        traced?.end(err);
        throw err;
      }
      traced?.end();
      return { published: n, drained: pending.length < limit };
    }
    // Pipelined: while a batch is on its way to the broker the next one is read, and while a batch is being
    // marked the next one is sent. A batch is sent only after the previous one was acknowledged, so a key's
    // events reach the broker in order; a failed send stops the round, and what was not marked is sent again.
    if (!this.reconciled) await this.markWhatWasSent(limit);
    let rows = await this.markSentAndRead(limit);
    let published = 0;
    let marking: Promise<void> | undefined;
    /** The previous batch's ids while its marking may not have committed: the read-ahead leaves them out. */
    let beingMarked: readonly string[] = [];
    try {
      while (rows.length > 0) {
        // Fencing: no send starts unless the lease is surely held (renewed here within a long backlog). A lease
        // that lapsed meanwhile (a pause) and was taken again may have been another relay's in between, which
        // may have sent these rows: the round ends, and the next one looks on the bus first (markWhatWasSent).
        if (!(await this.holdLease()) || !this.reconciled) {
          await marking;
          return { published, drained: false };
        }
        const ids = rows.map((r) => r.id);
        // A full batch: more may be pending. Read what follows it meanwhile (its own round trip, overlapped).
        const reading =
          rows.length === limit
            ? pendingOutbox(db, limit, [...beingMarked, ...ids], this.heldKeys())
            : undefined;
        reading?.catch(() => undefined); // awaited below; a send failure must not leave it unhandled
        // node-postgres writes a query out in a process.nextTick, which runs only after every promise callback
        // queued before it: without this yield the read (and the previous batch's marking) would leave only
        // once this batch is encoded, and the next batch waited for it (about 3 ms a batch of 500; docs/adr/0008).
        // PGlite runs its statements on this thread: there the yield only put them ahead of the send (slower).
        if (reading && db.kind === 'postgres')
          await new Promise<void>((resolve) => process.nextTick(resolve));
        const traced = tracedMessages(rows, bus.kind, this.holderHeader);
        const sending = publisher.publish(traced.messages);
        try {
          await sending;
        } catch (err) {
          traced.end(err);
          this.metrics.publishFailures.inc();
          const written = this.writtenOf(rows, err);
          const marked = new Set(written.map((r) => r.id));
          await recordPublishFailure(
            db,
            ids.filter((id) => !marked.has(id)),
            errorMessage(err),
          ).catch(() => undefined);
          if (written.length === 0) throw err;
          // The bus took part of the batch and refused the rest message by message (Dapr): what it took is
          // marked now (not sent again), the refused keys wait (held), and the round goes on without them.
          // The read-ahead may hold their later rows: read again, once the previous batch is marked.
          await marking;
          marking = undefined;
          beingMarked = [];
          await this.mark([...marked]);
          this.released(written);
          countPublished(metrics, written);
          published += written.length;
          this.rt.log.warn(
            { err: errorMessage(err), published: written.length, waiting: ids.length - written.length },
            "the bus refused some events of a batch: the others are published; the refused ones, and their keys' events behind them, wait and are sent again later",
          );
          rows = await pendingOutbox(db, limit, [], this.heldKeys());
          continue;
        }
        traced.end();
        this.released(rows);
        countPublished(metrics, rows);
        published += rows.length;
        // The previous batch's marking must have succeeded before another batch goes out.
        await marking;
        marking = reading ? this.mark(ids) : undefined;
        // Awaited after the next send, which takes a while: a failure meanwhile must not be unhandled (it would
        // end the process); the await still throws it.
        marking?.catch(() => undefined);
        beingMarked = reading ? ids : [];
        rows = reading ? await reading : [];
        // The round's last batch is marked by the read that begins the next round.
        if (!reading) this.sentUnmarked = ids;
      }
      await marking;
    } catch (err) {
      await marking?.catch(() => undefined);
      // Up to two batches may be on the bus unmarked (one whose marking failed, the one sent meanwhile; or the
      // chunks of a send that failed part way): the next round looks there first, as after a takeover.
      this.reconciled = false;
      throw err;
    }
    return { published, drained: true };
  }

  /**
   * Taking over, before the first send: a predecessor that died or was paused after a send and before its
   * marking left rows that are on the bus already. They are at most its last two batches (one sent while the
   * previous one was being marked), so among the last 2 x its batch size messages of each partition of their
   * topic (its holder name says the size; this relay's own when it says none or less).
   * The pending rows whose events are found there are marked, not sent again: no copy on the broker after a
   * failover. Found by event id, not by position among the pending rows: transactions that took smaller ids
   * and committed after the predecessor read its batches come before those rows now, in any number. A bus
   * that cannot be read back (Dapr) keeps at-least-once.
   */
  private async markWhatWasSent(limit: number): Promise<void> {
    const { admin } = this.rt.bus;
    const readBack = admin.publishedEventIds?.bind(admin);
    if (!readBack) {
      this.reconciled = true;
      return;
    }
    const handovers = this.handovers;
    // The read-back can outlast the lease (a slow broker, a large backlog of topics): the lease is renewed
    // meanwhile, so a standby relay does not take over and start a read-back of its own.
    // One renewal at a time, none after the read-back (stop() releases the lease after it), and none past
    // READ_BACK_MAX_MS.
    const started = performance.now();
    let renewing: Promise<unknown> | undefined;
    const renewal = setInterval(() => {
      if (renewing || performance.now() - started > READ_BACK_MAX_MS) return;
      renewing = this.holdLease()
        .catch(() => undefined)
        .finally(() => (renewing = undefined));
    }, this.leaseMs / 3);
    let found = 0;
    try {
      const topics = await pendingTopics(this.rt.db, pendingTopicsScan(limit));
      // The topics are read at once. All settle before the round goes on (a failed one ends it), so no reader
      // outlives it.
      // Two batches of the predecessor's size, which a rolling deploy may have changed (an older relay's
      // holder names none: then this one's).
      const window = 2 * Math.max(limit, this.predecessorBatch);
      const reads = await Promise.allSettled(topics.map((topic) => readBack(topic, window)));
      const onBus = reads.map((r) => {
        if (r.status === 'rejected') throw r.reason;
        return r.value;
      });
      for (const [i, topic] of topics.entries()) {
        const { held, marked } = await markPublishedEvents(this.rt.db, topic, [...onBus[i]!], {
          lease: LEASE,
          holder: this.holder,
        });
        if (!held) this.steppedDown();
        found += marked;
      }
    } finally {
      clearInterval(renewal);
      await renewing;
    }
    if (found > 0)
      this.rt.log.info(
        { events: found, holder: this.holder },
        'events a previous relay had sent without marking them are marked, not sent again',
      );
    // Unless another relay held the lease during the read-back: then it starts over.
    if (this.handovers === handovers) this.reconciled = true;
  }

  /** Marks the last round's last batch published and reads what is pending, in one statement (fenced). */
  private async markSentAndRead(limit: number): Promise<OutboxRow[]> {
    if (this.sentUnmarked.length === 0) return pendingOutbox(this.rt.db, limit, [], this.heldKeys());
    const { marked, rows } = await markAndReadPending(
      this.rt.db,
      this.sentUnmarked,
      limit,
      { lease: LEASE, holder: this.holder },
      this.heldKeys(),
    );
    if (!marked) this.steppedDown();
    this.sentUnmarked = [];
    return rows;
  }

  private steppedDown(): never {
    this.leader = false;
    this.sentUnmarked = [];
    throw new Error('the relay lease moved to another relay; its rows stay for it to publish');
  }

  /**
   * The rows of a failed send that the bus wrote, as a PartialPublishError says (none for another error), but
   * those behind a row of their key it did not write (sent again after it, in order); the keys of the rows
   * it refused are held (see held).
   */
  private writtenOf(rows: readonly OutboxRow[], err: unknown): OutboxRow[] {
    if (!(err instanceof PartialPublishError)) return [];
    const written = new Set(err.written);
    const behind = new Set<string>();
    const sent: OutboxRow[] = [];
    for (const [i, r] of rows.entries()) {
      if (written.has(i) && !behind.has(r.key)) sent.push(r);
      else behind.add(r.key);
    }
    const now = performance.now();
    for (const i of err.refused) {
      const key = rows[i]?.key;
      if (key === undefined) continue;
      const before = this.held.get(key);
      if (!before && this.held.size >= MAX_HELD_KEYS) continue;
      const refusals = (before?.refusals ?? 0) + 1;
      this.held.set(key, { until: now + backoffDelay(refusals, HOLD, () => 1), refusals });
    }
    return sent;
  }

  /** The keys whose rows the reads leave out now (see held); holds long run out are forgotten. */
  private heldKeys(): string[] {
    if (this.held.size === 0) return [];
    const now = performance.now();
    const keys: string[] = [];
    for (const [key, h] of this.held) {
      if (h.until > now) keys.push(key);
      else if (now - h.until > HOLD_FORGET_MS) this.held.delete(key);
    }
    return keys;
  }

  /** A held key whose rows went out waits no more. */
  private released(rows: readonly OutboxRow[]): void {
    if (this.held.size > 0) for (const r of rows) this.held.delete(r.key);
  }

  /** Marks sent rows published, fenced on this relay still holding the lease (a usurped relay steps down). */
  private async mark(ids: readonly string[]): Promise<void> {
    const marked = await markPublished(this.rt.db, ids, { lease: LEASE, holder: this.holder });
    if (!marked) this.steppedDown();
  }

  /**
   * Once a minute, by the active relay (and at its first round), a housekeeping pass, beside its rounds: a
   * round starts it and does not wait for it. A round that awaited it published nothing meanwhile, and renewed
   * no lease: with a million ledger rows past retention an event committed then went out 11 s later, and a
   * standby took the lease after 1.5 s (and pruned in its first round too). One pass at a time.
   */
  private startHousekeeping(): void {
    const now = Date.now();
    if (this.housekeeping || now - this.lastHousekeeping < HOUSEKEEPING_MS) return;
    this.lastHousekeeping = now;
    this.housekeeping = this.housekeep()
      .catch((err: unknown) =>
        this.rt.log.warn({ err }, 'relay housekeeping failed; it runs again in a minute'),
      )
      .finally(() => (this.housekeeping = undefined));
  }

  /**
   * Old rows go, yielding to other work (Db.background). The prunes delete in batches and end between two once
   * the relay stops or has found the lease held by another relay, which prunes in its own passes.
   */
  private async housekeep(): Promise<void> {
    const handovers = this.handovers;
    const goOn = () => !this.loop.signal.aborted && this.handovers === handovers;
    const db = this.rt.db.background();
    await pruneOutbox(db, OUTBOX_KEEP_MS);
    if (goOn()) await this.rt.bus.admin.applyRetention?.();
    if (goOn()) await pruneIdempotencyKeys(db, undefined, goOn);
    if (!goOn()) return;
    const pruned = await pruneProcessed(db, this.rt.config.ledgerRetentionMs, undefined, goOn);
    if (pruned > 0) {
      this.metrics.ledgerPruned.inc(pruned);
      this.rt.log.info({ rows: pruned }, 'dedupe ledger pruned');
    }
  }

  async stop(): Promise<void> {
    this.rt.db.signals.off(OUTBOX_SIGNAL, this.onSignal);
    this.rt.db.signals.off(OUTBOX_NOTIFY_EVENT, this.onSignal);
    clearInterval(this.statsTimer);
    await this.loop.stop();
    await this.housekeeping; // ends after its current statement (the loop's signal is aborted)
    await this.statsReading;
    if (!this.leader) return;
    if (this.sentUnmarked.length > 0)
      await this.mark(this.sentUnmarked).catch((err: unknown) =>
        this.rt.log.warn({ err }, 'could not mark the last batch published; the next relay checks it'),
      );
    this.sentUnmarked = [];
    // Ended, not deleted: the next holder learns whom it follows (its batch size, where it published).
    await expireLease(this.rt.db, LEASE, this.holder).catch(() => undefined);
  }
}

export const relayTarget: TargetDefinition = {
  name: 'relay',
  async start(rt): Promise<RunningTarget> {
    const relay = new Relay(rt);
    relay.start();
    return { stop: () => relay.stop() };
  },
};
