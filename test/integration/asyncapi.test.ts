/**
 * /asyncapi.json: the event contract as an AsyncAPI 3.1 document, built from the topic table, the versioned
 * schemas and the subscriptions the code runs on, valid for the AsyncAPI parser, with examples that validate.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Parser } from '@asyncapi/parser';
import { Ajv } from 'ajv';
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
