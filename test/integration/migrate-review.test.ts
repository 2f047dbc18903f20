/**
 * Migrations as a production deployment runs them (store/migrate.ts): with a statement_timeout in DATABASE_URL
 * (or the role's), served by a role that may not create tables, and a migration that builds an index without
 * blocking the running version's writes (`-- taskflow:no-transaction`, CREATE INDEX CONCURRENTLY).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import pg from 'pg';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate, pendingMigrations, type Migratable } from '../../src/store/migrate.ts';
import { createPgDatabase } from '../helpers/db.ts';
import { dirWith } from '../helpers/files.ts';

const baseUrl = process.env.TEST_DATABASE_URL;
const LOCK_ID = 0x7a5bf10; // store/migrate.ts

/** `url` with startup options, as DATABASE_URL may carry them. */
function withOptions(url: string, options: string): string {
  const u = new URL(url);
  u.searchParams.set('options', options);
  return u.toString();
}

const ITEMS = {
  '001_items.sql':
    "CREATE TABLE items (id int PRIMARY KEY, note text);\nINSERT INTO items SELECT g, 'note ' || (g % 50) FROM generate_series(1, 5000) g;",
};
const ITEMS_NOTE_CONCURRENTLY = {
  '002_items_note.sql':
    '-- taskflow:no-transaction\n-- Built without blocking the writes of items.\nCREATE INDEX CONCURRENTLY IF NOT EXISTS items_note ON items (note);',
};

/** Whether the index `name` is valid; undefined when there is none. */
async function indexValid(db: Db, name: string): Promise<boolean | undefined> {
  const r = await db.query<{ valid: boolean }>(
    'SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = to_regclass($1)',
    [name],
  );
  return r.rows[0]?.valid;
}

/**
 * Runs `test` on a new PostgreSQL database. `open` connects to it (to `url` when given: other options, another
 * role); once `test` ends, however it ends, each connection is closed, the last opened first, and the database
 * is dropped.
 */
async function onNewPgDatabase(
  test: (database: { url: string; open(url?: string): Promise<Db> }) => Promise<void>,
): Promise<void> {
  const created = await createPgDatabase(baseUrl!, 'tf_migrate');
  const opened: Db[] = [];
  const open = async (url = created.url) => {
    const db = await openDb(url);
    opened.push(db);
    return db;
  };
  try {
    await test({ url: created.url, open });
  } finally {
    for (const db of opened.reverse()) await db.close();
    await created.drop();
  }
}

/** A test on a new PostgreSQL database (onNewPgDatabase), skipped without TEST_DATABASE_URL. */
function itOnNewPgDatabase(name: string, test: Parameters<typeof onNewPgDatabase>[0]): void {
  it(name, { skip: baseUrl ? false : 'needs TEST_DATABASE_URL' }, () => onNewPgDatabase(test));
}

describe(
  'migrating with a statement_timeout in DATABASE_URL',
  { skip: baseUrl ? false : 'needs TEST_DATABASE_URL' },
  () => {
    itOnNewPgDatabase(
      "waits for another process's migrations longer than the timeout, then applies what is left",
      async ({ url, open }) => {
        const other = new pg.Client({ connectionString: url });
        await other.connect();
        try {
          const db = await open(withOptions(url, '-c statement_timeout=1000'));
          // Another process migrating: it holds the migrations' lock for 2.5 s (a start waits: docs/deploy.md).
          await other.query('BEGIN');
          await other.query('SELECT pg_advisory_xact_lock($1)', [LOCK_ID]);
          const release = setTimeout(() => void other.query('COMMIT'), 2_500);
          const said: string[] = [];
          const applied = await migrate(db, { dirs: [dirWith(ITEMS)], log: (m) => said.push(m) }).finally(
            () => clearTimeout(release),
          );
          assert.deepEqual(applied, ['001_items.sql']);
          assert.ok(
            said.some((m) => /waiting for the migrations' lock/.test(m)),
            said.join('\n'),
          );
        } finally {
          await other.end().catch(() => undefined);
        }
      },
    );

    itOnNewPgDatabase(
      'applies a migration statement that takes longer than the timeout, in a transaction or not',
      async ({ url, open }) => {
        const db = await open(withOptions(url, '-c statement_timeout=300'));
        const dir = dirWith({
          ...ITEMS,
          // Each stands for an index build or a rewrite over a large table.
          '002_slow.sql': 'SELECT pg_sleep(0.8);',
          '003_slow_outside.sql': '-- taskflow:no-transaction\nSELECT pg_sleep(0.8);',
        });
        assert.deepEqual(await migrate(db, { dirs: [dir] }), [
          '001_items.sql',
          '002_slow.sql',
          '003_slow_outside.sql',
        ]);
        // The API's statements keep the URL's timeout: only the migrations' own transactions lift it.
        await assert.rejects(db.query('SELECT pg_sleep(0.8)'), /statement timeout/);
      },
    );
  },
);

describe(
  'a start on a current schema by a role without CREATE',
  { skip: baseUrl ? false : 'needs TEST_DATABASE_URL' },
  () => {
    it('migrates nothing and starts: no ledger to create, no lock to take', async () => {
      const role = `tf_app_${randomBytes(4).toString('hex')}`;
      const dir = dirWith(ITEMS);
      try {
        await onNewPgDatabase(async ({ url: ownerUrl, open }) => {
          const owner = await open();
          // The chart's migrate Job, as the schema's owner.
          await migrate(owner, { dirs: [dir] });
          // The serving role reads and writes the tables, and may create nothing (PostgreSQL 15+'s default for
          // public, said again for older servers).
          await owner.query(`CREATE ROLE ${role} LOGIN PASSWORD 'app-password-123'`);
          await owner.query('REVOKE CREATE ON SCHEMA public FROM PUBLIC');
          await owner.query(`GRANT USAGE ON SCHEMA public TO ${role}`);
          await owner.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${role}`);
          const url = new URL(ownerUrl);
          url.username = role;
          url.password = 'app-password-123';
          const app = await open(url.toString());
          assert.deepEqual(await pendingMigrations(app, [dir]), []);
          assert.deepEqual(await migrate(app, { dirs: [dir] }), []);
          await assert.rejects(
            app.query('CREATE TABLE mine (id int)'),
            /permission denied/,
            'the role is least-privileged',
          );
          // What it would have to apply still fails, saying why.
          const next = dirWith({ ...ITEMS, '002_tags.sql': 'CREATE TABLE tags (name text PRIMARY KEY);' });
          await assert.rejects(migrate(app, { dirs: [next] }), /permission denied/);
        });
      } finally {
        const admin = new pg.Client({ connectionString: baseUrl });
        await admin.connect();
        await admin.query(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
        await admin.end();
      }
    });
  },
);

describe('a migration marked -- taskflow:no-transaction', () => {
  itOnNewPgDatabase(
    'builds its index concurrently on PostgreSQL, is recorded once, and is not applied again',
    async ({ open }) => {
      const db = await open();
      const dir = dirWith({ ...ITEMS, ...ITEMS_NOTE_CONCURRENTLY });
      const said: string[] = [];
      assert.deepEqual(await migrate(db, { dirs: [dir], log: (m) => said.push(m) }), [
        '001_items.sql',
        '002_items_note.sql',
      ]);
      assert.ok(
        said.includes('applying migration 002_items_note.sql (outside a transaction)'),
        said.join('\n'),
      );
      assert.equal(await indexValid(db, 'items_note'), true);
      const ledger = await db.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY 1');
      assert.deepEqual(
        ledger.rows.map((r) => r.version),
        [1, 2],
      );
      assert.deepEqual(await migrate(db, { dirs: [dir] }), []);
    },
  );

  itOnNewPgDatabase(
    'a second process waits for it (no deadlock with the concurrent build), then finds it applied',
    async ({ open }) => {
      const first = await open();
      const second = await open();
      await migrate(first, { dirs: [dirWith(ITEMS)] });
      const dir = dirWith({
        ...ITEMS,
        '002_items_note.sql':
          '-- taskflow:no-transaction\nSELECT pg_sleep(1);\nCREATE INDEX CONCURRENTLY IF NOT EXISTS items_note ON items (note);',
      });
      const saidBySecond: string[] = [];
      const firstDone = migrate(first, { dirs: [dir] });
      // The second starts while the first holds the lock (its pg_sleep), and is still waiting when the build
      // waits for the transactions older than it: a second waiting inside pg_advisory_xact_lock would be one.
      await new Promise((r) => setTimeout(r, 300));
      const secondDone = migrate(second, { dirs: [dir], log: (m) => saidBySecond.push(m) });
      const [byFirst, bySecond] = await Promise.all([firstDone, secondDone]);
      assert.deepEqual(byFirst, ['002_items_note.sql']);
      assert.deepEqual(bySecond, []);
      assert.ok(
        saidBySecond.some((m) => /waiting for the migrations' lock/.test(m)),
        saidBySecond.join('\n'),
      );
      const ledger = await first.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM schema_migrations WHERE version = 2',
      );
      assert.equal(ledger.rows[0]!.n, 1);
      assert.equal(await indexValid(first, 'items_note'), true);
    },
  );

  itOnNewPgDatabase(
    'a process that read the ledger before the previous migration committed waits for the lock between statements, not in one',
    async ({ open }) => {
      const first = await open();
      const db = await open();
      await migrate(first, { dirs: [dirWith({ '000_none.sql': 'SELECT 1;' })] });
      const dir = dirWith({
        '001_items.sql': `${ITEMS['001_items.sql']}\nSELECT pg_sleep(0.3);`,
        '002_items_note.sql':
          '-- taskflow:no-transaction\nSELECT pg_sleep(0.5);\nCREATE INDEX CONCURRENTLY IF NOT EXISTS items_note ON items (note);',
      });
      let firstAt = (_: string) => {};
      const firstApplying = (name: string) =>
        new Promise<void>((resolve) => (firstAt = (m) => m.includes(name) && resolve()));
      const applying001 = firstApplying('001_items.sql');
      const firstDone = migrate(first, { dirs: [dir], log: (m) => firstAt(m) });
      await applying001;
      const applying002 = firstApplying('002_items_note.sql');
      // The second process has read the ledger (001 pending) and tries 001's lock once the first holds the
      // lock for 002: a session waiting in pg_advisory_xact_lock holds a snapshot, which 002's concurrent
      // build waits for, while it waits for the build's lock (PostgreSQL ended one of them: a deadlock).
      let transactions = 0;
      const second: Migratable = {
        kind: db.kind,
        url: db.url,
        query: db.query.bind(db),
        async transaction(fn) {
          if (++transactions === 2) await applying002;
          return db.transaction(fn);
        },
      };
      const [byFirst, bySecond] = await Promise.all([firstDone, migrate(second, { dirs: [dir] })]);
      assert.deepEqual(byFirst, ['001_items.sql', '002_items_note.sql']);
      assert.deepEqual(bySecond, []);
      assert.equal(await indexValid(db, 'items_note'), true);
    },
  );

  itOnNewPgDatabase(
    'drops the invalid index a failed build left and builds it again when tried again',
    async ({ open }) => {
      const db = await open();
      const dir = dirWith({
        ...ITEMS,
        '002_items_note.sql':
          '-- taskflow:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS items_note ON items (note);',
      });
      // Notes repeat: the build fails, and leaves its index behind, INVALID (PostgreSQL does).
      await assert.rejects(migrate(db, { dirs: [dir] }), /could not create unique index/);
      assert.equal(await indexValid(db, 'items_note'), false);
      assert.deepEqual(await pendingMigrations(db, [dir]), ['002_items_note.sql'], 'not recorded');
      await db.query("UPDATE items SET note = 'note ' || id");
      const said: string[] = [];
      // IF NOT EXISTS alone would keep the invalid index and record the migration.
      assert.deepEqual(await migrate(db, { dirs: [dir], log: (m) => said.push(m) }), ['002_items_note.sql']);
      assert.equal(await indexValid(db, 'items_note'), true);
      assert.ok(
        said.some((m) => /dropping index items_note, left invalid/.test(m)),
        said.join('\n'),
      );
    },
  );

  it('is applied as it is on PGlite, and recorded once', async () => {
    const db = await openDb('memory://');
    try {
      // Numbered past the shipped migrations, which a new PGlite database has applied.
      const dir = dirWith({
        '901_items.sql': ITEMS['001_items.sql'],
        '902_items_note.sql': ITEMS_NOTE_CONCURRENTLY['002_items_note.sql'],
      });
      assert.deepEqual(await migrate(db, { dirs: [dir] }), ['901_items.sql', '902_items_note.sql']);
      assert.equal(await indexValid(db, 'items_note'), true);
      assert.deepEqual(await migrate(db, { dirs: [dir] }), []);
      const ledger = await db.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM schema_migrations WHERE version = 902',
      );
      assert.equal(ledger.rows[0]!.n, 1);
      // Its session's settings are the application's: the migration set none.
      const settings = await db.query<{ lock: string; statement: string }>(
        "SELECT current_setting('lock_timeout') AS lock, current_setting('statement_timeout') AS statement",
      );
      assert.deepEqual(settings.rows[0], { lock: '0', statement: '0' });
    } finally {
      await db.close();
    }
  });

  itOnNewPgDatabase(
    'a CONCURRENTLY in a migration without the mark fails saying how to mark it',
    async ({ open }) => {
      const db = await open();
      const dir = dirWith({
        ...ITEMS,
        '002_items_note.sql': 'CREATE INDEX CONCURRENTLY items_note ON items (note);',
      });
      await assert.rejects(
        migrate(db, { dirs: [dir] }),
        /migration 002_items_note\.sql: CREATE INDEX CONCURRENTLY cannot run inside a transaction block: .*-- taskflow:no-transaction/,
      );
    },
  );
});
