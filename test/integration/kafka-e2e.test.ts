/**
 * Taskflow on a real Apache Kafka broker: an independent client reads what the API produced, the API keeps
 * answering through a broker outage and the backlog drains in order, consumer processes fail over after
 * kill -9, a poison event is dead-lettered and replayed with the CLI, and the SASL_SSL path works.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import { createKafkaBus } from '../../src/bus/kafka/index.ts';
import type { Subscription } from '../../src/bus/types.ts';
import { listDeadLetters } from '../../src/bus/dlq.ts';
import { eventProblems } from '../../src/contracts/schemas.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { TEST_SECRET, startApp, waitFor } from '../helpers/app.ts';
import { createPgDatabase } from '../helpers/db.ts';
import { sentinelOf, taskCreated, titleOf } from '../helpers/events.ts';
import { kafka } from '../helpers/kafka.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const execFileP = promisify(execFile);

/** A port nothing listens on (yet). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}
const prefix = () => `e2e${randomBytes(3).toString('hex')}.`;
const skip = kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS (scripts/test starts Kafka)';

async function freshDb(): Promise<Db> {
  const db = await openDb('memory://');
  await migrate(db);
  return db;
}

describe('Taskflow on Kafka', { skip }, () => {
  it('publishes API events that an independent client (kafkajs) reads as valid CloudEvents', async () => {
    const p = prefix();
    const db = await freshDb();
    const app = await startApp(db, {
      targets: ['api', 'relay'],
      env: { BUS: 'kafka', KAFKA_BROKERS: kafkaBrokers!, KAFKA_TOPIC_PREFIX: p },
    });
    try {
      const created = await app.call('indie', 'POST', '/api/tasks', {
        title: 'read me elsewhere',
        tags: ['x'],
      });
      assert.equal(created.status, 201);
      const client = new Kafka({
        clientId: 'independent',
        brokers: kafkaBrokers!.split(','),
        logLevel: logLevel.NOTHING,
      });
      const consumer = client.consumer({ groupId: `independent-${randomBytes(3).toString('hex')}` });
      await consumer.connect();
      await consumer.subscribe({ topic: `${p}task-events`, fromBeginning: true });
      const got = await new Promise<{ key: string; headers: Record<string, string>; value: string }>(
        (resolve) => {
          void consumer.run({
            eachMessage: async ({ message }) => {
              const headers = Object.fromEntries(
                Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)]),
              );
              resolve({ key: String(message.key), headers, value: String(message.value) });
            },
          });
        },
      );
      await consumer.disconnect();
      assert.equal(got.key, 'indie');
      assert.equal(got.headers.ce_specversion, '1.0');
      assert.equal(got.headers.ce_type, 'task.created');
      assert.equal(got.headers.ce_source, '/taskflow/api');
      assert.equal(got.headers.ce_subject, created.body.id);
      assert.equal(got.headers['content-type'], 'application/json');
      assert.match(got.headers.traceparent!, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      // Rebuild the structured event from the binary-mode message by hand and validate it.
      const envelope: Record<string, unknown> = {
        datacontenttype: got.headers['content-type'],
        data: JSON.parse(got.value),
      };
      for (const [k, v] of Object.entries(got.headers)) if (k.startsWith('ce_')) envelope[k.slice(3)] = v;
      assert.deepEqual(eventProblems(envelope), []);
      assert.equal((envelope.data as { task: { title: string } }).task.title, 'read me elsewhere');
      // The round trips a write costs on the broker side are on /metrics, by API (bench:e2e reads them).
      const metrics = String((await app.call(null, 'GET', '/metrics')).body);
      const requests = (api: string) =>
        Number(
          new RegExp(`^taskflow_kafka_requests_total\\{api="${api}"\\} (\\d+)$`, 'm').exec(metrics)?.[1] ?? 0,
        );
      assert.ok(requests('Produce') >= 1, 'the relay produced the event');
      assert.ok(requests('Metadata') >= 1, 'the producer looked its topic up');
    } finally {
      await app.stop();
      await db.close();
    }
  });

  it('keeps answering 2xx while the broker is down; all 200 events arrive afterwards, in order per user', async () => {
    const env = await kafka('start', 'outage');
    const p = prefix();
    const db = await freshDb();
    const app = await startApp(db, {
      targets: ['api', 'relay'],
      env: { BUS: 'kafka', KAFKA_BROKERS: env.KAFKA_BROKERS!, KAFKA_TOPIC_PREFIX: p },
    });
    try {
      await app.call('u0', 'POST', '/api/tasks', { title: 'warm-up' });
      await waitFor(
        async () =>
          Number(
            (await db.query<{ n: string }>('SELECT count(*)::text n FROM outbox WHERE published_at IS NULL'))
              .rows[0]!.n,
          ) === 0,
        30_000,
        'warm-up published',
      );
      await kafka('stop', 'outage');
      const users = ['u0', 'u1', 'u2', 'u3'];
      for (let i = 0; i < 200; i++) {
        const r = await app.call(users[i % 4]!, 'POST', '/api/tasks', { title: `outage-${i}` });
        assert.equal(r.status, 201, `request ${i} during the outage`);
      }
      // Each write waits in the outbox with its task.changed (ADR 0011).
      const pending = await db.query<{ topic: string; n: string }>(
        'SELECT topic, count(*)::text n FROM outbox WHERE published_at IS NULL GROUP BY topic ORDER BY topic',
      );
      assert.deepEqual(
        pending.rows.map((r) => `${r.topic}:${r.n}`),
        ['task-events:200', 'task-updates:200'],
        'events wait in the outbox',
      );
      await kafka('start', 'outage');
      await waitFor(
        async () =>
          Number(
            (await db.query<{ n: string }>('SELECT count(*)::text n FROM outbox WHERE published_at IS NULL'))
              .rows[0]!.n,
          ) === 0,
        90_000,
        'backlog drained',
      );
      const bus = createKafkaBus(
        { brokers: env.KAFKA_BROKERS!.split(','), clientId: 'check', topicPrefix: p },
        { log: silentLogger },
      );
      const all = (await bus.admin.read('task-events', { limit: 1000 })).filter((m) =>
        titleOf(m.event).startsWith('outage-'),
      );
      const changes = await bus.admin.read('task-updates', { limit: 1000 });
      await bus.close();
      for (const u of users) {
        const numbered = changes
          .filter((m) => m.key === u)
          .map((m) => (m.event.data as { sequence: number }).sequence);
        // Numbered 1, 2, 3... per user (u0's warm-up write is its 1), no gap or repeat through the outage.
        assert.deepEqual(
          numbered,
          Array.from({ length: numbered.length }, (_, i) => 1 + i),
          `${u}: task.changed numbered in order`,
        );
        assert.equal(numbered.length, u === 'u0' ? 51 : 50, `${u}: one task.changed per write`);
      }
      assert.equal(all.length, 200, 'none missing');
      assert.equal(new Set(all.map((m) => m.event.id)).size, 200);
      for (const u of users) {
        const seq = all
          .filter((m) => m.key === u)
          .map((m) => Number(titleOf(m.event).slice('outage-'.length)));
        assert.equal(seq.length, 50);
        assert.deepEqual(
          seq,
          [...seq].sort((a, b) => a - b),
          `${u} in order`,
        );
      }
    } finally {
      await app.stop();
      await db.close();
      await kafka('stop', 'outage').catch(() => undefined);
      await kafka('reset', 'outage').catch(() => undefined);
    }
  });

  it('starts every target while the broker is down: the API answers, consumers join once it is up', async () => {
    const port = await freePort();
    const p = prefix();
    const db = await freshDb();
    const app = await startApp(db, {
      targets: ['api', 'relay', 'audit'],
      env: { BUS: 'kafka', KAFKA_BROKERS: `127.0.0.1:${port}`, KAFKA_TOPIC_PREFIX: p },
    });
    try {
      const created = await app.call('late', 'POST', '/api/tasks', { title: 'before the broker' });
      assert.equal(created.status, 201);
      const notReady = await fetch(`${app.url}/readyz`);
      assert.equal(notReady.status, 503);
      const checks = ((await notReady.json()) as { checks: Record<string, string> }).checks;
      assert.match(checks['consumer group taskflow-audit'] ?? '', /not subscribed yet/);
      await kafka('start', 'late', ['--port', String(port)]);
      const audited = async () =>
        Number(
          (await db.query<{ n: string }>("SELECT count(*)::text n FROM audit_log WHERE user_id = 'late'"))
            .rows[0]!.n,
        );
      await waitFor(async () => (await audited()) === 1, 90_000, 'the audit service handled the event');
      assert.equal((await fetch(`${app.url}/readyz`)).status, 200);
    } finally {
      await app.stop();
      await db.close();
      await kafka('stop', 'late').catch(() => undefined);
      await kafka('reset', 'late').catch(() => undefined);
    }
  });

  it(
    'fails over between two consumer processes when one is killed with SIGKILL; redelivered events, each effect once',
    { skip: process.env.TEST_DATABASE_URL ? false : 'needs TEST_DATABASE_URL' },
    async () => {
      const p = prefix();
      const effectsDb = await createPgDatabase(process.env.TEST_DATABASE_URL!);
      const pool = new pg.Pool({ connectionString: effectsDb.url, max: 2 });
      // What an idempotent consumer keeps (processed ids and effects, one transaction), and every delivery.
      await pool.query(`
        CREATE TABLE processed (event_id text PRIMARY KEY);
        CREATE TABLE effects (event_id text NOT NULL, consumer text NOT NULL, partition int NOT NULL);
        CREATE TABLE deliveries (event_id text NOT NULL, consumer text NOT NULL, partition int NOT NULL,
                                 "offset" text NOT NULL)`);
      const bus = createKafkaBus(
        { brokers: kafkaBrokers!.split(','), clientId: 'killer', topicPrefix: p },
        { log: silentLogger },
      );
      await bus.admin.ensureTopics([{ name: 'work', partitions: 6, retentionMs: 3_600_000 }]);
      const children: ChildProcess[] = [];
      let hung: string | undefined;
      const startConsumer = async (name: string, extra: Record<string, string> = {}) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/effect-consumer.ts'], {
          env: {
            ...process.env,
            KAFKA_BROKERS: kafkaBrokers!,
            TOPIC_PREFIX: p,
            GROUP: 'workers',
            TOPIC: 'work',
            EFFECTS_DB_URL: effectsDb.url,
            CONSUMER_NAME: name,
            ...extra,
          },
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        children.push(child);
        await new Promise<void>((resolve, reject) => {
          child.stdout!.on('data', (b: Buffer) => {
            const text = b.toString();
            hung ??= /^hung (\S+)$/m.exec(text)?.[1];
            if (text.includes('ready')) resolve();
          });
          child.on('exit', (code, signal) => reject(new Error(`${name} exited with ${code ?? signal}`)));
        });
        return child;
      };
      const count = async (sql: string) => Number((await pool.query(sql)).rows[0].n);
      const produced: string[] = [];
      let producing = true;
      try {
        // `a` hangs after its 40th effect: that effect is committed, its position is not.
        const a = await startConsumer('a', { HANG_AFTER: '60' });
        await startConsumer('b');
        // Producing goes on until the kill (no fixed wait for the group to settle on two members).
        const producer = (async () => {
          for (let i = 0; producing; i += 30) {
            const batch = Array.from({ length: 30 }, (_, j) => ({
              topic: 'work',
              key: `k${(i + j) % 24}`,
              event: taskCreated(`k${(i + j) % 24}`, String(i + j)),
            }));
            await bus.publisher.publish(batch);
            produced.push(...batch.map((m) => m.event.id));
            // The producer's pace, not a condition: the kill waits for a's hang and b's effects below.
            await new Promise((r) => setTimeout(r, 60));
          }
        })();
        await waitFor(
          async () =>
            hung !== undefined &&
            (await count(`SELECT count(*)::int AS n FROM effects WHERE consumer = 'b'`)) > 60,
          60_000,
          'a to hang after its effect and b to be working',
        );
        a.kill('SIGKILL');
        // A few more batches after the kill, then stop producing.
        const atKill = produced.length;
        await waitFor(() => produced.length >= atKill + 90, 30_000, 'more events after the kill');
        producing = false;
        await producer;
        const total = produced.length;
        await waitFor(
          async () => (await count('SELECT count(DISTINCT event_id)::int AS n FROM effects')) >= total,
          60_000,
          'every effect after failover',
        );

        // No loss: every produced event has an effect; no duplicate: exactly one each.
        const effects = await pool.query<{ event_id: string; n: number }>(
          'SELECT event_id, count(*)::int AS n FROM effects GROUP BY event_id',
        );
        assert.deepEqual(
          effects.rows.filter((r) => r.n !== 1),
          [],
          'every event has exactly one effect',
        );
        assert.deepEqual(effects.rows.map((r) => r.event_id).sort(), [...produced].sort());
        // Redeliveries did happen (at-least-once): the event `a` hung on, effect committed and position
        // not, was delivered to b again after the kill, and still has its one effect (by a).
        const redelivered = await pool.query<{ event_id: string; n: number }>(
          'SELECT event_id, count(*)::int AS n FROM deliveries GROUP BY event_id HAVING count(*) > 1',
        );
        assert.ok(redelivered.rows.length > 0, 'some events were delivered more than once');
        const hungDeliveries = await pool.query<{ consumer: string }>(
          'SELECT consumer FROM deliveries WHERE event_id = $1 ORDER BY consumer',
          [hung],
        );
        assert.deepEqual(
          hungDeliveries.rows.map((r) => r.consumer),
          ['a', 'b'],
          'the hung event redelivered to b',
        );
        const hungEffects = await pool.query<{ consumer: string }>(
          'SELECT consumer FROM effects WHERE event_id = $1',
          [hung],
        );
        assert.deepEqual(
          hungEffects.rows.map((r) => r.consumer),
          ['a'],
        );
        const byB = await pool.query(
          "SELECT DISTINCT partition FROM deliveries WHERE consumer = 'b' ORDER BY 1",
        );
        assert.equal(byB.rows.length, 6, 'the survivor took over every partition');
        console.log(
          `# ${total} events, ${await count('SELECT count(*)::int AS n FROM deliveries')} deliveries, ` +
            `${redelivered.rows.length} redelivered`,
        );
      } finally {
        producing = false;
        for (const c of children) c.kill('SIGKILL');
        await bus.close();
        await pool.end();
        await effectsDb.drop();
      }
    },
  );

  it('dead-letters a poison event with failure headers; `taskflow dlq replay` puts it back and it is handled once', async () => {
    const p = prefix();
    const group = 'taskflow-audit';
    const bus = createKafkaBus(
      { brokers: kafkaBrokers!.split(','), clientId: 'poison', topicPrefix: p },
      { log: silentLogger, retry: { maxAttempts: 3, baseDelayMs: 5, maxDelayMs: 20 } },
    );
    const poison = taskCreated('p1', 'poison');
    let fixed = false;
    let attempts = 0;
    const handled = new Map<string, number>();
    await bus.admin.ensureTopics([{ name: 'task-events', partitions: 3, retentionMs: 3_600_000 }]);
    const sub = await bus.subscriber.subscribe({
      group,
      topics: ['task-events'],
      handler: async (m) => {
        if (m.event.id === poison.id) {
          attempts++;
          if (!fixed) throw new Error('boom: cannot handle');
        }
        handled.set(m.event.id, (handled.get(m.event.id) ?? 0) + 1);
      },
    });
    try {
      await bus.publisher.publish([
        { topic: 'task-events', key: 'p1', event: poison },
        { topic: 'task-events', key: 'p1', event: taskCreated('p1', 'next') },
      ]);
      await waitFor(() => handled.size === 1, 30_000, 'the next event handled after the poison');
      assert.equal(attempts, 3);
      const [letter] = await listDeadLetters(bus.admin, group);
      assert.equal(letter?.event.id, poison.id);
      assert.equal(letter?.attempts, 3);
      assert.match(letter!.error, /boom/);
      assert.equal(letter?.source.topic, 'task-events');
      assert.ok(letter?.source.offset);
      fixed = true;
      const cliEnv = {
        ...process.env,
        BUS: 'kafka',
        KAFKA_BROKERS: kafkaBrokers!,
        KAFKA_TOPIC_PREFIX: p,
        DATABASE_URL: 'memory://',
        JWT_SECRET: TEST_SECRET,
        LOG_LEVEL: 'warn',
      };
      const list = await execFileP(
        process.execPath,
        ['bin/taskflow.js', 'dlq', 'list', '--group', group, '--json'],
        { env: cliEnv },
      );
      assert.equal(JSON.parse(list.stdout)[0].event.id, poison.id);
      const replay = await execFileP(
        process.execPath,
        ['bin/taskflow.js', 'dlq', 'replay', '--group', group, '--id', poison.id],
        { env: cliEnv },
      );
      assert.match(replay.stdout, /replayed 1 event/);
      // Replayed: no longer listed (the group's replay position on the broker), still in the topic.
      const listAgain = (...more: string[]) =>
        execFileP(process.execPath, ['bin/taskflow.js', 'dlq', 'list', '--group', group, '--json', ...more], {
          env: cliEnv,
        });
      assert.deepEqual(JSON.parse((await listAgain()).stdout), []);
      assert.deepEqual(
        (JSON.parse((await listAgain('--all')).stdout) as { event: { id: string }; replayed: boolean }[]).map(
          (d) => [d.event.id, d.replayed],
        ),
        [[poison.id, true]],
      );
      await waitFor(() => handled.get(poison.id) === 1, 30_000, 'replayed poison handled');
      // Barrier: a sentinel after the replayed event in its partition; handled, whatever copy of the poison
      // was to come has come. Then the positions: committed about once a second, awaited before `taskflow lag`.
      const sentinel = sentinelOf(poison);
      await bus.publisher.publish([{ topic: 'task-events', key: 'p1', event: sentinel }]);
      await waitFor(() => handled.has(sentinel.id), 30_000, 'the sentinel after the replay');
      assert.equal(handled.get(poison.id), 1);
      await waitFor(
        async () => (await bus.admin.lag(group)).every((l) => l.lag === 0),
        30_000,
        'the positions committed',
      );
      const lag = await execFileP(process.execPath, ['bin/taskflow.js', 'lag', '--group', group, '--json'], {
        env: cliEnv,
      });
      assert.equal(
        (JSON.parse(lag.stdout) as { lag: { lag: number }[] }).lag.reduce((n, l) => n + l.lag, 0),
        0,
      );
    } finally {
      await sub.close();
      await bus.close();
    }
  });

  it('lets a consumer start before its topics exist: it waits for them, then reads from the start', async () => {
    const p = prefix();
    // The topic is created once the subscriber says it waits for it (no fixed head start).
    let waiting!: () => void;
    const waits = new Promise<void>((r) => (waiting = r));
    const log = pino(
      { level: 'warn' },
      new Writable({
        write(chunk, _enc, cb) {
          if (String(chunk).includes('waiting for Kafka topics to exist')) waiting();
          cb();
        },
      }),
    );
    const bus = createKafkaBus(
      { brokers: kafkaBrokers!.split(','), clientId: 'early', topicPrefix: p },
      { log, topicWaitMs: 30_000 },
    );
    const got: string[] = [];
    const creating = waits.then(() =>
      bus.admin.ensureTopics([{ name: 'late', partitions: 2, retentionMs: 3_600_000 }]),
    );
    let sub: Subscription | undefined;
    try {
      sub = await bus.subscriber.subscribe({
        group: 'early-readers',
        topics: ['late'],
        handler: async (m) => void got.push(titleOf(m.event)),
      });
      await creating;
      await bus.publisher.publish([{ topic: 'late', key: 'u', event: taskCreated('u', 'first') }]);
      await waitFor(() => got.includes('first'), 30_000, 'the event on the late topic');
    } finally {
      waiting(); // if the subscriber failed before saying so
      await creating.catch(() => undefined);
      await sub?.close();
      await bus.close();
    }
  });

  it('fails a subscribe to a topic that never appears with a clear error, after the wait', async () => {
    const bus = createKafkaBus(
      { brokers: kafkaBrokers!.split(','), clientId: 'never', topicPrefix: prefix() },
      { log: silentLogger, topicWaitMs: 1_000 },
    );
    try {
      await assert.rejects(
        bus.subscriber.subscribe({ group: 'g', topics: ['missing'], handler: async () => undefined }),
        /Unknown topic .*missing.*taskflow topics ensure/,
      );
    } finally {
      await bus.close();
    }
  });

  describe('SASL_SSL (SCRAM-SHA-256, self-signed CA)', () => {
    let env: Record<string, string>;
    before(async () => {
      env = await kafka('start', 'sasl', ['--sasl']);
    });
    after(async () => {
      await kafka('stop', 'sasl').catch(() => undefined);
    });

    it('runs API → outbox → relay → Kafka → consumer over SASL_SSL', async () => {
      const p = prefix();
      const db = await freshDb();
      const secure = { BUS: 'kafka', KAFKA_TOPIC_PREFIX: p, ...env };
      const app = await startApp(db, { targets: ['api', 'relay'], env: secure });
      const bus = createKafkaBus(
        {
          brokers: env.KAFKA_BROKERS!.split(','),
          clientId: 'secure',
          topicPrefix: p,
          sasl: {
            mechanism: 'SCRAM-SHA-256',
            username: env.KAFKA_SASL_USERNAME!,
            password: env.KAFKA_SASL_PASSWORD!,
          },
          ssl: { caFile: env.KAFKA_SSL_CA_FILE!, rejectUnauthorized: true },
        },
        { log: silentLogger },
      );
      const got: string[] = [];
      let sub: Subscription | undefined;
      try {
        sub = await bus.subscriber.subscribe({
          group: 'secure-readers',
          topics: ['task-events'],
          handler: async (m) => void got.push(titleOf(m.event)),
        });
        assert.equal((await app.call('s1', 'POST', '/api/tasks', { title: 'over tls' })).status, 201);
        await waitFor(() => got.includes('over tls'), 60_000, 'event over SASL_SSL');
      } finally {
        await sub?.close();
        await bus.close();
        await app.stop();
        await db.close();
      }
    });

    it('reports a wrong password as an authentication error within seconds, not a hang', async () => {
      const bus = createKafkaBus(
        {
          brokers: env.KAFKA_BROKERS!.split(','),
          clientId: 'wrong',
          topicPrefix: prefix(),
          sasl: {
            mechanism: 'SCRAM-SHA-256',
            username: env.KAFKA_SASL_USERNAME!,
            password: 'not-the-password',
          },
          ssl: { caFile: env.KAFKA_SSL_CA_FILE!, rejectUnauthorized: true },
        },
        { log: silentLogger },
      );
      const started = Date.now();
      await assert.rejects(
        bus.publisher.publish([{ topic: 'task-events', key: 'x', event: taskCreated('x', 'nope') }]),
        /authentication failed/i,
      );
      assert.ok(Date.now() - started < 20_000, `failed after ${Date.now() - started} ms`);
      await bus.close();
    });
  });
});
