/**
 * Hostile input over every route, against a running instance with every target, on PGlite and PostgreSQL.
 * The operations come from the instance's own OpenAPI document (a new route is covered without touching
 * this file) plus the undocumented ones (MCP, the board, health). First every operation gets each broken
 * part on its own, everything else valid: each path and query parameter, each body field and nested field
 * (NUL, lone surrogates, instants out of range, crafted cursors, huge numbers, wrong JSON types), each MCP
 * tool argument, the body itself (not JSON, deeply nested, 2 MB, other content types), the token, If-Match
 * and Idempotency-Key: about 10,000 requests. Then random mixes up to TEST_FUZZ_REQUESTS (default 5,000
 * in all, so none today). Every answer must be below 500, arrive within 10 s and show no stack, file path
 * or SQL text. Random choices are seeded: TEST_FUZZ_SEED replays a run (the seed is printed).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { backends } from '../helpers/db.ts';
import { startApp } from '../helpers/app.ts';
import { startFakeModel } from '../helpers/openai-server.ts';
import { TARGETS } from '../../src/services/index.ts';

const REQUESTS = Number(process.env.TEST_FUZZ_REQUESTS ?? 5_000);
const SEED = Number(process.env.TEST_FUZZ_SEED ?? Date.now() % 1_000_000);
const EVERY_TARGET = TARGETS.map((t) => t.name); // as `taskflow up`

/** mulberry32: a small seeded PRNG, so a failing run can be replayed. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]! };
}

/** Percent-encodes a path segment; a lone surrogate goes as the bytes of one (invalid UTF-8, as a raw client may send). */
const segment = (s: string) => {
  try {
    return encodeURIComponent(s);
  } catch {
    return encodeURIComponent(s.replace(/[\ud800-\udfff]/g, '')) + '%ED%A0%80';
  }
};
const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const ZERO_UUID = '00000000-0000-0000-0000-000000000000';

/** Strings that have broken parsers, validators or databases before (issue reports included). */
const HOSTILE_STRINGS = [
  '',
  ' ',
  'a\u0000b',
  '\u0000',
  'a\ud800b',
  '\udc00',
  '\ud83d',
  '😀'.repeat(300),
  'x'.repeat(70_000),
  '0000-01-01T00:00:00Z',
  '-000001-01-01T00:00:00Z',
  '+275760-09-13T00:00:00Z',
  '0001-01-01T00:00:00Z',
  '9999-12-31T23:59:59.999Z',
  '10000-01-01T00:00:00Z',
  '2026-02-30T00:00:00Z',
  '2026-03-01T25:61:61Z',
  '2026-03-01',
  'P0D',
  'P999999999D',
  'PT-1H',
  'FREQ=SECONDLY',
  'FREQ=DAILY;COUNT=999999999',
  'FREQ=WEEKLY;BYDAY=XX',
  'Etc/GMT+99',
  '+01:00',
  '99999999999999999999',
  '-1',
  '1.5',
  '1e309',
  'NaN',
  'Infinity',
  'true',
  'null',
  '[]',
  '{}',
  "' OR '1'='1",
  "'; DROP TABLE tasks; --",
  '$1',
  '%',
  '_',
  '\\',
  '../../etc/passwd',
  '<script>alert(1)</script>',
  // Names an object answers through its prototype: a lookup in a plain object found them (sort: a 500).
  'constructor',
  '__proto__',
  'toString',
  '-valueOf',
  '9999-12-31T23:59:59.9999Z',
  '\u202e\u2028\u2029',
  ZERO_UUID,
  'nope',
  '00000000-0000-0000-0000-00000000000g',
  b64({ v: 'garbage', id: ZERO_UUID, s: 'created', o: 'desc' }),
  b64({ v: 'x', id: 'nope', s: 'created', o: 'desc' }),
  b64({ v: 99999999, id: ZERO_UUID, s: 'priority', o: 'asc' }),
  b64({ v: 1.5, id: ZERO_UUID, s: 'priority', o: 'desc' }),
  b64({ v: '0000-01-01T00:00:00Z', id: ZERO_UUID, s: 'due', o: 'asc' }),
  b64({ v: null, id: null, s: null, o: null }),
  b64([1, 2, 3]),
  b64('a:9999999999999999999'),
  b64('a:-1'),
  b64('a:1.5'),
  b64('\u0000'),
  'not base64 !!!',
];

/** JSON values of every type, for body fields. */
const HOSTILE_VALUES: unknown[] = [
  ...HOSTILE_STRINGS,
  null,
  true,
  0,
  -0,
  -1,
  1.5,
  2 ** 53 + 1,
  -(2 ** 63),
  1e300,
  [],
  [null],
  ['a\u0000'],
  Array.from({ length: 1_000 }, (_, i) => `t${i}`),
  {},
  { $gt: '' },
  { __proto__: { polluted: true } },
  JSON.parse('{"constructor":{"prototype":{"polluted":true}}}'),
];

/** What each MCP tool argument gets (every tool x argument x value: fewer values than for REST fields). */
const TOOL_ARGUMENTS: unknown[] = [
  'a\u0000b',
  'a\ud800b',
  '0000-01-01T00:00:00Z',
  '+275760-09-13T00:00:00Z',
  'x'.repeat(70_000),
  'nope',
  ZERO_UUID,
  b64({ v: 'garbage', id: ZERO_UUID, s: 'created', o: 'desc' }),
  null,
  1e300,
  -1,
  [],
  {},
];

const VALID_TASK = {
  title: 'fuzz',
  description: 'd',
  priority: 'high',
  tags: ['a'],
  due_date: '2026-04-01T09:00:00Z',
  reminders: ['PT1H'],
  recurrence: null,
};

/** A body each operation accepts (keyed `METHOD path`), from which one field at a time is broken. */
const VALID_BODIES: Record<string, Record<string, unknown>> = {
  'POST /api/tasks': VALID_TASK,
  'PATCH /api/tasks/{id}': { ...VALID_TASK, status: 'completed' },
  'POST /api/{user_id}/tasks': VALID_TASK,
  'PUT /api/{user_id}/tasks/{id}': { ...VALID_TASK, status: 'completed' },
  'PUT /api/me/settings': { timezone: 'Europe/Paris', default_reminders: ['PT1H'] },
  'POST /api/tasks/{id}/reminders/{reminder_id}/snooze': { duration: 'PT10M', until: '2026-04-01T08:30:00Z' },
  'PUT /api/notifications/preferences': {
    email: 'a@example.com',
    channels: { email: true, push: false, in_app: true, webhook: false },
    quiet_hours: { start: '22:00', end: '07:00' },
    webhook_url: 'https://hooks.example.com/x',
    webhook_secret: 's'.repeat(32),
  },
  'POST /api/notifications/push-subscriptions': {
    endpoint: 'https://push.example.com/send/1',
    keys: {
      p256dh: 'BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM',
      auth: 'tBHItJI5svbpez7KI4CCXg',
    },
  },
  'POST /mcp': {
    jsonrpc: '2.0',
    id: 1,
    method: 'tools/call',
    params: { name: 'add_task', arguments: { title: 'fuzz', priority: 'high' } },
  },
};

/** Nested arrays `depth` deep (a JSON parser's or validator's stack). */
const deep = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);

interface Operation {
  method: string;
  path: string;
  query: string[];
  hasBody: boolean;
}

/** Traces of a server error leaking into an answer: stacks, source paths, SQL and driver text. */
const LEAKS = [
  /\n\s+at .+:\d+:\d+/,
  /node_modules/,
  /\/(src|dist)\/\S+\.(ts|js)/,
  /\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b/,
  /syntax error at or near/,
  /relation "\w+"/,
  /violates \w+ constraint/,
  /SQLSTATE|sqlState/,
];

for (const backend of backends) {
  describe(`hostile input on ${backend.name}`, () => {
    it('answers every hostile request below 500, in time, without leaking internals', async (t) => {
      const { db, drop } = await backend.fresh();
      // The chat endpoint talks to a stand-in model that always answers in words.
      const model = await startFakeModel({ fallback: { text: 'Noted.' } });
      const app = await startApp(db, {
        targets: EVERY_TARGET,
        env: { CHAT_BASE_URL: model.url, CHAT_MODEL: 'fake-model' },
      });
      try {
        const rand = prng(SEED);
        const doc = (await (await fetch(`${app.url}/openapi.json`)).json()) as {
          paths: Record<
            string,
            Record<string, { parameters?: { in: string; name: string }[]; requestBody?: unknown }>
          >;
        };
        const ops: Operation[] = [];
        for (const [path, methods] of Object.entries(doc.paths))
          for (const [method, op] of Object.entries(methods))
            ops.push({
              method: method.toUpperCase(),
              path,
              query: (op.parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name),
              hasBody: Boolean(op.requestBody) || ['post', 'put', 'patch'].includes(method),
            });
        assert.ok(ops.length >= 20, `the document lists ${ops.length} operations`);
        // Undocumented routes: MCP (JSON-RPC), the board, the document itself, health.
        ops.push(
          { method: 'POST', path: '/mcp', query: [], hasBody: true },
          { method: 'GET', path: '/', query: [], hasBody: false },
          { method: 'GET', path: '/openapi.json', query: [], hasBody: false },
          { method: 'GET', path: '/readyz', query: [], hasBody: false },
        );
        // Real rows for the path parameters, so hostile bodies reach the code behind the lookup.
        const users = ['mallory', 'trudy'];
        const ids: string[] = [];
        for (const user of users) {
          const tz = await app.call(user, 'PUT', '/api/me/settings', { timezone: 'Europe/Paris' });
          assert.equal(tz.status, 200, JSON.stringify(tz.body));
          for (let i = 0; i < 3; i++) {
            const r = await app.call(user, 'POST', '/api/tasks', {
              ...VALID_TASK,
              title: `seed ${i}`,
              recurrence: i === 0 ? 'daily' : null,
            });
            assert.equal(r.status, 201, JSON.stringify(r.body));
            ids.push(r.body.id);
          }
        }

        /** One request: an operation with every part valid except those given. */
        interface Case {
          op: Operation;
          path?: Record<string, string>;
          query?: [string, string][];
          body?: string | null; // null: none
          type?: string;
          auth?: string | null; // null: no Authorization header
          headers?: Record<string, string>;
        }
        const json = (v: unknown) => JSON.stringify(v);
        const validBody = (op: Operation) => VALID_BODIES[`${op.method} ${op.path}`];
        const cases: Case[] = [];
        for (const op of ops) {
          for (const name of op.path.match(/\{(\w+)\}/g)?.map((m) => m.slice(1, -1)) ?? [])
            for (const v of HOSTILE_STRINGS) cases.push({ op, path: { [name]: v } });
          for (const q of op.query) for (const v of HOSTILE_STRINGS) cases.push({ op, query: [[q, v]] });
          const body = validBody(op);
          if (body) {
            const fields = Object.keys(body);
            for (const field of fields)
              for (const v of HOSTILE_VALUES) cases.push({ op, body: json({ ...body, [field]: v }) });
            // Nested fields of object members (MCP tool arguments, subscription keys, preferences).
            for (const field of fields) {
              const inner = body[field];
              if (inner && typeof inner === 'object' && !Array.isArray(inner))
                for (const k of Object.keys(inner).concat('params' in body ? ['arguments'] : []))
                  for (const v of HOSTILE_VALUES)
                    cases.push({ op, body: json({ ...body, [field]: { ...inner, [k]: v } }) });
            }
            if (op.path === '/mcp')
              for (const tool of ['add_task', 'list_tasks', 'complete_task', 'delete_task', 'update_task'])
                for (const arg of ['title', 'task_id', 'status', 'due_date', 'tags', 'cursor'])
                  for (const v of TOOL_ARGUMENTS)
                    cases.push({
                      op,
                      body: json({
                        ...body,
                        params: { name: tool, arguments: { task_id: ids[0], [arg]: v } },
                      }),
                    });
          }
          if (op.hasBody) {
            for (const v of HOSTILE_VALUES) cases.push({ op, body: json(v) });
            for (const raw of ['{', '{"title":', 'nul\u0000l', '{"title":"a"}}', '\ufeff{}', '1e309', ''])
              cases.push({ op, body: raw });
            for (const depth of [100, 5_000, 100_000]) cases.push({ op, body: deep(depth) });
            cases.push({ op, body: json({ title: 'x'.repeat(2_000_000) }) });
            for (const type of [
              'application/x-www-form-urlencoded',
              'text/plain',
              'multipart/form-data; boundary=x',
              'application/json; charset=utf-16',
              'application/xml',
            ])
              cases.push({ op, body: 'title=a', type });
          }
          for (const auth of [
            null,
            'Bearer',
            'Bearer a.b.c',
            'Basic Zm9vOmJhcg==',
            `Bearer ${'x'.repeat(10_000)}`,
          ])
            cases.push({ op, auth });
          for (const v of ['"1"', '"99999999999999999999"', 'W/"x"', '*', '"\u00ff"'])
            cases.push({ op, headers: { 'if-match': v } });
          for (const v of ['k', 'x'.repeat(1_000), '\u00ff', ''])
            cases.push({ op, headers: { 'idempotency-key': v } });
        }
        const systematic = cases.length;
        // Then random mixes of several broken parts at once, up to REQUESTS.
        while (cases.length < REQUESTS) {
          const op = rand.pick(ops);
          const body = validBody(op);
          const field = body && rand.pick(Object.keys(body));
          cases.push({
            op,
            path: Object.fromEntries(
              (op.path.match(/\{(\w+)\}/g) ?? []).map((m) => [m.slice(1, -1), rand.pick(HOSTILE_STRINGS)]),
            ),
            query: op.query.filter(() => rand.next() < 0.3).map((q) => [q, rand.pick(HOSTILE_STRINGS)]),
            ...(body ? { body: json({ ...body, [field!]: rand.pick(HOSTILE_VALUES) }) } : {}),
          });
        }

        const failures: string[] = [];
        const statuses = new Map<number, number>();
        let retried = 0;
        const send = async (c: Case, user = rand.pick(users), id = rand.pick(ids)): Promise<string> => {
          const path = c.op.path.replace(/\{(\w+)\}/g, (_, name: string) =>
            segment(c.path?.[name] ?? (name === 'user_id' ? user : name === 'reminder_id' ? ZERO_UUID : id)),
          );
          const query = c.query?.length ? `?${new URLSearchParams(c.query)}` : '';
          const headers: Record<string, string> = { ...c.headers };
          const auth = c.auth === undefined ? `Bearer ${await app.token(user)}` : c.auth;
          if (auth !== null) headers.authorization = auth;
          if (c.op.path === '/mcp') headers.accept = 'application/json, text/event-stream';
          const body = c.body !== undefined ? c.body : c.op.hasBody ? json(validBody(c.op) ?? {}) : null;
          if (body !== null) headers['content-type'] = c.type ?? 'application/json';
          const what = `${c.op.method} ${(path + query).slice(0, 200)} ${body ? body.slice(0, 200) : ''}`;
          const request = () =>
            fetch(app.url + path + query, {
              method: c.op.method,
              headers,
              ...(body !== null && c.op.method !== 'GET' ? { body } : {}),
              signal: AbortSignal.timeout(10_000),
            });
          try {
            // A kept-alive connection the server closed as the next request went out on it (seen once in
            // ~40,000 requests, Node 24): a client retries an idempotent request on a new one (RFC 9110
            // 9.2.2). Counted; a timeout is never retried (that would be a hang).
            const res = await request().catch((err: { cause?: { code?: string } }) => {
              const closed = ['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE'].includes(err.cause?.code ?? '');
              if (!closed || !['GET', 'HEAD'].includes(c.op.method)) throw err;
              retried++;
              return request();
            });
            const text = await res.text();
            statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
            if (res.status >= 500) failures.push(`${res.status} for ${what}: ${text.slice(0, 300)}`);
            // Every refusal is problem+json (MCP answers JSON-RPC errors), the router's own ones too.
            const type = res.headers.get('content-type') ?? '';
            if (res.status >= 400 && c.op.path !== '/mcp' && !type.startsWith('application/problem+json'))
              failures.push(
                `${res.status} as ${type || 'no content type'} for ${what}: ${text.slice(0, 300)}`,
              );
            const leak = LEAKS.find((re) => re.test(text));
            if (leak && c.op.path !== '/openapi.json' && c.op.path !== '/')
              failures.push(`${res.status} leaks ${leak} for ${what}: ${text.slice(0, 300)}`);
            return `${res.status} ${text.slice(0, 300)}`;
          } catch (err) {
            const cause = (err as { cause?: { code?: string; message?: string } }).cause;
            failures.push(
              `no answer (${(err as Error).name}: ${(err as Error).message}${cause ? `: ${cause.code ?? ''} ${cause.message ?? ''}` : ''}) for ${what}`,
            );
            return '0';
          }
        };
        // Each valid body is accepted as it is: a broken part is then the only reason for a refusal.
        for (const op of ops.filter((o) => validBody(o) && o.method !== 'DELETE')) {
          const res = await send({ op }, 'mallory', ids[1]!);
          assert.ok(
            /^2/.test(res) || op.path.includes('{reminder_id}'),
            `${op.method} ${op.path} with its valid body: ${res}`,
          );
        }
        let next = 0;
        // 8 clients at once: concurrency finds what one at a time does not (group commit, the single PGlite session).
        await Promise.all(
          Array.from({ length: 8 }, async () => {
            while (next < cases.length) await send(cases[next++]!);
          }),
        );
        t.diagnostic(
          `seed ${SEED}: ${cases.length} requests (${systematic} one broken part each, then random mixes) over ${ops.length} operations (${retried} retried on a closed connection); statuses ${[
            ...statuses,
          ]
            .sort((a, b) => a[0] - b[0])
            .map(([s, n]) => `${s}: ${n}`)
            .join(', ')}`,
        );
        assert.deepEqual(failures.slice(0, 25), [], `${failures.length} failures (seed ${SEED})`);
        assert.equal((await fetch(`${app.url}/readyz`)).status, 200, 'still ready afterwards');
      } finally {
        await app.stop();
        await model.close();
        await drop();
      }
    });
  });
}
