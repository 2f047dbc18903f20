/**
 * Migrations during an upgrade, on a real PostgreSQL server (store/migrate.ts): a migration that waits for a
 * table's lock behind the running version's long transaction gives up after lock_timeout and tries again,
 * instead of queueing every later query on that table behind it; each migration commits on its own.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { openDb } from '../../src/store/db.ts';
import { migrate, migrationDirs } from '../../src/store/migrate.ts';
import { createPgDatabase } from '../helpers/db.ts';
import { dirWith } from '../helpers/files.ts';

const baseUrl = process.env.TEST_DATABASE_URL;

describe('migrate on PostgreSQL', { skip: baseUrl ? false : 'needs TEST_DATABASE_URL' }, () => {
  it('gives up a lock wait after lock_timeout so the table stays usable, tries again, and applies once the lock is free', async () => {
    const created = await createPgDatabase(baseUrl!, 'tf_migrate');
    const db = await openDb(created.url);
    const reader = new pg.Client({ connectionString: created.url });
    const other = new pg.Client({ connectionString: created.url });
    try {
      const first = dirWith({
        '001_items.sql': 'CREATE TABLE items (id int PRIMARY KEY);\nINSERT INTO items VALUES (1);',
      });
      assert.deepEqual(await migrate(db, { dirs: [first] }), ['001_items.sql']);

      // The running version: a transaction that has read the table and stays open.
      await reader.connect();
      await reader.query('BEGIN');
      await reader.query('SELECT * FROM items');

      const next = dirWith({
        '001_items.sql': 'CREATE TABLE items (id int PRIMARY KEY);\nINSERT INTO items VALUES (1);',
        '002_tags.sql': 'CREATE TABLE tags (name text PRIMARY KEY);',
        '003_items_note.sql': 'ALTER TABLE items ADD COLUMN note text;',
      });
      const said: string[] = [];
      const upgrading = migrate(db, {
        dirs: [next],
        lockTimeoutMs: 300,
        attempts: 50,
        backoffMs: () => 100,
        log: (m) => said.push(m),
      });
      // Meanwhile the running version's other queries on the table are answered: with no lock_timeout they
      // queued behind the ALTER for as long as the reader's transaction lasted.
      await other.connect();
      await new Promise((r) => setTimeout(r, 500));
      for (let i = 0; i < 3; i++) {
        const started = Date.now();
        await other.query('SELECT count(*) FROM items');
        assert.ok(
          Date.now() - started < 1_000,
          `a read waited ${Date.now() - started} ms behind the migration`,
        );
      }
      assert.ok(
        said.some((m) => /003_items_note\.sql waited 300 ms for a table's lock .*trying again/.test(m)),
        said.join('\n'),
      );
      // 002 committed on its own while 003 waits.
      assert.deepEqual(
        (await other.query('SELECT version FROM schema_migrations ORDER BY version')).rows.map(
          (r) => r.version,
        ),
        [1, 2],
      );
      await reader.query('COMMIT');
      assert.deepEqual(await upgrading, ['002_tags.sql', '003_items_note.sql']);
      assert.deepEqual(
        (
          await other.query(
            `SELECT column_name FROM information_schema.columns WHERE table_name = 'items' ORDER BY 1`,
          )
        ).rows.map((r) => r.column_name),
        ['id', 'note'],
      );
      assert.deepEqual(await migrate(db, { dirs: [next] }), [], 'nothing left to apply');
    } finally {
      await reader.end().catch(() => undefined);
      await other.end().catch(() => undefined);
      await db.close();
      await created.drop();
    }
  });

  it('020 keeps addresses saved before it confirmed without rewriting the table; any change of an address unconfirms it', async () => {
    const created = await createPgDatabase(baseUrl!, 'tf_migrate');
    const db = await openDb(created.url);
    try {
      const [dir] = migrationDirs();
      const files = readdirSync(dir!).filter((f) => f.endsWith('.sql'));
      const before = Object.fromEntries(
        files.filter((f) => f < '020').map((f) => [f, readFileSync(join(dir!, f), 'utf8')]),
      );
      await migrate(db, { dirs: [dirWith(before)] });
      await db.query(
        `INSERT INTO notification_preferences (user_id, email) VALUES ('had', 'had@example.com'), ('none', NULL)`,
      );
      // Neither the table (its file) nor its rows (their versions: an UPDATE makes new ones) are rewritten.
      const written = `SELECT pg_relation_filenode('notification_preferences')::text AS node,
                              (SELECT string_agg(xmin::text, ',' ORDER BY user_id) FROM notification_preferences) AS rows`;
      const was = (await db.query(written)).rows[0];
      assert.ok((await migrate(db, { dirs: [dir!] })).includes('020_email_confirmation.sql'));
      assert.deepEqual((await db.query(written)).rows[0], was, 'nothing of the table rewritten');
      const confirmed = async () =>
        (
          await db.query<{ user_id: string; confirmed: boolean }>(
            `SELECT user_id, email IS NOT NULL AND email_confirmed_at IS NOT NULL AS confirmed
               FROM notification_preferences ORDER BY 1`,
          )
        ).rows;
      // A row written now, as a replica of the previous version writes it (it knows no confirmation).
      await db.query(
        `INSERT INTO notification_preferences (user_id, email) VALUES ('new', 'new@example.com')`,
      );
      assert.deepEqual(await confirmed(), [
        { user_id: 'had', confirmed: true },
        { user_id: 'new', confirmed: false },
        { user_id: 'none', confirmed: false },
      ]);
      // That replica's upsert of another address: unconfirmed; the same address written again: still confirmed.
      const oldUpsert = `INSERT INTO notification_preferences (user_id, email) VALUES ($1, $2)
                           ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, updated_at = now()`;
      await db.query(oldUpsert, ['had', 'had@example.com']);
      assert.equal((await confirmed())[0]!.confirmed, true);
      await db.query(oldUpsert, ['had', 'victim@example.com']);
      assert.equal((await confirmed())[0]!.confirmed, false);
    } finally {
      await db.close();
      await created.drop();
    }
  });

  it('fails naming the migration and the lock after its attempts, with nothing of it applied', async () => {
    const created = await createPgDatabase(baseUrl!, 'tf_migrate');
    const db = await openDb(created.url);
    const reader = new pg.Client({ connectionString: created.url });
    try {
      const first = dirWith({ '001_items.sql': 'CREATE TABLE items (id int PRIMARY KEY);' });
      await migrate(db, { dirs: [first] });
      await reader.connect();
      await reader.query('BEGIN');
      await reader.query('SELECT * FROM items');
      const next = dirWith({
        '001_items.sql': 'CREATE TABLE items (id int PRIMARY KEY);',
        '002_items_note.sql': 'ALTER TABLE items ADD COLUMN note text;\nCREATE TABLE notes (id int);',
      });
      await assert.rejects(
        migrate(db, { dirs: [next], lockTimeoutMs: 100, attempts: 2, backoffMs: () => 10 }),
        /migration 002_items_note\.sql waited more than 100 ms for a table's lock 2 times .*nothing of it was applied/,
      );
      await reader.query('COMMIT');
      const tables = await db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name = 'notes'`,
      );
      assert.equal(tables.rows[0]!.n, 0);
    } finally {
      await reader.end().catch(() => undefined);
      await db.close();
      await created.drop();
    }
  });
});

describe('a database migrated by a newer Taskflow', () => {
  it('a PGlite data directory is refused by `taskflow up` and `migrate`, in one line naming the migration', async () => {
    const root = mkdtempSync(join(tmpdir(), 'taskflow-newer-'));
    try {
      const dir = join(root, 'db');
      const db = await openDb(dir);
      await migrate(db);
      await db.query("INSERT INTO schema_migrations (version, name) VALUES (999, '999_workspaces.sql')");
      await db.close();
      for (const command of ['up', 'migrate']) {
        const r = spawnSync(process.execPath, ['bin/taskflow.js', command], {
          env: { ...process.env, DATABASE_URL: dir, PORT: '0', LOG_LEVEL: 'warn' },
          encoding: 'utf8',
          timeout: 60_000,
        });
        assert.equal(r.status, 1, `${command}: ${r.stdout}${r.stderr}`);
        assert.match(
          r.stderr,
          /migrated by a newer Taskflow: 999_workspaces\.sql is not known to this version/,
        );
        assert.ok(r.stderr.trim().split('\n').length <= 2, `one clear line, not a stack:\n${r.stderr}`);
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it(
    'on PostgreSQL is said and run on, as the previous version does during a rolling upgrade',
    { skip: baseUrl ? false : 'needs TEST_DATABASE_URL' },
    async () => {
      const { url, drop } = await createPgDatabase(baseUrl!);
      const db = await openDb(url);
      try {
        await migrate(db);
        // The ledger's columns, as every earlier version made them (a new name would differ by database).
        const columns = await db.query<{ column_name: string }>(
          "SELECT column_name FROM information_schema.columns WHERE table_name = 'schema_migrations' ORDER BY ordinal_position",
        );
        assert.deepEqual(
          columns.rows.map((c) => c.column_name),
          ['version', 'name', 'applied_at'],
        );
        await db.query("INSERT INTO schema_migrations (version, name) VALUES (999, '999_workspaces.sql')");
        const warned: string[] = [];
        assert.deepEqual(await migrate(db, { warn: (m) => warned.push(m) }), []);
        assert.equal(warned.length, 1);
        assert.match(warned[0]!, /999_workspaces\.sql is not known to this version; going on/);
        await assert.rejects(migrate(db, { newerSchema: 'refuse' }), /migrated by a newer Taskflow/);
        // One numbered between two this version knows (the newer version's, or a branch's) is unknown too.
        const known = dirWith({ '101_a.sql': 'SELECT 1;', '103_c.sql': 'SELECT 1;' });
        await db.query(
          "INSERT INTO schema_migrations (version, name) VALUES (101, '101_a.sql'), (102, '102_b.sql'), (103, '103_c.sql')",
        );
        await assert.rejects(migrate(db, { dirs: [known], newerSchema: 'refuse' }), (err: Error) => {
          assert.match(err.message, /\b102_b\.sql\b/);
          assert.doesNotMatch(err.message, /101_a|103_c/);
          return true;
        });
      } finally {
        await db.close();
        await drop();
      }
    },
  );
});
