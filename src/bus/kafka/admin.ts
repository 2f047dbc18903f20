/** Kafka administration: topics, lag, groups, and reading a topic (dead letters, `tail`) without a group. */
import { randomUUID } from 'node:crypto';
import { Admin, Consumer, stringDeserializer, type Message } from '@platformatic/kafka';
import type { Logger } from '../../observability/logger.ts';
import type { BusAdmin, PartitionLag, StoredMessage } from '../types.ts';
import { decodeRecord, JSON_CODEC, type EventCodec } from './codec.ts';
import { connectionOptions, describeKafkaError, forceClose, type KafkaSettings } from './connection.ts';

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
    for (const t of topics) {
      const name = this.prefix + t.name;
      if (existing.has(name)) continue;
      try {
        await this.admin.createTopics({
          topics: [name],
          partitions: t.partitions,
          replicas: this.s.replicationFactor ?? 1,
          configs: [
            { name: 'retention.ms', value: String(t.retentionMs) },
            { name: 'cleanup.policy', value: 'delete' },
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
    const groups = await this.admin.listGroups();
    return [...groups.keys()]
      .filter((g) => g.startsWith(this.prefix) && !g.includes('taskflow-reader-'))
      .map((g) => g.slice(this.prefix.length))
      .sort();
  }

  /** Retained messages: the end offset minus the earliest offset, summed over the partitions. */
  async messageCount(topic: string): Promise<number> {
    const name = this.prefix + topic;
    if (!(await this.admin.listTopics()).includes(name)) return 0;
    const [end, start] = await Promise.all([this.endOffsets([name]), this.endOffsets([name], -2n)]);
    let n = 0n;
    for (const [id, e] of end) n += e - (start.get(id) ?? 0n);
    return Number(n);
  }

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

  async lag(group?: string): Promise<PartitionLag[]> {
    const groups = group ? [group] : await this.listGroups();
    const out: PartitionLag[] = [];
    for (const g of groups) {
      const [res] = await this.admin.listConsumerGroupOffsets({ groups: [this.prefix + g] });
      const topics = (res?.topics ?? []).map((t) => t.name);
      if (topics.length === 0) continue;
      const ends = await this.endOffsets(topics);
      for (const t of res!.topics)
        for (const p of t.partitions) {
          const end = ends.get(`${t.name}\u0000${p.partitionIndex}`) ?? 0n;
          const committed = p.committedOffset < 0n ? 0n : p.committedOffset;
          out.push({
            group: g,
            topic: t.name.slice(this.prefix.length),
            partition: p.partitionIndex,
            committed: committed.toString(),
            end: end.toString(),
            lag: Number(end > committed ? end - committed : 0n),
          });
        }
    }
    return out;
  }

  /** Reads a topic from the beginning up to its current end with a throw-away reader group. */
  async read(topic: string, opts: { limit?: number } = {}): Promise<StoredMessage[]> {
    const name = this.prefix + topic;
    if (!(await this.admin.listTopics()).includes(name)) return [];
    const ends = await this.endOffsets([name]);
    const remaining = new Map([...ends].filter(([, end]) => end > 0n));
    const out: StoredMessage[] = [];
    if (remaining.size === 0) return out;
    const stop = new AbortController();
    await this.follow(
      name,
      { fromBeginning: true, signal: stop.signal },
      (m) => {
        if (out.length < (opts.limit ?? 1000)) out.push(m);
        const id = `${name}\u0000${m.partition}`;
        if (BigInt(m.offset) + 1n >= (remaining.get(id) ?? 0n)) remaining.delete(id);
        if (remaining.size === 0 || out.length >= (opts.limit ?? 1000)) stop.abort();
      },
      15_000,
    );
    return out.sort((a, b) => a.partition - b.partition || Number(BigInt(a.offset) - BigInt(b.offset)));
  }

  /**
   * The CloudEvent ids among the last `lastPerPartition` messages of each partition of a topic (a relay taking
   * over looks for what its predecessor sent and did not mark). One throw-away reader from those offsets.
   */
  async publishedEventIds(topic: string, lastPerPartition: number): Promise<Set<string>> {
    const name = this.prefix + topic;
    const ids = new Set<string>();
    if (lastPerPartition <= 0 || !(await this.admin.listTopics()).includes(name)) return ids;
    const [ends, starts] = await Promise.all([this.endOffsets([name]), this.endOffsets([name], -2n)]);
    const remaining = new Map<number, bigint>(); // partition -> the last offset to read
    const offsets: { topic: string; partition: number; offset: bigint }[] = [];
    for (const [id, end] of ends) {
      const partition = Number(id.split('\u0000')[1]);
      const from = end - BigInt(lastPerPartition);
      const start = starts.get(id) ?? 0n;
      if (end <= start) continue;
      offsets.push({ topic: name, partition, offset: from > start ? from : start });
      remaining.set(partition, end - 1n);
    }
    if (offsets.length === 0) return ids;
    const consumer = this.reader(100);
    try {
      const stream = await consumer.consume({ topics: [name], mode: 'manual', offsets, autocommit: false });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(new Error(`reading the end of ${topic} timed out (${remaining.size} partitions left)`)),
          15_000,
        );
        timer.unref();
        stream.on('error', reject);
        stream.on('data', (m: Message<string, Buffer, string, string>) => {
          const id = m.headers.get('ce_id');
          if (id) ids.add(id);
          if (m.offset >= (remaining.get(m.partition) ?? -1n)) remaining.delete(m.partition);
          if (remaining.size === 0) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      await stream.close().catch(() => undefined);
    } finally {
      await forceClose(consumer);
    }
    return ids;
  }

  async tail(
    topic: string,
    opts: { fromBeginning: boolean; signal: AbortSignal },
    onMessage: (m: StoredMessage) => void,
  ): Promise<void> {
    await this.follow(this.prefix + topic, opts, onMessage);
  }

  /** A throw-away reader: a group of its own, nothing committed (no positions are stored). */
  private reader(maxWaitTime: number) {
    return new Consumer<string, Buffer, string, string>({
      ...connectionOptions(this.s),
      groupId: `${this.prefix}taskflow-reader-${randomUUID()}`,
      deserializers: {
        key: stringDeserializer,
        headerKey: stringDeserializer,
        headerValue: stringDeserializer,
      },
      autocommit: false,
      maxWaitTime,
    });
  }

  private async follow(
    physical: string,
    opts: { fromBeginning: boolean; signal: AbortSignal },
    onMessage: (m: StoredMessage) => void,
    timeoutMs?: number,
  ): Promise<void> {
    const consumer = this.reader(300);
    const unprefix = (t: string) => (t.startsWith(this.prefix) ? t.slice(this.prefix.length) : t);
    try {
      const stream = await consumer.consume({
        topics: [physical],
        mode: opts.fromBeginning ? 'earliest' : 'latest',
        autocommit: false,
      });
      // Messages are handed on in order; an Avro one may first wait for its schema (codec.prepareDecode).
      let handed = Promise.resolve();
      let failure: { err: unknown } | undefined;
      await new Promise<void>((resolve) => {
        const done = () => resolve();
        if (opts.signal.aborted) return done();
        opts.signal.addEventListener('abort', done, { once: true });
        if (timeoutMs) setTimeout(done, timeoutMs).unref();
        stream.on('data', (m) => {
          handed = handed
            .then(async () => {
              if (failure) return;
              await this.codec.prepareDecode([m], opts.signal);
              if (!opts.signal.aborted) onMessage(decodeRecord(m, unprefix, this.codec));
            })
            .catch((err: unknown) => {
              failure ??= { err };
              done();
            });
        });
      });
      await handed;
      if (failure) throw failure.err;
      await stream.close().catch(() => undefined);
    } finally {
      await forceClose(consumer);
    }
  }

  async close(): Promise<void> {
    await this.admin.close().catch(() => undefined);
  }
}
