/**
 * The audit chain written a run at a time (appendAuditRecords) on PGlite and PostgreSQL: it continues the
 * chains that single appends started, per user in the run's order, verifies, and a run that would skip a
 * record already in the log fails as a whole, leaving the chains as they were.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import {
  appendAuditRecord,
  appendAuditRecords,
  verifyChain,
  type AuditInput,
} from '../../src/services/audit/chain.ts';
import { backends } from '../helpers/db.ts';

const input = (user: string, operation: string): AuditInput => ({
  event_id: randomUUID(),
  user_id: user,
  task_id: randomUUID(),
  operation,
  occurred_at: '2026-03-01T12:00:00.000Z',
  recorded_at: '2026-03-01T12:00:01.000Z',
  change: { before: null, after: { title: `${user} ${operation}` } },
  trace_id: null,
  client_ip: null,
  user_agent: null,
});

for (const backend of backends) {
  describe(`audit chain runs on ${backend.name}`, async () => {
    const { db, drop } = await backend.fresh();
    after(drop);
    const chain = async (user: string) =>
      (
        await db.query<{ seq: string; operation: string }>(
          'SELECT user_seq::text AS seq, operation FROM audit_log WHERE user_id = $1 ORDER BY user_seq',
          [user],
        )
      ).rows.map((r) => `${r.seq}:${r.operation}`);

    it('continues single appends, per user in run order, and verifies', async () => {
      await db.transaction((tx) => appendAuditRecord(tx, input('ann', 'task.created')));
      const run = [
        input('bob', 'task.created'),
        input('ann', 'task.updated'),
        input('bob', 'task.completed'),
        input('ann', 'task.deleted'),
      ];
      const records = await db.transaction((tx) => appendAuditRecords(tx, run));
      assert.deepEqual(
        records.map((r) => `${r.user_id}#${r.seq}`),
        ['bob#1', 'ann#2', 'bob#2', 'ann#3'],
      );
      assert.ok(records.every((r) => /^\d+$/.test(r.id)));
      await db.transaction((tx) => appendAuditRecord(tx, input('ann', 'task.reopened')));
      assert.deepEqual(await chain('ann'), [
        '1:task.created',
        '2:task.updated',
        '3:task.deleted',
        '4:task.reopened',
      ]);
      assert.deepEqual(await chain('bob'), ['1:task.created', '2:task.completed']);
      const verified = await verifyChain(db);
      assert.equal(verified.ok, true, JSON.stringify(verified.broken));
      assert.equal(verified.records, 6);
    });

    it('fails a run holding a record already logged, and leaves the chains untouched', async () => {
      const logged = input('cid', 'task.created');
      await db.transaction((tx) => appendAuditRecord(tx, logged));
      await assert.rejects(
        db.transaction((tx) => appendAuditRecords(tx, [input('cid', 'task.updated'), logged])),
        /in the log already/,
      );
      await db.transaction((tx) => appendAuditRecords(tx, [input('cid', 'task.completed')]));
      assert.deepEqual(await chain('cid'), ['1:task.created', '2:task.completed']);
      assert.equal((await verifyChain(db)).ok, true);
    });
  });
}
