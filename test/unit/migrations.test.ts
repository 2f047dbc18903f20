/** Migrations are one numbered sequence over ./migrations and the targets' own folders (store/migrate.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadMigrations, migrationDirs } from '../../src/store/migrate.ts';
import { dirWith } from '../helpers/files.ts';

describe('migrations', () => {
  it("orders the store's and a target's migrations by number, whatever folder they are in", () => {
    const store = dirWith({ '001_init.sql': 'a', '003_more.sql': 'c', 'notes.txt': 'ignored' });
    const target = dirWith({ '002_stats.sql': 'b' });
    assert.deepEqual(
      loadMigrations([store, target]).map((m) => [m.version, m.name, m.sql]),
      [
        [1, '001_init.sql', 'a'],
        [2, '002_stats.sql', 'b'],
        [3, '003_more.sql', 'c'],
      ],
    );
  });

  it('refuses two migrations with one number', () => {
    const store = dirWith({ '001_init.sql': 'a', '002_more.sql': 'b' });
    const target = dirWith({ '002_stats.sql': 'c' });
    assert.throws(
      () => loadMigrations([store, target]),
      /two migrations numbered 2: 002_more.sql and 002_stats.sql/,
    );
  });

  it('reads the store folder first and the checkout has one sequence', () => {
    assert.match(migrationDirs()[0]!, /store[/\\]migrations$/);
    const versions = loadMigrations().map((m) => m.version);
    assert.deepEqual(
      versions,
      [...versions].sort((a, b) => a - b),
    );
    assert.ok(versions.length >= 10);
  });
});
