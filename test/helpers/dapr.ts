/**
 * Real daprd sidecars next to Taskflow processes, through scripts/dapr (the same script users run): each
 * process gets its own sidecar (app id = its consumer group), both on ports picked before either starts.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { KafkaAdmin } from '../../src/bus/kafka/index.ts';
import { DLQ_SPEC, dlqTopic } from '../../src/contracts/topics.ts';
import type { Clock } from '../../src/domain/clock.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import type { TargetDefinition } from '../../src/runtime.ts';
import type { Db } from '../../src/store/db.ts';
import { startApp, waitFor, type TestApp } from './app.ts';
import { freePorts } from './processes.ts';
import { kafkaBrokers } from './transports.ts';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));
const script = join(root, 'scripts/dapr');

/** A daprd binary is there without building one (`scripts/dapr fetch` builds and caches it, ~10 min). */
export function daprdAvailable(): boolean {
  if (process.env.DAPRD) return existsSync(process.env.DAPRD);
  return existsSync(join(root, '.cache/dapr', process.env.DAPR_VERSION ?? '1.16.0', 'daprd'));
}

/** Why a test against a real daprd is skipped here: no Kafka broker, or no daprd built (scripts/test has both). */
export const daprSkip: string | false = !kafkaBrokers
  ? 'needs TEST_KAFKA_BROKERS'
  : !daprdAvailable() && process.env.REQUIRE_DAPR !== '1'
    ? 'needs daprd: run `scripts/dapr fetch` once (builds and caches daprd 1.16.0)'
    : false;

/** Creates `topic` (one partition) and the dead-letter topic of `group` on the suite's broker. */
export async function makeTopicAndDeadLetters(topic: string, group: string): Promise<void> {
  const admin = new KafkaAdmin({ brokers: kafkaBrokers!.split(','), clientId: 'dapr-tests' }, silentLogger);
  try {
    await admin.ensureTopics([
      { name: topic, partitions: 1, retentionMs: 3_600_000 },
      { name: dlqTopic(group), ...DLQ_SPEC },
    ]);
  } finally {
    await admin.close();
  }
}

/** The chart's pod annotations that set how daprd delivers, as the daprd flags the injector makes of them. */
const DELIVERY_ANNOTATIONS = [
  'enable-app-health-check',
  'app-health-check-path',
  'app-health-probe-interval',
  'app-health-probe-timeout',
  'app-health-threshold',
  'app-max-concurrency',
];

/**
 * The daprd flags of the Helm chart's sidecars (deploy/helm/taskflow/templates/deployments.yaml), so that a
 * test runs daprd as the chart does (docs/adr/0006-dapr-transport.md, "An app restarting beside its sidecar").
 */
export function chartSidecarArgs(): string[] {
  const template = readFileSync(join(root, 'deploy/helm/taskflow/templates/deployments.yaml'), 'utf8');
  const args: string[] = [];
  for (const name of DELIVERY_ANNOTATIONS) {
    const line = new RegExp(`^\\s*dapr\\.io/${name}:\\s*(.+)$`, 'm').exec(template)?.[1]?.trim();
    if (line === undefined) continue;
    const value = /^'([^'{}]*)'$|^([^'"{}\\s]+)$/.exec(line);
    if (!value) throw new Error(`chartSidecarArgs: dapr.io/${name} is not a literal in the chart (${line})`);
    args.push(`--${name}=${value[1] ?? value[2]}`);
  }
  return args;
}

/** A resources dir as the chart's sidecars have: the local Kafka component with deploy/dapr/k8s's resiliency. */
export function chartResources(): string {
  const dir = mkdtempSync(join(tmpdir(), 'taskflow-dapr-k8s-'));
  copyFileSync(join(root, 'deploy/dapr/local/pubsub.yaml'), join(dir, 'pubsub.yaml'));
  copyFileSync(join(root, 'deploy/dapr/k8s/resiliency.yaml'), join(dir, 'resiliency.yaml'));
  return dir;
}

export interface Sidecar {
  name: string;
  appId: string;
  httpPort: number;
  url: string;
  /** GET /v1.0/healthz: 204 once daprd reached the app and loaded its subscriptions. */
  ready(): Promise<boolean>;
  /** The topics daprd subscribed for the app (GET /v1.0/metadata). */
  subscribedTopics(): Promise<string[]>;
  logs(): Promise<string>;
  stop(): Promise<void>;
}

export async function startSidecar(opts: {
  appId: string;
  name: string;
  kafkaBrokers: string;
  appPort?: number;
  httpPort?: number;
  logLevel?: string;
  /** The API token both ways (daprd reads APP_API_TOKEN and DAPR_API_TOKEN, as the app does). */
  apiToken?: string;
  /** Components and resiliency (default: deploy/dapr/local). */
  resourcesPath?: string;
  /** More daprd flags, passed verbatim (e.g. the chart's sidecar settings: chartSidecarArgs). */
  daprdArgs?: string[];
}): Promise<Sidecar> {
  const tokens = opts.apiToken ? { APP_API_TOKEN: opts.apiToken, DAPR_API_TOKEN: opts.apiToken } : {};
  const args = ['start', '--app-id', opts.appId, '--name', opts.name, '--log-level', opts.logLevel ?? 'info'];
  if (opts.appPort) args.push('--app-port', String(opts.appPort));
  if (opts.httpPort) args.push('--http-port', String(opts.httpPort));
  if (opts.resourcesPath) args.push('--resources-path', opts.resourcesPath);
  if (opts.daprdArgs?.length) args.push('--', ...opts.daprdArgs);
  // A port scripts/dapr found free can be taken by another test process before daprd binds it: start again
  // (with new ports for those not given) when daprd exits for that reason.
  let stdout = '';
  for (let attempt = 1; ; attempt++) {
    try {
      ({ stdout } = await run(script, args, {
        env: { ...process.env, KAFKA_BROKERS: opts.kafkaBrokers, ...tokens },
        timeout: 90_000,
      }));
      break;
    } catch (err) {
      const output = String((err as { stderr?: string }).stderr ?? err);
      if (attempt >= 3 || !/address already in use/.test(output)) throw err;
    }
  }
  const httpPort = Number(/^DAPR_HTTP_PORT=(\d+)$/m.exec(stdout)?.[1]);
  if (!httpPort) throw new Error(`scripts/dapr start printed no DAPR_HTTP_PORT: ${stdout}`);
  const url = `http://127.0.0.1:${httpPort}`;
  let stopped: Promise<void> | undefined;
  return {
    name: opts.name,
    appId: opts.appId,
    httpPort,
    url,
    ready: async () => (await fetch(`${url}/v1.0/healthz`).catch(() => null))?.status === 204,
    async subscribedTopics() {
      const res = await fetch(`${url}/v1.0/metadata`, {
        headers: opts.apiToken ? { 'dapr-api-token': opts.apiToken } : {},
      });
      const body = (await res.json()) as { subscriptions?: { topic: string }[] };
      return (body.subscriptions ?? []).map((s) => s.topic).sort();
    },
    logs: async () => (await run(script, ['logs', '--name', opts.name], { maxBuffer: 64 << 20 })).stdout,
    stop: () =>
      (stopped ??= run(script, ['stop', '--name', opts.name], { timeout: 30_000 }).then(() => undefined)),
  };
}

export interface DaprApp {
  app: TestApp;
  sidecar: Sidecar;
  /** The sidecar first (no new deliveries; daprd does not dead-letter while shutting down), then the app. */
  stop(): Promise<void>;
}

/**
 * Starts a sidecar (app id `appId`) and a Taskflow process running `targets` with BUS=dapr next to it. The
 * app port is chosen first so daprd can be told where the app will listen; daprd reads /dapr/subscribe as
 * soon as the port opens. Resolves when the sidecar reports the app reachable and its subscriptions loaded.
 */
export async function startDaprApp(
  db: Db,
  opts: {
    appId: string;
    name: string;
    targets: TargetDefinition[];
    kafkaBrokers: string;
    clock?: Clock;
    env?: Record<string, string>;
    /** The API token between the app and its sidecar, both ways. */
    apiToken?: string;
    /** Topics daprd must have subscribed before this resolves. */
    topics?: string[];
  },
): Promise<DaprApp> {
  const [appPort, httpPort] = await freePorts(2);
  const sidecar = await startSidecar({
    appId: opts.appId,
    name: opts.name,
    kafkaBrokers: opts.kafkaBrokers,
    appPort: appPort!,
    httpPort: httpPort!,
    ...(opts.apiToken ? { apiToken: opts.apiToken } : {}),
  });
  let app: TestApp;
  try {
    app = await startApp(db, {
      targets: opts.targets,
      ...(opts.clock ? { clock: opts.clock } : {}),
      env: {
        BUS: 'dapr',
        PORT: String(appPort),
        DAPR_HTTP_PORT: String(sidecar.httpPort),
        KAFKA_BROKERS: opts.kafkaBrokers,
        ...(opts.apiToken ? { APP_API_TOKEN: opts.apiToken, DAPR_API_TOKEN: opts.apiToken } : {}),
        ...opts.env,
      },
    });
  } catch (err) {
    await sidecar.stop();
    throw err;
  }
  try {
    const want = [...(opts.topics ?? [])].sort();
    await waitFor(
      async () =>
        (await sidecar.ready()) &&
        JSON.stringify((await sidecar.subscribedTopics()).filter((t) => want.includes(t))) ===
          JSON.stringify(want),
      30_000,
      `sidecar ${opts.name} ready with subscriptions ${want.join(', ') || '(none)'}`,
    );
  } catch (err) {
    await sidecar.stop();
    await app.stop();
    throw err;
  }
  return {
    app,
    sidecar,
    stop: async () => {
      await sidecar.stop();
      await app.stop();
    },
  };
}
