/**
 * Runs a set of targets in this process: opens the database (migrating it), the bus, one HTTP listener, then
 * starts each target; stops them in reverse order on SIGTERM/SIGINT, finishing in-flight work.
 */
import { createVerifier } from './auth.ts';
import {
  allTopics,
  createBus,
  preloadBus,
  provisionsTopics,
  shortOfPartitions,
  type RegisteredSchemas,
} from './bus/index.ts';
import type { Bus } from './bus/types.ts';
import { ConfigError, type Config } from './config.ts';
import { systemClock, type Clock } from './domain/clock.ts';
import { createHttpServer, routePattern } from './http/server.ts';
import { createLogger, type Logger } from './observability/logger.ts';
import { Metrics } from './observability/metrics.ts';
import {
  deadLetterGroups,
  type RunningTarget,
  type Runtime,
  type TargetDefinition,
  type TargetManifest,
} from './runtime.ts';
import { nameUnreachable, retryWithBackoff } from './retry.ts';
import { exitWhenDatabaseStops, openDb, type Db } from './store/db.ts';
import { isPostgresUrl } from './store/database-url.ts';
import { migrate } from './store/migrate.ts';
import { errorMessage } from './error-text.ts';

/**
 * Connections waiting to be accepted (Node's default 511; the kernel caps it at net.core.somaxconn). A
 * thread busy for 100-300 ms at a time under overload let hundreds of new connections overflow 511
 * (TcpExtListenOverflows 848 in one 8 s step at 2,400 writes/s), and each overflowed one is retried by the
 * client's TCP only after a second or more.
 */
const LISTEN_BACKLOG = 4096;

export interface RunningProcess {
  runtime: Runtime;
  url: string;
  stop(): Promise<void>;
}

export interface RunOptions {
  clock?: Clock;
  log?: Logger;
  /** Reuse an open database (tests); otherwise opened from config.databaseUrl and closed on stop. */
  db?: Db;
  listen?: boolean;
  /**
   * Every target of the binary, not only those this process runs: their dead-letter topics are provisioned
   * here and the api target describes them all (AsyncAPI).
   */
  catalog?: readonly TargetManifest[];
}

export async function runTargets(
  config: Config,
  targets: readonly TargetDefinition[],
  opts: RunOptions = {},
): Promise<RunningProcess> {
  // Every target's configuration section is checked before anything opens: a bad value is one line.
  for (const t of targets) t.config?.(config.env);
  if (config.bus === 'dapr') refuseSharedDaprTopics(targets);
  // Without a catalog, the targets run here that have a manifest.
  const catalog =
    opts.catalog ?? targets.filter((t): t is TargetDefinition & TargetManifest => 'produces' in t);
  const log = opts.log ?? createLogger({ level: config.logLevel, format: config.logFormat });
  const metrics = new Metrics();
  // Progress of a start (one line each on a terminal): database, migrations, bus, targets.
  const since = (t: number) => Math.round(performance.now() - t);
  let step = performance.now();
  const database = isPostgresUrl(config.databaseUrl) ? 'PostgreSQL' : `PGlite ${config.databaseUrl}`;
  // The modules of the bus and of the targets load, and the HTTP server is made, while the database opens
  // (PGlite's start waits on file reads and WebAssembly compilation); failures surface where they are used.
  const preloading = Promise.all([preloadBus(config), ...targets.map((t) => t.preload?.())]);
  preloading.catch(() => undefined);
  // The HTTP server comes before the bus: the Dapr bus adds its subscription routes to it.
  const httpMade = createHttpServer({
    log,
    metrics,
    trustProxy: config.trustProxy,
    rateLimitPerMinute: config.rateLimitPerMinute,
    maxEventLoopDelayMs: config.maxEventLoopDelayMs,
    maxRequestsInFlight: config.maxRequestsInFlight,
    corsOrigins: config.corsOrigins,
    servedElsewhere: servedElsewhere(catalog, targets),
  });
  httpMade.catch(() => undefined); // awaited below; a failure surfaces there
  if (!opts.db) log.info(`opening the database (${database})`);
  let db: Db | undefined;
  let http: Awaited<typeof httpMade> | undefined;
  let bus: Bus;
  try {
    db =
      opts.db ??
      (await openDb(config.databaseUrl, { log: log.child({ component: 'pglite-maintenance' }) }).catch(
        nameUnreachable('the database (DATABASE_URL)'),
      ));
    if (!opts.db) exitWhenDatabaseStops(db, (m) => log.fatal(m));
    metrics.trackStatements(db.statements);
    const applied = await migrate(db, {
      log: (m) => log.info(m),
      warn: (m) => log.warn(m),
      newerSchema: db.kind === 'pglite' ? 'refuse' : 'warn',
    });
    log.info(
      { applied, ms: since(step) },
      applied.length
        ? `database open, ${applied.length} migration(s) applied`
        : 'database open and up to date',
    );
    step = performance.now();
    const schemas = config.schemaRegistry ? await registerSchemas(config, log) : undefined;
    http = await httpMade;
    // Every target reads or writes the database: a process that cannot reach it is not ready (503 on /readyz).
    const opened = db;
    http.addReadinessCheck('database', async () => {
      await opened.query('SELECT 1');
    });
    const server = http;
    bus = await createBus(config, db, log, metrics, {
      http: http.app,
      readiness: (name, check) => server.addReadinessCheck(name, check),
      ...(schemas ? { schemas } : {}),
    });
  } catch (err) {
    await httpMade.then((h) => h.app.close()).catch(() => undefined);
    if (db && !opts.db) await db.close().catch(() => undefined);
    throw err;
  }
  log.info(`bus: ${config.bus}`);
  for (const warning of config.warnings) log.warn(warning);
  const provisioning = provisionTopics(config, bus, log, deadLetterGroups(catalog));
  const runtime: Runtime = {
    config,
    db,
    bus,
    log,
    clock: opts.clock ?? systemClock,
    metrics,
    http,
    verify: createVerifier(config.jwt),
    catalog,
  };
  const running: { name: string; target: RunningTarget }[] = [];
  try {
    for (const t of targets) {
      running.push({ name: t.name, target: await t.start(runtime) });
      log.info({ target: t.name }, 'target started');
    }
    log.info({ ms: since(step) }, `${targets.length} target(s) started`);
    if (opts.listen !== false)
      await http.app
        .listen({ host: config.host, port: config.port, backlog: LISTEN_BACKLOG })
        .catch((err: unknown) => {
          throw new Error(
            `cannot listen on ${config.host}:${config.port} (HOST, PORT): ${errorMessage(err)}`,
            {
              cause: err,
            },
          );
        });
    else await http.app.ready();
  } catch (err) {
    // The server first, as stop() does: its preClose ends deliveries held on it (Dapr), which a target's stop
    // waits for.
    await http.app.close().catch(() => undefined);
    for (const r of running.reverse()) await r.target.stop().catch(() => undefined);
    await bus.close().catch(() => undefined);
    if (!opts.db) await db.close().catch(() => undefined);
    throw err;
  }
  const address = http.app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const url = `http://${reachableHost(config.host)}:${port}`;
  let stopped: Promise<void> | undefined;
  return {
    runtime,
    url,
    stop: () =>
      (stopped ??= (async () => {
        provisioning.abort();
        await http.app.close(); // stop accepting, let in-flight requests finish
        for (const r of [...running].reverse()) {
          await r.target
            .stop()
            .catch((err: unknown) => log.error({ err, target: r.name }, 'target stop failed'));
        }
        await bus.close();
        if (!opts.db) await db.close();
      })()),
  };
}

/**
 * Registers the event schemas with the registry (bus/schema-registry.ts) before any target can write an event:
 * a schema the registry refuses, or a registry that cannot be reached, stops the start with one line.
 */
async function registerSchemas(config: Config, log: Logger): Promise<RegisteredSchemas> {
  const settings = config.schemaRegistry!;
  const { SchemaRegistryClient, registerEventSchemas } = await import('./bus/schema-registry.ts');
  const started = performance.now();
  const client = new SchemaRegistryClient(settings);
  try {
    const ids = await registerEventSchemas(
      client,
      settings.compatibility,
      config.kafka.topicPrefix,
      config.eventEncoding === 'avro',
    );
    log.info(
      { schemas: ids.size, ms: Math.round(performance.now() - started), registry: settings.url },
      `event schemas registered (${settings.compatibility}${config.eventEncoding === 'avro' ? ', JSON and Avro' : ''})`,
    );
    return { client, ids };
  } catch (err) {
    throw new ConfigError(errorMessage(err));
  }
}

/**
 * Creates the topics (when allowed) without blocking start-up: with the broker down, the API still answers
 * and the relay keeps the events in the outbox; topics are created as soon as the broker is reachable.
 */
function provisionTopics(
  config: Config,
  bus: Bus,
  log: Logger,
  deadLetterGroups: readonly string[],
): AbortController {
  const stop = new AbortController();
  if (!provisionsTopics(config)) return stop;
  // 1 s, 2 s, 4 s ... 30 s without jitter; the waits do not keep the process alive.
  const wanted = allTopics(config, deadLetterGroups);
  const ensure = async () => {
    await bus.admin.ensureTopics(wanted);
    // An existing topic keeps its partitions at a start (BusAdmin.ensureTopics): said, when the settings differ.
    const has = new Map((await bus.admin.describeTopics()).map((t) => [t.name, t.partitions]));
    const fewer = shortOfPartitions(wanted, (name) => has.get(name));
    if (fewer.length)
      log.warn(
        { topics: fewer.map((t) => `${t.name}: ${has.get(t.name)} partitions (asked ${t.partitions})`) },
        bus.kind === 'embedded'
          ? 'existing topics keep their partitions at a start; `taskflow topics ensure` adds them, once the consumers have caught up'
          : "existing topics keep their partitions; add them with the broker's tools (kafka-topics --alter) once the consumers have caught up",
      );
  };
  void retryWithBackoff(ensure, {
    policy: { maxAttempts: 0, baseDelayMs: 1_000, maxDelayMs: 30_000 },
    random: () => 1,
    signal: stop.signal,
    ref: false,
    onFailure: (err, _attempt, delay) =>
      log.warn({ err: errorMessage(err), retry_in_ms: delay }, 'could not ensure topics yet'),
  });
  return stop;
}

/**
 * BUS=dapr: a sidecar holds one subscription per topic for its app, whose app id is the consumer group, so two
 * groups that read one topic cannot run in one process. Refused before anything opens: started, the second
 * group retried its subscribe for good while the banner said the system ran.
 */
function refuseSharedDaprTopics(targets: readonly TargetDefinition[]): void {
  const groupOf = new Map<string, string>();
  for (const t of targets) {
    const consumes = 'consumes' in t ? (t as Partial<TargetManifest>).consumes : undefined;
    for (const topic of consumes?.topics ?? []) {
      const other = groupOf.get(topic);
      if (other)
        throw new ConfigError(
          `BUS=dapr: targets ${other} and ${t.name} both read ${topic}, and a Dapr sidecar delivers a topic to one group per app; run each consuming target in its own process with its own sidecar (taskflow serve ${t.name}, app id ${consumes!.group}), as the Helm chart does`,
        );
      groupOf.set(topic, t.name);
    }
  }
}

/**
 * The target of `catalog` that serves a path and does not run among `targets`: the longest of their routes
 * that the path is, or is under (`:name` any one segment).
 */
export function servedElsewhere(
  catalog: readonly TargetManifest[],
  targets: readonly { name: string }[],
): (path: string) => string | undefined {
  const here = new Set(targets.map((t) => t.name));
  const routes = catalog
    .filter((m) => !here.has(m.name))
    .flatMap((m) => (m.routes ?? []).map((route) => ({ route, target: m.name })))
    .sort((a, b) => b.route.length - a.route.length)
    .map(({ route, target }) => ({
      target,
      pattern: new RegExp(`^${routePattern(route)}(?:/|$)`),
    }));
  return (path) => routes.find((r) => r.pattern.test(path))?.target;
}

/**
 * The address to print for a server listening on `host`: a wildcard as this machine's loopback, an IPv6
 * address in brackets (`http://:::3000` opened nothing).
 */
export function reachableHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}
