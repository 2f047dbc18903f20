/**
 * The Dapr transport (BUS=dapr): the process talks to its own sidecar (daprd) over HTTP only
 * (docs/adr/0006-dapr-transport.md).
 * - Publisher: structured CloudEvents (`application/cloudevents+json`), key = `partitionKey` metadata (the
 *   Kafka record key). A batch goes out in rounds of distinct keys through the bulk publish API
 *   (`/v1.0-alpha1/publish/bulk`, ~50x the throughput of one request per message on 1.16), so one key's
 *   messages stay in order; `/v1.0/publish` one by one when the sidecar has no bulk API. Any failure
 *   (sidecar unreachable, non-2xx) throws, so the relay keeps the rows and backs off.
 * - Subscriber: programmatic subscriptions. `GET /dapr/subscribe` on the process HTTP app lists every
 *   subscription of this process with `deadLetterTopic: <group>.dlq`; daprd reads it once, when it first
 *   sees the app port open, so subscriptions must exist before the server listens (runTargets starts the
 *   targets first). Deliveries come to `POST /dapr/events/<group>/<topic>` and are answered with
 *   SUCCESS (handled), RETRY (transient error: daprd redelivers per its resiliency policy and sends the
 *   event to the dead-letter topic once the retries are used up) or DROP (invalid event or PermanentError:
 *   straight to the dead-letter topic). Our in-process retry (CONSUMER_*) is not used on Dapr. A batching
 *   group (a batch handler and a batch interval) subscribes in bulk (`bulkSubscribe`, alpha in 1.16): daprd
 *   sends up to maxBatch events of a partition per request, at most the interval apart, and gets a status
 *   per entry; the batch handler takes them in one transaction (deliverBulk).
 * - The Kafka consumer group is the Dapr app id (component `consumerGroup: '{appID}'`): run one consumer
 *   target per sidecar with app id = its group. Dapr allows one subscription per topic per app, so a second
 *   group on the same topic in one process is refused.
 * - Admin (topics, lag, dead letters) is not part of Dapr's API: it goes to the Kafka brokers behind the
 *   component when KAFKA_BROKERS is set, and reads Dapr's structured messages and dead letters.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { fromBinary, type CloudEvent } from '../../contracts/cloudevent.ts';
import { eventProblems } from '../../contracts/schemas.ts';
import { dlqTopic, isDlqTopic } from '../../contracts/topics.ts';
import type { Logger } from '../../observability/logger.ts';
import type { ConsumeHooks } from '../consumer.ts';
import { DEFAULT_MAX_BATCH, DLQ_HEADERS, isUnavailable } from '../consumer.ts';
import { backoffDelay } from '../../retry.ts';
import { eachLimited } from '../../each-limited.ts';
import { KafkaAdmin, type KafkaSettings } from '../kafka/index.ts';
import {
  PermanentError,
  type BatchHandler,
  type Bus,
  type BusAdmin,
  type BusMessage,
  type MessageHandler,
  type OutgoingMessage,
  type PartitionLag,
  type Publisher,
  type StoredMessage,
  type SubscribeOptions,
  type Subscriber,
  type Subscription,
} from '../types.ts';
import { errorText } from '../../error-text.ts';

export interface DaprSettings {
  /** The sidecar's HTTP API port (DAPR_HTTP_PORT). */
  httpPort: number;
  /** Defaults to 127.0.0.1: the sidecar runs next to the process. */
  host?: string;
  /** The pub/sub component name (DAPR_PUBSUB_NAME). */
  pubsubName: string;
  /** The brokers behind the component, for the admin (topics, lag, dead letters); none: admin unsupported. */
  kafka?: KafkaSettings;
  publishTimeoutMs?: number;
  /** Use the bulk publish API (default; falls back to single publishes when the sidecar lacks it). */
  bulk?: boolean;
  /** Without bulk: how many messages (of distinct keys) are published concurrently. */
  publishConcurrency?: number;
}

export interface DaprBusOptions {
  log: Logger;
  /** The process HTTP server that daprd delivers to; needed to subscribe (not to publish). */
  app?: FastifyInstance;
}

export type DaprStatus = 'SUCCESS' | 'RETRY' | 'DROP';

/** Attributes daprd adds to every event it delivers; not part of our events, removed before handlers see them. */
const DAPR_ATTRIBUTES = ['topic', 'pubsubname', 'traceid', 'tracestate'] as const;
const ZERO_TRACE = /^00-0{32}-/;

/** The event as our producers wrote it: without daprd's additions (and without a zero traceparent). */
export function cleanDaprEvent(raw: Record<string, unknown>): CloudEvent {
  const event: Record<string, unknown> = { ...raw };
  for (const k of DAPR_ATTRIBUTES) delete event[k];
  if (typeof event.traceparent === 'string' && ZERO_TRACE.test(event.traceparent)) delete event.traceparent;
  return event as unknown as CloudEvent;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The CloudEvent of a delivery: structured (what Dapr producers write), or Kafka binary mode (`ce_*` headers
 * and the data as body, what the Kafka transport writes) so Dapr consumers also read those.
 */
export function eventFromDelivery(body: unknown, headers: Record<string, string>): CloudEvent {
  if (isObject(body) && body.specversion !== undefined) return cleanDaprEvent(body);
  if (headers.ce_specversion) {
    const ce: Record<string, string> = { 'content-type': 'application/json' };
    for (const [k, v] of Object.entries(headers)) if (k.startsWith('ce_')) ce[k] = v;
    return fromBinary(ce, JSON.stringify(body ?? null));
  }
  return (isObject(body) ? cleanDaprEvent(body) : { data: body }) as CloudEvent;
}

// ------------------------------------------------------------------------------------------------ publisher

export class DaprPublisher implements Publisher {
  private readonly base: string;
  private bulk: boolean;
  private closed = false;
  constructor(
    private readonly s: DaprSettings,
    private readonly log?: Logger,
  ) {
    this.base = `http://${s.host ?? '127.0.0.1'}:${s.httpPort}`;
    this.bulk = s.bulk !== false;
  }

  /**
   * Publishes in rounds: round n holds the n-th message of every key, so a round never has two messages of
   * one key and the next round starts only after the whole round is acknowledged. One key's messages thus
   * stay in order whatever daprd's (non-idempotent) Kafka producer does inside a request, and the first
   * failure stops everything after it (the caller retries the batch; consumers are idempotent).
   */
  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    if (messages.length === 0) return;
    if (this.closed) throw new Error('Dapr publisher is closed');
    const rounds: OutgoingMessage[][] = [];
    const seen = new Map<string, number>();
    for (const m of messages) {
      const n = seen.get(m.key) ?? 0;
      seen.set(m.key, n + 1);
      (rounds[n] ??= []).push(m);
    }
    for (const round of rounds) await this.publishRound(round);
  }

  private async publishRound(round: OutgoingMessage[]): Promise<void> {
    // A single message is cheaper through /v1.0/publish than through a one-entry bulk request.
    if (this.bulk && round.length > 1) {
      const byTopic = new Map<string, OutgoingMessage[]>();
      for (const m of round) {
        const list = byTopic.get(m.topic);
        if (list) list.push(m);
        else byTopic.set(m.topic, [m]);
      }
      const chunks = [...byTopic.entries()].flatMap(([topic, list]) => {
        const out: [string, OutgoingMessage[]][] = [];
        for (let i = 0; i < list.length; i += MAX_BULK) out.push([topic, list.slice(i, i + MAX_BULK)]);
        return out;
      });
      const results = await Promise.allSettled(chunks.map(([topic, list]) => this.publishBulk(topic, list)));
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
      if (this.bulk) return;
      // the sidecar has no bulk API: fall through and send this round one by one
    }
    await eachLimited(round, this.s.publishConcurrency ?? 4, (m) => this.publishOne(m));
  }

  private async post(url: string, what: string, init: RequestInit): Promise<Response> {
    const timeout = this.s.publishTimeoutMs ?? 10_000;
    try {
      return await fetch(url, { method: 'POST', ...init, signal: AbortSignal.timeout(timeout) });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why =
        err instanceof Error && err.name === 'TimeoutError'
          ? `no answer within ${timeout} ms`
          : (cause?.code ?? cause?.message ?? errorText(err));
      throw new Error(
        `Dapr publish to ${what} failed: sidecar unreachable at ${this.base} (${why}); is daprd running with --dapr-http-port ${this.s.httpPort} (DAPR_HTTP_PORT)?`,
        { cause: err },
      );
    }
  }

  private async failure(res: Response, what: string): Promise<Error & { errorCode?: string }> {
    const text = await res.text().catch(() => '');
    let detail = text.slice(0, 500);
    let errorCode: string | undefined;
    try {
      const body = JSON.parse(text) as { errorCode?: string; message?: string };
      errorCode = body.errorCode;
      if (body.errorCode || body.message) detail = `${body.errorCode ?? ''} ${body.message ?? ''}`.trim();
    } catch {
      /* not JSON */
    }
    const err: Error & { errorCode?: string } = new Error(
      `Dapr publish to ${this.s.pubsubName}/${what} failed: HTTP ${res.status}${detail ? ` ${detail}` : ''}`,
    );
    if (errorCode) err.errorCode = errorCode;
    return err;
  }

  /** One message: the event's traceparent goes as the HTTP header, or daprd replaces it with its own. */
  private async publishOne(m: OutgoingMessage): Promise<void> {
    const query = new URLSearchParams({ 'metadata.partitionKey': m.key });
    // Other metadata entries become Kafka record headers (the dead-letter failure headers, for instance).
    for (const [k, v] of Object.entries(m.headers ?? {})) query.set(`metadata.${k}`, v);
    const url = `${this.base}/v1.0/publish/${encodeURIComponent(this.s.pubsubName)}/${encodeURIComponent(
      m.topic,
    )}?${query}`;
    const headers: Record<string, string> = { 'content-type': 'application/cloudevents+json' };
    if (m.event.traceparent) headers.traceparent = m.event.traceparent;
    const res = await this.post(url, m.topic, { headers, body: JSON.stringify(m.event) });
    if (!res.ok) throw await this.failure(res, m.topic);
    await res.body?.cancel();
  }

  /**
   * Messages of one topic and distinct keys in one request (Dapr's bulk publish API, alpha in 1.16). Each
   * entry carries `traceid` = its traceparent: the only way daprd keeps a per-entry traceparent there.
   */
  private async publishBulk(topic: string, list: OutgoingMessage[]): Promise<void> {
    const entries = list.map((m, i) => ({
      entryId: String(i),
      event: m.event.traceparent ? { ...m.event, traceid: m.event.traceparent } : m.event,
      contentType: 'application/cloudevents+json',
      metadata: { ...(m.headers ?? {}), partitionKey: m.key },
    }));
    const url = `${this.base}/v1.0-alpha1/publish/bulk/${encodeURIComponent(
      this.s.pubsubName,
    )}/${encodeURIComponent(topic)}`;
    const res = await this.post(url, topic, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(entries),
    });
    if (res.ok) {
      await res.body?.cancel();
      return;
    }
    const err = await this.failure(res, topic);
    if ((res.status === 404 || res.status === 405) && !err.errorCode?.startsWith('ERR_PUBSUB')) {
      this.log?.warn({ err: err.message }, 'daprd has no bulk publish API; publishing one message at a time');
      this.bulk = false;
      return;
    }
    throw err;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** Entries per bulk publish request. */
const MAX_BULK = 500;

// ----------------------------------------------------------------------------------------------- subscriber

interface Registered {
  group: string;
  topic: string;
  path: string;
  handler: MessageHandler;
  /** A batching group (batchHandler and batchIntervalMs): daprd delivers it in bulk. */
  bulk?: { batchHandler: BatchHandler; maxMessagesCount: number; maxAwaitDurationMs: number };
  hooks?: ConsumeHooks;
  closed: boolean;
  inflight: Set<Promise<unknown>>;
}

/** One entry of a bulk delivery (Dapr's bulk subscribe, alpha in 1.16): the CloudEvent and Kafka's metadata. */
interface BulkEntry {
  entryId: string;
  event: unknown;
  metadata?: Record<string, string>;
}
interface BulkDelivery {
  entries: BulkEntry[];
}
const isBulkDelivery = (body: unknown): body is BulkDelivery =>
  isObject(body) &&
  Array.isArray(body.entries) &&
  body.entries.every((e: unknown) => isObject(e) && typeof e.entryId === 'string');

/** HTTP headers that are not Kafka record headers. */
const HTTP_ONLY = new Set([
  'host',
  'user-agent',
  'content-length',
  'content-type',
  'accept-encoding',
  'connection',
  'traceparent',
  'tracestate',
]);

const MAX_TRACKED_ATTEMPTS = 10_000;
/** Backoff while a handler's dependency is unreachable (the delivery is held, not answered). */
const HOLD_WHILE_UNAVAILABLE = { maxAttempts: 0, baseDelayMs: 500, maxDelayMs: 10_000 };

export class DaprSubscriber implements Subscriber {
  private readonly byTopic = new Map<string, Registered>();
  /** Failed deliveries per message, for logs and metrics (daprd does the redelivering). */
  private readonly attempts = new Map<string, number>();
  private served = false;
  /** Aborted when the HTTP server starts closing: held deliveries stop waiting and answer RETRY. */
  private readonly stopping = new AbortController();

  constructor(
    private readonly s: DaprSettings,
    private readonly log: Logger,
    private readonly app?: FastifyInstance,
  ) {
    if (app) this.mount(app);
  }

  /** The subscription list daprd reads from GET /dapr/subscribe. */
  subscriptions() {
    return [...this.byTopic.values()]
      .filter((r) => !r.closed)
      .map((r) => ({
        pubsubname: this.s.pubsubName,
        topic: r.topic,
        routes: { default: r.path },
        deadLetterTopic: dlqTopic(r.group),
        metadata: { rawPayload: 'false' },
        ...(r.bulk
          ? {
              bulkSubscribe: {
                enabled: true,
                maxMessagesCount: r.bulk.maxMessagesCount,
                maxAwaitDurationMs: r.bulk.maxAwaitDurationMs,
              },
            }
          : {}),
      }));
  }

  private mount(app: FastifyInstance) {
    // Before the server waits for in-flight requests: a delivery held through a database outage would
    // otherwise keep the shutdown waiting for as long as the outage lasts.
    app.addHook('preClose', async () => this.stopping.abort());
    if (!app.hasContentTypeParser('application/cloudevents+json'))
      app.addContentTypeParser('application/cloudevents+json', { parseAs: 'string' }, (_req, body, done) => {
        try {
          done(null, JSON.parse(body as string));
        } catch (err) {
          done(err as Error, undefined);
        }
      });
    app.get('/dapr/subscribe', { schema: { hide: true } }, async () => {
      this.served = true;
      return this.subscriptions();
    });
    app.post('/dapr/events/:group/:topic', { schema: { hide: true } }, async (req) => {
      const { group, topic } = req.params as { group: string; topic: string };
      if (isBulkDelivery(req.body)) return { statuses: await this.deliverBulk(group, topic, req.body) };
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers))
        if (typeof v === 'string' && !HTTP_ONLY.has(k)) headers[k] = v;
      const status = await this.deliver(group, topic, req.body, headers);
      return { status };
    });
  }

  /** Handles one delivery from daprd and says what daprd should do with it. */
  async deliver(
    group: string,
    topic: string,
    body: unknown,
    headers: Record<string, string>,
  ): Promise<DaprStatus> {
    return this.inSubscription(
      group,
      topic,
      () => 'RETRY',
      (sub) => this.handle(sub, this.messageOf(sub, body, headers)),
    );
  }

  /**
   * Runs `work` for the open subscription of `group` on `topic`, counted in flight (close waits for it); with
   * none (shutting down, or a stale subscription) answers `closed()`, a RETRY, so daprd redelivers rather
   * than lose it.
   */
  private async inSubscription<T>(
    group: string,
    topic: string,
    closed: () => T,
    work: (sub: Registered) => Promise<T>,
  ): Promise<T> {
    const sub = this.byTopic.get(topic);
    if (!sub || sub.group !== group || sub.closed) {
      this.log.warn({ group, topic }, 'dapr delivery for a subscription that is not open; answering RETRY');
      return closed();
    }
    const run = work(sub);
    sub.inflight.add(run);
    try {
      return await run;
    } finally {
      sub.inflight.delete(run);
    }
  }

  /**
   * A bulk delivery (a batching group's subscription): the entries of one partition, in order. The valid ones
   * go to the batch handler at once (one transaction for all); if that fails, or for an invalid entry, each is
   * handled alone as a single delivery would be. After the first entry that is not handled (RETRY), the rest
   * are answered RETRY unhandled, so daprd redelivers them after it, in order, as it does one by one.
   */
  async deliverBulk(
    group: string,
    topic: string,
    bulk: BulkDelivery,
  ): Promise<{ entryId: string; status: DaprStatus }[]> {
    return this.inSubscription(
      group,
      topic,
      () => bulk.entries.map((e) => ({ entryId: e.entryId, status: 'RETRY' as const })),
      (sub) => this.handleBulk(sub, bulk.entries),
    );
  }

  private async handleBulk(
    sub: Registered,
    entries: BulkEntry[],
  ): Promise<{ entryId: string; status: DaprStatus }[]> {
    const statuses = new Map<string, DaprStatus>();
    const parsed = entries.map((e) => ({
      entry: e,
      message: this.messageOf(sub, e.event, e.metadata ?? {}),
    }));
    if (sub.bulk && parsed.length > 1 && parsed.every((p) => eventProblems(p.message.event).length === 0)) {
      const started = performance.now();
      try {
        await sub.bulk.batchHandler(
          parsed.map((p) => ({ message: p.message, traceparent: p.message.event.traceparent })),
        );
        const each = (performance.now() - started) / parsed.length;
        for (const p of parsed) {
          sub.hooks?.onHandled?.(p.message, each);
          statuses.set(p.entry.entryId, 'SUCCESS');
        }
      } catch (err) {
        this.log.warn(
          { group: sub.group, err: errorText(err), messages: parsed.length },
          'batch handler failed; handling the bulk delivery entry by entry',
        );
      }
    }
    let blocked = false;
    for (const p of parsed) {
      if (statuses.has(p.entry.entryId)) continue;
      const status = blocked ? 'RETRY' : await this.handle(sub, p.message);
      if (status === 'RETRY') blocked = true;
      statuses.set(p.entry.entryId, status);
    }
    return entries.map((e) => ({ entryId: e.entryId, status: statuses.get(e.entryId) ?? 'RETRY' }));
  }

  /** A delivery as the bus message handlers see: the event without daprd's additions, Kafka's metadata. */
  private messageOf(sub: Registered, body: unknown, headers: Record<string, string>): BusMessage {
    const event = eventFromDelivery(body, headers);
    return {
      topic: headers.__topic ?? sub.topic,
      partition: Number(headers.__partition ?? 0),
      offset: headers.__offset ?? '-1',
      key: headers.__key ?? event.partitionkey ?? '',
      headers,
      event,
      timestamp: headers.__timestamp
        ? new Date(Number(headers.__timestamp)).toISOString()
        : new Date().toISOString(),
    };
  }

  private async handle(sub: Registered, message: BusMessage): Promise<DaprStatus> {
    const event = message.event;
    const log = this.log.child({
      group: sub.group,
      topic: message.topic,
      partition: message.partition,
      offset: message.offset,
      event_id: event?.id,
      event_type: event?.type,
      trace_id: event?.traceparent?.split('-')[1],
    });
    const problems = eventProblems(event);
    if (problems.length) {
      const error = `invalid event: ${problems.join('; ')}`;
      log.warn({ error }, 'invalid event, dropping to the dead-letter topic');
      sub.hooks?.onDeadLetter?.(message, error);
      return 'DROP';
    }
    const id = `${message.topic}/${message.partition}/${message.offset}/${event.id}`;
    const started = performance.now();
    try {
      await this.callHandler(sub, message, log);
      sub.hooks?.onHandled?.(message, performance.now() - started);
      this.attempts.delete(id);
      return 'SUCCESS';
    } catch (err) {
      const attempt = (this.attempts.get(id) ?? 0) + 1;
      if (err instanceof PermanentError) {
        this.attempts.delete(id);
        log.error({ err, attempt }, 'permanent failure, dropping to the dead-letter topic');
        sub.hooks?.onDeadLetter?.(message, errorText(err));
        return 'DROP';
      }
      this.attempts.delete(id); // re-insert: the map stays in least-recently-failed order
      this.attempts.set(id, attempt);
      if (this.attempts.size > MAX_TRACKED_ATTEMPTS)
        this.attempts.delete(this.attempts.keys().next().value as string);
      sub.hooks?.onRetry?.(message, attempt, err);
      log.warn(
        { err: errorText(err), attempt },
        'handler failed; daprd redelivers per its resiliency policy (dead-letter topic when used up)',
      );
      return 'RETRY';
    }
  }

  /**
   * Calls the handler; while it fails because a dependency is unreachable (the database restarting), holds
   * the delivery and retries, which pauses this partition, instead of answering RETRY: daprd's few
   * redeliveries would otherwise dead-letter everything that arrives during the outage.
   */
  private async callHandler(sub: Registered, message: BusMessage, log: Logger): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await sub.handler(message);
      } catch (err) {
        if (!isUnavailable(err) || sub.closed || this.stopping.signal.aborted) throw err;
        const delay = backoffDelay(attempt, HOLD_WHILE_UNAVAILABLE);
        log.warn(
          { err: errorText(err), attempt, retry_in_ms: delay },
          'a dependency is unavailable; holding the delivery and retrying',
        );
        await sleep(delay, undefined, { signal: this.stopping.signal }).catch(() => undefined);
      }
    }
  }

  async subscribe(opts: SubscribeOptions): Promise<Subscription> {
    if (!this.app)
      throw new Error(
        'BUS=dapr: subscribing needs the process HTTP server (daprd delivers to /dapr/events/...); start the consumer through runTargets',
      );
    for (const topic of opts.topics) {
      const other = this.byTopic.get(topic);
      if (other && !other.closed)
        throw new Error(
          `BUS=dapr: topic ${topic} is already subscribed by group ${other.group} in this process; Dapr allows one subscription per topic per app (and the app id is the consumer group): run group ${opts.group} in its own process with its own sidecar (app id ${opts.group})`,
        );
    }
    if (opts.fromBeginning === false)
      this.log.info(
        { group: opts.group },
        'BUS=dapr: where a new group starts is the component initialOffset, not fromBeginning',
      );
    if (this.served)
      this.log.warn(
        { group: opts.group, topics: opts.topics },
        'BUS=dapr: subscription added after daprd read /dapr/subscribe; the sidecar will not deliver it until it restarts',
      );
    const regs: Registered[] = opts.topics.map((topic) => ({
      group: opts.group,
      topic,
      path: `/dapr/events/${encodeURIComponent(opts.group)}/${encodeURIComponent(topic)}`,
      handler: opts.handler,
      ...(opts.batchHandler && opts.batchIntervalMs
        ? {
            bulk: {
              batchHandler: opts.batchHandler,
              maxMessagesCount: opts.maxBatch ?? DEFAULT_MAX_BATCH,
              maxAwaitDurationMs: opts.batchIntervalMs,
            },
          }
        : {}),
      ...(opts.hooks ? { hooks: opts.hooks } : {}),
      closed: false,
      inflight: new Set(),
    }));
    for (const r of regs) this.byTopic.set(r.topic, r);
    return {
      close: async () => {
        for (const r of regs) r.closed = true;
        await Promise.allSettled(regs.flatMap((r) => [...r.inflight]));
        for (const r of regs) if (this.byTopic.get(r.topic) === r) this.byTopic.delete(r.topic);
      },
    };
  }

  async close(): Promise<void> {
    const all = [...this.byTopic.values()];
    for (const r of all) r.closed = true;
    await Promise.allSettled(all.flatMap((r) => [...r.inflight]));
    this.byTopic.clear();
  }
}

// -------------------------------------------------------------------------------------------------- admin

/**
 * Dapr's API has no topic, offset or dead-letter access: delegate to the Kafka brokers behind the component
 * (KAFKA_BROKERS), and read what daprd writes: structured CloudEvents in the record value, and dead letters
 * that carry the source position in `__topic`/`__partition`/`__offset` headers instead of our failure headers.
 */
export class DaprAdmin implements BusAdmin {
  constructor(private readonly kafka: KafkaAdmin | null) {}

  private need(what: string): KafkaAdmin {
    if (!this.kafka)
      throw new Error(
        `${what} is not supported on BUS=dapr without KAFKA_BROKERS: Dapr's API has no topic, offset or dead-letter access; set KAFKA_BROKERS (and KAFKA_SASL_*/KAFKA_SSL*) to the brokers behind the pub/sub component`,
      );
    return this.kafka;
  }

  async ensureTopics(
    topics: readonly { name: string; partitions: number; retentionMs: number }[],
  ): Promise<void> {
    await this.need('creating topics').ensureTopics(topics);
  }

  async describeTopics() {
    return this.need('describing topics').describeTopics();
  }

  async lag(group?: string): Promise<PartitionLag[]> {
    return this.need('consumer lag').lag(group);
  }

  async listGroups(): Promise<string[]> {
    return this.need('listing consumer groups').listGroups();
  }

  async read(topic: string, opts?: { limit?: number }): Promise<StoredMessage[]> {
    return (await this.need('reading a topic').read(topic, opts)).map(normalizeStored);
  }

  async tail(
    topic: string,
    opts: { fromBeginning: boolean; signal: AbortSignal },
    onMessage: (m: StoredMessage) => void,
  ): Promise<void> {
    return this.need('tailing a topic').tail(topic, opts, (m) => onMessage(normalizeStored(m)));
  }

  async close(): Promise<void> {
    await this.kafka?.close();
  }
}

/**
 * A record as daprd wrote it, in the shape the other transports store: the structured CloudEvent unwrapped
 * (the Kafka admin decodes binary mode, so it sees the whole envelope as `data`), and for a dead letter
 * written by daprd, the failure headers derived from the ones it copies from the source record.
 */
export function normalizeStored(m: StoredMessage): StoredMessage {
  let event = m.event;
  const inner = (event as { data?: unknown }).data;
  if (!event.specversion && isObject(inner) && inner.specversion !== undefined) event = cleanDaprEvent(inner);
  const headers = { ...m.headers };
  if (isDlqTopic(m.topic) && !headers[DLQ_HEADERS.sourceTopic] && headers.__topic) {
    headers[DLQ_HEADERS.sourceTopic] = headers.__topic;
    headers[DLQ_HEADERS.sourcePartition] = headers.__partition ?? '0';
    headers[DLQ_HEADERS.sourceOffset] = headers.__offset ?? '';
    headers[DLQ_HEADERS.group] ??= m.topic.slice(0, -'.dlq'.length);
    headers[DLQ_HEADERS.lastFailure] ??= m.timestamp;
    headers[DLQ_HEADERS.error] ??=
      'dead-lettered by daprd: the subscriber answered DROP (invalid event or permanent error) or the resiliency retries were used up; the reason is in the subscriber log';
  }
  return { ...m, key: m.key || headers.__key || '', headers, event };
}

export function createDaprBus(s: DaprSettings, opts: DaprBusOptions): Bus {
  const publisher = new DaprPublisher(s, opts.log);
  const subscriber = new DaprSubscriber(s, opts.log, opts.app);
  const admin = new DaprAdmin(s.kafka ? new KafkaAdmin({ ...s.kafka, topicPrefix: '' }, opts.log) : null);
  return {
    kind: 'dapr',
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
