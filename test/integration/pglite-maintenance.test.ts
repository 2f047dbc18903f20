/**
 * Autovacuum's job on PGlite (store/pglite-maintenance.ts), on a real PGlite data directory: tables whose
 * live rows retention bounds stay bounded on disk through cycles of inserts and prunes (without VACUUM, the
 * space of the deleted rows was never reused: each cycle added a cycle's size), and closing the database
 * stops the maintenance first: a pass under way ends, and no statement runs after the close.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { EmbeddedAdmin } from '../../src/bus/embedded/admin.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { pruneProcessed } from '../../src/store/idempotency.ts';
import { migrate } from '../../src/store/migrate.ts';
import type { MaintenanceLog } from '../../src/store/pglite-maintenance.ts';

const scratch = mkdtempSync(join(tmpdir(), 'taskflow-pglite-maintenance-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

interface PassLogged {
  statements: { statement: string; why: string }[];
}

/** What the maintenance logged: its passes (debug) and warnings. */
function recorder() {
  const passes: PassLogged[] = [];
  const warnings: string[] = [];
  const log: MaintenanceLog = {
    debug: (details) => {
      if ('statements' in details) passes.push(details as PassLogged);
    },
    warn: (details, message) => warnings.push(`${message} ${String((details as { err?: unknown }).err)}`),
  };
  return { passes, warnings, log };
}

/** Waits until `tables` have no dead rows (a VACUUM after their last delete); false after `ms`. */
async function noDeadRows(db: Db, tables: readonly string[], ms = 10_000): Promise<boolean> {
  const deadline = performance.now() + ms;
  for (;;) {
    await db.query('SELECT pg_stat_force_next_flush()');
    const r = await db.query<{ dead: string }>(
      'SELECT sum(pg_stat_get_dead_tuples(t::regclass))::text AS dead FROM unnest($1::text[]) t',
      [tables],
    );
    if (Number(r.rows[0]!.dead) === 0) return true;
    if (performance.now() > deadline) return false;
    await sleep(20);
  }
}

const totalSize = async (db: Db, table: string) =>
  Number(
    (await db.query<{ b: string }>(`SELECT pg_total_relation_size($1::regclass)::text AS b`, [table]))
      .rows[0]!.b,
  );

describe('PGlite maintenance (VACUUM, ANALYZE)', () => {
  it('keeps tables that retention prunes bounded on disk through cycles of inserts and prunes', async () => {
    const { passes, warnings, log } = recorder();
    const db = await openDb(join(scratch, 'cycles'), { maintenanceIntervalMs: 50, log });
    try {
      await migrate(db);
      const admin = new EmbeddedAdmin(db);
      await db.query(`INSERT INTO bus_topics VALUES ('task-updates', 1, 3600000) ON CONFLICT DO NOTHING`);
      await db.query(`INSERT INTO bus_partitions VALUES ('task-updates', 0, 0) ON CONFLICT DO NOTHING`);
      const value = JSON.stringify({ type: 'task.changed', data: { task: { title: 'x'.repeat(300) } } });
      const N = 10_000;
      const sizes = { processed_events: [] as number[], bus_messages: [] as number[] };
      let maintained = true;
      for (let cycle = 0; cycle < 6; cycle++) {
        // A day of the dedupe ledger, and an hour of task-updates, both past retention by the next prune.
        await db.query(
          `INSERT INTO processed_events (consumer, event_id, processed_at)
           SELECT 'taskflow-audit', 'c${cycle}-' || g, now() - interval '40 days' FROM generate_series(1, $1) g`,
          [N],
        );
        await db.query(
          `INSERT INTO bus_messages (topic, partition, "offset", key, value, created_at)
           SELECT 'task-updates', 0, $2::bigint + g, 'u', $3::jsonb, now() - interval '2 hours'
             FROM generate_series(0, $1 - 1) g`,
          [N, cycle * N, value],
        );
        assert.equal(await pruneProcessed(db, 31 * 24 * 3600_000), N);
        assert.equal(await admin.applyRetention(), N);
        // Before the maintenance, nothing ever came: one wait says so, the sizes tell the rest. A pass may
        // run between the prune's statements (the session lets timers run), so the wait is for no dead row.
        if (maintained) maintained = await noDeadRows(db, ['processed_events', 'bus_messages']);
        for (const table of ['processed_events', 'bus_messages'] as const)
          sizes[table].push(await totalSize(db, table));
      }
      // With the space of deleted rows reused, growth stops after the second cycle (an index's emptied
      // pages are reused a VACUUM after the one that freed them); without, each cycle added one's size.
      for (const [table, s] of Object.entries(sizes))
        assert.ok(
          s[5]! < s[1]! * 1.25,
          `${table} grew from ${s[1]} to ${s[5]} bytes over four cycles with no live rows (${s.join(', ')})`,
        );
      const vacuums = passes
        .flatMap((p) => p.statements)
        .filter((s) => s.statement === 'VACUUM processed_events' && /dead >/.test(s.why));
      assert.ok(vacuums.length >= 1, 'VACUUM for its dead rows, by autovacuum rule');
      // Statistics for the planner too: the counts of changed rows passed the ANALYZE threshold.
      assert.ok(passes.some((p) => p.statements.some((s) => s.statement === 'ANALYZE processed_events')));
      assert.deepEqual(warnings, []);
    } finally {
      await db.close();
    }
  });

  it('stops when the database closes: a pass under way ends, and no statement runs after the close', async () => {
    const { passes, warnings, log } = recorder();
    const db = await openDb(join(scratch, 'close'), { maintenanceIntervalMs: 20, log });
    // The first pass after the database opens vacuums every table (what was deleted before is counted
    // nowhere after a restart): a hundred statements, so the close comes while it is under way.
    const vacuums = () => db.statements.byKind.get('other') ?? 0;
    const deadline = performance.now() + 10_000;
    while (vacuums() === 0 && performance.now() < deadline) await sleep(5);
    assert.ok(vacuums() > 0, 'a maintenance pass started');
    await db.close();
    const atClose = new Map(db.statements.byKind);
    await sleep(300); // many intervals
    assert.deepEqual(new Map(db.statements.byKind), atClose, 'no statement after the close');
    assert.deepEqual(warnings, [], 'nothing failed (a statement on the closed database would)');
    assert.ok(passes.length <= 1);
    assert.ok(
      (passes[0]?.statements.length ?? 0) < 90,
      'the pass under way ended at the close, not after its last table',
    );
  });
});
