/**
 * New PGlite databases are made from a cached cluster with every migration applied (store/pglite-open.ts):
 * a new directory or `memory://` database starts with the whole schema, `migrate` has nothing left to do, and
 * two databases made from the same cache share nothing.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openDb, type Db } from '../../src/store/db.ts';
import { loadMigrations, migrate } from '../../src/store/migrate.ts';
import { COPYING_FILE } from '../../src/store/pglite-open.ts';

const scratch = mkdtempSync(join(tmpdir(), 'taskflow-pglite-open-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const appliedVersions = async (db: Db) =>
  (await db.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version')).rows.map(
    (r) => r.version,
  );

describe('new PGlite databases', () => {
  const all = loadMigrations().map((m) => m.version);

  for (const where of ['a new directory', 'memory://']) {
    it(`${where}: every migration is applied already and migrate applies none`, async () => {
      const db = await openDb(where === 'memory://' ? 'memory://' : join(scratch, 'fresh'));
      try {
        assert.deepEqual(await appliedVersions(db), all);
        assert.deepEqual(await migrate(db), []);
        await db.query(`INSERT INTO leases (name, holder, lease_until) VALUES ('t', 'h', now())`);
        assert.equal((await db.query('SELECT 1 FROM leases')).rows.length, 1);
      } finally {
        await db.close();
      }
    });
  }

  it('two directories made from the same cache share nothing, and a reopened one keeps its rows', async () => {
    const [a, b] = [join(scratch, 'a'), join(scratch, 'b')];
    let db = await openDb(a);
    await db.query(`INSERT INTO leases (name, holder, lease_until) VALUES ('only in a', 'h', now())`);
    await db.close();
    const other = await openDb(b);
    assert.equal((await other.query('SELECT 1 FROM leases')).rows.length, 0);
    await other.close();
    db = await openDb(a);
    assert.deepEqual((await db.query<{ name: string }>('SELECT name FROM leases')).rows, [
      { name: 'only in a' },
    ]);
    await db.close();
  });

  it(
    "keeps the data directory its owner's alone (0700), also one that existed with wider permissions",
    {
      skip: process.platform === 'win32' ? 'POSIX modes' : false,
    },
    async () => {
      const made = join(scratch, 'made');
      const wide = join(scratch, 'wide');
      mkdirSync(wide, { mode: 0o755 });
      chmodSync(wide, 0o777);
      for (const dir of [made, wide]) {
        const db = await openDb(dir);
        await db.close();
        assert.equal(statSync(dir).mode & 0o777, 0o700, dir);
      }
    },
  );
});

describe('a first start killed while it copied the new database in', () => {
  it('is copied again at the next start (PGlite never ran on the part copied), not a directory that never starts', async () => {
    const dir = join(scratch, 'cut-short');
    mkdirSync(join(dir, 'pg_notify'), { recursive: true });
    // What a kill -9 during the copy leaves: the marker, and the first entries of the cluster.
    writeFileSync(join(dir, COPYING_FILE), '');
    writeFileSync(join(dir, 'PG_VERSION'), '17\n');
    const db = await openDb(dir);
    try {
      assert.deepEqual(
        await appliedVersions(db),
        loadMigrations().map((m) => m.version),
      );
      assert.equal(existsSync(join(dir, COPYING_FILE)), false);
    } finally {
      await db.close();
    }
  });
});
