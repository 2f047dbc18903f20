/**
 * The audit target against the real API, relay and embedded bus on PGlite and PostgreSQL: one record per
 * task operation with the right before/after, duplicate deliveries add nothing, tampering is detected (by
 * `verifyChain` and the `taskflow audit verify` CLI), a retention purge keeps the chain verifiable, and the
 * export streams 100,000 records, or 2,000 of the largest the API makes, with flat memory.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import { ManualClock } from '../../src/domain/clock.ts';
import { TOPICS } from '../../src/contracts/topics.ts';
import { GROUPS, MANIFESTS } from '../../src/services/index.ts';
import { subscribedTopics } from '../../src/runtime.ts';
import { chainKey, verifyChain } from '../../src/services/audit/chain.ts';
import { runRetention } from '../../src/services/audit/index.ts';
import { auditPages } from '../../src/services/audit/routes.ts';
import type { Db } from '../../src/store/db.ts';
import { backends } from '../helpers/db.ts';
import { deadLetterLines } from '../helpers/dlq.ts';
import { TEST_SECRET, writtenEvents, startApp, waitFor, type TestApp } from '../helpers/app.ts';

// A collector to call, so that RSS measures live memory rather than garbage not yet collected.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const DAY = 86_400_000;

for (const backend of backends) {
  describe(`audit trail on ${backend.name}`, () => {
    let app: TestApp;
    let db: Db;
    let url: string;
    let drop: () => Promise<void>;
    const clock = new ManualClock('2026-03-01T12:00:00Z');
    before(async () => {
      ({ db, url, drop } = await backend.fresh());
      app = await startApp(db, { targets: ['api', 'relay', 'audit'], clock });
    });
    after(async () => {
      await app.stop();
      await drop();
    });

    const headers = { traceparent: `00-${TRACE}-00f067aa0ba902b7-01`, 'user-agent': 'audit-test/1.0' };
    const audit = async (user: string, query = '') => {
      const r = await app.call(user, 'GET', `/api/audit${query}`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body as { items: any[]; next_cursor: string | null };
    };
    const auditLag = async () =>
      (await app.proc.runtime.bus.admin.lag(GROUPS.audit, subscribedTopics(MANIFESTS))).reduce(
        (s, p) => s + p.lag,
        0,
      );
    const count = async (user: string) =>
      Number(
        (
          await db.query<{ n: string }>('SELECT count(*)::text AS n FROM audit_log WHERE user_id = $1', [
            user,
          ])
        ).rows[0]!.n,
      );

    it('records every task operation once, with before/after of the changed fields only', async () => {
      const created = await app.call(
        'alice',
        'POST',
        '/api/tasks',
        { title: 'Draft', priority: 'low' },
        headers,
      );
      assert.equal(created.status, 201);
      const id = created.body.id;
      assert.equal(
        (await app.call('alice', 'PATCH', `/api/tasks/${id}`, { title: 'Final', tags: ['Work'] }, headers))
          .status,
        200,
      );
      assert.equal(
        (await app.call('alice', 'POST', `/api/tasks/${id}/complete`, undefined, headers)).status,
        200,
      );
      assert.equal(
        (await app.call('alice', 'POST', `/api/tasks/${id}/reopen`, undefined, headers)).status,
        200,
      );
      assert.equal((await app.call('alice', 'DELETE', `/api/tasks/${id}`, undefined, headers)).status, 204);

      const page = await waitFor(
        async () => {
          const p = await audit('alice');
          return p.items.length >= 5 && p;
        },
        10_000,
        'five audit records',
      );
      assert.equal(page.items.length, 5);
      const [deleted, reopened, completed, updated, createdRec] = page.items; // newest first
      assert.deepEqual(
        page.items.map((r) => r.operation),
        ['task.deleted', 'task.reopened', 'task.completed', 'task.updated', 'task.created'],
      );
      for (const r of page.items) {
        assert.equal(r.user_id, 'alice');
        assert.equal(r.task_id, id);
        assert.equal(r.trace_id, TRACE);
        assert.equal(r.user_agent, 'audit-test/1.0');
        assert.match(r.client_ip, /^(::ffff:)?127\.0\.0\.1$|^::1$/);
        assert.match(r.hash, /^[0-9a-f]{64}$/);
        assert.equal(r.occurred_at, '2026-03-01T12:00:00.000Z');
      }
      assert.equal(createdRec.change.before, null);
      assert.equal(createdRec.change.after.title, 'Draft');
      assert.equal(createdRec.change.after.priority, 'low');
      assert.deepEqual(updated.change, {
        before: { tags: [], title: 'Draft' },
        after: { tags: ['Work'], title: 'Final' },
      });
      assert.deepEqual(completed.change, {
        before: { completed_at: null, status: 'pending' },
        after: { completed_at: '2026-03-01T12:00:00.000Z', status: 'completed' },
      });
      assert.deepEqual(reopened.change, {
        before: { completed_at: '2026-03-01T12:00:00.000Z', status: 'completed' },
        after: { completed_at: null, status: 'pending' },
      });
      assert.equal(deleted.change.after, null);
      assert.equal(deleted.change.before.title, 'Final');
      // The chain: seq 1..5, each record pointing at the previous one.
      const chain = [...page.items].reverse();
      chain.forEach((r, i) => {
        assert.equal(r.seq, i + 1);
        if (i > 0) assert.equal(r.prev_hash, chain[i - 1].hash);
      });
      assert.equal((await verifyChain(db, { userId: 'alice' })).ok, true);

      // Only the caller's records; filters and cursor pagination.
      assert.equal((await audit('bob')).items.length, 0);
      assert.deepEqual(
        (await audit('alice', '?operation=task.completed,task.reopened')).items.map((r) => r.operation),
        ['task.reopened', 'task.completed'],
      );
      assert.equal((await audit('alice', `?task_id=${id}`)).items.length, 5);
      assert.equal((await audit('alice', '?task_id=nope')).items.length, 0);
      assert.equal(
        (await audit('alice', '?from=2026-03-01T12:00:00Z&to=2026-03-01T12:00:01Z')).items.length,
        5,
      );
      assert.equal((await audit('alice', '?to=2026-03-01T12:00:00Z')).items.length, 0);
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const p: { items: any[]; next_cursor: string | null } = await audit(
          'alice',
          `?limit=2${cursor ? `&cursor=${cursor}` : ''}`,
        );
        seen.push(...p.items.map((r) => r.event_id));
        cursor = p.next_cursor;
      } while (cursor);
      assert.deepEqual(
        seen,
        page.items.map((r) => r.event_id),
      );
      const bad = await app.call('alice', 'GET', '/api/audit?limit=0&since=1');
      assert.equal(bad.status, 400);
      assert.equal(bad.headers.get('content-type'), 'application/problem+json; charset=utf-8');
      assert.equal((await app.call(null, 'GET', '/api/audit')).status, 401);
      // Hostile parameters are refused before the first byte, naming the field.
      const b64 = (s: string) => Buffer.from(s).toString('base64url');
      for (const [path, field] of [
        [`/api/audit?cursor=${b64('a:9999999999999999999')}`, 'cursor'],
        ['/api/audit?task_id=a%00b', 'task_id'],
        ['/api/audit?from=0000-01-01T00:00:00Z', 'from'],
        ['/api/audit/export?format=csv&to=0000-01-01T00:00:00Z', 'to'],
        ['/api/audit/export?format=csv&to=%2B275760-09-13T00:00:00Z', 'to'],
      ] as const) {
        const r = await app.call('alice', 'GET', path);
        assert.equal(r.status, 400, path);
        assert.ok(
          r.body.errors?.some((e: { field: string }) => e.field === field),
          `${path}: ${JSON.stringify(r.body)}`,
        );
      }

      // CSV export of the same records, oldest first.
      const csv = await fetch(`${app.url}/api/audit/export?format=csv`, {
        headers: { authorization: `Bearer ${await app.token('alice')}` },
      });
      assert.equal(csv.status, 200);
      assert.match(csv.headers.get('content-type') ?? '', /^text\/csv/);
      const lines = (await csv.text()).trimEnd().split('\r\n');
      assert.equal(lines.length, 6);
      assert.match(lines[0]!, /^id,seq,event_id,user_id,task_id,operation,/);
      assert.match(lines[1]!, /,task\.created,/);
    });

    it('adds nothing for a duplicate delivery', async () => {
      const before = await count('alice');
      // The events of alice's task-events (task.changed is on task-updates, which the audit does not read).
      const events = (await writtenEvents(db))
        .filter((e) => e.key === 'alice' && e.event_type !== 'task.changed')
        .map((e) => e.event);
      assert.ok(events.length >= 5);
      await app.proc.runtime.bus.publisher.publish(
        events.map((event) => ({ topic: TOPICS.taskEvents, key: 'alice', event })),
      );
      await waitFor(async () => (await auditLag()) === 0, 10_000, 'the audit consumer to catch up');
      assert.equal(await count('alice'), before);
      assert.equal((await verifyChain(db, { userId: 'alice' })).ok, true);
      // Skipped as duplicates, not dead-lettered (the DLQ is read without swallowing a read error).
      assert.deepEqual(await deadLetterLines(app.proc.runtime.bus.admin, GROUPS.audit), []);
    });

    it('detects a tampered record and names it (verifyChain and the CLI)', async () => {
      const victim = (
        await db.query<{ id: string; seq: string; change: unknown }>(
          `SELECT id::text, user_seq::text AS seq, change FROM audit_log WHERE user_id = 'alice' AND user_seq = 3`,
        )
      ).rows[0]!;
      await db.query(
        `UPDATE audit_log SET change = jsonb_set(change, '{after,status}', '"pending"') WHERE id = $1`,
        [victim.id],
      );
      const result = await verifyChain(db, { userId: 'alice' });
      assert.equal(result.ok, false);
      assert.equal(result.broken.length, 1);
      assert.equal(result.broken[0]!.id, victim.id);
      assert.equal(result.broken[0]!.seq, 3);
      assert.match(result.broken[0]!.reason, /altered/);
      assert.equal((await verifyChain(db)).ok, false);

      if (backend.name === 'postgres') {
        const cli = spawnSync(
          process.execPath,
          ['--import', 'tsx', 'src/cli/main.ts', 'audit', 'verify', '--user', 'alice'],
          { env: { ...process.env, DATABASE_URL: url, JWT_SECRET: TEST_SECRET }, encoding: 'utf8' },
        );
        assert.equal(cli.status, 1, cli.stderr);
        assert.match(cli.stdout, new RegExp(`BROKEN user=alice seq=3 id=${victim.id} `));
      }

      // Removing the newest record is detected too (the chain head remembers it).
      await db.query(`UPDATE audit_log SET change = $2 WHERE id = $1`, [
        victim.id,
        JSON.stringify(victim.change),
      ]);
      assert.equal((await verifyChain(db, { userId: 'alice' })).ok, true);
      const last = (
        await db.query<{ id: string }>(
          `SELECT id::text FROM audit_log WHERE user_id = 'alice' ORDER BY user_seq DESC LIMIT 1`,
        )
      ).rows[0]!;
      const saved = (await db.query(`DELETE FROM audit_log WHERE id = $1 RETURNING *`, [last.id])).rows[0]!;
      const tail = await verifyChain(db, { userId: 'alice' });
      assert.equal(tail.ok, false);
      assert.equal(tail.broken[0]!.seq, 5);
      const cols = Object.keys(saved);
      await db.query(
        `INSERT INTO audit_log (${cols.join(', ')}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(', ')})`,
        cols.map((c) => (c === 'change' ? JSON.stringify(saved[c]) : saved[c])),
      );
      assert.equal((await verifyChain(db, { userId: 'alice' })).ok, true);
    });

    it('purges records past retention and keeps the chain verifiable', async () => {
      for (const title of ['one', 'two', 'three'])
        assert.equal((await app.call('carol', 'POST', '/api/tasks', { title })).status, 201);
      clock.advance(200 * DAY);
      for (const title of ['four', 'five'])
        assert.equal((await app.call('carol', 'POST', '/api/tasks', { title })).status, 201);
      await waitFor(async () => (await count('carol')) === 5, 10_000, 'carol records');
      clock.advance(200 * DAY); // now: day 400; the first three are older than 365 days, the others 200

      const purged = await runRetention(app.proc.runtime, 365);
      assert.ok(purged.records >= 3 + 5, `purged ${purged.records}`); // carol's three and alice's five
      const left = await audit('carol');
      assert.deepEqual(
        left.items.map((r) => [r.seq, r.change.after.title]),
        [
          [5, 'five'],
          [4, 'four'],
        ],
      );
      const anchor = (
        await db.query<{ seq: string }>(`SELECT seq::text FROM audit_anchors WHERE user_id = 'carol'`)
      ).rows[0]!;
      assert.equal(anchor.seq, '3');
      for (const user of ['carol', 'alice']) {
        const v = await verifyChain(db, { userId: user });
        assert.equal(v.ok, true, JSON.stringify(v));
      }
      assert.equal((await verifyChain(db, { userId: 'carol' })).records, 2);
      // The chain goes on after the purge.
      assert.equal((await app.call('carol', 'POST', '/api/tasks', { title: 'six' })).status, 201);
      await waitFor(async () => (await count('carol')) === 3, 10_000, 'the next record');
      assert.equal((await verifyChain(db, { userId: 'carol' })).ok, true);
      assert.equal((await runRetention(app.proc.runtime, 365)).records, 0, 'a second run purges nothing');
    });

    it('reads an export in pages bounded in bytes as well as in records: none skipped or repeated', async () => {
      // Records of 1 to 40 KB, two tasks: a page ends at whichever bound comes first, its first record whatever
      // its size.
      const sizes = Array.from({ length: 60 }, (_, i) => [1, 40, 3, 12, 25, 2][i % 6]! * 1000);
      await db.query(
        `INSERT INTO audit_log (event_id, user_id, user_seq, task_id, operation, occurred_at, recorded_at, change,
           prev_hash, hash)
         SELECT 'paged-' || g, 'paged', g, 'task-' || (g % 2), 'task.updated', now(), now(),
           jsonb_build_object('before', '{}'::jsonb, 'after', jsonb_build_object('description', repeat('x', s))),
           lpad((g - 1)::text, 64, '0'), lpad(g::text, 64, '0')
         FROM unnest($1::int[]) WITH ORDINALITY AS t(s, g)`,
        [sizes],
      );
      const ids = async (taskId: string | null) =>
        (
          await db.query<{ id: string }>(
            `SELECT id::text AS id FROM audit_log WHERE user_id = 'paged' AND ($1::text IS NULL OR task_id = $1)
             ORDER BY audit_log.id`,
            [taskId],
          )
        ).rows.map((r) => r.id);
      for (const taskId of [null, 'task-1'])
        for (const [pageSize, pageBytes] of [
          [7, 30_000],
          [1000, 50_000],
          [3, 1],
          [1000, 10 ** 9],
        ] as const) {
          const pages: string[][] = [];
          const filter = { taskId, operations: [], from: null, to: null };
          for await (const page of auditPages(db, 'paged', filter, pageSize, pageBytes))
            pages.push(page.map((r) => r.id));
          const at = `task ${taskId}, pages of ${pageSize} records, ${pageBytes} bytes`;
          assert.deepEqual(pages.flat(), await ids(taskId), at);
          assert.ok(
            pages.every((p) => p.length >= 1 && p.length <= pageSize),
            at,
          );
          if (taskId === null && pageBytes === 30_000)
            assert.ok(pages.some((p) => p.length === 1) && pages.some((p) => p.length > 1), at);
        }
    });

    // Once per run: on PostgreSQL when the suite has it (scripts/test), else on PGlite.
    const onceOnly = backend.name === 'pglite' && backends.length > 1 ? 'runs on PostgreSQL' : false;
    it('streams an export of 100,000 records with flat memory', { skip: onceOnly }, async () => {
      const N = 100_000;
      const change = {
        before: { title: 'old title', description: 'x'.repeat(200) },
        after: { title: 'new title', description: 'y'.repeat(200) },
      };
      const started = Date.now();
      await db.query(
        `INSERT INTO audit_log (event_id, user_id, user_seq, task_id, operation, occurred_at, recorded_at, change,
           trace_id, client_ip, user_agent, prev_hash, hash)
         SELECT 'bulk-' || g, 'bulk', g, 'task-' || (g % 100), 'task.updated', now(), now(), $2::jsonb,
           $3, '127.0.0.1', 'bulk-loader', lpad((g - 1)::text, 64, '0'), lpad(g::text, 64, '0')
         FROM generate_series(1, $1::int) g`,
        [N, JSON.stringify(change), TRACE],
      );
      await db.query('ANALYZE audit_log'); // as autovacuum would after a bulk load
      const loadedMs = Date.now() - started;
      gc();
      const rssBefore = process.memoryUsage().rss;
      const streamStart = Date.now();
      let maxRss = rssBefore;
      let sampledAt = 0;
      const res = await fetch(`${app.url}/api/audit/export?format=ndjson`, {
        headers: { authorization: `Bearer ${await app.token('bulk')}` },
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'application/x-ndjson');
      let bytes = 0;
      let lines = 0;
      let firstLine = '';
      let lastLine = '';
      let carry = '';
      const decoder = new TextDecoder();
      for await (const chunk of res.body!) {
        bytes += chunk.byteLength;
        const text = carry + decoder.decode(chunk, { stream: true });
        const parts = text.split('\n');
        carry = parts.pop()!;
        if (!firstLine && parts.length) firstLine = parts[0]!;
        if (parts.length) lastLine = parts[parts.length - 1]!;
        lines += parts.length;
        if (bytes - sampledAt > 4 * 2 ** 20) {
          // Live memory, not garbage waiting for a collection: what holding the export would show.
          sampledAt = bytes;
          gc();
          maxRss = Math.max(maxRss, process.memoryUsage().rss);
        }
      }
      assert.equal(lines, N);
      assert.equal(carry, '');
      assert.equal(JSON.parse(firstLine).seq, 1);
      assert.equal(JSON.parse(lastLine).seq, N);
      const growthMb = (maxRss - rssBefore) / 2 ** 20;
      const sizeMb = bytes / 2 ** 20;
      assert.ok(sizeMb > 60, `export is ${sizeMb.toFixed(0)} MB`);
      // Holding the export in memory would take more than its size; streaming takes a few pages.
      const info = `RSS grew ${growthMb.toFixed(0)} MB while streaming ${sizeMb.toFixed(0)} MB (load ${loadedMs} ms, stream ${Date.now() - streamStart} ms)`;
      console.log(`# ${backend.name}: ${info}`);
      assert.ok(growthMb < 40, info);
    });

    it(
      'streams an export of 2,000 records of the largest description the API takes with flat memory',
      { skip: onceOnly },
      async () => {
        // A description of 10,000 control characters (the API takes them, but NUL), each written \uXXXX: a
        // task.updated record of one, before and after, is some 120 KB; pages of 1,000 such held hundreds of MB.
        const d1 = '\u0001'.repeat(10_000);
        const d2 = '\u0002'.repeat(10_000);
        const created = await app.call('huge', 'POST', '/api/tasks', { title: 't', description: d1 });
        assert.equal(created.status, 201, JSON.stringify(created.body));
        const patched = await app.call('huge', 'PATCH', `/api/tasks/${created.body.id}`, { description: d2 });
        assert.equal(patched.status, 200, JSON.stringify(patched.body));
        await waitFor(async () => (await count('huge')) === 2, 10_000, 'the create and the update recorded');
        const updated = (await audit('huge', '?operation=task.updated')).items[0];
        assert.equal(updated.change.after.description, d2);
        // 2,000 more of them (a user's PATCHes within minutes of the default rate limit), and among them runs of
        // small records, loaded directly: pages are cut by bytes, and grow again past the small ones.
        const N = 2_500;
        const large = (g: number) => g % 500 < 400;
        await db.query(
          `INSERT INTO audit_log (event_id, user_id, user_seq, task_id, operation, occurred_at, recorded_at, change,
           prev_hash, hash)
         SELECT 'huge-' || g, 'huge', 2 + g, $3, 'task.updated', now(), now(),
           CASE WHEN g % 500 < 400 THEN $2::jsonb ELSE '{"before": {"title": "a"}, "after": {"title": "b"}}' END,
           lpad((g - 1)::text, 64, '0'), lpad(g::text, 64, '0')
         FROM generate_series(1, $1::int) g`,
          [N, JSON.stringify(updated.change), created.body.id],
        );
        assert.equal([...Array(N).keys()].filter((i) => large(i + 1)).length, 2_000);
        gc();
        const rssBefore = process.memoryUsage().rss;
        const streamStart = Date.now();
        let maxRss = rssBefore;
        let sampledAt = 0;
        const res = await fetch(`${app.url}/api/audit/export?format=ndjson`, {
          headers: { authorization: `Bearer ${await app.token('huge')}` },
        });
        assert.equal(res.status, 200);
        // Each line's start (`{"id":"…","event_id":"…","user_id":"huge","seq":…,`), and the first two lines whole.
        const seqs: number[] = [];
        const firstLines: Uint8Array[] = [];
        let head = '';
        let bytes = 0;
        for await (const chunk of res.body!) {
          bytes += chunk.byteLength;
          for (let from = 0; ;) {
            const nl = chunk.indexOf(10, from);
            const end = nl === -1 ? chunk.byteLength : nl + 1;
            if (seqs.length < 2) firstLines.push(chunk.subarray(from, end));
            if (head.length < 128)
              head += Buffer.from(chunk.subarray(from, Math.min(end, from + 128))).toString('latin1');
            if (nl === -1) break;
            seqs.push(
              Number(/^\{"id":"\d+","event_id":"[^"]+","user_id":"huge","seq":(\d+),/.exec(head)?.[1]),
            );
            head = '';
            from = nl + 1;
          }
          if (bytes - sampledAt > 4 * 2 ** 20) {
            sampledAt = bytes;
            gc();
            maxRss = Math.max(maxRss, process.memoryUsage().rss);
          }
        }
        assert.equal(head, '', 'the export ends with a whole line');
        // Every record once, oldest first: none skipped or repeated where a page was cut.
        assert.deepEqual(
          seqs,
          Array.from({ length: N + 2 }, (_, i) => i + 1),
        );
        // The lines as before: each record as the API answers it, JSON.
        const [createdLine, updatedLine] = Buffer.concat(firstLines).toString('utf8').split('\n');
        assert.equal(updatedLine, JSON.stringify(updated));
        assert.equal(JSON.parse(createdLine!).change.after.description, d1);
        const growthMb = (maxRss - rssBefore) / 2 ** 20;
        const sizeMb = bytes / 2 ** 20;
        assert.ok(sizeMb > 200, `export is ${sizeMb.toFixed(0)} MB`);
        const info = `RSS grew ${growthMb.toFixed(0)} MB while streaming ${sizeMb.toFixed(0)} MB (stream ${Date.now() - streamStart} ms)`;
        console.log(`# ${backend.name}: ${info}`);
        assert.ok(growthMb < 40, info);
      },
    );
  });
}

describe('audit trail with AUDIT_CHAIN_KEY', () => {
  const secret = 'audit-chain-key-of-the-target-0123456789';
  it('keys the records the target appends and the anchor its retention job keeps', async () => {
    const { db, drop } = await backends[0]!.fresh();
    const clock = new ManualClock('2026-03-01T12:00:00Z');
    const app = await startApp(db, {
      targets: ['api', 'relay', 'audit'],
      clock,
      env: { AUDIT_CHAIN_KEY: secret },
    });
    try {
      for (const title of ['one', 'two'])
        assert.equal((await app.call('kim', 'POST', '/api/tasks', { title })).status, 201);
      clock.advance(400 * DAY);
      assert.equal((await app.call('kim', 'POST', '/api/tasks', { title: 'three' })).status, 201);
      const keyIds = async () =>
        (
          await db.query<{ key_id: string | null }>(
            `SELECT key_id FROM audit_log WHERE user_id = 'kim' ORDER BY user_seq`,
          )
        ).rows.map((r) => r.key_id);
      await waitFor(async () => (await keyIds()).length === 3, 10_000, "kim's records");
      const key = chainKey(secret);
      assert.deepEqual(await keyIds(), [key.id, key.id, key.id]);
      assert.equal((await runRetention(app.proc.runtime, 365)).records, 2); // the key from the environment
      const strict = await verifyChain(db, { keys: [key], requireKeyed: true });
      assert.equal(strict.ok, true, JSON.stringify(strict.broken));
      assert.equal(strict.records, 1);
      assert.equal((await verifyChain(db)).ok, false, 'without the key it cannot verify');
    } finally {
      await app.stop();
      await drop();
    }
  });
});
