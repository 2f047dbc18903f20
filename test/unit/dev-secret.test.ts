/**
 * The development secret next to a PGlite data directory (config.ts devSecret): made once, readable by its
 * owner only, and refused when someone else could have put it there or can read it (they could sign tokens
 * for any user). Also the data directory itself: its owner's alone, as PostgreSQL requires of its own.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config.ts';

const dirs: string[] = [];
const fresh = () => {
  const dir = mkdtempSync(join(tmpdir(), 'taskflow-dev-secret-'));
  dirs.push(dir);
  return dir;
};
const configFor = (dir: string) => loadConfig({ DATABASE_URL: join(dir, 'db') });

describe('development secret', { skip: process.platform === 'win32' ? 'POSIX modes' : false }, () => {
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('is made once, 0600, and read again', () => {
    const dir = fresh();
    const first = configFor(dir).jwt.secret;
    const file = join(dir, 'db.dev-jwt-secret');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(readFileSync(file, 'utf8').trim(), first);
    assert.equal(configFor(dir).jwt.secret, first);
  });

  it('is one per data directory, decided by the path alone; one an earlier version made beside it is kept', () => {
    const dir = fresh();
    const a = loadConfig({ DATABASE_URL: join(dir, 'a') }).jwt;
    const b = loadConfig({ DATABASE_URL: join(dir, 'b') }).jwt;
    assert.equal(a.devSecretFile, join(dir, 'a.dev-jwt-secret'));
    assert.equal(b.devSecretFile, join(dir, 'b.dev-jwt-secret'));
    assert.notEqual(a.secret, b.secret);
    assert.equal(loadConfig({ DATABASE_URL: `FILE://${join(dir, 'a')}` }).jwt.secret, a.secret);
    // The same directory named from another working directory: the same secret (taskflow token and the server).
    const cwd = process.cwd();
    try {
      process.chdir(dir);
      assert.equal(loadConfig({ DATABASE_URL: 'a' }).jwt.secret, a.secret);
      assert.equal(loadConfig({}).jwt.devSecretFile, join(dir, '.data', 'db.dev-jwt-secret'));
    } finally {
      process.chdir(cwd);
    }
    const earlier = fresh();
    writeFileSync(join(earlier, 'dev-jwt-secret'), `${'e'.repeat(43)}\n`, { mode: 0o600 });
    assert.equal(loadConfig({ DATABASE_URL: join(earlier, 'db') }).jwt.secret, 'e'.repeat(43));
    assert.equal(
      loadConfig({ DATABASE_URL: '.data/db', JWT_SECRET: 'x'.repeat(32) }).jwt.devSecretFile,
      undefined,
      'a JWT_SECRET set: no development secret',
    );
  });

  it('is refused when other users can read or write it, or it is a link, naming the way out', () => {
    const open = fresh();
    writeFileSync(join(open, 'db.dev-jwt-secret'), `${'k'.repeat(43)}\n`, { mode: 0o644 });
    chmodSync(join(open, 'db.dev-jwt-secret'), 0o644);
    assert.throws(
      () => configFor(open),
      (e: Error) => e instanceof ConfigError && /mode 644/.test(e.message),
    );

    const linked = fresh();
    const planted = join(fresh(), 'planted');
    writeFileSync(planted, `${'k'.repeat(43)}\n`, { mode: 0o600 });
    symlinkSync(planted, join(linked, 'db.dev-jwt-secret'));
    assert.throws(
      () => configFor(linked),
      (e: Error) => e instanceof ConfigError && /not a regular file/.test(e.message),
    );

    const short = fresh();
    writeFileSync(join(short, 'db.dev-jwt-secret'), 'short\n', { mode: 0o600 });
    assert.throws(() => configFor(short), /shorter than 32 bytes/);
  });
});
