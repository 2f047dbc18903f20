/**
 * Opening a PGlite database: `memory://` or a directory, a new one made from a cached fresh cluster image.
 * Used on the thread that owns the database (this one, or the worker of `pglite-thread.ts`).
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import parsePostgresDate from 'postgres-date';
import { PGlite } from '@electric-sql/pglite';
import { LOCK_FILE, lockDataDirectory } from './data-dir-lock.ts';

/**
 * Timestamps as node-postgres reads them (postgres-date): PGlite's own parser hands `0050-06-15 ...` to
 * `new Date()`, which reads years 0-99 as 1900-1999, so a due date in year 50 came back as 1950.
 */
const PGLITE_PARSERS = { 1114: parsePostgresDate, 1184: parsePostgresDate };

/**
 * PostgreSQL's buffer cache inside the WebAssembly heap. The default, 128 MB, is touched at start-up: it made
 * the embedded default's idle RSS about 110 MB larger and its start about 0.3 s slower (measured with
 * `taskflow up`, docs/benchmarks.md). Reads that miss it are served by the operating system's page cache.
 */
const SHARED_BUFFERS = '16MB';

/** PGlite's own start parameters (its `defaultStartParams`) with the buffer cache above. */
const startParams = () => [...PGlite.defaultStartParams, '-c', `shared_buffers=${SHARED_BUFFERS}`];

/** `memory://` (or empty) for a database in memory, else the directory's absolute path. */
function pgliteLocation(url: string): string {
  return url === 'memory://' || url === '' ? 'memory://' : resolve(url.replace(/^file:\/\//, ''));
}

/**
 * What a new database is made from: a cluster that `prepare` brought to the state `key` names (the schema of
 * every migration), so that a first start loads it instead of running the migrations (1-2 s of CPU).
 */
export interface ClusterSeed {
  key: string;
  prepare(pglite: PGlite): Promise<void>;
}

/**
 * Opens the database at `location` (`memory://` or the directory's absolute path); a directory is locked for
 * this process (data-dir-lock.ts) until `unlock`, called after the instance is closed. A new database is made
 * from the image of `seed` (or of a fresh cluster).
 */
export async function openPGlite(
  url: string,
  seed?: ClusterSeed,
): Promise<{ pglite: PGlite; location: string; unlock: () => void }> {
  const location = pgliteLocation(url);
  if (location === 'memory://')
    return {
      pglite: await PGlite.create({
        loadDataDir: await clusterImage(seed),
        parsers: PGLITE_PARSERS,
        startParams: startParams(),
      }),
      location,
      unlock: () => undefined,
    };
  mkdirSync(location, { recursive: true });
  const lock = lockDataDirectory(location);
  try {
    const empty = readdirSync(location).every((f) => f === LOCK_FILE);
    const pglite = await PGlite.create(location, {
      parsers: PGLITE_PARSERS,
      startParams: startParams(),
      ...(empty ? { loadDataDir: await clusterImage(seed) } : {}),
    });
    return { pglite, location, unlock: () => lock.release() };
  } catch (err) {
    lock.release();
    throw err;
  }
}

const clusterImages = new Map<string, Promise<Blob>>();

/**
 * A cluster image (tarball): freshly initialised, then brought to `seed.key` by `seed.prepare`. initdb inside
 * WASM costs seconds of CPU and the migrations 1-2 s more; loading the image costs about half a second, so new
 * databases (tests, `memory://`, a first start) are made from it. It is cached per process and on disk per
 * PGlite version and seed key (the temporary directory; written whole, then renamed into place).
 */
function clusterImage(seed?: ClusterSeed): Promise<Blob> {
  const entry = createRequire(import.meta.url).resolve('@electric-sql/pglite'); // <pkg>/dist/index.cjs
  const pkg = JSON.parse(readFileSync(join(dirname(dirname(entry)), 'package.json'), 'utf8')) as {
    version: string;
  };
  const name = `taskflow-pglite-${pkg.version}${seed ? `-${seed.key}` : ''}-cluster.tar`;
  let image = clusterImages.get(name);
  if (!image) {
    image = (async () => {
      const file = join(tmpdir(), name);
      if (existsSync(file)) return new Blob([readFileSync(file)]);
      const pglite = await PGlite.create({ startParams: startParams() });
      await seed?.prepare(pglite);
      const dump = await pglite.dumpDataDir('none');
      await pglite.close();
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, Buffer.from(await dump.arrayBuffer()));
      renameSync(tmp, file);
      return dump;
    })();
    clusterImages.set(name, image);
  }
  return image;
}
