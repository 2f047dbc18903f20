/**
 * Consumer groups on the embedded bus: members heartbeat and split the partitions, own each through a lease,
 * and handle a partition's messages in order (runs through the consumer of consumer.ts), committing fenced positions.
 */
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomUUID } from 'node:crypto';
import { notifyEvent, type Db } from '../../store/db.ts';
import { consumer, DEFAULT_MAX_BATCH, type ConsumeHooks } from '../consumer.ts';
import { PartitionWorker } from '../partition-worker.ts';
import { DEFAULT_RETRY } from '../../retry.ts';
import type { EmbeddedLog } from './log.ts';
import { LOG_NOTIFY_CHANNEL, byCodeUnits, ensureTopic, partitionId } from './log.ts';
import type { BusMessage, SubscribeOptions, Subscriber, Subscription } from '../types.ts';
import { LiveSubscriptions } from '../subscriptions.ts';
import { waitForEvent } from '../../wait.ts';
import {
  DEFAULT_SESSION_TIMEOUT_MS,
  toMessage,
  type EmbeddedBusOptions,
  type MessageRow,
} from './options.ts';
import type { EmbeddedPublisher } from './publisher.ts';
import { errorMessage } from '../../error-text.ts';
/** The `signals` event a NOTIFY of another process's append becomes (payload `topic/partition`, or '*'). */
const NOTIFY_EVENT = notifyEvent(LOG_NOTIFY_CHANNEL);
/** How long a member keeps a partition it gave up while a handler there finishes (Kafka's max.poll.interval.ms). */
const RELEASE_HOLD_MS = 300_000;
/** A partition's key in `owned` and `releasing`. */
const ownedId = (p: { topic: string; partition: number }) => `${p.topic}\u0000${p.partition}`;

interface OwnedPartition {
  topic: string;
  partition: number;
  stop: AbortController;
  done: Promise<void>;
  leaseUntil: number;
}

class GroupMember implements Subscription {
  readonly memberId = randomUUID();
  /** Partitions this member works on; `leaseUntil` is when its ownership lapses unless renewed (performance.now()). */
  private readonly owned = new Map<string, OwnedPartition>();
  /**
   * Partitions given up and not yet released: their worker finishes the message in hand, then their lease row
   * is deleted. Their leases are renewed meanwhile (for RELEASE_HOLD_MS at most), so no other member starts on
   * them while that message is in hand here; and they are not claimed again here until released (two workers
   * of one partition would break its order).
   */
  private readonly releasing = new Map<
    string,
    { topic: string; partition: number; since: number; done: Promise<void> }
  >();
  private readonly closing = new AbortController();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private rebalancing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly db: Db,
    private readonly log: EmbeddedLog,
    private readonly publisher: EmbeddedPublisher,
    private readonly opts: SubscribeOptions,
    private readonly cfg: Required<Omit<EmbeddedBusOptions, 'hooks'>> & { hooks?: ConsumeHooks },
  ) {}

  async start(): Promise<void> {
    this.db.listen(LOG_NOTIFY_CHANNEL);
    for (const t of this.opts.topics) await ensureTopic(this.db, t);
    await this.rebalance();
    // A tick while the last heartbeat still waits (a database outage or stall) is skipped: queued, they all
    // ran back to back once the database answered again.
    let beating = false;
    this.heartbeatTimer = setInterval(() => {
      if (beating) return;
      beating = true;
      this.rebalancing = this.rebalancing
        .then(() => this.rebalance())
        .catch((err: unknown) => {
          this.cfg.log.warn({ err, group: this.opts.group }, 'embedded bus heartbeat failed');
        })
        .finally(() => (beating = false));
    }, this.cfg.heartbeatIntervalMs);
    this.heartbeatTimer.unref();
  }

  /** Heartbeat, expire dead members, compute this member's share and claim/release partition leases. */
  private async rebalance(): Promise<void> {
    if (this.closed) return;
    const { group, topics } = this.opts;
    const sessionMs = this.cfg.sessionTimeoutMs;
    // One statement: heartbeat, expire members silent for a session, and read the live ones (the SELECT sees
    // the table as it was before the CTEs, so it adds this member and leaves out the expired ones itself).
    const members = (
      await this.db.query<{ member_id: string; topics: string[] | null }>(
        `WITH beat AS (
           INSERT INTO bus_group_members (group_id, member_id, topics, heartbeat_at) VALUES ($1, $2, $3, now())
           ON CONFLICT (group_id, member_id) DO UPDATE SET heartbeat_at = now(), topics = excluded.topics
           RETURNING member_id, topics),
         expired AS (
           DELETE FROM bus_group_members
            WHERE group_id = $1 AND member_id <> $2 AND heartbeat_at < now() - ($4::int * interval '1 millisecond')
           RETURNING member_id)
         SELECT member_id, topics FROM bus_group_members
          WHERE group_id = $1 AND member_id <> $2 AND member_id NOT IN (SELECT member_id FROM expired)
         UNION ALL SELECT member_id, topics FROM beat`,
        [group, this.memberId, topics, sessionMs],
      )
    ).rows
      .map((m) => ({ member_id: m.member_id, topics: m.topics ?? topics }))
      .sort((a, b) => byCodeUnits(a.member_id, b.member_id));
    const parts = (
      await this.db.query<{ topic: string; partition: number }>(
        `SELECT topic, partition FROM bus_partitions WHERE topic = ANY($1::text[])
          ORDER BY topic COLLATE "C", partition`,
        [[...new Set(members.flatMap((m) => m.topics))]],
      )
    ).rows;
    const desired = assignPartitions(parts, members).get(this.memberId) ?? [];
    const desiredIds = new Set(desired.map(ownedId));
    // Release what is no longer ours, each after the message in hand. Not awaited: a handler can outlast the
    // session, and the heartbeats and the renewal of the partitions kept must go on meanwhile (else the group
    // would take those away too).
    for (const [id, w] of this.owned) if (!desiredIds.has(id)) this.release(id, w);
    await this.renewReleasing(sessionMs);
    const claimable = desired.filter((p) => !this.releasing.has(ownedId(p)));
    if (claimable.length === 0 || this.closed) return;
    // The leases run from (at the latest) now: a conservative local expiry, on the monotonic clock (a wall clock
    // stepped back, NTP or a resumed VM, kept a lease the database had given to another member).
    const asked = performance.now();
    // Claim (or renew) every wanted partition in one statement; a lease another member still holds stays.
    const claimed = await this.db.query<{ topic: string; partition: number }>(
      `INSERT INTO bus_partition_owners (group_id, topic, partition, member_id, lease_until)
       SELECT $1, w.topic, w.partition, $2, now() + ($3::int * interval '1 millisecond')
         FROM unnest($4::text[], $5::int[]) AS w(topic, partition)
       ON CONFLICT (group_id, topic, partition) DO UPDATE SET member_id = excluded.member_id, lease_until = excluded.lease_until
       WHERE bus_partition_owners.member_id = excluded.member_id OR bus_partition_owners.lease_until < now()
       RETURNING topic, partition`,
      [group, this.memberId, sessionMs, claimable.map((p) => p.topic), claimable.map((p) => p.partition)],
    );
    if (this.closed) return;
    for (const p of claimed.rows) {
      const id = ownedId(p);
      const owned = this.owned.get(id);
      if (owned) owned.leaseUntil = asked + sessionMs;
      else this.startWorker(id, p.topic, p.partition, asked + sessionMs);
    }
  }

  private startWorker(id: string, topic: string, partition: number, leaseUntil: number) {
    const stop = new AbortController();
    const signal = AbortSignal.any([stop.signal, this.closing.signal]);
    const owned: OwnedPartition = { topic, partition, stop, leaseUntil, done: Promise.resolve() };
    owned.done = this.work(topic, partition, signal, () => owned.leaseUntil).catch((err: unknown) => {
      this.cfg.log.error(
        { err, group: this.opts.group, topic, partition },
        'embedded partition worker failed',
      );
    });
    this.owned.set(id, owned);
    void owned.done.finally(() => {
      if (this.owned.get(id) === owned) this.owned.delete(id);
    });
  }

  /**
   * Renews the leases of the partitions being released that are still this member's, until RELEASE_HOLD_MS
   * after they were given up: a handler that hangs longer lets another member take the partition (it may then
   * handle that message too: at-least-once), as Kafka's rebalance timeout does.
   */
  private async renewReleasing(sessionMs: number): Promise<void> {
    const held = [...this.releasing.values()].filter((r) => performance.now() - r.since < RELEASE_HOLD_MS);
    await this.renew(held, sessionMs);
  }

  /**
   * Renews the leases of `rows` that are still this member's, one statement each, in (topic, partition) order:
   * a statement locking several rows could deadlock with another member's claim, which locks them in that
   * order and holds them to its commit. A failure leaves the lease to run out (logged).
   */
  private async renew(rows: readonly { topic: string; partition: number }[], sessionMs: number) {
    const sorted = [...rows].sort((a, b) =>
      a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition,
    );
    for (const r of sorted)
      await this.db
        .query(
          `UPDATE bus_partition_owners SET lease_until = now() + ($5::int * interval '1 millisecond')
            WHERE group_id = $1 AND topic = $2 AND partition = $3 AND member_id = $4`,
          [this.opts.group, r.topic, r.partition, this.memberId, sessionMs],
        )
        .catch((err: unknown) =>
          this.cfg.log.warn(
            { err, group: this.opts.group, topic: r.topic, partition: r.partition },
            'could not renew a partition lease',
          ),
        );
  }

  /** Stops a partition's worker (after the message in hand), then gives up its lease; see `releasing`. */
  private release(id: string, w: OwnedPartition): void {
    w.stop.abort();
    this.owned.delete(id);
    const released: Promise<void> = w.done
      .then(async () => {
        await this.db.query(
          'DELETE FROM bus_partition_owners WHERE group_id = $1 AND topic = $2 AND partition = $3 AND member_id = $4',
          [this.opts.group, w.topic, w.partition, this.memberId],
        );
      })
      .catch((err: unknown) =>
        // Its lease runs out instead: another member claims the partition then.
        this.cfg.log.warn(
          { err, group: this.opts.group, topic: w.topic, partition: w.partition },
          'could not release a partition',
        ),
      )
      .finally(() => {
        if (this.releasing.get(id)?.done === released) this.releasing.delete(id);
      });
    this.releasing.set(id, {
      topic: w.topic,
      partition: w.partition,
      since: performance.now(),
      done: released,
    });
  }

  private async startOffset(topic: string, partition: number): Promise<number> {
    const r = await this.db.query<{ committed: string | null; low: string | null; next: string }>(
      `SELECT (SELECT "offset"::text FROM bus_group_offsets WHERE group_id = $1 AND topic = $2 AND partition = $3) AS committed,
              (SELECT min("offset")::text FROM bus_messages WHERE topic = $2 AND partition = $3) AS low,
              (SELECT next_offset::text FROM bus_partitions WHERE topic = $2 AND partition = $3) AS next`,
      [this.opts.group, topic, partition],
    );
    const row = r.rows[0]!;
    const low = row.low === null ? Number(row.next) : Number(row.low);
    if (row.committed !== null) return Math.max(Number(row.committed), low);
    if (this.opts.fromBeginning !== false) return low;
    // A group that starts at the end commits where it starts: its lag is then what came after (not unknown on
    // a partition nothing reached yet), and a restart resumes there instead of at the end of then.
    await this.commit(topic, partition, Number(row.next));
    return Number(row.next);
  }

  /** Commits the next offset to read, only while this member still owns the partition. */
  private async commit(topic: string, partition: number, next: number): Promise<boolean> {
    const r = await this.db
      .query(
        `INSERT INTO bus_group_offsets (group_id, topic, partition, "offset", updated_at)
       SELECT $1, $2, $3, $4, now() WHERE EXISTS (
         SELECT 1 FROM bus_partition_owners WHERE group_id = $1 AND topic = $2 AND partition = $3 AND member_id = $5)
       ON CONFLICT (group_id, topic, partition) DO UPDATE SET "offset" = excluded."offset", updated_at = now()`,
        [this.opts.group, topic, partition, next, this.memberId],
      )
      .catch((err: unknown) => {
        // Kept to commit and tried again (PartitionWorker.commit), as on Kafka; said here.
        this.cfg.log.warn(
          { err: errorMessage(err), group: this.opts.group, topic, partition },
          'offset commit failed; it is tried again',
        );
        throw err;
      });
    return r.rowCount > 0;
  }

  /**
   * Consumes one partition: takes what this process appended from the log's in-memory tail, and reads the
   * table for the rest (a backlog at start, a gap, appends of other processes, the safety poll). The position
   * is committed at most every COMMIT_INTERVAL_MS while busy, within COMMIT_INTERVAL_MS once idle, and when the
   * worker stops: after a crash at most that much is redelivered (handlers are idempotent). Between commits
   * the worker fences itself on its lease: it stops as soon as the lease may have lapsed (a stalled process
   * whose partition another member may have claimed); the next heartbeat that renews the claim starts it again.
   */
  private async work(
    topic: string,
    partition: number,
    signal: AbortSignal,
    leaseUntil: () => number,
  ): Promise<void> {
    let position = await this.startOffset(topic, partition);
    const hooks = this.opts.hooks ?? this.cfg.hooks;
    // The run in hand stops between messages once the lease may have lapsed, not only before the next run: a
    // member whose heartbeats could not reach the database went on through up to a run of 100 messages that
    // another member had claimed and was handling (each twice, the second time after the user's later ones).
    const stillOwned = () => performance.now() < leaseUntil();
    const lapsed = new AbortController();
    let lapseTimer: NodeJS.Timeout | undefined;
    const watchLease = () => {
      const left = leaseUntil() - performance.now();
      if (left <= 0) lapsed.abort();
      else lapseTimer = setTimeout(watchLease, left).unref();
    };
    watchLease();
    const worker = new PartitionWorker<BusMessage>({
      consume: consumer(this.opts, {
        group: this.opts.group,
        policy: this.cfg.retry,
        publisher: this.publisher,
        log: this.cfg.log,
        signal: AbortSignal.any([signal, lapsed.signal]),
        // The timer's abort can come after a database answer that resumes the handler (an event loop held past
        // the session: CPU elsewhere in the process, a long GC pause): checked before each message too.
        stillOwned,
        ...(hooks ? { hooks } : {}),
      }),
      commit: (last) => this.commit(topic, partition, Number(last.offset) + 1),
      maxBatch: this.opts.maxBatch ?? DEFAULT_MAX_BATCH,
      batchIntervalMs: this.opts.batchIntervalMs ?? 0,
      owns: stillOwned,
    });
    const id = partitionId(topic, partition);
    const wake = new EventEmitter();
    // A wake-up during a read or a batch must not wait for the next poll: remember what it asked for.
    let woken: 'tail' | 'table' | undefined;
    const onAppend = () => {
      woken ??= 'tail';
      wake.emit('wake');
    };
    const onNotify = (payload: string) => {
      if (payload !== id && payload !== '*') return;
      woken = 'table';
      wake.emit('wake');
    };
    this.log.appended.on(id, onAppend);
    this.db.signals.on(NOTIFY_EVENT, onNotify);
    let readTable = true; // at start the backlog is in the table
    let tableReadAt = 0;
    try {
      while (!signal.aborted && stillOwned()) {
        if (woken === 'table') readTable = true;
        woken = undefined;
        let messages = readTable ? [] : this.log.take(topic, partition, position, this.cfg.batchSize);
        if (messages.length === 0 && (readTable || this.log.hasFrom(topic, partition, position))) {
          tableReadAt = Date.now();
          const rows = (
            await this.db.query<MessageRow>(
              `SELECT topic, partition, "offset"::text AS offset, key, headers, value, created_at FROM bus_messages
               WHERE topic = $1 AND partition = $2 AND "offset" >= $3 ORDER BY bus_messages."offset" LIMIT $4`,
              [topic, partition, position, this.cfg.batchSize],
            )
          ).rows;
          messages = rows.map(toMessage);
          readTable = rows.length === this.cfg.batchSize; // a full batch: more may be waiting there
        }
        if (messages.length === 0) {
          const commitIn = worker.commitDueIn();
          if (commitIn <= 0) {
            if (!(await worker.commit())) return; // lost the partition
            continue;
          }
          if (woken) continue;
          const pollIn = tableReadAt + this.cfg.pollIntervalMs - Date.now();
          if (pollIn > 0) await waitForEvent(wake, 'wake', Math.min(pollIn, commitIn), signal);
          if (!woken && Date.now() - tableReadAt >= this.cfg.pollIntervalMs) readTable = true;
          continue;
        }
        // A short run soon after the last batch: let more arrive, then take whatever the tail has by then.
        const wait = worker.waitBefore(messages.length);
        if (wait > 0) {
          await sleep(wait, undefined, { signal }).catch(() => undefined);
          if (signal.aborted) return;
          const more = this.log.take(topic, partition, position, this.cfg.batchSize);
          if (more.length > messages.length) messages = more;
        }
        const done = await worker.handle(messages);
        if (done > 0) position = Number(messages[done - 1]!.offset) + 1;
        if (done < messages.length || worker.lost) return; // shutdown, or the partition was lost
      }
    } finally {
      clearTimeout(lapseTimer);
      this.log.appended.off(id, onAppend);
      this.db.signals.off(NOTIFY_EVENT, onNotify);
      await worker
        .commit()
        .catch((err: unknown) =>
          this.cfg.log.warn(
            { err, group: this.opts.group, topic, partition },
            'could not commit the position on stop; the rest is redelivered',
          ),
        );
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeatTimer);
    await this.rebalancing.catch(() => undefined);
    this.closing.abort();
    // The handlers in hand finish first; the partitions stay this member's meanwhile, as in a release.
    const sessionMs = this.cfg.sessionTimeoutMs;
    const renewal = setInterval(
      () => void this.renew([...this.owned.values(), ...this.releasing.values()], sessionMs),
      this.cfg.heartbeatIntervalMs,
    );
    try {
      await Promise.all([...this.owned.values()].map((w) => w.done));
      await Promise.all([...this.releasing.values()].map((r) => r.done));
    } finally {
      clearInterval(renewal);
    }
    await this.db.query('DELETE FROM bus_partition_owners WHERE group_id = $1 AND member_id = $2', [
      this.opts.group,
      this.memberId,
    ]);
    await this.db.query('DELETE FROM bus_group_members WHERE group_id = $1 AND member_id = $2', [
      this.opts.group,
      this.memberId,
    ]);
  }
}

export class EmbeddedSubscriber implements Subscriber {
  private readonly members = new LiveSubscriptions<GroupMember>();
  private readonly cfg: Required<Omit<EmbeddedBusOptions, 'hooks'>> & { hooks?: ConsumeHooks };
  constructor(
    private readonly db: Db,
    private readonly log: EmbeddedLog,
    private readonly publisher: EmbeddedPublisher,
    opts: EmbeddedBusOptions,
  ) {
    this.cfg = {
      log: opts.log,
      retry: opts.retry ?? DEFAULT_RETRY,
      pollIntervalMs: opts.pollIntervalMs ?? 2_000,
      heartbeatIntervalMs: opts.heartbeatIntervalMs ?? 2_000,
      sessionTimeoutMs: opts.sessionTimeoutMs ?? DEFAULT_SESSION_TIMEOUT_MS,
      batchSize: opts.batchSize ?? 200,
      onAppended: () => undefined,
      ...(opts.hooks ? { hooks: opts.hooks } : {}),
    };
  }

  async subscribe(opts: SubscribeOptions): Promise<Subscription> {
    return this.members.add(new GroupMember(this.db, this.log, this.publisher, opts, this.cfg));
  }

  close(): Promise<void> {
    return this.members.closeAll();
  }
}

/**
 * Each partition to one of the members that read its topic, round robin over the members in order (Kafka's
 * round-robin assignor): every member computes the same split from the same rows. Members of one group may read
 * different topics (a rolling upgrade whose new version reads one more): splitting every member's own topics
 * among all members left partitions of a topic only some read to members that did not read it.
 */
export function assignPartitions<P extends { topic: string }>(
  parts: readonly P[],
  members: readonly { member_id: string; topics: readonly string[] }[],
): Map<string, P[]> {
  const out = new Map<string, P[]>();
  let next = 0;
  for (const p of parts) {
    for (let tried = 0; tried < members.length; tried++) {
      const m = members[(next + tried) % members.length]!;
      if (!m.topics.includes(p.topic)) continue;
      const list = out.get(m.member_id);
      if (list) list.push(p);
      else out.set(m.member_id, [p]);
      next = (next + tried + 1) % members.length;
      break;
    }
  }
  return out;
}
