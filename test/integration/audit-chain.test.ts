/**
 * The audit chain written a run at a time (appendAuditRecords) on PGlite and PostgreSQL: it continues the
 * chains that single appends started, per user in the run's order, verifies, and a run that would skip a
 * record already in the log fails as a whole, leaving the chains as they were. Then tampering, one way at a
 * time, each detected by `verifyChain` and `taskflow audit verify`.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import {
  AUDIT_COLUMNS,
  GENESIS_HASH,
  appendAuditRecord,
  appendAuditRecords,
  recordHash,
  toRecord,
  verifyChain,
  type AuditInput,
  type AuditRow,
} from '../../src/services/audit/chain.ts';
import { TEST_SECRET } from '../helpers/app.ts';
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

/**
 * Tampering, one way at a time, on a chain of five records per test (a user of its own). Each case is built so
 * that one verification rule alone detects it, and names the record verification must report:
 *   - the sequence-gap check: a middle record deleted and the chain relinked and rehashed after it;
 *   - the prev_hash check: a record rewritten and its own hash recomputed, the next one left alone;
 *   - the hash over each field: one field edited (user_id and user_seq by moving or renumbering a whole chain,
 *     so that nothing but the hash can tell);
 *   - the chain head: the newest record deleted, or the head row itself.
 * The CLI (`taskflow audit verify`) then reports every broken chain, on PostgreSQL.
 */
const TAMPER_FIELDS = {
  event_id: (v: string) => `${v}-forged`,
  task_id: (v: string) => `${v}-forged`,
  operation: () => 'task.created',
  occurred_at: () => '2026-03-01T11:59:59.000Z',
  recorded_at: () => '2026-03-01T12:00:02.000Z',
  change: () => JSON.stringify({ before: null, after: { title: 'forged' } }),
  trace_id: () => 'ffffffffffffffffffffffffffffffff',
  client_ip: () => '198.51.100.66',
  user_agent: () => 'forged-agent/6.6',
  prev_hash: () => 'f'.repeat(64),
} as const;

for (const backend of backends) {
  describe(`audit chain tampering on ${backend.name}`, async () => {
    const { db, url, drop } = await backend.fresh();
    after(drop);
    let users = 0;
    /** What the CLI must report at the end: user -> the broken seq. */
    const expectedBroken = new Map<string, number>();

    /** A fresh user's chain of `n` records, every hashed field set (nothing null). */
    const buildChain = async (n = 5) => {
      const user = `tamper-${++users}`;
      const ops = ['task.created', 'task.updated', 'task.completed', 'task.reopened', 'task.deleted'];
      for (let i = 0; i < n; i++)
        await db.transaction((tx) =>
          appendAuditRecord(tx, {
            ...input(user, ops[i % ops.length]!),
            occurred_at: `2026-03-01T12:00:0${i}.000Z`,
            recorded_at: `2026-03-01T12:00:1${i}.000Z`,
            trace_id: '4bf92f3577b34da6a3ce929d0e0e4736',
            client_ip: '203.0.113.7',
            user_agent: 'audit-test/1.0',
          }),
        );
      const v = await verifyChain(db, { userId: user });
      assert.equal(v.ok, true, JSON.stringify(v.broken));
      assert.equal(v.records, n);
      return { user, records: await records(user) };
    };
    const records = async (user: string) =>
      (
        await db.query<AuditRow>(
          `SELECT ${AUDIT_COLUMNS} FROM audit_log WHERE user_id = $1 ORDER BY user_seq`,
          [user],
        )
      ).rows.map(toRecord);
    /** verifyChain must report exactly this user as broken at `seq` for `reason`, for the user and overall. */
    const assertBroken = async (user: string, seq: number, reason: RegExp, id?: string) => {
      const one = await verifyChain(db, { userId: user });
      assert.equal(one.ok, false, `tampering with ${user} went undetected`);
      assert.equal(one.broken.length, 1);
      const b = one.broken[0]!;
      assert.equal(b.user_id, user);
      assert.equal(b.seq, seq, JSON.stringify(b));
      assert.match(b.reason, reason);
      if (id !== undefined) assert.equal(b.id, id);
      const all = await verifyChain(db);
      assert.equal(all.ok, false);
      assert.ok(
        all.broken.some((x) => x.user_id === user && x.seq === seq),
        JSON.stringify(all.broken),
      );
      expectedBroken.set(user, seq);
    };

    it('detects a deleted middle record', async () => {
      const { user, records: r } = await buildChain();
      await db.query('DELETE FROM audit_log WHERE id = $1', [r[2]!.id]);
      await assertBroken(user, 4, /record\(s\) 3 missing/, r[3]!.id);
    });

    it('detects a deleted middle record whose successor is relinked to its predecessor', async () => {
      const { user, records: r } = await buildChain();
      await db.query('DELETE FROM audit_log WHERE id = $1', [r[2]!.id]);
      await db.query('UPDATE audit_log SET prev_hash = $2 WHERE id = $1', [r[3]!.id, r[1]!.hash]);
      await assertBroken(user, 4, /record\(s\) 3 missing/, r[3]!.id);
    });

    it('detects a deleted middle record even with every later hash and the head recomputed (seq gap)', async () => {
      const { user, records: r } = await buildChain();
      await db.query('DELETE FROM audit_log WHERE id = $1', [r[2]!.id]);
      let prev = r[1]!.hash;
      for (const rec of r.slice(3)) {
        const hash = recordHash(prev, rec);
        await db.query('UPDATE audit_log SET prev_hash = $2, hash = $3 WHERE id = $1', [rec.id, prev, hash]);
        prev = hash;
      }
      await db.query('UPDATE audit_chain_heads SET last_hash = $2 WHERE user_id = $1', [user, prev]);
      await assertBroken(user, 4, /record\(s\) 3 missing/, r[3]!.id);
    });

    it('detects a rewritten record whose own hash was recomputed (prev_hash of the next)', async () => {
      const { user, records: r } = await buildChain();
      const forged = { ...r[2]!, change: { before: null, after: { title: 'forged' } } };
      await db.query('UPDATE audit_log SET change = $2, hash = $3 WHERE id = $1', [
        forged.id,
        JSON.stringify(forged.change),
        recordHash(forged.prev_hash, forged),
      ]);
      await assertBroken(user, 4, /prev_hash does not match/, r[3]!.id);
    });

    it('detects a rewritten record rehashed and relinked from the next one (the hash covers prev_hash)', async () => {
      const { user, records: r } = await buildChain();
      const forged = { ...r[2]!, change: { before: null, after: { title: 'forged' } } };
      const hash = recordHash(forged.prev_hash, forged);
      await db.query('UPDATE audit_log SET change = $2, hash = $3 WHERE id = $1', [
        forged.id,
        JSON.stringify(forged.change),
        hash,
      ]);
      await db.query('UPDATE audit_log SET prev_hash = $2 WHERE id = $1', [r[3]!.id, hash]);
      await assertBroken(user, 4, /altered/, r[3]!.id);
    });

    for (const [field, forge] of Object.entries(TAMPER_FIELDS)) {
      it(`detects an edited ${field}`, async () => {
        const { user, records: r } = await buildChain();
        const victim = r[2]!;
        const original = (victim as unknown as Record<string, unknown>)[field];
        const value = forge(String(original) as never);
        assert.notEqual(value, original);
        await db.query(`UPDATE audit_log SET ${field} = $2 WHERE id = $1`, [victim.id, value]);
        const tampered = (await records(user))[2]!;
        assert.notDeepEqual(
          (tampered as unknown as Record<string, unknown>)[field],
          original,
          `${field} was not changed`,
        );
        await assertBroken(user, 3, field === 'prev_hash' ? /prev_hash|altered/ : /altered/, victim.id);
      });
    }

    it('detects a whole chain moved to another user (user_id, records and head)', async () => {
      const { user } = await buildChain();
      const other = `${user}-moved`;
      await db.query('UPDATE audit_log SET user_id = $2 WHERE user_id = $1', [user, other]);
      await db.query('UPDATE audit_chain_heads SET user_id = $2 WHERE user_id = $1', [user, other]);
      assert.equal((await verifyChain(db, { userId: user })).records, 0);
      await assertBroken(other, 1, /altered/);
    });

    it('detects a renumbered chain (user_seq shifted, anchor and head moved to match)', async () => {
      const { user, records: r } = await buildChain();
      // Two steps, so the unique (user_id, user_seq) never collides.
      await db.query('UPDATE audit_log SET user_seq = -user_seq WHERE user_id = $1', [user]);
      await db.query('UPDATE audit_log SET user_seq = 10 - user_seq WHERE user_id = $1', [user]);
      await db.query(
        `INSERT INTO audit_anchors (user_id, seq, hash, purged_records, purged_at) VALUES ($1, 10, $2, 10, now())`,
        [user, GENESIS_HASH],
      );
      await db.query('UPDATE audit_chain_heads SET last_seq = 15 WHERE user_id = $1', [user]);
      await assertBroken(user, 11, /altered/, r[0]!.id);
    });

    it('detects the newest record dropped (the chain head disagrees)', async () => {
      const { user, records: r } = await buildChain();
      await db.query('DELETE FROM audit_log WHERE id = $1', [r[4]!.id]);
      await assertBroken(user, 5, /chain head is record 5 but the last stored record is 4/);
    });

    it('detects the chain head row deleted', async () => {
      const { user } = await buildChain();
      await db.query('DELETE FROM audit_chain_heads WHERE user_id = $1', [user]);
      await assertBroken(user, 5, /chain head is missing/);
    });

    it('leaves an untouched chain verifiable next to the tampered ones', async () => {
      const { user } = await buildChain();
      assert.equal((await verifyChain(db, { userId: user })).ok, true);
      const all = await verifyChain(db);
      assert.ok(!all.broken.some((b) => b.user_id === user));
      assert.deepEqual(
        new Map(all.broken.map((b) => [b.user_id, b.seq])),
        expectedBroken,
        'every tampered chain, and only those, is broken',
      );
    });

    it(
      '`taskflow audit verify` reports every tampered chain',
      { skip: backend.name !== 'postgres' },
      async () => {
        const cli = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'audit', 'verify'], {
          env: { ...process.env, DATABASE_URL: url, JWT_SECRET: TEST_SECRET },
          encoding: 'utf8',
        });
        assert.equal(cli.status, 1, cli.stderr);
        const reported = new Map(
          [...cli.stdout.matchAll(/^BROKEN user=(\S+) seq=(\d+) /gm)].map((m) => [m[1]!, Number(m[2])]),
        );
        assert.ok(expectedBroken.size >= 15, `${expectedBroken.size} tampered chains`);
        assert.deepEqual(reported, expectedBroken, cli.stdout);
        assert.match(cli.stdout, /^FAILED: /m);
      },
    );
  });
}
