/**
 * Audit records altered in the database (a review of the CLI found each; each failed before), on PGlite and
 * PostgreSQL:
 * - a time JavaScript cannot hold ('infinity', '-infinity', a year past 275760) in `occurred_at` or
 *   `recorded_at`: `taskflow audit verify` ended with "Invalid time value", naming no record and dropping the
 *   other users' broken records; `GET /api/audit` and the export of that user answered 500 (or a 200 cut after
 *   the CSV header). Verify now names the record as altered and goes on; the API shows the value as stored.
 * - verify counted a broken record as "not keyed" though not as verified: "41 record(s) verified (42 not
 *   keyed)".
 * - verify said nothing while it read a large log (200,000 records: 20-30 s): it now reports its progress, which
 *   the CLI prints on stderr (a line every few seconds, or one line rewritten on a terminal).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import {
  appendAuditRecord,
  appendAuditRecords,
  verifyChain,
  type AuditInput,
  type VerifyProgress,
} from '../../src/services/audit/chain.ts';
import { verifyProgressReporter } from '../../src/services/audit/verify-progress.ts';
import { startApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';

const input = (user: string, i: number): AuditInput => ({
  event_id: randomUUID(),
  user_id: user,
  task_id: 't1',
  operation: 'task.created',
  occurred_at: `2026-01-0${i}T00:00:00.000Z`,
  recorded_at: `2026-01-0${i}T00:00:01.000Z`,
  change: { before: null, after: { title: `title ${i}` } },
  trace_id: null,
  client_ip: null,
  user_agent: null,
});

/** Values PostgreSQL stores and JavaScript's Date cannot hold, as PostgreSQL writes them back. */
const UNREPRESENTABLE = [
  ['occurred_at', 'infinity'],
  ['occurred_at', '-infinity'],
  ['occurred_at', '294276-12-31 23:59:59+00'],
  ['recorded_at', 'infinity'],
  ['recorded_at', '275760-09-13 00:00:00.001+00'],
] as const;

for (const backend of backends) {
  describe(`audit records altered in the database on ${backend.name}`, async () => {
    const { db, drop } = await backend.fresh();
    after(drop);
    const chain = async (user: string, n = 3) => {
      for (let i = 1; i <= n; i++) await db.transaction((tx) => appendAuditRecord(tx, input(user, i)));
    };

    it('verify names a record whose time JavaScript cannot hold as altered, and goes on to the others', async () => {
      await chain('alice');
      await db.query("UPDATE audit_log SET client_ip = '10.6.6.6' WHERE user_id = 'alice' AND user_seq = 2");
      for (const [i, [column, value]] of UNREPRESENTABLE.entries()) {
        await chain(`time${i}`);
        await db.query(`UPDATE audit_log SET ${column} = $1 WHERE user_id = $2 AND user_seq = 2`, [
          value,
          `time${i}`,
        ]);
      }
      await chain('zed');
      const v = await verifyChain(db);
      assert.equal(v.ok, false);
      assert.deepEqual(
        v.broken.map((b) => `${b.user_id} ${b.seq}`),
        ['alice 2', ...UNREPRESENTABLE.map((_, i) => `time${i} 2`)],
      );
      assert.match(v.broken[0]!.reason, /content does not match its hash/);
      for (const [i, [column, value]] of UNREPRESENTABLE.entries())
        assert.equal(
          v.broken[i + 1]!.reason,
          `${column} is ${value}, not a time a record is written with (the record was altered)`,
        );
      // Each broken chain's first record verified, and zed's three.
      assert.equal(v.records, 1 + UNREPRESENTABLE.length + 3);
    });

    it('answers the records of such a user in the API and the export, the value as stored', async () => {
      await chain('bob', 4);
      await db.query("UPDATE audit_log SET occurred_at = 'infinity' WHERE user_id = 'bob' AND user_seq = 2");
      await db.query("UPDATE audit_log SET recorded_at = '-infinity' WHERE user_id = 'bob' AND user_seq = 3");
      const app = await startApp(db, { targets: ['audit'] });
      try {
        const listed = await app.call('bob', 'GET', '/api/audit');
        assert.equal(listed.status, 200, JSON.stringify(listed.body));
        const items = listed.body.items as { seq: number; occurred_at: string; recorded_at: string }[];
        assert.deepEqual(
          items.map((r) => [r.seq, r.occurred_at, r.recorded_at]),
          [
            [4, '2026-01-04T00:00:00.000Z', '2026-01-04T00:00:01.000Z'],
            [3, '2026-01-03T00:00:00.000Z', '-infinity'],
            [2, 'infinity', '2026-01-02T00:00:01.000Z'],
            [1, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z'],
          ],
        );
        const authorization = `Bearer ${await app.token('bob')}`;
        for (const format of ['csv', 'ndjson']) {
          const res = await fetch(`${app.url}/api/audit/export?format=${format}`, {
            headers: { authorization },
          });
          assert.equal(res.status, 200);
          const lines = (await res.text()).split(/\r?\n/).filter(Boolean);
          assert.equal(lines.length, format === 'csv' ? 5 : 4, lines.join('\n'));
          assert.ok(lines.some((l) => l.includes('infinity')));
        }
      } finally {
        await app.stop();
      }
    });

    it('counts as not keyed only records that verified', async () => {
      await chain('plain', 3);
      await db.query("UPDATE audit_log SET client_ip = '10.6.6.6' WHERE user_id = 'plain' AND user_seq = 2");
      const v = await verifyChain(db, { userId: 'plain' });
      assert.equal(v.ok, false);
      assert.equal(v.records, 1);
      assert.equal(v.unkeyed, 1, 'the record that verified; not the altered one');
    });

    it('reports its progress: after each page of records and each user', async () => {
      const many = Array.from({ length: 2_500 }, (_, i) => ({ ...input('many', 1), event_id: `many-${i}` }));
      await db.transaction((tx) => appendAuditRecords(tx, many));
      const all = (await verifyChain(db)).records;
      const seen: VerifyProgress[] = [];
      const v = await verifyChain(db, { onProgress: (p) => seen.push(p) });
      assert.equal(v.records, all);
      const total = Number(
        (await db.query<{ n: string }>('SELECT count(*)::text AS n FROM audit_log')).rows[0]!.n,
      );
      assert.ok(seen.every((p) => p.recordsTotal === total && p.usersTotal === v.users));
      for (let i = 1; i < seen.length; i++) assert.ok(seen[i]!.records >= seen[i - 1]!.records);
      assert.deepEqual(seen.at(-1), {
        records: v.records,
        recordsTotal: total,
        users: v.users,
        usersTotal: v.users,
      });
      const one: VerifyProgress[] = [];
      await verifyChain(db, { userId: 'many', onProgress: (p) => one.push(p) });
      assert.deepEqual(
        one.map((p) => `${p.records}/${p.recordsTotal} ${p.users}/${p.usersTotal}`),
        ['1000/2500 0/1', '2000/2500 0/1', '2500/2500 0/1', '2500/2500 1/1'],
      );
    });
  });
}

describe('audit verify progress on stderr', () => {
  const progress = (records: number, users: number): VerifyProgress => ({
    records,
    recordsTotal: 200_000,
    users,
    usersTotal: 3,
  });
  it('says nothing before 5 s, then a line every 5 s (not a terminal)', () => {
    let t = 0;
    const out: string[] = [];
    const r = verifyProgressReporter({ write: (s) => out.push(s) }, () => t);
    t = 4_999;
    r.onProgress(progress(1_000, 0));
    assert.deepEqual(out, []);
    t = 5_000;
    r.onProgress(progress(52_000, 1));
    t = 9_000;
    r.onProgress(progress(90_000, 1));
    t = 10_000;
    r.onProgress(progress(100_000, 2));
    r.done();
    assert.deepEqual(out, [
      'audit verify: 52000 of 200000 record(s) verified (26 %), 1 of 3 user chain(s) done\n',
      'audit verify: 100000 of 200000 record(s) verified (50 %), 2 of 3 user chain(s) done\n',
    ]);
  });
  it('rewrites one line each second on a terminal, and clears it at the end', () => {
    let t = 0;
    const out: string[] = [];
    const r = verifyProgressReporter({ isTTY: true, write: (s) => out.push(s) }, () => t);
    r.done();
    assert.deepEqual(out, [], 'nothing to clear after a short run');
    t = 1_000;
    r.onProgress(progress(1_000, 0));
    r.done();
    assert.deepEqual(out, [
      '\raudit verify: 1000 of 200000 record(s) verified (0 %), 0 of 3 user chain(s) done\u001b[K',
      '\r\u001b[K',
    ]);
  });
});
