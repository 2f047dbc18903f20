/**
 * Logs, traces and errors under unusual input, each failing before its fix (a review found them):
 * - an event whose `traceparent` attribute is not a string (a number, an object, an array) is invalid and goes
 *   to the dead-letter topic; building the delivery's logger (or, with tracing on, the CONSUMER span's parent)
 *   threw on it instead, and the event held its partition for good;
 * - with tracing on, an MCP tool's in-process REST call is a child of the tool's span, not of the client's;
 * - a refused DATABASE_URL (a trailing newline, an unescaped `/` in the password, a scheme typo) is quoted in
 *   the error the CLI prints with its password masked;
 * - a language model's failure quoting the API key is logged without it, as it is answered.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { SpanKind } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-node';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { pino } from 'pino';
import { signDevToken } from '../../src/auth.ts';
import { createEmbeddedBus } from '../../src/bus/embedded/index.ts';
import { listDeadLetters } from '../../src/bus/dlq.ts';
import type { CloudEvent } from '../../src/contracts/cloudevent.ts';
import { loadConfig } from '../../src/config.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { initTracing, shutdownTracing } from '../../src/observability/tracing.ts';
import { runTargets, type RunningProcess } from '../../src/process.ts';
import { apiTarget } from '../../src/services/api/index.ts';
import { MANIFESTS, findTargets } from '../../src/services/index.ts';
import { notificationsTarget } from '../../src/services/notifications/index.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { TEST_SECRET, startApp, testConfig, waitFor, type TestApp } from '../helpers/app.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { startFakeModel, type FakeModel } from '../helpers/openai-server.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** An event with a `traceparent` attribute of another type than string, as a producer could write one. */
const withTraceparent = (title: string, traceparent: unknown) =>
  ({ ...taskCreated('u1', title), traceparent }) as unknown as CloudEvent;

/** Publishes a bad event and a good one of the same user; resolves what was handled and dead-lettered. */
async function pastABadTraceparent(db: Db, group: string, traceparent: unknown) {
  const bus = createEmbeddedBus(db, {
    log: silentLogger,
    retry: { maxAttempts: 3, baseDelayMs: 5, maxDelayMs: 20 },
    pollIntervalMs: 20,
    heartbeatIntervalMs: 100,
    sessionTimeoutMs: 1_000,
  });
  const topic = `${group}-events`;
  await bus.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: 86_400_000 }]);
  await bus.publisher.publish([
    { topic, key: 'u1', event: withTraceparent('bad', traceparent) },
    { topic, key: 'u1', event: taskCreated('u1', 'next') },
  ]);
  const seen: string[] = [];
  const sub = await bus.subscriber.subscribe({
    group,
    topics: [topic],
    handler: async (m) => void seen.push(titleOf(m.event)),
  });
  try {
    await waitFor(() => seen.includes('next'), 10_000, 'the event after the bad one handled');
    return { seen, letters: (await listDeadLetters(bus.admin, group)).map((l) => titleOf(l.event)) };
  } finally {
    await sub.close();
    await bus.close();
  }
}

describe('an event whose traceparent is not a string', () => {
  let db: Db;
  before(async () => {
    db = await openDb('memory://');
    await migrate(db);
  });
  after(() => db.close());

  it('is dead-lettered, and the partition goes on', async () => {
    assert.deepEqual(await pastABadTraceparent(db, 'tp-plain', 12345), { seen: ['next'], letters: ['bad'] });
  });

  it('is dead-lettered with tracing on (an object, a number, an array)', async () => {
    assert.equal(
      await initTracing({ serviceName: 't', exporter: new InMemorySpanExporter(), simple: true }),
      true,
    );
    try {
      for (const [i, traceparent] of [{}, 12345, ['00-x']].entries())
        assert.deepEqual(await pastABadTraceparent(db, `tp-traced-${i}`, traceparent), {
          seen: ['next'],
          letters: ['bad'],
        });
    } finally {
      await shutdownTracing();
    }
  });
});

describe("an MCP tool's in-process REST call, with tracing on", () => {
  const exporter = new InMemorySpanExporter();
  let db: Db;
  let app: TestApp;
  before(async () => {
    assert.equal(await initTracing({ serviceName: 't', exporter, simple: true }), true);
    db = await openDb('memory://');
    await migrate(db);
    app = await startApp(db, { targets: [apiTarget, notificationsTarget] });
  });
  after(async () => {
    await app.stop();
    await db.close();
    await shutdownTracing();
  });

  for (const withCallerTrace of [false, true])
    it(`is a child of the tool's span (the client sent a traceparent: ${withCallerTrace})`, async () => {
      exporter.reset();
      const headers: Record<string, string> = { authorization: `Bearer ${await app.token('ada')}` };
      if (withCallerTrace)
        headers.traceparent = `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`;
      const client = new Client({ name: 'trace-test', version: '1.0.0' });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`), { requestInit: { headers } }),
      );
      try {
        const r = (await client.callTool({ name: 'list_notifications', arguments: {} })) as {
          isError?: boolean;
        };
        assert.notEqual(r.isError, true);
      } finally {
        await client.close();
      }
      const tool = await waitFor(
        () => exporter.getFinishedSpans().find((s) => s.name === 'mcp tools/call list_notifications'),
        5000,
        'the tool span',
      );
      const inner = await waitFor(
        () =>
          exporter
            .getFinishedSpans()
            .find(
              (s) =>
                s.kind === SpanKind.SERVER && String(s.attributes['http.route']) === '/api/notifications',
            ),
        5000,
        'the inner REST span',
      );
      assert.equal(inner.spanContext().traceId, tool.spanContext().traceId);
      assert.equal(inner.parentSpanContext?.spanId, tool.spanContext().spanId);
    });
});

describe('a refused DATABASE_URL', () => {
  const password = 'Sup3rS3cretPw';
  const cases: [string, string][] = [
    ['a trailing newline', `postgres://taskflow:${password}@db:5432/taskflow\n`],
    ['an unescaped / in the password', `postgres://taskflow:${password}/x@db:5432/taskflow`],
    ['a scheme typo', `postgress://taskflow:${password}@db:5432/taskflow`],
  ];
  for (const [what, url] of cases)
    it(`is quoted with its password masked: ${what}`, () => {
      assert.throws(
        () => loadConfig({ DATABASE_URL: url, JWT_SECRET: 'x'.repeat(40) }),
        (err: Error) => !err.message.includes(password) && err.message.includes('taskflow:***@'),
      );
    });

  it('is printed by the CLI with its password masked', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'migrate'], {
      cwd: root,
      env: { ...process.env, DATABASE_URL: cases[0]![1], JWT_SECRET: 'x'.repeat(40) },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /DATABASE_URL/);
    assert.ok(!r.stderr.includes(password), r.stderr);
  });
});

describe("a language model's failure quoting the API key", () => {
  const key = 'sk-live-0123456789abcdefSECRET';
  let db: Db;
  let model: FakeModel;
  let proc: RunningProcess;
  const lines: string[] = [];
  before(async () => {
    model = await startFakeModel();
    db = await openDb('memory://');
    await migrate(db);
    const config = testConfig({
      CHAT_BASE_URL: model.url,
      CHAT_MODEL: 'fake-model',
      CHAT_API_KEY: key,
      CHAT_TIMEOUT_MS: '2000',
    });
    const log = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
    proc = await runTargets(config, findTargets(['api']), { db, log, catalog: MANIFESTS });
  });
  after(async () => {
    await proc?.stop();
    await model?.close();
    await db?.close();
  });

  it('is answered and logged without it', async () => {
    model.script({
      status: 401,
      body: { error: { message: `Incorrect API key provided: ${key}`, type: 'invalid_request_error' } },
    });
    const res = await fetch(`${proc.url}/api/chat`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await signDevToken(TEST_SECRET, 'ada')}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ message: 'hello' }),
    });
    const body = await res.text();
    assert.equal(res.status, 502);
    assert.ok(!body.includes(key));
    const failed = lines.filter((l) => l.includes('the language model failed'));
    assert.equal(failed.length, 1, 'the failure is logged');
    assert.match(failed[0]!, /Incorrect API key provided: \[redacted\]/);
    assert.deepEqual(
      lines.filter((l) => l.includes(key)),
      [],
    );
  });
});
