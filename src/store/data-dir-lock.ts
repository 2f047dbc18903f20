/**
 * One process per PGlite data directory. PGlite is PostgreSQL in one process with no shared memory between
 * processes: a second process opening the same directory would read a stale copy and its writes would be
 * lost or corrupt the first one's. A lock file in the directory names its owner (pid, the process's start
 * time, host, boot id and pid namespace); a second opener refuses with one line naming the owner. A lock whose
 * owner is gone is stale and taken over. How that is told depends on whether the owner can be seen from here:
 *
 * - Same host name, same boot and same pid namespace: its pid is a process here, and the pid with its start
 *   time says at once whether it still runs (kill -9, a crash, a reboot that reused its pid).
 * - Otherwise (another container: a pid namespace of its own, pid 1 often, whatever its host name; another
 *   host on a shared volume): its pid means nothing here. The holder renews its lock (its modification time)
 *   every LOCK_RENEW_MS, and such a lock is taken over once not renewed for LOCK_STALE_MS. The pid check alone
 *   took a live container's lock over from another container with the same host name (docker --network host,
 *   Kubernetes hostNetwork, a StatefulSet pod, the host's CLI on a bind-mounted directory: its own pid 1 was
 *   not the owner's), and a lock naming another host was kept for ever (the container that replaced a killed
 *   one never started). The hosts' clocks must agree within a few seconds (NTP).
 *
 * A holder paused for longer than LOCK_STALE_MS (SIGSTOP, a frozen VM; its event loop held that long, by one
 * statement, counts too) may find its lock taken over when it runs again: at its next renewal it ends the
 * process at once, saying so, rather than write on beside the new owner (what it runs before that renewal,
 * right after it resumes, it runs beside it).
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fstatSync,
  linkSync,
  openSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

export const LOCK_FILE = 'taskflow.lock';
/** How often a holder renews its lock (sets its modification time), and checks it is still its own. */
export const LOCK_RENEW_MS = 5_000;
/** A lock whose owner cannot be seen from here is taken over once not renewed for this long. */
export const LOCK_STALE_MS = 30_000;

interface Owner {
  pid: number;
  host: string;
  /** The process's start time in clock ticks since boot (Linux /proc), to tell a reused pid; null elsewhere. */
  started: string | null;
  /**
   * The kernel's boot id and the process's pid namespace (`pid:[4026531836]`): whether `pid` is a process
   * here. Null without /proc; absent from the lock of an earlier Taskflow, which does not renew it.
   */
  boot?: string | null;
  pidNamespace?: string | null;
  command: string;
}

export class DataDirectoryInUseError extends Error {
  constructor(
    readonly dir: string,
    readonly owner: Owner,
    note = '',
  ) {
    super(
      `the data directory ${dir} is in use by process ${owner.pid} (${owner.command}) on ${owner.host}${note}; ` +
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

/** The lock file's text and modification time, read from one open file (NFS revalidates on open). */
interface LockSeen {
  text: string;
  modified: number;
}

/**
 * Takes the lock of `dir` for this process, or throws DataDirectoryInUseError. The lock file is created whole
 * in one step (written aside, then linked: a link fails if the name exists), so exactly one process creates it
 * and no one reads it half written. A stale one is replaced in one rename, by the process that holds the
 * takeover marker (created the same way): of processes taking it over at once, the others find the marker,
 * wait a moment and look again, finding the new owner's lock. The lock file itself is never moved or removed
 * while it may be another's: moving it aside let a process paused in between put a live lock out of sight.
 * The holder renews it (keepRenewed) until `release`.
 */
export function lockDataDirectory(dir: string): DataDirLock {
  const file = join(dir, LOCK_FILE);
  const marker = `${file}.takeover`;
  const me: Owner = {
    pid: process.pid,
    host: hostname(),
    started: startTime(process.pid),
    boot: bootId(),
    pidNamespace: pidNamespace(),
    command: process.argv.slice(1, 4).join(' ').slice(0, 200) || 'node',
  };
  const text = JSON.stringify(me);
  const held = (): DataDirLock => {
    const renewal = keepRenewed(dir, file, text);
    return {
      release: () => {
        clearInterval(renewal);
        if (readText(file) === text) rmSync(file, { force: true });
      },
    };
  };
  for (let attempt = 0; attempt < 200; attempt++) {
    if (createWhole(file, text)) return held();
    const seen = readLock(file);
    if (seen === null) continue; // released meanwhile: create it
    const owner = parseOwner(seen.text);
    if (owner) {
      const inUse = inUseNote(owner, seen.modified, file);
      if (inUse !== null) throw new DataDirectoryInUseError(dir, owner, inUse);
    }
    // Stale (or unreadable: written by an older version that crashed while writing it).
    if (!takeMarker(marker, text)) {
      pause(10);
      continue;
    }
    try {
      // Judged again under the marker: the owner may have renewed it since (it was only slow).
      const now = readLock(file);
      if (now?.text === seen.text && (owner === null || inUseNote(owner, now.modified, file) === null)) {
        const replacement = uniqueName(file, 'new');
        writeFileSync(replacement, text);
        renameSync(replacement, file);
        return held();
      }
    } finally {
      rmSync(marker, { force: true });
    }
  }
  throw new Error(`could not take the lock of the data directory ${dir}: it kept changing hands`);
}

/**
 * Renews the lock `text` of `file` every LOCK_RENEW_MS (its modification time, never its content: a rewrite
 * could replace a lock another just took over). A lock found to be another's was taken over while this
 * process did not renew it (paused longer than LOCK_STALE_MS): it may already write the directory, so this
 * process ends at once, writing nothing more (closing PGlite would write). So does one that finds its lock
 * gone after such a pause (taken over and released meanwhile); after no pause a lock removed (by hand, by an
 * earlier Taskflow) is made again.
 */
function keepRenewed(dir: string, file: string, text: string): NodeJS.Timeout {
  let renewed = Date.now();
  const timer = setInterval(() => {
    const unrenewedMs = Date.now() - renewed;
    const seen = readText(file);
    if (seen !== null && seen !== text) {
      const owner = parseOwner(seen);
      stopAsLost(
        dir,
        `was taken over by ${owner ? `process ${owner.pid} (${owner.command}) on ${owner.host}` : 'another process'}`,
        unrenewedMs,
      );
    }
    try {
      if (seen === null) {
        if (unrenewedMs >= LOCK_STALE_MS) stopAsLost(dir, 'was removed', unrenewedMs);
        createWhole(file, text); // another's, if it won: found at the next renewal
      } else {
        const now = new Date();
        utimesSync(file, now, now);
      }
      renewed = Date.now();
    } catch {
      // The directory removed or unwritable: PGlite fails on it too, saying so.
    }
  }, LOCK_RENEW_MS);
  timer.unref();
  return timer;
}

function stopAsLost(dir: string, what: string, unrenewedMs: number): never {
  const paused =
    unrenewedMs >= LOCK_STALE_MS
      ? ` after this process had not renewed it for ${Math.round(unrenewedMs / 1000)} s (paused, or its machine frozen)`
      : '';
  process.stderr.write(
    `taskflow: the lock of the data directory ${dir} ${what}${paused}; two processes must not write one ` +
      `embedded database: this process stops now, without writing anything more\n`,
  );
  process.exit(1);
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
  const seen = readLock(marker);
  const owner = seen === null ? null : parseOwner(seen.text);
  if (seen === null || (owner && inUseNote(owner, seen.modified, marker) !== null)) return false;
  const aside = uniqueName(marker, 'stale');
  try {
    renameSync(marker, aside);
  } catch {
    return false;
  }
  if (readText(aside) !== seen.text) {
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

function readLock(file: string): LockSeen | null {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return null;
  }
  try {
    return { text: readFileSync(fd, 'utf8'), modified: fstatSync(fd).mtimeMs };
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

function parseOwner(text: string): Owner | null {
  try {
    const o = JSON.parse(text) as Partial<Owner>;
    if (typeof o.pid !== 'number' || typeof o.host !== 'string') return null;
    return {
      pid: o.pid,
      host: o.host,
      started: o.started ?? null,
      ...('boot' in o ? { boot: o.boot ?? null } : {}),
      ...('pidNamespace' in o ? { pidNamespace: o.pidNamespace ?? null } : {}),
      command: o.command ?? '?',
    };
  } catch {
    return null;
  }
}

/**
 * Null when the lock of `owner` (`file`, last modified at `modified`) is stale; otherwise what the refusal
 * adds after the owner's name (empty for a process seen running here). The same process holding it (a second
 * open in this process) is in use too.
 */
function inUseNote(owner: Owner, modified: number, file: string): string | null {
  if (owner.boot !== undefined && owner.pidNamespace !== undefined) {
    if (!observable(owner)) {
      const age = Math.max(0, Date.now() - modified);
      if (age >= LOCK_STALE_MS) return null;
      const where = owner.host === hostname() ? 'another pid namespace (container)' : 'another host';
      return `, in ${where}: it renewed its lock ${Math.round(age / 1000)} s ago (one not renewed for ${LOCK_STALE_MS / 1000} s is taken over)`;
    }
    return running(owner) ? '' : null;
  }
  if (!alive(owner)) return null;
  return owner.host === hostname()
    ? ''
    : `, which does not renew its lock: once that process is gone, delete ${file}`;
}

/**
 * Whether the owner of a lock written by an earlier Taskflow (no boot id, no pid namespace, never renewed)
 * still runs. Another host's lock (a shared volume) is taken as held: its pid means nothing here.
 */
function alive(owner: Owner): boolean {
  if (owner.host !== hostname()) return true;
  return running(owner);
}

/** Whether the owner's pid is a process here: same host name, boot and pid namespace as this process. */
function observable(owner: Owner): boolean {
  const namespace = pidNamespace();
  return (
    owner.host === hostname() &&
    owner.boot === bootId() &&
    owner.pidNamespace === namespace &&
    // Linux without a readable pid namespace: any pid namespace, as far as this process can tell.
    (namespace !== null || process.platform !== 'linux')
  );
}

/** Whether the process `owner` names runs (its pid, and its start time where /proc tells). */
function running(owner: Owner): boolean {
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

/** This boot of the kernel (a reboot starts pids and start times again); null where there is no /proc. */
function bootId(): string | null {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return null;
  }
}

/** This process's pid namespace, `pid:[<inode>]` (Linux); null elsewhere. */
function pidNamespace(): string | null {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return null;
  }
}
