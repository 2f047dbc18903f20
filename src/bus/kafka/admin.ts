/**
 * Kafka administration: topics, lag, groups, and reading a topic (dead letters, a relay's read-back, `tail`)
 * with Fetch requests, without a consumer group.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Admin, Consumer, IS_CONTROL, type fetchV17, type KafkaRecord } from '@platformatic/kafka';
import type { Logger } from '../../observability/logger.ts';
import { isDlqReplayCursor } from '../../contracts/topics.ts';
import {
  isPerInstanceKey,
  readsOf,
  type BusAdmin,
  type Offsets,
  type PartitionLag,
  type StoredMessage,
  type Subscribed,
} from '../types.ts';
import { decodeRecord, JSON_CODEC, type EventCodec, type StoredRecord } from './codec.ts';
import { connectionOptions, describeKafkaError, forceClose, type KafkaSettings } from './connection.ts';

/** The longest a bounded read of a topic (dead letters, a relay's read-back) keeps trying. */
const READ_TIMEOUT_MS = 15_000;

const text = (b: Buffer | null) => (b === null ? '' : b.toString('utf8'));

/** A fetched record as a consumer's message: string key and headers, the value's bytes. */
function recordOf(
  topic: string,
  partition: number,
  offset: bigint,
  firstTimestamp: bigint,
  r: KafkaRecord,
): StoredRecord {
  const headers = new Map<string, string>();
  for (const [k, v] of r.headers) headers.set(text(k), text(v));
  return {
    topic,
    partition,
    offset,
    key: r.key === null ? '' : r.key.toString('utf8'),
    value: r.value ?? Buffer.alloc(0),
    headers,
    timestamp: firstTimestamp + r.timestampDelta,
  };
}

export class KafkaAdmin implements BusAdmin {
  private readonly admin: Admin;
  constructor(
    private readonly s: KafkaSettings,
    private readonly log?: Logger,
    private readonly codec: EventCodec = JSON_CODEC,
  ) {
    this.admin = new Admin(connectionOptions(s));
  }

  private get prefix() {
    return this.s.topicPrefix ?? '';
  }

  async ensureTopics(
    topics: readonly { name: string; partitions: number; retentionMs: number }[],
  ): Promise<void> {
    let existing: Set<string>;
    try {
      existing = new Set(await this.admin.listTopics());
    } catch (err) {
      throw new Error(`could not list Kafka topics: ${describeKafkaError(err)}`, { cause: err });
    }
    const replicas = this.s.replicationFactor ?? 1;
    for (const t of topics) {
      const name = this.prefix + t.name;
      if (existing.has(name)) continue;
      try {
        await this.admin.createTopics({
          topics: [name],
          partitions: t.partitions,
          replicas,
          configs: [
            { name: 'retention.ms', value: String(t.retentionMs) },
            { name: 'cleanup.policy', value: 'delete' },
            // The broker holds the only copy of a published event (the outbox row is gone): with acks=all, a
            // write is then on two replicas at least before it counts, so one lost broker loses nothing.
            ...(replicas >= 3 ? [{ name: 'min.insync.replicas', value: '2' }] : []),
          ],
        });
        this.log?.info(
          { topic: name, partitions: t.partitions, retention_ms: t.retentionMs },
          'created topic',
        );
      } catch (err) {
        if (
          !/already exists/i.test(describeKafkaError(err)) &&
          !/TOPIC_ALREADY_EXISTS/.test(JSON.stringify(err, Object.getOwnPropertyNames(err)))
        )
          throw new Error(`could not create topic ${name}: ${describeKafkaError(err)}`, { cause: err });
      }
    }
  }

  async describeTopics() {
    const names = (await this.admin.listTopics()).filter(
      (n) => n.startsWith(this.prefix) && !n.startsWith('__'),
    );
    if (names.length === 0) return [];
    const meta = await this.admin.metadata({ topics: names });
    const configs = await this.admin.describeConfigs({
      resources: names.map((n) => ({
        resourceType: 2,
        resourceName: n,
        configurationKeys: ['retention.ms'],
      })),
    });
    const retention = new Map(
      configs.map((c) => [
        c.resourceName,
        Number(c.configs.find((x) => x.name === 'retention.ms')?.value ?? NaN),
      ]),
    );
    return names.sort().map((n) => ({
      name: n.slice(this.prefix.length),
      partitions: meta.topics.get(n)?.partitionsCount ?? 0,
      retentionMs: Number.isFinite(retention.get(n)) ? retention.get(n)! : null,
    }));
  }

  async listGroups(): Promise<string[]> {
    return [...(await this.groupStates()).keys()].sort();
  }

  /** The consumer groups as the bus names them (no DLQ replay cursors, no readers of ours), with their states. */
  private async groupStates(): Promise<Map<string, string>> {
    const groups = await this.admin.listGroups();
    return new Map(
      [...groups]
        .filter(
          ([g]) => g.startsWith(this.prefix) && !g.includes('taskflow-reader-') && !isDlqReplayCursor(g),
        )
        .map(([g, { state }]) => [g.slice(this.prefix.length), state]),
    );
  }

  /** Retained messages: the end offset minus the earliest offset (or `from`'s, if later), summed over the partitions. */
  async messageCount(topic: string, from: Offsets = new Map()): Promise<number> {
    const name = this.prefix + topic;
    if (!(await this.admin.listTopics()).includes(name)) return 0;
    let n = 0n;
    for (const [partition, { start, end }] of await this.bounds(name)) {
      const at = from.get(partition) ?? start;
      n += end - (at > start ? (at < end ? at : end) : start);
    }
    return Number(n);
  }

  async committedOffsets(group: string, topic: string): Promise<Offsets> {
    const [res] = await this.admin.listConsumerGroupOffsets({ groups: [this.prefix + group] });
    const out = new Map<number, bigint>();
    for (const t of res?.topics ?? [])
      if (t.name === this.prefix + topic)
        for (const p of t.partitions)
          if (p.committedOffset >= 0n) out.set(p.partitionIndex, p.committedOffset);
    return out;
  }

  async advanceOffsets(group: string, topic: string, wanted: Offsets): Promise<void> {
    if (wanted.size === 0) return;
    // Kafka sets what it is given: the positions read just before keep a partition from going back (only two
    // writers within those few milliseconds can still cross).
    const current = await this.committedOffsets(group, topic);
    const offsets = new Map(
      [...wanted].map(([p, offset]) => [p, (current.get(p) ?? -1n) > offset ? current.get(p)! : offset]),
    );
    await this.admin.alterConsumerGroupOffsets({
      groupId: this.prefix + group,
      topics: [
        {
          name: this.prefix + topic,
          partitionOffsets: [...offsets].map(([partition, offset]) => ({ partition, offset })),
        },
      ],
    });
  }

  /** Each partition's earliest retained offset and its end (the next offset), for one topic. */
  private async bounds(physical: string): Promise<Map<number, { start: bigint; end: bigint }>> {
    const [ends, starts] = await Promise.all([this.endOffsets([physical]), this.endOffsets([physical], -2n)]);
    const out = new Map<number, { start: bigint; end: bigint }>();
    for (const [id, end] of ends)
      out.set(Number(id.split('\u0000')[1]), { start: starts.get(id) ?? 0n, end });
    return out;
  }

  /** A physical topic name as the bus names it (without KAFKA_TOPIC_PREFIX). */
  private readonly unprefix = (t: string) => (t.startsWith(this.prefix) ? t.slice(this.prefix.length) : t);

  /** Offsets per partition at `timestamp`: -1 = the end (next offset), -2 = the earliest retained. */
  private async endOffsets(topics: string[], timestamp = -1n): Promise<Map<string, bigint>> {
    const meta = await this.admin.metadata({ topics });
    const request = topics.map((name) => ({
      name,
      partitions: Array.from({ length: meta.topics.get(name)?.partitionsCount ?? 0 }, (_, p) => ({
        partitionIndex: p,
        timestamp,
      })),
    }));
    const res = await this.admin.listOffsets({ topics: request });
    const out = new Map<string, bigint>();
    for (const t of res)
      for (const p of t.partitions) out.set(`${t.name}\u0000${p.partitionIndex}`, p.offset);
    return out;
  }

  async lag(group?: string, subscribed: Subscribed = new Map()): Promise<PartitionLag[]> {
    // The groups there are and their states: to list them, or to say whether an instance's group runs.
    const states =
      group === undefined || readsOf(subscribed, group).perInstance
        ? await this.groupStates()
        : new Map<string, string>();
    const groups = group
      ? [group]
      : [...new Set([...states.keys(), ...[...subscribed.keys()].filter((g) => !isPerInstanceKey(g))])];
    const out: PartitionLag[] = [];
    // A topic a group reads may not exist yet (nothing asked for its offsets then): read once for all groups.
    const existing = subscribed.size ? new Set(await this.admin.listTopics()) : new Set<string>();
    for (const g of groups) {
      const { topics: reads, perInstance } = readsOf(subscribed, g);
      // EMPTY: no member (the instance stopped); DEAD or not listed: no group at all.
      const state = states.get(g);
      const running = state !== undefined && state !== 'EMPTY' && state !== 'DEAD';
      const [res] = await this.admin.listConsumerGroupOffsets({ groups: [this.prefix + g] });
      const committed = new Map<string, bigint>();
      const listed = new Set<string>();
      for (const t of res?.topics ?? [])
        for (const p of t.partitions) {
          const id = `${t.name}\u0000${p.partitionIndex}`;
          listed.add(id);
          if (p.committedOffset >= 0n) committed.set(id, p.committedOffset);
        }
      // An instance's group that neither runs nor committed is no group (a misspelt instance, say).
      if (perInstance && !running && committed.size === 0) continue;
      const topics = [
        ...new Set([
          ...(res?.topics ?? []).map((t) => t.name),
          ...reads.map((t) => this.prefix + t).filter((t) => existing.has(t)),
        ]),
      ];
      if (topics.length === 0) continue;
      const [ends, starts] = await Promise.all([this.endOffsets(topics), this.endOffsets(topics, -2n)]);
      for (const [id, end] of [...ends].sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }))) {
        const [topic, partition] = id.split('\u0000') as [string, string];
        const mine = committed.get(id);
        // Committed on, or a partition of a topic the group reads where it committed nothing yet.
        if (!listed.has(id) && !reads.includes(this.unprefix(topic))) continue;
        // A new instance starts at the end (and commits where it starts): nothing of before is its lag.
        const from = mine ?? (perInstance ? end : (starts.get(id) ?? end));
        out.push({
          group: g,
          topic: this.unprefix(topic),
          partition: Number(partition),
          committed: mine === undefined ? null : mine.toString(),
          end: end.toString(),
          lag: Number(end > from ? end - from : 0n),
          ...(perInstance ? { running } : {}),
        });
      }
    }
    return out;
  }

  /** Reads a topic from the beginning up to its current end (the first `limit` messages, 1,000 by default). */
  async read(topic: string, opts: { limit?: number; from?: Offsets } = {}): Promise<StoredMessage[]> {
    const name = this.prefix + topic;
    const limit = opts.limit ?? 1000;
    if (limit <= 0) return [];
    const records: StoredRecord[] = [];
    await this.readBounded(
      name,
      (partition) => opts.from?.get(partition) ?? 0n,
      (m) => {
        records.push(m);
        return records.length < limit;
      },
    );
    // Messages are decoded in order; an Avro one may first wait for its schema (codec.prepareDecode).
    await this.codec.prepareDecode(records, AbortSignal.timeout(READ_TIMEOUT_MS));
    return records
      .map((m) => decodeRecord(m, this.unprefix, this.codec))
      .sort((a, b) => a.partition - b.partition || Number(BigInt(a.offset) - BigInt(b.offset)));
  }

  /**
   * The CloudEvent ids among the last `lastPerPartition` messages of each partition of a topic (a relay taking
   * over looks for what its predecessor sent and did not mark).
   */
  async publishedEventIds(topic: string, lastPerPartition: number): Promise<Set<string>> {
    const name = this.prefix + topic;
    const ids = new Set<string>();
    if (lastPerPartition <= 0) return ids;
    await this.readBounded(
      name,
      (_partition, end) => end - BigInt(lastPerPartition),
      (m) => {
        const id = m.headers.get('ce_id');
        if (id) ids.add(id);
      },
    );
    return ids;
  }

  /**
   * Reads each partition of `physical` from `from(its end)` (not before its earliest retained record) up to its
   * end now; nothing when the topic does not exist. `onRecord` returning false stops the read. Gives up after
   * READ_TIMEOUT_MS.
   */
  private async readBounded(
    physical: string,
    from: (partition: number, end: bigint) => bigint,
    onRecord: (m: StoredRecord) => boolean | void,
  ): Promise<void> {
    if (!(await this.admin.listTopics()).includes(physical)) return;
    const next = new Map<number, bigint>();
    const ends = new Map<number, bigint>();
    for (const [partition, { start, end }] of await this.bounds(physical)) {
      const wanted = from(partition, end);
      const at = wanted > start ? wanted : start;
      if (at >= end) continue;
      next.set(partition, at);
      ends.set(partition, end);
    }
    const deadline = Date.now() + READ_TIMEOUT_MS;
    await this.fetchLoop(physical, next, { ends, maxWaitTime: 0, deadline }, (records) => {
      for (const m of records) if (onRecord(m) === false) return false;
      return true;
    });
  }

  async tail(
    topic: string,
    opts: { fromBeginning: boolean; signal: AbortSignal },
    onMessage: (m: StoredMessage) => void,
  ): Promise<void> {
    const physical = this.prefix + topic;
    const next = new Map<number, bigint>();
    for (const [partition, { start, end }] of await this.bounds(physical))
      next.set(partition, opts.fromBeginning ? start : end);
    await this.fetchLoop(physical, next, { maxWaitTime: 300, signal: opts.signal }, async (records) => {
      // Handed on in order; an Avro one may first wait for its schema (codec.prepareDecode).
      await this.codec.prepareDecode(records, opts.signal);
      for (const m of records) {
        if (opts.signal.aborted) return false;
        onMessage(decodeRecord(m, this.unprefix, this.codec));
      }
      return true;
    });
  }

  /**
   * Reads partitions of `physical` from the offsets in `next` with Fetch requests to their leaders, and hands each
   * round's records to `onRecords` (in offset order per partition) until it returns false, `signal` aborts, or
   * every partition reached its offset in `ends` (when given: a bounded read).
   *
   * No consumer group: a new group's first join waits `group.initial.rebalance.delay.ms` on the broker (3 s by
   * default), which a relay's takeover would add to every failover, and `tail` to its start. A failed round (a
   * leader that moved, records deleted by retention meanwhile) refreshes the metadata and moves a partition
   * whose records are gone to its earliest offset, then tries again with backoff (until `deadline`).
   */
  private async fetchLoop(
    physical: string,
    next: Map<number, bigint>,
    opts: { ends?: Map<number, bigint>; maxWaitTime: number; signal?: AbortSignal; deadline?: number },
    onRecords: (records: StoredRecord[]) => boolean | Promise<boolean>,
  ): Promise<void> {
    const { ends, signal, deadline } = opts;
    // The client asks for a group id; fetching never joins it.
    const consumer = new Consumer<string, Buffer, string, string>({
      ...connectionOptions(this.s),
      groupId: `${this.prefix}taskflow-reader-${randomUUID()}`,
    });
    // An abort ends the read at once, not after a fetch in flight or a backoff (closing the client ends them).
    const aborted = signal
      ? new Promise<'aborted'>((resolve) => {
          if (signal.aborted) resolve('aborted');
          signal.addEventListener('abort', () => resolve('aborted'), { once: true });
        })
      : undefined;
    const unlessAborted = <T>(p: Promise<T>): Promise<T | 'aborted'> =>
      aborted ? Promise.race([p, aborted]) : p;
    let attempt = 0;
    /** Waits before the next round, longer each time in a row; whether the read was aborted meanwhile. */
    const backOff = async () =>
      (await unlessAborted(sleep(Math.min(1000, 50 * 2 ** attempt++)))) === 'aborted';
    try {
      while (next.size > 0 && !signal?.aborted) {
        if (deadline !== undefined && Date.now() > deadline)
          throw new Error(`reading ${physical} timed out (${next.size} partitions left)`);
        let round: { records: StoredRecord[]; progressed: boolean } | 'aborted';
        try {
          round = await unlessAborted(this.fetchRound(consumer, physical, next, ends, opts.maxWaitTime));
        } catch (err) {
          // Said once it keeps failing (a broker down): a `tail` would otherwise wait in silence.
          this.log?.[attempt === 3 ? 'warn' : 'debug'](
            { topic: physical, err: describeKafkaError(err) },
            'reading a topic: trying again',
          );
          consumer.clearMetadata();
          await this.clampToRetained(physical, next, ends);
          if (await backOff()) return;
          continue;
        }
        if (round === 'aborted') return;
        if (round.records.length > 0 && !(await onRecords(round.records))) return;
        // A broker that waits (maxWaitTime) paces the rounds; a fetch that does not wait and found nothing new
        // is not sent again at once.
        if (round.progressed || opts.maxWaitTime > 0) attempt = 0;
        else if (await backOff()) return;
      }
    } finally {
      await forceClose(consumer);
    }
  }

  /**
   * After a failed round: each partition of `next` moved into what the partition retains (records deleted by
   * retention, or a topic made anew whose end is before the position), and a bounded read's partition whose
   * range is gone dropped. The positions stay as they are when the broker cannot say (it is down: the next round
   * fails and backs off again).
   */
  private async clampToRetained(
    physical: string,
    next: Map<number, bigint>,
    ends: Map<number, bigint> | undefined,
  ): Promise<void> {
    let bounds: Map<number, { start: bigint; end: bigint }>;
    try {
      bounds = await this.bounds(physical);
    } catch {
      return;
    }
    for (const [partition, at] of next) {
      const known = bounds.get(partition);
      const start = known?.start ?? 0n;
      const last = known?.end ?? at;
      const end = ends?.get(partition);
      if (end !== undefined && (start >= end || at >= last)) next.delete(partition);
      else if (start > at) next.set(partition, start);
      else if (at > last) next.set(partition, last);
    }
  }

  /**
   * One Fetch per leader for the partitions in `next`: their records from those offsets (up to `ends`), and
   * `next` moved past what came back (a partition that reached its end leaves it).
   */
  private async fetchRound(
    consumer: Consumer<string, Buffer, string, string>,
    physical: string,
    next: Map<number, bigint>,
    ends: Map<number, bigint> | undefined,
    maxWaitTime: number,
  ): Promise<{ records: StoredRecord[]; progressed: boolean }> {
    const meta = await consumer.metadata({ topics: [physical] });
    const t = meta.topics.get(physical);
    if (!t) throw new Error(`topic ${physical} is not in the cluster's metadata`);
    const byLeader = new Map<number, fetchV17.FetchRequestPartition[]>();
    for (const [partition, fetchOffset] of next) {
      const leader = t.partitions[partition]?.leader ?? -1;
      const partitions = byLeader.get(leader) ?? [];
      partitions.push({
        partition,
        fetchOffset,
        partitionMaxBytes: 1024 * 1024,
        currentLeaderEpoch: -1,
        lastFetchedEpoch: -1,
      });
      byLeader.set(leader, partitions);
    }
    const responses = await Promise.all(
      [...byLeader].map(([node, partitions]) =>
        consumer.fetch({
          node,
          topics: [{ topicId: t.id, partitions }],
          maxWaitTime,
          minBytes: maxWaitTime > 0 ? 1 : 0,
        }),
      ),
    );
    const out: StoredRecord[] = [];
    let progressed = false;
    for (const response of responses)
      for (const { partitions } of response.responses)
        for (const { partitionIndex: partition, records, lastStableOffset } of partitions) {
          const from = next.get(partition);
          if (from === undefined) continue;
          // A bounded read ends where the committed records end now: the end offset counts records of open
          // transactions (the high watermark), which a read of committed records does not get until they end.
          const bound = ends?.get(partition);
          const end =
            bound !== undefined && lastStableOffset >= 0n && lastStableOffset < bound
              ? lastStableOffset
              : bound;
          let at = from;
          for (const batch of records ?? []) {
            if ((batch.attributes & IS_CONTROL) === 0)
              for (const record of batch.records) {
                const offset = batch.firstOffset + BigInt(record.offsetDelta);
                if (offset < from || (end !== undefined && offset >= end)) continue;
                out.push(recordOf(physical, partition, offset, batch.firstTimestamp, record));
              }
            const last = batch.firstOffset + BigInt(batch.lastOffsetDelta);
            if (last + 1n > at) at = last + 1n;
          }
          if (at > from || (end !== undefined && at >= end)) progressed = true;
          if (end !== undefined && at >= end) next.delete(partition);
          else next.set(partition, at);
        }
    return { records: out, progressed };
  }

  async close(): Promise<void> {
    await this.admin.close().catch(() => undefined);
  }
}
