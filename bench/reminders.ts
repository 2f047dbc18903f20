/**
 * `npm run bench:reminders`: how late the reminder scheduler fires when a large schedule falls due, how fast
 * it fires, and how much memory the process needs meanwhile.
 *
 * Setup: BENCH_REMINDERS (default 1,000,000) rows are bulk-inserted straight into the service's own table
 * `reminder_schedule` (migration 002_reminders.sql) with one INSERT ... SELECT FROM generate_series per
 * chunk, status `scheduled`, BENCH_USERS (default 10,000) users, remind_at spread evenly over
 * BENCH_WINDOW_SECONDS (default 100 s, so 1M reminders fall due at 10,000/s).
 *
 * Run: the real `reminders` target (createRemindersTarget, REMINDER_TICK_MS / BENCH_TICK_MS default 1000 as in
 * production, REMINDER_BATCH_SIZE default 500) plus the `relay` on the embedded bus, started with runTargets,
 * so every `reminder.triggered` is committed to the outbox by the scheduler and then published by the relay.
 *
 * Clock: the rows are written before the targets start, relative to a nominal instant; the runtime's clock is
 * the system clock plus a constant offset chosen when the targets are up so that the first reminder falls
 * due BENCH_LEAD_MS (default 2000) later. It runs at real speed: every lateness figure is real elapsed time.
 *
 * Figures:
 * - lateness at commit: from a reminder's due instant to the commit of the scheduler transaction that wrote
 *   its `reminder.triggered` (the Db handed to runTargets wraps `transaction`; the scheduler's afterClaim hook
 *   tags the transaction with its reminder ids; the reminder id encodes its index, hence its due instant).
 * - lateness at claim (reminder_schedule.triggered_at, the scheduler's "now" when it claimed the batch) and at
 *   publish (bus_messages.created_at, the commit that appended it to the embedded bus's log), both read with
 *   SQL after the run.
 * - firing throughput: overall (first to last commit) and the best and worst 5-s windows in between.
 * - where the time goes: every statement is timed by kind, and the scheduler's claim transactions as a whole.
 * - memory: process.memoryUsage().rss sampled every 250 ms (peak) and process.resourceUsage().maxRSS.
 *
 * Database: PostgreSQL from `scripts/postgres start --name bench-rem --fast` (stopped at the end if this run
 * started it; BENCH_KEEP_POSTGRES=1 keeps it) or BENCH_DATABASE_URL=postgres://...; a fresh database is
 * created and dropped. If PostgreSQL cannot start (or BENCH_SKIP_POSTGRES=1), PGlite in a temp dir with a
 * default of 100,000 reminders (said so in the output).
 * Env: BENCH_REMINDERS, BENCH_USERS, BENCH_WINDOW_SECONDS, BENCH_TICK_MS, REMINDER_BATCH_SIZE,
 * BENCH_LEAD_MS, BENCH_TIMEOUT_SECONDS (default 900: stop waiting and report what fired),
 * BENCH_STALL_SECONDS (default 30: stop when nothing fired for that long while reminders were due).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config.ts';
import type { Clock } from '../src/domain/clock.ts';
import { runTargets } from '../src/process.ts';
import { createRemindersTarget } from '../src/services/reminders/index.ts';
import { relayTarget } from '../src/services/relay/index.ts';
import { openDb, type Db, type Tx } from '../src/store/db.ts';
import { migrate } from '../src/store/migrate.ts';
import {
  TimedDb,
  intEnv,
  load1,
  loadNote,
  log,
  percentile,
  startService,
  v8FlagsNote,
  withFreshPgDb,
  type Service,
} from './lib.ts';

const USERS = intEnv('BENCH_USERS', 10_000);
const WINDOW_S = intEnv('BENCH_WINDOW_SECONDS', 100);
const TICK_MS = intEnv('BENCH_TICK_MS', intEnv('REMINDER_TICK_MS', 1000));
const BATCH = intEnv('REMINDER_BATCH_SIZE', 500);
const LEAD_MS = intEnv('BENCH_LEAD_MS', 2000, 0);
const TIMEOUT_MS = intEnv('BENCH_TIMEOUT_SECONDS', 900) * 1000;
const STALL_MS = intEnv('BENCH_STALL_SECONDS', 30) * 1000;
const SEED_CHUNK = 100_000;
const SECRET = 'bench-secret-bench-secret-bench-secret-0123';
const RUN_TAG = randomBytes(4).toString('hex');

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const mb = (bytes: number) => (bytes / 1024 / 1024).toFixed(0);
const sec = (ms: number) => (ms / 1000).toFixed(1);

/** Reminder i has id `<run>-0000-4000-8000-<i as 12 hex digits>`: the id alone gives its due instant. */
const indexOf = (id: string) => parseInt(id.slice(24), 16);

// ------------------------------------------------------------------------------------------------ seeding

async function seed(db: Db, n: number, base: number, spacingUs: number): Promise<number> {
  const started = performance.now();
  for (let from = 0; from < n; from += SEED_CHUNK) {
    const to = Math.min(n, from + SEED_CHUNK) - 1;
    await db.query(
      `INSERT INTO reminder_schedule (id, task_id, user_id, title, specs, due_at, planned_at, remind_at, status)
       SELECT ($1 || '-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
              ($1 || '-0000-4000-9000-' || lpad(to_hex(g), 12, '0'))::uuid,
              'bench-user-' || (g % $4),
              'Bench reminder #' || g,
              '["PT1H"]'::jsonb,
              r + interval '1 hour', r, r, 'scheduled'
         FROM generate_series($2::bigint, $3::bigint) g,
              LATERAL (SELECT $5::timestamptz + (g * $6::bigint) * interval '1 microsecond' AS r) t`,
      [RUN_TAG, from, to, USERS, new Date(base).toISOString(), spacingUs],
    );
    log(
      `seeded ${fmt(to + 1)} / ${fmt(n)} reminders (${fmt((to + 1) / ((performance.now() - started) / 1000))} rows/s, ${loadNote()})`,
    );
  }
  await db.exec('ANALYZE reminder_schedule');
  return (performance.now() - started) / 1000;
}

// ------------------------------------------------------------------------------------------------ run

/** Marks a transaction as a scheduler claim (set by the afterClaim hook inside it). */
interface TxTag {
  ids?: readonly string[];
  /** Time spent in this transaction's statements (ms). */
  sqlMs: number;
}

/**
 * The Db seam, passing everything through with each statement timed; a transaction tagged by afterClaim
 * (a scheduler claim) reports its commit instant and its duration.
 */
class CommitWatchDb extends TimedDb {
  readonly als = new AsyncLocalStorage<TxTag>();
  /** Scheduler claim transactions: count, total wall time, time in statements. */
  readonly claims = { count: 0, totalMs: 0, sqlMs: 0 };
  constructor(
    inner: Db,
    private readonly onCommit: (ids: readonly string[], at: number) => void,
  ) {
    super(inner);
  }
  protected override observe(_sql: string, _params: readonly unknown[] | undefined, ms: number) {
    const tag = this.als.getStore();
    if (tag) tag.sqlMs += ms;
  }
  override async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const tag: TxTag = { sqlMs: 0 };
    const t = performance.now();
    const result = await this.als.run(tag, () => super.transaction(fn));
    if (tag.ids) {
      this.onCommit(tag.ids, Date.now());
      this.claims.count++;
      this.claims.totalMs += performance.now() - t;
      this.claims.sqlMs += tag.sqlMs;
    }
    return result;
  }
}

interface Stats {
  p50: number;
  p99: number;
  max: number;
  n: number;
}

interface Result {
  database: string;
  reminders: number;
  users: number;
  windowS: number;
  tickMs: number;
  batch: number;
  seedSeconds: number;
  seedRate: number;
  fired: number;
  missed: number;
  published: number;
  /** Reminders whose `reminder.triggered` was committed more than once, and duplicate ids on the topic. */
  refired: number;
  duplicatesOnBus: number;
  commit: Stats;
  claim: Stats;
  publish: Stats;
  /** First commit to last commit. */
  fireSeconds: number;
  fireRate: number;
  bestWindowRate: number;
  worstBacklogWindowRate: number;
  /** Reminders not yet committed when the last one fell due. */
  backlogAtEnd: number;
  lastPublishAfterDueS: number;
  rssBaseline: number;
  rssPeak: number;
  maxRss: number;
  cpuSeconds: number;
  load: { start: number; end: number; peak: number };
  timedOut: boolean;
  /** Why the run was cut short because nothing fired any more ('' if it was not). */
  stalled: string;
  /** Per statement kind: count and total ms (the firing path's database time). */
  timings: Map<string, { count: number; totalMs: number }>;
  claims: { count: number; totalMs: number; sqlMs: number };
}

async function sqlStats(db: Db, sql: string, params: unknown[]): Promise<Stats> {
  const r = await db.query<{ n: string; p50: number | null; p99: number | null; max: number | null }>(
    `SELECT count(*)::text AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
            percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99, max(ms) AS max FROM (${sql}) x`,
    params,
  );
  const row = r.rows[0]!;
  return { n: Number(row.n), p50: Number(row.p50), p99: Number(row.p99), max: Number(row.max) };
}

async function runCase(database: string, inner: Db, n: number): Promise<Result> {
  await migrate(inner);
  const spacingMs = (WINDOW_S * 1000) / n;
  const spacingUs = Math.max(1, Math.round(spacingMs * 1000));
  const base = Date.now(); // nominal instant of reminder 0 (the clock is shifted onto it later)
  log(
    `${database}: seeding ${fmt(n)} reminders for ${fmt(USERS)} users, due over ${WINDOW_S}s ` +
      `(${fmt(n / WINDOW_S)}/s) ...`,
  );
  const seedSeconds = await seed(inner, n, base, spacingUs);
  const dueOf = (i: number) => base + (i * spacingUs) / 1000; // in the shifted clock's time

  // Lateness at commit per reminder (ms, NaN = not fired yet) and commits per second.
  const lateness = new Float64Array(n).fill(NaN);
  const perSecond = new Map<number, number>();
  let committed = 0;
  let refired = 0; // commits of a reminder that had already fired: must stay 0
  let firstCommit = 0;
  let lastCommit = 0;
  let shift = -365 * 24 * 3600 * 1000; // a year behind: nothing is due until the targets are up
  let t0Real = 0; // the real instant reminder 0 falls due (set once the targets are up)
  const clock: Clock = { now: () => new Date(Date.now() + shift) };
  const db = new CommitWatchDb(inner, (ids, at) => {
    const virtual = at + shift;
    for (const id of ids) {
      const i = indexOf(id);
      if (Number.isNaN(lateness[i]!)) committed++;
      else refired++;
      lateness[i] = virtual - dueOf(i);
    }
    firstCommit ||= at;
    lastCommit = at;
    const s = Math.floor((at - t0Real) / 1000);
    perSecond.set(s, (perSecond.get(s) ?? 0) + ids.length);
  });

  const config = loadConfig({
    DATABASE_URL: inner.url,
    JWT_SECRET: SECRET,
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
  });
  const target = createRemindersTarget({
    tickMs: TICK_MS,
    batchSize: BATCH,
    afterClaim: (ids) => {
      const tag = db.als.getStore();
      if (tag) tag.ids = ids;
    },
  });

  global.gc?.();
  const rssBaseline = process.memoryUsage().rss;
  let rssPeak = rssBaseline;
  const sampler = setInterval(() => {
    rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  }, 250);
  const loadStart = load1();
  let loadPeak = loadStart;
  const cpu0 = process.cpuUsage();

  const proc = await runTargets(config, [target, relayTarget], { db, clock, listen: false });
  // Shift the clock so that reminder 0 is due LEAD_MS from now; t0Real is that instant on the real clock.
  t0Real = Date.now() + LEAD_MS;
  shift = base - t0Real;
  const lastDueReal = t0Real + dueOf(n - 1) - base;
  log(
    `${database}: reminders + relay up (embedded bus); first reminder due in ${LEAD_MS} ms, last in ` +
      `${sec(lastDueReal - Date.now())}s; tick ${TICK_MS} ms, batch ${BATCH}`,
  );

  let backlogAtEnd = -1;
  let published = 0;
  let lastPublishAt = 0;
  let timedOut = false;
  let stalled = '';
  let lastSeen = { at: Date.now(), committed: 0 };
  const started = Date.now();
  let lastProgress = { at: started, committed: 0 };
  try {
    for (;;) {
      await new Promise((r) => setTimeout(r, 1000));
      const now = Date.now();
      loadPeak = Math.max(loadPeak, load1());
      if (backlogAtEnd < 0 && now >= lastDueReal) backlogAtEnd = n - committed;
      const pending = await inner.query<{ n: string }>(
        'SELECT count(*)::text AS n FROM outbox WHERE published_at IS NULL',
      );
      const unpublished = Number(pending.rows[0]!.n);
      if (now - lastProgress.at >= 5000 || committed >= n) {
        const due = Math.min(n, Math.max(0, Math.floor((now - t0Real) / spacingMs) + 1));
        log(
          `${database}: due ${fmt(due)}, fired ${fmt(committed)} / ${fmt(n)} ` +
            `(${fmt((committed - lastProgress.committed) / ((now - lastProgress.at) / 1000))}/s), ` +
            `outbox unpublished ${fmt(unpublished)}, rss ${mb(process.memoryUsage().rss)} MB, ${loadNote()}`,
        );
        lastProgress = { at: now, committed };
      }
      if (committed >= n && unpublished === 0) {
        lastPublishAt = now;
        break;
      }
      if (committed !== lastSeen.committed) lastSeen = { at: now, committed };
      const dueNow = Math.min(n, Math.max(0, Math.floor((now - t0Real) / spacingMs) + 1));
      if (dueNow > committed && now - lastSeen.at > STALL_MS) {
        stalled =
          `no reminder fired for ${sec(now - lastSeen.at)} s while ${fmt(dueNow - committed)} were due ` +
          `(${fmt(committed)} of ${fmt(n)} fired): the scheduler loop is stuck`;
        log(`${database}: STALLED: ${stalled}; reporting what fired so far`);
        break;
      }
      if (now - started > TIMEOUT_MS) {
        timedOut = true;
        log(`${database}: TIMEOUT after ${sec(now - started)}s: reporting what fired so far`);
        break;
      }
    }
  } finally {
    clearInterval(sampler);
    await proc.stop();
  }
  const cpu = process.cpuUsage(cpu0);
  const maxRss = process.resourceUsage().maxRSS * 1024;
  const loadEnd = load1();
  if (backlogAtEnd < 0) backlogAtEnd = n - committed;

  // Lateness at commit (in memory) and at claim / publish (SQL).
  const done = Float64Array.from(lateness.filter((x) => !Number.isNaN(x))).sort();
  const commit: Stats = {
    n: done.length,
    p50: percentile(done, 50),
    p99: percentile(done, 99),
    max: done.length ? done[done.length - 1]! : NaN,
  };
  const claim = await sqlStats(
    inner,
    `SELECT extract(epoch FROM triggered_at - remind_at) * 1000 AS ms FROM reminder_schedule
      WHERE triggered_at IS NOT NULL`,
    [],
  );
  const publish = await sqlStats(
    inner,
    `SELECT extract(epoch FROM created_at - (value->'data'->>'remind_at')::timestamptz) * 1000 + $1::float8 AS ms
       FROM bus_messages WHERE topic = 'reminders' AND value->>'type' IN ('reminder.triggered', 'reminder.missed')`,
    [shift],
  );
  const counts = await inner.query<{ status: string; n: string }>(
    'SELECT status, count(*)::text AS n FROM reminder_schedule GROUP BY status',
  );
  const byStatus = Object.fromEntries(counts.rows.map((r) => [r.status, Number(r.n)]));
  const onBus = await inner.query<{ n: string; distinct_ids: string }>(
    `SELECT count(*)::text AS n, count(DISTINCT value->'data'->>'reminder_id')::text AS distinct_ids
       FROM bus_messages WHERE topic = 'reminders'`,
  );
  published = Number(onBus.rows[0]!.n);
  const duplicatesOnBus = published - Number(onBus.rows[0]!.distinct_ids);

  // Throughput: 5-s windows from the first commit to the last.
  const seconds = [...perSecond.keys()].sort((a, b) => a - b);
  const windows: number[] = [];
  if (seconds.length) {
    const first = seconds[0]!;
    const last = seconds[seconds.length - 1]!;
    for (let s = first; s + 5 <= last; s += 5) {
      let sum = 0;
      for (let k = s; k < s + 5; k++) sum += perSecond.get(k) ?? 0;
      windows.push(sum / 5);
    }
  }
  const fireSeconds = (lastCommit - firstCommit) / 1000;
  return {
    database,
    reminders: n,
    users: USERS,
    windowS: WINDOW_S,
    tickMs: TICK_MS,
    batch: BATCH,
    seedSeconds,
    seedRate: n / seedSeconds,
    fired: byStatus.triggered ?? 0,
    missed: byStatus.missed ?? 0,
    published,
    refired,
    duplicatesOnBus,
    commit,
    claim,
    publish,
    fireSeconds,
    fireRate: fireSeconds > 0 ? committed / fireSeconds : NaN,
    bestWindowRate: windows.length ? Math.max(...windows) : NaN,
    worstBacklogWindowRate: windows.length ? Math.min(...windows) : NaN,
    backlogAtEnd,
    lastPublishAfterDueS: lastPublishAt ? (lastPublishAt - lastDueReal) / 1000 : NaN,
    rssBaseline,
    rssPeak,
    maxRss,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    load: { start: loadStart, end: loadEnd, peak: loadPeak },
    timedOut,
    stalled,
    timings: db.timings.entries,
    claims: db.claims,
  };
}

// ------------------------------------------------------------------------------------------------ main

const ms = (x: number) => (Number.isFinite(x) ? fmt(x) : 'n/a');

function report(r: Result, note: string): string {
  const lines = [
    `| database | reminders | due rate /s | lateness | p50 ms | p99 ms | max ms | n |`,
    '|---|---:|---:|---|---:|---:|---:|---:|',
  ];
  const row = (what: string, s: Stats) =>
    lines.push(
      `| ${r.database} | ${fmt(r.reminders)} | ${fmt(r.reminders / r.windowS)} | ${what} | ${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.max)} | ${fmt(s.n)} |`,
    );
  row('at claim (scheduler "now")', r.claim);
  row('**at commit of reminder.triggered**', r.commit);
  row('on the bus (appended to the embedded log)', r.publish);
  const t = [
    '',
    '| figure | value |',
    '|---|---:|',
    `| seeding (INSERT ... generate_series) | ${sec(r.seedSeconds * 1000)} s (${fmt(r.seedRate)} rows/s) |`,
    `| firing throughput, first to last commit | ${fmt(r.fireRate)} /s over ${sec(r.fireSeconds * 1000)} s |`,
    `| best / worst 5-s window (first to last commit) | ${fmt(r.bestWindowRate)} / ${fmt(r.worstBacklogWindowRate)} /s |`,
    `| not yet fired when the last reminder fell due | ${fmt(r.backlogAtEnd)} |`,
    `| last event published, after the last due instant | ${Number.isFinite(r.lastPublishAfterDueS) ? `${r.lastPublishAfterDueS.toFixed(1)} s` : 'n/a'} |`,
    `| triggered / missed / on the bus (topic reminders) | ${fmt(r.fired)} / ${fmt(r.missed)} / ${fmt(r.published)} |`,
    `| fired twice: committed again / duplicate reminder ids on the bus | ${fmt(r.refired)} / ${fmt(r.duplicatesOnBus)} |`,
    `| RSS before start / peak sampled / maxRSS | ${mb(r.rssBaseline)} / ${mb(r.rssPeak)} / ${mb(r.maxRss)} MB |`,
    `| node CPU (user+sys) during the run | ${r.cpuSeconds.toFixed(0)} s |`,
    `| load average (1 min) start / peak / end | ${r.load.start.toFixed(2)} / ${r.load.peak.toFixed(2)} / ${r.load.end.toFixed(2)} |`,
  ];
  const c = r.claims;
  const b = [
    '',
    `Where the time goes (${fmt(c.count)} scheduler claim transactions of up to ${r.batch} reminders: ` +
      `${(c.totalMs / Math.max(1, c.count)).toFixed(1)} ms each on average, ${(c.sqlMs / Math.max(1, c.count)).toFixed(1)} ms of it ` +
      `in statements, the rest BEGIN/COMMIT, pool wait and JavaScript (event building, JSON Schema validation)):`,
    '',
    '| statement | count | total s | avg ms |',
    '|---|---:|---:|---:|',
    ...[...r.timings.entries()]
      .sort((x, y) => y[1].totalMs - x[1].totalMs)
      .map(
        ([k, v]) =>
          `| ${k} | ${fmt(v.count)} | ${(v.totalMs / 1000).toFixed(1)} | ${(v.totalMs / v.count).toFixed(3)} |`,
      ),
  ];
  return [
    ...lines,
    ...t,
    ...b,
    ...(note ? ['', note] : []),
    ...(r.timedOut ? ['', '**TIMED OUT**: partial figures.'] : []),
    ...(r.stalled ? ['', `**STALLED**: ${r.stalled}; partial figures.`] : []),
  ].join('\n');
}

async function main() {
  const startedAt = Date.now();
  const cpu = cpus();
  log(
    `Node ${process.version}, ${cpu.length} CPUs (${cpu[0]?.model.trim() ?? 'unknown'}), ${loadNote()}; ${v8FlagsNote()}`,
  );
  let server: Service | null = null;
  let note = '';
  let result: Result;
  if (process.env.BENCH_DATABASE_URL)
    server = { value: process.env.BENCH_DATABASE_URL, stop: () => undefined };
  else if (process.env.BENCH_SKIP_POSTGRES !== '1')
    server = startService({
      script: 'postgres',
      name: 'bench-rem',
      args: ['--fast', '--ignore-env'],
      envKey: 'DATABASE_URL',
      keep: process.env.BENCH_KEEP_POSTGRES === '1',
    });
  if (server) {
    const n = intEnv('BENCH_REMINDERS', 1_000_000);
    try {
      result = await withFreshPgDb(server.value, 'tf_bench_rem', (db) => runCase('PostgreSQL', db, n));
    } finally {
      server.stop();
    }
  } else {
    const n = intEnv('BENCH_REMINDERS', 100_000);
    note =
      'PostgreSQL could not be started (or BENCH_SKIP_POSTGRES=1): PGlite (in-process WASM) was used with ' +
      `${fmt(n)} reminders instead of 1,000,000; its figures are not comparable with PostgreSQL's.`;
    log(note);
    const dir = mkdtempSync(join(tmpdir(), 'taskflow-bench-rem-'));
    try {
      const db = await openDb(dir);
      try {
        result = await runCase('PGlite', db, n);
      } finally {
        await db.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  console.log(
    `\nReminders: ${fmt(result.reminders)} due over ${result.windowS}s, ${fmt(result.users)} users — ` +
      `Node ${process.version}, ${cpu.length} CPUs, ${new Date().toISOString().slice(0, 10)}, ` +
      `tick ${result.tickMs} ms, batch ${result.batch}, reminders + relay targets, embedded bus; ${v8FlagsNote()}\n`,
  );
  console.log(report(result, note));
  log(`done in ${((Date.now() - startedAt) / 1000).toFixed(0)}s`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
