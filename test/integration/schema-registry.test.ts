/**
 * Start-up with SCHEMA_REGISTRY_URL: every event schema is registered under `<prefix><topic>-<type>` with the
 * configured compatibility; a restart registers nothing new; a schema the registry finds incompatible, or
 * wrong credentials, stop the start with one line; schemas are looked up by id once. Against a server
 * speaking the Confluent Schema Registry API (test/helpers/schema-registry.ts).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { avroSubjectOf, SchemaRegistryClient, subjectOf } from '../../src/bus/schema-registry.ts';
import { avroSchemaOf } from '../../src/contracts/avro.ts';
import { EVENT_TYPES, publishedSchema, type EventType } from '../../src/contracts/schemas.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp } from '../helpers/app.ts';
import { startFakeRegistry, type FakeRegistry } from '../helpers/schema-registry.ts';

const AUTH = { username: 'taskflow', password: 's3cret' };
const TYPES = Object.keys(EVENT_TYPES) as EventType[];

describe('schema registry at start-up', () => {
  let db: Db;
  let registry: FakeRegistry;
  before(async () => {
    db = await openDb('memory://');
    await migrate(db);
    registry = await startFakeRegistry(AUTH);
  });
  after(async () => {
    await registry.close();
    await db.close();
  });
  const env = (extra: Record<string, string> = {}) => ({
    SCHEMA_REGISTRY_URL: registry.url,
    SCHEMA_REGISTRY_USERNAME: AUTH.username,
    SCHEMA_REGISTRY_PASSWORD: AUTH.password,
    KAFKA_TOPIC_PREFIX: 'acme.',
    ...extra,
  });

  it('registers every event schema under its subject with the configured compatibility, once', async () => {
    const app = await startApp(db, { targets: ['api'], env: env() });
    await app.stop();
    assert.deepEqual([...registry.subjects.keys()].sort(), TYPES.map((t) => subjectOf(t, 'acme.')).sort());
    for (const t of TYPES) {
      const versions = registry.subjects.get(`acme.${EVENT_TYPES[t].topic}-${t}`)!;
      assert.equal(versions.length, 1, t);
      assert.deepEqual(JSON.parse(versions[0]!.schema), publishedSchema(t));
      assert.equal(versions[0]!.schemaType, 'JSON');
      assert.equal(registry.config.get(subjectOf(t, 'acme.')), 'FULL');
    }
    // A restart finds them registered: same versions, nothing new, one lookup per event type.
    const seen = registry.requests.length;
    const again = await startApp(db, { targets: ['api'], env: env() });
    await again.stop();
    for (const t of TYPES) assert.equal(registry.subjects.get(subjectOf(t, 'acme.'))!.length, 1);
    assert.deepEqual(
      registry.requests.slice(seen).sort(),
      TYPES.map((t) => `POST /subjects/${subjectOf(t, 'acme.')}`).sort(),
    );
  });

  it('refuses to start on a schema the registry finds incompatible, naming the subject and the field', async () => {
    // Another producer registered a version whose readers need a field the current schema does not require.
    const older = structuredClone(publishedSchema('task.deleted')) as Record<string, any>;
    older.properties.data.required.push('reason');
    older.properties.data.properties.reason = { type: 'string' };
    registry.seed('other.task-events-task.deleted', older);
    await assert.rejects(
      startApp(db, { targets: ['api'], env: env({ KAFKA_TOPIC_PREFIX: 'other.' }) }),
      (err: Error) => {
        assert.equal(err.name, 'ConfigError');
        assert.match(
          err.message,
          /^the schema registry refuses task\.deleted v1 under subject other\.task-events-task\.deleted \(FULL\): \/data\/reason: required by the reader/,
        );
        return true;
      },
    );
    assert.equal(registry.subjects.get('other.task-events-task.deleted')!.length, 1, 'nothing registered');
  });

  // Avro is written by the Kafka transport only; the broker is never contacted by an API alone here.
  const avro = (extra: Record<string, string> = {}) =>
    env({
      BUS: 'kafka',
      KAFKA_BROKERS: '127.0.0.1:9',
      KAFKA_ENSURE_TOPICS: 'false',
      EVENT_ENCODING: 'avro',
      ...extra,
    });

  it('with EVENT_ENCODING=avro registers the Avro schema of each type too, under <topic>-<record full name>', async () => {
    const app = await startApp(db, { targets: ['api'], env: avro({ KAFKA_TOPIC_PREFIX: 'avro.' }) });
    await app.stop();
    for (const t of TYPES) {
      const versions = registry.subjects.get(avroSubjectOf(t, 'avro.'))!;
      assert.equal(versions.length, 1, t);
      assert.equal(versions[0]!.schemaType, 'AVRO');
      assert.deepEqual(JSON.parse(versions[0]!.schema), avroSchemaOf(t));
      assert.equal(
        registry.subjects.get(subjectOf(t, 'avro.'))![0]!.schemaType,
        'JSON',
        'and its JSON Schema',
      );
    }
    assert.equal(avroSubjectOf('task.created', 'avro.'), 'avro.task-events-taskflow.events.TaskCreated');
  });

  it('refuses to start on an Avro schema the registry finds incompatible, naming the subject and the field', async () => {
    // Another producer's version has a field without a default that the current schema lacks: not readable.
    const older = structuredClone(avroSchemaOf('reminder.missed')) as Record<string, any>;
    older.fields.push({ name: 'missed_by_ms', type: 'long' });
    const subject = avroSubjectOf('reminder.missed', 'avro2.');
    registry.seed(subject, older, 'AVRO');
    await assert.rejects(
      startApp(db, { targets: ['api'], env: avro({ KAFKA_TOPIC_PREFIX: 'avro2.' }) }),
      (err: Error) => {
        assert.equal(err.name, 'ConfigError');
        assert.match(
          err.message,
          /^the schema registry refuses reminder\.missed v1 \(Avro\) under subject avro2\.reminders-taskflow\.events\.ReminderMissed \(FULL\): .*missed_by_ms/,
        );
        return true;
      },
    );
    assert.equal(registry.subjects.get(subject)!.length, 1, 'nothing registered');
  });

  it('refuses EVENT_ENCODING=avro without a registry or off Kafka, in one line', async () => {
    const { SCHEMA_REGISTRY_URL: _, ...noRegistry } = avro();
    await assert.rejects(
      startApp(db, { targets: ['api'], env: noRegistry }),
      /^ConfigError: EVENT_ENCODING=avro needs SCHEMA_REGISTRY_URL/,
    );
    await assert.rejects(
      startApp(db, { targets: ['api'], env: avro({ BUS: 'embedded' }) }),
      /EVENT_ENCODING=avro is for BUS=kafka/,
    );
    await assert.rejects(
      startApp(db, { targets: ['api'], env: avro({ EVENT_ENCODING: 'protobuf' }) }),
      /EVENT_ENCODING must be json or avro, got "protobuf"/,
    );
  });

  it('refuses to start with wrong credentials or a bad compatibility level, in one line', async () => {
    await assert.rejects(
      startApp(db, { targets: ['api'], env: env({ SCHEMA_REGISTRY_PASSWORD: 'wrong' }) }),
      /schema registry POST \/subjects\/acme\.[a-z-]+-[a-z.]+: 401 Unauthorized$/,
    );
    await assert.rejects(
      startApp(db, { targets: ['api'], env: env({ SCHEMA_REGISTRY_COMPATIBILITY: 'SOMETIMES' }) }),
      /SCHEMA_REGISTRY_COMPATIBILITY must be one of BACKWARD, .*NONE, got "SOMETIMES"/,
    );
  });

  it('looks a schema up by id once', async () => {
    const client = new SchemaRegistryClient({ url: registry.url, ...AUTH, compatibility: 'FULL' });
    const id = await client.register('lookup-task.created', JSON.stringify(publishedSchema('task.created')));
    const before = registry.requests.filter((r) => r === `GET /schemas/ids/${id}`).length;
    const [a, b] = await Promise.all([client.schemaById(id), client.schemaById(id)]);
    assert.deepEqual(JSON.parse(a.schema), publishedSchema('task.created'));
    assert.equal(b, a);
    await client.schemaById(id);
    assert.equal(registry.requests.filter((r) => r === `GET /schemas/ids/${id}`).length - before, 1);
  });
});
