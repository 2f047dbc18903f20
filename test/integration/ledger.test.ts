/**
 * The consumers' dedupe ledger (processed_events) is bounded: rows past LEDGER_RETENTION_MS are deleted in
 * batches, by the active relay's housekeeping in a running system, and counted in /metrics; recent rows (the
 * ones that still stop a redelivered event from being applied twice) stay. Idempotency-Key rows go after 24 h.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openDb, type Db } from '../../src/store/db.ts';
import { firstTimeMany, pruneProcessed } from '../../src/store/idempotency.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp, waitFor } from '../helpers/app.ts';

const DAY = 24 * 3_600_000;

async function seed(db: Db, consumer: string, ids: string[], ageDays: number): Promise<void> {
  await firstTimeMany(db, consumer, ids);
  await db.query(
    `UPDATE processed_events SET processed_at = now() - ($1::int * interval '1 day') WHERE event_id = ANY($2::text[])`,
    [ageDays, ids],
  );
}
const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
const remaining = async (db: Db) =>
  (await db.query<{ event_id: string }>(`SELECT event_id FROM processed_events ORDER BY event_id`)).rows.map(
    (r) => r.event_id,
  );

describe('dedupe ledger pruning', () => {
  it('deletes the rows older than the retention, in batches, and keeps the recent ones', async () => {
    const db = await openDb('memory://');
    try {
      await migrate(db);
      await seed(db, 'audit', ids('old', 7), 40);
      await seed(db, 'reminders', ids('older', 4), 400);
      await seed(db, 'audit', ids('new', 5), 2);
      assert.equal(await pruneProcessed(db, 31 * DAY, 3), 11);
      assert.deepEqual(await remaining(db), ids('new', 5));
      // A recent id still refuses its event a second time.
      assert.equal((await firstTimeMany(db, 'audit', ['new-0', 'fresh'])).size, 1);
      assert.equal(await pruneProcessed(db, 31 * DAY, 3), 0);
    } finally {
      await db.close();
    }
  });

  it('is pruned by the running relay and counted in /metrics', async () => {
    const db = await openDb('memory://');
    await migrate(db);
    await seed(db, 'audit', ids('old', 20), 3);
    await seed(db, 'audit', ids('new', 3), 0);
    await db.query(
      `INSERT INTO idempotency_keys (user_id, key, request_hash, response, created_at)
       VALUES ('u', 'old', 'h', '{}', now() - interval '25 hours'), ('u', 'new', 'h', '{}', now())`,
    );
    const app = await startApp(db, { targets: ['api', 'relay'], env: { LEDGER_RETENTION_MS: String(DAY) } });
    try {
      await waitFor(async () => ((await remaining(db)).length === 3 ? true : undefined), 10_000);
      assert.deepEqual(await remaining(db), ids('new', 3));
      const metrics = await (await fetch(`${app.url}/metrics`)).text();
      assert.match(metrics, /^taskflow_ledger_pruned_rows_total 20$/m);
      const keys = await db.query<{ key: string }>(`SELECT key FROM idempotency_keys`);
      assert.deepEqual(keys.rows, [{ key: 'new' }]); // Idempotency-Key rows past their 24 h go too
    } finally {
      await app.stop();
      await db.close();
    }
  });
});
