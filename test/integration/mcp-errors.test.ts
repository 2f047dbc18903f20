/**
 * What an MCP client is told when it is wrong: a body that is not JSON is a JSON-RPC Parse error (-32700, id
 * null) it can read, not the server's problem document; params that do not fit their method are Invalid params
 * (-32602), not Internal error (-32603) with the validator's raw issues; and a reminder id the task does not
 * have is "reminder not found", not "not known yet, try again" (which a model retries for ever).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import type { Db } from '../../src/store/db.ts';
import { startApp, waitFor, type TestApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';

describe('MCP: a client that is wrong is told so', () => {
  let db: Db;
  let drop: () => Promise<void>;
  let app: TestApp;
  before(async () => {
    ({ db, drop } = await backends[0]!.fresh());
    app = await startApp(db, { targets: ['api', 'relay', 'reminders'] });
  });
  after(async () => {
    await app?.stop();
    await drop?.();
  });

  const post = async (body: string) => {
    const r = await fetch(`${app.url}/mcp`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        authorization: `Bearer ${await app.token('rpc')}`,
      },
      body,
    });
    const text = await r.text();
    return { status: r.status, text, body: JSON.parse(text) as { id: unknown; error?: { code: number } } };
  };

  it('answers a body that is not JSON with a JSON-RPC Parse error (-32700, id null)', async () => {
    for (const body of ['{"jsonrpc": "2.0", "id": 1, "method": "tools/list"', '[{"jsonrpc": "2.0",', '']) {
      const r = await post(body);
      assert.equal(r.status, 400);
      assert.equal(r.body.error?.code, -32700, r.text);
      assert.equal(r.body.id, null);
    }
  });

  it('answers params that do not fit the method with Invalid params (-32602) naming the field', async () => {
    for (const [message, field] of [
      [{ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { cursor: 5 } }, /params\.cursor/],
      [
        { jsonrpc: '2.0', id: 2, method: 'initialize', params: { protocolVersion: 5 } },
        /params\.protocolVersion/,
      ],
      [{ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 7 } }, /params\.name must be a string/],
    ] as const) {
      const r = await post(JSON.stringify(message));
      assert.equal(r.body.error?.code, -32602, `${message.method}: ${r.text.slice(0, 200)}`);
      assert.match(r.text, field);
      assert.equal(r.body.id, message.id);
    }
    // A valid one still works.
    assert.equal(
      (await post(JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'ping' }))).body.error,
      undefined,
    );
  });

  it("answers a request's invalid params as a JSON-RPC error the SDK's client reads (200, not a transport failure)", async () => {
    const client = new Client({ name: 't', version: '1' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${await app.token('carol')}` } },
      }),
    );
    try {
      await assert.rejects(
        client.callTool({ name: 'add_task', arguments: 'buy milk' as unknown as Record<string, unknown> }),
        (err: unknown) =>
          err instanceof McpError && err.code === -32602 && /arguments must be an object/.test(err.message),
      );
      await assert.rejects(
        client.listTools({ cursor: 5 as unknown as string }),
        (err: unknown) =>
          err instanceof McpError && err.code === -32602 && /params\.cursor/.test(err.message),
      );
      // The connection is still good for the next request.
      assert.ok((await client.listTools()).tools.length > 0);
    } finally {
      await client.close();
    }
  });

  it('says "reminder not found" for a reminder id the task does not have, once its reminders are known', async () => {
    const client = new Client({ name: 't', version: '1' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${await app.token('bob')}` } },
      }),
    );
    try {
      const task = (
        await app.call('bob', 'POST', '/api/tasks', {
          title: 'b',
          due_date: '2099-03-05T09:00:00Z',
          reminders: ['PT1H'],
        })
      ).body;
      await waitFor(
        async () =>
          (await app.call('bob', 'GET', `/api/tasks/${task.id}/reminders`)).body?.items?.length === 1,
        10_000,
        "the task's reminder known",
      );
      for (const tool of ['dismiss_reminder', 'snooze_reminder']) {
        const r = (await client.callTool({
          name: tool,
          arguments: {
            task_id: task.id,
            reminder_id: '00000000-0000-4000-8000-000000000000',
            ...(tool === 'snooze_reminder' ? { for: '10 minutes' } : {}),
          },
        })) as { isError?: boolean; content: { text: string }[] };
        assert.equal(r.isError, true);
        assert.match(r.content[0]!.text, /reminder not found/, `${tool}: ${r.content[0]!.text}`);
        assert.doesNotMatch(r.content[0]!.text, /not known yet|try again/);
      }
    } finally {
      await client.close();
    }
  });
});
