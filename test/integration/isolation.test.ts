/**
 * Strict per-user isolation, swept over every surface: user "alice" owns data, user "bob" tries each REST route,
 * MCP tool, the gateway (live, resume, tickets), list cursors, idempotency keys, notifications, the audit trail
 * and its exports, and the chat against it; each "not yours" answer must be the answer for an id nobody has.
 * And on the outbox transports, a user's task.changed sequence is that user's alone: a user whose id is
 * `task.changed/alice` once counted in alice's (the outbox named a key's lock row by the bare key).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { startApp, waitFor, type TestApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';
import { startFakeModel, type FakeModel } from '../helpers/openai-server.ts';
import { ManualClock } from '../../src/domain/clock.ts';
import { findTargets } from '../../src/services/index.ts';
import { createRemindersTarget } from '../../src/services/reminders/index.ts';
import { createNotificationsTarget } from '../../src/services/notifications/index.ts';
import type { Db } from '../../src/store/db.ts';
import { uuidv7 } from '../../src/ids.ts';

const NOPE = '00000000-0000-4000-8000-000000000000'; // an id nobody has

/** A minimal WebSocket client: every frame kept. */
class Ws {
  frames: any[] = [];
  closed: Promise<number>;
  constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => this.frames.push(JSON.parse(String(d))));
    ws.on('error', () => undefined);
    this.closed = new Promise((r) => ws.on('close', (code) => r(code)));
  }
  static async open(url: string, token: string | null, query = '') {
    const ws = new WebSocket(
      `${url.replace(/^http/, 'ws')}/ws${query}`,
      token ? ['taskflow.v1', `bearer.${token}`] : [],
    );
    const c = new Ws(ws);
    await waitFor(() => c.frames.some((f) => f.type === 'hello'), 8_000, 'hello');
    return c;
  }
}

describe('per-user isolation: another user’s data answers as data nobody has, on every surface', () => {
  let db: Db;
  let drop: () => Promise<void>;
  let app: TestApp;
  let model: FakeModel;
  const clock = new ManualClock('2026-03-01T12:00:00Z');
  let task: any; // alice's task
  let reminderId: string;
  let notificationId: string;
  let deliveryId: string;
  let bobTask: any;

  /** Status and detail of a problem answer: what a client could tell apart. */
  const shape = (r: { status: number; body: any }) => `${r.status} ${r.body?.detail ?? ''}`;

  before(async () => {
    model = await startFakeModel();
    ({ db, drop } = await backends[0]!.fresh());
    app = await startApp(db, {
      clock,
      env: {
        CHAT_BASE_URL: model.url,
        CHAT_MODEL: 'fake-model',
        CHAT_API_KEY: 'sk-test',
        CHAT_TIMEOUT_MS: '2000',
      },
      targets: [
        ...findTargets(['api', 'relay', 'gateway', 'recurrence', 'audit']),
        createRemindersTarget({ tickMs: 20 }),
        createNotificationsTarget({ tickMs: 20, webhookAllowPrivate: true }),
      ],
    });
    task = (
      await app.call('alice', 'POST', '/api/tasks', {
        title: 'Alice secret plan',
        description: 'confidential',
        tags: ['private'],
        due_date: '2026-03-01T13:00:00Z',
        reminders: ['PT30M'],
        recurrence: 'daily',
      })
    ).body;
    assert.ok(task.id);
    bobTask = (
      await app.call('bob', 'POST', '/api/tasks', {
        title: 'Bob task',
        due_date: '2026-03-01T13:00:00Z',
        reminders: ['PT30M'],
      })
    ).body;
    const rem = await waitFor(
      async () => {
        const r = await app.call('alice', 'GET', `/api/tasks/${task.id}/reminders`);
        return r.status === 200 && r.body.items.length ? r.body.items : undefined;
      },
      10_000,
      "alice's reminders",
    );
    reminderId = rem[0].id;
    await waitFor(
      async () => (await app.call('bob', 'GET', `/api/tasks/${bobTask.id}/reminders`)).status === 200,
      10_000,
      "bob's reminders",
    );
    // The reminder fires: an in-app notification and its deliveries for alice.
    clock.advance(31 * 60_000);
    const n = await waitFor(
      async () => {
        const r = await app.call('alice', 'GET', '/api/notifications');
        return r.body?.items?.length ? r.body.items : undefined;
      },
      15_000,
      "alice's notification",
    );
    notificationId = n[0].id;
    const d = await waitFor(
      async () => {
        const r = await app.call('alice', 'GET', '/api/notifications/deliveries');
        return r.body?.items?.length ? r.body.items : undefined;
      },
      10_000,
      "alice's deliveries",
    );
    deliveryId = d[0].id;
    await waitFor(
      async () => (await app.call('alice', 'GET', '/api/audit')).body?.items?.length >= 2,
      10_000,
      'audit',
    );
  });
  after(async () => {
    await app?.stop();
    await model?.close();
    await drop?.();
  });

  it('task routes: another user’s task answers exactly as a task that does not exist (404), whatever the headers', async () => {
    const cases: [string, string, unknown?, Record<string, string>?][] = [
      ['GET', ''],
      ['GET', '', undefined, { 'if-none-match': '"1"' }],
      ['PATCH', '', { title: 'pwned' }],
      ['PATCH', '', { title: 'pwned' }, { 'if-match': '"1"' }],
      ['PATCH', '', { title: 'pwned' }, { 'if-match': '"99"' }],
      ['PATCH', '', { recurrence: 'weekly' }],
      ['DELETE', ''],
      ['DELETE', '', undefined, { 'if-match': '"1"' }],
      ['DELETE', '', undefined, { 'if-match': '"99"' }],
      ['POST', '/complete'],
      ['POST', '/complete', undefined, { 'if-match': '"99"' }],
      ['POST', '/reopen'],
      ['POST', '/skip'],
      ['POST', '/skip', undefined, { 'if-match': '"99"' }],
      ['GET', '/occurrences'],
      ['GET', '/occurrences?recurrence=weekly&due=2026-04-01T00:00:00Z'],
      ['GET', '/reminders'],
      ['POST', `/reminders/${NOPE}/dismiss`],
      ['POST', `/reminders/${NOPE}/snooze`, { duration: 'PT10M' }],
    ];
    for (const [method, suffix, body, headers] of cases) {
      const theirs = await app.call('bob', method, `/api/tasks/${task.id}${suffix}`, body, headers);
      const none = await app.call('bob', method, `/api/tasks/${NOPE}${suffix}`, body, headers);
      assert.equal(
        theirs.status,
        404,
        `${method} ${suffix} ${JSON.stringify(headers)}: ${JSON.stringify(theirs.body)}`,
      );
      assert.equal(shape(theirs), shape(none), `${method} ${suffix} ${JSON.stringify(headers)}`);
      assert.equal(theirs.headers.get('etag'), null);
    }
    // alice's reminder id under alice's task, and under bob's own task
    for (const [path, body] of [
      [`/api/tasks/${task.id}/reminders/${reminderId}/dismiss`, undefined],
      [`/api/tasks/${task.id}/reminders/${reminderId}/snooze`, { duration: 'PT10M' }],
      [`/api/tasks/${bobTask.id}/reminders/${reminderId}/dismiss`, undefined],
      [`/api/tasks/${bobTask.id}/reminders/${reminderId}/snooze`, { duration: 'PT10M' }],
    ] as const) {
      const r = await app.call('bob', 'POST', path, body);
      const none = await app.call('bob', 'POST', path.replace(reminderId, NOPE), body);
      assert.equal(r.status, 404, path);
      assert.equal(shape(r), shape(none), path);
    }
    const after = await app.call('alice', 'GET', `/api/tasks/${task.id}`);
    assert.equal(after.body.version, 1);
    assert.equal(after.body.title, 'Alice secret plan');
    const rems = await app.call('alice', 'GET', `/api/tasks/${task.id}/reminders`);
    assert.equal(rems.body.items[0].snoozed, false);
  });

  it('compatibility routes: another user in the path is 403 whether or not the task exists; own path with their id is 404', async () => {
    for (const [method, suffix, body] of [
      ['GET', `/tasks/${task.id}`],
      ['PUT', `/tasks/${task.id}`, { title: 'x' }],
      ['DELETE', `/tasks/${task.id}`],
      ['PATCH', `/tasks/${task.id}/complete`, { completed: true }],
    ] as const) {
      const other = await app.call('bob', method, `/api/alice${suffix}`, body);
      const otherNone = await app.call('bob', method, `/api/alice${suffix.replace(task.id, NOPE)}`, body);
      assert.equal(other.status, 403);
      assert.equal(shape(other), shape(otherNone));
      const own = await app.call('bob', method, `/api/bob${suffix}`, body);
      const ownNone = await app.call('bob', method, `/api/bob${suffix.replace(task.id, NOPE)}`, body);
      assert.equal(own.status, 404);
      assert.equal(shape(own), shape(ownNone));
    }
    assert.equal((await app.call('bob', 'GET', '/api/alice/tasks')).status, 403);
    assert.equal((await app.call('bob', 'POST', '/api/alice/tasks', { title: 'planted' })).status, 403);
    assert.equal((await app.call('bob', 'POST', '/api/alice/chat', { message: 'hi' })).status, 403);
    const planted = await db.query(`SELECT 1 FROM tasks WHERE title = 'planted'`);
    assert.equal(planted.rows.length, 0);
  });

  it('lists, search, counts and settings show only the caller’s own', async () => {
    const list = await app.call('bob', 'GET', '/api/tasks?status=all&limit=100');
    assert.ok(list.body.items.every((t: any) => t.user_id === 'bob'));
    for (const q of ['Alice', 'secret', 'confidential']) {
      const s = await app.call('bob', 'GET', `/api/tasks?q=${q}&status=all`);
      assert.equal(s.body.items.length, 0, q);
    }
    assert.equal((await app.call('bob', 'GET', '/api/tasks?tag=private&status=all')).body.items.length, 0);
    const compat = await app.call('bob', 'GET', '/api/bob/tasks?status=all');
    assert.ok(compat.body.every((t: any) => t.user_id === 'bob'));
    const counts = await app.call('bob', 'GET', '/api/tasks/counts');
    assert.equal(counts.body.total, 1);
    await app.call('alice', 'PUT', '/api/me/settings', {
      timezone: 'Asia/Tokyo',
      default_reminders: ['P2D'],
    });
    const bobSettings = await app.call('bob', 'GET', '/api/me/settings');
    assert.equal(bobSettings.body.user_id, 'bob');
    assert.notEqual(bobSettings.body.timezone, 'Asia/Tokyo');
  });

  it('pagination cursors: alice’s cursor replayed by bob pages bob’s own tasks only; a tampered one is a clean 400', async () => {
    for (let i = 0; i < 3; i++) await app.call('alice', 'POST', '/api/tasks', { title: `a-page-${i}` });
    for (let i = 0; i < 3; i++) await app.call('bob', 'POST', '/api/tasks', { title: `b-page-${i}` });
    for (const sort of ['created', 'title', 'due', 'priority']) {
      const first = await app.call('alice', 'GET', `/api/tasks?status=all&limit=1&sort=${sort}`);
      assert.ok(first.body.next_cursor, sort);
      const replay = await app.call(
        'bob',
        'GET',
        `/api/tasks?status=all&limit=100&sort=${sort}&cursor=${first.body.next_cursor}`,
      );
      assert.equal(replay.status, 200, sort);
      assert.ok(
        replay.body.items.every((t: any) => t.user_id === 'bob'),
        sort,
      );
      // compat route: X-Next-Cursor from alice, used by bob
      const compatFirst = await app.call('alice', 'GET', `/api/alice/tasks?status=all&limit=1&sort=${sort}`);
      const cur = compatFirst.headers.get('x-next-cursor')!;
      const compatReplay = await app.call(
        'bob',
        'GET',
        `/api/bob/tasks?status=all&limit=100&sort=${sort}&cursor=${cur}`,
      );
      assert.equal(compatReplay.status, 200);
      assert.ok(compatReplay.body.every((t: any) => t.user_id === 'bob'));
    }
    const bad = await app.call(
      'bob',
      'GET',
      `/api/tasks?cursor=${Buffer.from('{"v":1,"id":"x"}').toString('base64url')}`,
    );
    assert.equal(bad.status, 400);
  });

  it('idempotency keys are per user: bob with alice’s key gets his own new task, never alice’s answer, 422 or 409', async () => {
    const body = { title: 'same body' };
    const a = await app.call('alice', 'POST', '/api/tasks', body, { 'idempotency-key': 'shared-key-1' });
    assert.equal(a.status, 201);
    const b = await app.call('bob', 'POST', '/api/tasks', body, { 'idempotency-key': 'shared-key-1' });
    assert.equal(b.status, 201);
    assert.notEqual(b.body.id, a.body.id);
    assert.equal(b.body.user_id, 'bob');
    assert.equal(b.headers.get('idempotent-replayed'), null);
    // other body, same key: not alice's 422
    const b2 = await app.call(
      'bob',
      'POST',
      '/api/tasks',
      { title: 'other' },
      { 'idempotency-key': 'shared-key-2' },
    );
    await app.call(
      'alice',
      'POST',
      '/api/tasks',
      { title: 'alice first' },
      { 'idempotency-key': 'shared-key-3' },
    );
    const b3 = await app.call(
      'bob',
      'POST',
      '/api/tasks',
      { title: 'bob other' },
      { 'idempotency-key': 'shared-key-3' },
    );
    assert.equal(b2.status, 201);
    assert.equal(b3.status, 201);
    assert.equal(b3.body.user_id, 'bob');
    // alice's key's task deleted: bob's use of the key is not a 409
    const a4 = await app.call(
      'alice',
      'POST',
      '/api/tasks',
      { title: 'to delete' },
      { 'idempotency-key': 'shared-key-4' },
    );
    await app.call('alice', 'DELETE', `/api/tasks/${a4.body.id}`);
    const b4 = await app.call(
      'bob',
      'POST',
      '/api/tasks',
      { title: 'to delete' },
      { 'idempotency-key': 'shared-key-4' },
    );
    assert.equal(b4.status, 201);
    assert.equal(b4.body.user_id, 'bob');
    // concurrent: both users, same key, at once
    const [x, y] = await Promise.all([
      app.call('alice', 'POST', '/api/tasks', { title: 'race' }, { 'idempotency-key': 'race-key' }),
      app.call('bob', 'POST', '/api/tasks', { title: 'race' }, { 'idempotency-key': 'race-key' }),
    ]);
    assert.equal(x.status, 201);
    assert.equal(y.status, 201);
    assert.equal(x.body.user_id, 'alice');
    assert.equal(y.body.user_id, 'bob');
  });

  it('notifications: inbox, read, deliveries, retry, preferences and push subscriptions are the caller’s own', async () => {
    const inbox = await app.call('bob', 'GET', '/api/notifications');
    assert.ok(inbox.body.items.every((n: any) => n.task_id !== task.id));
    const read = await app.call('bob', 'POST', `/api/notifications/${notificationId}/read`);
    const readNone = await app.call('bob', 'POST', `/api/notifications/${NOPE}/read`);
    assert.equal(read.status, 404);
    assert.equal(shape(read), shape(readNone));
    const aliceInbox = await app.call('alice', 'GET', '/api/notifications');
    assert.equal(aliceInbox.body.items.find((n: any) => n.id === notificationId).read_at, null);
    const deliveries = await app.call('bob', 'GET', '/api/notifications/deliveries');
    assert.ok(deliveries.body.items.every((d: any) => d.task_id !== task.id));
    const retry = await app.call('bob', 'POST', `/api/notifications/deliveries/${deliveryId}/retry`);
    const retryNone = await app.call('bob', 'POST', `/api/notifications/deliveries/${NOPE}/retry`);
    assert.equal(retry.status, 404, 'not 409 "not dead": that would say it exists');
    assert.equal(shape(retry), shape(retryNone));
    // preferences
    await app.call('alice', 'PUT', '/api/notifications/preferences', {
      webhook_url: 'http://127.0.0.1:9/alice-hook',
      email: 'alice@example.com',
    });
    const bp = await app.call('bob', 'GET', '/api/notifications/preferences');
    assert.equal(bp.body.webhook_url, null);
    assert.equal(bp.body.email, null);
    // push subscriptions
    const sub = {
      endpoint: 'https://push.example.test/alice-device',
      keys: {
        p256dh: 'BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM',
        auth: 'tBHItJI5svbpez7KI4CCXg',
      },
    };
    const as = await app.call('alice', 'POST', '/api/notifications/push-subscriptions', sub);
    assert.equal(as.status, 201, JSON.stringify(as.body));
    const del = await app.call('bob', 'DELETE', `/api/notifications/push-subscriptions/${as.body.id}`);
    const delNone = await app.call('bob', 'DELETE', `/api/notifications/push-subscriptions/${NOPE}`);
    assert.equal(del.status, 404);
    assert.equal(shape(del), shape(delNone));
    const bs = await app.call('bob', 'POST', '/api/notifications/push-subscriptions', sub);
    assert.equal(bs.status, 201);
    assert.notEqual(bs.body.id, as.body.id);
    const rows = await db.query(
      `SELECT user_id FROM push_subscriptions WHERE endpoint = $1 ORDER BY user_id`,
      [sub.endpoint],
    );
    assert.deepEqual(
      rows.rows.map((r: any) => r.user_id),
      ['alice', 'bob'],
    );
    // email confirmation: bob's confirm/code act on bob's own (no address) only
    const conf = await app.call('bob', 'POST', '/api/notifications/email/confirm', { code: '123456' });
    assert.equal(conf.status, 409);
    assert.match(conf.body.detail, /no email address/);
  });

  it('audit: list, filters, cursors and both export formats hold only the caller’s records', async () => {
    const list = await app.call('bob', 'GET', '/api/audit?limit=200');
    assert.ok(list.body.items.length > 0);
    assert.ok(list.body.items.every((r: any) => r.user_id === 'bob'));
    const byTask = await app.call('bob', 'GET', `/api/audit?task_id=${task.id}`);
    assert.equal(byTask.body.items.length, 0);
    const alicePage = await app.call('alice', 'GET', '/api/audit?limit=1');
    assert.ok(alicePage.body.next_cursor);
    const replay = await app.call('bob', 'GET', `/api/audit?cursor=${alicePage.body.next_cursor}`);
    assert.equal(replay.status, 200);
    assert.ok(replay.body.items.every((r: any) => r.user_id === 'bob'));
    for (const format of ['ndjson', 'csv']) {
      const res = await fetch(`${app.url}/api/audit/export?format=${format}`, {
        headers: { authorization: `Bearer ${await app.token('bob')}` },
      });
      const text = await res.text();
      assert.equal(res.status, 200);
      assert.doesNotMatch(text, /alice/i, format);
      assert.doesNotMatch(text, new RegExp(task.id), format);
    }
    const ex = await fetch(`${app.url}/api/audit/export?task_id=${task.id}`, {
      headers: { authorization: `Bearer ${await app.token('bob')}` },
    });
    assert.equal((await ex.text()).trim(), '');
  });

  it('gateway: bob’s sockets get none of alice’s changes, live or on resume; a ticket opens only its user’s socket, once', async () => {
    const bob = await Ws.open(app.url, await app.token('bob'));
    const bobResume = await Ws.open(app.url, await app.token('bob'), '?since=0');
    const aliceWs = await Ws.open(app.url, await app.token('alice'));
    assert.equal(bob.frames[0].user_id, 'bob');
    await app.call('alice', 'PATCH', `/api/tasks/${task.id}`, { description: 'live secret' });
    await waitFor(
      () => aliceWs.frames.some((f) => f.type === 'task.changed'),
      8_000,
      'alice sees her change',
    );
    await app.call('bob', 'POST', '/api/tasks', { title: 'bob marker' });
    await waitFor(
      () => bob.frames.some((f) => f.type === 'task.changed' && f.task.title === 'bob marker'),
      8_000,
      'bob marker',
    );
    for (const c of [bob, bobResume])
      assert.ok(
        c.frames.every((f) => f.type !== 'task.changed' || f.task.user_id === 'bob'),
        JSON.stringify(c.frames.filter((f) => f.task?.user_id !== 'bob')),
      );
    // ticket: issued to bob, opens a socket of bob; used twice: refused
    const t = await app.call('bob', 'POST', '/api/ws-ticket');
    const viaTicket = await Ws.open(app.url, null, `?ticket=${encodeURIComponent(t.body.ticket)}`);
    assert.equal(viaTicket.frames[0].user_id, 'bob');
    const again = await new Promise<number>((resolve) => {
      const ws = new WebSocket(
        `${app.url.replace(/^http/, 'ws')}/ws?ticket=${encodeURIComponent(t.body.ticket)}`,
      );
      ws.on('error', () => undefined);
      ws.on('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => resolve(101));
    });
    assert.equal(again, 401);
    // a resume from a sequence alice has and bob does not: a resync with bob's own head, no frames of alice
    const big = await Ws.open(app.url, await app.token('bob'), '?since=999');
    await waitFor(() => big.frames.some((f) => f.type === 'resync'), 8_000, 'resync');
    assert.ok(big.frames.every((f) => f.type !== 'task.changed'));
    for (const c of [bob, bobResume, aliceWs, viaTicket, big]) c.ws.terminate();
  });

  it("control: on the embedded bus, user 'task.changed/dave' does not move dave's sequence", async () => {
    assert.equal((await app.call('dave', 'POST', '/api/tasks', { title: 'd1' })).status, 201);
    for (let i = 0; i < 2; i++)
      assert.equal(
        (await app.call('task.changed/dave', 'POST', '/api/tasks', { title: `x${i}` })).status,
        201,
      );
    assert.equal((await app.call('dave', 'POST', '/api/tasks', { title: 'd2' })).status, 201);
    const seqs = (
      await db.query<{ seq: number }>(
        `SELECT (value->'data'->>'sequence')::int AS seq FROM bus_messages
          WHERE value->>'type' = 'task.changed' AND key = 'dave' ORDER BY "offset"`,
      )
    ).rows.map((r) => r.seq);
    assert.deepEqual(seqs, [1, 2]);
  });

  it('MCP tools: every tool aimed at alice’s task, reminder or notification fails as for an unknown id; user_id is refused', async () => {
    const token = await app.token('bob');
    let id = 0;
    const call = async (name: string, args: Record<string, unknown>) => {
      const r = await fetch(`${app.url}/mcp`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          authorization: `Bearer ${token}`,
        },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: ++id,
          method: 'tools/call',
          params: { name, arguments: args },
        }),
      });
      const b = (await r.json()) as any;
      return {
        isError: b.result?.isError === true,
        text: String(b.result?.content?.[0]?.text ?? JSON.stringify(b)),
      };
    };
    const onTask: [string, Record<string, unknown>][] = [
      ['get_task', {}],
      ['update_task', { title: 'pwned' }],
      ['update_task', { title: 'pwned', expected_version: 1 }],
      ['complete_task', {}],
      ['complete_task', { expected_version: 99 }],
      ['reopen_task', {}],
      ['delete_task', { expected_version: 1 }],
      ['delete_task', {}],
      ['set_reminder', { reminders: ['PT5M'] }],
      ['set_recurrence', { recurrence: 'weekly' }],
      ['list_reminders', {}],
      ['snooze_reminder', { for: '10 minutes', reminder_id: reminderId }],
      ['snooze_reminder', { for: '10 minutes' }],
      ['dismiss_reminder', { reminder_id: reminderId }],
      ['dismiss_reminder', {}],
      ['skip_occurrence', {}],
      ['preview_occurrences', {}],
    ];
    for (const [name, args] of onTask) {
      const theirs = await call(name, { task_id: task.id, ...args });
      const none = await call(name, { task_id: NOPE, ...args });
      assert.equal(theirs.isError, true, `${name}: ${theirs.text}`);
      assert.equal(theirs.text, none.text, name);
      assert.doesNotMatch(theirs.text, /Alice secret|not known yet/, name);
    }
    const mark = await call('mark_notification_read', { notification_id: notificationId });
    const markNone = await call('mark_notification_read', { notification_id: NOPE });
    assert.equal(mark.isError, true);
    assert.equal(mark.text, markNone.text);
    const impersonate = await call('add_task', { title: 'as alice', user_id: 'alice' });
    assert.equal(impersonate.isError, true);
    assert.match(impersonate.text, /not the authenticated user/);
    const listed = await call('list_tasks', { status: 'all', limit: 100 });
    assert.doesNotMatch(listed.text, /Alice secret|a-page/);
    const searched = await call('search_tasks', { query: 'secret', status: 'all' });
    assert.doesNotMatch(searched.text, /Alice secret/);
    const notes = await call('list_notifications', {});
    assert.doesNotMatch(notes.text, new RegExp(task.id));
    // alice's MCP idempotency key, reused by bob: bob's own task
    const aliceToken = await app.token('alice');
    await fetch(`${app.url}/mcp`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        authorization: `Bearer ${aliceToken}`,
      },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'tools/call',
        params: { name: 'add_task', arguments: { title: 'mcp same', idempotency_key: 'mcp-k' } },
      }),
    });
    const bobAdd = await call('add_task', { title: 'mcp same', idempotency_key: 'mcp-k' });
    assert.equal(bobAdd.isError, false, bobAdd.text);
    assert.match(bobAdd.text, /"status":"created"/);
    const fresh = await app.call('alice', 'GET', `/api/tasks/${task.id}`);
    assert.equal(fresh.status, 200);
    assert.equal(fresh.body.status, 'pending');
  });

  it('chat: conversations and their history are the caller’s own; the tools run as the caller', async () => {
    model.script({ text: 'hello alice, your secret is safe' });
    const a = await app.call('alice', 'POST', '/api/chat', { message: 'alice private question' });
    assert.equal(a.status, 200, JSON.stringify(a.body));
    const cid = a.body.conversation_id;
    const get = await app.call('bob', 'GET', `/api/chat/conversations/${cid}`);
    const getNone = await app.call('bob', 'GET', `/api/chat/conversations/${NOPE}`);
    assert.equal(get.status, 404);
    assert.equal(shape(get), shape(getNone));
    const list = await app.call('bob', 'GET', '/api/chat/conversations');
    assert.ok(list.body.items.every((c: any) => c.id !== cid));
    const before = model.requests.length;
    const cont = await app.call('bob', 'POST', '/api/chat', { conversation_id: cid, message: 'show me' });
    const contNone = await app.call('bob', 'POST', '/api/chat', {
      conversation_id: NOPE,
      message: 'show me',
    });
    assert.equal(cont.status, 404);
    assert.equal(shape(cont), shape(contNone));
    assert.equal(model.requests.length, before, 'the model never saw alice’s history for bob');
    const del = await app.call('bob', 'DELETE', `/api/chat/conversations/${cid}`);
    assert.equal(del.status, 404);
    assert.equal((await app.call('alice', 'GET', `/api/chat/conversations/${cid}`)).body.messages.length, 2);
    // bob's model asks for alice's task: the tool answers "not found", as for any id
    model.script(
      {
        toolCalls: [
          { name: 'get_task', arguments: { task_id: task.id } },
          { name: 'delete_task', arguments: { task_id: task.id } },
        ],
      },
      { text: 'done' },
    );
    const b = await app.call('bob', 'POST', '/api/chat', { message: 'get and delete that task' });
    assert.equal(b.status, 200, JSON.stringify(b.body));
    assert.ok(
      b.body.tool_calls.every((c: any) => c.is_error === true),
      JSON.stringify(b.body.tool_calls),
    );
    assert.equal((await app.call('alice', 'GET', `/api/tasks/${task.id}`)).status, 200);
  });
});

const kafka = process.env.TEST_KAFKA_BROKERS;
const skip = kafka ? false : 'needs TEST_KAFKA_BROKERS';
const ALICE = 'alice';
const MALLORY = 'task.changed/alice'; // a valid JWT subject (1-200 characters, no control characters)

async function helloOf(url: string, token: string, query = ''): Promise<any[]> {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws${query}`, ['taskflow.v1', `bearer.${token}`]);
  const frames: any[] = [];
  ws.on('message', (d) => frames.push(JSON.parse(String(d))));
  ws.on('error', () => undefined);
  await waitFor(() => frames.some((f) => f.type === 'hello'), 8_000, 'hello');
  await new Promise((r) => setTimeout(r, 300)); // a resync, if any, follows the hello at once
  ws.terminate();
  return frames;
}

for (const backend of backends) {
  describe(
    `cross-user: another user's writes must not move alice's task.changed sequence (outbox, ${backend.name})`,
    { skip },
    () => {
      let db: Db;
      let drop: () => Promise<void>;
      let app: TestApp;
      before(async () => {
        ({ db, drop } = await backend.fresh());
        app = await startApp(db, {
          targets: ['api', 'gateway'],
          env: { BUS: 'kafka', KAFKA_BROKERS: kafka!, KAFKA_TOPIC_PREFIX: `iso${uuidv7().slice(-8)}.` },
        });
      });
      after(async () => {
        await app?.stop();
        await drop?.();
      });

      it("keeps alice's task.changed numbered 1, 2 whatever user 'task.changed/alice' writes", async () => {
        assert.equal((await app.call(ALICE, 'POST', '/api/tasks', { title: 'a1' })).status, 201);
        // Another user, whose subject happens to be "task.changed/alice", writes three tasks.
        for (let i = 0; i < 3; i++)
          assert.equal((await app.call(MALLORY, 'POST', '/api/tasks', { title: `m${i}` })).status, 201);
        assert.equal((await app.call(ALICE, 'POST', '/api/tasks', { title: 'a2' })).status, 201);
        const seqs = (
          await db.query<{ seq: number }>(
            `SELECT (event->'data'->>'sequence')::int AS seq FROM outbox
            WHERE event_type = 'task.changed' AND key = $1 ORDER BY id`,
            [ALICE],
          )
        ).rows.map((r) => r.seq);
        assert.deepEqual(seqs, [1, 2], "alice's own sequence, gap-free (docs/architecture.md section 3)");
      });

      it("does not show carol another user's activity in her WebSocket hello, nor make her resume resync", async () => {
        // Carol makes one change (her sequence 1) and her client has seen it; then only another user, whose
        // subject is "task.changed/carol", writes. Carol reconnects from 1: she missed nothing.
        assert.equal((await app.call('carol', 'POST', '/api/tasks', { title: 'c1' })).status, 201);
        for (let i = 0; i < 2; i++)
          assert.equal(
            (await app.call('task.changed/carol', 'POST', '/api/tasks', { title: `x${i}` })).status,
            201,
          );
        const frames = await helloOf(app.url, await app.token('carol'), '?since=1');
        assert.deepEqual(
          { hello_sequence: frames[0].sequence, told_to_resync: frames.some((f) => f.type === 'resync') },
          { hello_sequence: 1, told_to_resync: false },
          `frames: ${JSON.stringify(frames)}`,
        );
      });
    },
  );
}
