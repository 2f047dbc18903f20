/** Applies the numbered SQL files of ./migrations in order, once each, under an advisory lock. */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), 'migrations');
const LOCK_ID = 0x7a5bf10;

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d+_.+\.sql$/.test(f))
    .sort()
    .map((f) => ({ version: Number.parseInt(f, 10), name: f, sql: readFileSync(join(dir, f), 'utf8') }));
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
