/**
 * Subscribing through the sidecar: programmatic subscriptions listed at `GET /dapr/subscribe`, deliveries at
 * `POST /dapr/events/<group>/<topic>` answered SUCCESS, RETRY or DROP (bulk deliveries with a status per entry).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { dlqTopic } from '../../contracts/topics.ts';
import type { Logger } from '../../observability/logger.ts';
import type { ConsumeHooks } from '../consumer.ts';
import { DEFAULT_MAX_BATCH, batchRuns, handledAsBatch } from '../consumer.ts';
import {
  Aborted,
  compose,
  deadLettered,
  forThisGroup,
  handlerOf,
  logOf,
  measured,
  newDelivery,
  publishDeadLetter,
  retried,
  retryUpTo,
  traced,
  validated,
  type Handle,
} from '../middleware.ts';
import { DEFAULT_RETRY, isUnavailable } from '../../retry.ts';
import {
  PermanentError,
  type BatchHandler,
  type BusMessage,
  type Publisher,
  type SubscribeOptions,
  type Subscriber,
  type Subscription,
} from '../types.ts';
import { errorText } from '../../error-text.ts';
import { fromThisMachine } from '../../http/peer.ts';
import { problem, sendProblem } from '../../http/problem.ts';
import { DAPR_TOKEN_HEADER, sameSecret, sidecarMetadata, type DaprSettings } from './settings.ts';
import {
  eventFromDelivery,
  isBulkDelivery,
  type BulkDelivery,
  type BulkEntry,
  type DaprStatus,
} from './wire.ts';

interface Registered {
  group: string;
  topic: string;
  path: string;
  /** The consumer rules up to the outcome (handled, dead-lettered, or a failure daprd redelivers). */
  pipeline: Handle;
  /** false: no dead-letter topic (SubscribeOptions.deadLetters). */
  deadLetters?: false;
  /**
   * The entries of a bulk delivery: retried here, then dead-lettered alone, by this process when it has the
   * bus's publisher (see handleBulk).
   */
  entryPipeline: Handle;
  /** Whether entryPipeline writes its dead letters itself (answered SUCCESS once written, not DROP). */
  entryLettersHere: boolean;
  /** A batching group (batchHandler and batchIntervalMs): daprd delivers it in bulk. */
  bulk?: { batchHandler: BatchHandler; maxMessagesCount: number; maxAwaitDurationMs: number };
  hooks?: ConsumeHooks;
  closed: boolean;
  inflight: Set<Promise<unknown>>;
  /** The handlings of events delivered one at a time (deliver), by event id: a redelivery joins its own. */
  handling: Map<string, Promise<DaprStatus>>;
}

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

/**
 * The Kafka record's time daprd passes in `__timestamp` (ms since the epoch) as ISO 8601; empty when it sends
 * none or one that is not a time (the consume latency is then not observed, rather than observed as 0).
 */
const brokerTime = (ms: string | undefined): string => {
  const at = Number(ms);
  return ms && Number.isFinite(at) && at > 0 && at < 8.64e15 ? new Date(at).toISOString() : '';
};
/** Backoff while a handler's dependency is unreachable (the delivery is held, not answered). */
const HOLD_WHILE_UNAVAILABLE = { maxAttempts: 0, baseDelayMs: 500, maxDelayMs: 10_000 };

export class DaprSubscriber implements Subscriber {
  private readonly byTopic = new Map<string, Registered>();
  /** Failed deliveries per message, for logs and metrics (daprd does the redelivering). */
  private readonly attempts = new Map<string, number>();
  /** daprd has read GET /dapr/subscribe from this process (a subscription added after it is not delivered). */
  private served = false;
  /** Aborted when the HTTP server starts closing: held deliveries stop waiting and answer RETRY. */
  private readonly stopping = new AbortController();

  constructor(
    private readonly s: DaprSettings,
    private readonly log: Logger,
    private readonly app?: FastifyInstance,
    /** The sidecar's publisher: a bulk entry's dead letter is written through it (see handleBulk). */
    private readonly publisher?: Publisher,
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
        // A group without dead letters (the gateway) names none: daprd drops what it is answered DROP for.
        ...(r.deadLetters === false ? {} : { deadLetterTopic: dlqTopic(r.group) }),
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
      app.addContentTypeParser('application/cloudevents+json', { parseAs: 'string' }, parseDelivery);
    // The sidecar's token (APP_API_TOKEN), when set, on every request of the sidecar. Without it only the
    // sidecar's own machine (its pod) is answered, and not through a proxy: these routes share the API's port,
    // and whoever reaches them could post events to the consumers (emails, webhooks, audit records).
    const appToken = this.s.appToken;
    if (!appToken)
      this.log.warn(
        'no APP_API_TOKEN: the Dapr routes (/dapr/*) answer only requests from this machine; set APP_API_TOKEN (the Helm chart does) so that only the sidecar is',
      );
    const fromSidecar = {
      onRequest: async (req: FastifyRequest, reply: FastifyReply) => {
        if (appToken) {
          if (!sameSecret(req.headers[DAPR_TOKEN_HEADER], appToken))
            return sendProblem(
              reply,
              problem(
                401,
                `the Dapr sidecar's ${DAPR_TOKEN_HEADER} header is missing or wrong (APP_API_TOKEN)`,
              ),
            );
        } else if (!fromThisMachine(req))
          return sendProblem(
            reply,
            problem(
              403,
              'without APP_API_TOKEN the Dapr routes answer only the sidecar on this machine (set APP_API_TOKEN)',
            ),
          );
      },
    };
    app.get('/dapr/subscribe', { schema: { hide: true }, ...fromSidecar }, async () => {
      this.served = true;
      return this.subscriptions();
    });
    // A bulk delivery carries up to maxBatch whole events (a task's description alone may be 10,000
    // characters): over the server's body limit it was refused (413), redelivered, and dead-lettered whole.
    const bulkBodyLimit = 64 * 1024 * 1024;
    // In a scope of their own, deliveries are parsed as the sidecar sent them (JSON.parse, as the single
    // deliveries' cloudevents+json): the API's JSON parser refuses a whole body with a "__proto__" key anywhere
    // (400), and daprd answers a bulk delivery's 400 by redelivering and then dead-lettering every entry, one
    // odd event's neighbours unhandled. Each entry is checked by itself after (an invalid event is DROP).
    void app.register(async (scope) => {
      scope.removeContentTypeParser('application/json');
      scope.addContentTypeParser('application/json', { parseAs: 'string' }, parseDelivery);
      scope.post(
        '/dapr/events/:group/:topic',
        { schema: { hide: true }, bodyLimit: bulkBodyLimit, ...fromSidecar },
        async (req) => {
          const { group, topic } = req.params as { group: string; topic: string };
          // Only a bulk subscription's route takes bulk deliveries: on a one-at-a-time one, a record that is no
          // CloudEvent but has an `entries` array (another producer's) is no event, dead-lettered; taken for a
          // bulk delivery, `{"entries":[]}` was answered SUCCESS unseen and an entry's inner event was handled.
          // With no subscription open for the topic, either way answers RETRY.
          const sub = this.byTopic.get(topic);
          if ((!sub || sub.bulk) && isBulkDelivery(req.body))
            return { statuses: await this.deliverBulk(group, topic, req.body) };
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(req.headers))
            if (typeof v === 'string' && !HTTP_ONLY.has(k)) headers[k] = v;
          const status = await this.deliver(group, topic, req.body, headers);
          return { status };
        },
      );
    });
  }

  /**
   * Throws unless the sidecar holds each of this process's subscriptions (its metadata lists the topic with
   * this process's route): a sidecar refused at GET /dapr/subscribe (a rotated APP_API_TOKEN) or started before
   * a subscription subscribed nothing, and the process said ready while nothing was delivered. Asked of the
   * sidecar, not of whether it called GET /dapr/subscribe here: daprd reads that once in its lifetime, and a
   * process restarted beside a running sidecar (a container restart) stayed NotReady for good while it was
   * delivered to.
   */
  async checkSubscriptions(): Promise<void> {
    const open = [...this.byTopic.values()].filter((r) => !r.closed);
    if (open.length === 0) return;
    const { subscriptions = [] } = await sidecarMetadata(this.s);
    const held = (r: Registered) =>
      subscriptions.some(
        (x) =>
          x.pubsubname === this.s.pubsubName &&
          x.topic === r.topic &&
          (x.rules ?? []).some((rule) => rule.path === r.path),
      );
    const missing = open.filter((r) => !held(r)).map((r) => r.topic);
    if (missing.length === open.length)
      throw new Error(
        "the Dapr sidecar has not read this app's subscriptions (GET /dapr/subscribe) yet: it delivers nothing until it does (a sidecar refused there has another APP_API_TOKEN)",
      );
    if (missing.length)
      throw new Error(
        `the Dapr sidecar read this app's subscriptions before ${missing.join(', ')} subscribed: it delivers those only after it restarts`,
      );
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
      async (sub) => {
        const message = this.messageOf(sub, body, headers);
        // A sidecar that died while this event was being handled: the new one delivers it again, and the
        // partition's next events after it, while the first handling runs on. The redelivery waits for that
        // handling and answers its outcome (daprd holds the partition meanwhile, and its HTTP call has no
        // deadline): one user's handlings stay one at a time, in order. Answered RETRY at once, the
        // redeliveries ran out before a long handling ended, and the event was dead-lettered while handled.
        const id = typeof message.event.id === 'string' ? message.event.id : '';
        const running = id ? sub.handling.get(id) : undefined;
        if (running) {
          this.log.warn(
            { group, topic, event_id: id },
            'dapr delivered an event still being handled here (its sidecar restarted); answering when that ends',
          );
          return running;
        }
        const handled = this.handle(sub, message);
        if (!id) return handled;
        sub.handling.set(id, handled);
        try {
          return await handled;
        } finally {
          sub.handling.delete(id);
        }
      },
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
   * handled alone, in order, with its retries here (DEFAULT_RETRY, as on Kafka) and then dead-lettered alone:
   * answered RETRY, an entry that kept failing was dead-lettered by daprd together with every entry after it,
   * which were answered RETRY unhandled (a NUL in one event's title sent five valid events to the dead-letter
   * topic). The dead letter is written here, through the sidecar, with the failure's headers, as on Kafka
   * (tried again until it is written, holding the partition), and the entry answered SUCCESS: answered DROP,
   * daprd 1.16's bulk path committed past an entry whose dead letter it could not write (a dead-letter topic
   * refusing the record), and the event was lost. Only a stop answers RETRY: then the rest are answered RETRY
   * unhandled, so daprd redelivers them after it, in order.
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
    const entryOf = new Map<BusMessage, string>();
    for (const e of entries) entryOf.set(this.messageOf(sub, e.event, e.metadata ?? {}), e.entryId);
    const messages = [...entryOf.keys()];
    // In order: a run a batch takes at once, the others' messages (and a failed batch's) one by one; after a
    // RETRY the rest is RETRY too, so daprd redelivers from there and the topic's order holds.
    const runs = sub.bulk
      ? batchRuns(messages, sub.group)
      : messages.map((m) => ({ messages: [m], batch: false }));
    let blocked = false;
    for (const run of runs) {
      if (!blocked && run.batch && sub.bulk) {
        const { batchHandler } = sub.bulk;
        if (await handledAsBatch(run.messages, batchHandler, { ...sub, log: this.log })) {
          for (const m of run.messages) statuses.set(entryOf.get(m)!, 'SUCCESS');
          continue;
        }
      }
      for (const m of run.messages) {
        const status = blocked ? 'RETRY' : await this.handle(sub, m, sub.entryPipeline, sub.entryLettersHere);
        if (status === 'RETRY') blocked = true;
        statuses.set(entryOf.get(m)!, status);
      }
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
      timestamp: brokerTime(headers.__timestamp),
    };
  }

  /**
   * One message through the subscription's pipeline, and the answer daprd acts on: SUCCESS when handled (or
   * dead-lettered by `pipeline` itself: `lettersHere`), DROP when dead-lettered (daprd writes it to the
   * dead-letter topic), RETRY when it failed (daprd redelivers per its resiliency policy, and dead-letters it
   * when that is used up).
   */
  private async handle(
    sub: Registered,
    message: BusMessage,
    pipeline = sub.pipeline,
    lettersHere = false,
  ): Promise<DaprStatus> {
    const d = newDelivery(message, sub.group);
    const id = `${message.topic}/${message.partition}/${message.offset}/${message.event?.id}`;
    try {
      await pipeline(d);
    } catch (err) {
      // Shutdown stopped it: nothing was decided, daprd delivers it again (no failure to count).
      if (err instanceof Aborted) return 'RETRY';
      const attempt = (this.attempts.get(id) ?? 0) + 1;
      this.attempts.delete(id); // re-insert: the map stays in least-recently-failed order
      this.attempts.set(id, attempt);
      if (this.attempts.size > MAX_TRACKED_ATTEMPTS)
        this.attempts.delete(this.attempts.keys().next().value as string);
      sub.hooks?.onRetry?.(message, attempt, err);
      logOf(this.log, d).warn(
        { err: errorText(err), attempt },
        'handler failed; daprd redelivers per its resiliency policy (dead-letter topic when used up)',
      );
      return 'RETRY';
    }
    this.attempts.delete(id);
    return d.deadLettered === undefined || lettersHere ? 'SUCCESS' : 'DROP';
  }

  /**
   * Dapr's chain: a CONSUMER span, dead-lettering of what is poison at once (an invalid event, a
   * PermanentError), validation, and while a dependency is unreachable (the database restarting) holding the
   * delivery and retrying, which pauses this partition, instead of answering RETRY: daprd's few redeliveries
   * would otherwise dead-letter everything that arrives during the outage.
   */
  private pipeline(
    reg: Pick<Registered, 'closed'>,
    handler: SubscribeOptions['handler'],
    hooks?: ConsumeHooks,
    opts: { retryHere?: boolean; lettersHere?: boolean } = {},
  ): Handle {
    const log = this.log;
    // retryHere (the entries of a bulk delivery): a failure is retried here, as on Kafka (DEFAULT_RETRY; an
    // outage for as long as it lasts), and then the entry alone is dead-lettered (DROP).
    const retryUpToDefault = retryUpTo(DEFAULT_RETRY);
    return compose(
      handlerOf(handler),
      forThisGroup,
      traced,
      deadLettered({
        log,
        hooks,
        isPoison: (err) =>
          err instanceof PermanentError || (opts.retryHere === true && !(err instanceof Aborted)),
        ...(opts.lettersHere && this.publisher
          ? { send: publishDeadLetter(this.publisher, DEFAULT_RETRY, log, this.stopping.signal) }
          : {}),
      }),
      validated({ log, hooks }),
      retried({
        policy: opts.retryHere ? DEFAULT_RETRY : HOLD_WHILE_UNAVAILABLE,
        signal: this.stopping.signal,
        shouldRetry: (err, attempt) =>
          !reg.closed && (opts.retryHere ? retryUpToDefault(err, attempt) : isUnavailable(err)),
        log,
      }),
      measured(hooks),
    );
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
    const regs: Registered[] = opts.topics.map((topic) => {
      const reg: Omit<Registered, 'pipeline' | 'entryPipeline' | 'entryLettersHere'> = {
        group: opts.group,
        topic,
        path: `/dapr/events/${encodeURIComponent(opts.group)}/${encodeURIComponent(topic)}`,
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
        ...(opts.deadLetters === false ? { deadLetters: false } : {}),
        closed: false,
        inflight: new Set(),
        handling: new Map(),
      };
      // A group with a dead-letter topic writes a bulk entry's dead letter itself (handleBulk).
      const entryLettersHere = opts.deadLetters !== false && this.publisher !== undefined;
      return Object.assign(reg, {
        pipeline: this.pipeline(reg, opts.handler, opts.hooks),
        entryPipeline: this.pipeline(reg, opts.handler, opts.hooks, {
          retryHere: true,
          lettersHere: entryLettersHere,
        }),
        entryLettersHere,
      });
    });
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

/** A delivery's body as JSON.parse reads it: a "__proto__" key is an own property of the result, not a prototype. */
function parseDelivery(
  _req: FastifyRequest,
  body: string | Buffer,
  done: (err: Error | null, value?: unknown) => void,
) {
  try {
    done(null, body === '' ? undefined : JSON.parse(body as string));
  } catch (err) {
    done(err as Error, undefined);
  }
}
