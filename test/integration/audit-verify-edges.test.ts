/**
 * Edges of the audit trail a review found, each failing before its fix, on PGlite and PostgreSQL:
 * - a whole chain purged before AUDIT_CHAIN_KEY was set, then a keyed record (the documented roll-out of the
 *   key): verify called the plain anchor made up;
 * - records placed where verify never read (numbered below 1, or at or before a retention anchor), which the
 *   API lists as the user's newest: verify said ok;
 * - an anchor made up with a MAC but no key id before keyed records: accepted;
 * - the retention job ran first an interval (6 h by default) after start, so a target restarted more often
 *   never purged; a retention of a million days was accepted and failed every purge.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  appendAuditRecord,
  chainKey,
  purgeAudit,
  verifyChain,
  type AuditInput,
} from '../../src/services/audit/chain.ts';
import { auditManifest } from '../../src/services/audit/manifest.ts';
import { ConfigError } from '../../src/config.ts';
import { startApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';

const KEY = chainKey('k'.repeat(40));
const input = (user: string, at: string, title = 'genuine'): AuditInput => ({
  event_id: randomUUID(),
  user_id: user,
  task_id: 't1',
  operation: 'task.created',
  occurred_at: at,
  recorded_at: at,
  change: { before: null, after: { title } },
  trace_id: null,
  client_ip: null,
  user_agent: null,
});
const day = (d: string) => `2026-01-${d}T00:00:00.000Z`;

for (const backend of backends) {
  describe(`audit verify edges on ${backend.name}`, async () => {
    const { db, drop } = await backend.fresh();
    after(drop);
    const append = (user: string, at: string, key = KEY as typeof KEY | undefined) =>
      db.transaction((tx) => appendAuditRecord(tx, input(user, at), key ? { key } : {}));
    /** A record someone who can write the database puts in, keyed with the current key's id. */
    const forge = (user: string, seq: number) =>
      db.query(
        `INSERT INTO audit_log (event_id, user_id, user_seq, task_id, operation, occurred_at, recorded_at, change,
           prev_hash, hash, key_id)
         VALUES ($1, $2, $3, 't1', 'task.deleted', now(), now(), $4, $5, $5, $6)`,
        [
          randomUUID(),
          user,
          seq,
          JSON.stringify({ before: { title: 'FORGED' }, after: null }),
          'f'.repeat(64),
          KEY.id,
        ],
      );
    const verify = (userId: string, requireKeyed = false) =>
      verifyChain(db, { userId, keys: [KEY], requireKeyed });

    it('verifies a chain purged whole before the key was set, then written keyed', async () => {
      await append('quiet', day('01'), undefined);
      await append('quiet', day('02'), undefined);
      const purged = await purgeAudit(db, new Date('2026-01-10T00:00:00Z'), new Date('2026-01-10T00:00:00Z'));
      assert.equal(purged.records, 2, 'retention takes the whole chain');
      assert.equal((await verify('quiet')).ok, true);
      await append('quiet', '2026-02-01T00:00:00.000Z'); // AUDIT_CHAIN_KEY set since
      const v = await verify('quiet');
      assert.equal(v.ok, true, JSON.stringify(v.broken));
      assert.equal(v.records, 1);
    });

    it('refuses a record numbered below 1', async () => {
      for (const d of ['01', '02', '03']) await append('ann', day(d));
      assert.equal((await verify('ann', true)).ok, true);
      await forge('ann', 0);
      const v = await verify('ann', true);
      assert.equal(v.ok, false);
      assert.match(v.broken[0]!.reason, /numbered below 1/);
    });

    it('refuses a record put at or before a retention anchor, which the API would list first', async () => {
      for (const d of ['01', '02', '03', '04']) await append('bea', day(d));
      await purgeAudit(db, new Date(day('03')), new Date('2026-06-01T00:00:00Z'), KEY); // anchor at 2
      assert.equal((await verify('bea', true)).ok, true);
      await forge('bea', 1);
      const app = await startApp(db, { targets: ['audit'] });
      try {
        const listed = await app.call('bea', 'GET', '/api/audit');
        assert.equal(listed.body.items[0].change.before.title, 'FORGED', 'the premise: the API lists it');
      } finally {
        await app.stop();
      }
      const v = await verify('bea', true);
      assert.equal(v.ok, false);
      assert.match(v.broken[0]!.reason, /at or before the retention anchor/);
    });

    it('refuses an anchor with a MAC and no key id before keyed records, as one with neither', async () => {
      for (const d of ['01', '02', '03', '04']) await append('cy', day(d));
      // Someone without the key deletes records 1 and 2 and makes up an anchor from record 3's prev_hash.
      const r3 = (
        await db.query<{ prev_hash: string }>(
          "SELECT prev_hash FROM audit_log WHERE user_id = 'cy' AND user_seq = 3",
        )
      ).rows[0]!;
      await db.query("DELETE FROM audit_log WHERE user_id = 'cy' AND user_seq <= 2");
      await db.query(
        `INSERT INTO audit_anchors (user_id, seq, hash, purged_records, purged_at, key_id, mac)
         VALUES ('cy', 2, $1, 2, now(), NULL, 'x')`,
        [r3.prev_hash],
      );
      const v = await verify('cy');
      assert.equal(v.ok, false, JSON.stringify(v));
      assert.match(v.broken[0]!.reason, /anchor was made up/);
      await db.query("UPDATE audit_anchors SET mac = NULL WHERE user_id = 'cy'");
      assert.equal((await verify('cy')).ok, false, 'one with neither, as before');
    });

    it('purges records past retention although the target restarts more often than the interval', async () => {
      // The test app's clock: 2026-03-01. A record of 2025, past a 30-day retention.
      await db.transaction((tx) => appendAuditRecord(tx, input('old', '2025-01-01T00:00:00.000Z')));
      const env = { AUDIT_RETENTION_DAYS: '30', AUDIT_RETENTION_INTERVAL_MS: '60000' };
      for (let i = 0; i < 2; i++) {
        const app = await startApp(db, { targets: ['audit'], env });
        await sleep(1_500); // well within the interval
        await app.stop();
      }
      const left = await db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM audit_log WHERE user_id = 'old'",
      );
      assert.equal(left.rows[0]!.n, 0);
    });
  });
}

describe('AUDIT_RETENTION_DAYS', () => {
  it('is refused past a hundred years (a cutoff before year 1 failed every purge), and 0 keeps for good', () => {
    assert.throws(
      () => auditManifest.config({ AUDIT_RETENTION_DAYS: '1000000' }),
      (err: unknown) =>
        err instanceof ConfigError && /AUDIT_RETENTION_DAYS must be at most 36500/.test(err.message),
    );
    assert.equal(auditManifest.config({ AUDIT_RETENTION_DAYS: '36500' }).retentionDays, 36_500);
    assert.equal(auditManifest.config({ AUDIT_RETENTION_DAYS: '0' }).retentionDays, 0);
  });
});
