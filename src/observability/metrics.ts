/** Prometheus metrics (prom-client), one registry per process, served at `/metrics` by every target. */
import { isEventType } from '../contracts/schemas.ts';
import { within } from '../wait.ts';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Where the lag and DLQ-size gauges read a consumer group's figures (the bus admin). */
export interface ConsumerGroupSource {
  lag(): Promise<readonly { topic: string; partition: number; lag: number }[]>;
  /** Dead letters of the group not replayed yet; absent when the transport cannot count them cheaply. */
  deadLetters?(): Promise<number>;
}

const BUS_READ_TIMEOUT_MS = 3_000;

/**
 * An event's type as a metric label: a type of the contract, or `invalid` (a writer of the broker could otherwise
 * add a series per made-up type, without bound).
 */
const typeLabel = (type: unknown): string =>
  typeof type === 'string' && isEventType(type) ? type : type === undefined ? 'unknown' : 'invalid';
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Statement counts of a database (Db.statements). */
interface StatementSource {
  readonly byKind: ReadonlyMap<string, number>;
}

/** Requests sent to Kafka brokers, by API (bus/kafka/connection.ts). */
type KafkaRequestSource = ReadonlyMap<string, number>;

/**
 * A counter whose values are counted elsewhere (by the value of its one label) and copied from `sources` at
 * scrape time: a database's statements, the Kafka client's requests.
 */
function countedElsewhere(
  registry: Registry,
  opts: { name: string; help: string; label: string },
  sources: () => Iterable<ReadonlyMap<string, number>>,
): Counter<string> {
  const counter: Counter<string> = new Counter({
    name: opts.name,
    help: opts.help,
    labelNames: [opts.label],
    registers: [registry],
    collect: () => {
      counter.reset();
      for (const counts of sources())
        for (const [value, n] of counts) counter.inc({ [opts.label]: value }, n);
    },
  });
  return counter;
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
  /** Where `httpInFlight` reads its count at scrape time (the HTTP server's in-flight limit, when on). */
  private inFlightCount: (() => number) | undefined;
  readonly httpInFlight = new Gauge({
    name: 'taskflow_http_requests_in_flight',
    help: 'API requests being served, as MAX_REQUESTS_IN_FLIGHT counts them',
    registers: [this.registry],
    // Read when scraped, not set per request: the count changes twice per request on the hot path.
    collect: () => {
      if (this.inFlightCount) this.httpInFlight.set(this.inFlightCount());
    },
  });
  /** The count `taskflow_http_requests_in_flight` reports. */
  countInFlight(count: () => number): void {
    this.inFlightCount = count;
  }
  /** The metrics of each target this process runs, made by its manifest (`of`). */
  private readonly ofTargets = new Map<string, unknown>();

  /** A target's own metrics, registered on first use: once per process however often it starts. */
  of<M>(target: { name: string; metrics(registry: Registry): M }): M {
    if (!this.ofTargets.has(target.name)) this.ofTargets.set(target.name, target.metrics(this.registry));
    return this.ofTargets.get(target.name) as M;
  }

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
    help: 'Dead letters of a consumer group not replayed yet (in <group>.dlq after its replay position), read at scrape time',
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
  readonly dbStatements = countedElsewhere(
    this.registry,
    {
      name: 'taskflow_db_statements_total',
      help: 'SQL statements run by this process, by kind (verb and table, BEGIN, COMMIT): what a write costs in round trips',
      label: 'kind',
    },
    () => this.statementSources.map((s) => s.byKind),
  );

  private kafkaRequestSource: KafkaRequestSource | undefined;
  readonly kafkaRequests = countedElsewhere(
    this.registry,
    {
      name: 'taskflow_kafka_requests_total',
      help: 'Requests this process sent to Kafka brokers, by API (Produce, Fetch, OffsetCommit...): with the SQL statements, what a write costs in round trips',
      label: 'api',
    },
    () => (this.kafkaRequestSource ? [this.kafkaRequestSource] : []),
  );

  /**
   * The registry in the text exposition format. prom-client writes a NaN value as `Nan`, which the format
   * (and Prometheus' parser) does not accept; the event-loop lag mean is NaN when the loop recorded no delay
   * since the last scrape, which happens on a busy, fast loop. Written as `NaN` here.
   */
  async exposition(): Promise<string> {
    return (await this.registry.metrics()).replace(/ Nan$/gm, ' NaN');
  }

  /** Reports the statements counted by a database on /metrics. */
  trackStatements(source: StatementSource): void {
    if (!this.statementSources.includes(source)) this.statementSources.push(source);
  }

  /** Reports the requests counted by the Kafka client on /metrics. */
  trackKafkaRequests(source: KafkaRequestSource): void {
    this.kafkaRequestSource = source;
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
    const timeout = <T>(p: Promise<T>) => within(p, BUS_READ_TIMEOUT_MS, 'reading the bus');
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
          // Unknown now: no series rather than the last one read (a lag of 0 through a broker outage).
          this.lagSeries.get(group)?.forEach((labels) => this.consumerLag.remove(labels));
          this.lagSeries.delete(group);
          this.busReadErrors.inc({ group });
        }
        if (!source.deadLetters) return;
        try {
          this.deadLetterMessages.set({ group }, await timeout(source.deadLetters()));
        } catch {
          this.deadLetterMessages.remove({ group });
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
        const type = typeLabel(m.event.type);
        this.eventsConsumed.inc({ group, topic: m.topic, type, outcome: 'handled' });
        this.handlerDuration.observe({ group, type }, ms / 1000);
        const at = Date.parse(m.timestamp);
        if (at > 0) this.consumeLatency.observe({ group }, Math.max(0, Date.now() - at) / 1000);
      },
      onRetry: (m: { event: { type: string } }) =>
        this.handlerRetries.inc({ group, type: typeLabel(m.event?.type) }),
      onDeadLetter: (m: { topic: string; event: { type: string } }) => {
        this.deadLetters.inc({ group, topic: m.topic });
        this.eventsConsumed.inc({
          group,
          topic: m.topic,
          type: typeLabel(m.event?.type),
          outcome: 'dead_lettered',
        });
      },
      onDropped: (m: { topic: string; event: { type: string } }) =>
        this.eventsConsumed.inc({
          group,
          topic: m.topic,
          type: typeLabel(m.event?.type),
          outcome: 'dropped',
        }),
      // An event of a type this build does not know (a newer build's): its type is no label (bounded).
      onPassedBy: (m: { topic: string }) =>
        this.eventsConsumed.inc({ group, topic: m.topic, type: 'unknown', outcome: 'passed_by' }),
    };
  }
}
