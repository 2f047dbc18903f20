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

/** Returns the names of the migrations it applied. Safe to run concurrently from several processes. */
export async function migrate(
  db: Migratable,
  log: (msg: string) => void = () => undefined,
): Promise<string[]> {
  const applied: string[] = [];
  await db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [LOCK_ID]);
    await tx.query(
      'CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())',
    );
    const done = new Set(
      (await tx.query<{ version: number }>('SELECT version FROM schema_migrations')).rows.map(
        (r) => r.version,
      ),
    );
    for (const m of loadMigrations()) {
      if (done.has(m.version)) continue;
      log(`applying migration ${m.name}`);
      for (const statement of splitStatements(m.sql)) await tx.query(statement);
      await tx.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      applied.push(m.name);
    }
  });
  return applied;
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
