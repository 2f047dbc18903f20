/**
 * Avro on the wire (EVENT_ENCODING=avro): every event type round-trips through the record codec in Confluent
 * framing with ids from a registry (test/helpers/schema-registry.ts speaks its API); a consumer of the current
 * build reads a record written under a newer registered version; Avro without a registry is refused with a
 * reason. On a real Kafka broker: the API's events go out as Avro that an independent client (kafkajs + avsc,
 * the schema fetched by the id in the frame) decodes, and one consumer reads a topic mixing JSON and Avro.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import avsc from 'avsc';
import { Kafka, logLevel } from 'kafkajs';
import { pino } from 'pino';
import { replayDeadLetters } from '../../src/bus/dlq.ts';
import { AVRO_CONTENT_TYPE, EventCodec, JSON_CODEC, type RawRecord } from '../../src/bus/kafka/codec.ts';
import { createKafkaBus } from '../../src/bus/kafka/index.ts';
import { REPLAY_FOR_HEADER } from '../../src/bus/middleware.ts';
import { avroSubjectOf, SchemaRegistryClient } from '../../src/bus/schema-registry.ts';
import type { Subscription } from '../../src/bus/types.ts';
import { avroSchemaOf } from '../../src/contracts/avro.ts';
import { fromBinaryHeaders, makeEvent, type CloudEvent } from '../../src/contracts/cloudevent.ts';
import { dlqTopic } from '../../src/contracts/topics.ts';
import { EVENT_TYPES, eventProblems, publishedSchema, type EventType } from '../../src/contracts/schemas.ts';
import { newTask } from '../../src/domain/task.ts';
import { uuidv7 } from '../../src/ids.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp, waitFor } from '../helpers/app.ts';
import { fullExampleOf, plainFields, taskCreated } from '../helpers/events.ts';
import { startFakeRegistry, type FakeRegistry } from '../helpers/schema-registry.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

type Json = Record<string, any>;
const TYPES = Object.keys(EVENT_TYPES) as EventType[];

/** A valid event of `type` whose data has every property its schema names (one item per array). */
function fullEvent(type: EventType): CloudEvent {
  const data = fullExampleOf((publishedSchema(type) as Json).properties.data as Json);
  return makeEvent({
    type,
    source: '/taskflow/test',
    subject: 's',
    key: 'user-1',
    data,
    traceparent: `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`,
  });
}

/** What a consumer receives of an encoded record. */
const asRaw = (r: { headers: Map<string, string>; value: Buffer }): RawRecord => r;
const decoded = async (codec: EventCodec, r: RawRecord) => {
  await codec.prepareDecode([r], AbortSignal.timeout(10_000));
  return codec.decode(r, fromBinaryHeaders(r.headers).envelope);
};

describe('Avro record codec (Confluent framing, schema ids from the registry)', () => {
  let registry: FakeRegistry;
  let client: SchemaRegistryClient;
  before(async () => {
    registry = await startFakeRegistry();
    client = new SchemaRegistryClient({ url: registry.url, compatibility: 'FULL' });
  });
  after(() => registry.close());

  it('round-trips every event type: same event back, framed as magic byte 0 + the registered schema id', async () => {
    const writer = new EventCodec({ encoding: 'avro', registry: client, subjectPrefix: 'rt.' });
    const reader = new EventCodec({
      encoding: 'json',
      registry: new SchemaRegistryClient({ url: registry.url, compatibility: 'FULL' }),
    });
    const events = TYPES.map(fullEvent);
    await writer.prepareEncode(events);
    for (const event of events) {
      const record = writer.encode(event, { 'x-extra': '1' });
      assert.equal(record.headers.get('content-type'), AVRO_CONTENT_TYPE, event.type);
      assert.equal(record.headers.get('x-extra'), '1');
      assert.equal(record.value[0], 0, 'magic byte');
      const subject = avroSubjectOf(event.type as EventType, 'rt.');
      assert.equal(record.value.readInt32BE(1), registry.subjects.get(subject)![0]!.id, subject);
      assert.ok(record.value.length < Buffer.byteLength(JSON.stringify(event.data)), 'smaller than the JSON');
      assert.deepEqual(await decoded(reader, asRaw(record)), event, event.type);
    }
  });

  it('reads a record written under a newer registered version (a new optional field) as the current type', async () => {
    const v2 = structuredClone(avroSchemaOf('reminder.triggered'));
    (v2.fields as Json[]).push({ name: 'snoozed_until', type: ['null', 'string'], default: null });
    const id = await client.register(avroSubjectOf('reminder.triggered', 'up.'), JSON.stringify(v2), 'AVRO');
    const event = fullEvent('reminder.triggered');
    const body = avsc.Type.forSchema(v2 as avsc.Schema).toBuffer({
      ...(event.data as Json),
      snoozed_until: 'later',
    });
    const value = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), body]);
    value.writeInt32BE(id, 1);
    const headers = new Map(JSON_CODEC.encode(event).headers).set('content-type', AVRO_CONTENT_TYPE);
    const codec = new EventCodec({ encoding: 'json', registry: client });
    assert.deepEqual(await decoded(codec, { headers, value }), event);
  });

  it('task.created with a previous task (its schema allows one) round-trips through Avro as the same, valid event', async () => {
    const writer = new EventCodec({ encoding: 'avro', registry: client, subjectPrefix: 'prev.' });
    const reader = new EventCodec({ encoding: 'json', registry: client });
    const when = new Date('2026-03-01T12:00:00Z');
    const task = newTask(uuidv7(), 'u', plainFields('now'), when);
    const previous = newTask(task.id, 'u', plainFields('before'), when);
    const event = makeEvent({
      type: 'task.created',
      source: '/taskflow/test',
      subject: task.id,
      key: 'u',
      data: { user_id: 'u', task, previous, changes: [] },
    });
    assert.deepEqual(eventProblems(event), [], 'valid before');
    await writer.prepareEncode([event]);
    const record = writer.encode(event);
    assert.equal(record.headers.get('content-type'), AVRO_CONTENT_TYPE);
    const back = await decoded(reader, record);
    assert.deepEqual(eventProblems(back), [], 'valid after the Avro round trip');
    assert.deepEqual(back, JSON.parse(JSON.stringify(event)));
  });

  it('falls back to JSON for data Avro cannot hold (an invalid event on its way to a dead-letter topic)', async () => {
    const writer = new EventCodec({ encoding: 'avro', registry: client });
    const bad = taskCreated('u', 'x');
    (bad.data as Json).task.status = 'archived';
    await writer.prepareEncode([bad]);
    const record = writer.encode(bad);
    assert.equal(record.headers.get('content-type'), 'application/json');
    assert.deepEqual(JSON.parse(record.value.toString()), bad.data);
  });

  it('writes an event of a newer version than its own as JSON, with its new fields (a relay not upgraded yet)', async () => {
    // A newer api wrote reminder.triggered v2 (a new optional field) to the outbox; this build's relay encoded it
    // with its v1 Avro schema, which dropped the field from the event on the bus, for every consumer.
    const writer = new EventCodec({ encoding: 'avro', registry: client, subjectPrefix: 'newer.' });
    const reader = new EventCodec({ encoding: 'json', registry: client });
    const event = fullEvent('reminder.triggered');
    event.schemaversion = '2';
    event.dataschema = 'urn:taskflow:schema:reminder.triggered:v2';
    event.data = { ...(event.data as Json), snoozed_until: '2026-03-01T13:00:00.000Z' };
    await writer.prepareEncode([event]);
    const record = writer.encode(event);
    assert.equal(record.headers.get('content-type'), 'application/json');
    assert.deepEqual(await decoded(reader, record), event);
    // Its own version still goes as Avro.
    const own = fullEvent('reminder.triggered');
    assert.equal(writer.encode(own).headers.get('content-type'), AVRO_CONTENT_TYPE);
  });

  it('refuses an Avro record it cannot read, saying why: no registry, unknown id, not framed', async () => {
    const writer = new EventCodec({ encoding: 'avro', registry: client });
    const event = taskCreated('u', 'x');
    await writer.prepareEncode([event]);
    const record = asRaw(writer.encode(event));
    // Reading a topic to show it (not consuming): the record is shown as undecodable, with the reason.
    await assert.rejects(
      decoded(JSON_CODEC, record),
      /an Avro value \(schema id \d+\) and no SCHEMA_REGISTRY_URL to read it with/,
    );
    const unknown = Buffer.from(record.value!);
    unknown.writeInt32BE(999_999, 1);
    await assert.rejects(
      decoded(new EventCodec({ encoding: 'json', registry: client }), {
        headers: record.headers,
        value: unknown,
      }),
      /schema id 999999 is not in the schema registry/,
    );
    await assert.rejects(
      decoded(JSON_CODEC, { headers: record.headers, value: Buffer.from('{}') }),
      /without the Confluent framing/,
    );
    assert.throws(() => new EventCodec({ encoding: 'avro' }), /EVENT_ENCODING=avro needs a schema registry/);
  });

  it('a writer schema avsc cannot build (Confluent schema references) is final for its id, not an outage', async () => {
    // Another team's producer uses Confluent schema references: the schema GET /schemas/ids/N answers names a
    // type defined in another subject. The id is valid, its bytes never readable by this build: the record
    // is undecodable with the reason (dead-lettered), as an unknown id is; it was retried forever.
    registry.seed(
      'refs.task-events-com.other.Envelope',
      {
        type: 'record',
        name: 'Envelope',
        namespace: 'com.other',
        fields: [{ name: 'payload', type: 'com.other.Payload' }],
      },
      'AVRO',
    );
    const id = registry.subjects.get('refs.task-events-com.other.Envelope')!.at(-1)!.id;
    const value = Buffer.from([0, 0, 0, 0, 0, 1, 2, 3]);
    value.writeInt32BE(id, 1);
    const headers = new Map(JSON_CODEC.encode(taskCreated('u', 'x')).headers).set(
      'content-type',
      AVRO_CONTENT_TYPE,
    );
    const codec = new EventCodec({ encoding: 'json', registry: client });
    const started = Date.now();
    // A consumer's signal aborts only at shutdown: 8 s stands for "forever".
    await codec.prepareDecode([{ headers, value }], AbortSignal.timeout(8_000));
    assert.ok(
      Date.now() - started < 5_000,
      `waited ${Date.now() - started} ms for a schema that cannot be built`,
    );
    assert.throws(
      () => codec.decode({ headers, value }, fromBinaryHeaders(headers).envelope),
      new RegExp(`schema id ${id} cannot be read as an Avro schema: .*com\\.other\\.Payload`),
    );
    // An unreachable registry still holds the record (nothing decided) until shutdown.
    const down = new EventCodec({
      encoding: 'json',
      registry: new SchemaRegistryClient({ url: 'http://127.0.0.1:9', compatibility: 'FULL' }),
    });
    await down.prepareDecode([{ headers, value }], AbortSignal.timeout(1_000));
    assert.throws(
      () => down.decode({ headers, value }, fromBinaryHeaders(headers).envelope),
      /was not loaded/,
    );
    // So does one that answers 5xx.
    const failing = createServer((_req, res) => res.writeHead(503).end('{"error_code":50301}'));
    await new Promise<void>((resolve) => failing.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(failing.address() as AddressInfo).port}`;
      const five = new EventCodec({
        encoding: 'json',
        registry: new SchemaRegistryClient({ url, compatibility: 'FULL' }),
      });
      await five.prepareDecode([{ headers, value }], AbortSignal.timeout(1_000));
      assert.throws(
        () => five.decode({ headers, value }, fromBinaryHeaders(headers).envelope),
        /was not loaded/,
      );
    } finally {
      await new Promise((resolve) => failing.close(resolve));
    }
  });
});

const skip = kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS (scripts/test starts Kafka)';

describe('Avro on Kafka', { skip }, () => {
  let registry: FakeRegistry;
  before(async () => {
    registry = await startFakeRegistry();
  });
  after(() => registry.close());
  const prefix = () => `avro${randomBytes(3).toString('hex')}.`;

  it('the API writes Avro that an independent client decodes with the schema the frame names', async () => {
    const p = prefix();
    const db = await openDb('memory://');
    await migrate(db);
    const app = await startApp(db, {
      targets: ['api', 'relay'],
      env: {
        BUS: 'kafka',
        KAFKA_BROKERS: kafkaBrokers!,
        KAFKA_TOPIC_PREFIX: p,
        EVENT_ENCODING: 'avro',
        SCHEMA_REGISTRY_URL: registry.url,
      },
    });
    const kafka = new Kafka({
      clientId: 'independent',
      brokers: kafkaBrokers!.split(','),
      logLevel: logLevel.NOTHING,
    });
    const consumer = kafka.consumer({ groupId: `independent-${randomBytes(3).toString('hex')}` });
    try {
      const created = await app.call('indie', 'POST', '/api/tasks', { title: 'in avro', tags: ['x'] });
      assert.equal(created.status, 201);
      await waitFor(
        async () =>
          (await db.query('SELECT 1 FROM outbox WHERE published_at IS NULL LIMIT 1')).rows.length === 0,
        30_000,
        'the events relayed',
      );
      // Registered once, at start-up: the publisher uses the ids start-up got, it does not register again.
      const avroSubject = avroSubjectOf('task.created', p);
      assert.equal(
        registry.requests.filter((r) => r === `POST /subjects/${avroSubject}/versions`).length,
        1,
        'one registration of the Avro schema',
      );
      await consumer.connect();
      await consumer.subscribe({ topic: `${p}task-events`, fromBeginning: true });
      const got = await new Promise<{ headers: Record<string, string>; value: Buffer }>((resolve) => {
        void consumer.run({
          eachMessage: async ({ message }) =>
            resolve({
              headers: Object.fromEntries(
                Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)]),
              ),
              value: message.value!,
            }),
        });
      });
      assert.equal(got.headers['content-type'], 'application/avro');
      assert.equal(got.headers.ce_type, 'task.created');
      assert.equal(got.value[0], 0);
      // What any Confluent-style consumer does: the schema by the id in the frame, then the Avro binary.
      const res = await fetch(`${registry.url}/schemas/ids/${got.value.readInt32BE(1)}`);
      const { schema, schemaType } = (await res.json()) as { schema: string; schemaType: string };
      assert.equal(schemaType, 'AVRO');
      const data = avsc.Type.forSchema(JSON.parse(schema) as avsc.Schema).fromBuffer(
        got.value.subarray(5),
      ) as Json;
      assert.equal(data.task.id, created.body.id);
      assert.equal(data.task.title, 'in avro');
      assert.deepEqual(data.task.tags, ['x']);
    } finally {
      await consumer.disconnect();
      await app.stop();
      await db.close();
    }
  });

  it('a consumer without a registry waits at an Avro record (nothing dead-lettered); with one it reads on', async () => {
    const p = prefix();
    const settings = { brokers: kafkaBrokers!.split(','), clientId: 'held', topicPrefix: p };
    const client = new SchemaRegistryClient({ url: registry.url, compatibility: 'FULL' });
    const avroBus = createKafkaBus(settings, {
      log: silentLogger,
      codec: new EventCodec({ encoding: 'avro', registry: client, subjectPrefix: p }),
    });
    const errors: string[] = [];
    const log = pino(
      { level: 'error' },
      new Writable({
        write(chunk, _enc, cb) {
          errors.push(String(chunk));
          cb();
        },
      }),
    );
    const blindBus = createKafkaBus(settings, {
      log,
      retry: { maxAttempts: 1, baseDelayMs: 1, maxDelayMs: 1 },
    });
    const readerBus = createKafkaBus(settings, {
      log: silentLogger,
      codec: new EventCodec({ encoding: 'json', registry: client }),
    });
    const subs: Subscription[] = [];
    try {
      await avroBus.admin.ensureTopics([{ name: 'held', partitions: 1, retentionMs: 3_600_000 }]);
      const sent = [taskCreated('u', 'a0'), taskCreated('u', 'a1')];
      await avroBus.publisher.publish(sent.map((event) => ({ topic: 'held', key: 'u', event })));
      const blind: CloudEvent[] = [];
      const group = { group: 'held-readers', topics: ['held'] };
      subs.push(
        await blindBus.subscriber.subscribe({ ...group, handler: async (m) => void blind.push(m.event) }),
      );
      await waitFor(
        () => errors.some((e) => e.includes('no SCHEMA_REGISTRY_URL')),
        30_000,
        'the reason logged',
      );
      await subs.pop()!.close();
      assert.deepEqual(blind, [], 'nothing handled');
      assert.deepEqual(
        await readerBus.admin.read(dlqTopic('held-readers')).catch(() => []),
        [],
        'nothing dead-lettered',
      );
      const got: CloudEvent[] = [];
      subs.push(
        await readerBus.subscriber.subscribe({ ...group, handler: async (m) => void got.push(m.event) }),
      );
      await waitFor(() => got.length >= 2, 30_000, 'both events, read with the registry');
      assert.deepEqual(got, sent);
    } finally {
      for (const sub of subs) await sub.close();
      await Promise.all([avroBus.close(), blindBus.close(), readerBus.close()]);
    }
  });

  it('an Avro record whose writer schema cannot be built is dead-lettered with the reason, and the partition reads on', async () => {
    const p = prefix();
    registry.seed(
      `${p}held-com.other.Envelope`,
      {
        type: 'record',
        name: 'Envelope',
        namespace: 'com.other',
        fields: [{ name: 'payload', type: 'com.other.Payload' }], // a reference to another subject
      },
      'AVRO',
    );
    const id = registry.subjects.get(`${p}held-com.other.Envelope`)!.at(-1)!.id;
    const client = new SchemaRegistryClient({ url: registry.url, compatibility: 'FULL' });
    const bus = createKafkaBus(
      { brokers: kafkaBrokers!.split(','), clientId: 'refs', topicPrefix: p },
      {
        log: silentLogger,
        retry: { maxAttempts: 2, baseDelayMs: 5, maxDelayMs: 20 },
        codec: new EventCodec({ encoding: 'json', registry: client, subjectPrefix: p }),
      },
    );
    const kafka = new Kafka({
      clientId: 'other-team',
      brokers: kafkaBrokers!.split(','),
      logLevel: logLevel.NOTHING,
    });
    const producer = kafka.producer();
    const got: CloudEvent[] = [];
    let sub: Subscription | undefined;
    try {
      await bus.admin.ensureTopics([{ name: 'held', partitions: 1, retentionMs: 3_600_000 }]);
      await producer.connect();
      const value = Buffer.from([0, 0, 0, 0, 0, 2, 4, 6]);
      value.writeInt32BE(id, 1);
      const poison = JSON_CODEC.encode(taskCreated('u', 'poison'));
      const next = taskCreated('u', 'after the poison');
      const nextRecord = JSON_CODEC.encode(next);
      await producer.send({
        topic: `${p}held`,
        messages: [
          {
            key: 'u',
            value,
            headers: Object.fromEntries(poison.headers.set('content-type', AVRO_CONTENT_TYPE)),
          },
          { key: 'u', value: nextRecord.value, headers: Object.fromEntries(nextRecord.headers) },
        ],
      });
      sub = await bus.subscriber.subscribe({
        group: 'refs-readers',
        topics: ['held'],
        handler: async (m) => void got.push(m.event),
      });
      await waitFor(() => got.length >= 1, 20_000, 'the event after the record (the partition was held)');
      assert.deepEqual(got, [next]);
      const letters = await bus.admin.read(dlqTopic('refs-readers'));
      assert.equal(letters.length, 1);
      assert.match(
        letters[0]!.headers['x-dlq-error']!,
        new RegExp(`schema id ${id} cannot be read as an Avro schema`),
      );
    } finally {
      await sub?.close();
      await producer.disconnect();
      await bus.close();
    }
  });

  it('a consumer of an older version dead-letters a newer Avro record as it was, and replays it so: the new fields are kept', async () => {
    // v2 of reminder.triggered adds an optional field; an upgraded producer writes it, a consumer of this (v1)
    // build reads it resolved to v1 and fails. The dead letter was re-encoded from the trimmed v1 event
    // (framed with the v1 id, headers still saying v2): a replay after the upgrade had lost the field.
    const p = prefix();
    const client = new SchemaRegistryClient({ url: registry.url, compatibility: 'FULL' });
    const subject = avroSubjectOf('reminder.triggered', p);
    const v1 = avroSchemaOf('reminder.triggered');
    const v2 = structuredClone(v1);
    (v2.fields as Json[]).push({ name: 'snoozed_until', type: ['null', 'string'], default: null });
    await client.register(subject, JSON.stringify(v1), 'AVRO');
    const v2id = await client.register(subject, JSON.stringify(v2), 'AVRO');
    const event = fullEvent('reminder.triggered');
    event.schemaversion = '2';
    event.dataschema = 'urn:taskflow:schema:reminder.triggered:v2';
    const v2data = { ...(event.data as Json), snoozed_until: '2026-03-01T13:00:00.000Z' };
    const v2type = avsc.Type.forSchema(v2 as avsc.Schema);
    const value = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), v2type.toBuffer(v2data)]);
    value.writeInt32BE(v2id, 1);
    const headers = Object.fromEntries(
      new Map(JSON_CODEC.encode(event).headers).set('content-type', AVRO_CONTENT_TYPE),
    );
    const bus = createKafkaBus(
      { brokers: kafkaBrokers!.split(','), clientId: 'v1', topicPrefix: p },
      {
        log: silentLogger,
        retry: { maxAttempts: 1, baseDelayMs: 1, maxDelayMs: 1 },
        codec: new EventCodec({ encoding: 'avro', registry: client, subjectPrefix: p }),
      },
    );
    const kafka = new Kafka({
      clientId: 'v2',
      brokers: kafkaBrokers!.split(','),
      logLevel: logLevel.NOTHING,
    });
    const producer = kafka.producer();
    const reader = kafka.consumer({ groupId: `v2-${randomBytes(3).toString('hex')}` });
    const seen: CloudEvent[] = [];
    let sub: Subscription | undefined;
    try {
      await bus.admin.ensureTopics([{ name: 'reminders', partitions: 1, retentionMs: 3_600_000 }]);
      await producer.connect();
      await producer.send({ topic: `${p}reminders`, messages: [{ key: 'user-1', value, headers }] });
      sub = await bus.subscriber.subscribe({
        group: 'v1-readers',
        topics: ['reminders'],
        handler: async (m) => {
          seen.push(m.event);
          throw new Error('handler bug');
        },
      });
      await waitFor(
        async () => (await bus.admin.read(dlqTopic('v1-readers')).catch(() => [])).length > 0,
        30_000,
        'the dead letter',
      );
      // After the upgrade: a v2 reader (any Confluent-style client) reads the dead letter.
      await reader.connect();
      await reader.subscribe({ topic: `${p}${dlqTopic('v1-readers')}`, fromBeginning: true });
      const letter = await new Promise<{ headers: Record<string, string>; value: Buffer }>((resolve) => {
        void reader.run({
          eachMessage: async ({ message }) =>
            resolve({
              headers: Object.fromEntries(
                Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)]),
              ),
              value: message.value!,
            }),
        });
      });
      assert.equal((seen[0]?.data as Json).snoozed_until, undefined, 'the v1 consumer read it as v1');
      assert.equal(letter.headers['x-dlq-error'], 'Error: handler bug');
      assert.equal(letter.headers.ce_schemaversion, '2');
      assert.equal(letter.headers['content-type'], AVRO_CONTENT_TYPE);
      const { schema } = await client.schemaById(letter.value.readInt32BE(1));
      const writer = avsc.Type.forSchema(JSON.parse(schema) as avsc.Schema);
      const replayed = v2type.fromBuffer(letter.value.subarray(5), v2type.createResolver(writer)) as Json;
      assert.equal(replayed.snoozed_until, '2026-03-01T13:00:00.000Z', 'the letter keeps the v2 field');
      assert.equal(letter.value.readInt32BE(1), v2id, 'framed with the v2 schema id');

      // Replayed by the same (older) build: the record goes back as it came, not the v1 event it read (which
      // went out framed with the v1 id, without the field, under headers saying v2).
      assert.equal((await replayDeadLetters(bus, 'v1-readers')).replayed.length, 1);
      const again = (await bus.admin.read('reminders'))[1]!;
      assert.equal(again.key, 'user-1', 'the user key: per-user order');
      assert.deepEqual(again.rawValue, value, 'the bytes of the v2 producer');
      assert.equal(again.headers['content-type'], AVRO_CONTENT_TYPE);
      assert.equal(again.headers.ce_schemaversion, '2');
      assert.equal(again.headers[REPLAY_FOR_HEADER], 'v1-readers');
      assert.equal(again.headers['x-dlq-error'], undefined, 'no failure headers on the source topic');
    } finally {
      await sub?.close();
      await reader.disconnect();
      await producer.disconnect();
      await bus.close();
    }
  });

  it('an older build that writes Avro dead-letters and replays a newer JSON record as it was: the new fields are kept', async () => {
    // A topic written as JSON (a producer not on Avro yet) with v2 of reminder.triggered; the v1 build read it
    // whole, but wrote its dead letter and the replay with its v1 Avro schema, which dropped the new field.
    const p = prefix();
    const settings = { brokers: kafkaBrokers!.split(','), clientId: 'v1-json', topicPrefix: p };
    const client = new SchemaRegistryClient({ url: registry.url, compatibility: 'FULL' });
    const event = fullEvent('reminder.triggered');
    event.schemaversion = '2';
    event.dataschema = 'urn:taskflow:schema:reminder.triggered:v2';
    event.data = { ...(event.data as Json), snoozed_until: '2026-03-01T13:00:00.000Z' };
    // Writes JSON, reads either.
    const jsonBus = createKafkaBus(settings, {
      log: silentLogger,
      codec: new EventCodec({ encoding: 'json', registry: client, subjectPrefix: p }),
    });
    const v1Bus = createKafkaBus(settings, {
      log: silentLogger,
      retry: { maxAttempts: 1, baseDelayMs: 1, maxDelayMs: 1 },
      codec: new EventCodec({ encoding: 'avro', registry: client, subjectPrefix: p }),
    });
    let sub: Subscription | undefined;
    try {
      await jsonBus.admin.ensureTopics([{ name: 'reminders', partitions: 1, retentionMs: 3_600_000 }]);
      await jsonBus.publisher.publish([{ topic: 'reminders', key: 'user-1', event }]);
      sub = await v1Bus.subscriber.subscribe({
        group: 'v1-json-readers',
        topics: ['reminders'],
        handler: async () => {
          throw new Error('handler bug');
        },
      });
      await waitFor(
        async () => (await v1Bus.admin.read(dlqTopic('v1-json-readers')).catch(() => [])).length > 0,
        30_000,
        'the dead letter',
      );
      await sub.close();
      sub = undefined;
      const [letter] = await jsonBus.admin.read(dlqTopic('v1-json-readers'));
      assert.deepEqual(letter?.event, event, 'the letter is the event as written');
      assert.equal((await replayDeadLetters(v1Bus, 'v1-json-readers')).replayed.length, 1);
      const again = (await jsonBus.admin.read('reminders'))[1]!;
      assert.deepEqual(again.event, event, 'the replayed event as written');
      assert.equal(again.headers['content-type'], 'application/json');
      assert.equal(again.key, 'user-1');
    } finally {
      await sub?.close();
      await Promise.all([jsonBus.close(), v1Bus.close()]);
    }
  });

  it('one consumer reads a topic mixing JSON and Avro records, in order, as the same events', async () => {
    const p = prefix();
    const settings = { brokers: kafkaBrokers!.split(','), clientId: 'mixed', topicPrefix: p };
    const client = new SchemaRegistryClient({ url: registry.url, compatibility: 'FULL' });
    const jsonBus = createKafkaBus(settings, { log: silentLogger });
    const avroBus = createKafkaBus(settings, {
      log: silentLogger,
      codec: new EventCodec({ encoding: 'avro', registry: client, subjectPrefix: p }),
    });
    const readerBus = createKafkaBus(settings, {
      log: silentLogger,
      codec: new EventCodec({ encoding: 'json', registry: client, subjectPrefix: p }),
    });
    let sub: Subscription | undefined;
    try {
      await jsonBus.admin.ensureTopics([{ name: 'mixed', partitions: 1, retentionMs: 3_600_000 }]);
      const sent = Array.from({ length: 20 }, (_, i) => taskCreated('u', `m${i}`));
      // Producers switch from JSON to Avro and back, as during a migration: one partition, one order.
      for (let i = 0; i < sent.length; i += 5) {
        const bus = (i / 5) % 2 ? avroBus : jsonBus;
        await bus.publisher.publish(
          sent.slice(i, i + 5).map((event) => ({ topic: 'mixed', key: 'u', event })),
        );
      }
      const got: CloudEvent[] = [];
      sub = await readerBus.subscriber.subscribe({
        group: 'mixed-readers',
        topics: ['mixed'],
        handler: async (m) => void got.push(m.event),
      });
      await waitFor(() => got.length >= sent.length, 30_000, 'every record');
      assert.deepEqual(got, sent);
      // DLQ inspection and replay read topics the same way.
      assert.deepEqual(
        (await readerBus.admin.read('mixed')).map((m) => m.event),
        sent,
      );
    } finally {
      await sub?.close();
      await Promise.all([jsonBus.close(), avroBus.close(), readerBus.close()]);
    }
  });
});
