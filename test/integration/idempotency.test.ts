/**
 * Idempotency-Key on task creates, on PGlite and PostgreSQL: a retried create (same key, same body in any
 * key order) answers the first task and writes no second task or event; another body with the key is 422;
 * keys are per user, checked at the edge, forgotten after 24 h; concurrent requests with one key create one
 * task; the MCP add_task tool takes the same key.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { Db } from '../../src/store/db.ts';
import { startApp, writtenEvents, type TestApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';

for (const backend of backends)
  describe(`Idempotency-Key on ${backend.name}`, () => {
    let db: Db;
    let drop: () => Promise<void>;
    let app: TestApp;
    before(async () => {
      ({ db, drop } = await backend.fresh());
      app = await startApp(db, { targets: ['api'] });
    });
    after(async () => {
      await app.stop();
      await drop();
    });

    const post = (user: string, body: unknown, key?: string) =>
      app.call(user, 'POST', '/api/tasks', body, key === undefined ? {} : { 'idempotency-key': key });
    const created = async (user: string) =>
      (await writtenEvents(db)).filter((e) => e.event_type === 'task.created' && e.key === user).length;

    it('answers a retry with the first task, creating nothing more; another body with the key is 422', async () => {
      const first = await post('ann', { title: 'Pay rent', priority: 'high', tags: ['home'] }, 'k-1');
      assert.equal(first.status, 201);
      assert.equal(first.headers.get('idempotent-replayed'), null);
      const again = await post('ann', { tags: ['home'], priority: 'high', title: 'Pay rent' }, 'k-1');
      assert.equal(again.status, 201);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.equal(
        again.headers.get('etag'),
        null,
        'no ETag: the task may have changed since the first answer',
      );
      assert.equal(first.headers.get('etag'), '"1"');
      assert.deepEqual(again.body, first.body);
      assert.equal(again.headers.get('location'), `/api/tasks/${first.body.id}`);
      const other = await post('ann', { title: 'Pay the rent' }, 'k-1');
      assert.equal(other.status, 422);
      assert.match(other.headers.get('content-type') ?? '', /application\/problem\+json/);
      assert.match(other.body.detail, /Idempotency-Key "k-1" was used .* another body/);
      assert.equal((await app.call('ann', 'GET', '/api/tasks')).body.items.length, 1);
      assert.equal(await created('ann'), 1);
      // The same key is another user's own; without a key every create is new.
      assert.notEqual(
        (await post('ben', { title: 'Pay rent', priority: 'high', tags: ['home'] }, 'k-1')).body.id,
        first.body.id,
      );
      assert.notEqual(
        (await post('ann', { title: 'x' })).body.id,
        (await post('ann', { title: 'x' })).body.id,
      );
    });

    it('refuses a malformed key at the edge, naming the header', async () => {
      for (const key of ['', 'has space', 'é', 'x'.repeat(256)]) {
        const r = await post('cat', { title: 't' }, key);
        assert.equal(r.status, 400, JSON.stringify(key));
        assert.match(JSON.stringify(r.body), /Idempotency-Key/);
      }
      assert.equal(await created('cat'), 0);
    });

    it('creates one task for concurrent requests with one key, all answered with it', async () => {
      const answers = await Promise.all(
        Array.from({ length: 12 }, () => post('dan', { title: 'Once' }, 'burst')),
      );
      assert.deepEqual([...new Set(answers.map((a) => a.status))], [201]);
      assert.equal(new Set(answers.map((a) => a.body.id)).size, 1);
      assert.equal(answers.filter((a) => a.headers.get('idempotent-replayed') !== 'true').length, 1);
      assert.equal(await created('dan'), 1);
    });

    it('forgets a key after 24 hours', async () => {
      const first = await post('eve', { title: 'Daily' }, 'day');
      await db.query(
        `UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE user_id = 'eve'`,
      );
      const later = await post('eve', { title: 'Daily' }, 'day');
      assert.equal(later.status, 201);
      assert.notEqual(later.body.id, first.body.id);
      assert.equal(await created('eve'), 2);
    });

    it('takes the key as the MCP add_task idempotency_key', async () => {
      const client = new Client({ name: 'idempotency-test', version: '1.0.0' });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`), {
          requestInit: { headers: { authorization: `Bearer ${await app.token('fay')}` } },
        }),
      );
      try {
        type Result = {
          isError?: boolean;
          structuredContent?: { task_id: string };
          content: { text?: string }[];
        };
        const add = async (args: Record<string, unknown>) =>
          (await client.callTool({ name: 'add_task', arguments: args })) as Result;
        const a = await add({ title: 'Call mom', idempotency_key: 'mcp-1' });
        const b = await add({ title: 'Call mom', idempotency_key: 'mcp-1' });
        assert.equal(a.isError, undefined);
        assert.equal(b.structuredContent!.task_id, a.structuredContent!.task_id);
        const c = await add({ title: 'Call dad', idempotency_key: 'mcp-1' });
        assert.equal(c.isError, true);
        assert.match(
          c.content.map((x) => x.text).join(),
          /idempotency_key "mcp-1" was used in the last 24 hours with other arguments/,
        );
        assert.equal(await created('fay'), 1);
      } finally {
        await client.close();
      }
    });
  });

describe('a retried create whose task was deleted since', () => {
  it('answers 409, not the id of a task that is gone', async () => {
    const { db, drop } = await backends[0]!.fresh();
    const app = await startApp(db, { targets: ['api'] });
    try {
      const post = () =>
        app.call('ida', 'POST', '/api/tasks', { title: 'Once' }, { 'idempotency-key': 'k-del' });
      const first = await post();
      assert.equal(first.status, 201);
      assert.equal((await app.call('ida', 'DELETE', `/api/tasks/${first.body.id}`)).status, 204);
      const again = await post();
      assert.equal(again.status, 409, JSON.stringify(again.body));
      assert.match(again.body.detail, /was deleted since/);
    } finally {
      await app.stop();
      await drop();
    }
  });
});
