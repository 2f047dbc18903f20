/**
 * The MCP tools with the SDK's own client, over Streamable HTTP (`/mcp` on the api target, with the relay
 * publishing to the embedded bus) and over stdio (`taskflow mcp` as a child process writing into a
 * PostgreSQL database; a PGlite directory can only be opened by one process, so stdio needs PostgreSQL).
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { signDevToken } from '../../src/auth.ts';
import { ManualClock } from '../../src/domain/clock.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { TaskStore } from '../../src/store/tasks.ts';
import { MAX_MCP_BATCH } from '../../src/services/api/mcp-http.ts';
import { TEST_SECRET, writtenEvents, startApp, waitFor, type TestApp } from '../helpers/app.ts';
import { plainFields } from '../helpers/events.ts';
import { createPgDatabase } from '../helpers/db.ts';

const TOOLS = [
  'add_task',
  'complete_task',
  'confirm_email',
  'delete_task',
  'dismiss_reminder',
  'get_context',
  'get_task',
  'list_notifications',
  'list_reminders',
  'list_tasks',
  'mark_notification_read',
  'preview_occurrences',
  'reopen_task',
  'search_tasks',
  'send_email_code',
  'set_notification_email',
  'set_recurrence',
  'set_reminder',
  'skip_occurrence',
  'snooze_reminder',
  'update_settings',
  'update_task',
];

type ToolResult = {
  isError?: boolean;
  structuredContent?: any;
  content: { type: string; text?: string }[];
};

const call = async (client: Client, name: string, args: Record<string, unknown>) =>
  (await client.callTool({ name, arguments: args })) as ToolResult;

const errorText = (r: ToolResult) => {
  assert.equal(r.isError, true, `expected a tool error, got ${JSON.stringify(r)}`);
  return r.content.map((c) => c.text ?? '').join('\n');
};

const ok = (r: ToolResult) => {
  assert.notEqual(r.isError, true, `tool error: ${r.content.map((c) => c.text).join()}`);
  assert.ok(r.structuredContent, 'structured content');
  assert.deepEqual(JSON.parse(r.content[0]!.text!), r.structuredContent, 'text content is the same JSON');
  return r.structuredContent;
};

/** Every `type: integer` schema under a JSON Schema, with its path. */
function integerSchemas(schema: unknown, path = ''): [string, { minimum?: number; maximum?: number }][] {
  if (!schema || typeof schema !== 'object') return [];
  const s = schema as Record<string, unknown>;
  const own: [string, { minimum?: number; maximum?: number }][] =
    s.type === 'integer' ? [[path, s as { minimum?: number; maximum?: number }]] : [];
  const children = Object.entries(s).flatMap(([k, v]) =>
    k === 'properties' && v && typeof v === 'object'
      ? Object.entries(v).flatMap(([name, sub]) => integerSchemas(sub, path ? `${path}.${name}` : name))
      : Array.isArray(v)
        ? v.flatMap((sub) => integerSchemas(sub, path))
        : k === 'items' || k === 'anyOf'
          ? integerSchemas(v, path)
          : [],
  );
  return [...own, ...children];
}

/** The scenario both transports run: list tools, create, list, complete, delete; isolation; bad input. */
async function scenario(client: Client, foreignTaskId: string, now?: string): Promise<string> {
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((t) => t.name).sort(), TOOLS);
  for (const t of tools) {
    assert.ok(t.description && t.description.length > 20, `${t.name} has a description`);
    assert.equal(t.inputSchema.type, 'object');
    for (const [k, v] of Object.entries(t.inputSchema.properties ?? {}))
      assert.ok((v as { description?: string }).description, `${t.name}.${k} is described`);
    assert.ok(t.outputSchema, `${t.name} declares its output`);
    // The user comes from the token: no tool asks for it; no other argument is accepted.
    assert.ok(!('user_id' in (t.inputSchema.properties ?? {})), `${t.name} does not advertise user_id`);
    assert.equal(t.inputSchema.additionalProperties, false, `${t.name} takes no other arguments`);
    // Integer arguments have the bounds the tool takes (not +-2^53).
    for (const [path, v] of integerSchemas(t.inputSchema)) {
      assert.ok(v.minimum !== undefined && v.minimum >= 0, `${t.name}.${path} has a lower bound >= 0`);
      assert.ok(v.maximum !== undefined, `${t.name}.${path} has an upper bound`);
    }
  }
  // What a model needs to turn "tomorrow at 9" into an instant: the time and the user's zone and defaults.
  const context = ok(await call(client, 'get_context', {}));
  if (now) assert.equal(context.now, now);
  else assert.ok(Math.abs(Date.parse(context.now) - Date.now()) < 60_000, `now: ${context.now}`);
  assert.equal(context.timezone, 'UTC');
  assert.deepEqual(context.default_reminders, ['P1D', 'PT1H']);
  assert.equal(context.local_time, context.now.slice(0, 19) + '+00:00');
  assert.match(context.weekday, /^(Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day$/);
  const add = tools.find((t) => t.name === 'add_task')!;
  assert.deepEqual(add.inputSchema.required, ['title']);

  const created = ok(
    await call(client, 'add_task', {
      title: '  Buy groceries ',
      description: 'milk, eggs',
      priority: 'high',
      tags: ['home'],
      due_date: '2026-03-05T09:00:00+01:00',
      reminders: ['PT1H'],
    }),
  );
  assert.equal(created.status, 'created');
  assert.equal(created.title, 'Buy groceries');
  assert.match(created.task_id, /^[0-9a-f-]{36}$/);
  assert.equal(created.task.due_date, '2026-03-05T08:00:00.000Z');
  const id: string = created.task_id;

  const pending = ok(await call(client, 'list_tasks', { status: 'pending' }));
  const item = pending.tasks.find((t: any) => t.task_id === id);
  assert.ok(item, 'the new task is listed');
  assert.equal(item.status, 'pending');
  assert.equal(item.title, 'Buy groceries');
  assert.equal(pending.count, pending.tasks.length);
  // Due 5 March: not due "tomorrow" on either clock these tests run with (1 March, or the real date).
  const tomorrow = ok(await call(client, 'list_tasks', { due: 'tomorrow' }));
  assert.ok(!tomorrow.tasks.some((t: any) => t.task_id === id));

  const found = ok(await call(client, 'search_tasks', { query: 'groceries', priority: ['high'] }));
  assert.deepEqual(
    found.tasks.map((t: any) => t.task_id),
    [id],
  );

  const updated = ok(await call(client, 'update_task', { task_id: id, title: 'Buy groceries and fruits' }));
  assert.deepEqual(
    [updated.status, updated.title, updated.task.version],
    ['updated', 'Buy groceries and fruits', 2],
  );
  const reminded = ok(await call(client, 'set_reminder', { task_id: id, reminders: ['P1D', 'PT15M'] }));
  assert.deepEqual(reminded.task.reminders, ['P1D', 'PT15M']);
  assert.equal(updated.reminder_plan, undefined, 'a new title moves no reminder');
  // New reminders: the answer accounts for each (scheduled, or past on a clock after the due date).
  const plan = reminded.reminder_plan;
  assert.deepEqual([...plan.scheduled, ...plan.skipped].map((r: any) => r.specs).sort(), [
    ['P1D'],
    ['PT15M'],
  ]);
  const repeating = ok(await call(client, 'set_recurrence', { task_id: id, recurrence: 'weekly' }));
  assert.equal(repeating.task.recurrence.rrule, 'FREQ=WEEKLY');
  const inWords = ok(await call(client, 'set_recurrence', { task_id: id, recurrence: 'every other Monday' }));
  assert.equal(inWords.task.recurrence.rrule, 'FREQ=WEEKLY;INTERVAL=2;BYDAY=MO');
  assert.equal(inWords.task.due_date, repeating.task.due_date, 'the due date stays');
  assert.equal(inWords.resolved[0].argument, 'recurrence');
  const stopped = ok(await call(client, 'set_recurrence', { task_id: id, recurrence: null }));
  assert.equal(stopped.task.recurrence, null);

  const completed = ok(await call(client, 'complete_task', { task_id: id }));
  assert.deepEqual(
    [completed.task_id, completed.status, completed.title],
    [id, 'completed', 'Buy groceries and fruits'],
  );
  const done = ok(await call(client, 'list_tasks', { status: 'completed' }));
  assert.ok(done.tasks.some((t: any) => t.task_id === id));
  const reopened = ok(await call(client, 'reopen_task', { task_id: id }));
  assert.equal(reopened.status, 'reopened');
  assert.equal(reopened.task.status, 'pending');
  ok(await call(client, 'complete_task', { task_id: id }));
  const got = ok(await call(client, 'get_task', { task_id: id }));
  assert.equal(got.status, 'completed');

  // Optimistic concurrency.
  const stale = errorText(
    await call(client, 'update_task', { task_id: id, title: 'x', expected_version: 1 }),
  );
  assert.match(stale, /expected_version/);

  // Another user's task is "task not found", for every tool that takes a task id.
  for (const tool of ['get_task', 'complete_task', 'reopen_task', 'delete_task'])
    assert.equal(errorText(await call(client, tool, { task_id: foreignTaskId })), 'task not found', tool);
  assert.equal(
    errorText(await call(client, 'update_task', { task_id: foreignTaskId, title: 'mine now' })),
    'task not found',
  );
  assert.equal(
    errorText(await call(client, 'set_reminder', { task_id: foreignTaskId, reminders: [] })),
    'task not found',
  );
  assert.equal(errorText(await call(client, 'get_task', { task_id: 'not-a-uuid' })), 'task not found');
  assert.match(errorText(await call(client, 'list_tasks', { user_id: 'somebody-else' })), /^user_id: /);
  // Reminders are the reminders target's: not running here (api and relay only), and no PUBLIC_URL.
  assert.match(errorText(await call(client, 'list_reminders', { task_id: id })), /set PUBLIC_URL/);
  // A client of the seed's Phase III tools sends its own user id: accepted silently.
  ok(await call(client, 'get_task', { task_id: id, user_id: created.task.user_id }));

  // Malformed arguments: a tool error naming the argument (schema checks and the domain's own validation).
  const bad: [string, Record<string, unknown>, RegExp][] = [
    // As the SDK writes a schema error, `<message> at <argument>`.
    ['add_task', {}, /: a required argument is missing at title$/],
    ['add_task', { title: 42 }, /: expected a string at title$/],
    ['add_task', { title: '   ' }, /title: must not be empty/],
    ['add_task', { title: 'x', priority: 'extreme' }, /priority/],
    [
      'add_task',
      { title: 'x', due_date: 'someday soon' },
      /due_date: could not read "someday soon" as a date/,
    ],
    ['add_task', { title: 'x', tags: ['a', 'a'] }, /tags\[1\]: duplicates another tag/],
    ['add_task', { title: 'x', reminders: ['PT1H'] }, /reminders: offsets before due .* need a due_date/],
    ['add_task', { title: 'x', recurrence: 'fortnightly' }, /recurrence/],
    ['add_task', { title: 'x', recurrence: { rrule: 'FREQ=SOMETIMES' } }, /recurrence\.rrule/],
    ['add_task', { title: 'x', colour: 'red' }, /colour/],
    ['add_task', { title: 'x', constructor: 'y' }, /unknown argument constructor/],
    ['get_context', { extra: 1 }, /unknown argument extra; this tool takes no arguments/],
    ['update_task', { task_id: id }, /at least one field/],
    ['complete_task', {}, /a required argument is missing at task_id$/],
    ['list_tasks', { limit: 0 }, /expected number to be >=1 at limit/],
    ['list_tasks', { limit: 201 }, /expected number to be <=200 at limit/],
    ['list_tasks', { due_before: 'soon' }, /due_before/],
    ['list_tasks', { due: 'someday' }, /due/],
    ['list_tasks', { cursor: 'garbage' }, /cursor/],
    ['list_tasks', { status: 'done' }, /status/],
    ['search_tasks', { query: ' ' }, /query: must not be empty/],
    ['set_reminder', { task_id: id, reminders: ['P2Y'] }, /reminders\[0\]/],
  ];
  for (const [tool, args, expected] of bad)
    assert.match(errorText(await call(client, tool, args)), expected, `${tool} ${JSON.stringify(args)}`);

  const deleted = ok(await call(client, 'delete_task', { task_id: id }));
  assert.deepEqual(
    [deleted.task_id, deleted.status, deleted.title],
    [id, 'deleted', 'Buy groceries and fruits'],
  );
  assert.equal(errorText(await call(client, 'get_task', { task_id: id })), 'task not found');
  return id;
}

const EXPECTED_TYPES = [
  'task.created',
  'task.updated', // title
  'task.updated', // reminders
  'task.updated', // weekly
  'task.updated', // every other Monday
  'task.updated', // no repeat
  'task.completed',
  'task.reopened',
  'task.completed',
  'task.deleted',
];

describe('MCP over Streamable HTTP (/mcp on the api target)', () => {
  let db: Db;
  let app: TestApp;
  before(async () => {
    db = await openDb('memory://');
    await migrate(db);
    app = await startApp(db, { targets: ['api', 'relay'] });
  });
  after(async () => {
    await app.stop();
    await db.close();
  });

  const connect = async (user: string) => {
    const client = new Client({ name: 'taskflow-test', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${await app.token(user)}` } },
    });
    await client.connect(transport);
    return client;
  };

  it('lists the tools, runs the task lifecycle, and the events reach the bus', async () => {
    const foreign = await app.call('bob', 'POST', '/api/tasks', { title: 'bob’s secret' });
    assert.equal(foreign.status, 201);
    const client = await connect('alice');
    try {
      const id = await scenario(client, foreign.body.id, '2026-03-01T12:00:00.000Z');
      const onBus = await waitFor(
        async () => {
          const msgs = (await app.proc.runtime.bus.admin.read('task-events')).filter(
            (m) => m.event.subject === id,
          );
          return msgs.length === EXPECTED_TYPES.length && msgs;
        },
        10_000,
        'the MCP events on the bus',
      );
      assert.deepEqual(
        onBus.map((m) => m.event.type),
        EXPECTED_TYPES,
      );
      for (const m of onBus) {
        assert.equal(m.key, 'alice');
        assert.equal(m.event.source, '/taskflow/mcp');
        assert.match(String(m.event.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
      }
      // Nothing was written for bob by alice's attempts.
      const bobs = (await writtenEvents(db)).filter(
        (e) => e.key === 'bob' && e.event_type !== 'task.changed',
      );
      assert.deepEqual(
        bobs.map((e) => e.event_type),
        ['task.created'],
      );
      const bobTask = await app.call('bob', 'GET', `/api/tasks/${foreign.body.id}`);
      assert.equal(bobTask.body.title, 'bob’s secret');
    } finally {
      await client.close();
    }
  });

  it('get_context gives the time in the user’s zone and their defaults; dates in words are read in that zone', async () => {
    const set = await app.call('carol', 'PUT', '/api/me/settings', {
      timezone: 'Europe/Berlin',
      default_reminders: ['PT30M'],
    });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    const client = await connect('carol');
    try {
      const context = ok(await call(client, 'get_context', {}));
      assert.deepEqual(context, {
        now: '2026-03-01T12:00:00.000Z',
        local_time: '2026-03-01T13:00:00+01:00',
        weekday: 'Sunday',
        timezone: 'Europe/Berlin',
        default_reminders: ['PT30M'],
      });
      // Dates and reminders in words, read in carol's zone and said back.
      const dentist = ok(
        await call(client, 'add_task', {
          title: 'Dentist',
          due_date: 'tomorrow 9am',
          reminders: ['1 hour before', 'tomorrow 7:30'],
        }),
      );
      assert.equal(dentist.task.due_date, '2026-03-02T08:00:00.000Z');
      assert.deepEqual(dentist.task.reminders, ['PT1H', '2026-03-02T06:30:00.000Z']);
      assert.deepEqual(dentist.resolved, [
        {
          argument: 'due_date',
          said: 'tomorrow 9am',
          as: '2026-03-02T08:00:00.000Z',
          local: '2026-03-02T09:00:00+01:00',
        },
        { argument: 'reminders[0]', said: '1 hour before', as: 'PT1H', local: 'PT1H before the due date' },
        {
          argument: 'reminders[1]',
          said: 'tomorrow 7:30',
          as: '2026-03-02T06:30:00.000Z',
          local: '2026-03-02T07:30:00+01:00',
        },
      ]);
      const moved = ok(
        await call(client, 'update_task', { task_id: dentist.task_id, due_date: 'next Friday at 17:00' }),
      );
      assert.equal(moved.task.due_date, '2026-03-06T16:00:00.000Z');
      const iso = ok(
        await call(client, 'update_task', { task_id: dentist.task_id, due_date: '2026-03-07T10:00:00Z' }),
      );
      assert.equal(iso.resolved, undefined, 'nothing to say back for an ISO instant');
      const reminded = ok(
        await call(client, 'set_reminder', { task_id: dentist.task_id, reminders: ['in 30 minutes'] }),
      );
      assert.deepEqual(reminded.task.reminders, ['2026-03-01T12:30:00.000Z']);
      assert.match(
        errorText(await call(client, 'add_task', { title: 'x', due_date: 'when pigs fly' })),
        /due_date: could not read "when pigs fly" as a date; say it as/,
      );
      // A duration with spaces around it is the duration (REST refuses the spaces; it reached REST as written).
      const spaced = ok(
        await call(client, 'set_reminder', { task_id: dentist.task_id, reminders: [' PT1H '] }),
      );
      assert.deepEqual(spaced.task.reminders, ['PT1H']);
      // Words that begin with a P are words, not a malformed ISO 8601 duration (and a reminder in the past is
      // not one).
      assert.match(
        errorText(
          await call(client, 'set_reminder', { task_id: dentist.task_id, reminders: ['past Friday'] }),
        ),
        /reminders\[0\]: could not read "past Friday" as a reminder; say it as/,
      );
      // A repeat in words it cannot read says how to say one (not "unknown preset"); a preset in capitals is one.
      assert.match(
        errorText(await call(client, 'add_task', { title: 'x', recurrence: 'every hour' })),
        /recurrence: could not read "every hour" as a repeat; say it as "every day"/,
      );
      const daily = ok(await call(client, 'add_task', { title: 'y', recurrence: 'Daily' }));
      assert.equal(daily.task.recurrence.preset, 'daily');
    } finally {
      await client.close();
    }
  });

  it('REST sees what MCP wrote (one store)', async () => {
    const client = await connect('carol');
    try {
      const created = ok(await call(client, 'add_task', { title: 'from the chatbot', tags: ['ai'] }));
      const rest = await app.call('carol', 'GET', `/api/tasks/${created.task_id}`);
      assert.equal(rest.status, 200);
      assert.deepEqual(rest.body, created.task);
    } finally {
      await client.close();
    }
  });

  it('answers 401 without a valid bearer token and 405 to GET', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} });
    const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    const none = await fetch(`${app.url}/mcp`, { method: 'POST', headers, body });
    assert.equal(none.status, 401);
    assert.match(none.headers.get('www-authenticate') ?? '', /^Bearer/);
    const forged = await fetch(`${app.url}/mcp`, {
      method: 'POST',
      headers: { ...headers, authorization: `Bearer ${await signDevToken('x'.repeat(40), 'alice')}` },
      body,
    });
    assert.equal(forged.status, 401);
    const get = await fetch(`${app.url}/mcp`, {
      headers: { authorization: `Bearer ${await app.token('alice')}`, accept: 'text/event-stream' },
    });
    assert.equal(get.status, 405);
  });

  it('takes a batch of a few messages (one message: answered as an array) and refuses a larger one whole, with nothing done', async () => {
    const post = async (messages: unknown[]) =>
      fetch(`${app.url}/mcp`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          authorization: `Bearer ${await app.token('batcher')}`,
        },
        body: JSON.stringify(messages),
      });
    const add = (i: number) => ({
      jsonrpc: '2.0',
      id: i,
      method: 'tools/call',
      params: { name: 'add_task', arguments: { title: `batched ${i}` } },
    });
    const small = await post([add(1), add(2)]);
    assert.equal(small.status, 200);
    assert.equal(((await small.json()) as unknown[]).length, 2);
    // JSON-RPC 2.0 section 6: a batch is answered with an array, a batch of one too.
    const one = await post([{ jsonrpc: '2.0', id: 'solo', method: 'ping' }]);
    assert.equal(one.status, 200);
    assert.deepEqual(await one.json(), [{ jsonrpc: '2.0', id: 'solo', result: {} }]);
    const large = await post(Array.from({ length: MAX_MCP_BATCH + 1 }, (_, i) => add(10 + i)));
    assert.equal(large.status, 400);
    const refused = (await large.json()) as { error: { code: number; message: string } };
    assert.equal(refused.error.code, -32600);
    assert.match(refused.error.message, /a batch takes at most 10 messages \(11 sent\)/);
    const titles = (await app.call('batcher', 'GET', '/api/tasks?limit=200')).body.items.map(
      (t: { title: string }) => t.title,
    );
    assert.deepEqual(titles.sort(), ['batched 1', 'batched 2'], 'nothing of the refused batch was done');
  });

  it("refuses an empty batch, a repeated id, a tool call whose arguments are not an object and what is not a JSON-RPC message, as the client's errors", async () => {
    const post = async (body: unknown) => {
      const r = await fetch(`${app.url}/mcp`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          authorization: `Bearer ${await app.token('strict')}`,
        },
        body: JSON.stringify(body),
      });
      return {
        status: r.status,
        body: (await r.json()) as { id: unknown; error: { code: number; message: string } },
      };
    };
    const empty = await post([]);
    assert.equal(empty.status, 400);
    assert.equal(empty.body.error.code, -32600);
    assert.match(empty.body.error.message, /empty batch/);
    const call = (id: number, params: unknown) => ({ jsonrpc: '2.0', id, method: 'tools/call', params });
    for (const [params, why] of [
      [{ name: 'add_task', arguments: 'buy milk' }, /arguments must be an object/],
      [{ name: 'add_task', arguments: [{ title: 'x' }] }, /arguments must be an object/],
      [{ name: 'add_task', arguments: null }, /arguments must be an object/],
      [{ name: 42 }, /name must be a string/],
      ['add_task', /params must be an object/],
    ] as const) {
      const r = await post(call(7, params));
      assert.equal(
        r.status,
        200,
        `a request's JSON-RPC error, not the transport's: ${JSON.stringify(params)}`,
      );
      assert.equal(r.body.error.code, -32602, JSON.stringify(params));
      assert.match(r.body.error.message, why);
      assert.equal(r.body.id, 7, 'the answer names the request');
    }
    // In a batch, one bad call refuses the batch before anything is done.
    const batch = await post([
      call(1, { name: 'add_task', arguments: { title: 'not done' } }),
      call(2, { name: 'add_task', arguments: 'x' }),
    ]);
    assert.equal(batch.status, 400);
    assert.match(batch.body.error.message, /message 2 of the batch; nothing was done/);
    // Two requests of a batch with one id: one answer would be lost (the write's, here).
    const twice = await post([
      { jsonrpc: '2.0', id: 1, method: 'ping' },
      call(1, { name: 'add_task', arguments: { title: 'not done either' } }),
    ]);
    assert.equal(twice.status, 400);
    assert.equal(twice.body.error.code, -32600);
    assert.match(twice.body.error.message, /the id 1 is used by two requests of the batch/);
    // Valid JSON that is not a JSON-RPC message is an Invalid Request, alone or in a batch.
    for (const [body, where] of [
      [{ method: 'ping', id: 1 }, /the body is not a JSON-RPC 2\.0 message/],
      [{ jsonrpc: '2.0', method: 'ping', id: null }, /the body is not a JSON-RPC 2\.0 message/],
      [[{ foo: 1 }], /the body is not a JSON-RPC 2\.0 message/],
      [
        [call(4, { name: 'add_task', arguments: { title: 'not done, third' } }), 42],
        /message 2 of the batch is not a JSON-RPC 2\.0 message.*; nothing was done/,
      ],
    ] as const) {
      const r = await post(body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.body.error.code, -32600, JSON.stringify(body));
      assert.match(r.body.error.message, where);
    }
    const listed = await app.call('strict', 'GET', '/api/tasks');
    assert.deepEqual(listed.body.items, []);
    // Without arguments a call is still valid (a tool that takes none).
    const none = await post(call(3, { name: 'list_tasks' }));
    assert.equal(none.status, 200);
  });

  it('applies the per-user rate limit to MCP requests, one budget with REST (429 once it is used up)', async () => {
    const db = await openDb('memory://');
    await migrate(db);
    const limited = await startApp(db, {
      targets: ['api', 'notifications'],
      env: { RATE_LIMIT_PER_MINUTE: '3' },
    });
    try {
      const post = async (user: string) =>
        fetch(`${limited.url}/mcp`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
            authorization: `Bearer ${await limited.token(user)}`,
          },
          body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }),
        });
      // One budget per user across the REST API and MCP (and every other authenticated route).
      assert.equal((await limited.call('agent', 'GET', '/api/tasks')).status, 200);
      for (let i = 0; i < 2; i++) assert.equal((await post('agent')).status, 200, `request ${i + 2}`);
      assert.equal((await limited.call('agent', 'GET', '/api/notifications/preferences')).status, 429);
      const over = await post('agent');
      assert.equal(over.status, 429);
      assert.match(over.headers.get('content-type') ?? '', /application\/problem\+json/);
      assert.ok(Number(over.headers.get('retry-after')) > 0, 'retry-after');
      const overBody = await over.text();
      assert.match(overBody, /rate limit of 3 requests per minute/, overBody);
      assert.equal((await post('someone-else')).status, 200, 'per user');
    } finally {
      await limited.stop();
      await db.close();
    }
  });
});

const pgUrl = process.env.TEST_DATABASE_URL;
const root = fileURLToPath(new URL('../..', import.meta.url));

describe(
  'MCP over stdio (taskflow mcp)',
  {
    skip: pgUrl
      ? false
      : 'needs TEST_DATABASE_URL (PostgreSQL): a PGlite directory can be opened by one process only, and the test process must read the outbox the child writes',
  },
  () => {
    let db: Db;
    let url: string;
    let drop: () => Promise<void>;
    before(async () => {
      ({ url, drop } = await createPgDatabase(pgUrl!));
      db = await openDb(url);
      await migrate(db);
    });
    after(async () => {
      await db?.close();
      await drop?.();
    });

    /** The first request of a session on stdio (id 1). */
    const INITIALIZE = {
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: {
        protocolVersion: '2025-06-18',
        capabilities: {},
        clientInfo: { name: 'taskflow-test', version: '1' },
      },
    };

    /** The environment of `taskflow mcp` for alice, writing into this test's database. */
    const mcpEnv = async (): Promise<Record<string, string>> => ({
      ...(process.env as Record<string, string>),
      DATABASE_URL: url,
      JWT_SECRET: TEST_SECRET,
      TASKFLOW_TOKEN: await signDevToken(TEST_SECRET, 'alice'),
      LOG_LEVEL: 'warn',
    });

    it('serves the same tools to a child process, writing into the outbox', async () => {
      const store = new TaskStore(db, new ManualClock('2026-03-01T12:00:00Z'));
      const foreign = await store.create('bob', plainFields('bob’s'), { source: '/test' });
      const stderr: string[] = [];
      const transport = new StdioClientTransport({
        command: process.execPath,
        args: ['bin/taskflow.js', 'mcp'],
        cwd: root,
        env: await mcpEnv(),
        stderr: 'pipe',
      });
      transport.stderr?.on('data', (d: Buffer) => stderr.push(d.toString()));
      const client = new Client({ name: 'taskflow-test', version: '1.0.0' });
      try {
        await client.connect(transport);
        const id = await scenario(client, foreign.id);
        // The task events (each task.changed written with its task event is checked in task-changed.test.ts).
        const events = (await writtenEvents(db)).filter(
          (e) => e.event.subject === id && e.event_type !== 'task.changed',
        );
        assert.deepEqual(
          events.map((e) => e.event_type),
          EXPECTED_TYPES,
        );
        assert.ok(events.every((e) => e.key === 'alice' && e.event.source === '/taskflow/mcp'));
      } catch (err) {
        console.error(stderr.join(''));
        throw err;
      } finally {
        await client.close();
      }
    });

    /** `taskflow mcp` as a child process: its stdin, what it wrote so far, and its exit code once it exits. */
    const startMcp = async () => {
      const { spawn } = await import('node:child_process');
      const child = spawn(process.execPath, ['bin/taskflow.js', 'mcp'], {
        cwd: root,
        env: await mcpEnv(),
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const out = { stdout: '', stderr: '' };
      child.stdout.on('data', (d: Buffer) => (out.stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out.stderr += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      return { stdin: child.stdin, out, exited };
    };

    it('exits cleanly, with nothing on stderr, when its client closes stdin', async () => {
      const { stdin, out, exited } = await startMcp();
      stdin.write(`${JSON.stringify(INITIALIZE)}\n`);
      await waitFor(() => out.stdout.includes('"id":1'), 30_000, 'the initialize answer');
      stdin.end();
      assert.equal(await exited, 0, out.stderr);
      // Nothing went wrong on the way out (it used to print 882 lines of RangeError); Node's own warnings may
      // differ between versions, so only errors and stack frames count.
      assert.doesNotMatch(out.stderr, /Error|Exception|^\s+at /m, 'stderr after stdin closed');
    });

    it('answers every request written before stdin closed, as a pipe does (`printf … | taskflow mcp`)', async () => {
      const { stdin, out, exited } = await startMcp();
      const call = (id: number, name: string, args: object) =>
        JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } });
      stdin.end(
        [
          JSON.stringify(INITIALIZE),
          JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
          call(2, 'add_task', { title: 'piped in' }),
          call(3, 'list_tasks', {}),
        ].join('\n') + '\n',
      );
      assert.equal(await exited, 0, out.stderr);
      const answers = out.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { id: number; result?: { isError?: boolean } });
      assert.deepEqual(
        answers.map((a) => [a.id, a.result !== undefined && a.result.isError !== true]).sort(),
        [
          [1, true],
          [2, true],
          [3, true],
        ],
        out.stderr,
      );
      const stored = await db.query(`SELECT 1 FROM tasks WHERE user_id = 'alice' AND title = 'piped in'`);
      assert.equal(stored.rows.length, 1);
      assert.doesNotMatch(out.stderr, /Error|Exception|^\s+at /m);
    });

    it('exits at once when stdin closes after a request the client cancelled (never answered)', async () => {
      const { stdin, out, exited } = await startMcp();
      const started = Date.now();
      stdin.end(
        [
          JSON.stringify(INITIALIZE),
          JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
          JSON.stringify({
            jsonrpc: '2.0',
            id: 2,
            method: 'tools/call',
            params: { name: 'list_tasks', arguments: {} },
          }),
          JSON.stringify({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 2 } }),
        ].join('\n') + '\n',
      );
      assert.equal(await exited, 0, out.stderr);
      assert.ok(
        Date.now() - started < 15_000,
        `exited after ${Date.now() - started} ms (the drain waits 30 s)`,
      );
    });

    it('answers what is not a valid request with its JSON-RPC error, sets settings, and refuses requests once the token expired', async () => {
      const { spawn } = await import('node:child_process');
      const child = spawn(process.execPath, ['bin/taskflow.js', 'mcp'], {
        cwd: root,
        env: {
          ...(await mcpEnv()),
          TASKFLOW_TOKEN: await signDevToken(TEST_SECRET, 'alice', { expiresIn: '6s' }),
        },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const startedAt = Date.now();
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      const answers = () =>
        stdout
          .split('\n')
          .filter(Boolean)
          .map(
            (l) =>
              JSON.parse(l) as { id: unknown; result?: unknown; error?: { code: number; message: string } },
          );
      const answerTo = (id: unknown) =>
        waitFor(() => answers().find((a) => a.id === id), 30_000, `answer ${String(id)}`);
      const send = (m: unknown) => child.stdin.write(`${typeof m === 'string' ? m : JSON.stringify(m)}\n`);
      try {
        send(INITIALIZE);
        await answerTo(1);
        send({ jsonrpc: '2.0', method: 'notifications/initialized' });
        // Settings are the api target's data: written by this process, not through REST (no PUBLIC_URL here).
        send({
          jsonrpc: '2.0',
          id: 2,
          method: 'tools/call',
          params: { name: 'update_settings', arguments: { timezone: 'Europe/Berlin' } },
        });
        const settings = (await answerTo(2)) as { result: { isError?: boolean; structuredContent: unknown } };
        assert.notEqual(settings.result.isError, true, JSON.stringify(settings));
        assert.equal((settings.result.structuredContent as { timezone: string }).timezone, 'Europe/Berlin');
        assert.equal(
          (await db.query<{ timezone: string }>(`SELECT timezone FROM user_settings WHERE user_id = 'alice'`))
            .rows[0]?.timezone,
          'Europe/Berlin',
        );
        send({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'get_context', arguments: [] } });
        assert.equal((await answerTo(3)).error?.code, -32602);
        send({ jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 5 } });
        assert.match((await answerTo(4)).error?.message ?? '', /params\.name must be a string/);
        send('{bad json');
        assert.equal((await answerTo(null)).error?.code, -32700);
        // Past the token's expiry every request is refused, naming why.
        await new Promise((r) => setTimeout(r, Math.max(0, startedAt + 7_000 - Date.now())));
        send({ jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'get_context', arguments: {} } });
        const expired = await answerTo(5);
        assert.equal(expired.error?.code, -32001);
        assert.match(expired.error?.message ?? '', /TASKFLOW_TOKEN expired/);
      } finally {
        child.kill();
      }
    });

    it('refuses to start without a valid TASKFLOW_TOKEN', async () => {
      const { execFile } = await import('node:child_process');
      const run = (token: string | undefined) =>
        new Promise<{ code: number | null; stderr: string }>((resolve) => {
          const env: Record<string, string> = {
            ...(process.env as Record<string, string>),
            DATABASE_URL: url,
            JWT_SECRET: TEST_SECRET,
          };
          delete env.TASKFLOW_TOKEN;
          if (token) env.TASKFLOW_TOKEN = token;
          const child = execFile(
            process.execPath,
            ['bin/taskflow.js', 'mcp'],
            { cwd: root, env },
            (err, _o, e) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr: e }),
          );
          child.stdin?.end();
        });
      const missing = await run(undefined);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /TASKFLOW_TOKEN/);
      const bad = await run(await signDevToken('y'.repeat(40), 'alice'));
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /signature/);
    });
  },
);
