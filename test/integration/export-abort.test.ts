/**
 * An export that fails after its 200 and first bytes is seen as failed by the client: the chunked response
 * is aborted (no terminating chunk), never ended as if complete.
 */
import assert from 'node:assert/strict';
import { get } from 'node:http';
import { it } from 'node:test';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp } from '../helpers/app.ts';

it('aborts an audit export whose database fails mid-way', async () => {
  const db = await openDb('memory://');
  await migrate(db);
  await db.query(
    `INSERT INTO audit_log (event_id, user_id, user_seq, task_id, operation, occurred_at, recorded_at, change,
       trace_id, client_ip, user_agent, prev_hash, hash)
     SELECT 'bulk-' || g, 'bulk', g, 'task-' || g, 'task.updated', now(), now(), '{}'::jsonb,
       null, '127.0.0.1', 'loader', lpad((g - 1)::text, 64, '0'), lpad(g::text, 64, '0')
     FROM generate_series(1, 50000) g`,
  );
  const app = await startApp(db, { targets: ['api', 'audit'] });
  const token = await app.token('bulk');
  try {
    const outcome = await new Promise<{ status: number; bytes: number; ended: boolean; error?: string }>(
      (resolve) => {
        const req = get(
          `${app.url}/api/audit/export?format=ndjson`,
          { headers: { authorization: `Bearer ${token}` } },
          (res) => {
            let bytes = 0;
            let failed = false;
            res.once('data', () => void db.close()); // the database goes away after the first bytes
            res.on('data', (c: Buffer) => (bytes += c.length));
            res.on('end', () => resolve({ status: res.statusCode!, bytes, ended: true }));
            res.on('error', (err) => {
              failed = true;
              resolve({ status: res.statusCode!, bytes, ended: false, error: err.message });
            });
            res.on('close', () => {
              if (!failed && !res.complete) resolve({ status: res.statusCode!, bytes, ended: false });
            });
          },
        );
        req.on('error', (err) => resolve({ status: 0, bytes: 0, ended: false, error: err.message }));
      },
    );
    assert.equal(outcome.status, 200);
    assert.ok(outcome.bytes > 0, 'the first bytes arrived');
    assert.equal(outcome.ended, false, `the response ended as if complete after ${outcome.bytes} bytes`);
    assert.ok(outcome.bytes < 50_000 * 400, 'not the whole export');
  } finally {
    await app.stop().catch(() => undefined);
  }
});
