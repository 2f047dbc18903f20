/** Prometheus metrics (prom-client), one registry per process, served at `/metrics` by every target. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Where the lag and DLQ-size gauges read a consumer group's figures (the bus admin). */
export interface ConsumerGroupSource {
  lag(): Promise<readonly { topic: string; partition: number; lag: number }[]>;
  /** Messages in the group's dead-letter topic; absent when the transport cannot count them cheaply. */
  deadLetters?(): Promise<number>;
}

const BUS_READ_TIMEOUT_MS = 3_000;
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Statement counts of a database (Db.statements). */
interface StatementSource {
  readonly byKind: ReadonlyMap<string, number>;
}

export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests = new Counter({
    name: 'taskflow_http_requests_total',
    help: 'HTTP requests by route, method and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new Histogram({
    name: 'taskflow_http_request_duration_seconds',
    help: 'HTTP request latency by route',
    labelNames: ['method', 'route'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly eventsProduced = new Counter({
    name: 'taskflow_events_produced_total',
    help: 'Events written to the bus, by topic and type',
    labelNames: ['topic', 'type'] as const,
    registers: [this.registry],
  });
  readonly eventsConsumed = new Counter({
    name: 'taskflow_events_consumed_total',
    help: 'Events handled by consumers, by group, topic, type and outcome',
    labelNames: ['group', 'topic', 'type', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly handlerDuration = new Histogram({
    name: 'taskflow_handler_duration_seconds',
    help: 'Consumer handler latency',
    labelNames: ['group', 'type'] as const,
    buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [this.registry],
  });
  /** The seed's "event publishing latency": from an event's `time` (when it is written) to on the bus. */
  readonly publishLatency = new Histogram({
    name: 'taskflow_event_publish_latency_seconds',
    help: "From an event's time (set as it is written with its state change) to being on the bus: committed to the embedded log, or acknowledged by Kafka or the Dapr sidecar, by topic",
    labelNames: ['topic'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  /** The seed's "event consumption latency": from a message's bus timestamp to handled. */
  readonly consumeLatency = new Histogram({
    name: 'taskflow_event_consume_latency_seconds',
    help: "From a message's bus timestamp (appended to the log, or the Kafka record time) to handled, by consumer group",
    labelNames: ['group'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly handlerRetries = new Counter({
    name: 'taskflow_handler_retries_total',
    help: 'Handler failures that were retried',
    labelNames: ['group', 'type'] as const,
    registers: [this.registry],
  });
  readonly deadLetters = new Counter({
    name: 'taskflow_dead_letters_total',
    help: 'Events sent to a dead-letter topic',
    labelNames: ['group', 'topic'] as const,
    registers: [this.registry],
  });
  readonly outboxPending = new Gauge({
    name: 'taskflow_outbox_pending_events',
    help: 'Outbox rows not yet published',
    registers: [this.registry],
  });
  readonly outboxOldestAge = new Gauge({
    name: 'taskflow_outbox_oldest_pending_age_seconds',
    help: 'Age of the oldest unpublished outbox row',
    registers: [this.registry],
  });
  /** Where the create queue's age comes from (the api target's task store); none: 0. */
  private createQueue: (() => number) | undefined;
  readonly createQueueAge = new Gauge({
    name: 'taskflow_create_queue_age_seconds',
    help: 'How long the oldest task create not yet written has waited (admission control refuses new creates past CREATE_QUEUE_MAX_MS)',
    registers: [this.registry],
    collect: () => {
      this.createQueueAge.set((this.createQueue?.() ?? 0) / 1000);
    },
  });
  readonly ledgerPruned = new Counter({
    name: 'taskflow_ledger_pruned_rows_total',
    help: "Rows of the consumers' dedupe ledger (processed_events) deleted past LEDGER_RETENTION_MS",
    registers: [this.registry],
  });
  readonly auditRecords = new Counter({
    name: 'taskflow_audit_records_total',
    help: 'Audit records appended, by operation (event type)',
    labelNames: ['operation'] as const,
    registers: [this.registry],
  });
  readonly websocketConnections = new Gauge({
    name: 'taskflow_websocket_connections',
    help: 'Open WebSocket connections of the gateway',
    registers: [this.registry],
  });
  readonly websocketMessages = new Counter({
    name: 'taskflow_websocket_messages_sent_total',
    help: 'Frames sent by the gateway, by type (task.changed, resync, hello)',
    labelNames: ['type'] as const,
    registers: [this.registry],
  });
  readonly websocketDisconnects = new Counter({
    name: 'taskflow_websocket_disconnects_total',
    help: 'WebSocket connections closed, by reason (client, slow, dead, shutdown)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly remindersPending = new Gauge({
    name: 'taskflow_reminders_pending',
    help: 'Reminders scheduled and not yet fired, missed or dismissed',
    registers: [this.registry],
  });
  readonly reminderLateness = new Histogram({
    name: 'taskflow_reminder_trigger_lateness_seconds',
    help: 'How long after its time a reminder was fired (or found missed), by outcome',
    labelNames: ['outcome'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600],
    registers: [this.registry],
  });
  readonly notificationDeliveries = new Counter({
    name: 'taskflow_notification_deliveries_total',
    help: 'Notification delivery attempts by channel and outcome (sent, failed, dead, skipped)',
    labelNames: ['channel', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly notificationsDead = new Counter({
    name: 'taskflow_notification_dead_total',
    help: 'Notifications given up after the maximum number of attempts, by channel',
    labelNames: ['channel'] as const,
    registers: [this.registry],
  });

  // --- Consumer lag and DLQ size: read from the bus when /metrics is scraped, for the groups this process
  // consumes (consumer targets register them with trackConsumerGroup). ---
  private readonly consumerGroups = new Map<string, ConsumerGroupSource>();
  readonly consumerLag = new Gauge({
    name: 'taskflow_consumer_lag_messages',
    help: 'Messages not yet handled by a consumer group, by topic and partition (end offset - committed offset), read at scrape time',
    labelNames: ['group', 'topic', 'partition'] as const,
    registers: [this.registry],
    collect: () => this.refreshConsumerGroups(),
  });
  readonly deadLetterMessages = new Gauge({
    name: 'taskflow_dlq_messages',
    help: 'Messages retained in a consumer group dead-letter topic (<group>.dlq), read at scrape time',
    labelNames: ['group'] as const,
    registers: [this.registry],
    collect: () => this.refreshConsumerGroups(),
  });
  readonly busReadErrors = new Counter({
    name: 'taskflow_metrics_bus_read_errors_total',
    help: 'Failed or timed-out reads of consumer lag / DLQ size at scrape time, by group',
    labelNames: ['group'] as const,
    registers: [this.registry],
  });

  private readonly statementSources: StatementSource[] = [];
  readonly dbStatements = new Counter({
    name: 'taskflow_db_statements_total',
    help: 'SQL statements run by this process, by kind (verb and table, BEGIN, COMMIT): what a write costs in round trips',
    labelNames: ['kind'] as const,
    registers: [this.registry],
    collect: () => {
      this.dbStatements.reset();
      for (const source of this.statementSources)
        for (const [kind, n] of source.byKind) this.dbStatements.inc({ kind }, n);
    },
  });

  /**
   * The registry in the text exposition format. prom-client writes a NaN value as `Nan`, which the format
   * (and Prometheus' parser) does not accept; the event-loop lag mean is NaN when the loop recorded no delay
   * since the last scrape, which happens on a busy, fast loop. Written as `NaN` here.
   */
  async exposition(): Promise<string> {
    return (await this.registry.metrics()).replace(/ Nan$/gm, ' NaN');
  }

  /** Reports the age of the oldest create not yet written (ms) on /metrics. */
  trackCreateQueue(ageMs: () => number): void {
    this.createQueue = ageMs;
  }

  /** Reports the statements counted by a database on /metrics. */
  trackStatements(source: StatementSource): void {
    if (!this.statementSources.includes(source)) this.statementSources.push(source);
  }

  /** Reports lag and DLQ size of `group` on /metrics until the returned function is called. */
  trackConsumerGroup(group: string, source: ConsumerGroupSource): () => void {
    this.consumerGroups.set(group, source);
    return () => {
      if (this.consumerGroups.get(group) !== source) return;
      this.consumerGroups.delete(group);
      this.deadLetterMessages.remove({ group });
      this.lagSeries.get(group)?.forEach((labels) => this.consumerLag.remove(labels));
      this.lagSeries.delete(group);
    };
  }

  private readonly lagSeries = new Map<string, { group: string; topic: string; partition: string }[]>();

  private refreshing: Promise<void> | undefined;
  /** One read of the bus per scrape, shared by the gauges that need it. */
  private refreshConsumerGroups(): Promise<void> {
    return (this.refreshing ??= this.collectConsumerGroups().finally(() => {
      this.refreshing = undefined;
    }));
  }

  private async collectConsumerGroups(): Promise<void> {
    const timeout = <T>(p: Promise<T>) =>
      Promise.race([
        p,
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error('timed out')), BUS_READ_TIMEOUT_MS).unref(),
        ),
      ]);
    await Promise.all(
      [...this.consumerGroups].map(async ([group, source]) => {
        try {
          const lag = await timeout(source.lag());
          // Replace the group's series, so partitions that moved away do not linger.
          this.lagSeries.get(group)?.forEach((labels) => this.consumerLag.remove(labels));
          const series = lag.map((l) => ({ group, topic: l.topic, partition: String(l.partition) }));
          lag.forEach((l, i) => this.consumerLag.set(series[i]!, l.lag));
          this.lagSeries.set(group, series);
        } catch {
          this.busReadErrors.inc({ group });
        }
        if (!source.deadLetters) return;
        try {
          this.deadLetterMessages.set({ group }, await timeout(source.deadLetters()));
        } catch {
          this.busReadErrors.inc({ group });
        }
      }),
    );
  }

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false)
      collectDefaultMetrics({ register: this.registry, prefix: 'taskflow_' });
  }

  /** Hooks for the consumer pipeline (bus/middleware.ts) that feed the consumer metrics of one group. */
  consumerHooks(group: string) {
    return {
      onHandled: (m: { topic: string; event: { type: string }; timestamp: string }, ms: number) => {
        this.eventsConsumed.inc({ group, topic: m.topic, type: m.event.type, outcome: 'handled' });
        this.handlerDuration.observe({ group, type: m.event.type }, ms / 1000);
        const at = Date.parse(m.timestamp);
        if (at > 0) this.consumeLatency.observe({ group }, Math.max(0, Date.now() - at) / 1000);
      },
      onRetry: (m: { event: { type: string } }) =>
        this.handlerRetries.inc({ group, type: m.event?.type ?? 'unknown' }),
      onDeadLetter: (m: { topic: string; event: { type: string } }) => {
        this.deadLetters.inc({ group, topic: m.topic });
        this.eventsConsumed.inc({
          group,
          topic: m.topic,
          type: m.event?.type ?? 'unknown',
          outcome: 'dead_lettered',
        });
      },
    };
  }
}
