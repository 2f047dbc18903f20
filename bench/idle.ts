/**
 * `npm run bench:idle`: what the whole system costs while nobody uses it. Runs every target in this process
 * (`taskflow up`, embedded bus) with no traffic and reports, after BENCH_WARMUP_SECONDS (default 5) of
 * warm-up, over BENCH_SECONDS (default 20): the process's CPU time as a share of one core, its RSS, and the
 * SQL statements per second by kind (the background loops: bus consumers, group heartbeats, relay, reminder
 * scheduler, notification delivery). Every idle statement is CPU on a laptop running `npm start` and load on
 * a shared PostgreSQL.
 *
 * Modes (BENCH_MODES, default `pglite,postgres`): PGlite in a temp dir (what `npm start` uses); PostgreSQL
 * from `scripts/postgres start --name bench-idle --fast` (or BENCH_DATABASE_URL), a fresh database per run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config.ts';
import { runTargets } from '../src/process.ts';
import { MANIFESTS, TARGETS } from '../src/services/index.ts';
import { openDb, type Db } from '../src/store/db.ts';
import { TimedDb, intEnv, loadNote, log, startService, withFreshPgDb, type Service } from './lib.ts';

const WARMUP_SECONDS = intEnv('BENCH_WARMUP_SECONDS', 5);
const SECONDS = intEnv('BENCH_SECONDS', 20);
const MODES = (process.env.BENCH_MODES ?? 'pglite,postgres').split(',').map((s) => s.trim());

/** Counts statements by their first words (the idle loops are few, so the text names them well enough). */
class CountingDb extends TimedDb {
  readonly counts = new Map<string, number>();
  protected override observe(sql: string): void {
    const label = sql.replace(/\s+/g, ' ').trim().slice(0, 90);
    this.counts.set(label, (this.counts.get(label) ?? 0) + 1);
  }
}

async function measure(label: string, db: Db): Promise<void> {
  const counted = new CountingDb(db);
  const config = loadConfig({
    DATABASE_URL: db.url,
    JWT_SECRET: 'bench-idle-secret-0123456789abcdef',
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    BUS: 'embedded',
  });
  const proc = await runTargets(config, TARGETS, { db: counted, catalog: MANIFESTS });
  try {
    log(`${label}: all ${TARGETS.length} targets up; warming up ${WARMUP_SECONDS} s`);
    await new Promise((r) => setTimeout(r, WARMUP_SECONDS * 1000));
    counted.counts.clear();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    let peakRss = 0;
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 250);
    log(`${label}: measuring ${SECONDS} s of idle`);
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    clearInterval(sampler);
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const total = [...counted.counts.values()].reduce((a, b) => a + b, 0);
    console.log(`\n## ${label}, idle for ${seconds.toFixed(1)} s (${loadNote()})`);
    console.log(`CPU: ${(((cpu.user + cpu.system) / 1e6 / seconds) * 100).toFixed(1)} % of one core`);
    console.log(`peak RSS: ${(peakRss / 2 ** 20).toFixed(0)} MB`);
    console.log(`SQL statements: ${(total / seconds).toFixed(1)}/s`);
    const rows = [...counted.counts.entries()].sort((a, b) => b[1] - a[1]);
    for (const [sql, n] of rows) console.log(`  ${(n / seconds).toFixed(1).padStart(7)}/s  ${sql}`);
  } finally {
    await proc.stop();
  }
}

const services: Service[] = [];
try {
  for (const mode of MODES) {
    if (mode === 'pglite') {
      const dir = mkdtempSync(join(tmpdir(), 'taskflow-bench-idle-'));
      const db = await openDb(dir);
      try {
        await measure('PGlite (npm start)', db);
      } finally {
        await db.close();
        rmSync(dir, { recursive: true, force: true });
      }
    } else if (mode === 'postgres') {
      let url = process.env.BENCH_DATABASE_URL;
      if (!url) {
        const s = startService({
          script: 'postgres',
          name: 'bench-idle',
          args: ['--fast', '--ignore-env'],
          envKey: 'DATABASE_URL',
          keep: process.env.BENCH_KEEP_POSTGRES === '1',
        });
        if (!s) continue;
        services.push(s);
        url = s.value;
      }
      await withFreshPgDb(url, 'tf_bench_idle', (db) => measure('PostgreSQL', db));
    } else throw new Error(`unknown BENCH_MODES entry ${mode} (pglite, postgres)`);
  }
} finally {
  for (const s of services) s.stop();
}
