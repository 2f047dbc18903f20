// Compiles src/ (TypeScript) to dist/ (JavaScript, one file per module, source maps beside them) with esbuild,
// and copies the SQL migrations. What users run is always dist/: `bin/taskflow.js` calls `ensureBuilt()` in a
// checkout, which rebuilds only when a file under src/ changed since the last build (a stat of each file, a few
// milliseconds), so `npm start` after an edit runs the edit. Type checking is separate (`npm run typecheck`):
// esbuild only strips types, in about 0.3 s for the whole tree where tsc takes 10-15 s.
//
//   node scripts/build.mjs          build when stale (prints what it did)
//   node scripts/build.mjs --force  build even when dist/ is current
import { createHash } from 'node:crypto';
import {
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SRC = join(ROOT, 'src');
const DIST = join(ROOT, 'dist');
const STAMP = join(DIST, '.build-stamp');
const LOCK = join(ROOT, '.dist-build.lock');
const LOCK_STALE_MS = 60_000;

function filesUnder(dir) {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath ?? e.path, e.name))
    .sort();
}

/**
 * What the build depends on: the path, size and mtime of every source file, of this script and of
 * package-lock.json (which pins the compiler's version).
 */
function sourceSignature() {
  const hash = createHash('sha256');
  for (const file of [...filesUnder(SRC), fileURLToPath(import.meta.url), join(ROOT, 'package-lock.json')]) {
    const s = statSync(file, { throwIfNoEntry: false }); // no lock file outside a checkout
    if (s) hash.update(`${relative(ROOT, file)}\0${s.size}\0${s.mtimeMs}\n`);
  }
  return hash.digest('hex');
}

const isCurrent = (signature) => existsSync(STAMP) && readFileSync(STAMP, 'utf8') === signature;

/** esbuild transpiles each module on its own; relative `.ts` imports become `.js`, packages stay imports. */
const keepImports = {
  name: 'keep-imports',
  setup(build) {
    build.onResolve({ filter: /.*/ }, (args) => {
      if (args.kind === 'entry-point') return undefined;
      const isRelative = args.path.startsWith('.');
      return { path: isRelative ? args.path.replace(/\.ts$/, '.js') : args.path, external: true };
    });
  },
};

async function compile(outdir) {
  const { build } = await import('esbuild');
  const entryPoints = filesUnder(SRC).filter((f) => f.endsWith('.ts'));
  await build({
    entryPoints,
    outdir,
    outbase: SRC,
    bundle: true, // with every import external (above): one output file per module, imports rewritten
    plugins: [keepImports],
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: 'linked',
    logLevel: 'warning',
  });
  cpSync(join(SRC, 'store', 'migrations'), join(outdir, 'store', 'migrations'), { recursive: true });
  // A target's own tables (src/store/migrate.ts migrationDirs).
  for (const target of readdirSync(join(SRC, 'services'))) {
    const own = join(SRC, 'services', target, 'migrations');
    if (existsSync(own)) cpSync(own, join(outdir, 'services', target, 'migrations'), { recursive: true });
  }
}

/** One build at a time per checkout (test files start the CLI in parallel): an exclusive lock file. */
async function withLock(fn) {
  for (;;) {
    try {
      closeSync(openSync(LOCK, 'wx'));
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      const age = Date.now() - (statSync(LOCK, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > LOCK_STALE_MS) rmSync(LOCK, { force: true });
      else await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(LOCK, { force: true });
  }
}

/**
 * Builds dist/ when src/ changed since the last build. The new tree is written beside dist/ and renamed into
 * place, so a process starting meanwhile sees the old tree or the new one, never half of one.
 * Returns whether it built.
 */
export async function ensureBuilt({ force = false, log = () => {} } = {}) {
  if (!force && isCurrent(sourceSignature())) return false;
  return withLock(async () => {
    const signature = sourceSignature();
    if (!force && isCurrent(signature)) return false; // built by another process while we waited
    const started = performance.now();
    const next = `${DIST}.next-${process.pid}`;
    rmSync(next, { recursive: true, force: true });
    mkdirSync(next, { recursive: true });
    await compile(next);
    writeFileSync(join(next, '.build-stamp'), signature);
    const old = `${DIST}.old-${process.pid}`;
    if (existsSync(DIST)) renameSync(DIST, old);
    renameSync(next, DIST);
    rmSync(old, { recursive: true, force: true });
    log(`compiled src/ to dist/ in ${Math.round(performance.now() - started)} ms`);
    return true;
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const built = await ensureBuilt({
    force: process.argv.includes('--force'),
    log: (line) => console.error(`[build] ${line}`),
  });
  if (!built) console.error('[build] dist/ is current');
}
