/**
 * The databases the store/API tests run against: PGlite always, and a real PostgreSQL server when
 * TEST_DATABASE_URL is set (scripts/test starts one). Each test gets a fresh database.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';

export interface Backend {
  name: 'pglite' | 'postgres';
  /** A fresh, migrated database; `drop()` closes and removes it. */
  fresh(): Promise<{ db: Db; url: string; drop(): Promise<void> }>;
}

const pgUrl = process.env.TEST_DATABASE_URL;
if (!pgUrl && process.env.REQUIRE_POSTGRES === '1')
  throw new Error('REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set (scripts/test starts PostgreSQL)');

export async function createPgDatabase(
  baseUrl: string,
  prefix = 'tf_test',
): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: baseUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const c = new pg.Client({ connectionString: baseUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

export const backends: Backend[] = [
  {
    name: 'pglite',
    async fresh() {
      const db = await openDb('memory://');
      await migrate(db);
      return { db, url: 'memory://', drop: () => db.close() };
    },
  },
  ...(pgUrl
    ? [
        {
          name: 'postgres' as const,
          async fresh() {
            const created = await createPgDatabase(pgUrl);
            const db = await openDb(created.url);
            await migrate(db);
            return {
              db,
              url: created.url,
              drop: async () => {
                await db.close();
                await created.drop();
              },
            };
          },
        },
      ]
    : []),
];

/** The PostgreSQL backend when TEST_DATABASE_URL is set (tests that need a real server skip without it). */
export const postgresBackend = backends.find((b) => b.name === 'postgres');
