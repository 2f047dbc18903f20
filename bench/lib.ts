/**
 * Helpers shared by the benchmarks: the local services of scripts/postgres and scripts/kafka (started under
 * a bench-specific instance name and stopped again only if this run started them), throw-away PostgreSQL
 * databases, a per-label timer and the machine-load note that goes next to every figure.
 */
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import pg from 'pg';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  openDb,
  type Db,
  type EventSink,
  type QueryResult,
  type Queryable,
  type Tx,
} from '../src/store/db.ts';
import { createPgDatabase } from '../test/helpers/db.ts';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

export const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

/** The 1-minute load average: on a shared 2-core machine it explains most of the variance between runs. */
export const load1 = () => loadavg()[0]!;

/** `uptime`-style text of the three load averages. */
export const loadNote = () =>
  `load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(', ')}`;

export interface Service {
  /** The env line value the script printed (DATABASE_URL / KAFKA_BROKERS). */
  value: string;
  stop(): void;
}

/**
 * Starts `scripts/<script> start --name <name> [args]` and returns the value of its `<envKey>=` line.
 * `stop()` stops the instance again unless it was already running before (or `keep` is set); it never uses
 * `--all`. Returns null (after a message) when the service cannot be started.
 */
export function startService(opts: {
  script: 'postgres' | 'kafka';
  name: string;
  args?: string[];
  envKey: string;
  keep?: boolean;
  timeoutMs?: number;
}): Service | null {
  const script = join(ROOT, 'scripts', opts.script);
  let wasRunning = false;
  try {
    execFileSync(script, ['status', '--name', opts.name], { stdio: 'ignore' });
    wasRunning = true;
  } catch {
    /* not running */
  }
  const args = ['start', '--name', opts.name, ...(opts.args ?? [])];
  try {
    log(
      `${wasRunning ? 'using running' : 'starting'} ${opts.script}: scripts/${opts.script} ${args.join(' ')}`,
    );
    const out = execFileSync(script, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 240_000,
    });
    const value = new RegExp(`^${opts.envKey}=(\\S+)$`, 'm').exec(out)?.[1];
    if (!value) throw new Error(`no ${opts.envKey} line in: ${out}`);
    return {
      value,
      stop: () => {
        if (wasRunning || opts.keep) {
          log(`leaving ${opts.script} instance '${opts.name}' running`);
          return;
        }
        try {
          execFileSync(script, ['stop', '--name', opts.name], { stdio: 'ignore', timeout: 90_000 });
          log(`stopped ${opts.script} instance '${opts.name}'`);
        } catch {
          log(`could not stop: scripts/${opts.script} stop --name ${opts.name}`);
        }
      },
    };
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    log(
      `SKIPPING ${opts.script}: it could not be started (${(e.stderr ?? e.message).trim().split('\n').slice(-3).join(' / ')})`,
    );
    return null;
  }
}

/** Creates a fresh database on a PostgreSQL server; `drop()` removes it again (the tests' helper). */
export const freshPgDatabase = (baseUrl: string, prefix = 'tf_bench') => createPgDatabase(baseUrl, prefix);

/** Runs `fn` on a fresh database of the PostgreSQL server at `baseUrl`, closed and dropped afterwards. */
export async function withFreshPgDb<T>(
  baseUrl: string,
  prefix: string,
  fn: (db: Db) => Promise<T>,
): Promise<T> {
  const fresh = await freshPgDatabase(baseUrl, prefix);
  try {
    const db = await openDb(fresh.url);
    try {
      return await fn(db);
    } finally {
      await db.close();
    }
  } finally {
    await fresh.drop();
  }
}

/** A comma-separated list from the environment. */
export const listEnv = (key: string, def: string) =>
  (process.env[key] ?? def)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

/**
 * The checkouts to compare (BENCH_SERVERS, `label=dir,...`, default `current=.`): each case runs against each
 * one's `bin/taskflow.js`, alternating, so before/after ratios come from one run on one machine.
 */
/** A checkout to run, with the settings and the Node binary of its label (benchServers). */
export interface BenchServer {
  label: string;
  root: string;
  env: Record<string, string>;
  node: string;
}

export function benchServers(): BenchServer[] {
  const servers = listEnv('BENCH_SERVERS', 'current=.').map((s) => {
    const [label, dir] = s.includes('=') ? s.split('=') : [s, s];
    // BENCH_SERVER_ENV_<label>="K=V,K=V": settings of that server only, so one checkout can be compared
    // with itself under another setting (`BENCH_SERVERS=a=.,b=.` and BENCH_SERVER_ENV_b=...).
    // BENCH_SERVER_NODE_<label>=/path/to/node: the Node binary that runs that server (another LTS line, say,
    // from `npx -y node@24 -p process.execPath`); this process's by default.
    const node = process.env[`BENCH_SERVER_NODE_${label!}`] || process.execPath;
    return { label: label!, root: resolve(ROOT, dir!), env: envPairs(`BENCH_SERVER_ENV_${label!}`), node };
  });
  for (const s of servers)
    if (!existsSync(join(s.root, 'bin', 'taskflow.js')))
      throw new Error(`no bin/taskflow.js under ${s.root}`);
  return servers;
}

/**
 * The Node options a checkout's `npm start` passes before `bin/taskflow.js` (e.g. `--v8-pool-size=1`), so a
 * bench starts Taskflow as a user does; none for a checkout whose script has none.
 */
export function startNodeOptions(root: string): string[] {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    scripts?: { start?: string };
  };
  const m = /^node((?:\s+--\S+)*)\s+bin\/taskflow\.js\b/.exec(pkg.scripts?.start ?? '');
  return m?.[1]?.trim().split(/\s+/).filter(Boolean) ?? [];
}

/**
 * The benches that run taskflow in their own process (api, relay, reminders) say whether it has the V8 flags
 * `npm start` gives taskflow (startNodeOptions): their npm scripts pass them. Without them the young
 * generation is V8's default, and the relay, whose batches outlive a scavenge, spends about a third more CPU
 * per event (docs/benchmarks.md).
 */
export function v8FlagsNote(): string {
  const wanted = startNodeOptions(ROOT);
  const missing = wanted.filter((f) => !process.execArgv.includes(f));
  return missing.length === 0
    ? `V8 flags of npm start (${wanted.join(' ')})`
    : `WITHOUT the V8 flags of npm start (${missing.join(' ')}): run it with npm run, or figures differ from what taskflow runs with`;
}

/** `K=V,K=V` pairs of the environment variable `key` (none when unset). */
export function envPairs(key: string): Record<string, string> {
  return Object.fromEntries(listEnv(key, '').map((kv) => [kv.split('=')[0]!, kv.slice(kv.indexOf('=') + 1)]));
}

/** An integer environment knob of a bench, `def` when unset; anything else is a clear error. */
export function intEnv(key: string, def: number, min = 1): number {
  const raw = process.env[key];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${key} must be an integer >= ${min}, got "${raw}"`);
  return n;
}

/** The p-th percentile (nearest rank) of ascending `sorted`; NaN when empty. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** The body of a task create like the API receives it (bench:api posts it; bench:relay builds events of it). */
export const TASK_BODY = {
  title: 'Prepare the quarterly report',
  description: 'Numbers from finance, charts from the dashboard.',
  priority: 'high',
  tags: ['work', 'reports'],
  due_date: '2030-01-15T09:00:00Z',
  reminders: ['PT1H'],
};

/** The statement kinds of the hot paths, by the SQL text of src/store, the relay, the scheduler, the bus. */
const STATEMENT_KINDS: readonly [RegExp, string][] = [
  [/^\s*WITH task AS \(INSERT INTO tasks/, 'api: task INSERT + its event (1 statement)'],
  [/^\s*WITH task AS \(UPDATE tasks/, 'api: task UPDATE + its event (1 statement)'],
  [/^\s*INSERT INTO tasks/, 'api: INSERT task'],
  [/FROM user_settings/, 'api: user settings SELECT'],
  [/^\s*WITH ev AS \(/, 'outbox: appendEvents (stream seqs + rows, 1 statement)'],
  [/INSERT INTO processed_events/, 'consumer: idempotency INSERT'],
  [/broadcaster_sequences/, 'broadcaster (before ADR 0011): sequence UPSERT'],
  [
    /FROM reminder_schedule\s+WHERE status = 'scheduled' AND remind_at <=/,
    'scheduler: claim SELECT ... FOR UPDATE SKIP LOCKED',
  ],
  [/^\s*UPDATE reminder_schedule\s+SET status = CASE/, 'scheduler: mark UPDATE'],
  [/count\(\*\)::text AS n FROM reminder_schedule/, 'scheduler: pending gauge count(*)'],
  [/FROM outbox WHERE published_at IS NULL ORDER BY/, 'relay: pending outbox SELECT'],
  [
    /^\s*WITH marked AS \(\s*DELETE FROM outbox.*\bLEFT JOIN LATERAL/s,
    'relay: mark published + next pending SELECT',
  ],
  [/^\s*WITH marked AS \(\s*DELETE FROM outbox/, 'relay: mark published DELETE'],
  [/^\s*INSERT INTO leases/, 'relay: lease UPSERT'],
  [/count\(\*\)::text AS pending/, 'relay: outbox stats count(*)'],
  [/^\s*DELETE FROM outbox WHERE id = ANY/, 'relay (embedded bus): mark moved rows DELETE'],
  [/^\s*DELETE FROM outbox/, 'relay: prune DELETE'],
  [/^\s*UPDATE bus_partitions/, 'embedded bus: partition offset UPDATE'],
  [/^\s*INSERT INTO bus_messages/, 'embedded bus: INSERT messages'],
  [
    /FROM bus_messages\s+WHERE topic = \$1 AND partition = \$2 AND "offset" >= \$3/,
    'embedded bus: consumer fetch SELECT',
  ],
  [/INSERT INTO bus_group_offsets/, 'embedded bus: position commit'],
  [/bus_group_members|bus_partition_owners/, 'embedded bus: group heartbeat'],
];

/** Which hot-path statement a SQL text is (per-statement breakdowns of the benches), else 'other'. */
export function statementKind(sql: string): string {
  for (const [re, kind] of STATEMENT_KINDS) if (re.test(sql)) return kind;
  return 'other';
}

/** Accumulates durations per label (count, total). */
export class Timings {
  readonly entries = new Map<string, { count: number; totalMs: number }>();
  add(label: string, ms: number): void {
    const e = this.entries.get(label) ?? { count: 0, totalMs: 0 };
    e.count++;
    e.totalMs += ms;
    this.entries.set(label, e);
  }
  clear(): void {
    this.entries.clear();
  }
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * The Db seam passing everything through, with every statement timed by kind (`statementKind`; the time
 * includes waiting for a pool connection or for PGlite). Benches extend it: `observe` sees each statement,
 * and `transaction` can be wrapped to account for whole transactions.
 */
export class TimedDb implements Db {
  constructor(
    protected readonly inner: Db,
    readonly timings: Timings = new Timings(),
  ) {}
  get kind() {
    return this.inner.kind;
  }
  get url() {
    return this.inner.url;
  }
  get signals() {
    return this.inner.signals;
  }
  get statements() {
    return this.inner.statements;
  }
  get events(): EventSink | undefined {
    return this.inner.events;
  }
  set events(sink: EventSink | undefined) {
    this.inner.events = sink;
  }
  get db(): Db {
    return this;
  }
  afterCommit(fn: () => void): void {
    fn();
  }
  /** Called after each statement with its duration. */
  protected observe(_sql: string, _params: readonly unknown[] | undefined, _ms: number): void {}
  protected async timed<T>(q: Queryable, sql: string, params?: readonly unknown[]): Promise<QueryResult<T>> {
    const t = performance.now();
    const r = await q.query<T>(sql, params);
    const ms = performance.now() - t;
    this.timings.add(statementKind(sql), ms);
    this.observe(sql, params, ms);
    return r;
  }
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]) {
    return this.timed<T>(this.inner, sql, params);
  }
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.inner.transaction((tx) =>
      fn({
        db: this,
        afterCommit: (cb) => tx.afterCommit(cb),
        query: <R>(sql: string, params?: readonly unknown[]) => this.timed<R>(tx, sql, params),
      }),
    );
  }
  exec(sql: string) {
    return this.inner.exec(sql);
  }
  /** Timed statements go through the inner database's foreground lane. */
  background(): Db {
    return this;
  }
  listen(channel: string) {
    this.inner.listen(channel);
  }
  close() {
    return this.inner.close();
  }
}

// ------------------------------------------------------------------------------------------------ /proc

const TICKS = 100; // USER_HZ: /proc times are in 1/100 s on Linux

/** The machine's CPU time, busy and in all, over every core, in ticks (/proc/stat): busy share = Δbusy / Δtotal. */
export function machineCpu(): { busy: number; total: number } {
  const v = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** The share (0-1) of the machine's CPU time that was busy between two `machineCpu` readings. */
export function busyShare(
  from: { busy: number; total: number },
  to: { busy: number; total: number },
): number {
  return (to.busy - from.busy) / Math.max(1, to.total - from.total);
}

/**
 * The fields of /proc/<pid>/stat after the process's name (which may hold spaces and parentheses): state(0)
 * ppid(1) ... utime(11) stime(12) cutime(13) cstime(14). Throws when the process is gone.
 */
function statFields(pid: number | string): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime (+ the waited-for children's) of a process, in seconds; 0 when it is gone. */
export function procCpu(pid: number, withChildren = false): number {
  try {
    const f = statFields(pid);
    const own = Number(f[11]) + Number(f[12]);
    return (withChildren ? own + Number(f[13]) + Number(f[14]) : own) / TICKS;
  } catch {
    return 0;
  }
}

/** Children of `pid` (one level), from /proc. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (Number(statFields(d)[1]) === pid) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

/**
 * CPU seconds so far of a process tree: the root's own and reaped children's time plus its live children's
 * (PostgreSQL: the postmaster reaps its backends, so a backend that exits moves from one term to the other).
 */
export function treeCpu(root: number | undefined): number {
  if (!root) return NaN;
  let s = procCpu(root, true);
  for (const c of childrenOf(root)) s += procCpu(c, true);
  return s;
}

/**
 * The local process listening on the first broker's port (BENCH_KAFKA_BROKERS on this machine), from
 * /proc/net/tcp{,6} (the socket's inode) and /proc/<pid>/fd; undefined for a remote or unreadable broker.
 */
export function pidListeningOn(brokers: string): number | undefined {
  const [host, port] = (brokers.split(',')[0] ?? '').split(':');
  if (!port || !['127.0.0.1', 'localhost', '::1', '0.0.0.0'].includes(host ?? '')) return undefined;
  const hexPort = Number(port).toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!existsSync(table)) continue;
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address is f[1] (addr:PORT), st is f[3] ('0A' = LISTEN), inode is f[9]
      if (f[1]?.endsWith(`:${hexPort}`) && f[3] === '0A' && f[9]) inodes.add(`socket:[${f[9]}]`);
    }
  }
  if (inodes.size === 0) return undefined;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      for (const fd of readdirSync(`/proc/${d}/fd`))
        if (inodes.has(readlinkSync(`/proc/${d}/fd/${fd}`))) return Number(d);
    } catch {
      /* gone or not ours */
    }
  }
  return undefined;
}

/** The postmaster's pid of the PostgreSQL server at `url` when it runs on this machine (its backend's parent). */
export function pidOfPostgres(url: string): Promise<number | undefined> {
  const c = new pg.Client({ connectionString: url });
  return c
    .connect()
    .then(() => c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid'))
    .then((r) => Number(statFields(r.rows[0]!.pid)[1]))
    .catch(() => undefined)
    .finally(() => c.end().catch(() => undefined));
}
