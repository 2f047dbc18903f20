/**
 * Consuming as a consumer group: a member per subscription; the messages of a partition are handled in order
 * (runs through the consumer of consumer.ts), partitions in parallel, and a partition's position is committed only after its
 * messages were handled or dead-lettered, at most once per COMMIT_INTERVAL_MS while busy.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  Consumer,
  ListOffsetTimestamps,
  stringDeserializer,
  type Message,
  type MessagesStream,
} from '@platformatic/kafka';
import { consumer, DEFAULT_MAX_BATCH } from '../consumer.ts';
import { PartitionWorker } from '../partition-worker.ts';
import type { SubscribeOptions, Subscriber, Subscription } from '../types.ts';
import { retryWithBackoff } from '../../retry.ts';
import { LiveSubscriptions } from '../subscriptions.ts';
import { errorText } from '../../error-text.ts';
import { decodeRecord } from './codec.ts';
import {
  connectionOptions,
  describeKafkaError,
  forceClose,
  isUnknownTopic,
  type KafkaBusOptions,
  type KafkaSettings,
} from './connection.ts';
import type { KafkaPublisher } from './publisher.ts';

/** Backoff between attempts to rejoin after the consumer stream ended. */
const RECONNECT = { maxAttempts: 0, baseDelayMs: 500, maxDelayMs: 15_000 };

/** How long the broker holds a fetch that finds too little, at most: what an idle group costs (a Fetch each). */
const FETCH_WAIT_MS = 500;
/**
 * What a batching group's fetch waits for before the broker answers it (or FETCH_WAIT_MS has passed). A group
 * that handles every message at once (batchIntervalMs 0) is answered at the first byte; a batching group
 * (reminders, recurrence, notifications, audit) waits in the client for its interval anyway (drain), so a
 * fetch answered at the first byte cost a Fetch request, client and broker CPU, for almost every message at
 * moderate rates. Measured (3 partitions, 80 small messages/s, 200 ms interval): 8 KiB gives the same 15
 * batches/s as 1 byte with consume p95 282 ms; a 100 ms hold instead gave p95 266 ms but doubled an idle
 * `taskflow up`'s Kafka CPU (a Fetch every 50 ms per group: 71 -> 130-150 ms/s, server and broker).
 */
export function fetchWait(batchIntervalMs: number): { maxWaitTime: number; minBytes: number } {
  return { maxWaitTime: FETCH_WAIT_MS, minBytes: batchIntervalMs > 0 ? 8 * 1024 : 1 };
}

class KafkaGroupMember implements Subscription {
  private consumer!: Consumer<string, Buffer, string, string>;
  private stream!: MessagesStream<string, Buffer, string, string>;
  private readonly queues = new Map<string, Message<string, Buffer, string, string>[]>();
  private readonly running = new Map<string, Promise<void>>();
  /**
   * Per partition handled here: its worker, and what stops it when a rebalance gives the partition to another
   * member (see `assigned`).
   */
  private readonly partitions = new Map<
    string,
    { worker: PartitionWorker<Message<string, Buffer, string, string>>; revoked: AbortController }
  >();
  /** Per partition: the commit of handled messages once COMMIT_INTERVAL_MS is over (PartitionWorker). */
  private readonly commitTimers = new Map<string, NodeJS.Timeout>();
  private buffered = 0;
  private readonly closing = new AbortController();
  /**
   * The partitions the group gave this member at its last join (`topic\u0000partition`); null until the
   * first. A partition taken away is stopped at once (its worker's signal): its queued messages are not
   * handled here, and nothing more of it is committed here; the new owner reads on from the last commit.
   */
  private assigned: Set<string> | null = null;
  /**
   * Per partition, the offset of the last message queued here. After every join the client fetches each
   * assigned partition again from its last commit, so what is queued or was handled since comes a second time:
   * skipped, so a kept partition is neither handled twice nor committed backwards.
   */
  private readonly lastQueued = new Map<string, bigint>();
  /**
   * Per partition taken away: the first offset this member had not handled of it (in hand, queued, or fetched
   * after the rebalance and dropped). The client keeps where its own fetches of a partition ended and, when the
   * group has no position on it, reads on from there once it is given back: what was dropped here was skipped.
   */
  private readonly resumeAt = new Map<string, bigint>();
  private closed = false;
  private reconnecting: Promise<void> | undefined;
  /**
   * The partition count of each topic as of the last join: looked up before each join of the stream (which
   * assigns from metadata at least as new), and after a rejoin of the watch succeeded (watchPartitions). A
   * larger count later is a partition the group may not read yet (or, at worst, one rebalance more).
   */
  private readonly partitionCounts = new Map<string, number>();
  private partitionWatch: NodeJS.Timeout | undefined;

  constructor(
    private readonly s: KafkaSettings,
    private readonly opts: SubscribeOptions,
    private readonly publisher: KafkaPublisher,
    private readonly cfg: Required<KafkaBusOptions>,
  ) {}

  private get prefix() {
    return this.s.topicPrefix ?? '';
  }

  async start(): Promise<void> {
    await this.connect();
    this.attach();
    this.partitionWatch = setInterval(() => void this.watchPartitions(), this.cfg.partitionCheckMs);
    this.partitionWatch.unref();
  }

  /** Rejoins the group when a topic has more partitions than at the last look (see partitionCounts). */
  private async watchPartitions(): Promise<void> {
    if (this.closed || this.reconnecting) return;
    try {
      const counts = await this.lookUpPartitions();
      if ([...counts].some(([t, n]) => n > (this.partitionCounts.get(t) ?? n))) {
        if (this.closed || this.reconnecting) return;
        this.cfg.log.info(
          { group: this.opts.group, topics: this.opts.topics },
          'partitions were added to a topic; rejoining the group',
        );
        await this.consumer.joinGroup({});
      }
      // Recorded once joined: a join that failed (or did not happen) is tried again at the next look.
      for (const [t, n] of counts) this.partitionCounts.set(t, n);
    } catch (err) {
      // Looked at again next time; a broker outage is the stream's to recover from (reconnect).
      this.cfg.log.debug({ group: this.opts.group, err: describeKafkaError(err) }, 'partition check failed');
    }
  }

  /** The partition count of each of the member's topics that exists, as the brokers say now. */
  private async lookUpPartitions(): Promise<Map<string, number>> {
    const topics = this.opts.topics.map((t) => this.prefix + t);
    const meta = await this.consumer.metadata({ topics, forceUpdate: true });
    const counts = new Map<string, number>();
    for (const t of topics) {
      const count = meta.topics.get(t)?.partitionsCount;
      if (count !== undefined) counts.set(t, count);
    }
    return counts;
  }

  /** Creates the consumer and its stream, waiting (bounded) for topics that do not exist yet. */
  private async connect(): Promise<void> {
    this.consumer = new Consumer<string, Buffer, string, string>({
      ...connectionOptions(this.s),
      groupId: this.prefix + this.opts.group,
      deserializers: {
        key: stringDeserializer,
        headerKey: stringDeserializer,
        // A header without a value (Java's `headers.add(k, null)`, Kafka Connect) reads as '' as in admin.ts: as
        // undefined it went into the record's dead letter, whose send threw on it for ever (the partition stuck).
        headerValue: (value?: Buffer) => value?.toString('utf8') ?? '',
      },
      autocommit: false,
      sessionTimeout: this.cfg.sessionTimeoutMs,
      heartbeatInterval: this.cfg.heartbeatIntervalMs,
      rebalanceTimeout: this.cfg.sessionTimeoutMs,
      ...fetchWait(this.opts.batchIntervalMs ?? 0),
    });
    const topics = this.opts.topics.map((t) => this.prefix + t);
    const deadline = Date.now() + this.cfg.topicWaitMs;
    for (let attempt = 1; ; attempt++) {
      try {
        // Before the join: it assigns from metadata at least this new (partitionCounts).
        for (const [t, n] of await this.lookUpPartitions()) this.partitionCounts.set(t, n);
        this.stream = await this.consumer.consume({
          topics,
          mode: 'committed',
          fallbackMode: this.opts.fromBeginning === false ? 'latest' : 'earliest',
          autocommit: false,
        });
        break;
      } catch (err) {
        // Topics are created in the background at start-up, and a new topic's metadata takes a moment to
        // reach every broker: wait for it, as Kafka's own consumers do, but not forever.
        const wait = Math.min(5_000, 100 * 2 ** attempt);
        if (isUnknownTopic(err) && Date.now() + wait < deadline) {
          this.cfg.log.warn(
            { group: this.opts.group, topics, retry_in_ms: wait },
            'waiting for Kafka topics to exist',
          );
          await sleep(wait, undefined, { signal: this.closing.signal }).catch(() => undefined);
          if (!this.closing.signal.aborted) continue;
        }
        await forceClose(this.consumer);
        const hint = isUnknownTopic(err)
          ? ` (waited ${Math.round(this.cfg.topicWaitMs / 1000)} s; create them with \`taskflow topics ensure\`, or start a process with KAFKA_ENSURE_TOPICS=true)`
          : '';
        throw new Error(`Kafka subscribe (${this.opts.group}) failed: ${describeKafkaError(err)}${hint}`, {
          cause: err,
        });
      }
    }
  }

  private attach(): void {
    const stream = this.stream;
    this.consumer.on('consumer:group:join', () => this.onAssignment());
    // A rejoin the client's heartbeat started (a rebalance) that failed through its retries (the broker went
    // meanwhile) is an 'error' event of the consumer: unheard, it ended the process. The member is out of the
    // group (no more heartbeats) while its stream fetches on: end the stream, and rejoin as after an outage.
    this.consumer.on('error', (err) => {
      this.cfg.log.warn(
        { err: describeKafkaError(err), group: this.opts.group },
        'kafka consumer could not rejoin its group; reconnecting',
      );
      if (stream === this.stream) void stream.close().catch(() => undefined);
    });
    this.onAssignment();
    if (this.opts.fromBeginning === false) stream.on('offsets', () => void this.commitStartPositions(stream));
    stream.on('data', (m) => this.enqueue(m));
    stream.on('error', (err) =>
      this.cfg.log.error(
        { err: describeKafkaError(err), group: this.opts.group },
        'kafka consumer stream error',
      ),
    );
    // The client ends its stream when its own retries run out (a broker outage longer than a few seconds);
    // it does not come back by itself.
    stream.on('close', () => {
      if (!this.closed && stream === this.stream) void this.reconnect();
    });
  }

  /**
   * Replaces an ended stream: finishes what is queued (its commits may fail; it is redelivered, and handlers
   * are idempotent), then rejoins the group from the committed positions, retrying with capped backoff for as
   * long as the broker is unreachable.
   */
  private reconnect(): Promise<void> {
    this.reconnecting ??= (async () => {
      const group = this.opts.group;
      this.cfg.log.warn({ group }, 'kafka consumer stream ended; reconnecting');
      await Promise.all(this.running.values());
      await Promise.all([...this.partitions.keys()].map((id) => this.commitNow(id)));
      await this.moveLostPositions();
      await forceClose(this.consumer);
      await retryWithBackoff(
        async (attempt) => {
          await this.connect();
          this.attach();
          this.cfg.log.info({ group, attempts: attempt }, 'kafka consumer reconnected');
        },
        {
          policy: RECONNECT,
          random: () => 0.5 + Math.random() / 2,
          signal: this.closing.signal,
          waitFirst: true,
          onFailure: (err, attempt) =>
            this.cfg.log.warn({ group, err: describeKafkaError(err), attempt }, 'kafka reconnect failed'),
        },
      );
    })().finally(() => (this.reconnecting = undefined));
    return this.reconnecting;
  }

  /**
   * Positions of this member's partitions that the broker no longer keeps (retention deleted the records while
   * the group was stopped: `task-updates` keeps an hour; or kafka-delete-records) are moved to the oldest record
   * kept (the newest for a group that starts at the end), as Kafka's own consumers do (auto.offset.reset): every
   * fetch from such a position was refused, the stream ended, and the member rejoined at the same position for
   * good, handling nothing. Committed as the member (still in the group), so other members need not stop.
   */
  private async moveLostPositions(): Promise<void> {
    const assigned = this.consumer.assignments ?? [];
    if (assigned.length === 0) return;
    const topics = assigned.map((a) => a.topic);
    try {
      const [committed, earliest, latest] = await Promise.all([
        this.consumer.listCommittedOffsets({ topics: assigned }),
        this.consumer.listOffsets({ topics, timestamp: ListOffsetTimestamps.EARLIEST }),
        this.opts.fromBeginning === false
          ? this.consumer.listOffsets({ topics, timestamp: ListOffsetTimestamps.LATEST })
          : undefined,
      ]);
      const moves: { topic: string; partition: number; offset: bigint; leaderEpoch: number }[] = [];
      for (const { topic, partitions } of assigned)
        for (const partition of partitions) {
          const at = committed.get(topic)?.[partition];
          const start = earliest.get(topic)?.[partition];
          if (at === undefined || start === undefined || at < 0n || at >= start) continue;
          const to = latest?.get(topic)?.[partition] ?? start;
          moves.push({ topic, partition, offset: to, leaderEpoch: -1 });
          this.cfg.log.warn(
            { group: this.opts.group, topic, partition, committed: String(at), log_start: String(start) },
            `kafka: the group's position is no longer kept (retention deleted ${String(start - at)} record(s) while it was away); reading on from ${String(to)}`,
          );
        }
      // Only if no rebalance came meanwhile: a commit is checked by the member's generation, not by whose the
      // partition is, and it would move another owner's position back.
      if (moves.length && this.consumer.assignments === assigned)
        await this.consumer.commit({ offsets: moves });
    } catch (err) {
      this.cfg.log.warn(
        { group: this.opts.group, err: describeKafkaError(err) },
        'kafka: could not check the group positions against what the broker keeps',
      );
    }
  }

  /**
   * A group that starts at the end commits where it starts on each partition given to it that it has no
   * position on: its lag is then what came after (not unknown on a partition nothing reached yet: `taskflow
   * lag`), and a restart resumes there instead of at the end of then. Run when the stream has its positions
   * after a join (its 'offsets' event), before it fetched from them.
   */
  private async commitStartPositions(stream: MessagesStream<string, Buffer, string, string>): Promise<void> {
    const assigned = this.consumer.assignments ?? [];
    const fetchAt = new Map(stream.offsetsToFetch); // where it starts, before a fetch moves it
    if (assigned.length === 0 || this.closed) return;
    try {
      const committed = await this.consumer.listCommittedOffsets({ topics: assigned });
      // Not one the member handled messages of: its worker commits it (checked just before sending, so this
      // commit goes out first on the coordinator's connection, and never moves a position back).
      const offsets = assigned.flatMap(({ topic, partitions }) =>
        partitions.flatMap((partition) => {
          const at = fetchAt.get(`${topic}:${partition}`);
          const has = (committed.get(topic)?.[partition] ?? -1n) >= 0n;
          return at === undefined || has || this.partitions.has(`${topic}\u0000${partition}`)
            ? []
            : [{ topic, partition, offset: at, leaderEpoch: -1 }];
        }),
      );
      // Only if no rebalance came meanwhile (as moveLostPositions).
      if (offsets.length && !this.closed && this.consumer.assignments === assigned && stream === this.stream)
        await this.consumer.commit({ offsets });
    } catch (err) {
      // The first handled message commits the partition instead.
      this.cfg.log.debug(
        { group: this.opts.group, err: describeKafkaError(err) },
        'kafka: could not commit where the group starts',
      );
    }
  }

  /**
   * After a (re)join: stops the workers of partitions the group gave to another member, and reads one given
   * back from no later than what was left unhandled here (resumeAt): the stream's refresh after the join, which
   * runs after this, moves it to the group's position if there is one.
   */
  private onAssignment(): void {
    const assignments = this.consumer.assignments;
    if (!assignments) return; // not joined yet
    const before = this.assigned;
    this.assigned = new Set(assignments.flatMap((a) => a.partitions.map((p) => `${a.topic}\u0000${p}`)));
    const fetchAt = this.stream.offsetsToFetch;
    const keyOf = (id: string) => id.replace('\u0000', ':'); // the client's key of a partition
    for (const id of before ?? [])
      if (!this.assigned.has(id)) {
        const last = this.lastQueued.get(id);
        const at =
          this.queues.get(id)?.[0]?.offset ?? (last === undefined ? fetchAt.get(keyOf(id)) : last + 1n);
        if (at !== undefined) this.resumeAt.set(id, at);
      }
    for (const id of this.assigned) {
      const at = this.resumeAt.get(id);
      if (at === undefined) continue;
      this.resumeAt.delete(id);
      const fetching = fetchAt.get(keyOf(id));
      if (fetching === undefined || fetching > at) fetchAt.set(keyOf(id), at);
    }
    for (const [id, { revoked }] of this.partitions)
      if (!this.assigned.has(id)) {
        revoked.abort();
        // A later assignment starts afresh, from the committed position, in a queue of its own (the stopped
        // drain empties the old one).
        this.partitions.delete(id);
        this.queues.set(id, []);
        this.lastQueued.delete(id);
        clearTimeout(this.commitTimers.get(id));
        this.commitTimers.delete(id);
      }
  }

  private enqueue(m: Message<string, Buffer, string, string>) {
    if (this.closed) return;
    const id = `${m.topic}\u0000${m.partition}`;
    if (this.assigned && !this.assigned.has(id)) return; // fetched before a rebalance took it away
    const last = this.lastQueued.get(id);
    if (last !== undefined && m.offset <= last) return; // fetched again after a join: queued already
    this.lastQueued.set(id, m.offset);
    const q = this.queues.get(id) ?? [];
    q.push(m);
    this.queues.set(id, q);
    if (++this.buffered >= this.cfg.maxBuffered) this.stream.pause();
    this.startDrain(id);
  }

  private startDrain(id: string): void {
    if (this.running.has(id)) return;
    const run: Promise<void> = this.drain(id)
      .catch((err: unknown) => {
        // A fault of ours (the handlers' own failures are retried or dead-lettered inside): unhandled, it ended
        // the process, and again at the same record after each restart. The partition stops here, said loudly,
        // and its queue is tried again after a pause; the others go on.
        this.cfg.log.error(
          { err: errorText(err), group: this.opts.group, partition: id.replace('\u0000', '/') },
          'partition stopped by an unexpected error; trying it again in 5 s',
        );
        const again = setTimeout(() => {
          if (!this.closed && this.queues.get(id)?.length) this.startDrain(id);
        }, 5_000);
        again.unref();
      })
      .finally(() => {
        if (this.running.get(id) === run) this.running.delete(id);
      });
    this.running.set(id, run);
  }

  /**
   * The worker of a partition: its messages are decoded (waiting for the registry while it is unreachable)
   * and handled in runs; a commit is the offset of the last handled message, covering every earlier one.
   */
  private workerOf(id: string) {
    const handled = this.partitions.get(id);
    if (handled) return handled.worker;
    const unprefix = (t: string) => (t.startsWith(this.prefix) ? t.slice(this.prefix.length) : t);
    const revoked = new AbortController();
    const signal = AbortSignal.any([this.closing.signal, revoked.signal]);
    const consume = consumer(this.opts, {
      group: this.opts.group,
      policy: this.cfg.retry,
      publisher: this.publisher,
      log: this.cfg.log,
      signal,
      ...(this.opts.hooks ? { hooks: this.opts.hooks } : {}),
    });
    const worker = new PartitionWorker<Message<string, Buffer, string, string>>({
      consume: async (run) => {
        await this.cfg.codec.prepareDecode(run, signal, { hold: true });
        if (signal.aborted) return 0;
        return consume(run.map((raw) => decodeRecord(raw, unprefix, this.cfg.codec)));
      },
      commit: async (m) => {
        if (revoked.signal.aborted) return false; // another member's now: it reads on from the last commit
        try {
          // Through the consumer of now, not the one that fetched it: after a reconnect that one is closed.
          await this.consumer.commit({
            offsets: [{ topic: m.topic, partition: m.partition, offset: m.offset + 1n, leaderEpoch: -1 }],
          });
        } catch (err) {
          // Moved by a rebalance: the new owner re-reads from the last commit (idempotent handlers).
          if (revoked.signal.aborted) return false;
          // Still this member's (a broker outage): tried again later and on close, or the position stayed one
          // behind for good and the next owner handled the message again.
          this.cfg.log.warn(
            { err: describeKafkaError(err), group: this.opts.group, topic: m.topic, partition: m.partition },
            'offset commit failed; it is tried again',
          );
          throw err;
        }
        return true;
      },
      maxBatch: this.opts.maxBatch ?? DEFAULT_MAX_BATCH,
      batchIntervalMs: this.opts.batchIntervalMs ?? 0,
    });
    this.partitions.set(id, { worker, revoked });
    return worker;
  }

  /**
   * Once COMMIT_INTERVAL_MS is over, commits what the partition handled since its last commit: an offset
   * commit is a broker request, and committing whenever a queue runs dry meant one per message at moderate
   * rates; after a crash at most COMMIT_INTERVAL_MS of handled messages are redelivered (idempotent handlers).
   */
  private commitLater(id: string, worker: PartitionWorker<unknown>): void {
    const due = worker.commitDueIn();
    if (due === Infinity || this.commitTimers.has(id)) return;
    const timer = setTimeout(() => void this.commitNow(id), Math.max(0, due));
    timer.unref();
    this.commitTimers.set(id, timer);
  }

  private async commitNow(id: string): Promise<void> {
    clearTimeout(this.commitTimers.get(id));
    this.commitTimers.delete(id);
    const worker = this.partitions.get(id)?.worker;
    // A failed commit keeps what it was to commit (logged by the commit): due again in COMMIT_INTERVAL_MS.
    await worker?.commit().catch(() => {
      if (!this.closed) this.commitLater(id, worker);
    });
  }

  /** Handles one partition's queue in order, a run at a time (PartitionWorker commits). */
  private async drain(id: string): Promise<void> {
    const q = this.queues.get(id)!;
    const worker = this.workerOf(id);
    const max = this.opts.maxBatch ?? DEFAULT_MAX_BATCH;
    const taken = () => this.partitions.get(id)?.worker !== worker; // a rebalance gave the partition to another member
    for (;;) {
      while (q.length && !this.closing.signal.aborted && !taken()) {
        // A short run soon after the last batch: let more arrive (SubscribeOptions.batchIntervalMs, fetchWait).
        const wait = worker.waitBefore(q.length);
        if (wait > 0) await sleep(wait);
        const run = q.slice(0, max);
        const done = await worker.handle(run);
        if (done > 0) {
          q.splice(0, done);
          this.buffered -= done;
          if (this.buffered < this.cfg.maxBuffered / 2 && this.stream.isPaused()) this.stream.resume();
        }
        if (done < run.length) break; // shutdown: the rest stays uncommitted
        this.commitLater(id, worker);
      }
      if (taken()) {
        // Its queued messages are the new owner's to read (from the last commit), not this member's.
        this.buffered -= q.length;
        q.length = 0;
        if (this.buffered < this.cfg.maxBuffered / 2 && this.stream.isPaused()) this.stream.resume();
        this.running.delete(id);
        // Given back meanwhile: what arrived for it since is in a queue of its own.
        if (this.queues.get(id)?.length) this.startDrain(id);
        return;
      }
      // On shutdown commit what was handled now; otherwise a timer does it once the interval is over.
      if (this.closing.signal.aborted) await this.commitNow(id);
      // Leave only with an empty queue (or on shutdown), and give up the slot synchronously so the next
      // message starts a new drain.
      if (q.length === 0 || this.closing.signal.aborted) {
        this.running.delete(id);
        return;
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.partitionWatch);
    // Stop fetching, let the message in hand finish (pending backoffs abort; they are redelivered later).
    this.stream.pause();
    this.closing.abort();
    await this.reconnecting;
    await Promise.all(this.running.values());
    await Promise.all([...this.partitions.keys()].map((id) => this.commitNow(id)));
    await this.stream.close().catch(() => undefined);
    await forceClose(this.consumer);
  }
}

export class KafkaSubscriber implements Subscriber {
  private readonly members = new LiveSubscriptions<KafkaGroupMember>();
  constructor(
    private readonly s: KafkaSettings,
    private readonly publisher: KafkaPublisher,
    private readonly cfg: Required<KafkaBusOptions>,
  ) {}

  async subscribe(opts: SubscribeOptions): Promise<Subscription> {
    return this.members.add(new KafkaGroupMember(this.s, opts, this.publisher, this.cfg));
  }

  close(): Promise<void> {
    return this.members.closeAll();
  }
}
