/**
 * `npm run bench:startup`: what starting Taskflow costs a user, on the embedded default.
 *
 * For each checkout of BENCH_SERVERS (default `current=.`; e.g. `before=../old,after=.`), alternating run by
 * run so ratios come from the same minutes of a shared machine (BENCH_SERVER_ENV_<label> and
 * BENCH_SERVER_NODE_<label> give a label its own settings and Node binary, as in bench:e2e):
 * - ready, fresh: `node bin/taskflow.js up` (with the Node options of the checkout's `npm start`) on a new data
 *   directory until the first 200 on `/readyz`;
 * - ready, warm: the same on the data directory of an earlier run (migrations applied);
 * - idle RSS (after BENCH_IDLE_SECONDS, default 5) and peak RSS during start (VmHWM), summed over the process
 *   and its children (a TypeScript loader's esbuild service counts);
 * - `taskflow --help`, `taskflow token --user u` (no database) and `taskflow lag` (opens the database): time
 *   to exit and peak RSS.
 * Medians of BENCH_RUNS (default 5) runs. A build of dist/ (bin/taskflow.js does it when src/ changed) happens
 * before the first measured run.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchServers, intEnv, loadNote, log, median, startNodeOptions, type BenchServer } from './lib.ts';

const RUNS = intEnv('BENCH_RUNS', 5);
const IDLE_SECONDS = intEnv('BENCH_IDLE_SECONDS', 5, 0);
const SERVERS = benchServers();
const ENV = {
  ...process.env,
  LOG_LEVEL: 'warn',
  HOST: '127.0.0.1',
  JWT_SECRET: 'bench-startup-secret-0123456789abcdef',
};

/** Resident set of a process and its descendants, in MB: current (VmRSS) or peak (VmHWM). */
function treeRss(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  let kb = 0;
  const visit = (p: number) => {
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      kb += Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
      for (const task of readdirSync(`/proc/${p}/task`))
        for (const child of readFileSync(`/proc/${p}/task/${task}/children`, 'utf8').split(' '))
          if (child.trim()) visit(Number(child));
    } catch {
      /* exited */
    }
  };
  visit(pid);
  return kb / 1024;
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });

interface UpRun {
  readyMs: number;
  idleMb: number;
  peakMb: number;
}

/** Starts `taskflow up` on `dataDir`, waits for /readyz, samples memory, stops it (SIGTERM). */
async function up(server: BenchServer, dataDir: string): Promise<UpRun> {
  const { root } = server;
  const port = await freePort();
  const started = performance.now();
  const child = spawn(server.node, [...startNodeOptions(root), join(root, 'bin', 'taskflow.js'), 'up'], {
    cwd: root,
    env: { ...ENV, ...server.env, PORT: String(port), DATABASE_URL: dataDir },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  let peakMb = 0;
  const sampler = setInterval(() => (peakMb = Math.max(peakMb, treeRss(child.pid!, 'VmHWM'))), 20);
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`taskflow up exited ${child.exitCode}: ${stderr}`);
      const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (performance.now() - started > 120_000) throw new Error(`not ready in 120 s: ${stderr}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    const readyMs = performance.now() - started;
    peakMb = Math.max(peakMb, treeRss(child.pid!, 'VmHWM'));
    await new Promise((r) => setTimeout(r, IDLE_SECONDS * 1000));
    const idleMb = treeRss(child.pid!, 'VmRSS');
    return { readyMs, idleMb, peakMb: Math.max(peakMb, treeRss(child.pid!, 'VmHWM')) };
  } finally {
    clearInterval(sampler);
    child.kill('SIGTERM');
    await exited;
  }
}

/** Runs a CLI command to its end: wall time and peak RSS (GNU time's %M covers the process only: /proc). */
async function command(
  server: BenchServer,
  args: string[],
  dataDir: string,
): Promise<{ ms: number; mb: number }> {
  const { root } = server;
  const started = performance.now();
  const child = spawn(server.node, [...startNodeOptions(root), join(root, 'bin', 'taskflow.js'), ...args], {
    cwd: root,
    env: { ...ENV, ...server.env, DATABASE_URL: dataDir },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let mb = 0;
  const sampler = setInterval(() => (mb = Math.max(mb, treeRss(child.pid!, 'VmHWM'))), 5);
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  const ms = performance.now() - started;
  clearInterval(sampler);
  if (code !== 0) throw new Error(`taskflow ${args.join(' ')} exited ${code}: ${stderr}`);
  return { ms, mb };
}

const COMMANDS: { label: string; args: string[] }[] = [
  { label: '--help', args: ['--help'] },
  { label: 'token', args: ['token', '--user', 'bench'] },
  { label: 'lag', args: ['lag'] },
];

async function main() {
  log(
    `Node ${process.version}, ${cpus().length} CPUs, servers ${SERVERS.map((s) => s.label).join(', ')}, ` +
      `${RUNS} runs each, ${loadNote()}`,
  );
  const scratch = mkdtempSync(join(tmpdir(), 'taskflow-bench-startup-'));
  const results = new Map<string, Map<string, number[]>>();
  const add = (server: string, metric: string, v: number) => {
    const m = results.get(server) ?? new Map<string, number[]>();
    m.set(metric, [...(m.get(metric) ?? []), v]);
    results.set(server, m);
  };
  const loads: number[] = [];
  try {
    // Outside the figures: a build of dist/ when src/ changed, and PGlite's cached cluster image.
    for (const s of SERVERS) {
      spawnSync(s.node, [join(s.root, 'bin', 'taskflow.js'), '--help'], { cwd: s.root });
      await up(s, join(scratch, `${s.label}-warm`));
    }
    for (let run = 1; run <= RUNS; run++)
      for (const s of SERVERS) {
        const fresh = await up(s, join(scratch, `${s.label}-fresh-${run}`));
        rmSync(join(scratch, `${s.label}-fresh-${run}`), { recursive: true, force: true });
        const warm = await up(s, join(scratch, `${s.label}-warm`));
        add(s.label, 'ready fresh ms', fresh.readyMs);
        add(s.label, 'ready warm ms', warm.readyMs);
        add(s.label, 'idle RSS MB', warm.idleMb);
        add(s.label, 'peak RSS MB (fresh)', fresh.peakMb);
        add(s.label, 'peak RSS MB (warm)', warm.peakMb);
        for (const c of COMMANDS) {
          const r = await command(s, c.args, join(scratch, `${s.label}-warm`));
          add(s.label, `${c.label} ms`, r.ms);
          add(s.label, `${c.label} MB`, r.mb);
        }
        loads.push(Number(loadNote().split(' ')[2]!.replace(',', '')));
        log(
          `run ${run} ${s.label}: ready fresh ${fresh.readyMs.toFixed(0)} ms, warm ${warm.readyMs.toFixed(0)} ms, ` +
            `idle ${warm.idleMb.toFixed(0)} MB (${loadNote()})`,
        );
      }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const metrics = [...results.values().next().value!.keys()];
  const labels = SERVERS.map((s) => s.label);
  const ratio = labels.length === 2;
  console.log(
    `\nStart-up of \`taskflow up\` (embedded PGlite) and CLI commands — Node ${process.version}, ${cpus().length} CPUs, ` +
      `${new Date().toISOString().slice(0, 10)}, medians of ${RUNS} runs, 1-min load average ${Math.min(...loads).toFixed(2)}-${Math.max(...loads).toFixed(2)}\n`,
  );
  console.log(`| | ${labels.join(' | ')}${ratio ? ` | ${labels[1]} / ${labels[0]}` : ''} |`);
  console.log(`|---|${labels.map(() => '---:').join('|')}${ratio ? '|---:' : ''}|`);
  for (const metric of metrics) {
    const meds = labels.map((l) => median(results.get(l)!.get(metric)!));
    const cells = meds.map((v) => v.toFixed(0));
    console.log(
      `| ${metric} | ${cells.join(' | ')}${ratio ? ` | ${(meds[1]! / meds[0]!).toFixed(2)}x` : ''} |`,
    );
  }
}

await main();
