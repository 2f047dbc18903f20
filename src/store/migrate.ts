/**
 * Applies the numbered SQL files of ./migrations, and of each target's own folder
 * (`services/<target>/migrations`), in the order of their numbers (one sequence), once each, under an
 * advisory lock. Each runs in a transaction of its own, unless its first line is `-- taskflow:no-transaction`
 * (CREATE INDEX CONCURRENTLY): then its statements run one by one, and it is recorded once they all succeeded.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withSessionOptions } from './database-url.ts';

const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), 'migrations');
const LOCK_ID = 0x7a5bf10;
/** How often a process waiting for another's migrations tries their lock again. */
const LOCK_POLL_MS = 200;
/** The first line of a migration that runs outside a transaction. */
const NO_TRANSACTION = /^--\s*taskflow:no-transaction\s*$/;

export interface Migration {
  version: number;
  name: string;
  sql: string;
  /**
   * False for one marked `-- taskflow:no-transaction`: PostgreSQL refuses CREATE INDEX CONCURRENTLY in a
   * transaction, and a plain CREATE INDEX blocks the table's writes (the running version's, during an
   * upgrade) until its build ends. Such a migration must be idempotent: a failure or a kill leaves the
   * statements before it applied, and it runs again from its start.
   */
  transactional: boolean;
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
        .map((f) => {
          const sql = readFileSync(join(dir, f), 'utf8');
          const transactional = !NO_TRANSACTION.test(sql.split('\n', 1)[0]!.trim());
          return { version: Number.parseInt(f, 10), name: f, sql, transactional };
        }),
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

/** Runs statements: a transaction's, a database's (each in a transaction of its own), a connection's. */
interface Queries {
  query<R = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<{ rows: R[] }>;
}

/**
 * What migrating needs of a database: store/db.ts's Db is one. Said here rather than imported, because db.ts
 * runs these migrations to make its PGlite seed, and an import back would make the two modules a circle.
 */
export interface Migratable extends Queries {
  readonly kind: 'postgres' | 'pglite';
  /** Where a migration that runs outside a transaction opens a connection of its own (PostgreSQL). */
  readonly url: string;
  transaction<T>(fn: (tx: Queries) => Promise<T>): Promise<T>;
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
/** PostgreSQL's active_sql_transaction: a statement that cannot run in a transaction block ran in one. */
const IN_A_TRANSACTION = '25001';

interface AppliedRow {
  version: number;
  name: string;
}

/** What the ledger records, read without any lock; undefined when there is no ledger yet. */
async function readLedger(db: Migratable): Promise<AppliedRow[] | undefined> {
  return db.transaction(async (tx) => {
    const ledger = await tx.query<{ exists: boolean }>(
      "SELECT to_regclass('schema_migrations') IS NOT NULL AS exists",
    );
    if (!ledger.rows[0]!.exists) return undefined;
    return (await tx.query<AppliedRow>('SELECT version, name FROM schema_migrations ORDER BY version')).rows;
  });
}

/**
 * The migrations not applied to `db` yet, by name, without changing anything: what a command that only reads
 * (audit verify, dlq, lag, tail) checks, instead of migrating a database a running older version still uses.
 */
export async function pendingMigrations(db: Migratable, dirs?: string[]): Promise<string[]> {
  const done = new Set((await readLedger(db))?.map((r) => r.version));
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
  // What is applied, read without the lock: a start with nothing to do takes no lock and needs no CREATE
  // privilege (a role that only reads and writes the tables of a schema its owner migrated). What the ledger
  // records has committed, so nothing recorded is missing; what is not is applied under the lock, which
  // looks again. The ledger is made under the lock (two processes making it at once: one fails).
  const appliedRows =
    (await readLedger(db)) ??
    (await underMigrationsLock(db, log, async (tx) => {
      await tx.query(CREATE_LEDGER);
      return (await tx.query<AppliedRow>('SELECT version, name FROM schema_migrations ORDER BY version'))
        .rows;
    }));
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
        const apply = m.transactional ? applyInTransaction : applyOutsideTransaction;
        if (await apply(db, m, lockTimeoutMs, log)) applied.push(m.name);
        break;
      } catch (err) {
        if ((err as { code?: string }).code === IN_A_TRANSACTION && m.transactional)
          throw new Error(
            `migration ${m.name}: ${(err as Error).message}: a migration that must run outside a transaction says so on its first line, -- taskflow:no-transaction (docs/deploy.md)`,
            { cause: err },
          );
        if ((err as { code?: string }).code !== LOCK_NOT_AVAILABLE) throw err;
        if (attempt >= attempts)
          throw new Error(
            `migration ${m.name} waited more than ${lockTimeoutMs} ms for a table's lock ${attempts} times (other sessions hold it: long queries or transactions); ${m.transactional ? 'nothing of it was applied' : 'its statements before that one stay applied (it runs outside a transaction), and it runs again from its start'}, try again`,
            { cause: err },
          );
        const pause = backoffMs(attempt);
        log(
          `migration ${m.name} waited ${lockTimeoutMs} ms for a table's lock held by other sessions; trying again in ${pause} ms (attempt ${attempt + 1} of ${attempts})`,
        );
        await sleep(pause);
      }
    }
  }
  return applied;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `fn` in a transaction holding the migrations' lock, once no other process holds it. The lock is tried
 * (pg_try_advisory_xact_lock), again every LOCK_POLL_MS, rather than waited for: a session waiting in
 * pg_advisory_xact_lock holds a snapshot all that time, and CREATE INDEX CONCURRENTLY (run by the process
 * holding the lock) waits for every transaction with an older snapshot to end: each waits for the other, and
 * PostgreSQL ends one of them as a deadlock (the waiting process's start fails, or the build).
 * The transaction has no statement_timeout (one in DATABASE_URL's options, or the role's, would cancel a
 * migration's long statement, an index build, on every try: a migration is not a request).
 */
async function underMigrationsLock<T>(
  db: Migratable,
  log: (msg: string) => void,
  fn: (tx: Queries) => Promise<T>,
): Promise<T> {
  const outcome = await whenLockTaken(
    () =>
      db.transaction(async (tx) => {
        await tx.query('SET LOCAL statement_timeout = 0');
        if (!(await tryMigrationsLock(tx, 'pg_try_advisory_xact_lock'))) return undefined;
        return { value: await fn(tx) };
      }),
    log,
  );
  return outcome.value;
}

/**
 * Runs `attempt` (which takes the migrations' lock, or answers undefined when another process holds it) every
 * LOCK_POLL_MS until it took it, saying once that it waits; what it answered.
 */
async function whenLockTaken<T>(
  attempt: () => Promise<T | undefined>,
  log: (msg: string) => void,
): Promise<T> {
  for (let tries = 0; ; tries++) {
    const outcome = await attempt();
    if (outcome !== undefined) return outcome;
    if (tries === 0) log("waiting for the migrations' lock: another process is migrating");
    await sleep(LOCK_POLL_MS);
  }
}

async function tryMigrationsLock(
  q: Queries,
  fn: 'pg_try_advisory_xact_lock' | 'pg_try_advisory_lock',
): Promise<boolean> {
  return (await q.query<{ locked: boolean }>(`SELECT ${fn}($1) AS locked`, [LOCK_ID])).rows[0]!.locked;
}

async function isRecorded(q: Queries, m: Migration): Promise<boolean> {
  return (await q.query('SELECT 1 FROM schema_migrations WHERE version = $1', [m.version])).rows.length > 0;
}

/** Applies `m` in a transaction of its own unless it is applied already; whether it applied it. */
async function applyInTransaction(
  db: Migratable,
  m: Migration,
  lockTimeoutMs: number,
  log: (msg: string) => void,
): Promise<boolean> {
  return underMigrationsLock(db, log, async (tx) => {
    // Another process may have applied it since the read.
    if (await isRecorded(tx, m)) return false;
    await tx.query(`SET LOCAL lock_timeout = ${Math.max(0, Math.trunc(lockTimeoutMs))}`);
    log(`applying migration ${m.name}`);
    for (const statement of splitStatements(m.sql)) await tx.query(statement);
    await tx.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
    return true;
  });
}

/**
 * Applies a `-- taskflow:no-transaction` migration unless it is applied already: each statement commits on
 * its own, and the migration is recorded once all have. On PostgreSQL it runs on a connection of its own,
 * which holds the migrations' lock as a session lock until it ends; on PGlite (this process's alone, by its
 * data directory's lock) as it is, through the database, which sets nothing on its one session.
 */
async function applyOutsideTransaction(
  db: Migratable,
  m: Migration,
  lockTimeoutMs: number,
  log: (msg: string) => void,
): Promise<boolean> {
  const session = db.kind === 'pglite' ? undefined : await openSession(db.url);
  const q: Queries = session ?? db;
  try {
    if (session) {
      // Session settings, on this connection only, which end with it.
      await session.query('SET statement_timeout = 0');
      await whenLockTaken(
        async () => (await tryMigrationsLock(session, 'pg_try_advisory_lock')) || undefined,
        log,
      );
    }
    if (await isRecorded(q, m)) return false;
    log(`applying migration ${m.name} (outside a transaction)`);
    for (const statement of splitStatements(m.sql)) {
      if (session) {
        // A concurrent index build's waits (for the table's writers, for older snapshots) block none of the
        // running version's reads or writes, and a timeout in them would throw the build away: no lock_timeout.
        const timeout = /\bCONCURRENTLY\b/i.test(statement) ? 0 : Math.max(0, Math.trunc(lockTimeoutMs));
        await session.query(`SET lock_timeout = ${timeout}`);
      }
      await dropInvalidIndexOf(q, statement, log);
      await q.query(statement);
    }
    await q.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
    return true;
  } finally {
    // Ending the session releases its lock.
    await session?.end().catch(() => undefined);
  }
}

/** A PostgreSQL connection of its own, with the startup options the pool's have (withSessionOptions). */
async function openSession(url: string): Promise<Queries & { end(): Promise<void> }> {
  const { default: pg } = await import('pg');
  const options = withSessionOptions(url);
  const client = new pg.Client({
    connectionString: options.url,
    options: options.options,
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
  });
  // A connection lost mid-statement rejects that statement; without a listener it would also end the process.
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/**
 * Before `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] <name>`: drops an index of that name left
 * INVALID by a build that failed or was killed. IF NOT EXISTS would keep it, unusable, and it would still
 * be updated by every write.
 */
async function dropInvalidIndexOf(q: Queries, statement: string, log: (msg: string) => void): Promise<void> {
  const created =
    /^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?(?!ON\s)((?:"[^"]+"|[^\s.("]+)(?:\.(?:"[^"]+"|[^\s.("]+))?)\s/i.exec(
      statement,
    );
  if (!created) return;
  const name = created[1]!;
  const invalid = await q.query(
    'SELECT 1 FROM pg_index WHERE indexrelid = to_regclass($1) AND NOT indisvalid',
    [name],
  );
  if (invalid.rows.length === 0) return;
  log(`dropping index ${name}, left invalid by a build that did not finish, to build it again`);
  await q.query(`DROP INDEX CONCURRENTLY IF EXISTS ${name}`);
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
