/**
 * `npm run bench:e2e`: the cost and the latency of a write through the whole pipeline, measured as a user
 * runs Taskflow: the server is a separate `taskflow` process, the clients are in this one.
 *
 * Server (a child process, `node bin/taskflow.js ...`, RATE_LIMIT_PER_MINUTE=0, LOG_LEVEL=warn), per scope
 * (BENCH_SCOPES, default `path,all`):
 * - path: `taskflow serve api relay broadcaster gateway`, the real-time path only (a checkout since ADR 0011
 *   runs no broadcaster: it names the retired target and carries on, so older checkouts compare unchanged);
 * - all:  `taskflow up`, every target, so the reminder, recurrence, notification and audit consumers do their
 *   work for each write too.
 * Transports (BENCH_MODES, default `embedded,kafka`): `embedded` (PGlite in a fresh directory: `npm start`),
 * `embedded-pg` (the embedded bus on PostgreSQL), `kafka` (Kafka + PostgreSQL), `dapr` (Kafka + PostgreSQL
 * behind daprd sidecars from `scripts/dapr`, which builds daprd on first use). PostgreSQL comes from
 * `scripts/postgres start --name bench-e2e --fast` (or BENCH_DATABASE_URL; a fresh database per stack), the
 * broker from `scripts/kafka start --name bench-e2e` (or BENCH_KAFKA_BROKERS; fresh topics per stack).
 * On Dapr one app consumes as one group (its app id), so a stack is several processes, each with its sidecar,
 * as the Helm chart deploys them: `serve api relay gateway`, and for `all` also `serve reminders`,
 * `serve recurrence`, `serve notifications`, `serve audit`. Dapr's topics carry no prefix: each Dapr stack
 * deletes Taskflow's topics and `taskflow-*` groups on the broker first (use a broker of its own).
 *
 * BENCH_SERVERS (default `current=.`) compares checkouts side by side in one run: `before=/path/to/old,after=.`
 * runs the same cases against each one's `bin/taskflow.js`, alternating, so before/after ratios come from one
 * machine state; BENCH_SERVER_ENV_<label>="K=V,K=V" sets a server's own settings and BENCH_SERVER_NODE_<label>
 * its Node binary (`a=.,b=.` compares one checkout with itself under two settings or two Node versions).
 * BENCH_ROUNDS (default 1) repeats the alternation; with several rounds the cost case's ratios to the first
 * server are printed per round and as their median. On a shared machine whose speed
 * changes for minutes at a time (docs/benchmarks.md, 2026-12-04 fifth), one pair can straddle a change and
 * read as a large effect either way; the median of several pairs does not.
 *
 * Clients (worker threads of this process): BENCH_USERS (default 50) users, each with one WebSocket open
 * (token in Sec-WebSocket-Protocol); an open-loop load generator posts tasks at a fixed rate, round-robin over
 * the users (request i is due at start + i/rate and sent then, whatever the answers so far; at most
 * BENCH_MAX_INFLIGHT = 256 unanswered; the connections a pool would hold at the rate, a quarter second of
 * requests, are opened first). Latency = receipt of the task's `task.changed` on its user's socket
 * minus the send of its POST (one clock: performance.timeOrigin + now() in both threads), split at the
 * `time` of the task.changed (the time of its task event since ADR 0011; when an older checkout's broadcaster
 * handled the task event).
 *
 * Per stack: a warm-up (BENCH_WARMUP_SECONDS, 10 s at 100/s, deliveries awaited: PGlite's WebAssembly is
 * compiled to its optimized tier meanwhile), then:
 * 1. the cost case: BENCH_CPU_RATE (default 100) writes/s for BENCH_CPU_SECONDS (default 10): CPU time per write
 *    of the server process (all its threads), PostgreSQL (postmaster and backends) and the Kafka broker, from
 *    /proc, over the load and its drain; SQL statements and Kafka requests per write, by kind
 *    (taskflow_db_statements_total, taskflow_kafka_requests_total, when the server has them); the seed's metrics: publish latency p95 (commit -> on the bus), consume latency p95 (on the
 *    bus -> handled, over every group), delivery ratio (task.changed received / tasks written);
 * 2. a step search: BENCH_STEPS (default 100,200,300,400,500,700,1000,1500,2000) writes/s for
 *    BENCH_STEP_SECONDS (default 8) each, ascending on the same stack, stopping at the first one not sustained
 *    (BENCH_STEP_ALL=1 runs every step: to see what an overload does; BENCH_TIMELINE=1 prints each case's
 *    HTTP latency by half second of sending).
 *    Sustained: >= 95 % of the rate answered 201, <= 1 % missed or failed, every write delivered within
 *    BENCH_DRAIN_SECONDS (default 20) after the load, and end-to-end p99 < 100 ms.
 * BENCH_SKIP_STEPS=1 / BENCH_SKIP_COST=1 skip a part. Every case also prints the machine's CPU and this
 * process's (the load generator and the WebSocket clients, which share the machine with the stack).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { Admin } from '@platformatic/kafka';
import pg from 'pg';
import { signDevToken } from '../src/auth.ts';
import { TOPICS } from '../src/contracts/topics.ts';
import { GROUPS } from '../src/services/index.ts';
import {
  ROOT,
  freshPgDatabase,
  intEnv,
  load1,
  loadNote,
  envPairs,
  listEnv,
  benchServers,
  log,
  percentile,
  busyShare,
  machineCpu,
  pidListeningOn,
  pidOfPostgres,
  procCpu,
  startNodeOptions,
  treeCpu,
  startService,
  type BenchServer,
  type Service,
} from './lib.ts';

const USERS = intEnv('BENCH_USERS', 50);
const CPU_RATE = intEnv('BENCH_CPU_RATE', 100);
const CPU_SECONDS = intEnv('BENCH_CPU_SECONDS', 10);
const STEP_SECONDS = intEnv('BENCH_STEP_SECONDS', 8);
const STEPS = listEnv('BENCH_STEPS', '100,200,300,400,500,700,1000,1500,2000').map(Number);
const WARMUP_SECONDS = intEnv('BENCH_WARMUP_SECONDS', 10, 0);
const DRAIN_MS = intEnv('BENCH_DRAIN_SECONDS', 20) * 1000;
const MAX_INFLIGHT = intEnv('BENCH_MAX_INFLIGHT', 256);
const MODES = listEnv('BENCH_MODES', 'embedded,kafka');
const SCOPES = listEnv('BENCH_SCOPES', 'path,all');
const SERVERS = benchServers();
const ROUNDS = intEnv('BENCH_ROUNDS', 1);
/** BENCH_STEP_ALL=1: run every step even past one not sustained (overload: what happens at 2x). */
const STEP_ALL = process.env.BENCH_STEP_ALL === '1';
/** BENCH_TIMELINE=1: each case's HTTP latency by half second of sending. */
const TIMELINE = process.env.BENCH_TIMELINE === '1';
const LATE_MS = 10;
const P99_GOAL_MS = 100;
const SECRET = 'bench-secret-bench-secret-bench-secret-0123';
const RUN_ID = randomBytes(3).toString('hex');

const fmt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');
const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : 'n/a');
const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : 'n/a');

/** The body of each POST (the title is replaced by `e2e:<label>:<n>`, which the clients parse). */
const TASK_BODY = {
  title: 'x',
  description: 'Numbers from finance, charts from the dashboard.',
  priority: 'high',
  tags: ['work', 'reports'],
  due_date: '2030-01-15T09:00:00Z',
};

// ------------------------------------------------------------------------------------------------ workers

interface LoadResult {
  total: number;
  sent: number;
  ok: number;
  errors: number;
  missed: number;
  late: number;
  statuses: Record<string, number>;
  /** From the first due time to the last answer. */
  elapsedMs: number;
  /** Per answered request: ms from its due time to the end of the answer. */
  latencies: Float64Array;
  /** Per request n: absolute send time (ms, timeOrigin + now), NaN when not sent. */
  sentAt: Float64Array;
  /** Per request n: absolute time its answer ended (ms, timeOrigin + now), NaN when not answered. */
  doneAt: Float64Array;
  /** Per request n: 1 when answered 201. */
  created: Uint8Array;
}

/** The open-loop load generator, as plain CommonJS for an `eval` worker (no loader needed in the thread). */
const LOAD_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const http = require('node:http');
const { url, tokens, rate, seconds, label, maxInflight, lateMs, body } = workerData;
const target = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: maxInflight, maxFreeSockets: maxInflight });
const total = Math.max(1, Math.round(rate * seconds));
const interval = 1000 / rate;
const latencies = [];
const sentAt = new Float64Array(total).fill(NaN);
const doneAt = new Float64Array(total).fill(NaN);
const created = new Uint8Array(total);
const statuses = {};
let ok = 0, errors = 0, missed = 0, late = 0, inflight = 0, sent = 0, i = 0, pumping = true, lastAnswer = 0;
let start = performance.now() + 20;
function done() {
  if (pumping || inflight > 0) return;
  agent.destroy();
  const lat = Float64Array.from(latencies);
  parentPort.postMessage(
    { total, sent, ok, errors, missed, late, statuses, elapsedMs: Math.max(lastAnswer, performance.now()) - start, latencies: lat, sentAt, doneAt, created },
    [lat.buffer, sentAt.buffer, doneAt.buffer, created.buffer],
  );
}
function answered(status) {
  inflight--;
  lastAnswer = performance.now();
  statuses[status] = (statuses[status] || 0) + 1;
  done();
}
function send(n, due) {
  inflight++;
  sent++;
  const payload = JSON.stringify(Object.assign({}, body, { title: 'e2e:' + label + ':' + n }));
  sentAt[n] = performance.timeOrigin + performance.now();
  const req = http.request(
    {
      host: target.hostname, port: target.port, path: '/api/tasks', method: 'POST', agent,
      headers: { authorization: 'Bearer ' + tokens[n % tokens.length], 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    },
    (res) => {
      res.resume();
      res.on('end', () => {
        doneAt[n] = performance.timeOrigin + performance.now();
        if (res.statusCode === 201) { ok++; created[n] = 1; latencies.push(performance.now() - due); } else errors++;
        answered(res.statusCode);
      });
    },
  );
  req.setTimeout(60000, () => req.destroy(new Error('timeout')));
  req.on('error', (err) => { errors++; answered(err.code || err.message || 'error'); });
  req.end(payload);
}
function pump() {
  const now = performance.now();
  while (i < total) {
    const due = start + i * interval;
    if (due > now) break;
    if (inflight >= maxInflight) missed++;
    else {
      if (now - due > lateMs) late++;
      send(i, due);
    }
    i++;
  }
  if (i < total) setTimeout(pump, Math.max(0, start + i * interval - performance.now()));
  else { pumping = false; done(); }
}
// The connections a client's pool would already hold at this rate (a quarter second of requests, at most
// maxInflight) are opened before the first request is due: hundreds of connections opened at once on a
// saturated machine stall ~1 % of the first second's requests for seconds in TCP's connection set-up (measured
// at 2,400/s), which is the kernel's and the client's cost, not the server's answer.
const preconnect = Math.min(maxInflight, Math.ceil(rate / 4));
let opened = 0;
function connected() {
  if (++opened < preconnect) return;
  start = performance.now() + 20;
  setTimeout(pump, 20);
}
for (let k = 0; k < preconnect; k++) {
  const req = http.request({ host: target.hostname, port: target.port, path: '/healthz', agent }, (res) => {
    res.resume();
    res.on('end', connected);
  });
  req.on('error', connected);
  req.end();
}
`;

function runLoad(opts: {
  url: string;
  tokens: string[];
  rate: number;
  seconds: number;
  label: string;
}): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(LOAD_WORKER, {
      eval: true,
      workerData: { ...opts, maxInflight: MAX_INFLIGHT, lateMs: LATE_MS, body: TASK_BODY },
    });
    worker.once('message', (m: LoadResult) => {
      resolve(m);
      void worker.terminate();
    });
    worker.once('error', reject);
  });
}

/**
 * The WebSocket clients, one per token, in an `eval` worker; `ws` is loaded from the repository. Per label,
 * the receipt time and the task.changed `time` of each request number n.
 */
const CLIENT_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { createRequire } = require('node:module');
const WebSocket = createRequire(workerData.root + '/package.json')('ws');
const { wsUrl, tokens } = workerData;
const byLabel = new Map();
const closes = {};
let hellos = 0, errors = 0;
const sockets = tokens.map((token) => {
  const ws = new WebSocket(wsUrl, ['taskflow.v1', 'bearer.' + token]);
  ws.on('message', (data) => {
    const recv = performance.timeOrigin + performance.now();
    const f = JSON.parse(String(data));
    if (f.type === 'hello') {
      if (++hellos === tokens.length) parentPort.postMessage({ type: 'ready' });
      return;
    }
    if (f.type !== 'task.changed' || !f.task || typeof f.task.title !== 'string') return;
    const title = f.task.title;
    if (!title.startsWith('e2e:')) return;
    const cut = title.lastIndexOf(':');
    const label = title.slice(4, cut);
    const n = Number(title.slice(cut + 1));
    let b = byLabel.get(label);
    if (!b) byLabel.set(label, (b = { n: [], recv: [], time: [] }));
    b.n.push(n);
    b.recv.push(recv);
    b.time.push(Date.parse(f.time));
  });
  ws.on('error', () => { errors++; });
  ws.on('close', (code) => { closes[code] = (closes[code] || 0) + 1; });
  return ws;
});
parentPort.on('message', (m) => {
  const b = byLabel.get(m.label) || { n: [], recv: [], time: [] };
  if (m.cmd === 'count') parentPort.postMessage({ type: 'count', n: new Set(b.n).size, closes, errors });
  else if (m.cmd === 'collect') {
    const n = Float64Array.from(b.n), recv = Float64Array.from(b.recv), time = Float64Array.from(b.time);
    byLabel.delete(m.label);
    parentPort.postMessage({ type: 'collect', n, recv, time, closes, errors }, [n.buffer, recv.buffer, time.buffer]);
  } else if (m.cmd === 'close') {
    for (const ws of sockets) ws.terminate();
    parentPort.postMessage({ type: 'closed' });
  }
});
`;

interface Collected {
  n: Float64Array;
  recv: Float64Array;
  time: Float64Array;
  closes: Record<string, number>;
  errors: number;
}

class Clients {
  private readonly worker: Worker;
  private readonly ready: Promise<void>;
  private queue: Promise<unknown> = Promise.resolve();
  constructor(url: string, tokens: string[]) {
    this.worker = new Worker(CLIENT_WORKER, {
      eval: true,
      workerData: { root: ROOT, wsUrl: `${url.replace(/^http/, 'ws')}/ws`, tokens },
    });
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('WebSocket clients not ready within 30 s')), 30_000);
      this.worker.once('message', () => {
        clearTimeout(timer);
        resolve();
      });
      this.worker.once('error', reject);
    });
  }
  whenReady() {
    return this.ready;
  }
  private ask<T>(msg: object): Promise<T> {
    const p = this.queue.then(
      () =>
        new Promise<T>((resolve) => {
          this.worker.once('message', (m: T) => resolve(m));
          this.worker.postMessage(msg);
        }),
    );
    this.queue = p.catch(() => undefined);
    return p;
  }
  count(label: string) {
    return this.ask<{ n: number; closes: Record<string, number> }>({ cmd: 'count', label });
  }
  collect(label: string) {
    return this.ask<Collected>({ cmd: 'collect', label });
  }
  async close() {
    await this.ask({ cmd: 'close' }).catch(() => undefined);
    await this.worker.terminate();
  }
}

// ------------------------------------------------------------------------------------------------ /proc

function procRss(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

const sumOver = <T>(xs: readonly T[], f: (x: T) => number) => xs.reduce((a, x) => a + f(x), 0);

/** CPU seconds so far of the stack's processes, PostgreSQL, the broker and the sidecars. */
function stackCpu(stack: Stack, mode: Mode) {
  return {
    server: sumOver(stack.processes, (p) => treeCpu(p.child.pid)),
    postgres: treeCpu(mode.postgresPid),
    kafka: mode.kafkaPid ? procCpu(mode.kafkaPid) : NaN,
    dapr: mode.dapr ? sumOver(stack.processes, (p) => (p.sidecar?.pid ? procCpu(p.sidecar.pid) : 0)) : NaN,
  };
}

// ------------------------------------------------------------------------------------------------ server

interface Mode {
  name: string;
  dbLabel: string;
  /** A fresh database for one stack; `drop` removes it. */
  freshDb(): Promise<{ url: string; drop(): Promise<void> }>;
  env: Record<string, string>;
  kafka?: string;
  /** The postmaster's pid (PostgreSQL modes). */
  postgresPid?: number;
  kafkaPid?: number;
  /** BUS=dapr: each process gets a daprd sidecar (scripts/dapr) with app id = the group it consumes as. */
  dapr?: boolean;
}

/** One `taskflow` process of a stack (and its sidecar on Dapr). */
interface StackProcess {
  url: string;
  child: ChildProcess;
  sidecar?: { name: string; pid: number | undefined };
}

interface Stack {
  /** The process that serves the API and the WebSockets. */
  url: string;
  processes: StackProcess[];
  env: Record<string, string>;
  databaseUrl: string;
  stop(): Promise<void>;
}

/**
 * The processes of a stack: one on the embedded bus and Kafka (`taskflow up`, or the path's targets in one);
 * on Dapr, where one app consumes as one group (its app id), one process per consuming target, as the Helm
 * chart deploys them: api + relay + gateway together (the gateway's group), and reminders, recurrence,
 * notifications and audit each with its own sidecar.
 */
function stackLayout(mode: Mode, scope: string, gatewayGroup: string): { args: string[]; appId?: string }[] {
  if (scope !== 'all' && scope !== 'path') throw new Error(`unknown scope ${scope} (path, all)`);
  const path = ['serve', 'api', 'relay', 'broadcaster', 'gateway'];
  if (!mode.dapr) return [{ args: scope === 'all' ? ['up'] : path }];
  // A checkout since ADR 0011 names the retired broadcaster and carries on; on Dapr only current checkouts run.
  const front = { args: ['serve', 'api', 'relay', 'gateway'], appId: gatewayGroup };
  if (scope === 'path') return [front];
  return [
    front,
    ...(['reminders', 'recurrence', 'notifications', 'audit'] as const).map((t) => ({
      args: ['serve', t],
      appId: GROUPS[t],
    })),
  ];
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

async function waitReady(url: string, child: ChildProcess, output: () => string): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode}):\n${output()}`);
    try {
      const r = await fetch(`${url}/readyz`);
      if (r.ok) return performance.now() - t0;
    } catch {
      /* not listening yet */
    }
    if (performance.now() - t0 > 120_000) throw new Error(`server not ready within 120 s:\n${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function startStack(server: BenchServer, mode: Mode, scope: string, id: string): Promise<Stack> {
  const fresh = await mode.freshDb();
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    DATABASE_URL: fresh.url,
    JWT_SECRET: SECRET,
    HOST: '127.0.0.1',
    RATE_LIMIT_PER_MINUTE: '0',
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    GATEWAY_INSTANCE_ID: `bench-${id}`,
    ...mode.env,
    // BENCH_SERVER_ENV="K=V,K=V": extra settings of the server (e.g. EMBEDDED_BATCH_INTERVAL_MS=200).
    ...envPairs('BENCH_SERVER_ENV'),
    ...server.env,
    ...(mode.kafka && !mode.dapr ? { KAFKA_TOPIC_PREFIX: `bench-e2e-${RUN_ID}-${id}.` } : {}),
  };
  const nodeArgs = process.env.BENCH_CPU_PROF
    ? [`--cpu-prof`, `--cpu-prof-dir=${resolve(process.env.BENCH_CPU_PROF)}`]
    : [];
  const processes: StackProcess[] = [];
  const stopAll = async () => {
    for (const p of processes) {
      if (p.sidecar) daprScript(['stop', '--name', p.sidecar.name]);
      if (p.child.exitCode !== null || p.child.signalCode !== null) continue;
      const exited = new Promise((r) => p.child.once('exit', r));
      p.child.kill('SIGTERM');
      const t = setTimeout(() => p.child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(t);
    }
  };
  const launch = async (layout: { args: string[]; appId?: string }, n: number): Promise<StackProcess> => {
    const port = await freePort();
    const own: Record<string, string> = { ...env, PORT: String(port) };
    let sidecar: StackProcess['sidecar'];
    if (layout.appId) {
      // The sidecar first, told the app's port: daprd reads /dapr/subscribe once that port opens.
      const name = `bench-e2e-${id}-${n}`;
      const out = daprScript(
        ['start', '--app-id', layout.appId, '--name', name, '--app-port', String(port)],
        {
          KAFKA_BROKERS: mode.kafka!,
        },
      );
      own.DAPR_HTTP_PORT = /^DAPR_HTTP_PORT=(\d+)$/m.exec(out)?.[1] ?? '';
      const pidFile = join(ROOT, '.cache', 'dapr', 'run', name, 'daprd.pid');
      sidecar = { name, pid: existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : undefined };
    }
    const child = spawn(
      server.node,
      [
        ...startNodeOptions(server.root),
        ...nodeArgs,
        join(server.root, 'bin', 'taskflow.js'),
        ...layout.args,
      ],
      { cwd: server.root, env: own, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const p: StackProcess = { url: `http://127.0.0.1:${port}`, child, ...(sidecar ? { sidecar } : {}) };
    processes.push(p);
    let out = '';
    const keep = (b: Buffer) => {
      out = (out + b.toString()).slice(-20_000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    await waitReady(p.url, child, () => out);
    if (sidecar) await waitSidecarReady(Number(own.DAPR_HTTP_PORT), () => out);
    return p;
  };
  try {
    if (mode.dapr) await resetDaprTopics(mode.kafka!);
    const [first, ...rest] = stackLayout(mode, scope, `${GROUPS.gateway}-bench-${id}`);
    // The first process migrates the database; the others start after it, together.
    await launch(first!, 0);
    await Promise.all(rest.map((l, i) => launch(l, i + 1)));
  } catch (err) {
    await stopAll();
    await fresh.drop().catch(() => undefined);
    throw err;
  }
  return {
    url: processes[0]!.url,
    processes,
    env,
    databaseUrl: fresh.url,
    stop: async () => {
      await stopAll();
      if (mode.kafka && !mode.dapr) await deleteTopics(mode.kafka, env.KAFKA_TOPIC_PREFIX!);
      await fresh.drop().catch(() => undefined);
    },
  };
}

/** scripts/dapr of this checkout (it builds daprd on first use, ~10 min); its stdout. */
function daprScript(args: string[], extraEnv: Record<string, string> = {}): string {
  try {
    return execFileSync(join(ROOT, 'scripts', 'dapr'), args, {
      encoding: 'utf8',
      env: { ...process.env, ...extraEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 900_000,
    });
  } catch (err) {
    if (args[0] === 'stop') return '';
    throw new Error(
      `scripts/dapr ${args.join(' ')} failed: ${String((err as { stderr?: string }).stderr ?? err)}`,
    );
  }
}

/** daprd answers /v1.0/healthz with 204 once it reached the app and loaded its subscriptions. */
async function waitSidecarReady(httpPort: number, output: () => string): Promise<void> {
  const t0 = performance.now();
  for (;;) {
    const r = await fetch(`http://127.0.0.1:${httpPort}/v1.0/healthz`).catch(() => null);
    if (r?.status === 204) return;
    if (performance.now() - t0 > 60_000)
      throw new Error(`sidecar on ${httpPort} not ready within 60 s:\n${output()}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

/**
 * Dapr's Kafka component names topics without a prefix and its groups are the app ids: each Dapr stack starts
 * from no Taskflow topics and no Taskflow groups on the bench's broker (a stack must not read the last one's
 * events), and its first process creates the topics (KAFKA_ENSURE_TOPICS with KAFKA_BROKERS).
 */
async function resetDaprTopics(brokers: string): Promise<void> {
  const admin = new Admin({ clientId: 'bench-e2e', bootstrapBrokers: brokers.split(',') });
  try {
    const ours = (await admin.listTopics()).filter(
      (t) =>
        (Object.values(TOPICS) as string[]).includes(t) || (t.startsWith('taskflow-') && t.endsWith('.dlq')),
    );
    if (ours.length) await admin.deleteTopics({ topics: ours });
    // The last stack's sidecars leave their groups only when their sessions time out: until then a group is
    // not empty and cannot be deleted.
    for (let attempt = 1; ; attempt++) {
      const groups = [...(await admin.listGroups()).keys()].filter((g) => g.startsWith('taskflow-'));
      if (groups.length === 0) break;
      try {
        await admin.deleteGroups({ groups });
        break;
      } catch (err) {
        if (attempt >= 30) throw err;
        await new Promise((r) => setTimeout(r, 2_000));
      }
    }
  } finally {
    await admin.close().catch(() => undefined);
  }
}

async function deleteTopics(brokers: string, prefix: string): Promise<void> {
  if (process.env.BENCH_KEEP_TOPICS === '1') return;
  const admin = new Admin({ clientId: 'bench-e2e', bootstrapBrokers: brokers.split(',') });
  try {
    const mine = (await admin.listTopics()).filter((t) => t.startsWith(prefix));
    if (mine.length) await admin.deleteTopics({ topics: mine });
  } catch (err) {
    log(`could not delete the stack's topics: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    await admin.close().catch(() => undefined);
  }
}

/** Tasks of a label committed in the database (a request that timed out may still have committed). */
async function countWritten(stack: Stack, label: string): Promise<number> {
  const like = `e2e:${label}:%`;
  if (/^postgres/.test(stack.databaseUrl)) {
    const c = new pg.Client({ connectionString: stack.databaseUrl });
    await c.connect();
    try {
      const r = await c.query<{ n: string }>('SELECT count(*)::text AS n FROM tasks WHERE title LIKE $1', [
        like,
      ]);
      return Number(r.rows[0]!.n);
    } finally {
      await c.end();
    }
  }
  // PGlite is open in the server process only: count through the API (the bench users' own lists).
  return NaN;
}

// ------------------------------------------------------------------------------------------------ metrics

type Samples = Map<string, number>;

/** The server's Prometheus text as `name{labels}` -> value. */
async function scrape(url: string): Promise<Samples> {
  const out: Samples = new Map();
  try {
    const text = await (await fetch(`${url}/metrics`)).text();
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const i = line.lastIndexOf(' ');
      out.set(line.slice(0, i), Number(line.slice(i + 1)));
    }
  } catch {
    /* no metrics */
  }
  return out;
}

/** Every process's samples of a stack, summed series by series (counters and histogram buckets add up). */
async function scrapeStack(stack: Stack): Promise<Samples> {
  const out: Samples = new Map();
  for (const samples of await Promise.all(stack.processes.map((p) => scrape(p.url))))
    for (const [k, v] of samples) out.set(k, (out.get(k) ?? 0) + v);
  return out;
}

const delta = (a: Samples, b: Samples, key: string) => (b.get(key) ?? 0) - (a.get(key) ?? 0);

/** Sum over all series of a counter whose name is `name` (any labels). */
function sumOf(a: Samples, b: Samples, name: string): number {
  let s = 0;
  let seen = false;
  for (const k of b.keys())
    if (k === name || k.startsWith(`${name}{`)) {
      s += delta(a, b, k);
      seen = true;
    }
  return seen ? s : NaN;
}

/** A counter's increase per write by the value of its `label`, most first (those of at least 0.01). */
function perWriteBy(
  a: Samples,
  b: Samples,
  name: string,
  label: string,
  written: number,
): [string, number][] {
  const byValue = new Map<string, number>();
  for (const k of b.keys()) {
    if (!k.startsWith(`${name}{`)) continue;
    const value = new RegExp(`${label}="([^"]*)"`).exec(k)?.[1] ?? k;
    byValue.set(value, (byValue.get(value) ?? 0) + delta(a, b, k) / Math.max(1, written));
  }
  return [...byValue].filter(([, n]) => n >= 0.01).sort((x, y) => y[1] - x[1]);
}

/** p-quantile (seconds) of the histogram `name` over the window a -> b, all label sets merged. */
function histQuantile(a: Samples, b: Samples, name: string, q: number, labels = ''): number {
  const buckets = new Map<number, number>();
  for (const k of b.keys()) {
    if (!k.startsWith(`${name}_bucket{`) || !k.includes(labels)) continue;
    const le = /le="([^"]+)"/.exec(k)?.[1];
    if (!le) continue;
    const bound = le === '+Inf' ? Infinity : Number(le);
    buckets.set(bound, (buckets.get(bound) ?? 0) + delta(a, b, k));
  }
  const sorted = [...buckets.entries()].sort((x, y) => x[0] - y[0]);
  const total = sorted.length ? sorted[sorted.length - 1]![1] : 0;
  if (!total) return NaN;
  const rank = q * total;
  let prevBound = 0;
  let prevCount = 0;
  for (const [bound, count] of sorted) {
    if (count >= rank) {
      if (!Number.isFinite(bound)) return prevBound;
      return prevBound + ((bound - prevBound) * (rank - prevCount)) / Math.max(1, count - prevCount);
    }
    prevBound = bound;
    prevCount = count;
  }
  return prevBound;
}

// ------------------------------------------------------------------------------------------------ cases

interface Pct {
  p50: number;
  p99: number;
  max: number;
}
const pct = (values: number[] | Float64Array): Pct => {
  const s = Float64Array.from(values).sort();
  return { p50: percentile(s, 50), p99: percentile(s, 99), max: s.length ? s[s.length - 1]! : NaN };
};

interface Cost {
  /** ms of CPU per write: the server processes, PostgreSQL, the broker, the Dapr sidecars. */
  server: number;
  postgres: number;
  kafka: number;
  dapr: number;
  total: number;
  statementsPerWrite: number;
  /** Statements per write by kind, most first. */
  statementKinds: [string, number][];
  /** Requests the server processes sent to Kafka per write (taskflow_kafka_requests_total), and by API. */
  kafkaRequestsPerWrite: number;
  kafkaRequestKinds: [string, number][];
  /** Seed metrics. */
  publishP95Ms: number;
  consumeP95Ms: number;
  deliveryRatio: number;
  rssMb: number;
}

interface CaseResult {
  server: string;
  mode: string;
  scope: string;
  kind: 'cost' | 'step';
  rate: number;
  seconds: number;
  load: number;
  total: number;
  ok: number;
  errors: number;
  missed: number;
  late: number;
  statuses: Record<string, number>;
  achieved: number;
  http: Pct;
  /** p99 of POST /api/tasks as the server measured it (ms). */
  serverHttpP99: number;
  delivered: number;
  written: number;
  drainS: number;
  e2e: Pct;
  hop1: Pct;
  hop2: Pct;
  machineBusy: number;
  /** This process's CPU (the load generator and the WebSocket clients, all threads) in cores, over the load. */
  generatorCores: number;
  /** CPU ms per write of the server process over the case (load and drain). */
  serverCpu: number;
  sustained: boolean;
  cost?: Cost;
  /** Which repetition of the servers' alternation (BENCH_ROUNDS) this case ran in, from 1. */
  round: number;
}

async function waitDelivered(clients: Clients, label: string, expected: number, timeoutMs: number) {
  const t0 = performance.now();
  let n = 0;
  for (;;) {
    n = (await clients.count(label)).n;
    if (n >= expected || performance.now() - t0 > timeoutMs) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return { n, ms: performance.now() - t0 };
}

interface Running {
  server: string;
  mode: Mode;
  scope: string;
  stack: Stack;
  clients: Clients;
  tokens: string[];
}

/**
 * HTTP latency (send to answer, every status) by half second of sending (BENCH_TIMELINE=1): a start-up transient
 * and a standing queue look alike in one p99, not here.
 */
function logTimeline(res: LoadResult): void {
  const t0 = res.sentAt.find(Number.isFinite) ?? 0;
  const bySlot = new Map<number, number[]>();
  for (let n = 0; n < res.total; n++) {
    const sent = res.sentAt[n]!;
    const done = res.doneAt[n]!;
    if (!Number.isFinite(done)) continue;
    const slot = Math.floor((sent - t0) / 500);
    (bySlot.get(slot) ?? bySlot.set(slot, []).get(slot)!).push(done - sent);
  }
  for (const [slot, list] of [...bySlot].sort((x, y) => x[0] - y[0])) {
    const l = Float64Array.from(list).sort();
    log(
      `  sent at ${(slot / 2).toFixed(1)} s: ${l.length} answered, HTTP p50 ${f1(percentile(l, 50))} ` +
        `p99 ${f1(percentile(l, 99))} max ${f1(l.at(-1)!)} ms`,
    );
  }
}

async function runCase(
  r: Running,
  kind: 'cost' | 'step',
  rate: number,
  seconds: number,
): Promise<CaseResult> {
  const { stack, clients, tokens, mode } = r;
  const label = `${kind}${rate}`;
  const load = load1();
  const m0 = await scrapeStack(stack);
  const cpu0 = stackCpu(stack, mode);
  const machine0 = machineCpu();
  const generator0 = process.cpuUsage();
  const loadStart = performance.now();
  let peakRss = 0;
  const sampler = setInterval(
    () =>
      (peakRss = Math.max(
        peakRss,
        sumOver(stack.processes, (p) => procRss(p.child.pid!)),
      )),
    500,
  );
  const res = await runLoad({ url: stack.url, tokens, rate, seconds, label });
  if (TIMELINE) logTimeline(res);
  const machine1 = machineCpu();
  const generator = process.cpuUsage(generator0);
  const generatorCores = (generator.user + generator.system) / 1000 / (performance.now() - loadStart);
  // Committed writes: what the server answered 201 to, or (PostgreSQL) what its database holds.
  let written = res.ok;
  const counted = await countWritten(stack, label).catch(() => NaN);
  if (Number.isFinite(counted)) written = Math.max(written, counted);
  const d = await waitDelivered(clients, label, written, DRAIN_MS);
  clearInterval(sampler);
  const cpu1 = stackCpu(stack, mode);
  const c = await clients.collect(label);
  const total: number[] = [];
  const hop1: number[] = [];
  const hop2: number[] = [];
  const seen = new Set<number>();
  for (let i = 0; i < c.n.length; i++) {
    const n = c.n[i]!;
    if (seen.has(n)) continue;
    seen.add(n);
    const sent = res.sentAt[n]!;
    if (!Number.isFinite(sent)) continue;
    total.push(c.recv[i]! - sent);
    hop1.push(c.time[i]! - sent);
    hop2.push(c.recv[i]! - c.time[i]!);
  }
  const e2e = pct(total);
  const achieved = res.ok / (Math.max(res.elapsedMs, seconds * 1000) / 1000);
  const failedShare = (res.missed + res.errors) / res.total;
  const sustained =
    achieved >= 0.95 * rate && failedShare <= 0.01 && d.n >= written && res.ok > 0 && e2e.p99 < P99_GOAL_MS;
  let cost: Cost | undefined;
  const m1 = await scrapeStack(stack);
  // The server's own view of the POST (from its arrival to its answer): what the client adds is queueing
  // outside the server (its socket, the machine's run queue, the load generator itself).
  const serverHttpP99 =
    histQuantile(m0, m1, 'taskflow_http_request_duration_seconds', 0.99, 'route="/api/tasks"') * 1000;
  if (kind === 'cost') {
    const per = (a: number, b: number) => ((b - a) * 1000) / Math.max(1, written);
    const server = per(cpu0.server, cpu1.server);
    const postgres = per(cpu0.postgres, cpu1.postgres);
    const kafka = per(cpu0.kafka, cpu1.kafka);
    const dapr = per(cpu0.dapr, cpu1.dapr);
    cost = {
      server,
      postgres,
      kafka,
      dapr,
      total: [server, postgres, kafka, dapr].filter(Number.isFinite).reduce((a, b) => a + b, 0),
      statementsPerWrite: sumOf(m0, m1, 'taskflow_db_statements_total') / Math.max(1, written),
      statementKinds: perWriteBy(m0, m1, 'taskflow_db_statements_total', 'kind', written),
      kafkaRequestsPerWrite: sumOf(m0, m1, 'taskflow_kafka_requests_total') / Math.max(1, written),
      kafkaRequestKinds: perWriteBy(m0, m1, 'taskflow_kafka_requests_total', 'api', written),
      publishP95Ms: histQuantile(m0, m1, 'taskflow_event_publish_latency_seconds', 0.95) * 1000,
      consumeP95Ms: histQuantile(m0, m1, 'taskflow_event_consume_latency_seconds', 0.95) * 1000,
      deliveryRatio: d.n / Math.max(1, written),
      rssMb: peakRss / 2 ** 20,
    };
  }
  const result: CaseResult = {
    server: r.server,
    round: 1, // set by main once the stack's cases are done
    mode: mode.name,
    scope: r.scope,
    kind,
    rate,
    seconds,
    load,
    total: res.total,
    ok: res.ok,
    errors: res.errors,
    missed: res.missed,
    late: res.late,
    statuses: res.statuses,
    achieved,
    http: pct(res.latencies),
    serverHttpP99,
    delivered: d.n,
    written,
    drainS: d.ms / 1000,
    e2e,
    hop1: pct(hop1),
    hop2: pct(hop2),
    machineBusy: busyShare(machine0, machine1),
    generatorCores,
    serverCpu: ((cpu1.server - cpu0.server) * 1000) / Math.max(1, written),
    sustained,
    ...(cost ? { cost } : {}),
  };
  log(
    `${r.server} ${mode.name}/${r.scope} ${kind} ${rate}/s: ${fmt(achieved)} answered (${res.ok}/${res.total}, ` +
      `${res.missed} missed, ${res.errors} errors${res.errors ? ` ${JSON.stringify(res.statuses)}` : ''}, ${res.late} sent late), HTTP p99 ${f1(result.http.p99)} ms (server ${f1(serverHttpP99)}); delivered ${d.n}/${written}; ` +
      `e2e p50 ${f1(e2e.p50)} p99 ${f1(e2e.p99)} max ${f1(e2e.max)} ms; machine ${(result.machineBusy * 100).toFixed(0)}% (load generator ${(generatorCores * 100).toFixed(0)}% of a core)` +
      (cost
        ? `; CPU/write ${f2(cost.total)} ms (server ${f2(cost.server)}, pg ${f2(cost.postgres)}, kafka ${f2(cost.kafka)}` +
          `${mode.dapr ? `, daprd ${f2(cost.dapr)}` : ''}), ` +
          `${f1(cost.statementsPerWrite)} stmts/write, ${f1(cost.kafkaRequestsPerWrite)} Kafka requests/write, publish p95 ${f1(cost.publishP95Ms)} ms, consume p95 ${f1(cost.consumeP95Ms)} ms`
        : '') +
      `; ${sustained ? 'SUSTAINED' : 'not sustained'} (${loadNote()})`,
  );
  return result;
}

// ------------------------------------------------------------------------------------------------ modes

async function modes(): Promise<{ list: Mode[]; services: Service[]; notes: string[] }> {
  const list: Mode[] = [];
  const services: Service[] = [];
  const notes: string[] = [];
  const pglite: Mode['freshDb'] = async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskflow-bench-e2e-'));
    return { url: dir, drop: async () => rmSync(dir, { recursive: true, force: true }) };
  };
  let pgUrl: string | null | undefined;
  const postgres = (): string | null => {
    if (pgUrl !== undefined) return pgUrl;
    if (process.env.BENCH_DATABASE_URL) return (pgUrl = process.env.BENCH_DATABASE_URL);
    const s = startService({
      script: 'postgres',
      name: 'bench-e2e',
      args: ['--fast', '--ignore-env'],
      envKey: 'DATABASE_URL',
      keep: process.env.BENCH_KEEP_POSTGRES === '1',
    });
    if (s) services.push(s);
    return (pgUrl = s?.value ?? null);
  };
  const pgFresh =
    (url: string): Mode['freshDb'] =>
    async () => {
      const fresh = await freshPgDatabase(url, 'tf_bench_e2e');
      return { url: fresh.url, drop: () => fresh.drop() };
    };
  let kafkaStarted: Mode | null | undefined;
  /** Kafka + PostgreSQL, started once for the kafka and dapr modes. */
  const kafkaMode = async (): Promise<Mode | null> => {
    if (kafkaStarted !== undefined) return kafkaStarted;
    let brokers = process.env.BENCH_KAFKA_BROKERS;
    if (!brokers) {
      const s = startService({
        script: 'kafka',
        name: 'bench-e2e',
        envKey: 'KAFKA_BROKERS',
        keep: process.env.BENCH_KEEP_KAFKA === '1',
      });
      if (s) {
        services.push(s);
        brokers = s.value;
      }
    }
    const url = postgres();
    if (!brokers || !url) {
      notes.push('kafka and dapr skipped: the broker or PostgreSQL could not be started.');
      return (kafkaStarted = null);
    }
    const pid = await pidOfPostgres(url);
    const kpid = pidListeningOn(brokers);
    return (kafkaStarted = {
      name: 'kafka',
      dbLabel: 'PostgreSQL',
      freshDb: pgFresh(url),
      env: { BUS: 'kafka', KAFKA_BROKERS: brokers, KAFKA_ENSURE_TOPICS: 'true' },
      kafka: brokers,
      ...(pid ? { postgresPid: pid } : {}),
      ...(kpid ? { kafkaPid: kpid } : {}),
    });
  };
  for (const m of MODES) {
    if (m === 'embedded')
      list.push({ name: 'embedded', dbLabel: 'PGlite', freshDb: pglite, env: { BUS: 'embedded' } });
    else if (m === 'embedded-pg') {
      const url = postgres();
      if (!url) {
        notes.push('embedded-pg skipped: PostgreSQL could not be started.');
        continue;
      }
      const pid = await pidOfPostgres(url);
      list.push({
        name: 'embedded-pg',
        dbLabel: 'PostgreSQL',
        freshDb: pgFresh(url),
        env: { BUS: 'embedded' },
        ...(pid ? { postgresPid: pid } : {}),
      });
    } else if (m === 'kafka') {
      const kafka = await kafkaMode();
      if (kafka) list.push(kafka);
    } else if (m === 'dapr') {
      const kafka = await kafkaMode();
      if (!kafka) continue;
      try {
        daprScript(['fetch']);
      } catch (err) {
        notes.push(
          `dapr skipped: no daprd (${err instanceof Error ? err.message.split('\n')[0] : String(err)}).`,
        );
        continue;
      }
      list.push({
        ...kafka,
        name: 'dapr',
        dbLabel: 'PostgreSQL, Kafka',
        env: { BUS: 'dapr', KAFKA_BROKERS: kafka.kafka!, KAFKA_ENSURE_TOPICS: 'true' },
        dapr: true,
      });
    } else throw new Error(`unknown mode "${m}" (embedded, embedded-pg, kafka, dapr)`);
  }
  return { list, services, notes };
}

// ------------------------------------------------------------------------------------------------ output

/** Per stack and server after the first: its cost case's CPU per write over the first server's, per round. */
function roundRatios(costs: CaseResult[]): string[] {
  if (SERVERS.length < 2) return [];
  const base = SERVERS[0]!.label;
  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    const mid = s.length / 2;
    return Number.isInteger(mid) ? (s[mid - 1]! + s[mid]!) / 2 : s[Math.floor(mid)]!;
  };
  const lines: string[] = [];
  for (const key of new Set(costs.map((c) => `${c.mode}/${c.scope}`)))
    for (const other of SERVERS.slice(1)) {
      const total: number[] = [];
      const server: number[] = [];
      for (let round = 1; round <= ROUNDS; round++) {
        const pick = (label: string) =>
          costs.find((c) => `${c.mode}/${c.scope}` === key && c.round === round && c.server === label)?.cost;
        const a = pick(base);
        const b = pick(other.label);
        if (!a || !b) continue;
        total.push(b.total / a.total);
        server.push(b.server / a.server);
      }
      if (!total.length) continue;
      const list = (xs: number[]) =>
        `${xs.map((x) => x.toFixed(2)).join(', ')} (median **${median(xs).toFixed(2)}**)`;
      lines.push(
        `- ${other.label} / ${base}, ${key}: total ${list(total)}; server processes ${list(server)}`,
      );
    }
  return lines;
}

function costTable(rs: CaseResult[]): string {
  const lines = [
    `| server | bus / database | scope | CPU ms per write: total | server processes | PostgreSQL | Kafka | Dapr sidecars | SQL statements per write | Kafka requests per write | publish p95 ms (commit -> on the bus) | consume p95 ms (on the bus -> handled) | delivery ratio | e2e p50 / p99 ms | server peak RSS MB | load |`,
    '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|',
  ];
  for (const r of rs) {
    const c = r.cost!;
    lines.push(
      `| ${r.server} | ${r.mode} | ${r.scope} | **${f2(c.total)}** | ${f2(c.server)} | ${f2(c.postgres)} | ${f2(c.kafka)} | ${f2(c.dapr)} | ${f1(c.statementsPerWrite)} | ${f1(c.kafkaRequestsPerWrite)} | ` +
        `${f1(c.publishP95Ms)} | ${f1(c.consumeP95Ms)} | ${c.deliveryRatio.toFixed(4)} | ${f1(r.e2e.p50)} / ${f1(r.e2e.p99)} | ${fmt(c.rssMb)} | ${r.load.toFixed(2)} |`,
    );
  }
  return lines.join('\n');
}

function stepTable(rs: CaseResult[]): string {
  const lines = [
    '| server | bus / database | scope | target w/s | answered w/s | missed + errors | delivered / written | HTTP p99 ms (in the server) | e2e p50 ms | e2e p99 ms | e2e max ms | to the event time p50 / p99 | to client p50 / p99 | server CPU ms / write | machine CPU | load generator, cores | sustained | load |',
    '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|---:|',
  ];
  for (const r of rs)
    lines.push(
      `| ${r.server} | ${r.mode} | ${r.scope} | ${r.rate} | ${fmt(r.achieved)} | ${fmt(r.missed + r.errors)} | ${fmt(r.delivered)} / ${fmt(r.written)} | ` +
        `${f1(r.http.p99)} (${f1(r.serverHttpP99)}) | ${f1(r.e2e.p50)} | ${f1(r.e2e.p99)} | ${f1(r.e2e.max)} | ${f1(r.hop1.p50)} / ${f1(r.hop1.p99)} | ${f1(r.hop2.p50)} / ${f1(r.hop2.p99)} | ` +
        `${f2(r.serverCpu)} | ${(r.machineBusy * 100).toFixed(0)}% | ${r.generatorCores.toFixed(2)} | ${r.sustained ? 'yes' : 'no'} | ${r.load.toFixed(2)} |`,
    );
  return lines.join('\n');
}

// ------------------------------------------------------------------------------------------------ main

async function runStack(server: BenchServer, mode: Mode, scope: string, results: CaseResult[]) {
  const id = `${server.label}-${mode.name}-${scope}`.replace(/[^a-z0-9-]/gi, '-');
  const stack = await startStack(server, mode, scope, id);
  const tokens = await Promise.all(
    Array.from({ length: USERS }, (_, i) =>
      signDevToken(SECRET, `e2e-user-${String(i + 1).padStart(3, '0')}`),
    ),
  );
  const clients = new Clients(stack.url, tokens);
  const best = { rate: 0, failed: false };
  try {
    await clients.whenReady();
    const running: Running = { server: server.label, mode, scope, stack, clients, tokens };
    if (WARMUP_SECONDS > 0) {
      const w = await runLoad({
        url: stack.url,
        tokens,
        rate: 100,
        seconds: WARMUP_SECONDS,
        label: 'warmup',
      });
      const d = await waitDelivered(clients, 'warmup', w.ok, 60_000);
      await clients.collect('warmup');
      log(
        `${id}: warm-up ${w.ok} writes, ${d.n} delivered${d.n < w.ok ? ' (NOT ALL: measuring anyway)' : ''}`,
      );
    }
    if (process.env.BENCH_SKIP_COST !== '1')
      results.push(await runCase(running, 'cost', CPU_RATE, CPU_SECONDS));
    if (process.env.BENCH_SKIP_STEPS !== '1')
      for (const rate of STEPS) {
        const r = await runCase(running, 'step', rate, STEP_SECONDS);
        results.push(r);
        if (!r.sustained) best.failed = true;
        if (!best.failed) best.rate = rate;
        else if (!STEP_ALL) break;
      }
  } finally {
    await clients.close();
    await stack.stop();
  }
  return best.rate;
}

async function main() {
  const startedAt = Date.now();
  const cpu = cpus();
  log(
    `Node ${process.version}, ${cpu.length} CPUs (${cpu[0]?.model.trim() ?? 'unknown'}), ${USERS} users x 1 WebSocket, ` +
      `servers ${SERVERS.map((s) => s.label).join(', ')}, modes ${MODES.join(', ')}, scopes ${SCOPES.join(', ')}, ${loadNote()}`,
  );
  const { list, services, notes } = await modes();
  const results: CaseResult[] = [];
  const best: string[] = [];
  try {
    for (const mode of list)
      for (const scope of SCOPES)
        for (let round = 1; round <= ROUNDS; round++)
          for (const server of SERVERS) {
            const first = results.length;
            const rate = await runStack(server, mode, scope, results);
            for (const r of results.slice(first)) r.round = round;
            if (process.env.BENCH_SKIP_STEPS !== '1')
              best.push(
                `- ${server.label}, ${mode.name} / ${mode.dbLabel}, ${scope}: highest sustained rate with e2e p99 < ${P99_GOAL_MS} ms: ` +
                  (rate ? `**${rate} writes/s**` : `none of ${STEPS.join(', ')}`),
              );
          }
  } finally {
    for (const s of services.reverse()) s.stop();
  }
  const date = new Date().toISOString().slice(0, 10);
  console.log(
    `\nEnd to end: POST /api/tasks send -> task.changed on the user's WebSocket — Node ${process.version}, ${cpu.length} CPUs, ${date}; ` +
      `server in its own process (path: api relay broadcaster gateway; all: taskflow up; on Dapr one process and sidecar per group), ${USERS} users x 1 WebSocket, ` +
      `open-loop load (max ${MAX_INFLIGHT} in flight)\n`,
  );
  const costs = results.filter((r) => r.cost);
  if (costs.length) {
    console.log(
      `Cost at ${CPU_RATE} writes/s for ${CPU_SECONDS} s (CPU over the load and its drain, from /proc):\n`,
    );
    console.log(costTable(costs));
  }
  for (const r of costs.filter((c) => c.cost!.statementKinds.length))
    console.log(
      `\nSQL statements per write, ${r.server} ${r.mode}/${r.scope}: ` +
        r.cost!.statementKinds.map(([k, n]) => `${k} ${n.toFixed(2)}`).join('; '),
    );
  for (const r of costs.filter((c) => c.cost!.kafkaRequestKinds.length))
    console.log(
      `\nKafka requests per write, ${r.server} ${r.mode}/${r.scope}: ` +
        r.cost!.kafkaRequestKinds.map(([k, n]) => `${k} ${n.toFixed(2)}`).join('; '),
    );
  const ratios = roundRatios(costs);
  if (ratios.length)
    console.log(`\nCPU per write, ratio to ${SERVERS[0]!.label} in each round:\n\n${ratios.join('\n')}`);
  const steps = results.filter((r) => r.kind === 'step');
  if (steps.length) {
    console.log(
      `\nStep search (${STEP_SECONDS} s per step on one stack, ascending until a rate is not sustained):\n`,
    );
    console.log(stepTable(steps));
    console.log(`\n${best.join('\n')}`);
  }
  for (const r of results.filter((x) => x.errors > 0))
    console.log(
      `\n${r.server} ${r.mode}/${r.scope} ${r.kind} ${r.rate}/s answers: ${JSON.stringify(r.statuses)}`,
    );
  for (const n of notes) console.log(`\nNote: ${n}`);
  log(`done in ${((Date.now() - startedAt) / 1000).toFixed(0)}s`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
