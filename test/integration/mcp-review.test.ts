/**
 * The MCP task tools take what REST takes for the same field (ADR 0014: one schema per field, the tools'
 * arguments read leniently so that the shared validation answers). The SDK checks a tool's zod arguments before
 * the tool runs: where they were stricter than the field (description without null, priority in lower case
 * only, a recurrence object without null fields), a value REST takes was refused, with the SDK's words.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { PRIORITIES, STATUSES } from '../../src/domain/task-fields.ts';
import type { Db } from '../../src/store/db.ts';
import { startApp, type TestApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';

type Json = Record<string, any>;
type ToolResult = { isError?: boolean; content: { text?: string }[]; structuredContent?: Json };

const tags = (n: number) => Array.from({ length: n }, (_, i) => `tag${i}`);
const offsets = (n: number) => Array.from({ length: n }, (_, i) => `PT${i + 1}M`);
const due = '2026-12-24T09:00:00Z';

/** Bodies of a create (add_task, POST /api/tasks): some REST takes, some it refuses. */
const CREATES: Json[] = [
  { title: 'a', description: null },
  { title: 'a', priority: 'High' },
  { title: 'a', priority: 'URGENT' },
  { title: 'a', priority: 'extreme' },
  { title: 'a', tags: ['Work', 'home'] },
  { title: 'a', tags: tags(21) },
  { title: 'a', tags: ['a', 'A '] },
  { title: 'a', due_date: null, reminders: null },
  { title: 'a', due_date: due, reminders: offsets(10) },
  { title: 'a', due_date: due, reminders: offsets(11) },
  { title: 'a', recurrence: 'daily' },
  { title: 'a', recurrence: null },
  // A rule as REST documents it: null fields are left out.
  {
    title: 'a',
    recurrence: {
      rrule: 'FREQ=WEEKLY',
      preset: null,
      interval: null,
      mode: null,
      timezone: null,
      until: null,
      count: null,
    },
  },
  { title: 'a', recurrence: { preset: 'weekly', mode: 'after_completion', count: null } },
  { title: 'a', recurrence: { preset: 'daily', mode: 'sometimes' } },
  { title: 'a', recurrence: { preset: 'Daily' } },
];

/** Bodies of a change (update_task, PATCH /api/tasks/{id}). */
const PATCHES: Json[] = [
  { description: null },
  { description: 'notes' },
  { priority: 'Low' },
  { priority: 'none' },
  { priority: 'meh' },
  { status: 'completed' },
  { status: 'pending' },
  { status: 'Completed' },
  { status: 'done' },
  { tags: [] },
  { tags: tags(21) },
  { due_date: null },
  { reminders: [] },
  { reminders: offsets(11) },
  { recurrence: { preset: 'monthly', rrule: null, until: null } },
];

describe('MCP task tools take what REST takes for the same field, and refuse the rest with its words', () => {
  let db: Db;
  let drop: () => Promise<void>;
  let app: TestApp;
  let client: Client;
  before(async () => {
    ({ db, drop } = await backends[0]!.fresh());
    app = await startApp(db, { targets: ['api'] });
    client = new Client({ name: 'mcp-review-test', version: '1.0.0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${await app.token('ada')}` } },
      }),
    );
  });
  after(async () => {
    await client?.close();
    await app?.stop();
    await drop?.();
  });

  const callTool = async (name: string, args: Json) =>
    (await client.callTool({ name, arguments: args })) as ToolResult;
  const text = (r: ToolResult) => r.content.map((c) => c.text ?? '').join('\n');

  const FIELDS = ['description', 'priority', 'status', 'tags', 'due_date', 'reminders', 'recurrence'];
  /**
   * How the tool's answer differs from REST's, if it does: done when REST took it (with the same fields), else
   * refused with each of REST's issues, in its words.
   */
  const differences = (rest: { status: number; body: Json }, tool: ToolResult): string[] => {
    if (rest.status < 300) {
      if (tool.isError) return [`REST took it (${rest.status}), the tool refused: ${text(tool)}`];
      const task = tool.structuredContent!.task as Json;
      return FIELDS.filter((f) => JSON.stringify(task[f]) !== JSON.stringify(rest.body[f])).map(
        (f) => `${f}: the tool wrote ${JSON.stringify(task[f])}, REST ${JSON.stringify(rest.body[f])}`,
      );
    }
    if (!tool.isError) return [`REST refused it (${rest.status}), the tool took it`];
    return (rest.body.errors as { field: string; message: string }[])
      .filter((i) => !text(tool).includes(`${i.field}: ${i.message}`))
      .map((i) => `REST says "${i.field}: ${i.message}", the tool: ${text(tool)}`);
  };

  it('add_task: as POST /api/tasks', async () => {
    const found: string[] = [];
    for (const body of CREATES) {
      const rest = await app.call('ada', 'POST', '/api/tasks', body);
      for (const d of differences(rest, await callTool('add_task', body)))
        found.push(`${JSON.stringify(body)}: ${d}`);
    }
    assert.deepEqual(found, []);
  });

  it('update_task: as PATCH /api/tasks/{id}', async () => {
    const found: string[] = [];
    for (const body of PATCHES) {
      const start = { title: 'b', description: 'old notes', priority: 'high', tags: ['x'], due_date: due };
      const [forRest, forTool] = await Promise.all([
        app.call('ada', 'POST', '/api/tasks', start),
        app.call('ada', 'POST', '/api/tasks', start),
      ]);
      const rest = await app.call('ada', 'PATCH', `/api/tasks/${forRest.body.id}`, body);
      const tool = await callTool('update_task', { task_id: forTool.body.id, ...body });
      for (const d of differences(rest, tool)) found.push(`${JSON.stringify(body)}: ${d}`);
    }
    assert.deepEqual(found, []);
  });

  it('list_tasks: priorities in any case, as GET /api/tasks?priority=', async () => {
    const high = await app.call('ada', 'POST', '/api/tasks', { title: 'filtered', priority: 'urgent' });
    const rest = await app.call('ada', 'GET', '/api/tasks?priority=Urgent&limit=200');
    assert.equal(rest.status, 200);
    const tool = await callTool('list_tasks', { priority: ['Urgent'], limit: 200 });
    assert.notEqual(tool.isError, true, text(tool));
    const ids = (tool.structuredContent!.tasks as Json[]).map((t) => t.task_id);
    assert.ok(ids.includes(high.body.id));
    assert.deepEqual(
      ids,
      (rest.body.items as Json[]).map((t) => t.id),
    );
  });

  it('the tools still tell a model the values there are (tools/list)', async () => {
    const tools = Object.fromEntries((await client.listTools()).tools.map((t) => [t.name, t.inputSchema]));
    for (const name of ['add_task', 'update_task']) {
      const args = tools[name]!.properties as Json;
      assert.deepEqual(args.priority.enum, [...PRIORITIES], `${name} priority`);
      assert.ok(JSON.stringify(args.description).includes('"null"'), `${name} description may be null`);
      const rule = JSON.stringify(args.recurrence);
      assert.ok(rule.includes('"after_completion"') && rule.includes('"weekdays"'), `${name} recurrence`);
    }
    assert.deepEqual((tools.update_task!.properties as Json).status.enum, [...STATUSES]);
    assert.deepEqual((tools.list_tasks!.properties as Json).priority.items.enum, [...PRIORITIES]);
  });
});
