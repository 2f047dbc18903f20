/**
 * Taskflow on Dapr (BUS=dapr), end to end with real daprd 1.16 sidecars and a real Kafka broker: every
 * process talks only to its own sidecar (app id = consumer group). The API + relay publish through theirs;
 * recurrence, reminders, notifications and a probe consumer receive through theirs (/dapr/subscribe,
 * SUCCESS / RETRY / DROP). Dead letters are written by daprd and read back with the Kafka admin.
 *
 * Dapr topics are plain names (no KAFKA_TOPIC_PREFIX), so the test runs its own broker instance
 * (scripts/kafka --name dapr-e2e), fresh each run, and removes it at the end.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { listDeadLetters, replayDeadLetters } from '../../src/bus/dlq.ts';
import { createDaprBus } from '../../src/bus/dapr/index.ts';
import { createKafkaBus, KafkaAdmin } from '../../src/bus/kafka/index.ts';
import { allTopics } from '../../src/bus/index.ts';
import { PermanentError, type BatchItem, type Bus, type BusMessage } from '../../src/bus/types.ts';
import type { CloudEvent } from '../../src/contracts/cloudevent.ts';
import type { ReminderEventData } from '../../src/contracts/events.ts';
import { eventProblems } from '../../src/contracts/schemas.ts';
import { DLQ_SPEC, TOPICS, dlqTopic } from '../../src/contracts/topics.ts';
import { ManualClock } from '../../src/domain/clock.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { traceIdOf } from '../../src/observability/trace.ts';
import { consumerTarget } from '../../src/services/consumer-target.ts';
import { deadLetterGroups } from '../../src/runtime.ts';
import { GROUPS, MANIFESTS, findTargets } from '../../src/services/index.ts';
import { createNotificationsTarget } from '../../src/services/notifications/index.ts';
import { createRemindersTarget } from '../../src/services/reminders/index.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { testConfig, waitFor } from '../helpers/app.ts';
import { daprdAvailable, startDaprApp, type DaprApp } from '../helpers/dapr.ts';
import { checkDaprComponent } from '../../src/bus/dapr/index.ts';
import { freePorts } from '../helpers/processes.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { kafka } from '../helpers/kafka.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const requireDapr = process.env.REQUIRE_DAPR === '1';
const skip = !kafkaBrokers
  ? 'needs TEST_KAFKA_BROKERS (scripts/test starts Kafka; this suite starts its own broker next to it)'
  : !daprdAvailable() && !requireDapr
    ? 'needs daprd: run `scripts/dapr fetch` once (builds and caches daprd 1.16.0)'
    : false;

const BROKER = 'dapr-e2e';
const HOUR = 3_600_000;
const START = '2026-03-01T12:00:00Z';
/** The API token of the apps that run with one (both ways, as the Helm chart runs every app). */
const API_TOKEN = 'dapr-e2e-token-0123456789abcdef';
const PROBE_GROUP = 'dapr-e2e-probe';
const PROBE_TOPIC = 'dapr-e2e-probe-events';
/** deploy/dapr/local/resiliency.yaml: maxRetries 5, so 6 deliveries before the dead-letter topic. */
const DAPR_ATTEMPTS = 6;

const BULK_GROUP = 'dapr-e2e-bulk-probe';
const BULK_TOPIC = 'dapr-e2e-bulk-events';

/** The probe consumer's handler, set by each test. */
let probe: (m: BusMessage) => Promise<void> = async () => undefined;
const probeTarget = consumerTarget({
  manifest: { name: 'dapr-probe', consumes: { group: PROBE_GROUP, topics: [PROBE_TOPIC] } },
  setup: async () => ({ handle: (m) => probe(m) }),
});

/** A batching probe (batch handler, 200 ms interval): daprd delivers to it in bulk. Set by its test. */
let bulkProbe: {
  one(m: BusMessage): Promise<void>;
  batch(items: readonly BatchItem[]): Promise<void>;
} = { one: async () => undefined, batch: async () => undefined };
const bulkProbeTarget = consumerTarget({
  manifest: {
    name: 'dapr-bulk-probe',
    consumes: { group: BULK_GROUP, topics: [BULK_TOPIC] },
  },
  batchIntervalMs: 200,
  setup: async () => ({ handle: (m) => bulkProbe.one(m), handleBatch: (items) => bulkProbe.batch(items) }),
});

describe('Taskflow on Dapr: daprd 1.16 sidecars + Kafka', { skip, timeout: 170_000 }, () => {
  let brokers: string;
  let db: Db;
  const clock = new ManualClock(START);
  const apps = {} as Record<'api' | 'recurrence' | 'reminders' | 'notifications' | 'probe' | 'bulk', DaprApp>;
  let bus: Bus; // the api process's bus: its publisher goes through the api sidecar, its admin to Kafka

  before(async () => {
    if (!daprdAvailable())
      throw new Error('REQUIRE_DAPR=1 but daprd is not built: run `scripts/dapr fetch` first');
    await kafka('reset', BROKER).catch(() => undefined);
    brokers = (await kafka('start', BROKER)).KAFKA_BROKERS!;
    // Topics exist before the sidecars subscribe (a consumer group that joined before its topic existed
    // only sees it at the next metadata refresh).
    const admin = new KafkaAdmin({ brokers: brokers.split(','), clientId: 'dapr-e2e' }, silentLogger);
    await admin.ensureTopics([
      ...allTopics(testConfig(), deadLetterGroups(MANIFESTS)),
      { name: PROBE_TOPIC, partitions: 3, retentionMs: HOUR },
      { name: dlqTopic(PROBE_GROUP), ...DLQ_SPEC },
      { name: BULK_TOPIC, partitions: 1, retentionMs: HOUR },
      { name: dlqTopic(BULK_GROUP), ...DLQ_SPEC },
    ]);
    await admin.close();
    db = await openDb('memory://');
    await migrate(db);
    const start = (
      appId: string,
      name: string,
      targets: Parameters<typeof startDaprApp>[1]['targets'],
      topics: string[],
      apiToken?: string,
    ) =>
      startDaprApp(db, {
        appId,
        name,
        targets,
        topics,
        kafkaBrokers: brokers,
        clock,
        ...(apiToken ? { apiToken } : {}),
      });
    const started = await Promise.allSettled([
      // The api and recurrence apps with API tokens both ways (as the Helm chart runs them), the others without.
      start('taskflow-api', 'dapr-e2e-api', findTargets(['api', 'relay']), [], API_TOKEN),
      start(
        GROUPS.recurrence,
        'dapr-e2e-recurrence',
        findTargets(['recurrence']),
        [TOPICS.taskEvents],
        API_TOKEN,
      ),
      start(
        GROUPS.reminders,
        'dapr-e2e-reminders',
        [createRemindersTarget({ tickMs: 20 })],
        [TOPICS.taskEvents],
      ),
      start(
        GROUPS.notifications,
        'dapr-e2e-notifications',
        [createNotificationsTarget({ tickMs: 20 })],
        [TOPICS.reminders],
      ),
      start(PROBE_GROUP, 'dapr-e2e-probe', [probeTarget], [PROBE_TOPIC]),
      start(BULK_GROUP, 'dapr-e2e-bulk', [bulkProbeTarget], [BULK_TOPIC]),
    ]);
    const names = ['api', 'recurrence', 'reminders', 'notifications', 'probe', 'bulk'] as const;
    started.forEach((r, i) => {
      if (r.status === 'fulfilled') apps[names[i]!] = r.value;
    });
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    bus = apps.api.app.proc.runtime.bus;
    assert.equal(bus.kind, 'dapr');
  });

  /** The group's dead letters once there are at least `n`. */
  const deadLetters = (group: string, n: number, what: string) =>
    waitFor(
      async () => {
        const l = await listDeadLetters(bus.admin, group);
        return l.length >= n ? l : undefined;
      },
      20_000,
      what,
    );

  after(async () => {
    await Promise.allSettled(Object.values(apps).map((a) => a.sidecar.stop()));
    await Promise.allSettled(Object.values(apps).map((a) => a.app.stop()));
    await db?.close();
    await kafka('stop', BROKER).catch(() => undefined);
    await kafka('reset', BROKER).catch(() => undefined);
  });

  it('serves /dapr/subscribe: one subscription per topic with the group dead-letter topic', async () => {
    const res = await fetch(`${apps.recurrence.app.url}/dapr/subscribe`, {
      headers: { 'dapr-api-token': API_TOKEN },
    });
    assert.deepEqual(await res.json(), [
      {
        pubsubname: 'pubsub-kafka',
        topic: TOPICS.taskEvents,
        routes: { default: `/dapr/events/${GROUPS.recurrence}/${TOPICS.taskEvents}` },
        deadLetterTopic: `${GROUPS.recurrence}.dlq`,
        metadata: { rawPayload: 'false' },
      },
    ]);
    assert.deepEqual(
      await (
        await fetch(`${apps.api.app.url}/dapr/subscribe`, { headers: { 'dapr-api-token': API_TOKEN } })
      ).json(),
      [],
    );
  });

  it('with APP_API_TOKEN, refuses (401) what does not come from its sidecar: no one else can post events to a consumer', async () => {
    const url = `${apps.recurrence.app.url}/dapr/events/${GROUPS.recurrence}/${TOPICS.taskEvents}`;
    const forged = JSON.stringify({
      specversion: '1.0',
      id: 'forged',
      type: 'task.completed',
      source: '/x',
      data: {},
    });
    for (const headers of [
      {},
      { 'dapr-api-token': 'guess' },
      { 'dapr-api-token': `${API_TOKEN}x` },
    ] as Record<string, string>[]) {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents+json', ...headers },
        body: forged,
      });
      assert.equal(res.status, 401, JSON.stringify(headers));
      assert.match(((await res.json()) as { detail: string }).detail, /dapr-api-token .*APP_API_TOKEN/);
      const list = await fetch(`${apps.recurrence.app.url}/dapr/subscribe`, { headers });
      assert.equal(list.status, 401);
    }
    // The app's sidecar, which has the token, delivers (test (1) goes through it) and reads the subscriptions.
    assert.deepEqual(await apps.recurrence.sidecar.subscribedTopics(), [TOPICS.taskEvents]);
  });

  it('without APP_API_TOKEN, answers only its own machine, not through a proxy (403): an ingress reaches the same port', async () => {
    const app = apps.reminders.app.proc.runtime.http.app;
    const url = `/dapr/events/${GROUPS.reminders}/${TOPICS.taskEvents}`;
    for (const [remoteAddress, headers] of [
      ['10.1.2.3', {}],
      ['127.0.0.1', { 'x-forwarded-for': '203.0.113.9' }],
      ['127.0.0.1', { 'x-real-ip': '203.0.113.9' }],
    ] as [string, Record<string, string>][]) {
      const res = await app.inject({
        method: 'POST',
        url,
        remoteAddress,
        headers: { 'content-type': 'application/cloudevents+json', ...headers },
        payload: JSON.stringify({
          specversion: '1.0',
          id: 'forged',
          type: 'task.completed',
          source: '/x',
          data: {},
        }),
      });
      assert.equal(res.statusCode, 403, `${remoteAddress} ${JSON.stringify(headers)}`);
      assert.match(JSON.parse(res.body).detail, /set APP_API_TOKEN/);
    }
    // Its sidecar, on this machine, delivers (test (2) goes through it) and reads the subscriptions.
    assert.deepEqual(await apps.reminders.sidecar.subscribedTopics(), [TOPICS.taskEvents]);
  });

  it('(1) a task completed through the API reaches the recurrence target through the sidecars; the next occurrence is created', async () => {
    const { app } = apps.api;
    const created = await app.call('rita', 'POST', '/api/tasks', {
      title: 'Water plants',
      due_date: '2026-03-02T09:00:00Z',
      recurrence: 'daily',
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const done = await app.call('rita', 'POST', `/api/tasks/${created.body.id}/complete`);
    assert.equal(done.status, 200, JSON.stringify(done.body));
    const series = await waitFor(
      async () => {
        const r = await app.call('rita', 'GET', '/api/tasks?status=all&sort=due&order=asc');
        const items = (r.body.items as any[]).filter((t) => t.series_id === created.body.id);
        return items.length >= 2 ? items : undefined;
      },
      30_000,
      'the next occurrence',
    );
    assert.equal(series.length, 2);
    assert.equal(series[1].status, 'pending');
    assert.equal(series[1].due_date, '2026-03-03T09:00:00.000Z');

    // The trace continues across the sidecars: daprd keeps the event's own traceparent. Read back from Kafka:
    // the relay deletes the outbox rows it published.
    // The next occurrence's event is committed with it and relayed a little later: wait for both.
    const { completed, next } = await waitFor(
      async () => {
        const onKafka = await bus.admin.read(TOPICS.taskEvents);
        const completed = onKafka.find(
          (m) => m.event.type === 'task.completed' && m.event.subject === created.body.id,
        );
        const next = onKafka.find((m) => m.event.type === 'task.created' && m.event.subject === series[1].id);
        return completed && next ? { completed, next } : undefined;
      },
      10_000,
      "task.completed and the next occurrence's task.created on Kafka",
    );
    assert.equal(next.event.source, '/taskflow/recurrence');
    assert.equal(traceIdOf(next.event.traceparent), traceIdOf(completed.event.traceparent));

    // On the wire: a valid CloudEvent keyed by the user, carrying the task as the API answered it.
    assert.equal(completed.key, 'rita');
    assert.deepEqual(eventProblems(completed.event), []);
    const data = completed.event.data as { task: Record<string, unknown> };
    assert.equal(data.task.id, done.body.id);
    assert.equal(data.task.status, 'completed');
    assert.equal(data.task.completed_at, done.body.completed_at);
  });

  it('(2) a reminder reaches the notifications target: scheduled from task-events, fired on time, delivered in-app', async () => {
    const due = new Date(clock.now().getTime() + 2 * HOUR).toISOString();
    const created = await apps.api.app.call('nora', 'POST', '/api/tasks', {
      title: 'Pay rent',
      due_date: due,
      reminders: ['PT1H'],
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const reminderEvents = async (type: string) =>
      (await bus.admin.read(TOPICS.reminders))
        .map((m) => m.event as CloudEvent<ReminderEventData>)
        .filter((e) => e.type === type && e.data.task_id === created.body.id);
    await waitFor(async () => (await reminderEvents('reminder.scheduled')).length > 0, 30_000, 'scheduled');
    clock.advance(HOUR + 1_000);
    const [triggered] = await waitFor(
      async () => {
        const list = await reminderEvents('reminder.triggered');
        return list.length ? list : undefined;
      },
      30_000,
      'reminder.triggered on Kafka',
    );
    assert.equal(triggered!.partitionkey, 'nora');
    const inbox = await waitFor(
      async () => {
        const r = await apps.notifications.app.call('nora', 'GET', '/api/notifications');
        const items = (r.body.items as any[]).filter((n) => n.task_id === created.body.id);
        return items.length ? items : undefined;
      },
      30_000,
      'the in-app notification',
    );
    assert.equal(inbox.length, 1);
    assert.match(JSON.stringify(inbox[0]), /Pay rent/);
  });

  it('(3) invalid events and PermanentError go to the dead-letter topic at once (DROP); replay handles one again', async () => {
    const calls: string[] = [];
    let fixed = false;
    probe = async (m) => {
      calls.push(titleOf(m.event));
      if (titleOf(m.event) === 'permanent' && !fixed) throw new PermanentError('will never work');
    };
    const invalid = taskCreated('u3', 'invalid');
    (invalid.data as { task: { title: string } }).task.title = '';
    const permanent = taskCreated('u3', 'permanent');
    await bus.publisher.publish(
      [invalid, permanent, taskCreated('u3', 'fine')].map((event) => ({
        topic: PROBE_TOPIC,
        key: 'u3',
        event,
      })),
    );
    await waitFor(() => calls.includes('fine'), 30_000, 'the event after them handled');
    assert.deepEqual(calls, ['permanent', 'fine'], 'the invalid event never reaches the handler');
    const letters = await deadLetters(PROBE_GROUP, 2, 'two dead letters');
    assert.deepEqual(
      letters.map((l) => l.event.id),
      [invalid.id, permanent.id],
    );
    for (const l of letters) {
      assert.equal(l.key, 'u3');
      assert.equal(l.source.topic, PROBE_TOPIC);
      assert.match(l.source.offset, /^\d+$/);
      assert.match(l.error, /daprd/);
    }
    assert.deepEqual(letters[1]!.event, permanent, 'the dead letter is the original event');
    // What daprd dead-letters is counted for the DLQ alerts (taskflow_dlq_messages), read from the brokers
    // behind the component: it was counted nowhere.
    const exposition = await (await fetch(`${apps.probe.app.url}/metrics`)).text();
    assert.match(exposition, new RegExp(`taskflow_dlq_messages\\{group="${PROBE_GROUP}"\\} [1-9]`));

    fixed = true;
    const { replayed } = await replayDeadLetters(bus, PROBE_GROUP, { ids: [permanent.id] });
    assert.equal(replayed.length, 1);
    await waitFor(
      () => calls.filter((c) => c === 'permanent').length === 2,
      30_000,
      'replayed event handled',
    );
  });

  it('(4) transient failures are retried by daprd per the resiliency policy, in order per key; when retries run out, the dead-letter topic', async () => {
    const attempts = new Map<string, number[]>();
    const handled: string[] = [];
    probe = async (m) => {
      const t = titleOf(m.event);
      attempts.set(t, [...(attempts.get(t) ?? []), Date.now()]);
      if (t === 'stuck' || (t === 'flaky' && attempts.get(t)!.length < 3)) throw new Error(`transient: ${t}`);
      handled.push(t);
    };
    const stuck = taskCreated('u5', 'stuck');
    await bus.publisher.publish([
      { topic: PROBE_TOPIC, key: 'u4', event: taskCreated('u4', 'flaky') },
      { topic: PROBE_TOPIC, key: 'u4', event: taskCreated('u4', 'after-flaky') },
      { topic: PROBE_TOPIC, key: 'u5', event: stuck },
    ]);
    await waitFor(() => handled.includes('after-flaky'), 30_000, 'flaky handled, then the next');
    assert.deepEqual(handled, ['flaky', 'after-flaky'], 'the key stays in order behind the retries');
    assert.equal(attempts.get('flaky')!.length, 3);
    assert.ok(attempts.get('after-flaky')![0]! >= attempts.get('flaky')![2]!);

    const letter = await waitFor(
      async () => (await listDeadLetters(bus.admin, PROBE_GROUP)).find((l) => l.event.id === stuck.id),
      40_000,
      'the stuck event dead-lettered',
    );
    const times = attempts.get('stuck')!;
    assert.equal(times.length, DAPR_ATTEMPTS, `1 delivery + 5 retries, got ${times.length}`);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    // exponential: 500 ms initial interval, x1.5, +-50% jitter -> at least ~3.3 s in all
    assert.ok(times.at(-1)! - times[0]! >= 2_500, `backoff between attempts: ${gaps.join(', ')} ms`);
    assert.ok(gaps.at(-1)! > gaps[0]!, `growing gaps: ${gaps.join(', ')} ms`);
    assert.equal(letter.source.topic, PROBE_TOPIC);
  });

  it('delivers a batching group in bulk: one batch handler call for many events; a poison entry dead-lettered alone, the rest in order', async () => {
    const subscribed = (await (await fetch(`${apps.bulk.app.url}/dapr/subscribe`)).json()) as {
      bulkSubscribe?: unknown;
    }[];
    assert.deepEqual(subscribed[0]!.bulkSubscribe, {
      enabled: true,
      maxMessagesCount: 100,
      maxAwaitDurationMs: 200,
    });
    const batches: string[][] = [];
    const handled: string[] = [];
    bulkProbe = {
      batch: async (items) => {
        const titles = items.map((i) => titleOf(i.message.event));
        if (titles.includes('poison') || titles.includes('stuck'))
          throw new Error('a poison event in the batch');
        batches.push(titles);
        handled.push(...titles);
      },
      one: async (m) => {
        const t = titleOf(m.event);
        if (t === 'poison') throw new PermanentError('never works');
        if (t === 'stuck') throw new Error('fails every time, with an error that may be transient');
        handled.push(t);
      },
    };
    const first = Array.from({ length: 20 }, (_, i) => taskCreated('u8', `a${i}`));
    await bus.publisher.publish(first.map((event) => ({ topic: BULK_TOPIC, key: 'u8', event })));
    await waitFor(() => handled.length === 20, 30_000, 'the first 20 handled');
    assert.deepEqual(
      handled,
      first.map((e) => titleOf(e)),
      'in order',
    );
    assert.ok(
      batches.some((b) => b.length > 1),
      `at least one batch of several events: ${JSON.stringify(batches.map((b) => b.length))}`,
    );
    handled.length = 0;
    const poison = taskCreated('u8', 'poison');
    const second = [taskCreated('u8', 'b0'), poison, taskCreated('u8', 'b1'), taskCreated('u8', 'b2')];
    await bus.publisher.publish(second.map((event) => ({ topic: BULK_TOPIC, key: 'u8', event })));
    await waitFor(() => handled.includes('b2'), 30_000, 'the events around the poison one handled');
    assert.deepEqual(handled, ['b0', 'b1', 'b2']);
    const letters = await deadLetters(BULK_GROUP, 1, 'the poison event dead-lettered');
    assert.deepEqual(
      letters.map((l) => l.event.id),
      [poison.id],
    );
    // An entry that keeps failing with an error that is not permanent: retried here, then dead-lettered alone;
    // the entries after it are handled. (Answered RETRY, daprd dead-lettered it with every entry after it.)
    handled.length = 0;
    const stuck = taskCreated('u8', 'stuck');
    const third = [taskCreated('u8', 'c0'), stuck, taskCreated('u8', 'c1'), taskCreated('u8', 'c2')];
    await bus.publisher.publish(third.map((event) => ({ topic: BULK_TOPIC, key: 'u8', event })));
    await waitFor(() => handled.includes('c2'), 60_000, 'the events after the failing one handled');
    assert.deepEqual(handled, ['c0', 'c1', 'c2']);
    const all = await deadLetters(BULK_GROUP, 2, 'the failing event dead-lettered');
    assert.deepEqual(
      all.map((l) => l.event.id),
      [poison.id, stuck.id],
    );
  });

  it('publishes batches through the bulk API in order per key, keeping each event (and its traceparent) intact', async () => {
    const got = new Map<string, CloudEvent[]>();
    probe = async (m) => void got.set(m.key, [...(got.get(m.key) ?? []), m.event]);
    const sent = Array.from({ length: 90 }, (_, i) => {
      const event = taskCreated(`k${i % 6}`, String(i));
      event.traceparent = `00-${String(i).padStart(32, 'a')}-00f067aa0ba902b7-01`;
      return { topic: PROBE_TOPIC, key: `k${i % 6}`, event };
    });
    await bus.publisher.publish(sent);
    await waitFor(() => [...got.values()].reduce((n, l) => n + l.length, 0) >= 90, 30_000, '90 events');
    for (let k = 0; k < 6; k++) {
      const key = `k${k}`;
      assert.deepEqual(
        got.get(key)!.map((e) => e.id),
        sent.filter((m) => m.key === key).map((m) => m.event.id),
        `${key} in order, once each`,
      );
    }
    const byId = new Map(sent.map((m) => [m.event.id, m.event]));
    for (const list of got.values()) for (const e of list) assert.deepEqual(e, byId.get(e.id));
  });

  it('reads events the Kafka transport wrote (binary content mode) on the same topics', async () => {
    const got: CloudEvent[] = [];
    probe = async (m) => void got.push(m.event);
    const kbus = createKafkaBus(
      { brokers: brokers.split(','), clientId: 'dapr-e2e-kafka' },
      { log: silentLogger },
    );
    const event = taskCreated('u6', 'from-kafka-transport');
    try {
      await kbus.publisher.publish([{ topic: PROBE_TOPIC, key: 'u6', event }]);
    } finally {
      await kbus.close();
    }
    await waitFor(() => got.length > 0, 30_000, 'the binary-mode event');
    assert.deepEqual(got[0], event);
  });

  it('reports an unreachable sidecar as a clear publish error (the relay backs off)', async () => {
    const [port] = await freePorts(1); // nothing listens there
    const dead = createDaprBus({ httpPort: port!, pubsubName: 'pubsub-kafka' }, { log: silentLogger });
    await assert.rejects(
      dead.publisher.publish([{ topic: PROBE_TOPIC, key: 'x', event: taskCreated('x', 'nowhere') }]),
      new RegExp(`sidecar unreachable at http://127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`),
    );
    await assert.rejects(dead.admin.lag(), /not supported on BUS=dapr without KAFKA_BROKERS/);
    await dead.close();
    await assert.rejects(
      checkDaprComponent({ httpPort: port!, pubsubName: 'pubsub-kafka' }),
      /the Dapr sidecar does not answer at http:\/\/127\.0\.0\.1:\d+\/v1\.0\/metadata \(DAPR_HTTP_PORT\)/,
    );
  });

  it('is not ready while its sidecar has no pub/sub component of the name it was given (DAPR_PUBSUB_NAME)', async () => {
    const { httpPort } = apps.api.sidecar;
    await checkDaprComponent({ httpPort, pubsubName: 'pubsub-kafka', apiToken: API_TOKEN });
    // A sidecar that requires a token the process lacks: said so, not a bare 401.
    await assert.rejects(
      checkDaprComponent({ httpPort, pubsubName: 'pubsub-kafka' }),
      /the Dapr sidecar refused .*\(401\): set DAPR_API_TOKEN/,
    );
    await assert.rejects(
      checkDaprComponent({ httpPort, pubsubName: 'pubsub-kafak', apiToken: API_TOKEN }),
      /no pub\/sub component named "pubsub-kafak" \(DAPR_PUBSUB_NAME\); it has "pubsub-kafka"/,
    );
    // The check is in every Dapr process's /readyz.
    assert.equal((await fetch(`${apps.api.app.url}/readyz`)).status, 200);
  });
});
