/**
 * Helpers shared by the benchmarks: the local services of scripts/postgres and scripts/kafka (started under
 * a bench-specific instance name and stopped again only if this run started them), throw-away PostgreSQL
 * databases, a per-label timer and the machine-load note that goes next to every figure.
 */
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
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
