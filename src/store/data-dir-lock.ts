/**
 * One process per PGlite data directory. PGlite is PostgreSQL in one process with no shared memory between
 * processes: a second process opening the same directory would read a stale copy and its writes would be
 * lost or corrupt the first one's. A lock file in the directory names its owner (pid, host, the process's
 * start time); a second opener refuses with one line naming the owner. A lock whose owner is gone (kill -9,
 * a crash, a reboot that reused its pid) is stale and taken over.
 */
import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

export const LOCK_FILE = 'taskflow.lock';

interface Owner {
  pid: number;
  host: string;
  /** The process's start time in clock ticks since boot (Linux /proc), to tell a reused pid; null elsewhere. */
  started: string | null;
  command: string;
}

export class DataDirectoryInUseError extends Error {
  constructor(
    readonly dir: string,
    readonly owner: Owner,
  ) {
    super(
      `the data directory ${dir} is in use by process ${owner.pid} (${owner.command}) on ${owner.host}; ` +
        `an embedded database has one process at a time: stop that process first, or use the running ` +
        `server over HTTP (REST /api, MCP at /mcp), or give this command another DATABASE_URL`,
    );
    this.name = 'DataDirectoryInUseError';
  }
}

/** A held lock; `release` removes the file if it is still ours. */
export interface DataDirLock {
  release(): void;
}

/**
 * Takes the lock of `dir` for this process, or throws DataDirectoryInUseError. The lock file is created whole
 * in one step (written aside, then linked: a link fails if the name exists), so exactly one process creates it
 * and no one reads it half written. A stale one is replaced in one rename, by the process that holds the
 * takeover marker (created the same way): of processes taking it over at once, the others find the marker,
 * wait a moment and look again, finding the new owner's lock. The lock file itself is never moved or removed
 * while it may be another's: moving it aside let a process paused in between put a live lock out of sight.
 */
export function lockDataDirectory(dir: string): DataDirLock {
  const file = join(dir, LOCK_FILE);
  const marker = `${file}.takeover`;
  const me: Owner = {
    pid: process.pid,
    host: hostname(),
    started: startTime(process.pid),
    command: process.argv.slice(1, 4).join(' ').slice(0, 200) || 'node',
  };
  const text = JSON.stringify(me);
  const held: DataDirLock = {
    release: () => {
      if (sameOwner(readOwner(file), me)) rmSync(file, { force: true });
    },
  };
  for (let attempt = 0; attempt < 200; attempt++) {
    if (createWhole(file, text)) return held;
    const seen = readText(file);
    if (seen === null) continue; // released meanwhile: create it
    const owner = parseOwner(seen);
    if (owner && alive(owner)) throw new DataDirectoryInUseError(dir, owner);
    // Stale (or unreadable: written by an older version that crashed while writing it).
    if (!takeMarker(marker, text)) {
      pause(10);
      continue;
    }
    try {
      if (readText(file) === seen) {
        const replacement = uniqueName(file, 'new');
        writeFileSync(replacement, text);
        renameSync(replacement, file);
        return held;
      }
    } finally {
      rmSync(marker, { force: true });
    }
  }
  throw new Error(`could not take the lock of the data directory ${dir}: it kept changing hands`);
}

/** A name beside `file` no other process uses (a container's pid is often 1: the host and a random part). */
const uniqueName = (file: string, what: string) =>
  `${file}.${hostname()}.${process.pid}.${randomBytes(4).toString('hex')}.${what}`;

/** Creates `file` with `text`, whole, unless it exists: whether it did. */
function createWhole(file: string, text: string): boolean {
  const written = uniqueName(file, 'new');
  writeFileSync(written, text);
  try {
    linkSync(written, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    rmSync(written, { force: true });
  }
}

/**
 * Takes the takeover marker; false while a live process holds it. One left by a process killed during its
 * takeover (a few microseconds) is removed, by moving it aside and putting back what was not that one.
 */
function takeMarker(marker: string, text: string): boolean {
  if (createWhole(marker, text)) return true;
  const seen = readText(marker);
  const owner = seen === null ? null : parseOwner(seen);
  if (seen === null || (owner && alive(owner))) return false;
  const aside = uniqueName(marker, 'stale');
  try {
    renameSync(marker, aside);
  } catch {
    return false;
  }
  if (readText(aside) !== seen) {
    try {
      linkSync(aside, marker);
    } catch {
      // another took it meanwhile
    }
  }
  rmSync(aside, { force: true });
  return false;
}

/** Blocks this thread for `ms` (the lock is taken before anything else runs). */
const pause = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

function readText(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function readOwner(file: string): Owner | null {
  const text = readText(file);
  return text === null ? null : parseOwner(text);
}

function parseOwner(text: string): Owner | null {
  try {
    const o = JSON.parse(text) as Partial<Owner>;
    if (typeof o.pid !== 'number' || typeof o.host !== 'string') return null;
    return { pid: o.pid, host: o.host, started: o.started ?? null, command: o.command ?? '?' };
  } catch {
    return null;
  }
}

function sameOwner(a: Owner | null, b: Owner): boolean {
  return a !== null && a.pid === b.pid && a.host === b.host && a.started === b.started;
}

/**
 * Whether the owner still runs. Another host's lock (a shared volume) is taken as held: its pid means
 * nothing here. The same process holding it (a second open in this process) is in use too.
 */
function alive(owner: Owner): boolean {
  if (owner.host !== hostname()) return true;
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    // EPERM: it exists and is another user's, which says nothing of whether it is the owner (a reboot gives a
    // dead owner's pid to any user's process): the start time tells, as for a process of this user.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const started = startTime(owner.pid);
  return owner.started === null || started === null || started === owner.started;
}

/** Field 22 of /proc/<pid>/stat (start time after boot); null where there is no /proc. */
function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: count fields after its last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}
