/**
 * One process per PGlite data directory. PGlite is PostgreSQL in one process with no shared memory between
 * processes: a second process opening the same directory would read a stale copy and its writes would be
 * lost or corrupt the first one's. A lock file in the directory names its owner (pid, host, the process's
 * start time); a second opener refuses with one line naming the owner. A lock whose owner is gone (kill -9,
 * a crash, a reboot that reused its pid) is stale and taken over.
 */
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

/** Takes the lock of `dir` for this process, or throws DataDirectoryInUseError. */
export function lockDataDirectory(dir: string): DataDirLock {
  const file = join(dir, LOCK_FILE);
  const me: Owner = {
    pid: process.pid,
    host: hostname(),
    started: startTime(process.pid),
    command: process.argv.slice(1, 4).join(' ').slice(0, 200) || 'node',
  };
  for (let attempt = 0; ; attempt++) {
    try {
      // Written whole, then linked into place: a link fails if the name exists, so exactly one process creates
      // the lock, and no one ever reads it empty (created and not yet written, it passed for stale).
      const written = `${file}.${process.pid}.new`;
      writeFileSync(written, JSON.stringify(me));
      try {
        linkSync(written, file);
      } finally {
        rmSync(written, { force: true });
      }
      return {
        release: () => {
          if (sameOwner(readOwner(file), me)) rmSync(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 5) throw err;
    }
    const seen = readText(file);
    if (seen === null) continue; // removed meanwhile: create it
    const owner = parseOwner(seen);
    if (owner && alive(owner)) throw new DataDirectoryInUseError(dir, owner);
    // Stale (or unreadable: a crash while writing it): taken over by moving it aside, one atomic rename. Of two
    // processes taking it over at once, one moves it; the other finds nothing to move, or moves the lock the
    // first has just made, which it puts back (removing it, as before, let both create one and run).
    const aside = `${file}.${process.pid}.stale`;
    try {
      renameSync(file, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    if (readText(aside) !== seen) {
      try {
        linkSync(aside, file); // fails if a third process created one meanwhile
      } catch {
        // that one holds it now
      }
    }
    rmSync(aside, { force: true });
  }
}

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
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, another user's
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
