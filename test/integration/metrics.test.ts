/**
 * `/metrics` after a real workload (embedded bus; api + relay + a consumer target defined here): the figures
 * match the work done (HTTP requests, events produced and consumed, dead letters, DLQ size, consumer lag that
 * returns to 0, outbox backlog), and the output is valid Prometheus text exposition format (strict parser).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { listDeadLetters, replayDeadLetters } from '../../src/bus/dlq.ts';
import { partitionFor } from '../../src/bus/partitioner.ts';
import { PermanentError, type BusMessage } from '../../src/bus/types.ts';
import type { TaskEventData } from '../../src/contracts/events.ts';
import { consumerTarget } from '../../src/services/consumer-target.ts';
import { apiTarget } from '../../src/services/api/index.ts';
import { relayTarget } from '../../src/services/relay/index.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp, waitFor, type TestApp } from '../helpers/app.ts';

// ---------------------------------------------------------------------------------------------------------
// A strict parser of the Prometheus text exposition format 0.0.4

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Family {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function parseValue(raw: string, line: number): number {
  if (raw === '+Inf') return Infinity;
  if (raw === '-Inf') return -Infinity;
  if (raw === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(raw)) throw new Error(`line ${line}: bad value ${raw}`);
  return Number(raw);
}

function parseLabels(src: string, line: number): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < src.length) {
    const eq = src.indexOf('=', i);
    if (eq < 0) throw new Error(`line ${line}: label without value`);
    const name = src.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`line ${line}: bad label name ${name}`);
    if (src[eq + 1] !== '"') throw new Error(`line ${line}: label value not quoted`);
    let j = eq + 2;
    let value = '';
    for (;;) {
      const c = src[j];
      if (c === undefined) throw new Error(`line ${line}: unterminated label value`);
      if (c === '"') break;
      if (c === '\\') {
        const n = src[j + 1];
        if (n === 'n') value += '\n';
        else if (n === '\\' || n === '"') value += n;
        else throw new Error(`line ${line}: bad escape \\${n}`);
        j += 2;
        continue;
      }
      if (c === '\n') throw new Error(`line ${line}: newline in label value`);
      value += c;
      j++;
    }
    if (name in labels) throw new Error(`line ${line}: duplicate label ${name}`);
    labels[name] = value;
    i = j + 1;
    if (i < src.length) {
      if (src[i] !== ',') throw new Error(`line ${line}: expected , between labels`);
      i++;
    }
  }
  return labels;
}

export function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  const lines = text.split('\n').slice(0, -1);
  let current: Family | undefined;
  lines.forEach((l, idx) => {
    const line = idx + 1;
    if (l === '') return;
    if (l.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(l);
      if (!m) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!METRIC_NAME.test(name)) throw new Error(`line ${line}: bad metric name ${name}`);
      let f = families.get(name);
      if (!f) {
        f = { name, type: 'untyped', help: '', samples: [] };
        families.set(name, f);
      } else if (f.samples.length) throw new Error(`line ${line}: ${kind} for ${name} after its samples`);
      if (kind === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest))
          throw new Error(`line ${line}: bad type ${rest}`);
        f.type = rest as Family['type'];
      } else f.help = rest;
      current = f;
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(l);
    if (!m) throw new Error(`line ${line}: not a sample: ${l}`);
    const [, name, labelSrc, raw] = m as unknown as [string, string, string | undefined, string];
    const family = current;
    const suffixes =
      family?.type === 'histogram'
        ? ['_bucket', '_sum', '_count']
        : family?.type === 'summary'
          ? ['', '_sum', '_count']
          : [''];
    if (!family || !suffixes.some((s) => family.name + s === name))
      throw new Error(`line ${line}: sample ${name} outside its family (TYPE first)`);
    const labels = parseLabels(labelSrc ?? '', line);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seen.has(key)) throw new Error(`line ${line}: duplicate series ${key}`);
    seen.add(key);
    const value = parseValue(raw, line);
    if (family.type === 'counter' && !(value >= 0)) throw new Error(`line ${line}: negative counter`);
    family.samples.push({ name, labels, value });
  });
  // Histograms: cumulative buckets ending in +Inf = _count.
  for (const f of families.values()) {
    if (f.type !== 'histogram') continue;
    const series = new Map<string, Sample[]>();
    for (const s of f.samples.filter((x) => x.name.endsWith('_bucket'))) {
      const { le, ...rest } = s.labels;
      assert.ok(le !== undefined, `${f.name} bucket has le`);
      const k = JSON.stringify(Object.entries(rest).sort());
      series.set(k, [...(series.get(k) ?? []), s]);
    }
    for (const [k, buckets] of series) {
      for (let i = 1; i < buckets.length; i++)
        assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, `${f.name} buckets are cumulative`);
      assert.equal(buckets[buckets.length - 1]!.labels.le, '+Inf');
      const count = f.samples.find(
        (s) => s.name === `${f.name}_count` && JSON.stringify(Object.entries(s.labels).sort()) === k,
      );
      assert.equal(count?.value, buckets[buckets.length - 1]!.value, `${f.name} +Inf bucket = _count`);
    }
  }
  return families;
}

/** The value of one series (labels must match exactly those given, other labels ignored); 0 if absent. */
function value(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const family = [...families.values()].find((f) => f.samples.some((s) => s.name === name));
  const matches = (family?.samples ?? []).filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  return matches.reduce((sum, s) => sum + s.value, 0);
}

function series(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): Sample[] {
  return [...families.values()]
    .flatMap((f) => f.samples)
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

// ---------------------------------------------------------------------------------------------------------

const GROUP = 'taskflow-metrics-probe';

describe('/metrics after a workload', () => {
  let db: Db;
  let app: TestApp;
  const handled: string[] = [];
  let release: () => void = () => undefined;
  let gate: Promise<void> = Promise.resolve();
  let poisoned = true;

  const probe = consumerTarget({
    manifest: {
      name: 'metrics-probe',
      consumes: { group: GROUP, topics: ['task-events'] },
    },
    async setup() {
      return {
        async handle(m: BusMessage) {
          const title = (m.event.data as TaskEventData).task.title;
          if (title.includes('poison') && poisoned) throw new PermanentError('poisoned event');
          if (title.includes('slow') && m.event.type === 'task.created') await gate;
          handled.push(m.event.id);
        },
      };
    },
  });

  before(async () => {
    db = await openDb('memory://');
    await migrate(db);
    app = await startApp(db, { targets: [apiTarget, relayTarget, probe] });
  });
  after(async () => {
    release();
    await app.stop();
    await db.close();
  });

  const scrape = async () => {
    const res = await fetch(`${app.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    return parseExposition(await res.text());
  };

  it('answers a scraper of the process, not a request a proxy passed on (an ingress catch-all)', async () => {
    const proxied = await fetch(`${app.url}/metrics`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
    assert.equal(proxied.status, 404);
    assert.doesNotMatch(await proxied.text(), /taskflow_/);
    await scrape();
  });

  it('counts the work done and parses as Prometheus exposition format', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await app.call('alice', 'POST', '/api/tasks', { title: `task ${i}` });
      assert.equal(r.status, 201);
      ids.push(r.body.id);
    }
    assert.equal((await app.call('bob', 'POST', '/api/tasks', { title: 'poison pill' })).status, 201);
    assert.equal((await app.call('alice', 'POST', '/api/tasks', { title: '' })).status, 400);
    for (const id of ids.slice(0, 2))
      assert.equal((await app.call('alice', 'POST', `/api/tasks/${id}/complete`)).status, 200);
    assert.equal((await app.call('alice', 'DELETE', `/api/tasks/${ids[4]}`)).status, 204);
    assert.equal((await app.call('alice', 'GET', '/api/tasks')).status, 200);

    // 6 created + 2 completed + 1 deleted = 9 events; 8 handled, 1 dead-lettered.
    await waitFor(() => handled.length === 8, 15_000, 'the probe to handle 8 events');
    const m = await waitFor(
      async () => {
        const f = await scrape();
        const lag = series(f, 'taskflow_consumer_lag_messages', { group: GROUP });
        return value(f, 'taskflow_dlq_messages', { group: GROUP }) === 1 &&
          lag.length > 0 &&
          lag.every((s) => s.value === 0) &&
          value(f, 'taskflow_outbox_pending_events') === 0
          ? f
          : undefined;
      },
      15_000,
      'lag 0, DLQ 1 and an empty outbox on /metrics',
    );

    const http = (method: string, route: string, status: string) =>
      value(m, 'taskflow_http_requests_total', { method, route, status });
    assert.equal(http('POST', '/api/tasks', '201'), 6);
    assert.equal(http('POST', '/api/tasks', '400'), 1);
    assert.equal(http('POST', '/api/tasks/:id/complete', '200'), 2);
    assert.equal(http('DELETE', '/api/tasks/:id', '204'), 1);
    assert.equal(http('GET', '/api/tasks', '200'), 1);
    assert.equal(
      value(m, 'taskflow_http_request_duration_seconds_count', { method: 'POST', route: '/api/tasks' }),
      7,
    );
    assert.equal(m.get('taskflow_http_request_duration_seconds')?.type, 'histogram');

    const produced = (type: string) =>
      value(m, 'taskflow_events_produced_total', { topic: 'task-events', type });
    assert.deepEqual(
      [produced('task.created'), produced('task.completed'), produced('task.deleted')],
      [6, 2, 1],
    );
    const consumed = (type: string, outcome: string) =>
      value(m, 'taskflow_events_consumed_total', { group: GROUP, topic: 'task-events', type, outcome });
    assert.deepEqual(
      [
        consumed('task.created', 'handled'),
        consumed('task.completed', 'handled'),
        consumed('task.deleted', 'handled'),
        consumed('task.created', 'dead_lettered'),
      ],
      [5, 2, 1, 1],
    );
    assert.equal(value(m, 'taskflow_dead_letters_total', { group: GROUP, topic: 'task-events' }), 1);
    assert.equal(value(m, 'taskflow_handler_duration_seconds_count', { group: GROUP }), 8);
    assert.equal(value(m, 'taskflow_dlq_messages', { group: GROUP }), 1);
    assert.equal(value(m, 'taskflow_outbox_oldest_pending_age_seconds'), 0);
    // Lag series name partitions that have a committed position; the key of alice and bob's partitions.
    const lag = series(m, 'taskflow_consumer_lag_messages', { group: GROUP, topic: 'task-events' });
    assert.ok(lag.length >= 1 && lag.length <= 3, `lag series: ${JSON.stringify(lag)}`);
    assert.equal(value(m, 'taskflow_metrics_bus_read_errors_total'), 0);

    // Conventions: counters end in _total, durations are in seconds, every family has HELP.
    for (const f of m.values()) {
      if (!f.name.startsWith('taskflow_')) continue;
      assert.ok(f.help.length > 0, `${f.name} has HELP`);
      if (f.type === 'counter') assert.match(f.name, /_total$/);
      if (/_(duration|latency|lateness|age)_/.test(f.name)) assert.match(f.name, /_seconds$/);
    }
    assert.equal(m.get('taskflow_consumer_lag_messages')?.type, 'gauge');
    assert.equal(m.get('taskflow_dlq_messages')?.type, 'gauge');
    // A target's own metrics are exposed by the processes that run it (its manifest makes them).
    assert.ok(m.get('taskflow_create_queue_age_seconds'), 'the api target runs here');
    assert.ok(m.get('taskflow_outbox_pending_events'), 'the relay target runs here');
    assert.equal(m.get('taskflow_websocket_connections'), undefined, 'the gateway does not');
    assert.equal(m.get('taskflow_reminder_trigger_lateness_seconds'), undefined, 'nor the reminders target');
  });

  it('shows consumer lag while a handler is stuck, and 0 again after it catches up', async () => {
    gate = new Promise<void>((r) => (release = r));
    const before = handled.length;
    // A user on alice's partition (lag is reported for partitions where the group has a position).
    let user = 'carol';
    for (let i = 0; partitionFor(user, 3) !== partitionFor('alice', 3); i++) user = `carol-${i}`;
    await app.call(user, 'POST', '/api/tasks', { title: 'slow one' });
    for (let i = 0; i < 3; i++) await app.call(user, 'POST', '/api/tasks', { title: `after ${i}` });
    // The user's four events share one partition; the first blocks the three behind it.
    const stuck = await waitFor(
      async () => {
        const f = await scrape();
        return value(f, 'taskflow_consumer_lag_messages', { group: GROUP }) >= 4 ? f : undefined;
      },
      10_000,
      'lag of 4 while the handler waits',
    );
    const behind = series(stuck, 'taskflow_consumer_lag_messages', { group: GROUP }).filter(
      (s) => s.value > 0,
    );
    assert.equal(behind.length, 1, 'one partition is behind');
    assert.equal(behind[0]!.value, 4);
    release();
    await waitFor(() => handled.length === before + 4, 10_000, 'the probe to catch up');
    await waitFor(
      async () => {
        const f = await scrape();
        const lag = series(f, 'taskflow_consumer_lag_messages', { group: GROUP });
        return lag.length > 0 && lag.every((s) => s.value === 0);
      },
      10_000,
      'lag back to 0',
    );
  });

  it('counts the dead letters not replayed yet: a replay takes them off taskflow_dlq_messages', async () => {
    const [letter] = await listDeadLetters(app.proc.runtime.bus.admin, GROUP);
    assert.ok(letter, 'the poison pill of the first test waits in the DLQ');
    poisoned = false; // the cause fixed
    const { replayed } = await replayDeadLetters(app.proc.runtime.bus, GROUP);
    assert.deepEqual(
      replayed.map((d) => d.event.id),
      [letter.event.id],
    );
    await waitFor(() => handled.includes(letter.event.id), 10_000, 'the replayed letter handled');
    const m = await scrape();
    assert.equal(value(m, 'taskflow_dlq_messages', { group: GROUP }), 0);
    assert.deepEqual(await listDeadLetters(app.proc.runtime.bus.admin, GROUP), []);
    const all = await listDeadLetters(app.proc.runtime.bus.admin, GROUP, { all: true });
    assert.deepEqual(
      all.map((d) => [d.event.id, d.replayed]),
      [[letter.event.id, true]],
      'still in the topic, as replayed',
    );
  });
});
