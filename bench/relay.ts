/**
 * `npm run bench:relay`: how fast the transactional-outbox relay moves events onto Kafka, next to what the
 * Kafka client alone achieves on the same broker.
 *
 * - relay: the outbox is filled with BENCH_EVENTS (default 100,000) valid `task.created` events (CloudEvents
 *   built with makeEvent around a real task, schema-validated, BENCH_USERS = 1,000 users as keys, bulk
 *   INSERT), then the real `relay` target runs via runTargets (BUS=kafka, RELAY_BATCH_SIZE) until every row
 *   is marked published. Measured on PGlite (temp dir) and PostgreSQL.
 * - raw: a @platformatic/kafka Producer with the publisher's settings (idempotent, acks=all, the same
 *   connection options and serializers) sends the same messages (same key, CloudEvents binary-mode headers
 *   and body as the relay produces, built before the clock starts) one awaited batch at a time, like the
 *   relay does. The relay's JSON bodies are PostgreSQL's print of the data (a space after each `:` and `,`:
 *   535 against 498 bytes for this event), so it sends about 4 % more bytes than the raw producer.
 *
 * Figures: events/s including start-up (producer connect, idempotent producer id, metadata) and "steady"
 * events/s (after the first batch). relay/raw is the ratio of the steady rates at the same batch size.
 * For the relay, the database statements and the publish call are timed per batch (the DB is wrapped, the
 * publisher's `publish` is wrapped; the Relay code itself is untouched), and the node CPU time is recorded.
 * After each case the broker's end offsets are checked to hold exactly BENCH_EVENTS messages.
 *
 * Encodings (BENCH_ENCODINGS, default `json,avro`): each case runs with the event data as JSON and as Avro
 * (EVENT_ENCODING=avro, Confluent framing, schema ids from the schema registry of the test suite, which speaks
 * the Confluent REST API, started in-process); the raw producer sends the same pre-encoded records. The
 * message line gives the value bytes per event of each encoding and the serial CPU of encoding one.
 *
 * Env: BENCH_EVENTS (100000), RELAY_BATCH_SIZE (500) or BENCH_BATCH_SIZES (e.g. `100,500,2000`, overrides
 * it), BENCH_USERS (1000), BENCH_REPEAT (1, rounds; the summary shows medians), BENCH_CASES (`raw,relay`),
 * BENCH_PROGRESS (10000), BENCH_CASE_TIMEOUT_S (900).
 * Kafka: `scripts/kafka start --name bench-relay` (stopped at the end if this run started it;
 * BENCH_KEEP_KAFKA=1 keeps it) or BENCH_KAFKA_BROKERS=host:port. Topics are `bench-relay-<run>-<case>.*`,
 * deleted after each case (BENCH_KEEP_TOPICS=1 keeps them).
 * PostgreSQL: `scripts/postgres start --name bench-relay --fast` (same stop rule, BENCH_KEEP_POSTGRES=1),
 * or BENCH_DATABASE_URL=postgres://...; a fresh database is created and dropped. BENCH_SKIP_POSTGRES=1 /
 * BENCH_SKIP_PGLITE=1 skip one.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Admin, ProduceAcks, Producer } from '@platformatic/kafka';
import { pino } from 'pino';
import { uuidv7 } from '../src/ids.ts';
import { EventCodec, JSON_CODEC, type EventEncoding } from '../src/bus/kafka/codec.ts';
import { connectionOptions, type KafkaSettings } from '../src/bus/kafka/index.ts';
import { PUBLISHER_SERIALIZERS } from '../src/bus/kafka/publisher.ts';
import { SchemaRegistryClient } from '../src/bus/schema-registry.ts';
import { makeEvent, toBinary, withDataJson, type CloudEvent } from '../src/contracts/cloudevent.ts';
import { startFakeRegistry } from '../test/helpers/schema-registry.ts';
import type { TaskEventData } from '../src/contracts/events.ts';
import { assertValidEvent } from '../src/contracts/schemas.ts';
import { newTask, validateCreate } from '../src/domain/task.ts';
import { loadConfig } from '../src/config.ts';
import { childTraceparent } from '../src/observability/trace.ts';
import { runTargets } from '../src/process.ts';
import type { TargetDefinition } from '../src/runtime.ts';
import { relayTarget } from '../src/services/relay/index.ts';
import { openDb, type Db } from '../src/store/db.ts';
import { migrate } from '../src/store/migrate.ts';
import {
  Timings,
  freshPgDatabase,
  load1,
  loadNote,
  log,
  busyShare,
  machineCpu,
  median,
  pidListeningOn,
  pidOfPostgres,
  startService,
  type Service,
  TimedDb,
  intEnv,
  TASK_BODY,
  treeCpu,
  v8FlagsNote,
} from './lib.ts';

const EVENTS = intEnv('BENCH_EVENTS', 100_000);
const USERS = intEnv('BENCH_USERS', 1000);
const REPEAT = intEnv('BENCH_REPEAT', 1);
const PROGRESS_EVERY = intEnv('BENCH_PROGRESS', 10_000);
const CASE_TIMEOUT_MS = intEnv('BENCH_CASE_TIMEOUT_S', 900) * 1000;
const BATCH_SIZES = (process.env.BENCH_BATCH_SIZES ?? process.env.RELAY_BATCH_SIZE ?? '500')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean)
  .map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 1) throw new Error(`invalid batch size "${s}"`);
    return n;
  });
const CASES = (process.env.BENCH_CASES ?? 'raw,relay').split(',').map((s) => s.trim());
const ENCODINGS = (process.env.BENCH_ENCODINGS ?? 'json,avro').split(',').map((s) => {
  const e = s.trim();
  if (e !== 'json' && e !== 'avro') throw new Error(`BENCH_ENCODINGS: json or avro, got "${e}"`);
  return e as EventEncoding;
});
const RUN_ID = randomBytes(3).toString('hex');
const TOPIC = 'task-events';
const PARTITIONS = 3; // the topic table of docs/architecture.md section 3 (src/contracts/topics.ts)
const SECRET = 'bench-secret-bench-secret-bench-secret-0123';

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

// ------------------------------------------------------------------------------------------------ events

interface OutboxSeed {
  key: string;
  seq: number;
  id: string;
  /** The event as JSON (what the API stores in outbox.event). */
  json: string;
}

interface RawMessage {
  key: string;
  value: Buffer;
  headers: Map<string, string>;
}

interface Workload {
  seeds: OutboxSeed[];
  events: CloudEvent[];
  sizes: { key: number; value: number; headers: number; headerCount: number; eventJson: number };
  /** Per-event CPU costs of the relay's own data handling, measured serially (µs). */
  cpu: { parse: number; toMessage: number };
}

/** What KafkaPublisher.publish does per message (src/bus/kafka/index.ts). */
function toRawMessage(event: CloudEvent): RawMessage {
  const { headers, body } = toBinary(event);
  return {
    key: event.partitionkey!,
    value: Buffer.from(body),
    headers: new Map(Object.entries({ ...headers })),
  };
}

function buildWorkload(): Workload {
  const started = performance.now();
  const parsed = validateCreate(TASK_BODY, { timezone: 'UTC' });
  if (!parsed.ok) throw new Error('bench task body is invalid');
  const users = Array.from({ length: USERS }, (_, i) => `bench-user-${String(i + 1).padStart(4, '0')}`);
  const seqs = new Map<string, number>();
  const seeds: OutboxSeed[] = [];
  const events: CloudEvent[] = [];
  const sizes = { key: 0, value: 0, headers: 0, headerCount: 0, eventJson: 0 };
  const base = Date.parse('2026-03-01T12:00:00Z');
  for (let i = 0; i < EVENTS; i++) {
    const user = users[i % USERS]!;
    const now = new Date(base + i);
    const task = newTask(uuidv7(), user, { ...parsed.value, title: `${parsed.value.title} #${i + 1}` }, now);
    const event = makeEvent<TaskEventData>({
      type: 'task.created',
      source: '/taskflow/api',
      subject: task.id,
      key: user,
      time: now,
      traceparent: childTraceparent(),
      extensions: { clientip: '127.0.0.1', useragent: 'taskflow-bench/1.0 (relay)' },
      data: { user_id: user, task, previous: null, changes: [] },
    });
    assertValidEvent(event);
    const seq = (seqs.get(user) ?? 0) + 1;
    seqs.set(user, seq);
    const json = JSON.stringify(event);
    seeds.push({ key: user, seq, id: event.id, json });
    events.push(event);
    const m = toRawMessage(event);
    sizes.key += Buffer.byteLength(m.key);
    sizes.value += m.value.length;
    sizes.eventJson += Buffer.byteLength(json);
    sizes.headerCount += m.headers.size;
    for (const [k, v] of m.headers) sizes.headers += Buffer.byteLength(k) + Buffer.byteLength(v);
    if ((i + 1) % PROGRESS_EVERY === 0) log(`built ${fmt(i + 1)} / ${fmt(EVENTS)} events`);
  }
  for (const k of Object.keys(sizes) as (keyof typeof sizes)[]) sizes[k] /= EVENTS;
  log(
    `built ${fmt(EVENTS)} valid task.created events in ${((performance.now() - started) / 1000).toFixed(1)}s`,
  );

  // What the relay does per row besides SQL and the network: the driver's JSON.parse of the event's
  // attributes (the outbox row's `event - 'data'`), then the publisher's encode of the event whose data is
  // the row's JSON text (withDataJson: headers, the text as the value). Serial, single-threaded.
  const sample = events.slice(0, Math.min(EVENTS, 20_000)).map(({ data, ...envelope }) => ({
    envelope: JSON.stringify(envelope),
    data: JSON.stringify(data),
  }));
  const extra = { 'taskflow-relay': 'bench' };
  const cpu = { parse: 0, toMessage: 0 };
  // Twice, the second pass counted: the relay runs this code hot.
  for (let pass = 0; pass < 2; pass++) {
    let t = performance.now();
    const envelopes = sample.map((s) => JSON.parse(s.envelope) as Omit<CloudEvent, 'data'>);
    cpu.parse = ((performance.now() - t) * 1000) / sample.length;
    t = performance.now();
    for (let i = 0; i < sample.length; i++)
      JSON_CODEC.encode(withDataJson(envelopes[i]!, sample[i]!.data), extra);
    cpu.toMessage = ((performance.now() - t) * 1000) / sample.length;
  }
  return { seeds, events, sizes, cpu };
}

interface Encoded {
  raw: RawMessage[];
  /** Mean record value bytes per event. */
  valueBytes: number;
  /** Serial CPU of the publisher's encode per event (µs). */
  encodeUs: number;
}

/** The workload's records as the publisher writes them in `encoding` (KafkaPublisher: codec.encode). */
async function encodeWorkload(w: Workload, codec: EventCodec): Promise<Encoded> {
  await codec.prepareEncode(w.events.slice(0, 1));
  const sample = w.events.slice(0, Math.min(w.events.length, 20_000));
  const t = performance.now();
  for (const e of sample) codec.encode(e);
  const encodeUs = ((performance.now() - t) * 1000) / sample.length;
  let bytes = 0;
  const raw = w.events.map((e) => {
    const { headers, value } = codec.encode(e);
    bytes += value.length;
    return { key: e.partitionkey!, value, headers };
  });
  return { raw, valueBytes: bytes / w.events.length, encodeUs };
}

// ------------------------------------------------------------------------------------------------ database

const TEMPLATE = 'bench_relay_outbox_template';

/** Bulk-loads the events once into a template table; each relay case copies it into a fresh outbox. */
async function loadTemplate(name: string, db: Db, seeds: readonly OutboxSeed[]): Promise<number> {
  await migrate(db);
  await db.exec(`DROP TABLE IF EXISTS ${TEMPLATE};
    CREATE TABLE ${TEMPLATE} (id bigserial PRIMARY KEY, topic text NOT NULL, key text NOT NULL,
      stream_seq bigint NOT NULL, event_id text NOT NULL, event_type text NOT NULL, event jsonb NOT NULL)`);
  const started = performance.now();
  const chunk = 1000;
  for (let i = 0; i < seeds.length; i += chunk) {
    const json = `[${seeds
      .slice(i, i + chunk)
      .map(
        (s, j) =>
          `{"n":${i + j},"topic":"${TOPIC}","key":${JSON.stringify(s.key)},"stream_seq":${s.seq},"event_id":"${s.id}","event_type":"task.created","event":${s.json}}`,
      )
      .join(',')}]`;
    await db.query(
      `INSERT INTO ${TEMPLATE} (topic, key, stream_seq, event_id, event_type, event)
       SELECT x.topic, x.key, x.stream_seq, x.event_id, x.event_type, x.event
         FROM jsonb_to_recordset($1::jsonb)
           AS x(n bigint, topic text, key text, stream_seq bigint, event_id text, event_type text, event jsonb)
        ORDER BY x.n`,
      [json],
    );
    if ((i + chunk) % PROGRESS_EVERY === 0 || i + chunk >= seeds.length)
      log(`${name}: loaded ${fmt(Math.min(i + chunk, seeds.length))} / ${fmt(seeds.length)} events`);
  }
  const seconds = (performance.now() - started) / 1000;
  log(`${name}: bulk load ${fmt(seeds.length / seconds)} rows/s`);
  return seeds.length / seconds;
}

/** A fresh outbox holding the template's events (all pending), like a backlog after a broker outage. */
async function refillOutbox(db: Db): Promise<void> {
  await db.exec(`TRUNCATE outbox RESTART IDENTITY;
    DELETE FROM leases WHERE name = 'relay';
    INSERT INTO outbox (topic, key, stream_seq, event_id, event_type, event)
      SELECT topic, key, stream_seq, event_id, event_type, event FROM ${TEMPLATE} ORDER BY id;
    INSERT INTO event_streams (stream_key, last_seq)
      SELECT key, max(stream_seq) FROM ${TEMPLATE} GROUP BY key
      ON CONFLICT (stream_key) DO UPDATE SET last_seq = excluded.last_seq;
    ANALYZE outbox`);
}

/** How many row ids a mark's first parameter holds: a `{1,2,3}` literal (bigintArrayParam). */
const idsIn = (literal: string): number => (literal === '{}' ? 0 : literal.split(',').length);

/** Statements timed by kind (bench/lib.ts); counts the rows the relay marks published (progress). */
class MarkCountingDb extends TimedDb {
  constructor(
    inner: Db,
    timings: Timings,
    private readonly onMarked: (n: number) => void,
  ) {
    super(inner, timings);
  }
  protected override observe(sql: string, params: readonly unknown[] | undefined) {
    if (/^\s*WITH marked AS \(\s*DELETE FROM outbox/.test(sql)) this.onMarked(idsIn(params?.[0] as string));
  }
}

// ------------------------------------------------------------------------------------------------ kafka

async function withAdmin<T>(s: KafkaSettings, fn: (a: Admin) => Promise<T>): Promise<T> {
  const admin = new Admin(connectionOptions(s));
  try {
    return await fn(admin);
  } finally {
    await admin.close().catch(() => undefined);
  }
}

const createTopic = (s: KafkaSettings, name: string) =>
  withAdmin(s, (a) => a.createTopics({ topics: [name], partitions: PARTITIONS, replicas: 1 }));

/** Messages on a fresh topic = the sum of its partitions' end offsets (no transactions, no markers). */
const messagesOn = (s: KafkaSettings, name: string) =>
  withAdmin(s, async (a) => {
    const meta = await a.metadata({ topics: [name] });
    const count = meta.topics.get(name)?.partitionsCount ?? 0;
    const res = await a.listOffsets({
      topics: [
        {
          name,
          partitions: Array.from({ length: count }, (_, p) => ({ partitionIndex: p, timestamp: -1n })),
        },
      ],
    });
    let total = 0n;
    for (const t of res) for (const p of t.partitions) total += p.offset;
    return Number(total);
  });

async function dropTopics(s: KafkaSettings, names: string[]): Promise<void> {
  if (process.env.BENCH_KEEP_TOPICS === '1') return;
  await withAdmin(s, (a) => a.deleteTopics({ topics: names })).catch((err: unknown) =>
    log(`could not delete topics ${names.join(', ')}: ${err instanceof Error ? err.message : String(err)}`),
  );
}

// ------------------------------------------------------------------------------------------------ cases

interface Result {
  round: number;
  database: string;
  encoding: EventEncoding;
  case: 'raw' | 'relay';
  batch: number;
  events: number;
  onTopic: number;
  seconds: number;
  /** Events/s including start-up (connect, producer id, metadata). */
  rate: number;
  /** Events/s after the first batch was acknowledged. */
  steady: number;
  cpuSeconds: number;
  /** CPU seconds of the broker's and PostgreSQL's processes over the case (NaN when not on this machine). */
  brokerCpuSeconds: number;
  postgresCpuSeconds: number;
  /** Share of the machine's CPU time that was busy over the case. */
  machineBusy: number;
  load: number;
  /** Relay only: per-statement timings. */
  timings?: Map<string, { count: number; totalMs: number }>;
  batches?: number;
}

/** Progress lines every BENCH_PROGRESS events; resolves `done` when `target` events are counted. */
function tracker(label: string, target: number, t0 = performance.now()) {
  let count = 0;
  let next = PROGRESS_EVERY;
  let first: { at: number; count: number } | undefined;
  let resolve!: (at: number) => void;
  const done = new Promise<number>((r) => (resolve = r));
  return {
    done,
    get first() {
      return first;
    },
    /** Restarts the clock of the "so far" rates. */
    start(at: number) {
      t0 = at;
    },
    add(n: number) {
      const now = performance.now();
      count += n;
      first ??= { at: now, count };
      while (count >= next) {
        log(`${label}: ${fmt(next)} / ${fmt(target)} (${fmt(count / ((now - t0) / 1000))} ev/s so far)`);
        next += PROGRESS_EVERY;
      }
      if (count >= target) resolve(now);
    },
  };
}

function timeout(ms: number, what: string): { promise: Promise<never>; cancel(): void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms / 1000}s`)), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/** The broker's and PostgreSQL's processes on this machine (set in main), whose CPU each case reports. */
const others: { brokerPid?: number; postgresPid?: number } = {};

/** CPU so far of this process, the broker, PostgreSQL and the machine: a case reports the difference. */
function cpuMark() {
  return {
    node: process.cpuUsage(),
    broker: treeCpu(others.brokerPid),
    postgres: treeCpu(others.postgresPid),
    machine: machineCpu(),
  };
}

function finish(
  base: Omit<
    Result,
    'seconds' | 'rate' | 'steady' | 'cpuSeconds' | 'brokerCpuSeconds' | 'postgresCpuSeconds' | 'machineBusy'
  >,
  t0: number,
  tEnd: number,
  first: { at: number; count: number } | undefined,
  mark: ReturnType<typeof cpuMark>,
  usesPostgres: boolean,
): Result {
  const seconds = (tEnd - t0) / 1000;
  const steadySeconds = first ? (tEnd - first.at) / 1000 : NaN;
  const cpu = process.cpuUsage(mark.node);
  const machine = machineCpu();
  return {
    ...base,
    seconds,
    rate: base.events / seconds,
    steady: first && steadySeconds > 0 ? (base.events - first.count) / steadySeconds : NaN,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    brokerCpuSeconds: treeCpu(others.brokerPid) - mark.broker,
    postgresCpuSeconds: usesPostgres ? treeCpu(others.postgresPid) - mark.postgres : NaN,
    machineBusy: busyShare(mark.machine, machine),
  };
}

async function rawCase(
  kafka: KafkaSettings,
  encoded: Encoded,
  encoding: EventEncoding,
  batch: number,
  round: number,
): Promise<Result> {
  const topic = `bench-relay-${RUN_ID}-r${round}-raw-${encoding}-b${batch}.${TOPIC}`;
  await createTopic(kafka, topic);
  const messages = encoded.raw.map((m) => ({ ...m, topic }));
  const label = `raw producer ${encoding} b=${batch}`;
  log(`${label}: sending ${fmt(EVENTS)} messages to ${topic} (${loadNote()})`);
  const load = load1();
  const producer = new Producer<string, Buffer, string, string>({
    ...connectionOptions(kafka),
    idempotent: true,
    acks: ProduceAcks.ALL,
    serializers: PUBLISHER_SERIALIZERS,
  });
  try {
    const mark = cpuMark();
    const t0 = performance.now();
    const progress = tracker(label, EVENTS, t0);
    for (let i = 0; i < messages.length; i += batch) {
      const slice = messages.slice(i, i + batch);
      await producer.send({ messages: slice });
      progress.add(slice.length);
    }
    const tEnd = await progress.done;
    const result = finish(
      { round, database: '-', encoding, case: 'raw', batch, events: EVENTS, onTopic: 0, load },
      t0,
      tEnd,
      progress.first,
      mark,
      false,
    );
    return { ...result, onTopic: await messagesOn(kafka, topic) };
  } finally {
    await producer.close().catch(() => undefined);
    await dropTopics(kafka, [topic]);
  }
}

async function relayCase(
  database: string,
  db: Db,
  kafka: KafkaSettings,
  encoding: EventEncoding,
  registryUrl: string | undefined,
  batch: number,
  round: number,
): Promise<Result> {
  const prefix = `bench-relay-${RUN_ID}-r${round}-${database.toLowerCase()}-${encoding}-b${batch}.`;
  await createTopic(kafka, prefix + TOPIC);
  await refillOutbox(db);
  const label = `relay ${database} ${encoding} b=${batch}`;
  log(`${label}: ${fmt(EVENTS)} pending outbox rows -> ${prefix}${TOPIC} (${loadNote()})`);
  const load = load1();
  const timings = new Timings();
  const progress = tracker(label, EVENTS);
  let batches = 0;
  const timedDb = new MarkCountingDb(db, timings, (n) => {
    batches++;
    progress.add(n);
  });
  // The real relay target, with the publisher's publish() timed (wrapped before the relay starts).
  const target: TargetDefinition = {
    ...relayTarget,
    async start(rt) {
      const publisher = rt.bus.publisher;
      const publish = publisher.publish.bind(publisher);
      publisher.publish = async (messages) => {
        const t = performance.now();
        try {
          return await publish(messages);
        } finally {
          timings.add('publish: toBinary + Kafka send (acks=all)', performance.now() - t);
        }
      };
      return relayTarget.start(rt);
    },
  };
  const config = loadConfig({
    DATABASE_URL: db.url,
    JWT_SECRET: SECRET,
    BUS: 'kafka',
    KAFKA_BROKERS: kafka.brokers.join(','),
    KAFKA_CLIENT_ID: 'taskflow-bench-relay',
    KAFKA_TOPIC_PREFIX: prefix,
    KAFKA_ENSURE_TOPICS: 'false', // created above; the publisher still checks its topics once
    RELAY_BATCH_SIZE: String(batch),
    ...(encoding === 'avro' ? { EVENT_ENCODING: 'avro', SCHEMA_REGISTRY_URL: registryUrl! } : {}),
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'warn',
  });
  const logger = pino({ level: 'warn', base: { bench: label } }, pino.destination(2));
  const mark = cpuMark();
  const t0 = performance.now();
  progress.start(t0);
  const guard = timeout(CASE_TIMEOUT_MS, label);
  const proc = await runTargets(config, [target], { db: timedDb, log: logger, listen: false });
  let result: Result;
  try {
    const tEnd = await Promise.race([progress.done, guard.promise]);
    const base = {
      round,
      database,
      encoding,
      case: 'relay' as const,
      batch,
      events: EVENTS,
      onTopic: 0,
      load,
    };
    result = finish(base, t0, tEnd, progress.first, mark, database === 'PostgreSQL');
  } finally {
    guard.cancel();
    await proc.stop();
  }
  const pending = await db.query<{ n: string }>(
    'SELECT count(*)::text AS n FROM outbox WHERE published_at IS NULL',
  );
  if (Number(pending.rows[0]!.n) !== 0) log(`${label}: WARNING ${pending.rows[0]!.n} rows still pending`);
  const onTopic = await messagesOn(kafka, prefix + TOPIC);
  await dropTopics(kafka, [prefix + TOPIC]);
  return {
    ...result,
    onTopic,
    timings: new Map(timings.entries),
    batches,
  };
}

// ------------------------------------------------------------------------------------------------ output

const cpuCell = (s: number) => (Number.isFinite(s) ? s.toFixed(1) : '-');

/** Node, broker and PostgreSQL CPU per event (µs; PGlite runs in Node, the raw producer uses no database). */
const perEvent = (r: Result) => {
  if (!Number.isFinite(r.brokerCpuSeconds)) return '-';
  const db = Number.isFinite(r.postgresCpuSeconds) ? r.postgresCpuSeconds : 0;
  return ((1e6 * (r.cpuSeconds + r.brokerCpuSeconds + db)) / r.events).toFixed(0);
};

function resultTable(results: Result[]): string {
  const lines = [
    '| round | database | encoding | case | batch | events | on topic | seconds | events/s (incl. start) | events/s (steady) | relay/raw (steady) | node CPU s | broker CPU s | PostgreSQL CPU s | CPU µs/event (all three) | machine busy | load avg |',
    '|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    const raw = results.find(
      (x) => x.case === 'raw' && x.batch === r.batch && x.round === r.round && x.encoding === r.encoding,
    );
    const ratio = r.case === 'relay' && raw ? `${(r.steady / raw.steady).toFixed(2)}x` : '';
    lines.push(
      `| ${r.round} | ${r.database} | ${r.encoding} | ${r.case === 'raw' ? 'raw Producer' : 'Relay (runTargets)'} | ${r.batch} | ${fmt(r.events)} | ${fmt(r.onTopic)} | ${r.seconds.toFixed(2)} | ${fmt(r.rate)} | ${fmt(r.steady)} | ${ratio} | ${r.cpuSeconds.toFixed(1)} | ${cpuCell(r.brokerCpuSeconds)} | ${cpuCell(r.postgresCpuSeconds)} | ${perEvent(r)} | ${(100 * r.machineBusy).toFixed(0)} % | ${r.load.toFixed(1)} |`,
    );
  }
  return lines.join('\n');
}

function summaryTable(results: Result[]): string {
  const lines = [
    `| database | encoding | case | batch | median events/s (steady) over ${REPEAT} rounds | min | max | relay/raw (medians) |`,
    '|---|---|---|---:|---:|---:|---:|---:|',
  ];
  const keys = [
    ...new Set(results.map((r) => `${r.case}\u0000${r.database}\u0000${r.encoding}\u0000${r.batch}`)),
  ];
  const rates = (c: string, d: string, e: string, b: number) =>
    results
      .filter((r) => r.case === c && r.database === d && r.encoding === e && r.batch === b)
      .map((r) => r.steady);
  for (const k of keys) {
    const [c, d, e, b] = k.split('\u0000') as [string, string, string, string];
    const all = rates(c, d, e, Number(b));
    const m = median(all);
    const raw = median(rates('raw', '-', e, Number(b)));
    lines.push(
      `| ${d} | ${e} | ${c} | ${b} | ${fmt(m)} | ${fmt(Math.min(...all))} | ${fmt(Math.max(...all))} | ${c === 'relay' && raw ? `${(m / raw).toFixed(2)}x` : ''} |`,
    );
  }
  return lines.join('\n');
}

function breakdownTable(results: Result[]): string {
  const relay = results.filter((r) => r.case === 'relay' && r.timings);
  if (relay.length === 0) return '';
  const labels = [
    'relay: lease UPSERT',
    'relay: pending outbox SELECT',
    'publish: toBinary + Kafka send (acks=all)',
    'relay: mark published DELETE',
    'relay: mark published + next pending SELECT',
    'relay: outbox stats count(*)',
  ];
  const lines = [
    `| database | encoding | batch | round | ${labels.join(' | ')} | rest (start-up, JS) |`,
    `|---|---|---:|---:|${labels.map(() => '---:').join('|')}|---:|`,
  ];
  for (const r of relay) {
    const wallMs = r.seconds * 1000;
    let accounted = 0;
    const cells = labels.map((l) => {
      const e = r.timings!.get(l);
      if (!e) return '-';
      accounted += e.totalMs;
      return `${(e.totalMs / e.count).toFixed(2)} ms (${((100 * e.totalMs) / wallMs).toFixed(0)}%)`;
    });
    const rest = wallMs - accounted;
    lines.push(
      `| ${r.database} | ${r.encoding} | ${r.batch} | ${r.round} | ${cells.join(' | ')} | ${(rest / 1000).toFixed(2)} s (${((100 * rest) / wallMs).toFixed(0)}%) |`,
    );
  }
  return lines.join('\n');
}

// ------------------------------------------------------------------------------------------------ main

async function main() {
  const started = Date.now();
  const cpu = cpus();
  log(
    `Node ${process.version}, ${cpu.length} CPUs (${cpu[0]?.model.trim() ?? 'unknown'}), ${fmt(EVENTS)} events, ` +
      `${USERS} users, batch sizes ${BATCH_SIZES.join('/')}, ${REPEAT} round(s), ${loadNote()}; ${v8FlagsNote()}`,
  );
  const services: Service[] = [];
  const cleanups: (() => Promise<void> | void)[] = [];
  const cleanup = async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
    cleanups.length = 0;
    for (const s of services.reverse()) s.stop();
    services.length = 0;
  };
  process.once('SIGINT', () => {
    log('interrupted; cleaning up');
    void cleanup().finally(() => process.exit(130));
  });
  try {
    let brokers = process.env.BENCH_KAFKA_BROKERS;
    if (!brokers) {
      const k = startService({
        script: 'kafka',
        name: 'bench-relay',
        envKey: 'KAFKA_BROKERS',
        keep: process.env.BENCH_KEEP_KAFKA === '1',
      });
      if (!k) throw new Error('Kafka is required (scripts/kafka start --name bench-relay failed)');
      services.push(k);
      brokers = k.value;
    }
    const kafka: KafkaSettings = { brokers: brokers.split(','), clientId: 'taskflow-bench-raw' };
    const brokerPid = pidListeningOn(brokers);
    if (brokerPid) others.brokerPid = brokerPid;
    log(`Kafka at ${brokers}`);

    const w = buildWorkload();
    const databases: { name: string; db: Db; loadRate: number }[] = [];
    if (CASES.includes('relay')) {
      if (process.env.BENCH_SKIP_PGLITE === '1') log('PGlite skipped (BENCH_SKIP_PGLITE=1)');
      else {
        const dir = mkdtempSync(join(tmpdir(), 'taskflow-bench-relay-'));
        cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
        const db = await openDb(dir);
        cleanups.push(() => db.close());
        databases.push({ name: 'PGlite', db, loadRate: await loadTemplate('PGlite', db, w.seeds) });
      }
      if (process.env.BENCH_SKIP_POSTGRES === '1') log('PostgreSQL skipped (BENCH_SKIP_POSTGRES=1)');
      else {
        let url = process.env.BENCH_DATABASE_URL;
        if (!url) {
          const p = startService({
            script: 'postgres',
            name: 'bench-relay',
            args: ['--fast', '--ignore-env'],
            envKey: 'DATABASE_URL',
            keep: process.env.BENCH_KEEP_POSTGRES === '1',
          });
          if (p) {
            services.push(p);
            url = p.value;
          }
        }
        if (url) {
          const postgresPid = await pidOfPostgres(url);
          if (postgresPid) others.postgresPid = postgresPid;
          const fresh = await freshPgDatabase(url, 'tf_bench_relay');
          cleanups.push(() => fresh.drop());
          const db = await openDb(fresh.url);
          cleanups.push(() => db.close());
          databases.push({ name: 'PostgreSQL', db, loadRate: await loadTemplate('PostgreSQL', db, w.seeds) });
        }
      }
    }

    let registryUrl: string | undefined;
    const encoded = new Map<EventEncoding, Encoded>();
    for (const encoding of ENCODINGS) {
      if (encoding === 'avro' && !registryUrl) {
        const registry = await startFakeRegistry();
        cleanups.push(() => registry.close());
        registryUrl = registry.url;
      }
      const registry = registryUrl
        ? new SchemaRegistryClient({ url: registryUrl, compatibility: 'FULL' })
        : undefined;
      encoded.set(encoding, await encodeWorkload(w, new EventCodec({ encoding, registry })));
    }

    const results: Result[] = [];
    for (let round = 1; round <= REPEAT; round++)
      for (const batch of BATCH_SIZES)
        for (const encoding of ENCODINGS) {
          if (CASES.includes('raw'))
            results.push(await rawCase(kafka, encoded.get(encoding)!, encoding, batch, round));
          if (CASES.includes('relay'))
            for (const d of databases)
              results.push(await relayCase(d.name, d.db, kafka, encoding, registryUrl, batch, round));
          const last = results.filter(
            (r) => r.round === round && r.batch === batch && r.encoding === encoding,
          );
          for (const r of last)
            log(
              `${r.case} ${r.database} ${encoding} b=${batch}: ${fmt(r.steady)} ev/s steady, ${fmt(r.rate)} ev/s incl. start-up, ${fmt(r.onTopic)} on topic`,
            );
        }

    const s = w.sizes;
    console.log(
      `\nRelay: outbox -> Kafka — Node ${process.version}, ${cpu.length} CPUs, ${new Date().toISOString().slice(0, 10)}, ` +
        `${fmt(EVENTS)} task.created events, ${USERS} keys, ${PARTITIONS} partitions, idempotent + acks=all, ` +
        `one broker (scripts/kafka, Kafka 3.9.1, on the same machine); ${v8FlagsNote()}\n`,
    );
    const values = [...encoded]
      .map(([e, x]) => `${e} ${x.valueBytes.toFixed(0)} B (encoded in ${x.encodeUs.toFixed(1)} µs)`)
      .join(', ');
    console.log(
      `Message: key ${s.key.toFixed(0)} B, value (CloudEvents binary-mode data) ${values}, ` +
        `${s.headerCount.toFixed(0)} headers ${s.headers.toFixed(0)} B; outbox.event JSON ${s.eventJson.toFixed(0)} B.\n`,
    );
    console.log(resultTable(results));
    if (REPEAT > 1) console.log(`\n${summaryTable(results)}`);
    const breakdown = breakdownTable(results);
    if (breakdown)
      console.log(
        `\nRelay time per batch (mean per call, share of the case's wall time; statements run one after another):\n\n${breakdown}`,
      );
    console.log(
      `\nSerial CPU per event in the relay's own code: JSON.parse of the event's attributes ${w.cpu.parse.toFixed(1)} µs, ` +
        `encode (headers, the data's JSON text as the value) ${w.cpu.toMessage.toFixed(1)} µs.`,
    );
    for (const d of databases) console.log(`Outbox bulk load (${d.name}): ${fmt(d.loadRate)} rows/s.`);
    console.log(`Machine at the end: ${loadNote()} (2 cores shared with other work).`);
    log(`done in ${((Date.now() - started) / 1000).toFixed(0)}s`);
  } finally {
    await cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
