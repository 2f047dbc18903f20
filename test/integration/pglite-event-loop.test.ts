/**
 * PGlite runs in this thread, and its statements settle as promise callbacks: a command that runs statement
 * after statement (an audit verify, a DLQ replay, a big tail on PGlite) never let the event loop turn. No timer
 * ran (the data directory's lock went unrenewed for 37 s: another process took it over and the two destroyed
 * the directory) and no signal handler (Ctrl-C and SIGTERM ignored until the work was done). The session lets
 * the loop turn between statements after a few dozen milliseconds of them.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { openDb } from '../../src/store/db.ts';

describe('statements on PGlite, one after another', () => {
  it('let timers run meanwhile, within the bound', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskflow-pglite-loop-'));
    const db = await openDb(join(dir, 'db'));
    try {
      await db.query('CREATE TABLE t (n int)');
      let ticks = 0;
      let longestGapMs = 0;
      let last = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        longestGapMs = Math.max(longestGapMs, now - last);
        last = now;
        ticks++;
      }, 5);
      const started = performance.now();
      let statements = 0;
      // Statements and transactions back to back, as a long command runs them, for a second.
      while (performance.now() - started < 1_000) {
        await db.query('INSERT INTO t VALUES ($1)', [statements++]);
        await db.transaction(async (tx) => {
          await tx.query('SELECT count(*) FROM t');
          await tx.query('UPDATE t SET n = n + 1 WHERE n = $1', [statements]);
        });
      }
      const ranMs = performance.now() - started;
      clearInterval(timer);
      longestGapMs = Math.max(longestGapMs, performance.now() - last);
      assert.ok(statements > 10, `the premise: statements ran (${statements})`);
      assert.ok(ticks >= 5, `a 5 ms timer ran ${ticks} times in ${Math.round(ranMs)} ms of statements`);
      // Bounded by the session's turn (50 ms) and what one statement takes, with room for a loaded machine.
      assert.ok(longestGapMs < 500, `the timer waited ${Math.round(longestGapMs)} ms at most once`);
    } finally {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
