/**
 * The operations commands' output where it goes (a review of the CLI found each; each failed before):
 * - `taskflow tail ... | head -n 1`: the write to the closed pipe was an uncaught EPIPE (Node's "Unhandled
 *   'error' event" and a stack trace, exit 1); the command now ends quietly;
 * - `--json`: the bus's warnings went to stdout ahead of the JSON (`dlq list --json | jq` failed, exit 0); logs
 *   are on stderr;
 * - a Kafka broker that accepts connections and never answers: "taskflow: Request timed out" said neither Kafka
 *   nor the address (and `dlq list` waited twice as long, its first failure passed over).
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createEmbeddedBus } from '../../src/bus/embedded/index.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { TEST_SECRET } from '../helpers/app.ts';
import { taskCreated } from '../helpers/events.ts';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { EventCodec } from '../../src/bus/kafka/codec.ts';
import { createKafkaBus } from '../../src/bus/kafka/index.ts';
import { DLQ_HEADERS } from '../../src/bus/middleware.ts';
import { SchemaRegistryClient } from '../../src/bus/schema-registry.ts';
import { dlqTopic } from '../../src/contracts/topics.ts';
import { startFakeRegistry } from '../helpers/schema-registry.ts';
import { createServer as createNetServer, type Socket } from 'node:net';

const run = promisify(execFile);
const brokers = process.env.TEST_KAFKA_BROKERS;

describe('taskflow tail into a pipe that closes', () => {
  it('ends without a stack trace when its reader (head -n 1) goes away', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'review-tail-'));
    const dir = join(parent, 'db');
    try {
      const db = await openDb(dir);
      await migrate(db);
      const bus = createEmbeddedBus(db, { log: silentLogger });
      await bus.admin.ensureTopics([{ name: 'task-events', partitions: 3, retentionMs: 86_400_000 }]);
      const events = Array.from({ length: 2_000 }, (_, i) => taskCreated(`u${i % 5}`, `t${i}`));
      await bus.publisher.publish(
        events.map((event) => ({ topic: 'task-events', key: event.partitionkey!, event })),
      );
      await bus.close();
      await db.close();

      const child = spawn(process.execPath, ['bin/taskflow.js', 'tail', 'task-events', '--from-beginning'], {
        env: { ...process.env, BUS: 'embedded', DATABASE_URL: dir, JWT_SECRET: TEST_SECRET },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      // `head -n 1`: read the first line, then close the pipe.
      await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
      child.stdout.destroy();
      const code = await new Promise<number | null>((resolve) => {
        const t = setTimeout(() => {
          child.kill('SIGKILL');
          resolve(null);
        }, 30_000);
        child.on('exit', (c) => (clearTimeout(t), resolve(c)));
      });
      assert.doesNotMatch(stderr, /Unhandled 'error' event|EPIPE|^\s+at /m, `stderr:\n${stderr}`);
      assert.notEqual(code, null, 'tail did not end after its reader went away');
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });
});

describe('--json output on Kafka', { skip: brokers ? false : 'needs TEST_KAFKA_BROKERS' }, () => {
  it('dlq list --json prints only JSON on stdout while the schema registry answers 503 once', async () => {
    const registry = await startFakeRegistry();
    // 503 for the first schema lookup by id, then the registry itself.
    let failed = 0;
    const flaky = createServer((req, res) => {
      if (req.url?.startsWith('/schemas/ids/') && failed++ === 0) {
        res
          .writeHead(503, { 'content-type': 'application/json' })
          .end('{"error_code":50301,"message":"unavailable"}');
        return;
      }
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        void fetch(registry.url + req.url, {
          method: req.method!,
          headers: { 'content-type': req.headers['content-type'] ?? 'application/json' },
          ...(chunks.length ? { body: Buffer.concat(chunks) } : {}),
        }).then(async (r) =>
          res
            .writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? '' })
            .end(Buffer.from(await r.arrayBuffer())),
        );
      });
    });
    await new Promise<void>((r) => flaky.listen(0, '127.0.0.1', r));
    const flakyUrl = `http://127.0.0.1:${(flaky.address() as AddressInfo).port}`;
    const prefix = `review-${randomBytes(4).toString('hex')}.`;
    const group = 'taskflow-audit';
    const bus = createKafkaBus(
      { brokers: brokers!.split(','), clientId: 'review', topicPrefix: prefix },
      {
        log: silentLogger,
        codec: new EventCodec({
          encoding: 'avro',
          registry: new SchemaRegistryClient({ url: registry.url, compatibility: 'FULL' }),
          subjectPrefix: prefix,
        }),
      },
    );
    try {
      const event = taskCreated('u-avro', 'an avro letter');
      await bus.publisher.publish([
        {
          topic: dlqTopic(group),
          key: 'u-avro',
          event,
          headers: { [DLQ_HEADERS.error]: 'boom', [DLQ_HEADERS.sourceTopic]: 'task-events' },
        },
      ]);
      const { stdout, stderr } = await run(
        process.execPath,
        ['bin/taskflow.js', 'dlq', 'list', '--group', group, '--json'],
        {
          env: {
            ...process.env,
            BUS: 'kafka',
            KAFKA_BROKERS: brokers!,
            KAFKA_TOPIC_PREFIX: prefix,
            SCHEMA_REGISTRY_URL: flakyUrl,
            DATABASE_URL: 'memory://',
            JWT_SECRET: TEST_SECRET,
          },
          timeout: 60_000,
        },
      );
      assert.equal(failed >= 1, true, 'the registry was asked');
      let letters: { event: { id: string } }[];
      try {
        letters = JSON.parse(stdout) as typeof letters;
      } catch (err) {
        assert.fail(
          `stdout of dlq list --json is not JSON (${(err as Error).message}):\n${stdout.slice(0, 400)}\nstderr: ${stderr}`,
        );
      }
      assert.deepEqual(
        letters.map((d) => d.event.id),
        [event.id],
      );
    } finally {
      await bus.close();
      flaky.close();
      await registry.close();
    }
  });
});

describe('operations commands against a Kafka broker that never answers', () => {
  it('taskflow lag names Kafka and KAFKA_BROKERS in its error', async () => {
    const sockets: Socket[] = [];
    const silent = createNetServer((s) => sockets.push(s)); // accepts, never answers
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const broker = `127.0.0.1:${(silent.address() as AddressInfo).port}`;
    try {
      const err = await run(process.execPath, ['bin/taskflow.js', 'lag'], {
        env: {
          ...process.env,
          BUS: 'kafka',
          KAFKA_BROKERS: broker,
          DATABASE_URL: 'memory://',
          JWT_SECRET: TEST_SECRET,
        },
        timeout: 120_000,
      }).then(
        () => assert.fail('lag succeeded against a broker that never answers'),
        (e: { code: number; stderr: string }) => e,
      );
      assert.equal(err.code, 1);
      assert.match(err.stderr, /Kafka.*KAFKA_BROKERS=127\.0\.0\.1:\d+/, `stderr: ${err.stderr}`);
    } finally {
      sockets.forEach((s) => s.destroy());
      silent.close();
    }
  });
});
