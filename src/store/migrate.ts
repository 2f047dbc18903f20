/**
 * Applies the numbered SQL files of ./migrations, and of each target's own folder
 * (`services/<target>/migrations`), in the order of their numbers (one sequence), once each, under an
 * advisory lock.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), 'migrations');
const LOCK_ID = 0x7a5bf10;

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/**
 * Where migrations are: ./migrations, and the `migrations` folder of each target that brings tables of its
 * own (found by path, as the build copies them: the store imports no target).
 */
export function migrationDirs(): string[] {
  const targets = join(dirname(MIGRATIONS_DIR), '..', 'services');
  const own = existsSync(targets)
    ? readdirSync(targets, { withFileTypes: true })
        .filter((e) => e.isDirectory() && existsSync(join(targets, e.name, 'migrations')))
        .map((e) => join(targets, e.name, 'migrations'))
    : [];
  return [MIGRATIONS_DIR, ...own.sort()];
}

/** Every migration in number order; two with one number are refused (they would both claim it). */
export function loadMigrations(dirs = migrationDirs()): Migration[] {
  const all = dirs
    .flatMap((dir) =>
      readdirSync(dir)
        .filter((f) => /^\d+_.+\.sql$/.test(f))
        .map((f) => ({ version: Number.parseInt(f, 10), name: f, sql: readFileSync(join(dir, f), 'utf8') })),
    )
    .sort((a, b) => a.version - b.version);
  for (let i = 1; i < all.length; i++)
    if (all[i]!.version === all[i - 1]!.version)
      throw new Error(`two migrations numbered ${all[i]!.version}: ${all[i - 1]!.name} and ${all[i]!.name}`);
  return all;
}

/** Names the schema the migrations make: a hash of every migration's name and text. */
export function migrationsKey(): string {
  const hash = createHash('sha256');
  for (const m of loadMigrations()) hash.update(`${m.name}\0${m.sql}\0`);
  return hash.digest('hex').slice(0, 16);
}

/**
 * What migrating needs of a database: store/db.ts's Db is one. Said here rather than imported, because db.ts
 * runs these migrations to make its PGlite seed, and an import back would make the two modules a circle.
 */
export interface Migratable {
  transaction<T>(
    fn: (tx: {
      query<R = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<{ rows: R[] }>;
    }) => Promise<T>,
  ): Promise<T>;
}

export interface MigrateOptions {
  log?: (msg: string) => void;
  /**
   * How long one statement may wait for a table's lock (lock_timeout). A migration's ALTER waiting behind a
   * long query holds up every later query on that table while it waits: the old version's requests, during
   * an upgrade. Past this it gives up, releases, and tries again after a pause.
   */
  lockTimeoutMs?: number;
  /** How many times a migration that timed out on a lock is tried before migrate fails. */
  attempts?: number;
  /** The pause after the n-th lock timeout (ms). */
  backoffMs?: (attempt: number) => number;
  /** Where the migrations are (tests). */
  dirs?: string[];
  /**
   * A database that has migrations this version does not know (a newer Taskflow migrated it): `warn` logs it
   * and goes on, as the previous version does during a rolling upgrade (PostgreSQL, several processes);
   * `refuse` fails, naming them (a PGlite data directory belongs to one process: a newer version ran on it,
   * and this older one would fail on the first write the newer schema does not allow).
   */
  newerSchema?: 'warn' | 'refuse';
  /** Where that warning goes (default: `log`). */
  warn?: (msg: string) => void;
}

const CREATE_LEDGER =
  'CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())';

/** PostgreSQL's lock_not_available: a statement waited lock_timeout. */
const LOCK_NOT_AVAILABLE = '55P03';

/**
 * The migrations not applied to `db` yet, by name, without changing anything: what a command that only reads
 * (audit verify, dlq, lag, tail) checks, instead of migrating a database a running older version still uses.
 */
export async function pendingMigrations(db: Migratable, dirs?: string[]): Promise<string[]> {
  const done = await db.transaction(async (tx) => {
    const ledger = await tx.query<{ exists: boolean }>(
      "SELECT to_regclass('schema_migrations') IS NOT NULL AS exists",
    );
    if (!ledger.rows[0]!.exists) return new Set<number>();
    return new Set(
      (await tx.query<{ version: number }>('SELECT version FROM schema_migrations')).rows.map(
        (r) => r.version,
      ),
    );
  });
  return loadMigrations(dirs)
    .filter((m) => !done.has(m.version))
    .map((m) => m.name);
}

/**
 * Returns the names of the migrations it applied. Safe to run concurrently from several processes (an
 * advisory lock). Each migration commits on its own, so one that fails leaves those before it applied.
 */
export async function migrate(db: Migratable, opts: MigrateOptions = {}): Promise<string[]> {
  const log = opts.log ?? (() => undefined);
  const lockTimeoutMs = opts.lockTimeoutMs ?? 5_000;
  const attempts = opts.attempts ?? 10;
  const backoffMs = opts.backoffMs ?? ((n: number) => Math.min(1_000 * 2 ** (n - 1), 15_000));
  const applied: string[] = [];
  // One read of what is applied (a start-up with nothing to do is one transaction), then each pending one.
  const appliedRows = await db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [LOCK_ID]);
    await tx.query(CREATE_LEDGER);
    return (
      await tx.query<{ version: number; name: string }>(
        'SELECT version, name FROM schema_migrations ORDER BY version',
      )
    ).rows;
  });
  const done = new Set(appliedRows.map((r) => r.version));
  const known = loadMigrations(opts.dirs);
  const knownVersions = new Set(known.map((m) => m.version));
  const newer = appliedRows.filter((r) => !knownVersions.has(r.version)).map((r) => r.name);
  if (newer.length) {
    const what = `this database was migrated by a newer Taskflow: ${newer.join(', ')} ${newer.length === 1 ? 'is' : 'are'} not known to this version`;
    if (opts.newerSchema === 'refuse')
      throw new Error(
        `${what}. Run that version (or a newer one) on it, or restore a copy made before the upgrade`,
      );
    (opts.warn ?? log)(`${what}; going on as the previous version does during a rolling upgrade`);
  }
  for (const m of known.filter((m) => !done.has(m.version))) {
    for (let attempt = 1; ; attempt++) {
      try {
        if (await applyOne(db, m, lockTimeoutMs, log)) applied.push(m.name);
        break;
      } catch (err) {
        if ((err as { code?: string }).code !== LOCK_NOT_AVAILABLE) throw err;
        if (attempt >= attempts)
          throw new Error(
            `migration ${m.name} waited more than ${lockTimeoutMs} ms for a table's lock ${attempts} times (other sessions hold it: long queries or transactions); nothing of it was applied, try again`,
            { cause: err },
          );
        const pause = backoffMs(attempt);
        log(
          `migration ${m.name} waited ${lockTimeoutMs} ms for a table's lock held by other sessions; trying again in ${pause} ms (attempt ${attempt + 1} of ${attempts})`,
        );
        await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  }
  return applied;
}

/** Applies `m` in a transaction of its own unless it is applied already; whether it applied it. */
async function applyOne(
  db: Migratable,
  m: Migration,
  lockTimeoutMs: number,
  log: (msg: string) => void,
): Promise<boolean> {
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [LOCK_ID]);
    // Another process may have applied it since the read.
    const done = await tx.query('SELECT 1 FROM schema_migrations WHERE version = $1', [m.version]);
    if (done.rows.length > 0) return false;
    // After the advisory lock, which may wait for another process's migrations as long as they take.
    await tx.query(`SET LOCAL lock_timeout = ${Math.max(0, Math.trunc(lockTimeoutMs))}`);
    log(`applying migration ${m.name}`);
    for (const statement of splitStatements(m.sql)) await tx.query(statement);
    await tx.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
    return true;
  });
}

/** Splits a migration file on semicolons at line ends (a procedural body is written on one line). */
function splitStatements(sql: string): string[] {
  return sql
    .split(/;\s*$/m)
    .map((s) =>
      s
        .split('\n')
        .filter((l) => !l.trim().startsWith('--'))
        .join('\n')
        .trim(),
    )
    .filter(Boolean);
}
