/**
 * The Task API against the real HTTP stack and a real database (PGlite and PostgreSQL): CRUD, the
 * compatibility routes, per-user isolation, auth, validation, optimistic concurrency and the outbox; the answers
 * as /openapi.json declares them.
 */
import assert from 'node:assert/strict';
import { createECDH } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Ajv } from 'ajv';
import { SignJWT } from 'jose';
import { addFormats, eventProblems } from '../../src/contracts/schemas.ts';
import { backends } from '../helpers/db.ts';
import { plainFields } from '../helpers/events.ts';
import {
  TEST_SECRET,
  eventCount,
  writtenEvents,
  startApp,
  testConfig,
  waitFor,
  type TestApp,
} from '../helpers/app.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { TaskStore } from '../../src/store/tasks.ts';
import { UserSettingsStore } from '../../src/store/user-settings.ts';
import { ManualClock } from '../../src/domain/clock.ts';
import { parseRecurrence } from '../../src/domain/recurrence.ts';
import { startFakeModel, type FakeModel } from '../helpers/openai-server.ts';

for (const backend of backends) {
  describe(`Task API on ${backend.name}`, () => {
    let app: TestApp;
    let db: Db;
    let drop: () => Promise<void>;
    before(async () => {
      ({ db, drop } = await backend.fresh());
      app = await startApp(db);
    });
    after(async () => {
      await app.stop();
      await drop();
    });

    const count = async (table: string) =>
      Number((await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${table}`)).rows[0]!.n);

    it('creates, reads, lists, completes, reopens and deletes a task, with one event each', async () => {
      const before = (await writtenEvents(db)).length;
      const created = await app.call('alice', 'POST', '/api/tasks', {
        title: '  Write report ',
        description: 'Q3 numbers',
        priority: 'High',
        tags: ['Work', 'urgent'],
        due_date: '2026-03-05T09:00:00+01:00',
        reminders: ['PT1H', 'P1D'],
        recurrence: 'weekly',
      });
      assert.equal(created.status, 201);
      const { reminder_plan, ...task } = created.body;
      // The create's answer says which reminders the task gets (the reminders target schedules them).
      assert.deepEqual(reminder_plan, {
        scheduled: [
          { remind_at: '2026-03-04T08:00:00.000Z', specs: ['P1D'], why: 'asked' },
          { remind_at: '2026-03-05T07:00:00.000Z', specs: ['PT1H'], why: 'asked' },
        ],
        skipped: [],
      });
      assert.equal(task.title, 'Write report');
      assert.equal(task.priority, 'high');
      assert.deepEqual(task.tags, ['Work', 'urgent']);
      assert.equal(task.due_date, '2026-03-05T08:00:00.000Z');
      assert.deepEqual(task.reminders, ['PT1H', 'P1D']);
      assert.equal(task.recurrence.rrule, 'FREQ=WEEKLY');
      assert.equal(task.series_id, task.id);
      assert.equal(task.status, 'pending');
      assert.equal(task.version, 1);
      assert.equal(created.headers.get('etag'), '"1"');
      assert.equal(created.headers.get('location'), `/api/tasks/${task.id}`);

      const got = await app.call('alice', 'GET', `/api/tasks/${task.id}`);
      assert.equal(got.status, 200);
      assert.deepEqual(got.body, task);

      const completed = await app.call('alice', 'POST', `/api/tasks/${task.id}/complete`);
      assert.equal(completed.status, 200);
      assert.equal(completed.body.status, 'completed');
      assert.equal(completed.body.completed_at, '2026-03-01T12:00:00.000Z');
      assert.equal(completed.body.version, 2);

      const again = await app.call('alice', 'POST', `/api/tasks/${task.id}/complete`);
      assert.equal(again.body.version, 2, 'completing a completed task changes nothing');

      const reopened = await app.call('alice', 'POST', `/api/tasks/${task.id}/reopen`);
      assert.equal(reopened.body.status, 'pending');
      assert.equal(reopened.body.completed_at, null);

      const patched = await app.call('alice', 'PATCH', `/api/tasks/${task.id}`, {
        title: 'Write the report',
        tags: [],
      });
      assert.equal(patched.status, 200);
      assert.equal(patched.body.version, 4);

      const deleted = await app.call('alice', 'DELETE', `/api/tasks/${task.id}`);
      assert.equal(deleted.status, 204);
      assert.equal((await app.call('alice', 'GET', `/api/tasks/${task.id}`)).status, 404);

      const events = (await writtenEvents(db)).slice(before);
      assert.deepEqual(
        events.map((e) => e.event_type),
        // Each task event with the task.changed written by the same statement.
        ['task.created', 'task.completed', 'task.reopened', 'task.updated', 'task.deleted'].flatMap((t) => [
          t,
          'task.changed',
        ]),
      );
      for (const e of events) {
        assert.deepEqual(eventProblems(e.event), [], `${e.event_type} validates against its schema`);
        assert.equal(e.key, 'alice');
        assert.equal(e.event.partitionkey, 'alice');
        assert.equal(e.event.subject, task.id);
        assert.match(e.event.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      }
      const taskEvents = events.filter((e) => e.event_type !== 'task.changed');
      const changes = events.filter((e) => e.event_type === 'task.changed');
      for (const stream of [taskEvents, changes]) {
        const seqs = stream.map((e) => Number(e.seq));
        assert.deepEqual(
          seqs,
          seqs.map((_, i) => seqs[0]! + i),
          "the user's events in commit order, nothing between them (stream sequence or partition offset)",
        );
      }
      assert.deepEqual(
        changes.map((e) => e.event.data.sequence),
        [1, 2, 3, 4, 5],
        "task.changed numbered per user, in the task events' order",
      );
      const [c, done, reopen, upd, del] = taskEvents.map((e) => e.event.data);
      assert.equal(c.previous, null);
      assert.deepEqual(done.changes, ['status']);
      assert.equal(done.previous.status, 'pending');
      assert.equal(done.task.status, 'completed');
      assert.deepEqual(reopen.changes, ['status']);
      assert.deepEqual(upd.changes, ['title', 'tags']);
      assert.equal(upd.previous.title, 'Write report');
      assert.equal(upd.task.title, 'Write the report');
      assert.equal(del.previous.title, 'Write the report');
    });

    it('answers Phase II/III clients in their terms: search, tags (all must match), paging headers, completed in the body', async () => {
      const make = (title: string, tags: string[]) =>
        app.call('dora', 'POST', '/api/dora/tasks', { title, tags }).then((r) => r.body.id as string);
      const both = await make('monthly report', ['work', 'finance']);
      await make('weekly report', ['work']);
      await make('groceries', ['home']);
      const titles = (r: { body: { title: string }[] }) => r.body.map((t) => t.title).sort();

      const searched = await app.call('dora', 'GET', '/api/dora/tasks?status=pending&search=report');
      assert.equal(searched.status, 200);
      assert.ok(Array.isArray(searched.body));
      assert.deepEqual(titles(searched), ['monthly report', 'weekly report']);
      const tagged = await app.call('dora', 'GET', '/api/dora/tasks?tags=work,finance');
      assert.deepEqual(titles(tagged), ['monthly report']);
      const both400 = await app.call('dora', 'GET', '/api/dora/tasks?search=a&q=b');
      assert.equal(both400.status, 400);

      const first = await app.call('dora', 'GET', '/api/dora/tasks?limit=2&sort=title');
      assert.equal(first.body.length, 2);
      const cursor = first.headers.get('x-next-cursor');
      assert.ok(cursor);
      assert.match(
        first.headers.get('link') ?? '',
        /^<\/api\/dora\/tasks\?limit=2&sort=title&cursor=[^>]+>; rel="next"$/,
      );
      const next = first.headers.get('link')!.slice(1, first.headers.get('link')!.indexOf('>'));
      const second = await app.call('dora', 'GET', next);
      assert.deepEqual([...titles(first), ...titles(second)].sort(), [
        'groceries',
        'monthly report',
        'weekly report',
      ]);
      assert.equal(second.headers.get('x-next-cursor'), null);

      // {"completed": true} sets the state: a retried request leaves it completed (no body still toggles).
      for (let i = 0; i < 2; i++) {
        const done = await app.call('dora', 'PATCH', `/api/dora/tasks/${both}/complete`, { completed: true });
        assert.equal(done.status, 200);
        assert.equal(done.body.status, 'completed');
      }
      const undone = await app.call('dora', 'PATCH', `/api/dora/tasks/${both}/complete`, {
        completed: false,
      });
      assert.equal(undone.body.status, 'pending');
      const bad = await app.call('dora', 'PATCH', `/api/dora/tasks/${both}/complete`, { completed: 'yes' });
      assert.equal(bad.status, 400);
      assert.equal((await app.call('dora', 'GET', `/api/tasks/${both}`)).body.status, 'pending');
    });

    it('serves the compatibility routes with the same results, and 403 on a foreign user id', async () => {
      const created = await app.call('carol', 'POST', '/api/carol/tasks', { title: 'compat' });
      assert.equal(created.status, 201);
      const id = created.body.id;
      const canonical = await app.call('carol', 'GET', `/api/tasks/${id}`);
      const compat = await app.call('carol', 'GET', `/api/carol/tasks/${id}`);
      assert.deepEqual(compat.body, canonical.body);
      const listCanonical = await app.call('carol', 'GET', '/api/tasks?status=all');
      const listCompat = await app.call('carol', 'GET', '/api/carol/tasks?status=all');
      assert.deepEqual(listCompat.body, listCanonical.body.items); // a JSON array, as those clients read it

      const put = await app.call('carol', 'PUT', `/api/carol/tasks/${id}`, {
        title: 'compat 2',
        description: 'd',
      });
      assert.equal(put.status, 200);
      assert.equal(put.body.title, 'compat 2');
      const toggled = await app.call('carol', 'PATCH', `/api/carol/tasks/${id}/complete`);
      assert.equal(toggled.body.status, 'completed');
      const toggledBack = await app.call('carol', 'PATCH', `/api/carol/tasks/${id}/complete`);
      assert.equal(toggledBack.body.status, 'pending');

      for (const [method, path, body] of [
        ['GET', '/api/alice/tasks'],
        ['POST', '/api/alice/tasks', { title: 'x' }],
        ['GET', `/api/alice/tasks/${id}`],
        ['PUT', `/api/alice/tasks/${id}`, { title: 'x' }],
        ['DELETE', `/api/alice/tasks/${id}`],
        ['PATCH', `/api/alice/tasks/${id}/complete`],
      ] as const) {
        const r = await app.call('carol', method, path, body);
        assert.equal(r.status, 403, `${method} ${path}`);
        assert.equal(r.headers.get('content-type'), 'application/problem+json; charset=utf-8');
      }
      assert.equal((await app.call('carol', 'DELETE', `/api/carol/tasks/${id}`)).status, 204);
    });

    it('isolates users: B never sees, changes or deletes A’s task', async () => {
      const a = (await app.call('userA', 'POST', '/api/tasks', { title: 'A private', tags: ['secret'] }))
        .body;
      const events = (await writtenEvents(db)).length;
      assert.equal((await app.call('userB', 'GET', `/api/tasks/${a.id}`)).status, 404);
      assert.equal((await app.call('userB', 'PATCH', `/api/tasks/${a.id}`, { title: 'pwned' })).status, 404);
      assert.equal((await app.call('userB', 'POST', `/api/tasks/${a.id}/complete`)).status, 404);
      assert.equal((await app.call('userB', 'POST', `/api/tasks/${a.id}/reopen`)).status, 404);
      assert.equal((await app.call('userB', 'DELETE', `/api/tasks/${a.id}`)).status, 404);
      assert.equal(
        (await app.call('userB', 'PUT', `/api/userB/tasks/${a.id}`, { title: 'pwned' })).status,
        404,
      );
      assert.equal((await app.call('userB', 'PATCH', `/api/userB/tasks/${a.id}/complete`)).status, 404);
      const listB = await app.call('userB', 'GET', '/api/tasks?q=private&tag=secret');
      assert.deepEqual(listB.body.items, []);
      const still = await app.call('userA', 'GET', `/api/tasks/${a.id}`);
      assert.equal(still.body.title, 'A private');
      assert.equal(still.body.version, 1);
      assert.equal((await writtenEvents(db)).length, events, 'no event for refused operations');
    });

    it('answers 401 on missing, malformed, forged, expired and subject-less tokens', async () => {
      const secret = new TextEncoder().encode(TEST_SECRET);
      const forged = await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('alice')
        .setExpirationTime('1h')
        .sign(new TextEncoder().encode('another-secret-another-secret-another-secret'));
      const expired = await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('alice')
        .setIssuedAt(1_600_000_000)
        .setExpirationTime(1_600_000_600)
        .sign(secret);
      const noSub = await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setExpirationTime('1h')
        .sign(secret);
      const valid = await app.token('alice');
      const alg = valid.split('.');
      const noneAlg = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${alg[1]}.`;
      const cases: [string, Record<string, string>][] = [
        ['missing', {}],
        ['not bearer', { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }],
        ['garbage', { authorization: 'Bearer not-a-jwt' }],
        ['forged', { authorization: `Bearer ${forged}` }],
        ['expired', { authorization: `Bearer ${expired}` }],
        ['no subject', { authorization: `Bearer ${noSub}` }],
        ['alg none', { authorization: `Bearer ${noneAlg}` }],
      ];
      for (const [name, headers] of cases) {
        const r = await app.call(null, 'GET', '/api/tasks', undefined, headers);
        assert.equal(r.status, 401, name);
        assert.equal(r.body.status, 401);
        assert.ok(r.headers.get('www-authenticate')?.startsWith('Bearer'), name);
        const w = await app.call(null, 'POST', '/api/tasks', { title: 'x' }, headers);
        assert.equal(w.status, 401, `${name} (write)`);
      }
      assert.equal(
        (await app.call(null, 'GET', '/api/tasks', undefined, { authorization: `Bearer ${valid}` })).status,
        200,
      );
    });

    it('rejects bad input with 400 problem+json naming the field, writing no row and no event', async () => {
      const existing = (
        await app.call('dave', 'POST', '/api/tasks', { title: 'base', due_date: '2026-04-01T00:00:00Z' })
      ).body;
      const rows = await count('tasks');
      const events = await eventCount(db);
      const long = (n: number) => 'x'.repeat(n);
      const cases: [string, string, unknown, string, Record<string, string>?][] = [
        ['POST', '/api/tasks', {}, 'title'],
        ['POST', '/api/tasks', { title: '' }, 'title'],
        ['POST', '/api/tasks', { title: '   ' }, 'title'],
        ['POST', '/api/tasks', { title: 42 }, 'title'],
        ['POST', '/api/tasks', { title: long(501) }, 'title'],
        ['POST', '/api/tasks', { title: 't', description: long(10_001) }, 'description'],
        ['POST', '/api/tasks', { title: 't', description: ['x'] }, 'description'],
        ['POST', '/api/tasks', { title: 't', status: 'done' }, 'status'],
        ['POST', '/api/tasks', { title: 't', priority: 'critical' }, 'priority'],
        ['POST', '/api/tasks', { title: 't', tags: 'work' }, 'tags'],
        ['POST', '/api/tasks', { title: 't', tags: Array.from({ length: 21 }, (_, i) => `t${i}`) }, 'tags'],
        ['POST', '/api/tasks', { title: 't', tags: ['ok', ''] }, 'tags[1]'],
        ['POST', '/api/tasks', { title: 't', tags: [long(51)] }, 'tags[0]'],
        ['POST', '/api/tasks', { title: 't', tags: ['work', 'work'] }, 'tags[1]'],
        ['POST', '/api/tasks', { title: 't', tags: [7] }, 'tags[0]'],
        ['POST', '/api/tasks', { title: 't', due_date: 'tomorrow' }, 'due_date'],
        ['POST', '/api/tasks', { title: 't', due_date: '2026-03-05T09:00:00' }, 'due_date'],
        ['POST', '/api/tasks', { title: 't', due_date: '2026-02-30T09:00:00Z' }, 'due_date'],
        [
          'POST',
          '/api/tasks',
          { title: 't', due_date: '2026-03-05T09:00:00Z', reminders: 'PT1H' },
          'reminders',
        ],
        [
          'POST',
          '/api/tasks',
          { title: 't', due_date: '2026-03-05T09:00:00Z', reminders: ['PT-1H'] },
          'reminders[0]',
        ],
        [
          'POST',
          '/api/tasks',
          { title: 't', due_date: '2026-03-05T09:00:00Z', reminders: ['P2Y'] },
          'reminders[0]',
        ],
        [
          'POST',
          '/api/tasks',
          { title: 't', due_date: '2026-03-05T09:00:00Z', reminders: ['soon'] },
          'reminders[0]',
        ],
        ['POST', '/api/tasks', { title: 't', reminders: ['PT1H'] }, 'reminders'],
        ['POST', '/api/tasks', { title: 't', recurrence: 'fortnightly' }, 'recurrence'],
        ['POST', '/api/tasks', { title: 't', recurrence: { rrule: 'FREQ=SOMETIMES' } }, 'recurrence.rrule'],
        [
          'POST',
          '/api/tasks',
          { title: 't', recurrence: { preset: 'daily', timezone: 'Mars/Olympus' } },
          'recurrence.timezone',
        ],
        ['POST', '/api/tasks', { title: 't', owner: 'mallory' }, 'owner'],
        ['POST', '/api/tasks', { title: 't', user_id: 'mallory' }, 'user_id'],
        ['POST', '/api/tasks', [{ title: 't' }], ''],
        ['POST', '/api/tasks', '{"title": "t"', ''],
        ['POST', '/api/tasks', 'null', ''],
        ['PATCH', `/api/tasks/${existing.id}`, {}, ''],
        ['PATCH', `/api/tasks/${existing.id}`, { id: 'x' }, 'id'],
        ['PATCH', `/api/tasks/${existing.id}`, { title: null }, 'title'],
        ['PATCH', `/api/tasks/${existing.id}`, { due_date: null, reminders: ['PT1H'] }, 'reminders'],
        ['PATCH', `/api/tasks/${existing.id}`, { title: 'x' }, 'If-Match', { 'if-match': 'yesterday' }],
        ['PATCH', `/api/tasks/${existing.id}`, { title: 'x' }, 'If-Match', { 'if-match': '"1", soon' }],
        ['PATCH', `/api/tasks/${existing.id}`, { title: 'x' }, 'If-Match', { 'if-match': '*, "1"' }],
        ['GET', '/api/tasks?sort=colour', undefined, 'sort'],
        ['GET', '/api/tasks?limit=0', undefined, 'limit'],
        ['GET', '/api/tasks?limit=abc', undefined, 'limit'],
        ['GET', '/api/tasks?status=maybe', undefined, 'status'],
        ['GET', '/api/tasks?cursor=bogus', undefined, 'cursor'],
        ['GET', '/api/tasks?due_before=soon', undefined, 'due_before'],
        ['GET', '/api/tasks?overdue=perhaps', undefined, 'overdue'],
        ['GET', '/api/tasks?colour=red', undefined, 'colour'],
        // hostile text and instants: 400 naming the field, never a database error
        ['POST', '/api/tasks', { title: 'a\u0000b' }, 'title'],
        ['POST', '/api/tasks', { title: 'a\ud800b' }, 'title'],
        ['POST', '/api/tasks', { title: 'a\udc00b' }, 'title'],
        ['POST', '/api/tasks', { title: 't', description: 'a\u0000b' }, 'description'],
        ['POST', '/api/tasks', { title: 't', tags: ['ok', 'a\u0000b'] }, 'tags[1]'],
        ['POST', '/api/tasks', { title: 't', due_date: '0000-01-01T00:00:00Z' }, 'due_date'],
        ['POST', '/api/tasks', { title: 't', due_date: '-000001-01-01T00:00:00Z' }, 'due_date'],
        ['POST', '/api/tasks', { title: 't', due_date: '+275760-09-13T00:00:00Z' }, 'due_date'],
        ['POST', '/api/tasks', { title: 't', due_date: '0001-01-01T00:00:00+01:00' }, 'due_date'],
        ['PATCH', `/api/tasks/${existing.id}`, { title: 'a\u0000b' }, 'title'],
        ['GET', '/api/tasks?q=a%00b', undefined, 'q'],
        ['GET', '/api/tasks?tag=a%00b', undefined, 'tag'],
        ['GET', '/api/tasks?due_before=0000-01-01T00:00:00Z', undefined, 'due_before'],
        ...[
          { v: 'garbage', id: '00000000-0000-0000-0000-000000000000', s: 'created', o: 'desc' },
          { v: '2026-03-01T12:00:00.000Z', id: 'nope', s: 'created', o: 'desc' },
          { v: 99999999, id: '00000000-0000-0000-0000-000000000000', s: 'priority', o: 'desc' },
          { v: 1.5, id: '00000000-0000-0000-0000-000000000000', s: 'priority', o: 'desc' },
          { v: '0000-01-01T00:00:00.000Z', id: '00000000-0000-0000-0000-000000000000', s: 'due', o: 'asc' },
          { v: 'a\u0000', id: '00000000-0000-0000-0000-000000000000', s: 'title', o: 'desc' },
          null,
          42,
        ].map((c): [string, string, unknown, string] => {
          const sort = c && typeof c === 'object' ? `&sort=${c.s}&order=${c.o}` : '';
          const cursor = Buffer.from(JSON.stringify(c)).toString('base64url');
          return ['GET', `/api/tasks?cursor=${cursor}${sort}`, undefined, 'cursor'];
        }),
      ];
      for (const [method, path, body, field, headers] of cases) {
        const r = await app.call('dave', method, path, body, headers);
        const label = `${method} ${path} ${JSON.stringify(body)?.slice(0, 80)}`;
        assert.equal(r.status, 400, label);
        assert.match(r.headers.get('content-type') ?? '', /^application\/problem\+json/, label);
        assert.equal(r.body.status, 400, label);
        if (field)
          assert.ok(
            r.body.errors?.some((e: { field: string }) => e.field === field),
            `${label}: names ${field}: ${JSON.stringify(r.body)}`,
          );
        else assert.ok(typeof r.body.detail === 'string' && r.body.detail.length > 0, label);
      }
      assert.ok(cases.length >= 20);
      // Bytes that are not UTF-8, or a body in another charset, are refused, not stored as U+FFFD.
      const raw = async (body: Buffer, type: string) => {
        const r = await fetch(`${app.url}/api/tasks`, {
          method: 'POST',
          headers: { authorization: `Bearer ${await app.token('dave')}`, 'content-type': type },
          body,
        });
        return { status: r.status, body: (await r.json()) as { detail?: string } };
      };
      const notUtf8 = await raw(Buffer.from('{"title":"\xff\xfe bad"}', 'latin1'), 'application/json');
      assert.equal(notUtf8.status, 400);
      assert.match(notUtf8.body.detail ?? '', /not valid UTF-8/);
      const utf16 = await raw(Buffer.from('{"title":"a"}'), 'application/json; charset=utf-16');
      assert.equal(utf16.status, 415);
      assert.match(utf16.body.detail ?? '', /charset utf-16/);
      // JSON text sent as text/plain is refused as that media type (it was read as a string: a 400).
      const text = await raw(Buffer.from('{"title":"a"}'), 'text/plain');
      assert.equal(text.status, 415, JSON.stringify(text.body));
      assert.equal(await count('tasks'), rows, 'no row written');
      assert.equal(await eventCount(db), events, 'no event written');
      const unchanged = await app.call('dave', 'GET', `/api/tasks/${existing.id}`);
      assert.equal(unchanged.body.version, 1);
      // UTF-8 said outright is taken, in either spelling and case.
      for (const type of ['application/json; charset=utf-8', 'application/json;charset="UTF8"'])
        assert.equal((await raw(Buffer.from('{"title":"grüße"}'), type)).status, 201, type);
    });

    it('keeps due dates of years 0001 through 9999 exactly through create, PATCH and GET', async () => {
      for (const due of [
        '0001-01-01T00:00:00.000Z',
        '0050-06-15T00:00:00.000Z',
        '0999-12-31T23:59:59.999Z',
        '9999-12-31T23:59:59.999Z',
      ]) {
        const created = await app.call('yuri', 'POST', '/api/tasks', { title: 'y', due_date: due });
        assert.equal(created.status, 201, due);
        assert.equal(created.body.due_date, due);
        assert.equal((await app.call('yuri', 'GET', `/api/tasks/${created.body.id}`)).body.due_date, due);
        const patched = await app.call('yuri', 'PATCH', `/api/tasks/${created.body.id}`, { title: 'z' });
        assert.equal(patched.status, 200, due);
        assert.equal(patched.body.due_date, due);
        assert.equal((await app.call('yuri', 'GET', `/api/tasks/${created.body.id}`)).body.due_date, due);
      }
      const listed = await app.call('yuri', 'GET', '/api/tasks?sort=due&order=asc&limit=1');
      assert.equal(listed.body.items[0].due_date, '0001-01-01T00:00:00.000Z');
      const next = await app.call(
        'yuri',
        'GET',
        `/api/tasks?sort=due&order=asc&limit=1&cursor=${listed.body.next_cursor}`,
      );
      assert.equal(next.status, 200);
      assert.equal(next.body.items[0].due_date, '0050-06-15T00:00:00.000Z');
    });

    it('refuses (422, naming recurrence.until) a repeat rule set to end before its first repeat after the due date', async () => {
      const t = (
        await app.call('dave', 'POST', '/api/tasks', { title: 'to repeat', due_date: '2027-01-10T09:00:00Z' })
      ).body;
      for (const [method, path, body] of [
        [
          'POST',
          '/api/tasks',
          {
            title: 'never repeats',
            due_date: '2027-01-10T09:00:00Z',
            recurrence: { preset: 'daily', until: '2027-01-05T00:00:00Z' },
          },
        ],
        [
          'PATCH',
          `/api/tasks/${t.id}`,
          { recurrence: { rrule: 'FREQ=WEEKLY', until: '2027-01-12T00:00:00Z' } },
        ],
      ] as const) {
        const r = await app.call('dave', method, path, body);
        assert.equal(r.status, 422, JSON.stringify(r.body));
        assert.match(r.headers.get('content-type') ?? '', /^application\/problem\+json/);
        assert.deepEqual(
          r.body.errors.map((e: { field: string }) => e.field),
          ['recurrence.until'],
        );
      }
      assert.equal(
        (await app.call('dave', 'GET', `/api/tasks/${t.id}`)).body.recurrence,
        null,
        'nothing changed',
      );
    });

    it('keeps a user who never chose a zone on the deployment default, also after a change of their default reminders', async () => {
      const put = await app.call('gus', 'PUT', '/api/me/settings', { default_reminders: ['PT15M'] });
      assert.equal(put.status, 200, JSON.stringify(put.body));
      assert.deepEqual(put.body.default_reminders, ['PT15M']);
      // The zone of that day was stored with them: a later DEFAULT_TIMEZONE no longer reached the user.
      const later = new UserSettingsStore(db, 'America/New_York');
      assert.deepEqual(await later.get('gus'), {
        user_id: 'gus',
        timezone: 'America/New_York',
        default_reminders: ['PT15M'],
      });
      // The column keeps a zone, for processes of the previous version during a rolling upgrade.
      const column = await db.query<{ timezone: string | null }>(
        `SELECT timezone FROM user_settings WHERE user_id = 'gus'`,
      );
      assert.equal(column.rows[0]!.timezone, 'UTC');
      await app.call('gus', 'PUT', '/api/me/settings', { timezone: 'Asia/Tokyo' });
      await app.call('gus', 'PUT', '/api/me/settings', { default_reminders: ['PT1H'] });
      assert.equal((await later.get('gus')).timezone, 'Asia/Tokyo', 'a zone chosen stays chosen');
    });

    it("interprets a recurrence rule without a zone in the user's time zone, on create and on patch", async () => {
      // Written in another case, the zone is stored as IANA spells it.
      const put = await app.call('fay', 'PUT', '/api/me/settings', { timezone: 'europe/berlin' });
      assert.equal(put.status, 200, JSON.stringify(put.body));
      assert.equal(put.body.timezone, 'Europe/Berlin');
      assert.equal((await app.call('fay', 'GET', '/api/me/settings')).body.timezone, 'Europe/Berlin');
      const created = await app.call('fay', 'POST', '/api/tasks', {
        title: 'standup',
        due_date: '2026-03-02T08:00:00Z',
        recurrence: { preset: 'weekdays' },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.equal(created.body.recurrence.timezone, 'Europe/Berlin');
      await app.call('fay', 'PUT', '/api/me/settings', { timezone: 'America/New_York' });
      const patched = await app.call('fay', 'PATCH', `/api/tasks/${created.body.id}`, {
        recurrence: { preset: 'daily' },
      });
      assert.equal(patched.status, 200, JSON.stringify(patched.body));
      assert.equal(patched.body.recurrence.timezone, 'America/New_York');
      const plain = await app.call('fay', 'PATCH', `/api/tasks/${created.body.id}`, { title: 'standup!' });
      assert.equal(plain.body.recurrence.timezone, 'America/New_York', 'a patch without a rule keeps it');
    });

    it('takes back a rule stored before the limit of 24 times a day, sent back unchanged, and no other past it', async () => {
      const created = await app.call('gus', 'POST', '/api/tasks', {
        title: 'every half hour',
        due_date: '2026-03-02T08:00:00Z',
        recurrence: { rrule: 'FREQ=DAILY;BYHOUR=8;BYMINUTE=0', timezone: 'UTC' },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      // 48 times a day: what the API took before MAX_TIMES_A_DAY, written as it stored it.
      const old = parseRecurrence(
        { rrule: `FREQ=DAILY;BYHOUR=${Array.from({ length: 24 }, (_, h) => h).join(',')};BYMINUTE=0,30` },
        'UTC',
        { stored: true },
      );
      assert.ok(old.ok);
      await db.query('UPDATE tasks SET recurrence = $1::jsonb WHERE id = $2', [
        JSON.stringify(old.value),
        created.body.id,
      ]);
      const stored = (await app.call('gus', 'GET', `/api/tasks/${created.body.id}`)).body;
      // A client that sends the whole task back, its rule unchanged.
      const {
        id: _id,
        user_id: _user,
        created_at: _c,
        updated_at: _u,
        completed_at: _d,
        version: _v,
        series_id: _s,
        ...fields
      } = stored;
      const renamed = await app.call('gus', 'PATCH', `/api/tasks/${stored.id}`, {
        ...fields,
        title: 'every half hour!',
      });
      assert.equal(renamed.status, 200, JSON.stringify(renamed.body));
      assert.equal(renamed.body.title, 'every half hour!');
      assert.equal(renamed.body.recurrence.rrule, old.value.rrule);
      const compat = await app.call('gus', 'PUT', `/api/gus/tasks/${stored.id}`, {
        ...fields,
        title: 'again',
      });
      assert.equal(compat.status, 200, JSON.stringify(compat.body));
      // Another rule past the limit is refused as before, on this task and on a new one.
      const other = { ...old.value, rrule: old.value.rrule.replace('BYMINUTE=0,30', 'BYMINUTE=0,20,40') };
      for (const [method, path] of [
        ['PATCH', `/api/tasks/${stored.id}`],
        ['POST', '/api/tasks'],
      ] as const) {
        const refused = await app.call('gus', method, path, { title: 'x', recurrence: other });
        assert.equal(refused.status, 400, `${method} ${JSON.stringify(refused.body)}`);
        assert.match(
          refused.body.errors[0].message,
          /give 72 times a day; a task recurs at most 24 times a day/,
        );
      }
      // The stored rule is this task's own: another task cannot be given it.
      const copied = await app.call('gus', 'POST', '/api/tasks', { title: 'copy', recurrence: old.value });
      assert.equal(copied.status, 400, JSON.stringify(copied.body));
    });

    it('answers 412 on a stale If-Match and applies a fresh one', async () => {
      const t = (await app.call('erin', 'POST', '/api/tasks', { title: 'v1' })).body;
      const ok = await app.call(
        'erin',
        'PATCH',
        `/api/tasks/${t.id}`,
        { title: 'v2' },
        { 'if-match': '"1"' },
      );
      assert.equal(ok.status, 200);
      assert.equal(ok.headers.get('etag'), '"2"');
      const events = await eventCount(db);
      const stale = await app.call(
        'erin',
        'PATCH',
        `/api/tasks/${t.id}`,
        { title: 'v3' },
        { 'if-match': '"1"' },
      );
      assert.equal(stale.status, 412);
      assert.equal(stale.body.current_version, 2);
      assert.equal(
        (await app.call('erin', 'DELETE', `/api/tasks/${t.id}`, undefined, { 'if-match': '"1"' })).status,
        412,
      );
      assert.equal(
        (await app.call('erin', 'POST', `/api/tasks/${t.id}/complete`, undefined, { 'if-match': 'W/"1"' }))
          .status,
        412,
      );
      // A list of ETags (RFC 9110: any of them) is a condition too, not a 400.
      const staleList = await app.call(
        'erin',
        'PATCH',
        `/api/tasks/${t.id}`,
        { title: 'v3' },
        {
          'if-match': '"1", "3"',
        },
      );
      assert.deepEqual([staleList.status, staleList.body.current_version], [412, 2]);
      assert.equal(await eventCount(db), events, 'no event for refused writes');
      assert.equal((await app.call('erin', 'GET', `/api/tasks/${t.id}`)).body.title, 'v2');
      const anyOf = await app.call(
        'erin',
        'PATCH',
        `/api/tasks/${t.id}`,
        { title: 'v2' },
        {
          'if-match': '"1","2"',
        },
      );
      assert.deepEqual(
        [anyOf.status, anyOf.headers.get('etag')],
        [200, '"2"'],
        'unchanged title: same version',
      );
      // A read with the current ETag: 304 and no body; with an old one, the task.
      for (const tags of ['"2"', '"1", W/"2"', '*']) {
        const same = await app.call('erin', 'GET', `/api/tasks/${t.id}`, undefined, {
          'if-none-match': tags,
        });
        assert.deepEqual([same.status, same.headers.get('etag'), same.body], [304, '"2"', null], tags);
      }
      const changed = await app.call('erin', 'GET', `/api/tasks/${t.id}`, undefined, {
        'if-none-match': '"1"',
      });
      assert.deepEqual([changed.status, changed.body.title], [200, 'v2']);
      assert.equal(
        (await app.call('erin', 'DELETE', `/api/tasks/${t.id}`, undefined, { 'if-match': '"2"' })).status,
        204,
      );
    });

    it("lists what is due today, tomorrow, this week or upcoming in the user's time zone, and counts the views", async () => {
      // The clock reads 2026-03-01T12:00Z: in Tokyo (UTC+9) it is 21:00 on 1 March.
      const u = 'tokyo-tim';
      assert.equal((await app.call(u, 'PUT', '/api/me/settings', { timezone: 'Asia/Tokyo' })).status, 200);
      const dues = {
        'late yesterday': '2026-02-28T14:59:00Z', // 23:59 on 28 Feb in Tokyo
        'early today': '2026-02-28T15:00:00Z', // 00:00 on 1 March in Tokyo
        tonight: '2026-03-01T14:00:00Z', // 23:00 on 1 March
        'tomorrow morning': '2026-03-01T23:00:00Z', // 08:00 on 2 March
        'in six days': '2026-03-07T14:59:00Z', // 23:59 on 7 March
        'in seven days': '2026-03-07T15:00:00Z', // 00:00 on 8 March
      };
      for (const [title, due_date] of Object.entries(dues))
        assert.equal((await app.call(u, 'POST', '/api/tasks', { title, due_date })).status, 201);
      const titles = async (due: string) =>
        ((await app.call(u, 'GET', `/api/tasks?due=${due}&sort=due`)).body.items as { title: string }[]).map(
          (t) => t.title,
        );
      assert.deepEqual(await titles('today'), ['early today', 'tonight']);
      assert.deepEqual(await titles('tomorrow'), ['tomorrow morning']);
      assert.deepEqual(await titles('week'), ['early today', 'tonight', 'tomorrow morning', 'in six days']);
      assert.deepEqual(await titles('upcoming'), ['tomorrow morning', 'in six days', 'in seven days']);
      // The board's views, counted in one request (pending only; one more, completed, for the totals).
      const done = await app.call(u, 'POST', '/api/tasks', {
        title: 'done',
        status: 'completed',
        due_date: dues.tonight,
      });
      assert.equal(done.status, 201);
      // A fixed path beside /api/tasks/:id: its other methods are refused, not taken as a task "counts".
      const patch = await app.call(u, 'PATCH', '/api/tasks/counts', { title: 'x' });
      assert.equal(patch.status, 405);
      assert.equal(patch.headers.get('allow'), 'GET, HEAD');
      const options = await app.call(u, 'OPTIONS', '/api/tasks/counts');
      assert.deepEqual([options.status, options.headers.get('allow')], [405, 'GET, HEAD']);
      const counts = await app.call(u, 'GET', '/api/tasks/counts');
      assert.equal(counts.status, 200);
      assert.deepEqual(counts.body, {
        total: 7,
        pending: 6,
        completed: 1,
        overdue: 2,
        today: 2,
        upcoming: 3,
      });
      assert.deepEqual((await app.call('nobody-yet', 'GET', '/api/tasks/counts')).body, {
        total: 0,
        pending: 0,
        completed: 0,
        overdue: 0,
        today: 0,
        upcoming: 0,
      });
      // The counts take no filter: one asked for is refused, not answered unfiltered as if applied.
      const filtered = await app.call(u, 'GET', '/api/tasks/counts?status=pending');
      assert.equal(filtered.status, 400);
      assert.deepEqual(filtered.body.errors, [
        { field: 'status', message: 'unknown query parameter; this route takes none' },
      ]);
      const nameless = await app.call(u, 'GET', '/api/tasks?=x');
      assert.equal(nameless.status, 400);
      assert.match(nameless.body.detail, /^\(empty name\): unknown query parameter/);
      const contradiction = await app.call(u, 'GET', '/api/tasks?sort=-title&order=asc');
      assert.equal(contradiction.status, 400);
      assert.equal(contradiction.body.errors[0].field, 'order');
      const bad = await app.call(u, 'GET', '/api/tasks?due=someday');
      assert.equal(bad.status, 400);
      assert.equal(bad.body.errors[0].field, 'due');
    });

    it('filters, searches, sorts and pages with a stable cursor', async () => {
      const u = 'frank';
      const specs = [
        { title: 'Buy milk', priority: 'low', tags: ['home', 'shop'], due_date: '2026-03-02T10:00:00Z' },
        { title: 'File taxes', priority: 'urgent', tags: ['finance'], due_date: '2026-02-20T10:00:00Z' },
        { title: 'Call mom', priority: 'medium', tags: ['home'], description: 'about the birthday party' },
        {
          title: 'Book flights',
          priority: 'high',
          tags: ['travel', 'shop'],
          due_date: '2026-04-01T10:00:00Z',
        },
        { title: 'Archive photos', priority: 'none', tags: [], status: 'completed' },
      ];
      for (const s of specs) assert.equal((await app.call(u, 'POST', '/api/tasks', s)).status, 201);
      const titles = async (q: string) =>
        (await app.call(u, 'GET', `/api/tasks?${q}`)).body.items.map((t: { title: string }) => t.title);
      assert.deepEqual(await titles('status=completed'), ['Archive photos']);
      assert.deepEqual(await titles('status=pending&sort=title&order=asc'), [
        'Book flights',
        'Buy milk',
        'Call mom',
        'File taxes',
      ]);
      assert.deepEqual(await titles('priority=high,urgent&sort=priority'), ['File taxes', 'Book flights']);
      assert.deepEqual(await titles('tag=shop&sort=title&order=asc'), ['Book flights', 'Buy milk']);
      assert.deepEqual(await titles('tag=HOME,shop&tag_mode=all'), ['Buy milk']);
      assert.deepEqual(await titles('tag=home&tag=travel&sort=title&order=asc'), [
        'Book flights',
        'Buy milk',
        'Call mom',
      ]);
      const byDue = await titles('sort=due&order=asc');
      assert.deepEqual(byDue.slice(0, 3), ['File taxes', 'Buy milk', 'Book flights']);
      assert.deepEqual(
        new Set(byDue.slice(3)),
        new Set(['Call mom', 'Archive photos']),
        'no due date sorts last',
      );
      assert.deepEqual((await titles('sort=due&order=desc')).slice(0, 3), [
        'Book flights',
        'Buy milk',
        'File taxes',
      ]);
      assert.deepEqual(await titles('overdue=true'), ['File taxes']); // the clock is 2026-03-01T12:00Z
      assert.deepEqual(await titles('due_after=2026-03-01T00:00:00Z&due_before=2026-03-31T00:00:00Z'), [
        'Buy milk',
      ]);
      assert.deepEqual(await titles('q=birthday'), ['Call mom']);
      assert.deepEqual(await titles('q=tax'), ['File taxes'], 'partial words match');
      assert.deepEqual(await titles('q=milks'), ['Buy milk'], 'other forms of a word match (stems)');
      assert.deepEqual(await titles('q=booking%20flight'), ['Book flights'], 'every word, by its stem');
      assert.deepEqual(await titles('q=parties'), ['Call mom'], 'in the description too');
      // A stop word is a word too ("with", "of": the English stems of the whole text dropped them).
      assert.deepEqual(await titles('q=buy%20with'), [], 'no task has "with"');
      assert.deepEqual(await titles('q=milk%20of'), []);
      assert.deepEqual(await titles('q=mom%20about'), ['Call mom'], '"about" is in its description');
      assert.deepEqual(await titles('q=100%25'), []);
      // Text, not a query language: a leading "-" is not NOT (it matched every task without the word).
      assert.deepEqual(await titles('q=-milk'), ['Buy milk']);
      assert.deepEqual(await titles('q=%22buy%20milk%22%20or%20-tax'), []);

      // Pages of 2 over every sort concatenate to the full ordered list, without duplicates or gaps.
      for (const sort of ['due', 'priority', 'created', 'updated', 'title']) {
        for (const order of ['asc', 'desc']) {
          const full = await titles(`sort=${sort}&order=${order}&limit=200`);
          const paged: string[] = [];
          let cursor: string | null = null;
          do {
            const r: { body: { items: { title: string }[]; next_cursor: string | null } } = await app.call(
              u,
              'GET',
              `/api/tasks?sort=${sort}&order=${order}&limit=2${cursor ? `&cursor=${cursor}` : ''}`,
            );
            paged.push(...r.body.items.map((t) => t.title));
            cursor = r.body.next_cursor;
          } while (cursor);
          assert.deepEqual(paged, full, `${sort} ${order}`);
          assert.equal(full.length, 5);
        }
      }
    });

    it('pages by title through letters whose lower case differs between JavaScript and the database', async () => {
      const u = 'gail';
      // JavaScript lowers İ to i + a dot and a final Σ to ς; the database's lower() does neither.
      const all = ['ad', 'İx', 'iy', 'Zc', 'ße', 'ÅE', 'Éa', 'éb', 'ΟΔΟΣ', 'οδοσα', 'ωa', 'Ωz'];
      for (const title of all) assert.equal((await app.call(u, 'POST', '/api/tasks', { title })).status, 201);
      for (const order of ['asc', 'desc']) {
        const onePage = await app.call(u, 'GET', `/api/tasks?sort=title&order=${order}&limit=200`);
        const expected = onePage.body.items.map((t: { title: string }) => t.title);
        assert.equal(expected.length, all.length);
        const paged: string[] = [];
        let cursor: string | null = null;
        do {
          const r = await app.call(
            u,
            'GET',
            `/api/tasks?sort=title&order=${order}&limit=1${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
          );
          paged.push(...r.body.items.map((t: { title: string }) => t.title));
          cursor = r.body.next_cursor;
        } while (cursor && paged.length <= all.length);
        assert.deepEqual(paged, expected, `${order}: one task a page, each once, in the one page's order`);
      }
    });

    it('finds text and tags however their accents were encoded (stored and searched as NFC)', async () => {
      const u = 'noel';
      const decomposed = 'Cafe\u0301 cre\u0300me'; // "Café crème" as macOS keyboards and some pastes send it
      const created = await app.call(u, 'POST', '/api/tasks', {
        title: decomposed,
        tags: ['re\u0301sume\u0301'],
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.equal(created.body.title, 'Café crème', 'stored composed');
      assert.deepEqual(created.body.tags, ['résumé']);
      const dup = await app.call(u, 'POST', '/api/tasks', { title: 't', tags: ['Café', 'Cafe\u0301'] });
      assert.deepEqual(dup.body.tags, ['Café'], 'one tag, however encoded');
      for (const q of ['café', 'Cafe\u0301', 'crème']) {
        const r = await app.call(u, 'GET', `/api/tasks?q=${encodeURIComponent(q)}`);
        assert.deepEqual(
          r.body.items.map((t: { title: string }) => t.title),
          ['Café crème'],
          `q=${JSON.stringify(q)}`,
        );
      }
      const byTag = await app.call(u, 'GET', `/api/tasks?tag=${encodeURIComponent('résumé')}`);
      assert.deepEqual(
        byTag.body.items.map((t: { title: string }) => t.title),
        ['Café crème'],
      );
    });

    it('writes no task and no event when the transaction rolls back', async () => {
      const store = new TaskStore(db, new ManualClock());
      const rows = await count('tasks');
      const events = await eventCount(db);
      await assert.rejects(
        db.transaction(async (tx) => {
          await store.create('gina', plainFields('doomed'), { source: 'test' }, { tx });
          assert.equal(await eventCount(tx), events + 2, 'task.created and its task.changed');
          throw new Error('abort');
        }),
        /abort/,
      );
      assert.equal(await count('tasks'), rows);
      assert.equal(await eventCount(db), events);
    });

    it('serves OpenAPI, docs, health and readiness', async () => {
      const spec = await app.call(null, 'GET', '/openapi.json');
      assert.equal(spec.status, 200);
      assert.ok(spec.body.paths['/api/tasks'].post);
      assert.ok(spec.body.paths['/api/{user_id}/tasks/{id}/complete'].patch);
      // Both reads of a task answer 304 to a current If-None-Match, and both say so.
      for (const path of ['/api/tasks/{id}', '/api/{user_id}/tasks/{id}']) {
        const read = spec.body.paths[path].get;
        assert.ok(read.responses['304'], path);
        assert.ok(
          read.parameters.some(
            (p: { in: string; name: string }) => p.in === 'header' && p.name === 'if-none-match',
          ),
          path,
        );
      }
      const t = (await app.call('alice', 'POST', '/api/tasks', { title: 'polled' })).body;
      const polled = await app.call('alice', 'GET', `/api/alice/tasks/${t.id}`, undefined, {
        'if-none-match': '"1"',
      });
      assert.deepEqual([polled.status, polled.body], [304, null]);
      assert.equal((await fetch(`${app.url}/docs/`)).status, 200);
      assert.deepEqual((await app.call(null, 'GET', '/healthz')).body, { status: 'ok' });
      assert.equal((await app.call(null, 'GET', '/readyz')).status, 200);
      const unknown = await app.call('alice', 'GET', '/api/nothing-here/x/y');
      assert.equal(unknown.status, 404);
      // A route path with a method it does not take: 405 with Allow, before any body is read.
      for (const method of ['PUT', 'DELETE', 'QUERY']) {
        const res = await fetch(`${app.url}/api/tasks`, { method });
        assert.equal(res.status, 405, method);
        assert.equal(res.headers.get('allow'), 'GET, HEAD, POST');
        assert.equal(res.headers.get('content-type'), 'application/problem+json; charset=utf-8');
      }
      // Every operation declares its errors as problem+json, and a success.
      for (const [path, ops] of Object.entries<Record<string, { responses: Record<string, any> }>>(
        spec.body.paths,
      ))
        for (const [method, op] of Object.entries(ops)) {
          const codes = Object.keys(op.responses);
          assert.ok(
            codes.some((c) => c.startsWith('2')),
            `${method} ${path}: a success`,
          );
          for (const c of ['400', '401', '429', '503'])
            assert.ok(op.responses[c]?.content['application/problem+json'], `${method} ${path}: ${c}`);
          // ...and when to try again after the rate limit or an outage.
          for (const c of ['429', '503'])
            assert.ok(
              op.responses[c].headers?.['Retry-After']?.schema,
              `${method} ${path}: ${c} Retry-After`,
            );
        }
      // UTC, every zone field's default, is among the zones the document lists (Node's list leaves it out).
      const settings = spec.body.paths['/api/me/settings'].put.requestBody.content['application/json'].schema;
      assert.ok(settings.properties.timezone.enum.includes('UTC'));
    });
  });
}

describe('client IP behind proxies (TRUST_PROXY)', () => {
  const clientIpOf = async (env: Record<string, string>) => {
    const db = await openDb('memory://');
    await migrate(db);
    const app = await startApp(db, { env });
    try {
      const created = await app.call(
        'ip',
        'POST',
        '/api/tasks',
        { title: 'where from' },
        {
          'x-forwarded-for': '203.0.113.7, 10.0.0.2',
        },
      );
      assert.equal(created.status, 201);
      const [event] = await writtenEvents(db);
      return event!.event.clientip as string;
    } finally {
      await app.stop();
      await db.close();
    }
  };

  it('ignores X-Forwarded-For by default, so a direct client cannot forge its address', async () => {
    assert.equal(await clientIpOf({}), '127.0.0.1');
  });

  it('takes the address a trusted hop count of proxies reports', async () => {
    assert.equal(await clientIpOf({ TRUST_PROXY: '1' }), '10.0.0.2');
    assert.equal(await clientIpOf({ TRUST_PROXY: '2' }), '203.0.113.7');
    assert.equal(await clientIpOf({ TRUST_PROXY: '127.0.0.1/8' }), '10.0.0.2');
  });

  it('refuses a malformed TRUST_PROXY at start-up', () => {
    assert.throws(() => testConfig({ TRUST_PROXY: 'yes please' }), /TRUST_PROXY must be/);
  });
});

/**
 * The answers' bodies and headers as /openapi.json declares them, checked against real answers of every target
 * that declares them (schemathesis checks them too, where it is installed).
 */
describe('the OpenAPI document declares the answers as they are sent', () => {
  let db: Db;
  let drop: () => Promise<void>;
  let model: FakeModel;
  let app: TestApp;
  let doc: any;
  const ajv = new Ajv({ strict: false, allowUnionTypes: true });
  addFormats(ajv);
  before(async () => {
    ({ db, drop } = await backends[0]!.fresh());
    model = await startFakeModel({ fallback: { text: 'Noted.' } });
    app = await startApp(db, {
      targets: ['api', 'relay', 'recurrence', 'notifications', 'audit'],
      env: { CHAT_BASE_URL: model.url, CHAT_MODEL: 'fake-model' },
    });
    doc = (await app.call(null, 'GET', '/openapi.json')).body;
  });
  after(async () => {
    await app?.stop();
    await model?.close();
    await drop?.();
  });

  /** Checks an answer against its declaration: the body's schema, every required header, each header's schema. */
  const conforms = (
    path: string,
    method: string,
    res: { status: number; body: unknown; headers: Headers },
    opts: { headers?: string[] } = {},
  ) => {
    const what = `${method.toUpperCase()} ${path} ${res.status}`;
    const declared = doc.paths[path]?.[method]?.responses?.[res.status];
    assert.ok(declared, `${what} is declared`);
    const schema = declared.content?.['application/json']?.schema;
    assert.ok(schema?.type || schema?.oneOf, `${what}: a body schema`);
    const body = ajv.compile(schema);
    assert.ok(body(res.body), `${what}: ${ajv.errorsText(body.errors)}\n${JSON.stringify(res.body)}`);
    for (const name of opts.headers ?? []) assert.ok(declared.headers?.[name], `${what} declares ${name}`);
    for (const [name, h] of Object.entries<any>(declared.headers ?? {})) {
      const value = res.headers.get(name);
      if (value === null) {
        assert.ok(!h.required, `${what}: the required header ${name} is missing`);
        continue;
      }
      const header = ajv.compile(h.schema);
      assert.ok(header(value), `${what}: ${name}: ${value}: ${ajv.errorsText(header.errors)}`);
    }
  };

  it('says why a valid JSON body with a prototype-polluting key is refused', async () => {
    for (const body of [
      '{"title":"x","__proto__":{"a":1}}',
      '{"title":"x","constructor":{"prototype":{}}}',
      '\uFEFF{"title":"x","__proto__":{"a":1}}', // behind a byte order mark, which the parser takes
    ]) {
      const r = await app.call('olga', 'POST', '/api/tasks', body);
      assert.equal(r.status, 400, body);
      assert.match(r.body.detail, /"__proto__" or "constructor.prototype" key/, body);
    }
    assert.match(
      (await app.call('olga', 'POST', '/api/tasks', '{"title": "t"')).body.detail,
      /not valid JSON/,
    );
  });

  it("the task answers: ETag, Location, Idempotent-Replayed, and the compatibility list's next page", async () => {
    const body = {
      title: 'Gym',
      due_date: '2026-03-02T09:00:00Z',
      recurrence: 'weekly',
      reminders: ['PT1H'],
    };
    const key = { 'idempotency-key': 'openapi-answers-1' };
    const created = await app.call('olga', 'POST', '/api/tasks', body, key);
    conforms('/api/tasks', 'post', created, { headers: ['Location', 'ETag', 'Idempotent-Replayed'] });
    // Marked required in the document (finishDocument), so a missing one fails the check below.
    const createdHeaders = doc.paths['/api/tasks'].post.responses['201'].headers;
    assert.equal(createdHeaders.Location.required, true);
    assert.notEqual(createdHeaders.ETag.required, true, 'a replay has none');
    assert.equal(doc.paths['/api/tasks/{id}'].get.responses['200'].headers.ETag.required, true);
    const replayed = await app.call('olga', 'POST', '/api/tasks', body, key);
    assert.equal(replayed.headers.get('idempotent-replayed'), 'true');
    conforms('/api/tasks', 'post', replayed);
    const id = created.body.id as string;
    conforms('/api/tasks/{id}', 'get', await app.call('olga', 'GET', `/api/tasks/${id}`), {
      headers: ['ETag'],
    });
    const patched = await app.call('olga', 'PATCH', `/api/tasks/${id}`, { priority: 'high' });
    conforms('/api/tasks/{id}', 'patch', patched, { headers: ['ETag'] });
    const skipped = await app.call('olga', 'POST', `/api/tasks/${id}/skip`);
    conforms('/api/tasks/{id}/skip', 'post', skipped, { headers: ['ETag'] });
    // The skip moved the due date and so the reminder: its plan is in the answer, and declared.
    assert.ok(skipped.body.reminder_plan, 'a skip that moves the reminders answers their plan');
    const skipSchema =
      doc.paths['/api/tasks/{id}/skip'].post.responses['200'].content['application/json'].schema;
    assert.ok(skipSchema.properties.reminder_plan, "the skip's answer declares reminder_plan");
    for (const [route, suffix] of [
      ['/api/tasks/{id}/complete', 'complete'],
      ['/api/tasks/{id}/reopen', 'reopen'],
    ] as const)
      conforms(route, 'post', await app.call('olga', 'POST', `/api/tasks/${id}/${suffix}`), {
        headers: ['ETag'],
      });
    const compat = await app.call('olga', 'POST', '/api/olga/tasks', { title: 'Second' });
    conforms('/api/{user_id}/tasks', 'post', compat, { headers: ['Location', 'ETag'] });
    const first = await app.call('olga', 'GET', '/api/olga/tasks?limit=1');
    assert.ok(first.headers.get('x-next-cursor') && first.headers.get('link'), 'a next page');
    conforms('/api/{user_id}/tasks', 'get', first, { headers: ['X-Next-Cursor', 'Link'] });
  });

  it('the chat answers: a reply, the conversations, one conversation with its messages; events when asked', async () => {
    const reply = await app.call('olga', 'POST', '/api/chat', { message: 'What is due today?' });
    conforms('/api/chat', 'post', reply);
    assert.ok(doc.paths['/api/chat'].post.responses['200'].content['text/event-stream'].schema);
    conforms('/api/chat/conversations', 'get', await app.call('olga', 'GET', '/api/chat/conversations'));
    const one = await app.call('olga', 'GET', `/api/chat/conversations/${reply.body.conversation_id}`);
    assert.deepEqual(
      one.body.messages.map((m: { role: string }) => m.role),
      ['user', 'assistant'],
    );
    conforms('/api/chat/conversations/{id}', 'get', one);
  });

  it('the notification preferences and the audit records', async () => {
    conforms(
      '/api/notifications/preferences',
      'get',
      await app.call('olga', 'GET', '/api/notifications/preferences'),
    );
    const put = await app.call('olga', 'PUT', '/api/notifications/preferences', {
      email: 'olga@example.com',
      webhook_url: 'https://example.com/hook',
      quiet_hours: { start: '22:00', end: '07:00' },
    });
    assert.ok(put.body.webhook_secret, 'a generated secret');
    conforms('/api/notifications/preferences', 'put', put);
    conforms(
      '/api/notifications/preferences',
      'get',
      await app.call('olga', 'GET', '/api/notifications/preferences'),
    );
    // A task's writes, for records of both kinds of change (before and after).
    const task = await app.call('olga', 'POST', '/api/tasks', { title: 'Audited' });
    await app.call('olga', 'PATCH', `/api/tasks/${task.body.id}`, { title: 'Audited twice' });
    const page = await waitFor(
      async () => {
        // The task's two records, one to a page: the page answered has the next one's cursor.
        const r = await app.call('olga', 'GET', `/api/audit?task_id=${task.body.id}&limit=1`);
        return r.body.next_cursor ? r : undefined;
      },
      10_000,
      'audit records of the task writes',
    );
    conforms('/api/audit', 'get', page);
  });

  it('a push subscription, and a refused token with WWW-Authenticate', async () => {
    const endpoint = 'https://push.example.com/send/olga-1';
    const keys = { p256dh: createECDH('prime256v1').generateKeys('base64url'), auth: 'A'.repeat(22) };
    const added = await app.call('olga', 'POST', '/api/notifications/push-subscriptions', { endpoint, keys });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    conforms('/api/notifications/push-subscriptions', 'post', added);
    const refused = await fetch(`${app.url}/api/tasks`, { headers: { authorization: 'Bearer not-a-token' } });
    assert.equal(refused.status, 401);
    assert.match(refused.headers.get('www-authenticate') ?? '', /^Bearer /);
    assert.ok(doc.paths['/api/tasks'].get.responses['401'].headers['WWW-Authenticate']);
  });

  it('refuses a webhook or push endpoint that can never be delivered to (not a public address) when saved', async () => {
    for (const url of [
      'http://127.0.0.1:8080/hook',
      'http://localhost/hook',
      'https://192.168.0.5/x',
      'http://10.1.2.3/x',
    ]) {
      const r = await app.call('olga', 'PUT', '/api/notifications/preferences', { webhook_url: url });
      assert.equal(r.status, 400, `${url}: ${JSON.stringify(r.body)}`);
      assert.match(JSON.stringify(r.body), /webhook_url.*not a public address/, url);
    }
    const keys = { p256dh: createECDH('prime256v1').generateKeys('base64url'), auth: 'A'.repeat(22) };
    const push = await app.call('olga', 'POST', '/api/notifications/push-subscriptions', {
      endpoint: 'https://169.254.169.254/latest',
      keys,
    });
    assert.equal(push.status, 400, JSON.stringify(push.body));
    assert.match(JSON.stringify(push.body), /endpoint.*not a public address/);
    const prefs = await app.call('olga', 'GET', '/api/notifications/preferences');
    assert.ok(
      !/127\.0\.0\.1|localhost|192\.168\.0\.5|10\.1\.2\.3/.test(String(prefs.body.webhook_url)),
      'nothing saved',
    );
  });
});

describe('browsers of other sites (CORS_ORIGINS)', () => {
  const withApp = async (env: Record<string, string>, fn: (app: TestApp) => Promise<void>) => {
    const db = await openDb('memory://');
    await migrate(db);
    const app = await startApp(db, { env });
    try {
      await fn(app);
    } finally {
      await app.stop();
      await db.close();
    }
  };
  const preflight = (app: TestApp, origin: string) =>
    fetch(`${app.url}/api/tasks/0195a3b2-0000-7000-8000-0000000000aa`, {
      method: 'OPTIONS',
      headers: {
        origin,
        'access-control-request-method': 'PATCH',
        'access-control-request-headers':
          'authorization, content-type, if-match, if-none-match, idempotency-key',
      },
    });

  it('answers the preflight of an allowed origin, and lets it read the version and the paging', async () => {
    await withApp({ CORS_ORIGINS: 'https://app.example.com' }, async (app) => {
      const ok = await preflight(app, 'https://app.example.com');
      assert.equal(ok.status, 204);
      assert.equal(ok.headers.get('access-control-allow-origin'), 'https://app.example.com');
      assert.match(ok.headers.get('access-control-allow-methods') ?? '', /PATCH/);
      for (const header of ['if-match', 'if-none-match', 'idempotency-key', 'mcp-session-id'])
        assert.match(ok.headers.get('access-control-allow-headers') ?? '', new RegExp(header));
      const created = await fetch(`${app.url}/api/tasks`, {
        method: 'POST',
        headers: {
          origin: 'https://app.example.com',
          authorization: `Bearer ${await app.token('cors')}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify({ title: 'from another site' }),
      });
      assert.equal(created.status, 201);
      assert.equal(created.headers.get('access-control-allow-origin'), 'https://app.example.com');
      assert.match(created.headers.get('access-control-expose-headers') ?? '', /etag.*idempotent-replayed/);
      // Another origin gets no allowance (the browser then refuses the answer to its page).
      const other = await preflight(app, 'https://evil.example');
      assert.equal(other.headers.get('access-control-allow-origin'), null);
    });
  });

  it('allows no other origin by default (an OPTIONS is refused as before)', async () => {
    await withApp({}, async (app) => {
      const r = await preflight(app, 'https://app.example.com');
      assert.equal(r.status, 405);
      assert.equal(r.headers.get('access-control-allow-origin'), null);
    });
    assert.throws(() => testConfig({ CORS_ORIGINS: '*' }), /CORS_ORIGINS must be origins/);
    assert.throws(
      () => testConfig({ CORS_ORIGINS: 'https://app.example.com/path' }),
      /CORS_ORIGINS must be origins/,
    );
  });
});
