/**
 * One schema per field of a task body (src/domain/task-fields.ts): the limit a field has there is the one
 * REST validation enforces, the one /openapi.json documents for POST and PATCH /api/tasks, and the one the
 * MCP tools add_task and update_task advertise. Each limit is read from the schema and checked at all three,
 * so a limit changed in one place (or copied by hand into another) fails here.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { fieldJsonSchema } from '../../src/domain/fields.ts';
import { LIMITS, SETTINGS_FIELDS, TASK_FIELDS } from '../../src/domain/task-fields.ts';
import type { Db } from '../../src/store/db.ts';
import { startApp, type TestApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';

type Json = Record<string, any>;

/** The limits of the task fields, as the field schemas document them. */
const title = fieldJsonSchema(TASK_FIELDS.title) as Json;
const description = (fieldJsonSchema(TASK_FIELDS.description).anyOf as Json[]).find(
  (s) => s.type === 'string',
)!;
const tags = fieldJsonSchema(TASK_FIELDS.tags) as Json;
const reminders = fieldJsonSchema(TASK_FIELDS.reminders) as Json;
const defaultReminders = fieldJsonSchema(SETTINGS_FIELDS.default_reminders) as Json;

/** The branch of `schema` of one type (a nullable argument is `anyOf` it and null). */
const ofType = (schema: Json, type: string): Json =>
  schema.anyOf ? (schema.anyOf as Json[]).find((s) => s.type === type)! : schema;

describe('one schema per task field: validation, /openapi.json and the MCP tools agree', () => {
  let db: Db;
  let drop: () => Promise<void>;
  let app: TestApp;
  let openapi: Json;
  let tools: Record<string, Json>;

  before(async () => {
    ({ db, drop } = await backends[0]!.fresh());
    app = await startApp(db, { targets: ['api'] });
    openapi = (await app.call(null, 'GET', '/openapi.json')).body;
    const client = new Client({ name: 'one-schema-test', version: '1.0.0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${await app.token('ada')}` } },
      }),
    );
    tools = Object.fromEntries((await client.listTools()).tools.map((t) => [t.name, t.inputSchema]));
    await client.close();
  });
  after(async () => {
    await app?.stop();
    await drop?.();
  });

  it('the field schemas carry the limits', () => {
    assert.equal(title.maxLength, LIMITS.titleMax);
    assert.equal(description.maxLength, LIMITS.descriptionMax);
    assert.equal(tags.maxItems, LIMITS.tagsMax);
    assert.equal(tags.items.maxLength, LIMITS.tagMax);
    assert.equal(reminders.maxItems, LIMITS.remindersMax);
    assert.equal(defaultReminders.maxItems, LIMITS.remindersMax);
  });

  it('/openapi.json documents them on the create and change bodies', () => {
    for (const [path, method] of [
      ['/api/tasks', 'post'],
      ['/api/tasks/{id}', 'patch'],
    ] as const) {
      const body = openapi.paths[path][method].requestBody.content['application/json'].schema.properties;
      assert.equal(body.title.maxLength, title.maxLength, `${method} ${path} title`);
      assert.equal(
        (body.description.anyOf as Json[]).find((s) => s.type === 'string')!.maxLength,
        description.maxLength,
      );
      assert.equal(body.tags.maxItems, tags.maxItems);
      assert.equal(body.tags.items.maxLength, tags.items.maxLength);
      assert.equal(body.reminders.maxItems, reminders.maxItems);
    }
  });

  it('and on the settings body', () => {
    const body =
      openapi.paths['/api/me/settings'].put.requestBody.content['application/json'].schema.properties;
    assert.equal(body.default_reminders.maxItems, defaultReminders.maxItems);
    assert.equal(tools.update_settings!.properties.default_reminders.maxItems, defaultReminders.maxItems);
  });

  it('the MCP tools advertise them', () => {
    for (const tool of ['add_task', 'update_task']) {
      const args = tools[tool]!.properties as Json;
      assert.equal(args.title.maxLength, title.maxLength, `${tool} title`);
      assert.equal(args.description.maxLength, description.maxLength, `${tool} description`);
      assert.equal(args.tags.maxItems, tags.maxItems, `${tool} tags`);
      assert.equal(args.tags.items.maxLength, tags.items.maxLength, `${tool} tag`);
      assert.equal(ofType(args.reminders, 'array').maxItems, reminders.maxItems, `${tool} reminders`);
    }
  });

  it('REST and MCP validation enforce them, at the limit and one past it', async () => {
    const create = (body: Json) => app.call('ada', 'POST', '/api/tasks', body);
    const atMost = (n: number) => `${'é'.repeat(n - 1)}😀`; // code points, as JSON Schema counts them
    assert.equal((await create({ title: atMost(title.maxLength) })).status, 201);
    const long = await create({ title: atMost(title.maxLength + 1) });
    assert.equal(long.status, 400);
    assert.match(JSON.stringify(long.body), new RegExp(`at most ${title.maxLength} characters`));
    assert.equal(
      (await create({ title: 't', description: 'd'.repeat(description.maxLength + 1) })).status,
      400,
    );
    assert.equal((await create({ title: 't', description: 'd'.repeat(description.maxLength) })).status, 201);
    const tagList = (n: number) => Array.from({ length: n }, (_, i) => `tag${i}`);
    assert.equal((await create({ title: 't', tags: tagList(tags.maxItems) })).status, 201);
    assert.equal((await create({ title: 't', tags: tagList(tags.maxItems + 1) })).status, 400);
    assert.equal((await create({ title: 't', tags: ['x'.repeat(tags.items.maxLength + 1)] })).status, 400);
    const offsets = (n: number) => Array.from({ length: n }, (_, i) => `PT${i + 1}M`);
    const due = '2026-12-24T09:00:00Z';
    assert.equal(
      (await create({ title: 't', due_date: due, reminders: offsets(reminders.maxItems) })).status,
      201,
    );
    assert.equal(
      (await create({ title: 't', due_date: due, reminders: offsets(reminders.maxItems + 1) })).status,
      400,
    );

    const settings = (body: Json) => app.call('ada', 'PUT', '/api/me/settings', body);
    assert.equal((await settings({ default_reminders: offsets(defaultReminders.maxItems) })).status, 200);
    assert.equal((await settings({ default_reminders: offsets(defaultReminders.maxItems + 1) })).status, 400);

    const client = new Client({ name: 'one-schema-test', version: '1.0.0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${await app.token('ada')}` } },
      }),
    );
    try {
      const add = (args: Json) => client.callTool({ name: 'add_task', arguments: args });
      assert.notEqual((await add({ title: atMost(title.maxLength) })).isError, true);
      const refused = await add({ title: atMost(title.maxLength + 1) });
      assert.equal(refused.isError, true);
      assert.match(JSON.stringify(refused.content), new RegExp(`title: must be at most ${title.maxLength}`));
    } finally {
      await client.close();
    }
  });
});
