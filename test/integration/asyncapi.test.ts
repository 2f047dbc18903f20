/**
 * /asyncapi.json: the event contract as an AsyncAPI 3.1 document, built from the topic table, the versioned
 * schemas and the subscriptions the code runs on, valid for the AsyncAPI parser, with examples that validate.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Parser } from '@asyncapi/parser';
import { Ajv } from 'ajv';
import avsc from 'avsc';
import { AVRO_CONTENT_TYPE, EventCodec } from '../../src/bus/kafka/codec.ts';
import { SchemaRegistryClient } from '../../src/bus/schema-registry.ts';
import { avroSchemaOf } from '../../src/contracts/avro.ts';
import type { CloudEvent } from '../../src/contracts/cloudevent.ts';
import { EVENT_TYPES, addFormats, publishedSchema, type EventType } from '../../src/contracts/schemas.ts';
import { DLQ_SPEC, TOPIC_SPECS, dlqTopic } from '../../src/contracts/topics.ts';
import { MANIFESTS } from '../../src/services/index.ts';

/** What each target consumes, from its manifest. */
const SUBSCRIPTIONS = Object.fromEntries(
  MANIFESTS.flatMap((m) => (m.consumes ? [[m.name, m.consumes]] : [])),
);
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp, type TestApp } from '../helpers/app.ts';
import { startFakeRegistry, type FakeRegistry } from '../helpers/schema-registry.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

type Json = Record<string, any>;

describe('AsyncAPI document', () => {
  let db: Db;
  let app: TestApp;
  let doc: Json;
  before(async () => {
    db = await openDb('memory://');
    await migrate(db);
    app = await startApp(db, { targets: ['api'] });
    const res = await fetch(`${app.url}/asyncapi.json`);
    assert.equal(res.status, 200);
    doc = (await res.json()) as Json;
  });
  after(async () => {
    await app.stop();
    await db.close();
  });

  it('is a valid AsyncAPI 3.1 document for the AsyncAPI parser, without errors or warnings', async () => {
    const { document, diagnostics } = await new Parser().parse(JSON.stringify(doc));
    // Severity 0 is an error, 1 a warning.
    assert.deepEqual(
      diagnostics.filter((d) => d.severity <= 1).map((d) => `${d.path.join('/')}: ${d.message}`),
      [],
    );
    assert.ok(document);
    assert.equal(doc.asyncapi, '3.1.0');
    assert.equal(
      document.channels().length,
      TOPIC_SPECS.length + Object.values(SUBSCRIPTIONS).filter((s) => s.deadLetters).length,
    );
  });

  it('has every topic with its partitions, retention and key, and every dead-letter topic', () => {
    for (const t of TOPIC_SPECS) {
      const kafka = doc.channels[t.name].bindings.kafka;
      assert.equal(kafka.partitions, t.partitions, t.name);
      assert.equal(kafka.topicConfiguration['retention.ms'], t.retentionMs, t.name);
    }
    for (const s of Object.values(SUBSCRIPTIONS).filter((x) => x.deadLetters))
      assert.equal(doc.channels[dlqTopic(s.group)].bindings.kafka.partitions, DLQ_SPEC.partitions);
    for (const m of Object.values(doc.components.messages) as Json[])
      assert.equal(m.bindings.kafka.key.type, 'string');
  });

  it('has every event type with its published schema and an example that validates against it', () => {
    const ajv = new Ajv({ allErrors: true, strict: false });
    addFormats(ajv);
    for (const type of Object.keys(EVENT_TYPES) as EventType[]) {
      const message = doc.components.messages[type];
      assert.deepEqual(message.payload, (publishedSchema(type).properties as Json).data, type);
      assert.match(message.summary, new RegExp(`schema version ${EVENT_TYPES[type].version}`));
      const validate = ajv.compile(message.payload);
      assert.equal(
        validate(message.examples[0].payload),
        true,
        `${type}: ${JSON.stringify(validate.errors)}`,
      );
      const headers = ajv.compile(message.headers);
      assert.equal(
        headers(message.examples[0].headers),
        true,
        `${type} headers: ${JSON.stringify(headers.errors)}`,
      );
      assert.ok(
        Object.values(doc.channels[EVENT_TYPES[type].topic].messages).some(
          (r) => (r as Json).$ref === `#/components/messages/${type}`,
        ),
        `${type} on its topic`,
      );
    }
  });

  it('names the consumer group of every subscription', () => {
    for (const [target, s] of Object.entries(SUBSCRIPTIONS))
      for (const topic of s.topics) {
        const op = doc.operations[`${target}-receives-${topic}`];
        assert.equal(op.action, 'receive');
        assert.equal(op.bindings.kafka.groupId.const, s.perInstance ? `${s.group}-<instance>` : s.group);
      }
  });
});

describe(
  'AsyncAPI document of an EVENT_ENCODING=avro deployment',
  { skip: kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS' },
  () => {
    // It said content-type application/json and a JSON Schema payload while the process wrote Avro in Confluent
    // framing with content-type application/avro.
    let registry: FakeRegistry;
    let db: Db;
    let app: TestApp;
    let doc: Json;
    before(async () => {
      registry = await startFakeRegistry();
      db = await openDb('memory://');
      await migrate(db);
      app = await startApp(db, {
        targets: ['api'],
        env: {
          BUS: 'kafka',
          KAFKA_BROKERS: kafkaBrokers!,
          KAFKA_TOPIC_PREFIX: 'asyncapiavro.',
          EVENT_ENCODING: 'avro',
          SCHEMA_REGISTRY_URL: registry.url,
        },
      });
      doc = (await (await fetch(`${app.url}/asyncapi.json`)).json()) as Json;
    });
    after(async () => {
      await app?.stop();
      await db?.close();
      await registry?.close();
    });

    it('is valid for the AsyncAPI parser and describes each message as Avro, with its Avro schema and a valid example', async () => {
      const { document, diagnostics } = await new Parser().parse(JSON.stringify(doc));
      assert.deepEqual(
        diagnostics.filter((d) => d.severity <= 1).map((d) => `${d.path.join('/')}: ${d.message}`),
        [],
      );
      assert.ok(document);
      assert.equal(doc.defaultContentType, AVRO_CONTENT_TYPE);
      for (const type of Object.keys(EVENT_TYPES) as EventType[]) {
        const message = doc.components.messages[type];
        assert.equal(message.contentType, AVRO_CONTENT_TYPE, type);
        assert.match(
          message.payload.schemaFormat,
          /^application\/vnd\.apache\.avro\+json;version=1\.\d+\.\d+$/,
        );
        assert.deepEqual(message.payload.schema, avroSchemaOf(type), type);
        assert.match(message.description, new RegExp(`subject asyncapiavro\\.[a-z-]+-taskflow\\.events\\.`));
        const avro = avsc.Type.forSchema(message.payload.schema as avsc.Schema);
        assert.ok(
          avro.isValid(message.examples[0].payload),
          `${type}: the example is an Avro datum of the schema`,
        );
      }
    });

    it('the headers and payload it states match the records the process writes', async () => {
      const message = doc.components.messages['task.created'];
      const created = await app.call('u', 'POST', '/api/tasks', { title: 'x' });
      assert.equal(created.status, 201);
      const row = await db.query<{ value: string }>(
        `SELECT event::text AS value FROM outbox ORDER BY id LIMIT 1`,
      );
      const event = JSON.parse(row.rows[0]!.value) as CloudEvent;
      // What the process's publisher writes (its codec, the registry it registered with).
      const client = new SchemaRegistryClient({ url: registry.url, compatibility: 'FULL' });
      const codec = new EventCodec({ encoding: 'avro', registry: client, subjectPrefix: 'asyncapiavro.' });
      await codec.prepareEncode([event]);
      const record = codec.encode(event);
      assert.equal(record.headers.get('content-type'), message.contentType);
      const ajv = new Ajv({ strict: false });
      addFormats(ajv);
      assert.ok(
        ajv.validate(message.headers, Object.fromEntries(record.headers)),
        JSON.stringify(ajv.errors),
      );
      // The value after the Confluent frame is the Avro binary of the stated schema.
      assert.equal(record.value[0], 0);
      const data = avsc.Type.forSchema(message.payload.schema as avsc.Schema).fromBuffer(
        record.value.subarray(5),
      ) as Json;
      assert.equal(data.task.title, 'x');
    });
  },
);
