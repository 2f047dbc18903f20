/**
 * The audit chain written a run at a time (appendAuditRecords) on PGlite and PostgreSQL: it continues the
 * chains that single appends started, per user in the run's order, verifies, and a run that would skip a
 * record already in the log fails as a whole, leaving the chains as they were. Then tampering, one way at a
 * time, each detected by `verifyChain` and `taskflow audit verify`. Keyed chains, and the keys read from
 * AUDIT_CHAIN_KEY and AUDIT_CHAIN_PREVIOUS_KEYS the same way (a key rotated out is the key it was).
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
  chainKey,
  purgeAudit,
  recordHash,
  toRecord,
  verifyChain,
  type AuditInput,
  type AuditRow,
} from '../../src/services/audit/chain.ts';
import { auditManifest } from '../../src/services/audit/manifest.ts';
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

/**
 * A keyed chain (AUDIT_CHAIN_KEY): whoever can write the database but lacks the key cannot make altered
 * records or a made-up retention anchor verify; keys rotated out still verify the records they keyed.
 */
const KEY = chainKey('audit-chain-key-for-tests-0123456789abcdef');
const NEXT_KEY = chainKey('audit-chain-key-after-rotation-0123456789');
const THEIRS = chainKey('someone-elses-key-without-ours-0123456789');

for (const backend of backends) {
  describe(`keyed audit chain on ${backend.name}`, async () => {
    const { db, url, drop } = await backend.fresh();
    after(drop);
    let users = 0;
    const build = async (keys: readonly (typeof KEY | undefined)[]) => {
      const user = `keyed-${++users}`;
      for (const [i, key] of keys.entries())
        await db.transaction((tx) =>
          appendAuditRecord(
            tx,
            { ...input(user, 'task.updated'), occurred_at: `2026-03-01T12:00:0${i}.000Z` },
            { key },
          ),
        );
      return user;
    };
    const rows = async (user: string) =>
      (
        await db.query<AuditRow>(
          `SELECT ${AUDIT_COLUMNS} FROM audit_log WHERE user_id = $1 ORDER BY user_seq`,
          [user],
        )
      ).rows.map(toRecord);
    const broken = async (user: string, opts: Parameters<typeof verifyChain>[1]) => {
      const v = await verifyChain(db, { userId: user, ...opts });
      return v.ok ? 'ok' : `${v.broken[0]!.seq}: ${v.broken[0]!.reason}`;
    };
    /** Records from `from` on rewritten (a forged change) and rehashed with `key` (none: plain), the head moved. */
    const rewrite = async (user: string, from: number, key: typeof KEY | undefined, keyId = key?.id) => {
      const r = await rows(user);
      let prev = r[from - 2]?.hash ?? GENESIS_HASH;
      for (const rec of r.slice(from - 1)) {
        const forged = { ...rec, prev_hash: prev, change: { before: null, after: { title: 'forged' } } };
        const h = recordHash(prev, forged, key);
        await db.query(
          'UPDATE audit_log SET change = $2, prev_hash = $3, hash = $4, key_id = $5 WHERE id = $1',
          [rec.id, JSON.stringify(forged.change), prev, h, keyId ?? null],
        );
        prev = h;
      }
      await db.query('UPDATE audit_chain_heads SET last_hash = $2 WHERE user_id = $1', [user, prev]);
    };

    it('keys each record; verify needs the key and says so without it', async () => {
      const user = await build([KEY, KEY, KEY]);
      assert.equal(await broken(user, { keys: [KEY], requireKeyed: true }), 'ok');
      const v = await verifyChain(db, { userId: user, keys: [KEY] });
      assert.deepEqual([v.records, v.unkeyed], [3, 0]);
      assert.equal(
        await broken(user, {}),
        `1: keyed with chain key ${KEY.id}, which verify was not given (AUDIT_CHAIN_KEY, AUDIT_CHAIN_PREVIOUS_KEYS)`,
      );
      // The same records hashed without the key do not match: the hash is the key's.
      const r = await rows(user);
      assert.notEqual(recordHash(r[0]!.prev_hash, r[0]!), r[0]!.hash);
      assert.equal(recordHash(r[0]!.prev_hash, r[0]!, KEY), r[0]!.hash);
    });

    it('refuses records rewritten and rehashed without the key: plain, with another key, or under our key id', async () => {
      const plain = await build([KEY, KEY, KEY, KEY]);
      await rewrite(plain, 3, undefined);
      assert.equal(
        await broken(plain, { keys: [KEY] }),
        '3: not keyed, after keyed records (rewritten without the key)',
      );
      const theirs = await build([KEY, KEY, KEY, KEY]);
      await rewrite(theirs, 3, THEIRS);
      assert.match(
        await broken(theirs, { keys: [KEY] }),
        new RegExp(`^3: keyed with chain key ${THEIRS.id},`),
      );
      const posing = await build([KEY, KEY, KEY, KEY]);
      await rewrite(posing, 3, THEIRS, KEY.id);
      assert.equal(
        await broken(posing, { keys: [KEY] }),
        '3: content does not match its hash (the record was altered)',
      );
      // The whole chain rewritten plain verifies as a plain chain; --require-keyed refuses it.
      const whole = await build([KEY, KEY]);
      await rewrite(whole, 1, undefined);
      assert.equal(await broken(whole, { keys: [KEY] }), 'ok');
      assert.equal(await broken(whole, { keys: [KEY], requireKeyed: true }), '1: not keyed');
    });

    it('verifies a chain keyed before and after a rotation with both keys, and continues a plain one', async () => {
      const user = await build([undefined, KEY, KEY, NEXT_KEY, NEXT_KEY]);
      const v = await verifyChain(db, { userId: user, keys: [NEXT_KEY, KEY] });
      assert.equal(v.ok, true, JSON.stringify(v.broken));
      assert.deepEqual([v.records, v.unkeyed], [5, 1]);
      assert.match(
        await broken(user, { keys: [NEXT_KEY] }),
        new RegExp(`^2: keyed with chain key ${KEY.id},`),
      );
      assert.equal(await broken(user, { keys: [NEXT_KEY, KEY], requireKeyed: true }), '1: not keyed');
    });

    it('keys the retention anchor: a made-up one is refused, keyed or plain', async () => {
      const user = await build([KEY, KEY, KEY, KEY]);
      // Records occurred at 12:00:00..03: a purge before 12:00:02 keeps 3 and 4 behind an anchor at 2.
      await purgeAudit(db, new Date('2026-03-01T12:00:02Z'), new Date(), KEY);
      assert.deepEqual(
        (await rows(user)).map((r) => r.seq),
        [3, 4],
      );
      assert.equal(await broken(user, { keys: [KEY], requireKeyed: true }), 'ok');
      const anchor = (
        await db.query<{ key_id: string; mac: string }>(
          'SELECT key_id, mac FROM audit_anchors WHERE user_id = $1',
          [user],
        )
      ).rows[0]!;
      assert.equal(anchor.key_id, KEY.id);
      // Record 3 deleted and the anchor moved over it, its hash taken from record 4's prev_hash.
      const r = await rows(user);
      await db.query('DELETE FROM audit_log WHERE id = $1', [r[0]!.id]);
      await db.query('UPDATE audit_anchors SET seq = 3, hash = $2 WHERE user_id = $1', [
        user,
        r[1]!.prev_hash,
      ]);
      assert.equal(
        await broken(user, { keys: [KEY] }),
        '4: the retention anchor before it does not match its key (the anchor was altered or made up)',
      );
      // Made up plain: a purge never writes a plain anchor before a keyed record, so it is refused too.
      await db.query('UPDATE audit_anchors SET key_id = NULL, mac = NULL WHERE user_id = $1', [user]);
      assert.equal(
        await broken(user, { keys: [KEY] }),
        '4: keyed, after a retention anchor that is not (the anchor was made up)',
      );
      assert.equal(
        await broken(user, { keys: [KEY], requireKeyed: true }),
        '4: the retention anchor before it is not keyed',
      );
    });

    it('purges without the key only chains whose kept part is plain; a keyed anchor may stand before plain records', async () => {
      await db.query('TRUNCATE audit_log, audit_chain_heads, audit_anchors');
      const keyed = await build([KEY, KEY, KEY, KEY]);
      const plain = await build([undefined, undefined, undefined, undefined]);
      await purgeAudit(db, new Date('2026-03-01T12:00:02Z'), new Date());
      assert.deepEqual(
        (await rows(keyed)).map((r) => r.seq),
        [1, 2, 3, 4],
        'left as it is: its anchor could not be keyed',
      );
      assert.deepEqual(
        (await rows(plain)).map((r) => r.seq),
        [3, 4],
      );
      // The key set later: records before it are plain, a purge with it keys the anchor before them.
      const mixed = await build([undefined, undefined, undefined, KEY]);
      await purgeAudit(db, new Date('2026-03-01T12:00:02Z'), new Date(), KEY);
      assert.deepEqual(
        (await rows(mixed)).map((r) => r.seq),
        [3, 4],
      );
      assert.equal(await broken(mixed, { keys: [KEY] }), 'ok');
    });

    it(
      '`taskflow audit verify` takes the keys from AUDIT_CHAIN_KEY and AUDIT_CHAIN_PREVIOUS_KEYS, and --require-keyed',
      { skip: backend.name !== 'postgres' },
      async () => {
        await db.query('TRUNCATE audit_log, audit_chain_heads, audit_anchors');
        await build([undefined, KEY, NEXT_KEY]);
        const verify = (env: Record<string, string>, ...args: string[]) =>
          spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'audit', 'verify', ...args], {
            env: { ...process.env, DATABASE_URL: url, JWT_SECRET: TEST_SECRET, ...env },
            encoding: 'utf8',
          });
        const both = {
          AUDIT_CHAIN_KEY: String(NEXT_KEY.secret),
          AUDIT_CHAIN_PREVIOUS_KEYS: ` ${String(THEIRS.secret)} , ${String(KEY.secret)} `,
        };
        const ok = verify(both);
        assert.equal(ok.status, 0, ok.stdout + ok.stderr);
        assert.match(
          ok.stdout,
          /^ok: 1 user chain\(s\), 3 record\(s\) verified \(1 not keyed: written without AUDIT_CHAIN_KEY; --require-keyed refuses them\)$/m,
        );
        const strict = verify(both, '--require-keyed');
        assert.equal(strict.status, 1, strict.stdout + strict.stderr);
        assert.match(strict.stdout, /^BROKEN user=\S+ seq=1 .*: not keyed$/m);
        // A rotated-out key by its bytes in base64 is the same key.
        const encoded = verify({
          AUDIT_CHAIN_KEY: String(NEXT_KEY.secret),
          AUDIT_CHAIN_PREVIOUS_KEYS: String(THEIRS.secret),
          AUDIT_CHAIN_PREVIOUS_KEYS_BASE64: Buffer.from(KEY.secret).toString('base64'),
        });
        assert.equal(encoded.status, 0, encoded.stdout + encoded.stderr);
        const rotatedOut = verify({ AUDIT_CHAIN_KEY: String(NEXT_KEY.secret) });
        assert.equal(rotatedOut.status, 1);
        assert.match(
          rotatedOut.stdout,
          new RegExp(`seq=2 .*keyed with chain key ${KEY.id}, which verify was not given`),
        );
        const noKey = verify({}, '--require-keyed');
        assert.notEqual(noKey.status, 0);
        assert.match(noKey.stderr, /--require-keyed needs the chain key: set AUDIT_CHAIN_KEY/);
        const short = verify({ AUDIT_CHAIN_KEY: 'short' });
        assert.equal(short.status, 2, short.stderr);
        assert.match(short.stderr, /AUDIT_CHAIN_KEY must be at least 32 bytes/);
        const notBase64 = verify({ AUDIT_CHAIN_PREVIOUS_KEYS_BASE64: 'not base64!' });
        assert.equal(notBase64.status, 2, notBase64.stderr);
        assert.match(notBase64.stderr, /AUDIT_CHAIN_PREVIOUS_KEYS_BASE64 \(key 1 of 1\) must be base64/);
      },
    );
  });
}

/**
 * A key rotated out of AUDIT_CHAIN_KEY into AUDIT_CHAIN_PREVIOUS_KEYS as the README says is the same key, and
 * the records it keyed still verify. One with white space around it (a secret mounted from a file has a
 * trailing newline) or a comma in it is trimmed or split into another key in that list: it goes in
 * AUDIT_CHAIN_PREVIOUS_KEYS_BASE64 by its bytes, which are the key (never read as text: that made different
 * keys one).
 */
describe('audit chain keys from the environment', async () => {
  const { db, drop } = await backends[0]!.fresh(); // PGlite: the keys are read from the configuration
  after(drop);
  /** The keys `taskflow audit verify` uses (src/cli/main.ts). */
  const verifyKeys = (env: Record<string, string>) => {
    const { chainKey, previousChainKeys } = auditManifest.config(env);
    return [...(chainKey ? [chainKey] : []), ...previousChainKeys];
  };
  const OLD = 'k'.repeat(40);
  const b64 = (key: string | Buffer) => Buffer.from(key).toString('base64');

  for (const [what, secret] of [
    ['as it is', OLD],
    ['ending in a newline (a secret mounted from a file)', `${OLD}\n`],
    ['with a space before it', ` ${OLD}`],
    ['holding a comma', `${OLD},${'m'.repeat(40)}`],
  ] as const)
    it(`keeps the records a key ${what} keyed verifiable after its rotation`, async () => {
      const user = randomUUID();
      // Taken as it is (never trimmed: the bytes that keyed records are the bytes configured).
      const before = { AUDIT_CHAIN_KEY: secret };
      const key = auditManifest.config(before).chainKey;
      await db.transaction((tx) => appendAuditRecord(tx, input(user, 'task.created'), { key }));
      const verifies = async (env: Record<string, string>) =>
        (await verifyChain(db, { userId: user, keys: verifyKeys(env), requireKeyed: true })).ok;
      assert.equal(await verifies(before), true);
      const next = 'n'.repeat(40);
      assert.equal(
        await verifies({
          AUDIT_CHAIN_KEY: next,
          AUDIT_CHAIN_PREVIOUS_KEYS_BASE64: `${b64('m'.repeat(40))},${b64(secret)}`,
        }),
        true,
        'by its bytes',
      );
      // In the plain list it stays the same key only when it has nothing a list trims or splits.
      assert.equal(
        await verifies({ AUDIT_CHAIN_KEY: next, AUDIT_CHAIN_PREVIOUS_KEYS: ` ${secret} ` }),
        secret === OLD,
      );
    });

  it('keys with the bytes given, never with their text: different bytes are different keys', () => {
    const keys = (...bytes: number[]) =>
      auditManifest.config({
        AUDIT_CHAIN_PREVIOUS_KEYS_BASE64: bytes.map((b) => b64(Buffer.alloc(32, b))).join(','),
      }).previousChainKeys;
    // Bytes that are not UTF-8: read as text each became U+FFFD, and the two one key.
    const [a, b] = keys(0x80, 0xfe);
    assert.notEqual(a!.id, b!.id);
    assert.equal(Buffer.byteLength(a!.secret), 32);
    assert.throws(
      () => auditManifest.config({ AUDIT_CHAIN_PREVIOUS_KEYS_BASE64: b64(Buffer.alloc(31, 1)) }),
      /AUDIT_CHAIN_PREVIOUS_KEYS_BASE64 \(key 1 of 1\) must be at least 32 bytes/,
    );
    // A key that starts with "base64:" (as some generators write them) is that text, as it always was.
    const literal = `base64:${b64(Buffer.alloc(32, 7))}`;
    assert.deepEqual(auditManifest.config({ AUDIT_CHAIN_KEY: literal }).chainKey, chainKey(literal));
  });
});
