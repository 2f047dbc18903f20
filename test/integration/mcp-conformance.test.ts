/**
 * Where the MCP SDK's own answers break the protocol, over both transports: a `tools/call` of a tool the
 * server does not have is a JSON-RPC protocol error (-32602) by the spec (2024-11-05 to 2025-11-25, "Tools >
 * Error Handling"), where the SDK answered a tool result with `isError: true`; and on stdio a line over the
 * SDK's buffer (10 MB) closed its transport and so the server, silently, a last line without a newline
 * was never read, and a JSON-RPC batch (which a server MUST take under 2025-03-26, and /mcp takes) was answered
 * one Invalid Request with id null, its requests never.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { signDevToken } from '../../src/auth.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { TEST_SECRET, startApp, waitFor, type TestApp } from '../helpers/app.ts';
import { backends, createPgDatabase } from '../helpers/db.ts';

type Answer = { id: unknown; result?: { isError?: boolean }; error?: { code: number; message: string } };

const call = (id: number, name: string, args: object = {}) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name, arguments: args },
});

/** The first request of a session, as a client of `protocolVersion` sends it. */
const initialize = (protocolVersion: string) => ({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion, capabilities: {}, clientInfo: { name: 'taskflow-test', version: '1' } },
});

/** The answer to a tool the server does not have: -32602, naming it and the tools there are. */
const assertUnknownTool = (answer: Answer | undefined, id: unknown) => {
  assert.equal(answer?.id, id, JSON.stringify(answer));
  assert.equal(answer?.result, undefined, `a tool result, not a protocol error: ${JSON.stringify(answer)}`);
  assert.equal(answer?.error?.code, -32602, JSON.stringify(answer));
  assert.match(answer?.error?.message ?? '', /unknown tool "nope"/);
  assert.match(answer?.error?.message ?? '', /add_task, .*update_task/);
};

describe('MCP over HTTP: a tool the server does not have', () => {
  let db: Db;
  let drop: () => Promise<void>;
  let app: TestApp;
  before(async () => {
    ({ db, drop } = await backends[0]!.fresh());
    app = await startApp(db, { targets: ['api'] });
  });
  after(async () => {
    await app?.stop();
    await drop?.();
  });

  const post = async (body: unknown, headers: Record<string, string> = {}) => {
    const r = await fetch(`${app.url}/mcp`, {
      method: 'POST',
      headers: {
        ...headers,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        authorization: `Bearer ${await app.token('conf')}`,
      },
      body: JSON.stringify(body),
    });
    return { status: r.status, body: (await r.json()) as Answer | Answer[] };
  };

  it('is a JSON-RPC error (-32602) naming the tool and the tools there are, in a batch too (nothing done)', async () => {
    const one = await post(call(7, 'nope'));
    // 200, as the SDK answers a request's protocol error: its client reads a 400 as the transport failing.
    assert.equal(one.status, 200);
    assertUnknownTool(one.body as Answer, 7);
    const batch = await post([call(8, 'add_task', { title: 'not added' }), call(9, 'nope')]);
    assert.equal(batch.status, 400);
    assertUnknownTool(batch.body as Answer, 9);
    assert.match((batch.body as Answer).error!.message, /message 2 of the batch; nothing was done/);
    assert.equal((await app.call('conf', 'GET', '/api/tasks')).body.items.length, 0);
  });

  it('is the same error to a client of each protocol version the server speaks (2024-11-05 and on)', async () => {
    for (const version of ['2024-11-05', '2025-03-26', '2025-06-18', '2025-11-25']) {
      const init = (await post(initialize(version))).body as { result?: { protocolVersion?: string } };
      assert.equal(init.result?.protocolVersion, version);
      // A client of 2025-06-18 and later names its version on each request (MCP-Protocol-Version); older, none.
      assertUnknownTool(
        (await post(call(2, 'nope'), version >= '2025-06-18' ? { 'mcp-protocol-version': version } : {}))
          .body as Answer,
        2,
      );
    }
  });

  it("is an McpError to the SDK's client, and a known tool still answers", async () => {
    const client = new Client({ name: 't', version: '1' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${await app.token('conf')}` } },
      }),
    );
    try {
      await assert.rejects(
        client.callTool({ name: 'nope', arguments: {} }),
        (err: unknown) =>
          err instanceof McpError && err.code === -32602 && /unknown tool "nope"/.test(err.message),
      );
      const known = (await client.callTool({ name: 'list_tasks', arguments: {} })) as { isError?: boolean };
      assert.notEqual(known.isError, true);
    } finally {
      await client.close();
    }
  });
});

const pgUrl = process.env.TEST_DATABASE_URL;
const root = fileURLToPath(new URL('../..', import.meta.url));

describe(
  'MCP over stdio (taskflow mcp): what the SDK answered wrongly or not at all',
  { skip: pgUrl ? false : 'needs TEST_DATABASE_URL (PostgreSQL): see mcp.test.ts' },
  () => {
    let url: string;
    let drop: () => Promise<void>;
    before(async () => {
      ({ url, drop } = await createPgDatabase(pgUrl!));
      const db = await openDb(url);
      await migrate(db);
      await db.close();
    });
    after(async () => {
      await drop?.();
    });

    /** `taskflow mcp` as a child process: its stdin, its answers so far, and its exit code once it exits. */
    const startMcp = async () => {
      const { spawn } = await import('node:child_process');
      const child = spawn(process.execPath, ['bin/taskflow.js', 'mcp'], {
        cwd: root,
        env: {
          ...(process.env as Record<string, string>),
          DATABASE_URL: url,
          JWT_SECRET: TEST_SECRET,
          TASKFLOW_TOKEN: await signDevToken(TEST_SECRET, 'alice'),
          LOG_LEVEL: 'warn',
        },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      // A process that stopped fails the test by its missing answer, not by the EPIPE of the next write.
      child.stdin.on('error', () => undefined);
      const out = { stdout: '', stderr: '' };
      child.stdout.on('data', (d: Buffer) => (out.stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out.stderr += d.toString()));
      let code: number | null | undefined;
      const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve((code = c))));
      const answers = () =>
        out.stdout
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Answer);
      /** The answer to `id`; fails at once when the process exits without it. */
      const answerTo = (id: unknown) =>
        waitFor(
          () => {
            const a = answers().find((x) => x.id === id);
            if (!a && code !== undefined)
              throw new Error(`exited (${code}) without answering ${String(id)}; stderr: ${out.stderr}`);
            return a;
          },
          60_000,
          `the answer to ${String(id)}`,
        );
      /** The batch answer (a line that is an array) that answers `id`. */
      const batchAnswering = (id: unknown) =>
        waitFor(
          () => {
            const lines = out.stdout
              .split('\n')
              .filter(Boolean)
              .map((l) => JSON.parse(l) as Answer | Answer[]);
            const batch = lines.find((l): l is Answer[] => Array.isArray(l) && l.some((a) => a.id === id));
            if (!batch && code !== undefined)
              throw new Error(`exited (${code}) without answering ${String(id)}; stderr: ${out.stderr}`);
            return batch;
          },
          60_000,
          `the batch answering ${String(id)}`,
        );
      return { child, stdin: child.stdin, out, exited, answers, answerTo, batchAnswering };
    };

    it('answers a tool it does not have with a JSON-RPC error (-32602)', async () => {
      const mcp = await startMcp();
      try {
        mcp.stdin.write(`${JSON.stringify(initialize('2025-06-18'))}\n`);
        await mcp.answerTo(1);
        mcp.stdin.write(`${JSON.stringify(call(2, 'nope'))}\n`);
        assertUnknownTool(await mcp.answerTo(2), 2);
      } finally {
        mcp.child.kill();
      }
    });

    it('answers a line over its limit with Invalid Request (id null) and goes on serving', async () => {
      const mcp = await startMcp();
      try {
        mcp.stdin.write(`${JSON.stringify(initialize('2025-06-18'))}\n`);
        await mcp.answerTo(1);
        const huge = JSON.stringify(call(2, 'add_task', { title: 'x'.repeat(11 * 1024 * 1024) }));
        mcp.stdin.write(`${huge}\n`);
        const refused = await mcp.answerTo(null);
        assert.equal(refused.error?.code, -32600, JSON.stringify(refused));
        assert.match(refused.error?.message ?? '', /longer than \d+ bytes/);
        // Said on stderr too (another pipe: it may come after the answer).
        await waitFor(() => /longer than/.test(mcp.out.stderr), 10_000, 'the warning on stderr');
        mcp.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'ping' })}\n`);
        assert.deepEqual((await mcp.answerTo(3)).result, {});
        assert.equal(mcp.answers().filter((a) => a.id === 2).length, 0, 'the long line was not read');
      } finally {
        mcp.child.kill();
      }
    });

    it('answers a batch with one array of its answers, in its order, under every protocol version (as /mcp)', async () => {
      for (const version of ['2025-03-26', '2025-06-18']) {
        const mcp = await startMcp();
        try {
          mcp.stdin.write(`${JSON.stringify(initialize(version))}\n`);
          const init = (await mcp.answerTo(1)) as { result?: { protocolVersion?: string } };
          assert.equal(init.result?.protocolVersion, version);
          mcp.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' })}\n`);
          mcp.stdin.write(
            `${JSON.stringify([
              call(2, 'add_task', { title: `batched under ${version}` }),
              { jsonrpc: '2.0', method: 'notifications/initialized' },
              { jsonrpc: '2.0', id: 'three', method: 'ping' },
            ])}\n`,
          );
          const batch = await mcp.batchAnswering(2);
          assert.deepEqual(
            batch.map((a) => a.id),
            [2, 'three'],
            `the requests' answers, the notification none: ${JSON.stringify(batch)}`,
          );
          assert.equal(batch[0]!.result?.isError, undefined, JSON.stringify(batch[0]));
          assert.deepEqual(batch[1]!.result, {});
          // A batch of one is answered as an array too; a batch of notifications only, with nothing.
          mcp.stdin.write(`${JSON.stringify([{ jsonrpc: '2.0', method: 'notifications/initialized' }])}\n`);
          mcp.stdin.write(`${JSON.stringify([{ jsonrpc: '2.0', id: 4, method: 'ping' }])}\n`);
          assert.deepEqual(await mcp.batchAnswering(4), [{ jsonrpc: '2.0', id: 4, result: {} }]);
          // A request the client cancels is not answered (the SDK drops it): the batch is answered without it.
          mcp.stdin.write(
            `${JSON.stringify([
              call(5, 'list_tasks'),
              { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 5 } },
              { jsonrpc: '2.0', id: 6, method: 'ping' },
            ])}\n`,
          );
          assert.deepEqual(await mcp.batchAnswering(6), [{ jsonrpc: '2.0', id: 6, result: {} }]);
          assert.equal(mcp.out.stdout.trim().split('\n').length, 4, mcp.out.stdout);
        } finally {
          mcp.child.kill();
        }
      }
    });

    it('refuses a batch as /mcp does, with an error for each of its requests, and does nothing of it', async () => {
      const mcp = await startMcp();
      try {
        mcp.stdin.write(`${JSON.stringify(initialize('2025-03-26'))}\n`);
        await mcp.answerTo(1);
        const refused = async (batch: unknown[], ids: unknown[], code: number, why: RegExp) => {
          mcp.stdin.write(`${JSON.stringify(batch)}\n`);
          const answer = await mcp.batchAnswering(ids[0]);
          assert.deepEqual(
            answer.map((a) => a.id),
            ids,
            `each request is answered: ${JSON.stringify(answer)}`,
          );
          for (const a of answer) {
            assert.equal(a.error?.code, code, JSON.stringify(a));
            assert.match(a.error?.message ?? '', why);
          }
        };
        const add = (id: number) => call(id, 'add_task', { title: 'not done' });
        await refused(
          [add(10), call(11, 'add_task', 'buy milk' as unknown as object)],
          [10, 11],
          -32602,
          /message 2 of the batch; nothing was done/,
        );
        await refused([add(12), call(13, 'nope')], [12, 13], -32602, /unknown tool "nope"/);
        await refused(
          [add(14), { jsonrpc: '2.0', id: 14, method: 'ping' }],
          [14],
          -32600,
          /the id 14 is used by two requests of the batch/,
        );
        await refused(
          [add(15), 42],
          [15],
          -32600,
          /message 2 of the batch is not a JSON-RPC 2\.0 message.*; nothing was done/,
        );
        await refused(
          Array.from({ length: 11 }, (_, i) => add(20 + i)),
          Array.from({ length: 11 }, (_, i) => 20 + i),
          -32600,
          /a batch takes at most 10 messages \(11 sent\)/,
        );
        await refused([add(40), initialize('2025-03-26')], [40, 1], -32600, /initialize/);
        // Arrays nested two million deep, which JSON.parse reads and JSON.stringify cannot write back.
        const deep = 2_000_000;
        mcp.stdin.write(
          `[${JSON.stringify(call(41, 'add_task', { title: 'not done' })).replace('"not done"', `${'['.repeat(deep)}${']'.repeat(deep)}`)}]\n`,
        );
        const tooDeep = await mcp.batchAnswering(41);
        assert.equal(tooDeep[0]?.error?.code, -32600, JSON.stringify(tooDeep));
        assert.match(tooDeep[0]?.error?.message ?? '', /nested too deeply/);
        // JSON-RPC 2.0 section 6: an empty batch is answered one Invalid Request (not an array).
        mcp.stdin.write('[]\n');
        const empty = await mcp.answerTo(null);
        assert.equal(empty.error?.code, -32600);
        assert.match(empty.error?.message ?? '', /empty batch/);
        mcp.stdin.write(`${JSON.stringify(call(50, 'search_tasks', { query: 'not done' }))}\n`);
        const found = (await mcp.answerTo(50)) as {
          result?: { structuredContent?: { tasks: unknown[] } };
        };
        assert.deepEqual(
          found.result?.structuredContent?.tasks,
          [],
          'nothing of the refused batches was done',
        );
      } finally {
        mcp.child.kill();
      }
    });

    it('answers a batch before it exits when stdin closes after it', async () => {
      const mcp = await startMcp();
      mcp.stdin.end(
        [
          JSON.stringify(initialize('2025-03-26')),
          JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
          JSON.stringify([call(2, 'add_task', { title: 'batched, then closed' }), call(3, 'list_tasks')]),
        ].join('\n'),
      );
      assert.equal(await mcp.exited, 0, mcp.out.stderr);
      const batch = await mcp.batchAnswering(2);
      assert.deepEqual(
        batch.map((a) => [a.id, a.result?.isError ?? false]),
        [
          [2, false],
          [3, false],
        ],
      );
    });

    it('reads a last line without a newline, answers it before it exits, and exits 0', async () => {
      const mcp = await startMcp();
      mcp.stdin.end(
        [
          JSON.stringify(initialize('2025-06-18')),
          JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
          JSON.stringify(call(2, 'add_task', { title: 'no newline after me' })),
        ].join('\n'),
      );
      assert.equal(await mcp.exited, 0, mcp.out.stderr);
      const added = mcp.answers().find((a) => a.id === 2);
      assert.ok(added?.result && added.result.isError !== true, `${JSON.stringify(added)} ${mcp.out.stderr}`);
    });
  },
);
