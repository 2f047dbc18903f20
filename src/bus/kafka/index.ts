/**
 * The Kafka transport (BUS=kafka) over @platformatic/kafka (pure TypeScript, maintained, installs from npm
 * alone and runs on Node 20 with its major version 1; docs/adr/0004-kafka-client.md).
 * - Producer: idempotent, acks=all, one request per batch, key = user id, CloudEvents binary content mode.
 * - Consumer: one consumer group per subscription; messages of a partition are handled one at a time in
 *   order, partitions in parallel; the offset is committed only after the handler resolved (or the message
 *   was dead-lettered), so a crash redelivers instead of losing.
 * - Topics may carry a prefix (KAFKA_TOPIC_PREFIX) so several environments share one cluster.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomUUID } from 'node:crypto';
import {
  Admin,
  Consumer,
  ProduceAcks,
  compatibilityPartitioner,
  Producer,
  stringDeserializer,
  stringSerializer,
  type Message,
  type MessagesStream,
} from '@platformatic/kafka';
import type { ConnectionOptions as TlsOptions } from 'node:tls';
import type { CloudEvent } from '../../contracts/cloudevent.ts';
import { topicSpec } from '../../contracts/topics.ts';
import type { Logger } from '../../observability/logger.ts';
import { COMMIT_INTERVAL_MS, consumeRun, DEFAULT_MAX_BATCH, type ConsumeContext } from '../consumer.ts';
import { DEFAULT_RETRY, type RetryPolicy } from '../../retry.ts';
import type {
  Bus,
  BusAdmin,
  BusMessage,
  OutgoingMessage,
  PartitionLag,
  Publisher,
  StoredMessage,
  SubscribeOptions,
  Subscriber,
  Subscription,
} from '../types.ts';
import { retryWithBackoff } from '../../retry.ts';
import { LiveSubscriptions } from '../subscriptions.ts';
import { errorMessage } from '../../error-text.ts';
import { EventCodec, JSON_CODEC } from './codec.ts';

export interface KafkaSettings {
  brokers: string[];
  clientId: string;
  sasl?: { mechanism: 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512'; username: string; password: string };
  ssl?: { caFile?: string; certFile?: string; keyFile?: string; rejectUnauthorized: boolean };
  topicPrefix?: string;
  replicationFactor?: number;
}

export interface KafkaBusOptions {
  log: Logger;
  retry?: RetryPolicy;
  sessionTimeoutMs?: number;
  heartbeatIntervalMs?: number;
  /** Messages buffered per subscription before the fetch stream is paused. */
  maxBuffered?: number;
  /**
   * How long a subscribe waits for its topics to exist (they are created in the background at start-up, or
   * by `taskflow topics ensure`) before it fails.
   */
  topicWaitMs?: number;
  /** How events become records and back (JSON, or Avro with a schema registry; ./codec.ts). */
  codec?: EventCodec;
}

/** Closes a consumer even with a stream still open; never throws (shutdown paths). */
/** Backoff between attempts to rejoin after the consumer stream ended. */
const RECONNECT = { maxAttempts: 0, baseDelayMs: 500, maxDelayMs: 15_000 };

const forceClose = (c: Consumer<string, Buffer, string, string>) =>
  new Promise<void>((resolve) => c.close(true, () => resolve()));

/** Connection options shared by producer, consumers and admin. */
export function connectionOptions(s: KafkaSettings) {
  let tls: TlsOptions | undefined;
  if (s.ssl) {
    tls = { rejectUnauthorized: s.ssl.rejectUnauthorized };
    if (s.ssl.caFile) tls.ca = readFileSync(s.ssl.caFile);
    if (s.ssl.certFile) tls.cert = readFileSync(s.ssl.certFile);
    if (s.ssl.keyFile) tls.key = readFileSync(s.ssl.keyFile);
  }
  return {
    clientId: s.clientId,
    bootstrapBrokers: s.brokers,
    ...(tls ? { tls } : {}),
    ...(s.sasl
      ? { sasl: { mechanism: s.sasl.mechanism, username: s.sasl.username, password: s.sasl.password } }
      : {}),
    // Fail within seconds (a wrong password, an unreachable broker) and let our own loops retry with backoff.
    timeout: 10_000,
    retries: 2,
    retryDelay: 250,
  };
}

const MAX_REQUEST_BYTES = 512 * 1024;

/** Splits items, in order, into chunks whose estimated encoded size (`sizeOf`) stays under `limit` bytes. */
export function chunkBySize<T>(messages: readonly T[], limit: number, sizeOf: (m: T) => number): T[][] {
  const chunks: T[][] = [];
  let current: T[] = [];
  let size = 0;
  for (const m of messages) {
    const estimate = sizeOf(m);
    if (current.length && size + estimate > limit) {
      chunks.push(current);
      current = [];
      size = 0;
    }
    current.push(m);
    size += estimate;
  }
  if (current.length) chunks.push(current);
  return chunks;
}

/** Whether the broker does not know (yet) one of the topics asked for. */
function isUnknownTopic(err: unknown): boolean {
  return /unknown topic/i.test(describeKafkaError(err));
}

/** Finds the most useful message in the library's nested errors (authentication first, else the innermost). */
export function describeKafkaError(err: unknown): string {
  const seen = new Set<unknown>();
  const walk = (e: unknown): string | null => {
    if (!e || typeof e !== 'object' || seen.has(e)) return null;
    seen.add(e);
    const x = e as { name?: string; message?: string; errors?: unknown[]; cause?: unknown; code?: string };
    if (x.code === 'PLT_KFK_AUTHENTICATION' || x.name === 'AuthenticationError')
      return `Kafka authentication failed (check KAFKA_SASL_MECHANISM/USERNAME/PASSWORD): ${x.message ?? ''}`.trim();
    for (const inner of [...(x.errors ?? []), x.cause]) {
      const found = walk(inner);
      if (found) return found;
    }
    return null;
  };
  const innermost = (e: unknown, depth = 0): string | null => {
    if (!e || typeof e !== 'object' || depth > 10) return null;
    const x = e as { message?: string; errors?: unknown[]; cause?: unknown };
    for (const inner of [...(x.errors ?? []), x.cause]) {
      const found = innermost(inner, depth + 1);
      if (found) return found;
    }
    return x.message ?? null;
  };
  const outer = errorMessage(err);
  const inner = innermost(err);
  return walk(err) ?? (inner && inner !== outer ? `${outer}: ${inner}` : outer);
}

/** An undecodable value as text for its dead letter: UTF-8, or base64 for a binary (Avro) one. */
const rawText = (value: Buffer | null | undefined, contentType: string | undefined) =>
  value
    ? value
        .subarray(0, 10_000)
        .toString(contentType === 'application/json' || !contentType ? 'utf8' : 'base64')
    : '';

const headersToRecord = (headers: Map<string, string>): Record<string, string> => Object.fromEntries(headers);

/** A record as a bus message (after `codec.prepareDecode` for it). */
function decode(
  m: Message<string, Buffer, string, string>,
  unprefix: (t: string) => string,
  codec: EventCodec,
): BusMessage {
  const headers = headersToRecord(m.headers);
  let event: CloudEvent;
  try {
    event = codec.decode(m, headers);
  } catch (err) {
    // Undecodable bytes still get a CloudEvent shape so the DLQ can hold them; validation rejects it.
    event = {
      specversion: '1.0',
      id: `undecodable-${m.topic}-${m.partition}-${m.offset}`,
      source: 'taskflow/kafka',
      type: 'taskflow.undecodable',
      time: new Date().toISOString(),
      datacontenttype: 'application/json',
      data: { raw: rawText(m.value, headers['content-type']), error: errorMessage(err) },
    };
  }
  return {
    topic: unprefix(m.topic),
    partition: m.partition,
    offset: m.offset.toString(),
    key: m.key ?? '',
    headers,
    event,
    timestamp: new Date(Number(m.timestamp)).toISOString(),
  };
}

export class KafkaPublisher implements Publisher {
  private readonly producer: Producer<string, Buffer, string, string>;
  /** Topics known to exist; others (a new group's DLQ) are created with their spec before the first send. */
  private readonly known = new Set<string>();
  private admin: KafkaAdmin | undefined;
  constructor(
    private readonly s: KafkaSettings,
    private readonly log?: Logger,
    readonly codec: EventCodec = JSON_CODEC,
  ) {
    this.producer = new Producer<string, Buffer, string, string>({
      ...connectionOptions(s),
      idempotent: true,
      acks: ProduceAcks.ALL,
      // Java's partitioner (murmur2 of the key), as the embedded bus uses: a key lands on the same partition
      // number whichever client or transport produced it.
      partitioner: compatibilityPartitioner,
      serializers: { key: stringSerializer, headerKey: stringSerializer, headerValue: stringSerializer },
    });
  }

  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    if (messages.length === 0) return;
    const unknown = [...new Set(messages.map((m) => m.topic))].filter((t) => !this.known.has(t));
    if (unknown.length) {
      this.admin ??= new KafkaAdmin(this.s, this.log);
      try {
        await this.admin.ensureTopics(unknown.map((t) => topicSpec(t)));
      } catch (err) {
        throw new Error(`Kafka publish failed: ${describeKafkaError(err)}`, { cause: err });
      }
      for (const t of unknown) this.known.add(t);
    }
    const prefix = this.s.topicPrefix ?? '';
    try {
      await this.codec.prepareEncode(messages.map((m) => m.event));
    } catch (err) {
      throw new Error(`Kafka publish failed: ${errorMessage(err)}`, { cause: err });
    }
    const records = messages.map((m) => {
      const { headers, value } = this.codec.encode(m.event, m.headers);
      return { topic: prefix + m.topic, key: m.key, value, headers };
    });
    // Kafka refuses a request above ~1 MiB per partition; events are at most a few tens of KB, so sending in
    // chunks of bounded size keeps every request valid. Chunks go one after another: per-key order holds.
    for (const chunk of chunkBySize(records, MAX_REQUEST_BYTES, (r) => r.value.length + 512)) {
      try {
        await this.producer.send({ messages: chunk });
      } catch (err) {
        throw new Error(`Kafka publish failed: ${describeKafkaError(err)}`, { cause: err });
      }
    }
  }

  async close(): Promise<void> {
    await this.producer.close().catch(() => undefined);
    await this.admin?.close();
  }
}

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
  /** Per partition: the last handled message not committed yet, and when the partition last committed. */
  private readonly uncommitted = new Map<string, Message<string, Buffer, string, string>>();
  private readonly committedAt = new Map<string, number>();
  private readonly commitTimers = new Map<string, NodeJS.Timeout>();
  /** Per partition: when its last batch began (batchIntervalMs). */
  private readonly batchAt = new Map<string, number>();
  private buffered = 0;
  private readonly closing = new AbortController();
  private closed = false;
  private reconnecting: Promise<void> | undefined;

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
  }

  /** Creates the consumer and its stream, waiting (bounded) for topics that do not exist yet. */
  private async connect(): Promise<void> {
    this.consumer = new Consumer<string, Buffer, string, string>({
      ...connectionOptions(this.s),
      groupId: this.prefix + this.opts.group,
      deserializers: {
        key: stringDeserializer,
        headerKey: stringDeserializer,
        headerValue: stringDeserializer,
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
      await Promise.all([...this.uncommitted.keys()].map((id) => this.commitNow(id)));
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

  private enqueue(m: Message<string, Buffer, string, string>) {
    if (this.closed) return;
    const id = `${m.topic}\u0000${m.partition}`;
    const q = this.queues.get(id) ?? [];
    q.push(m);
    this.queues.set(id, q);
    if (++this.buffered >= this.cfg.maxBuffered) this.stream.pause();
    if (!this.running.has(id)) {
      const run: Promise<void> = this.drain(id).finally(() => {
        if (this.running.get(id) === run) this.running.delete(id);
      });
      this.running.set(id, run);
    }
  }

  /**
   * Commits the offset of the partition's last handled message (covering every earlier one), unless the
   * partition committed less than COMMIT_INTERVAL_MS ago: then once that interval is over. An offset commit
   * is a broker request, and committing whenever a queue runs dry meant one per message at moderate rates;
   * after a crash at most COMMIT_INTERVAL_MS of handled messages are redelivered (handlers are idempotent).
   */
  private commitSoon(id: string, now = false): Promise<void> | undefined {
    const due = (this.committedAt.get(id) ?? 0) + COMMIT_INTERVAL_MS - Date.now();
    if (now || due <= 0) return this.commitNow(id);
    if (!this.commitTimers.has(id)) {
      const timer = setTimeout(() => void this.commitNow(id), due);
      timer.unref();
      this.commitTimers.set(id, timer);
    }
    return undefined;
  }

  private async commitNow(id: string): Promise<void> {
    clearTimeout(this.commitTimers.get(id));
    this.commitTimers.delete(id);
    const m = this.uncommitted.get(id);
    if (!m) return;
    this.uncommitted.delete(id);
    this.committedAt.set(id, Date.now());
    try {
      await m.commit();
    } catch (err) {
      // Typically a rebalance moved the partition: the new owner re-reads from the last commit (idempotent).
      this.cfg.log.warn(
        { err: describeKafkaError(err), group: this.opts.group, topic: m.topic, partition: m.partition },
        'offset commit failed',
      );
    }
  }

  /** Handles one partition's queue in order; offsets are committed by `commitSoon`. */
  private async drain(id: string): Promise<void> {
    const q = this.queues.get(id)!;
    const unprefix = (t: string) => (t.startsWith(this.prefix) ? t.slice(this.prefix.length) : t);
    const max = this.opts.maxBatch ?? DEFAULT_MAX_BATCH;
    const ctx: ConsumeContext = {
      group: this.opts.group,
      policy: this.cfg.retry,
      publisher: this.publisher,
      log: this.cfg.log,
      signal: this.closing.signal,
      ...(this.opts.hooks ? { hooks: this.opts.hooks } : {}),
    };
    const interval = this.opts.batchIntervalMs ?? 0;
    for (;;) {
      while (q.length && !this.closing.signal.aborted) {
        // A short run soon after the last batch: let more arrive (SubscribeOptions.batchIntervalMs, fetchWait).
        const early = (this.batchAt.get(id) ?? 0) + interval - Date.now();
        if (early > 0 && q.length < max) await sleep(early);
        this.batchAt.set(id, Date.now());
        const run = q.slice(0, max);
        await this.cfg.codec.prepareDecode(run, this.closing.signal, { hold: true });
        if (this.closing.signal.aborted) break;
        const done = await consumeRun(
          run.map((raw) => decode(raw, unprefix, this.cfg.codec)),
          this.opts,
          ctx,
        );
        if (done > 0) {
          q.splice(0, done);
          this.uncommitted.set(id, run[done - 1]!);
          this.buffered -= done;
          if (this.buffered < this.cfg.maxBuffered / 2 && this.stream.isPaused()) this.stream.resume();
        }
        if (done < run.length) break; // shutdown: the rest stays uncommitted
        await this.commitSoon(id);
      }
      // On shutdown commit what was handled now; otherwise a timer does it once the interval is over.
      if (this.closing.signal.aborted) await this.commitSoon(id, true);
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
    // Stop fetching, let the message in hand finish (pending backoffs abort; they are redelivered later).
    this.stream.pause();
    this.closing.abort();
    await this.reconnecting;
    await Promise.all(this.running.values());
    await Promise.all([...this.uncommitted.keys()].map((id) => this.commitNow(id)));
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
              if (!opts.signal.aborted) onMessage(decode(m, unprefix, this.codec));
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

export function createKafkaBus(s: KafkaSettings, opts: KafkaBusOptions): Bus {
  const cfg: Required<KafkaBusOptions> = {
    log: opts.log,
    retry: opts.retry ?? DEFAULT_RETRY,
    sessionTimeoutMs: opts.sessionTimeoutMs ?? 10_000,
    heartbeatIntervalMs: opts.heartbeatIntervalMs ?? 1_000,
    maxBuffered: opts.maxBuffered ?? 1_000,
    topicWaitMs: opts.topicWaitMs ?? 60_000,
    codec: opts.codec ?? new EventCodec({ encoding: 'json', log: opts.log }),
  };
  const publisher = new KafkaPublisher(s, opts.log, cfg.codec);
  const subscriber = new KafkaSubscriber(s, publisher, cfg);
  const admin = new KafkaAdmin(s, opts.log, cfg.codec);
  return {
    kind: 'kafka',
    publisher,
    subscriber,
    admin,
    close: async () => {
      await subscriber.close();
      await publisher.close();
      await admin.close();
    },
  };
}
