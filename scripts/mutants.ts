/**
 * The guarantee mutants runner behind `scripts/mutants` (which starts PostgreSQL, and Kafka when a mutant
 * needs it, then runs this file): applies each mutant of scripts/mutants.list.ts to a scratch copy of the
 * work tree, runs the mutant's test files there, and reports it killed, SURVIVED or STALE with the time
 * taken. The work tree itself is never written to, so an interrupted run cannot leave it mutated.
 *
 *   node --import tsx scripts/mutants.ts [--list] [--no-baseline] [--timeout SECONDS] [--without FILE]...
 *                                        [--needs] [ID...]
 *
 * --without FILE leaves a test file out of every mutant's tests (which mutants does it alone kill?); --needs
 * prints the components the chosen mutants need besides PostgreSQL (for scripts/mutants).
 *
 * Exit status: 0 when every selected mutant was killed; 1 when one survived, is stale or could not be judged
 * (its tests fail without it, or ran no test); 2 on a usage error.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MUTANTS, selection, staleness, type Mutant, type Selection } from './mutants.list.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

interface Options {
  list: boolean;
  baseline: boolean;
  needs: boolean;
  timeoutMs: number;
  /** Test files left out of every mutant's tests: which mutants do they alone kill? */
  without: string[];
  ids: string[];
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = { list: false, baseline: true, needs: false, timeoutMs: 300_000, without: [], ids: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--list') o.list = true;
    else if (a === '--no-baseline') o.baseline = false;
    else if (a === '--needs') o.needs = true;
    else if (a === '--timeout') o.timeoutMs = Number(argv[++i]) * 1000;
    else if (a === '--without') o.without.push(argv[++i] ?? usage('--without needs a test file'));
    else if (a === '-h' || a === '--help') {
      console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]);
      process.exit(0);
    } else if (a.startsWith('-')) usage(`unknown option ${a}`);
    else o.ids.push(a);
  }
  if (!(o.timeoutMs > 0)) usage('--timeout needs a number of seconds');
  return o;
}

function usage(message: string): never {
  console.error(`mutants: ${message} (--help)`);
  process.exit(2);
}

/** One test file, optionally narrowed to the tests whose name matches `pattern`. */
type Verdict = 'killed' | 'SURVIVED' | 'STALE' | 'ERROR';

interface RunResult {
  ok: boolean;
  timedOut: boolean;
  passed: number;
  failed: number;
  /** The first failing test (innermost first, as TAP lists them). */
  firstFailure: string | undefined;
  output: string;
  ms: number;
}

let running: ChildProcess | undefined;
let scratch: string | undefined;

function cleanup() {
  if (running?.pid) {
    try {
      process.kill(-running.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  scratch = undefined;
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
  process.on(signal, () => {
    console.error(`\nmutants: ${signal}, stopping (the work tree was never modified)`);
    cleanup();
    process.exit(130);
  });
process.on('exit', cleanup);

/** A copy of the work tree as it is now (tracked and untracked files, not ignored ones), with node_modules linked. */
function makeScratch(): string {
  const dir = mkdtempSync(join(tmpdir(), 'taskflow-mutants-'));
  const listed = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  if (listed.status !== 0) throw new Error(`git ls-files failed: ${listed.stderr}`);
  for (const file of listed.stdout.split('\0')) {
    if (!file || !existsSync(join(ROOT, file))) continue; // deleted in the work tree
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    cpSync(join(ROOT, file), join(dir, file), { dereference: false });
  }
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  return dir;
}

function testEnv(m: Mutant | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, REQUIRE_POSTGRES: '1' };
  // Tests that can run on more components than the mutant needs would run there too: keep them to PostgreSQL.
  for (const k of ['REQUIRE_KAFKA', 'REQUIRE_DAPR', 'REQUIRE_DEPLOY_TOOLS']) delete env[k];
  if (!m?.needs?.includes('kafka')) delete env.TEST_KAFKA_BROKERS;
  return env;
}

function runTests(
  dir: string,
  sel: Selection,
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<RunResult> {
  const started = performance.now();
  const args = [
    '--expose-gc',
    '--import',
    'tsx',
    '--test',
    '--test-concurrency=1',
    '--test-force-exit',
    `--test-timeout=${timeoutMs}`,
    '--test-reporter=tap',
    ...(sel.pattern !== undefined ? [`--test-name-pattern=${sel.pattern}`] : []),
    sel.file,
  ];
  return new Promise((done) => {
    const child = spawn(process.execPath, args, {
      cwd: dir,
      env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    running = child;
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (output += b.toString()));
    let timedOut = false;
    // The runner's own timeout covers each test; this one covers a file that hangs outside a test.
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, timeoutMs + 30_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      running = undefined;
      const count = (what: string) =>
        [...output.matchAll(new RegExp(`^# ${what} (\\d+)$`, 'gm'))].reduce((s, x) => s + Number(x[1]), 0);
      const failure = /^\s*not ok \d+ - (.*)$/m.exec(output)?.[1]?.replace(/\s*#.*$/, '');
      done({
        ok: code === 0 && !timedOut,
        timedOut,
        passed: count('pass'),
        failed: count('fail') + count('cancelled'),
        firstFailure: failure,
        output,
        ms: performance.now() - started,
      });
    });
  });
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));
const tail = (text: string, lines = 40) => text.trimEnd().split('\n').slice(-lines).join('\n');

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const ids = new Set(MUTANTS.map((m) => m.id));
  if (ids.size !== MUTANTS.length) usage('two mutants share an id in scripts/mutants.list.ts');
  const unknown = opts.ids.filter((id) => !ids.has(id));
  if (unknown.length) usage(`no mutant named ${unknown.join(', ')} (--list)`);
  const chosen = (opts.ids.length ? MUTANTS.filter((m) => opts.ids.includes(m.id)) : MUTANTS).map((m) => ({
    ...m,
    tests: m.tests.filter((t) => !opts.without.includes(selection(t).file)),
  }));

  if (opts.needs) {
    // For scripts/mutants: the components the chosen mutants need besides PostgreSQL.
    console.log([...new Set(chosen.flatMap((m) => m.needs ?? []))].join(' '));
    return;
  }
  if (opts.list) {
    const lines = chosen.map(
      (m) =>
        `${pad(m.id, 40)} ${m.file}\n${' '.repeat(41)}breaks: ${m.breaks}\n${' '.repeat(41)}tests: ${m.tests.join(', ')}`,
    );
    process.stdout.write(`${lines.join('\n')}\n`);
    return;
  }
  if (!process.env.TEST_DATABASE_URL)
    usage('TEST_DATABASE_URL is not set (scripts/mutants starts PostgreSQL and sets it)');

  const t0 = performance.now();
  scratch = makeScratch();
  if (resolve(scratch) === ROOT) throw new Error('the scratch copy must not be the work tree');
  const dir = scratch;
  console.log(`mutants: ${chosen.length} mutant(s), scratch copy of ${ROOT} in ${dir}`);

  const verdicts = new Map<string, { verdict: Verdict; detail: string; ms: number }>();
  for (const m of chosen) {
    const why = staleness(m, dir);
    if (why) verdicts.set(m.id, { verdict: 'STALE', detail: why, ms: 0 });
  }

  // Baseline: a kill counts only if the killing selection passes without any mutant. Checked once per
  // selection, when it first kills (a survivor's selections passed with the mutant already).
  const baselines = new Map<string, RunResult>();
  const baseline = async (key: string, m: Mutant) => {
    if (!baselines.has(key))
      baselines.set(key, await runTests(dir, selection(key), testEnv(m), opts.timeoutMs));
    return baselines.get(key)!;
  };

  for (const m of chosen) {
    const stale = verdicts.get(m.id);
    if (stale) {
      console.log(`${pad('STALE', 9)} ${pad(m.id, 40)} ${stale.detail}`);
      continue;
    }
    const path = join(dir, m.file);
    const original = readFileSync(path, 'utf8');
    const started = performance.now();
    let verdict: Verdict = 'SURVIVED';
    let detail = `no test failed: ${m.tests.map((t) => t.replace(/^test\/integration\//, '')).join(', ')}`;
    let killer: string | undefined;
    writeFileSync(
      path,
      [{ find: m.find, replace: m.replace }, ...(m.also ?? [])].reduce(
        (text, e) => text.replace(e.find, () => e.replace),
        original,
      ),
    );
    try {
      for (const t of m.tests) {
        const r = await runTests(dir, selection(t), testEnv(m), opts.timeoutMs);
        if (!r.ok) {
          killer = t;
          verdict = 'killed';
          detail = `by ${t}: ${r.timedOut ? 'timed out' : (r.firstFailure ?? 'the run failed')}`;
          break;
        }
        if (r.passed === 0) {
          verdict = 'ERROR';
          detail = `${t} ran no test (does its pattern match a test name?)`;
          break;
        }
      }
    } finally {
      writeFileSync(path, original);
    }
    const ms = performance.now() - started;
    if (killer && opts.baseline) {
      const base = await baseline(killer, m);
      if (!base.ok || base.passed === 0) {
        verdict = 'ERROR';
        detail = `${killer} fails without the mutant too (${base.firstFailure ?? 'see below'}): not a kill`;
        console.log(tail(base.output));
      }
    }
    verdicts.set(m.id, { verdict, detail, ms });
    console.log(`${pad(verdict, 9)} ${pad(m.id, 40)} ${pad(secs(ms), 8)} ${detail}`);
  }

  const counts = new Map<Verdict, number>();
  for (const v of verdicts.values()) counts.set(v.verdict, (counts.get(v.verdict) ?? 0) + 1);
  const summary = (['killed', 'SURVIVED', 'STALE', 'ERROR'] as const)
    .filter((v) => counts.get(v))
    .map((v) => `${counts.get(v)} ${v}`)
    .join(', ');
  console.log(`mutants: ${chosen.length} mutant(s): ${summary} (${secs(performance.now() - t0)})`);
  cleanup();
  process.exitCode = (counts.get('killed') ?? 0) === chosen.length ? 0 : 1;
}

await main();
