/**
 * The cache a new PGlite data directory is copied from (store/pglite-open.ts clusterCacheDir): this user's
 * alone, or not used. A template another user could put there would become every new database.
 */
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { clusterCacheDir } from '../../src/store/pglite-open.ts';

const posix = process.platform !== 'win32' && typeof process.getuid === 'function';

describe('PGlite cluster cache', { skip: posix ? false : 'POSIX owners and modes' }, () => {
  const saved = process.env.TMPDIR;
  const roots: string[] = [];
  const inFreshTmp = () => {
    const root = mkdtempSync(join(tmpdir(), 'taskflow-cache-test-'));
    roots.push(root);
    process.env.TMPDIR = root;
    return { root, expected: join(root, `taskflow-cache-${process.getuid!()}`) };
  };
  after(() => {
    process.env.TMPDIR = saved;
    for (const r of roots) rmSync(r, { recursive: true, force: true });
  });

  it('is a directory of this user, 0700, made when missing and used again', () => {
    const { expected } = inFreshTmp();
    assert.equal(clusterCacheDir(), expected);
    assert.equal(statSync(expected).mode & 0o777, 0o700);
    assert.equal(clusterCacheDir(), expected);
  });

  it('is not one that others can write, or that another user owns: a fresh private one instead', () => {
    const writable = inFreshTmp();
    mkdirSync(writable.expected);
    chmodSync(writable.expected, 0o777);
    const instead = clusterCacheDir();
    assert.notEqual(instead, writable.expected);
    assert.equal(statSync(instead).mode & 0o077, 0);
    if (process.getuid!() === 0) {
      const foreign = inFreshTmp();
      mkdirSync(foreign.expected, { mode: 0o700 });
      chownSync(foreign.expected, 65534, 65534);
      assert.notEqual(clusterCacheDir(), foreign.expected);
    }
  });
});
