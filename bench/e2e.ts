/**
 * `npm run bench:e2e`: end-to-end latency of the real-time path, from the API's commit of a task to a
 * WebSocket client's receipt of its `task.changed`, under a fixed write rate.
 *
 * Server: the `api`, `relay`, `broadcaster` and `gateway` targets in this process (runTargets, like a
 * `taskflow up` restricted to the real-time path), RATE_LIMIT_PER_MINUTE=0. Path of one write:
 * POST /api/tasks -> task row + outbox (1 tx) -> relay -> `task-events` -> broadcaster (sequence + outbox,
 * 1 tx) -> relay -> `task-updates` -> gateway -> the user's WebSocket.
 *
 * Clients: BENCH_USERS (default 50) users with one WebSocket each (the `ws` package, token in
 * Sec-WebSocket-Protocol `["taskflow.v1", "bearer.<jwt>"]`), in a worker thread. Latency = receipt time
 * (Date.now() in the client thread) - the task's created_at (the API's clock when it built the row, just
 * before its transaction; same machine, same clock; created_at has millisecond resolution). It is split at
 * the `time` of the task.changed event (the broadcaster's clock when it handled the task event):
 * "to broadcaster" (API commit, relay, bus) and "to client" (broadcaster tx, relay, bus, gateway, socket).
 *
 * Load: open loop in another worker thread: request i is due at start + i / rate and is sent then, whatever
 * the answers so far (node:http, keep-alive); spread round-robin over the users. A request that is due while
 * BENCH_MAX_INFLIGHT (default 256) requests are unanswered is not sent and counted as missed; one sent more
 * than 10 ms after its due time is counted as late. HTTP latency is measured from the due time.
 *
 * Cases, each on a fresh stack (fresh database, and on Kafka fresh topics and groups under a per-case
 * KAFKA_TOPIC_PREFIX, deleted afterwards), after BENCH_WARMUP_SECONDS (default 3) of warm-up at up to
 * 100 writes/s whose deliveries are awaited:
 * - main: BENCH_RATE (default 1000) writes/s for BENCH_SECONDS (default 60);
 * - step search: BENCH_STEPS (default 100,200,400,600,800,1000) writes/s for BENCH_STEP_SECONDS (default 15)
 *   each, ascending, stopping at the first rate that is not sustained; if the first one is not, halving
 *   downwards to BENCH_MIN_STEP (default 10) until one is. Sustained: >= 95 % of the target rate
 *   answered 201, <= 1 % missed or failed, every write delivered within BENCH_DRAIN_SECONDS (default 30)
 *   after the load ends, and end-to-end p99 < 100 ms.
 * Modes (BENCH_MODES, default `embedded,kafka`):
 * - embedded: BUS=embedded on PGlite in a temp dir;
 * - kafka: BUS=kafka with a broker from `scripts/kafka start --name bench-e2e` (or BENCH_KAFKA_BROKERS), the
 *   database on PostgreSQL from `scripts/postgres start --name bench-e2e --fast` (or BENCH_DATABASE_URL;
 *   PGlite if it cannot start); services this run started are stopped at the end (BENCH_KEEP_KAFKA=1 /
 *   BENCH_KEEP_POSTGRES=1 keep them);
 * - embedded-pg: BUS=embedded on that PostgreSQL (optional: separates the database from the bus).
 * Also recorded per case: the server thread's event-loop utilisation, the machine's CPU busy share
 * (/proc/stat), the 1-min load average, and (main case) the time spent in each kind of SQL statement.
 * BENCH_SKIP_MAIN=1 / BENCH_SKIP_STEPS=1 skip a part.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { Admin } from '@platformatic/kafka';
import { signDevToken } from '../src/auth.ts';
import { allTopics, kafkaSettings } from '../src/bus/index.ts';
import { connectionOptions } from '../src/bus/kafka/index.ts';
import { loadConfig, type Config } from '../src/config.ts';
import { runTargets, type RunningProcess } from '../src/process.ts';
import { apiTarget } from '../src/services/api/index.ts';
import { broadcasterTarget } from '../src/services/broadcaster/index.ts';
import { createGatewayTarget } from '../src/services/gateway/index.ts';
import { relayTarget } from '../src/services/relay/index.ts';
import { openDb, type Db, type Queryable } from '../src/store/db.ts';
import {
  ROOT,
  TimedDb,
  freshPgDatabase,
  intEnv,
  load1,
  loadNote,
  log,
  percentile,
  startService,
  type Service,
} from './lib.ts';

const listEnv = (key: string, def: string) =>
  (process.env[key] ?? def)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

const USERS = intEnv('BENCH_USERS', 50);
const RATE = intEnv('BENCH_RATE', 1000);
const SECONDS = intEnv('BENCH_SECONDS', 60);
const STEP_SECONDS = intEnv('BENCH_STEP_SECONDS', 15);
const STEPS = listEnv('BENCH_STEPS', '100,200,400,600,800,1000').map(Number);
const MIN_STEP = intEnv('BENCH_MIN_STEP', 10);
const WARMUP_SECONDS = intEnv('BENCH_WARMUP_SECONDS', 3, 0);
const DRAIN_MS = intEnv('BENCH_DRAIN_SECONDS', 30) * 1000;
const MAX_INFLIGHT = intEnv('BENCH_MAX_INFLIGHT', 256);
const MODES = listEnv('BENCH_MODES', 'embedded,kafka');
const LATE_MS = 10;
const P99_GOAL_MS = 100;
const SECRET = 'bench-secret-bench-secret-bench-secret-0123';
const RUN_ID = randomBytes(3).toString('hex');

const fmt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');
const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : 'n/a');

/** The body of each POST (the title is replaced by `e2e:<case label>:<n>`, which the clients parse). */
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
  /** Per sent request: ms from its due time to the send. */
  sendLags: Float64Array;
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
const sendLags = [];
const statuses = {};
let ok = 0, errors = 0, missed = 0, late = 0, inflight = 0, sent = 0, i = 0, pumping = true, lastAnswer = 0;
const start = performance.now() + 20;
function done() {
  if (pumping || inflight > 0) return;
  agent.destroy();
  const lat = Float64Array.from(latencies);
  const lags = Float64Array.from(sendLags);
  parentPort.postMessage(
    { total, sent, ok, errors, missed, late, statuses, elapsedMs: Math.max(lastAnswer, performance.now()) - start, latencies: lat, sendLags: lags },
    [lat.buffer, lags.buffer],
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
  const req = http.request(
    {
      host: target.hostname, port: target.port, path: '/api/tasks', method: 'POST', agent,
      headers: { authorization: 'Bearer ' + tokens[n % tokens.length], 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    },
    (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode === 201) { ok++; latencies.push(performance.now() - due); } else errors++;
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
      const lag = now - due;
      sendLags.push(lag);
      if (lag > lateMs) late++;
      send(i, due);
    }
    i++;
  }
  if (i < total) setTimeout(pump, Math.max(0, start + i * interval - performance.now()));
  else { pumping = false; done(); }
}
setTimeout(pump, 20);
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

/** The WebSocket clients, one per token, in an `eval` worker; `ws` is loaded from the repository. */
const CLIENT_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { createRequire } = require('node:module');
const WebSocket = createRequire(workerData.root + '/package.json')('ws');
const { wsUrl, tokens } = workerData;
const byLabel = new Map();
const closes = {};
let hellos = 0, errors = 0, frames = 0;
const sockets = tokens.map((token) => {
  const ws = new WebSocket(wsUrl, ['taskflow.v1', 'bearer.' + token]);
  ws.on('message', (data) => {
    const recv = Date.now();
    frames++;
    const f = JSON.parse(String(data));
    if (f.type === 'hello') {
      if (++hellos === tokens.length) parentPort.postMessage({ type: 'ready' });
      return;
    }
    if (f.type !== 'task.changed' || !f.task || typeof f.task.title !== 'string') return;
    const title = f.task.title;
    if (!title.startsWith('e2e:')) return;
    const label = title.slice(4, title.lastIndexOf(':'));
    let b = byLabel.get(label);
    if (!b) byLabel.set(label, (b = { total: [], hop1: [], hop2: [] }));
    const created = Date.parse(f.task.created_at);
    const t = Date.parse(f.time);
    b.total.push(recv - created);
    b.hop1.push(t - created);
    b.hop2.push(recv - t);
  });
  ws.on('error', () => { errors++; });
  ws.on('close', (code) => { closes[code] = (closes[code] || 0) + 1; });
  return ws;
});
parentPort.on('message', (m) => {
  const b = byLabel.get(m.label) || { total: [], hop1: [], hop2: [] };
  if (m.cmd === 'count') parentPort.postMessage({ type: 'count', n: b.total.length, closes, errors });
  else if (m.cmd === 'collect') {
    const total = Float64Array.from(b.total), hop1 = Float64Array.from(b.hop1), hop2 = Float64Array.from(b.hop2);
    parentPort.postMessage({ type: 'collect', total, hop1, hop2, closes, errors, frames }, [total.buffer, hop1.buffer, hop2.buffer]);
  } else if (m.cmd === 'close') {
    for (const ws of sockets) ws.terminate();
    parentPort.postMessage({ type: 'closed' });
  }
});
`;

interface Collected {
  total: Float64Array;
  hop1: Float64Array;
  hop2: Float64Array;
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

// ------------------------------------------------------------------------------------------------ server

/** Statements timed by kind (bench/lib.ts), and whole transactions too. */
class TransactionTimedDb extends TimedDb {
  override async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const t = performance.now();
    try {
      return await super.transaction(fn);
    } finally {
      this.timings.add('(whole transactions, incl. BEGIN/COMMIT)', performance.now() - t);
    }
  }
}

interface Mode {
  name: string;
  /** Opens a fresh database for one case; `drop` removes it. */
  freshDb(): Promise<{ db: Db; drop(): Promise<void> }>;
  env: Record<string, string>;
  kafka: boolean;
  dbLabel: string;
}

interface Stack {
  proc: RunningProcess;
  db: TransactionTimedDb;
  /** The same database, untimed (the bench's own queries). */
  raw: Db;
  config: Config;
  stop(): Promise<void>;
}

async function startStack(mode: Mode, caseId: string): Promise<Stack> {
  const fresh = await mode.freshDb();
  const db = new TransactionTimedDb(fresh.db);
  const config = loadConfig({
    DATABASE_URL: fresh.db.url,
    JWT_SECRET: SECRET,
    HOST: '127.0.0.1',
    PORT: '0',
    RATE_LIMIT_PER_MINUTE: '0',
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    ...mode.env,
    ...(mode.kafka ? { KAFKA_TOPIC_PREFIX: `bench-e2e-${RUN_ID}-${caseId}.` } : {}),
  });
  const targets = [apiTarget, relayTarget, broadcasterTarget, createGatewayTarget({ instanceId: 'bench' })];
  const proc = await runTargets(config, targets, { db });
  return {
    proc,
    db,
    raw: fresh.db,
    config,
    stop: async () => {
      await proc.stop();
      if (mode.kafka) await deleteTopics(config);
      await fresh.db.close();
      await fresh.drop();
    },
  };
}

async function deleteTopics(config: Config): Promise<void> {
  if (process.env.BENCH_KEEP_TOPICS === '1') return;
  const s = kafkaSettings(config);
  const admin = new Admin(connectionOptions(s));
  try {
    const existing = new Set(await admin.listTopics());
    const mine = allTopics(config)
      .map((t) => config.kafka.topicPrefix + t.name)
      .filter((t) => existing.has(t));
    if (mine.length) await admin.deleteTopics({ topics: mine });
  } catch (err) {
    log(`could not delete the case's topics: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    await admin.close().catch(() => undefined);
  }
}

// ------------------------------------------------------------------------------------------------ cases

/** Per consumer group: messages handled and total handler seconds so far (the consumers' own metric). */
async function handlerTotals(proc: RunningProcess): Promise<Map<string, { count: number; seconds: number }>> {
  const out = new Map<string, { count: number; seconds: number }>();
  const m = await proc.runtime.metrics.handlerDuration.get();
  for (const v of m.values) {
    const group = String(v.labels.group ?? '?');
    const e = out.get(group) ?? { count: 0, seconds: 0 };
    if (v.metricName?.endsWith('_count')) e.count += v.value;
    else if (v.metricName?.endsWith('_sum')) e.seconds += v.value;
    out.set(group, e);
  }
  return out;
}

interface GroupFigures {
  group: string;
  handled: number;
  /** Mean handler time (ms): the service's transaction, without fetching and committing the position. */
  handlerMs: number;
  /** Messages handled per second of the case (load + drain). */
  rate: number;
  /** Messages handled per second while draining (the API idle), NaN when nothing was left to drain. */
  drainRate: number;
}

type Totals = Map<string, { count: number; seconds: number }>;

function groupDelta(
  before: Totals,
  loadEnd: Totals,
  after: Totals,
  wallS: number,
  drainS: number,
): GroupFigures[] {
  return [...after].map(([group, a]) => {
    const b = before.get(group) ?? { count: 0, seconds: 0 };
    const l = loadEnd.get(group) ?? b;
    const handled = a.count - b.count;
    const drained = a.count - l.count;
    return {
      group,
      handled,
      handlerMs: handled > 0 ? ((a.seconds - b.seconds) * 1000) / handled : NaN,
      rate: handled / wallS,
      drainRate: drained > 0 && drainS > 0.5 ? drained / drainS : NaN,
    };
  });
}

/** Busy and total jiffies of all CPUs (/proc/stat), for the machine's CPU share during a case. */
function cpuTimes(): { busy: number; total: number } {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return { busy: NaN, total: NaN };
  }
}

interface Pct {
  p50: number;
  p99: number;
  max: number;
}
const pct = (a: Float64Array): Pct => {
  const s = Float64Array.from(a).sort();
  return { p50: percentile(s, 50), p99: percentile(s, 99), max: s.length ? s[s.length - 1]! : NaN };
};

interface CaseResult {
  mode: string;
  kind: 'main' | 'step';
  rate: number;
  seconds: number;
  load: number;
  loadEnd: number;
  total: number;
  ok: number;
  errors: number;
  missed: number;
  late: number;
  statuses: Record<string, number>;
  achieved: number;
  http: Pct;
  sendLagP99: number;
  delivered: number;
  /** Tasks of the case committed in the database (counted after the drain). */
  written: number;
  drainS: number;
  e2e: Pct;
  hop1: Pct;
  hop2: Pct;
  elu: number;
  machineBusy: number;
  closes: Record<string, number>;
  sustained: boolean;
  timings?: Map<string, { count: number; totalMs: number }>;
  wallS: number;
  groups: GroupFigures[];
}

async function waitDelivered(clients: Clients, label: string, expected: number, timeoutMs: number) {
  const t0 = performance.now();
  let n = 0;
  for (;;) {
    n = (await clients.count(label)).n;
    if (n >= expected || performance.now() - t0 > timeoutMs) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return { n, ms: performance.now() - t0 };
}

async function runCase(
  mode: Mode,
  kind: 'main' | 'step',
  rate: number,
  seconds: number,
): Promise<CaseResult> {
  const caseId = `${kind}${rate}`;
  const stack = await startStack(mode, caseId);
  const tokens = await Promise.all(
    Array.from({ length: USERS }, (_, i) =>
      signDevToken(SECRET, `e2e-user-${String(i + 1).padStart(3, '0')}`),
    ),
  );
  const clients = new Clients(stack.proc.url, tokens);
  try {
    await clients.whenReady();
    if (WARMUP_SECONDS > 0) {
      const w = await runLoad({
        url: stack.proc.url,
        tokens,
        rate: Math.min(rate, 100),
        seconds: WARMUP_SECONDS,
        label: 'warmup',
      });
      const d = await waitDelivered(clients, 'warmup', w.ok, mode.kafka ? 60_000 : 30_000);
      log(
        `${mode.name} ${kind} ${rate}/s: warm-up ${w.ok} writes, ${d.n} delivered` +
          (d.n < w.ok ? ' (NOT ALL: measuring anyway)' : ''),
      );
    }
    const label = `m${rate}`;
    const load = load1();
    log(`${mode.name} ${kind}: ${rate} writes/s for ${seconds}s to ${USERS} users (${loadNote()}) ...`);
    stack.db.timings.clear();
    const handlers0 = await handlerTotals(stack.proc);
    const elu0 = performance.eventLoopUtilization();
    const cpu0 = cpuTimes();
    const t0 = performance.now();
    const r = await runLoad({ url: stack.proc.url, tokens, rate, seconds, label });
    const elu = performance.eventLoopUtilization(elu0).utilization;
    const handlersAtLoadEnd = await handlerTotals(stack.proc);
    const cpu1 = cpuTimes();
    // Committed writes of this case (a request that timed out on the client may still have committed).
    const countWritten = async () =>
      Number(
        (
          await stack.raw.query<{ n: string }>(`SELECT count(*)::text AS n FROM tasks WHERE title LIKE $1`, [
            `e2e:${label}:%`,
          ])
        ).rows[0]!.n,
      );
    let written = await countWritten();
    const d = await waitDelivered(clients, label, written, DRAIN_MS);
    // A late commit (of a request the client had given up on) raises the count: wait for it too.
    for (let w = await countWritten(); w > written && d.ms < DRAIN_MS; w = await countWritten()) {
      written = w;
      const more = await waitDelivered(clients, label, written, DRAIN_MS - d.ms);
      d.n = more.n;
      d.ms += more.ms;
    }
    const wallS = (performance.now() - t0) / 1000;
    const groups = groupDelta(
      handlers0,
      handlersAtLoadEnd,
      await handlerTotals(stack.proc),
      wallS,
      d.ms / 1000,
    );
    const loadEnd = load1();
    const c = await clients.collect(label);
    const e2e = pct(c.total);
    const achieved = r.ok / (Math.max(r.elapsedMs, seconds * 1000) / 1000);
    const failedShare = (r.missed + r.errors) / r.total;
    const sustained =
      achieved >= 0.95 * rate && failedShare <= 0.01 && d.n >= written && r.ok > 0 && e2e.p99 < P99_GOAL_MS;
    const res: CaseResult = {
      mode: mode.name,
      kind,
      rate,
      seconds,
      load,
      loadEnd,
      total: r.total,
      ok: r.ok,
      errors: r.errors,
      missed: r.missed,
      late: r.late,
      statuses: r.statuses,
      achieved,
      http: pct(r.latencies),
      sendLagP99: pct(r.sendLags).p99,
      delivered: d.n,
      written,
      drainS: d.ms / 1000,
      e2e,
      hop1: pct(c.hop1),
      hop2: pct(c.hop2),
      elu,
      machineBusy: (cpu1.busy - cpu0.busy) / (cpu1.total - cpu0.total),
      closes: c.closes,
      sustained,
      wallS,
      groups,
      ...(kind === 'main' ? { timings: new Map(stack.db.timings.entries) } : {}),
    };
    log(
      `${mode.name} ${kind} ${rate}/s: ${fmt(achieved)} writes/s answered (${r.ok}/${r.total}, ${r.missed} missed, ` +
        `${r.errors} errors, ${r.late} late), HTTP p99 ${f1(res.http.p99)} ms; delivered ${d.n}/${written} written ` +
        `(${f1(res.drainS)}s after the load); e2e p50 ${f1(e2e.p50)} p99 ${f1(e2e.p99)} max ${f1(e2e.max)} ms; ` +
        `server loop ${(elu * 100).toFixed(0)}% busy, machine ${(res.machineBusy * 100).toFixed(0)}%; ` +
        `${sustained ? 'SUSTAINED' : 'not sustained'} (${loadNote()})`,
    );
    return res;
  } finally {
    await clients.close();
    await stack.stop();
  }
}

// ------------------------------------------------------------------------------------------------ main

function modes(): { list: Mode[]; services: Service[]; notes: string[] } {
  const list: Mode[] = [];
  const services: Service[] = [];
  const notes: string[] = [];
  const pglite = (): Mode['freshDb'] => async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskflow-bench-e2e-'));
    const db = await openDb(dir);
    return { db, drop: async () => rmSync(dir, { recursive: true, force: true }) };
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
      const db = await openDb(fresh.url);
      return { db, drop: () => fresh.drop() };
    };
  for (const m of MODES) {
    if (m === 'embedded')
      list.push({
        name: 'embedded',
        freshDb: pglite(),
        env: { BUS: 'embedded' },
        kafka: false,
        dbLabel: 'PGlite',
      });
    else if (m === 'embedded-pg') {
      const url = postgres();
      if (!url) notes.push('embedded-pg skipped: PostgreSQL could not be started.');
      else
        list.push({
          name: 'embedded-pg',
          freshDb: pgFresh(url),
          env: { BUS: 'embedded' },
          kafka: false,
          dbLabel: 'PostgreSQL',
        });
    } else if (m === 'kafka') {
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
      if (!brokers) {
        notes.push('kafka skipped: the broker could not be started (scripts/kafka start --name bench-e2e).');
        continue;
      }
      const url = postgres();
      if (!url) notes.push('kafka: PostgreSQL could not be started, the database is PGlite.');
      list.push({
        name: 'kafka',
        freshDb: url ? pgFresh(url) : pglite(),
        env: { BUS: 'kafka', KAFKA_BROKERS: brokers, KAFKA_ENSURE_TOPICS: 'true' },
        kafka: true,
        dbLabel: url ? 'PostgreSQL' : 'PGlite',
      });
    } else throw new Error(`unknown mode "${m}" (embedded, kafka, embedded-pg)`);
  }
  return { list, services, notes };
}

const closesText = (c: Record<string, number>) =>
  Object.entries(c)
    .filter(([code]) => code !== '1005' && code !== '1006')
    .map(([code, n]) => `${n}x${code}`)
    .join(' ') || '-';

function mainTable(rs: CaseResult[], dbOf: Map<string, string>): string {
  const lines = [
    '| bus / database | target w/s | s | answered w/s | missed / errors / late sends | HTTP p50 / p99 ms | delivered / written | e2e p50 ms | e2e p99 ms | e2e max ms | to broadcaster p50 / p99 | to client p50 / p99 | server loop busy | machine CPU | load start / end |',
    '|---|---:|---:|---:|---|---|---:|---:|---:|---:|---|---|---:|---:|---|',
  ];
  for (const r of rs)
    lines.push(
      `| ${r.mode} / ${dbOf.get(r.mode)} | ${r.rate} | ${r.seconds} | ${fmt(r.achieved)} | ${fmt(r.missed)} / ${fmt(r.errors)} / ${fmt(r.late)} | ` +
        `${f1(r.http.p50)} / ${f1(r.http.p99)} | ${fmt(r.delivered)} / ${fmt(r.written)}${r.delivered < r.written ? ` (drain cut at ${f1(r.drainS)} s)` : ''} | ` +
        `${f1(r.e2e.p50)} | ${f1(r.e2e.p99)} | ${f1(r.e2e.max)} | ${f1(r.hop1.p50)} / ${f1(r.hop1.p99)} | ${f1(r.hop2.p50)} / ${f1(r.hop2.p99)} | ` +
        `${(r.elu * 100).toFixed(0)}% | ${(r.machineBusy * 100).toFixed(0)}% | ${r.load.toFixed(2)} / ${r.loadEnd.toFixed(2)} |`,
    );
  return lines.join('\n');
}

function stepTable(rs: CaseResult[], dbOf: Map<string, string>): string {
  const lines = [
    '| bus / database | target w/s | answered w/s | missed + errors | delivered / written | e2e p50 ms | e2e p99 ms | e2e max ms | to broadcaster p50 / p99 | to client p50 / p99 | server loop busy | sustained (p99 < 100 ms) | load |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|---:|',
  ];
  for (const r of rs)
    lines.push(
      `| ${r.mode} / ${dbOf.get(r.mode)} | ${r.rate} | ${fmt(r.achieved)} | ${fmt(r.missed + r.errors)} | ${fmt(r.delivered)} / ${fmt(r.written)} | ` +
        `${f1(r.e2e.p50)} | ${f1(r.e2e.p99)} | ${f1(r.e2e.max)} | ${f1(r.hop1.p50)} / ${f1(r.hop1.p99)} | ${f1(r.hop2.p50)} / ${f1(r.hop2.p99)} | ` +
        `${(r.elu * 100).toFixed(0)}% | ${r.sustained ? 'yes' : 'no'} | ${r.load.toFixed(2)} |`,
    );
  return lines.join('\n');
}

function timingTable(rs: CaseResult[]): string {
  const withT = rs.filter((r) => r.timings);
  if (!withT.length) return '';
  const kinds = new Set<string>();
  for (const r of withT) for (const k of r.timings!.keys()) kinds.add(k);
  const per = (r: CaseResult, k: string) => {
    const e = r.timings!.get(k);
    if (!e) return '';
    return `${(e.totalMs / 1000).toFixed(1)} s (${fmt(e.count)}, ${(e.totalMs / e.count).toFixed(2)} ms)`;
  };
  const lines = [
    `| SQL statement kind, main case: total time incl. waiting for a connection (count, avg) | ${withT.map((r) => `${r.mode} ${r.rate} w/s, ${r.wallS.toFixed(0)} s wall`).join(' | ')} |`,
    `|---|${withT.map(() => '---:').join('|')}|`,
  ];
  const sorted = [...kinds].sort(
    (a, b) =>
      withT.reduce((s, r) => s + (r.timings!.get(b)?.totalMs ?? 0), 0) -
      withT.reduce((s, r) => s + (r.timings!.get(a)?.totalMs ?? 0), 0),
  );
  for (const k of sorted) lines.push(`| ${k} | ${withT.map((r) => per(r, k)).join(' | ')} |`);
  return lines.join('\n');
}

function groupTable(rs: CaseResult[]): string {
  const rows = rs.flatMap((r) => r.groups.map((g) => ({ r, g })));
  if (!rows.length) return '';
  return [
    '| main case | consumer group | messages handled (load + drain) | handled /s | handled /s while draining (API idle) | mean handler ms (its transaction; without fetch and position commit) |',
    '|---|---|---:|---:|---:|---:|',
    ...rows.map(
      ({ r, g }) =>
        `| ${r.mode} ${r.rate} w/s | ${g.group} | ${fmt(g.handled)} | ${fmt(g.rate)} | ${fmt(g.drainRate)} | ${f1(g.handlerMs)} |`,
    ),
  ].join('\n');
}

async function main() {
  const startedAt = Date.now();
  const cpu = cpus();
  log(
    `Node ${process.version}, ${cpu.length} CPUs (${cpu[0]?.model.trim() ?? 'unknown'}), ${USERS} users x 1 WebSocket, ` +
      `modes ${MODES.join(', ')}, ${loadNote()}`,
  );
  const { list, services, notes } = modes();
  const mains: CaseResult[] = [];
  const steps: CaseResult[] = [];
  const best = new Map<string, number>();
  const dbOf = new Map(list.map((m) => [m.name, m.dbLabel]));
  try {
    for (const mode of list) {
      if (process.env.BENCH_SKIP_MAIN !== '1') mains.push(await runCase(mode, 'main', RATE, SECONDS));
      if (process.env.BENCH_SKIP_STEPS !== '1') {
        for (const rate of STEPS) {
          const r = await runCase(mode, 'step', rate, STEP_SECONDS);
          steps.push(r);
          if (!r.sustained) break;
          best.set(mode.name, rate);
        }
        // Not even the first step held: halve downwards until one does (or below BENCH_MIN_STEP).
        for (
          let rate = Math.floor(STEPS[0]! / 2);
          !best.has(mode.name) && rate >= MIN_STEP;
          rate = Math.floor(rate / 2)
        ) {
          const r = await runCase(mode, 'step', rate, STEP_SECONDS);
          steps.push(r);
          if (r.sustained) best.set(mode.name, rate);
        }
      }
    }
  } finally {
    for (const s of services.reverse()) s.stop();
  }
  const date = new Date().toISOString().slice(0, 10);
  console.log(
    `\nEnd-to-end: POST /api/tasks commit -> WebSocket receipt — Node ${process.version}, ${cpu.length} CPUs, ${date}, ` +
      `api + relay + broadcaster + gateway in one process, ${USERS} users x 1 WebSocket, open-loop load ` +
      `(max ${MAX_INFLIGHT} in flight), warm-up ${WARMUP_SECONDS}s per case\n`,
  );
  if (mains.length) console.log(mainTable(mains, dbOf));
  if (steps.length) {
    console.log(
      `\nStep search (${STEP_SECONDS}s per step, ascending until a rate is not sustained; halving downwards ` +
        `when the first is not):\n`,
    );
    console.log(stepTable(steps, dbOf));
    console.log('');
    for (const m of list)
      if (steps.some((s) => s.mode === m.name))
        console.log(
          `- ${m.name} / ${m.dbLabel}: highest sustained rate with e2e p99 < ${P99_GOAL_MS} ms: ` +
            `${best.has(m.name) ? `${best.get(m.name)} writes/s` : `none (tried down to ${MIN_STEP} writes/s)`}`,
        );
  }
  const t = timingTable(mains);
  if (t) console.log(`\n${t}`);
  const g = groupTable(mains);
  if (g) console.log(`\n${g}`);
  const statuses = [...mains, ...steps].filter((r) => r.errors > 0);
  for (const r of statuses)
    console.log(`\n${r.mode} ${r.kind} ${r.rate}/s answers: ${JSON.stringify(r.statuses)}`);
  const closed = [...mains, ...steps].filter((r) => closesText(r.closes) !== '-');
  for (const r of closed)
    console.log(`\n${r.mode} ${r.kind} ${r.rate}/s WebSocket closes: ${closesText(r.closes)}`);
  for (const n of notes) console.log(`\nNote: ${n}`);
  log(`done in ${((Date.now() - startedAt) / 1000).toFixed(0)}s`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
