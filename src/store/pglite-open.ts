/**
 * Opening a PGlite database: `memory://` or a directory, a new one made from a cached fresh cluster image.
 * Used on the thread that owns the database.
 */
import {
  accessSync,
  constants,
  cpSync,
  existsSync,
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  statSync,
  statfsSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
  type Stats,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import parsePostgresDate from 'postgres-date';
import { PGlite } from '@electric-sql/pglite';
import { LOCK_FILE, lockDataDirectory } from './data-dir-lock.ts';
import { pgliteLocation } from './database-url.ts';

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

/**
 * What a new database is made from: a cluster that `prepare` brought to the state `key` names (the schema of
 * every migration), so that a first start loads it instead of running the migrations (1-2 s of CPU).
 */
export interface ClusterSeed {
  /** Asked only when a new database is made (it reads every migration file). */
  key(): string;
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
  /**
   * Open only a directory that holds a database, as it is: a command that reads what a running system wrote
   * (the CLI's lag, tail, dlq, audit verify) made a new cluster in a directory that held none (`.data`, the
   * parent of the default `.data/db`: 39 MB beside the user's files, which a later `audit verify` then found
   * "ok"), and narrowed the mode of the one it opened to 0700 (the server that owns the directory does that
   * as it starts).
   */
  existingOnly = false,
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
  if (existingOnly) {
    const problem = existingDatabaseProblem(location);
    if (problem) throw new Error(problem);
  } else
    try {
      // The data directory is this user's alone, as PostgreSQL requires of its own: PGlite writes its files
      // readable and writable by everyone (0666 under the umask), the users' tasks among them.
      mkdirSync(location, { recursive: true, mode: 0o700 });
      if (process.platform !== 'win32' && statSync(location).mode & 0o077) chmodSync(location, 0o700);
    } catch (err) {
      throw notThisUsers(err, location);
    }
  let lock: ReturnType<typeof lockDataDirectory>;
  try {
    lock = lockDataDirectory(location);
  } catch (err) {
    throw notThisUsers(err, location);
  }
  try {
    // A new directory gets a copy of the cached cluster directory: a file copy by the operating system,
    // where loading the image through PGlite's filesystem took about 2 s and 150 MB more at peak. The copy is
    // marked as under way until it is whole: one a kill cut short is made again (PGlite has not run on it),
    // where the part copied passed for a database that failed to start for good.
    const marker = join(location, COPYING_FILE);
    if (existsSync(marker))
      for (const f of readdirSync(location))
        if (!ours(f)) rmSync(join(location, f), { recursive: true, force: true });
    if (!existingOnly && readdirSync(location).every(ours)) {
      writeFileSync(marker, 'a new database is being copied here; an interrupted copy is made again\n');
      cpSync(await clusterDirectory(seed), location, { recursive: true });
      rmSync(marker);
    }
    const pglite = await PGlite.create(location, {
      parsers: PGLITE_PARSERS,
      startParams: startParams(),
    }).catch((err: unknown) => {
      throw withFreeSpace(err, location);
    });
    return { pglite, location, unlock: () => lock.release() };
  } catch (err) {
    lock.release();
    throw err;
  }
}

/**
 * Why `location` is not a database directory this process can open as it is (one line naming DATABASE_URL,
 * what is there and what to do), or null when it is one: a directory with PostgreSQL's PG_VERSION, not a copy
 * cut short, that this user may read and write (PGlite writes to read: its lock, PostgreSQL's log).
 */
export function existingDatabaseProblem(location: string): string | null {
  let names: string[];
  try {
    if (!statSync(location).isDirectory()) return `DATABASE_URL names ${location}, which is not a directory`;
    names = readdirSync(location).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      return `no database at ${location} (DATABASE_URL): check the path, or start taskflow there first`;
    return (notThisUsers(err, location) as Error).message;
  }
  if (names.includes(COPYING_FILE))
    return `no database in ${location} (DATABASE_URL): the copy of a new one was cut short; taskflow makes it again as it starts`;
  if (!names.includes('PG_VERSION')) {
    const shown = names.slice(0, 5).map((n) => (isDirectory(join(location, n)) ? `${n}/` : n));
    const found = names.length
      ? `it has ${shown.join(', ')}${names.length > shown.length ? ` and ${names.length - shown.length} more` : ''}`
      : 'it is empty';
    // The directory above a database (`.data` for `.data/db`): name the database in it.
    const below = names.filter((n) => existsSync(join(location, n, 'PG_VERSION')));
    const hint = below.length
      ? `the database is in ${below.map((n) => `DATABASE_URL=${join(location, n)}`).join(' or ')}`
      : names.length
        ? 'check the path'
        : 'check the path, or start taskflow there first';
    return `DATABASE_URL names ${location}, a directory that holds no database (${found}): ${hint}`;
  }
  try {
    accessSync(location, constants.R_OK | constants.W_OK | constants.X_OK);
  } catch (err) {
    return (notThisUsers(err, location, 'this user may not write it (PGlite writes to read)') as Error)
      .message;
  }
  return null;
}

const isDirectory = (path: string) => {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
};

/**
 * A file system error of the data directory itself (making it, narrowing its mode, its lock) that is this
 * user's lack of permission, as one line naming DATABASE_URL, the directory's owner and what to do: "EPERM:
 * operation not permitted, chmod '<dir>'" said none of it. Any other error as it is.
 */
function notThisUsers(
  err: unknown,
  location: string,
  reason = (err as Error).message.replace(/ '[^']*'$/, ''), // the path is named below
): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') return err;
  if (code === 'EROFS')
    return new Error(
      `cannot write the data directory ${location} (DATABASE_URL): ${reason}: set DATABASE_URL to a directory on a writable file system`,
      { cause: err },
    );
  // The directory, or (not made yet) the nearest one above it.
  let dir = location;
  let st: Stats | undefined;
  while (!st)
    try {
      st = statSync(dir);
    } catch {
      if (dirname(dir) === dir) return err;
      dir = dirname(dir);
    }
  const uid = process.getuid?.();
  return new Error(
    `cannot use the data directory ${location} (DATABASE_URL): ${reason}; ${dir === location ? 'it' : dir} belongs to uid ${st.uid}${
      uid === undefined ? '' : `, and taskflow runs as uid ${uid}`
    }${st.uid === uid ? ` (its mode is ${(st.mode & 0o777).toString(8)})` : ''}: ${
      st.uid === uid
        ? 'make it readable and writable by its owner (chmod u+rwx)'
        : 'run taskflow as that user, or set DATABASE_URL to a directory this user owns'
    }`,
    { cause: err },
  );
}

/**
 * PGlite's start-up error (only 'PGlite failed to initialize properly' when its log cannot be written), with
 * the free space of the data directory's file system when it is (nearly) full, the likely cause then.
 */
function withFreeSpace(err: unknown, location: string): unknown {
  let free: number;
  try {
    const fs = statfsSync(location);
    free = fs.bavail * fs.bsize;
  } catch {
    return err;
  }
  if (free >= 64 * 1024 * 1024) return err;
  return new Error(
    `${(err as Error).message} (only ${Math.round(free / 1024)} KB free on the file system of ${location}: PostgreSQL needs room for its log; if that is the cause, free some space and start again)`,
    { cause: err },
  );
}

/** In a data directory while a new database is copied into it (openPGlite). */
export const COPYING_FILE = 'taskflow.copying';
/** Taskflow's own files in a data directory: the lock (and what taking it leaves if killed then), the marker. */
const ours = (f: string) => f.startsWith(LOCK_FILE) || f === COPYING_FILE;

const clusterImages = new Map<string, Promise<Blob>>();
const clusterDirectories = new Map<string, Promise<string>>();

/** The cache file name of a cluster (PGlite version and seed key); the image is `<name>.tar`. */
function clusterName(seed?: ClusterSeed): string {
  const entry = createRequire(import.meta.url).resolve('@electric-sql/pglite'); // <pkg>/dist/index.cjs
  const pkg = JSON.parse(readFileSync(join(dirname(dirname(entry)), 'package.json'), 'utf8')) as {
    version: string;
  };
  return `taskflow-pglite-${pkg.version}${seed ? `-${seed.key()}` : ''}-cluster`;
}

/**
 * The cluster of `clusterImage` as a data directory, cached beside the image (made once: the image loaded into
 * a new directory, then renamed into place).
 */
/**
 * Where the fresh cluster and its image are cached: a directory of this user's alone under the system's temp
 * directory. A new data directory is a copy of what is there, so one that another user could write (a
 * planted template would become every new database) is not used: a fresh private one is made instead.
 */
export function clusterCacheDir(): string {
  const uid = process.getuid?.();
  const dir = join(tmpdir(), `taskflow-cache${uid === undefined ? '' : `-${uid}`}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  const private_ = st.isDirectory() && (uid === undefined || (st.uid === uid && (st.mode & 0o022) === 0));
  return private_ ? dir : mkdtempSync(join(tmpdir(), 'taskflow-cache-'));
}

function clusterDirectory(seed?: ClusterSeed): Promise<string> {
  const name = clusterName(seed);
  let made = clusterDirectories.get(name);
  if (!made) {
    made = (async () => {
      const dir = join(clusterCacheDir(), name);
      if (existsSync(join(dir, 'PG_VERSION'))) return dir;
      const tmp = `${dir}.${process.pid}.tmp`;
      rmSync(tmp, { recursive: true, force: true });
      const pglite = await PGlite.create(tmp, {
        loadDataDir: await clusterImage(seed),
        startParams: startParams(),
      });
      await pglite.close();
      try {
        renameSync(tmp, dir);
      } catch (err) {
        rmSync(tmp, { recursive: true, force: true }); // another process put it there first
        if (!existsSync(join(dir, 'PG_VERSION'))) throw err;
      }
      return dir;
    })();
    clusterDirectories.set(name, made);
  }
  return made;
}

/**
 * A cluster image (tarball): freshly initialised, then brought to `seed.key` by `seed.prepare`. initdb inside
 * WASM costs seconds of CPU and the migrations 1-2 s more; loading the image costs about half a second, so new
 * databases (tests, `memory://`, a first start) are made from it. It is cached per process and on disk per
 * PGlite version and seed key (the temporary directory; written whole, then renamed into place).
 */
function clusterImage(seed?: ClusterSeed): Promise<Blob> {
  const name = `${clusterName(seed)}.tar`;
  let image = clusterImages.get(name);
  if (!image) {
    image = (async () => {
      const file = join(clusterCacheDir(), name);
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
