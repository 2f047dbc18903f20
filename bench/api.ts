/**
 * `npm run bench:api`: task-create throughput and latency through the real HTTP stack, against PGlite and
 * PostgreSQL, compared with a bare Fastify route doing one plain INSERT on the same database.
 *
 * - taskflow: the `api` + `relay` targets started with runTargets (JWT auth, validation, the task row and
 *   its outbox event in one transaction, the relay moving outbox rows onto the embedded bus meanwhile).
 * - bare: Fastify with one `POST /bare` route: JSON body in, one INSERT ... RETURNING, JSON out.
 *
 * Load: a closed-loop client in a worker thread (node:http, keep-alive): BENCH_CONCURRENCY connections
 * (default 16), each sending its next request as soon as the previous answer arrives, each as its own user;
 * BENCH_WARMUP_SECONDS (default 2) of warm-up, then BENCH_SECONDS (default 10) measured per case. Per case
 * also where the time goes: µs per request that the server's thread (this process's main thread) and the
 * client's thread were busy, of PostgreSQL's CPU (its postmaster and backends, from /proc, when it runs on this
 * machine), and how busy the whole machine was: on two cores the three share, a rate is bounded by their sum.
 *
 * BENCH_REPEAT (default 1) runs the cases that many rounds, alternating (taskflow, bare, taskflow, bare...):
 * this machine's speed changes from minute to minute, so one pair's ratio says little. With more than one
 * round a summary gives each case's median and range and the median of the rounds' ratios.
 *
 * The taskflow case runs with taskflow's defaults; MAX_EVENT_LOOP_DELAY_MS, MAX_REQUESTS_IN_FLIGHT and
 * CREATE_QUEUE_MAX_MS set in this environment are passed to it (its admission control, e.g. `0` for off).
 *
 * PostgreSQL: `scripts/postgres start --name bench --fast` (stopped again at the end if this run started
 * it), or BENCH_DATABASE_URL=postgres://... to use a running server; a fresh database is created and
 * dropped. BENCH_SKIP_POSTGRES=1 skips it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import Fastify from 'fastify';
import { uuidv7 } from '../src/ids.ts';
import { createVerifier, signDevToken } from '../src/auth.ts';
import { makeEvent } from '../src/contracts/cloudevent.ts';
import { assertValidEvent } from '../src/contracts/schemas.ts';
import { systemClock } from '../src/domain/clock.ts';
import { newTask, validateCreate } from '../src/domain/task.ts';
import { loadConfig } from '../src/config.ts';
import { runTargets } from '../src/process.ts';
import { MANIFESTS, findTargets } from '../src/services/index.ts';
import { openDb, type Db } from '../src/store/db.ts';
import { migrate } from '../src/store/migrate.ts';
import { TaskStore } from '../src/store/tasks.ts';
import { UserSettingsStore } from '../src/store/user-settings.ts';
import {
  TASK_BODY,
  log,
  busyShare,
  intEnv,
  median,
  machineCpu,
  percentile,
  pidOfPostgres,
  startService,
  treeCpu,
  v8FlagsNote,
  withFreshPgDb,
  type Service,
} from './lib.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 2);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const SECRET = 'bench-secret-bench-secret-bench-secret-0123';
/** Targets of the taskflow case (default `api,relay`; `api` alone shows what the relay costs). */
const TARGET_NAMES = (process.env.BENCH_TARGETS ?? 'api,relay').split(',').map((s) => s.trim());
/** Which cases to run: `taskflow,bare` (default). */
const CASES = (process.env.BENCH_CASES ?? 'taskflow,bare').split(',').map((s) => s.trim());
/** Rounds of the cases, alternating (see the header). */
const REPEAT = intEnv('BENCH_REPEAT', 1);

// ------------------------------------------------------------------------------------------------ client

interface LoadResult {
  ok: number;
  errors: number;
  statuses: Record<string, number>;
  elapsedMs: number;
  latencies: Float64Array;
  /** How long the client's thread was busy (its event-loop utilization): its share of the machine. */
  clientActiveMs: number;
}

/** The load generator, as plain CommonJS for an `eval` worker (no loader needed in the thread). */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const http = require('node:http');
const { url, path, body, connections, durationMs } = workerData;
const target = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: connections.length });
const latencies = [];
const statuses = {};
let ok = 0;
let errors = 0;
const deadline = performance.now() + durationMs;
function once(headers) {
  return new Promise((resolve) => {
    const started = performance.now();
    const req = http.request(
      {
        host: target.hostname,
        port: target.port,
        path,
        method: 'POST',
        agent,
        headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        res.on('end', () => {
          const ms = performance.now() - started;
          statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
          if (res.statusCode >= 200 && res.statusCode < 300) {
            ok++;
            latencies.push(ms);
          } else errors++;
          resolve();
        });
      },
    );
    req.on('error', (err) => {
      errors++;
      statuses[err.code || 'error'] = (statuses[err.code || 'error'] || 0) + 1;
      resolve();
    });
    req.end(body);
  });
}
async function connection(headers) {
  while (performance.now() < deadline) await once(headers);
}
const start = performance.now();
const elu0 = performance.eventLoopUtilization();
Promise.all(connections.map(connection)).then(() => {
  const elapsedMs = performance.now() - start;
  const clientActiveMs = performance.eventLoopUtilization(elu0).active;
  agent.destroy();
  const arr = Float64Array.from(latencies);
  parentPort.postMessage({ ok, errors, statuses, elapsedMs, latencies: arr, clientActiveMs }, [arr.buffer]);
});
`;

function load(opts: {
  url: string;
  path: string;
  body: string;
  connections: Record<string, string>[];
  seconds: number;
}): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        url: opts.url,
        path: opts.path,
        body: opts.body,
        connections: opts.connections,
        durationMs: opts.seconds * 1000,
      },
    });
    worker.once('message', (m: LoadResult) => {
      resolve(m);
      void worker.terminate();
    });
    worker.once('error', reject);
  });
}

interface Figures {
  database: string;
  /** Which round of BENCH_REPEAT, from 1. */
  round: number;
  case: string;
  reqPerSec: number;
  p50: number;
  p99: number;
  requests: number;
  errors: number;
  statuses: Record<string, number>;
  /** 1-minute load average of the machine when the case started (other work on the 2 cores skews results). */
  load: number;
  /** µs per answered request that this process's main thread (the server; the client is a worker) was busy. */
  threadUs: number;
  /** µs of PostgreSQL's CPU (postmaster and backends) per answered request; NaN on PGlite or a remote server. */
  postgresUs: number;
  /** µs per answered request that the load generator's thread was busy. */
  clientUs: number;
  /** Share of the whole machine (every core) that was busy while the case ran, in %. */
  machineBusy: number;
}

/** The postmaster of the PostgreSQL server in use, when it runs on this machine (its CPU per request). */
let postgresPid: number | undefined;

async function measure(
  database: string,
  round: number,
  name: string,
  opts: Omit<Parameters<typeof load>[0], 'seconds'>,
): Promise<Figures> {
  const label = REPEAT > 1 ? `${database} / round ${round} / ${name}` : `${database} / ${name}`;
  log(
    `${label}: warm-up ${WARMUP_SECONDS}s, measuring ${SECONDS}s with ${opts.connections.length} connections ...`,
  );
  if (WARMUP_SECONDS > 0) await load({ ...opts, seconds: WARMUP_SECONDS });
  const loadAtStart = loadavg()[0]!;
  const pg0 = database === 'PostgreSQL' ? treeCpu(postgresPid) : NaN;
  const elu0 = performance.eventLoopUtilization();
  const machine0 = machineCpu();
  const r = await load({ ...opts, seconds: SECONDS });
  const busyMs = performance.eventLoopUtilization(elu0).active;
  const machine1 = machineCpu();
  const pg1 = database === 'PostgreSQL' ? treeCpu(postgresPid) : NaN;
  const sorted = Float64Array.from(r.latencies).sort();
  const f: Figures = {
    database,
    round,
    case: name,
    reqPerSec: r.ok / (r.elapsedMs / 1000),
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    requests: r.ok,
    errors: r.errors,
    statuses: r.statuses,
    load: loadAtStart,
    threadUs: (busyMs * 1000) / Math.max(1, r.ok),
    postgresUs: ((pg1 - pg0) * 1e6) / Math.max(1, r.ok),
    clientUs: (r.clientActiveMs * 1000) / Math.max(1, r.ok),
    machineBusy: 100 * busyShare(machine0, machine1),
  };
  log(
    `${label}: ${f.reqPerSec.toFixed(0)} req/s, p50 ${f.p50.toFixed(2)} ms, p99 ${f.p99.toFixed(2)} ms, ` +
      `server thread ${us(f.threadUs)} µs/request, PostgreSQL ${us(f.postgresUs)} µs/request, ` +
      `client thread ${us(f.clientUs)} µs/request, machine ${f.machineBusy.toFixed(0)} % busy` +
      (f.errors ? `, ${f.errors} errors ${JSON.stringify(f.statuses)}` : ''),
  );
  return f;
}

// ------------------------------------------------------------------------------------------------ cases

const TASK_BODY_JSON = JSON.stringify(TASK_BODY);

/** Distinct users the connections cycle through (default: one per connection; 1 = one hot per-user stream). */
const USERS = Number(process.env.BENCH_USERS ?? CONCURRENCY);
const users = Array.from({ length: CONCURRENCY }, (_, i) => `bench-user-${(i % USERS) + 1}`);

/** The admission-control settings of the taskflow case, when set in this environment (defaults otherwise). */
const ADMISSION_ENV = Object.fromEntries(
  ['MAX_EVENT_LOOP_DELAY_MS', 'MAX_REQUESTS_IN_FLIGHT', 'CREATE_QUEUE_MAX_MS'].flatMap((k) =>
    process.env[k] === undefined ? [] : [[k, process.env[k]!]],
  ),
);

async function taskflowCase(database: string, db: Db, round: number): Promise<Figures> {
  const config = loadConfig({
    DATABASE_URL: db.url,
    JWT_SECRET: SECRET,
    HOST: '127.0.0.1',
    PORT: '0',
    RATE_LIMIT_PER_MINUTE: '0',
    LOG_LEVEL: 'warn',
    ...ADMISSION_ENV,
  });
  const proc = await runTargets(config, findTargets(TARGET_NAMES), { db, catalog: MANIFESTS });
  try {
    const tokens = await Promise.all(users.map((u) => signDevToken(SECRET, u)));
    return await measure(database, round, `taskflow POST /api/tasks (${TARGET_NAMES.join(' + ')})`, {
      url: proc.url,
      path: '/api/tasks',
      body: TASK_BODY_JSON,
      connections: tokens.map((t) => ({ authorization: `Bearer ${t}` })),
    });
  } finally {
    await proc.stop();
  }
}

const BARE_INSERT =
  'INSERT INTO bench_bare (id, user_id, title) VALUES ($1, $2, $3) RETURNING id::text AS id, user_id, title, created_at';

async function bareCase(database: string, db: Db, round: number): Promise<Figures> {
  const app = Fastify({ logger: false });
  app.post('/bare', async (req, reply) => {
    const body = req.body as { title?: unknown };
    const r = await db.query(BARE_INSERT, [uuidv7(), String(req.headers['x-user']), String(body.title)]);
    return reply.code(201).send(r.rows[0]);
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    return await measure(database, round, 'bare Fastify + 1 INSERT', {
      url: `http://127.0.0.1:${port}`,
      path: '/bare',
      body: TASK_BODY_JSON,
      connections: users.map((u) => ({ 'x-user': u })),
    });
  } finally {
    await app.close();
  }
}

interface Step {
  database: string;
  step: string;
  ms: number;
}

/**
 * What one task create is made of, each part timed alone and one at a time (no HTTP, no concurrency):
 * the serial cost that the HTTP figures multiply under load.
 */
async function breakdown(database: string, db: Db): Promise<Step[]> {
  const n = Number(process.env.BENCH_STEP_ITERATIONS ?? 300);
  const body = JSON.parse(TASK_BODY_JSON) as unknown;
  const settings = new UserSettingsStore(db, 'UTC');
  const store = new TaskStore(db, systemClock);
  const verify = createVerifier({ secret: SECRET });
  const token = await signDevToken(SECRET, 'bench-steps');
  const parsed = validateCreate(body, { timezone: 'UTC' });
  if (!parsed.ok) throw new Error('bench body is invalid');
  const task = newTask(uuidv7(), 'bench-steps', parsed.value, new Date());
  const event = makeEvent({
    type: 'task.created',
    source: '/bench',
    subject: task.id,
    key: task.user_id,
    data: { user_id: task.user_id, task, previous: null, changes: [] },
  });
  const steps: [string, () => unknown][] = [
    ['bare: one INSERT (autocommit)', () => db.query(BARE_INSERT, [uuidv7(), 'bench-steps', 'x'])],
    [
      'bare: one INSERT in BEGIN/COMMIT',
      () => db.transaction((tx) => tx.query(BARE_INSERT, [uuidv7(), 'bench-steps', 'x'])),
    ],
    ['JWT verify (HS256, jose)', () => verify(token)],
    ['user settings SELECT (time zone)', () => settings.get('bench-steps')],
    ['validateCreate (domain validation)', () => validateCreate(body, { timezone: 'UTC' })],
    ['event JSON Schema validation (ajv)', () => assertValidEvent(event)],
    [
      'store.create: task + stream lock + outbox (1 statement)',
      () => store.create(`bench-steps-${Math.floor(Math.random() * 16)}`, parsed.value, { source: '/bench' }),
    ],
  ];
  const out: Step[] = [];
  for (const [step, fn] of steps) {
    for (let i = 0; i < Math.min(50, n); i++) await fn(); // warm-up
    const started = performance.now();
    for (let i = 0; i < n; i++) await fn();
    out.push({ database, step, ms: (performance.now() - started) / n });
  }
  log(`${database}: serial cost per step measured (${n} iterations each)`);
  return out;
}

async function runBackend(database: string, db: Db, steps: Step[]): Promise<Figures[]> {
  await migrate(db);
  await db.exec(`CREATE TABLE IF NOT EXISTS bench_bare (
    id uuid PRIMARY KEY, user_id text NOT NULL, title text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`);
  const out: Figures[] = [];
  for (let round = 1; round <= REPEAT; round++) {
    if (CASES.includes('taskflow')) out.push(await taskflowCase(database, db, round));
    if (CASES.includes('bare')) out.push(await bareCase(database, db, round));
  }
  const rows = await db.query<{ n: string }>('SELECT count(*)::text AS n FROM tasks');
  log(`${database}: ${rows.rows[0]!.n} tasks written (incl. warm-up)`);
  if (process.env.BENCH_SKIP_STEPS !== '1') steps.push(...(await breakdown(database, db)));
  return out;
}

// ------------------------------------------------------------------------------------------------ PostgreSQL

/** PostgreSQL for the bench: BENCH_DATABASE_URL, else `scripts/postgres start --name bench --fast`. */
function startPostgres(): Service | null {
  if (process.env.BENCH_SKIP_POSTGRES === '1') {
    log('PostgreSQL skipped (BENCH_SKIP_POSTGRES=1)');
    return null;
  }
  if (process.env.BENCH_DATABASE_URL) return { value: process.env.BENCH_DATABASE_URL, stop: () => undefined };
  return startService({
    script: 'postgres',
    name: 'bench',
    args: ['--fast', '--ignore-env'],
    envKey: 'DATABASE_URL',
    keep: process.env.BENCH_KEEP_POSTGRES === '1',
  });
}

// ------------------------------------------------------------------------------------------------ main

const us = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : 'n/a');

const isTaskflow = (f: Figures) => f.case.startsWith('taskflow');

/** Each database's rounds: the taskflow and bare figures of one round, when both ran. */
function pairs(results: Figures[], database: string): { round: number; tf: Figures; bare: Figures }[] {
  const out: { round: number; tf: Figures; bare: Figures }[] = [];
  for (let round = 1; round <= REPEAT; round++) {
    const rows = results.filter((r) => r.database === database && r.round === round);
    const tf = rows.find(isTaskflow);
    const bare = rows.find((r) => !isTaskflow(r));
    if (tf && bare) out.push({ round, tf, bare });
  }
  return out;
}

function table(results: Figures[]): string {
  const lines = [
    '| database | round | case | req/s | p50 ms | p99 ms | server thread µs/req | PostgreSQL µs/req | client thread µs/req | machine busy | requests | errors | load avg |',
    '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const d of [...new Set(results.map((r) => r.database))]) {
    const rounds = pairs(results, d);
    for (let round = 1; round <= REPEAT; round++) {
      for (const r of results.filter((x) => x.database === d && x.round === round))
        lines.push(
          `| ${d} | ${round} | ${r.case} | ${r.reqPerSec.toFixed(0)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${us(r.threadUs)} | ${us(r.postgresUs)} | ${us(r.clientUs)} | ${r.machineBusy.toFixed(0)} % | ${r.requests} | ${r.errors} | ${r.load.toFixed(1)} |`,
        );
      const pair = rounds.find((p) => p.round === round);
      if (pair) {
        const { tf, bare } = pair;
        lines.push(
          `| ${d} | ${round} | **ratio taskflow/bare** | ${(tf.reqPerSec / bare.reqPerSec).toFixed(2)}x | ${(tf.p50 / bare.p50).toFixed(2)}x | ${(tf.p99 / bare.p99).toFixed(2)}x | ${(tf.threadUs / bare.threadUs).toFixed(2)}x | ${(tf.postgresUs / bare.postgresUs).toFixed(2)}x | ${(tf.clientUs / bare.clientUs).toFixed(2)}x | | | | |`,
        );
      }
    }
  }
  return lines.join('\n');
}

/** With several rounds: each case's median req/s and range, and the rounds' taskflow/bare ratios. */
function summaryTable(results: Figures[]): string {
  const range = (xs: number[]) =>
    `${median(xs).toFixed(0)} (${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)})`;
  const lines = [
    `| database | rounds | taskflow req/s, median (range) | bare req/s, median (range) | taskflow/bare per round, median (range) | server thread µs/req, taskflow / bare (medians) |`,
    '|---|---:|---:|---:|---:|---:|',
  ];
  for (const d of [...new Set(results.map((r) => r.database))]) {
    const ps = pairs(results, d);
    if (ps.length === 0) continue;
    const ratios = ps.map((p) => p.tf.reqPerSec / p.bare.reqPerSec);
    lines.push(
      `| ${d} | ${ps.length} | ${range(ps.map((p) => p.tf.reqPerSec))} | ${range(ps.map((p) => p.bare.reqPerSec))} | ` +
        `**${median(ratios).toFixed(2)}x** (${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}) | ` +
        `${us(median(ps.map((p) => p.tf.threadUs)))} / ${us(median(ps.map((p) => p.bare.threadUs)))} |`,
    );
  }
  return lines.join('\n');
}

function stepTable(steps: Step[]): string {
  const dbs = [...new Set(steps.map((s) => s.database))];
  const names = [...new Set(steps.map((s) => s.step))];
  const lines = [
    `| step (ms per operation, serial) | ${dbs.join(' | ')} |`,
    `|---|${dbs.map(() => '---:').join('|')}|`,
  ];
  for (const name of names)
    lines.push(
      `| ${name} | ${dbs.map((d) => steps.find((s) => s.database === d && s.step === name)?.ms.toFixed(3) ?? '').join(' | ')} |`,
    );
  return lines.join('\n');
}

async function main() {
  const started = Date.now();
  const cpu = cpus();
  log(
    `Node ${process.version}, ${cpu.length} CPUs (${cpu[0]?.model.trim() ?? 'unknown'}), concurrency ${CONCURRENCY} ` +
      `(${Math.min(USERS, CONCURRENCY)} users), ` +
      `${WARMUP_SECONDS}s warm-up + ${SECONDS}s per case; ${v8FlagsNote()}`,
  );
  const results: Figures[] = [];
  const steps: Step[] = [];

  if (process.env.BENCH_SKIP_PGLITE === '1') log('PGlite skipped (BENCH_SKIP_PGLITE=1)');
  else {
    const dir = mkdtempSync(join(tmpdir(), 'taskflow-bench-'));
    try {
      const db = await openDb(dir);
      try {
        results.push(...(await runBackend('PGlite', db, steps)));
      } finally {
        await db.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  const server = startPostgres();
  if (server) {
    postgresPid = await pidOfPostgres(server.value);
    try {
      results.push(
        ...(await withFreshPgDb(server.value, 'tf_bench', (db) => runBackend('PostgreSQL', db, steps))),
      );
    } finally {
      server.stop();
    }
  }

  console.log(
    `\nAPI: task create — Node ${process.version}, ${cpu.length} CPUs, ${new Date().toISOString().slice(0, 10)}, ` +
      `concurrency ${CONCURRENCY} (${Math.min(USERS, CONCURRENCY)} users), ${SECONDS}s per case after ${WARMUP_SECONDS}s warm-up` +
      `${REPEAT > 1 ? `, ${REPEAT} alternating rounds` : ''}; ` +
      `${v8FlagsNote()}\n`,
  );
  console.log(table(results));
  if (REPEAT > 1) console.log(`\n${summaryTable(results)}`);
  if (steps.length) console.log(`\n${stepTable(steps)}`);
  if (!server) console.log('\nPostgreSQL: skipped (see the message above).');
  log(`done in ${((Date.now() - started) / 1000).toFixed(0)}s`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
