/**
 * The Avro schemas generated from the event JSON Schemas (src/contracts/avro.ts): every event type's data
 * round-trips through avsc to the same JSON, with every optional field present and with none; a reader of
 * one schema version reads data written under the next and the last (the schemas' `full` compatibility
 * carried to Avro); a JSON Schema construct with no Avro mapping is refused by name.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import avsc from 'avsc';
import { avroFullName, avroSchemaOf, jsonDataOf } from '../../src/contracts/avro.ts';
import { exampleOf } from '../../src/contracts/asyncapi.ts';
import { makeEvent } from '../../src/contracts/cloudevent.ts';
import { EVENT_TYPES, eventProblems, publishedSchema, type EventType } from '../../src/contracts/schemas.ts';
import { newTask } from '../../src/domain/task.ts';
import { uuidv7 } from '../../src/ids.ts';
import { fullExampleOf, plainFields } from '../helpers/events.ts';

type Json = Record<string, any>;
const TYPES = Object.keys(EVENT_TYPES) as EventType[];
const dataSchema = (type: EventType) => (publishedSchema(type) as Json).properties.data as Json;

const eventWith = (type: EventType, data: unknown) =>
  makeEvent({ type, source: 'test', key: 'user-1', data });

describe('Avro schemas of the events', () => {
  for (const type of TYPES) {
    it(`${type}: data round-trips to the same JSON, with every optional field and with none`, () => {
      const avro = avsc.Type.forSchema(avroSchemaOf(type) as avsc.Schema);
      assert.equal(avro.name, avroFullName(type));
      for (const data of [exampleOf(dataSchema(type)), fullExampleOf(dataSchema(type))]) {
        assert.deepEqual(eventProblems(eventWith(type, data)), [], 'the example is a valid event');
        const back = jsonDataOf(type, avro.fromBuffer(avro.toBuffer(data)));
        // The one optional field JSON Schema lets be null too reads back as null when absent (Avro has one
        // "nothing"); Taskflow always writes it, as null.
        const absentPrevious = type === 'task.created' && !('previous' in (data as Json));
        assert.deepEqual(back, absentPrevious ? { ...(data as Json), previous: null } : data);
        assert.deepEqual(eventProblems(eventWith(type, back)), []);
      }
    });
  }

  it('a task created has previous: null, kept as null (an optional field JSON Schema allows to be null)', () => {
    const avro = avsc.Type.forSchema(avroSchemaOf('task.created') as avsc.Schema);
    const data = { ...(fullExampleOf(dataSchema('task.created')) as Json), previous: null };
    assert.deepEqual(jsonDataOf('task.created', avro.fromBuffer(avro.toBuffer(data))), data);
  });

  it('a task created whose previous is a task (its schema allows one) comes back the same, and valid', () => {
    // jsonDataOf resolved the task $ref before unwrapping previous's anyOf [task, null]: the previous task's
    // null fields (due_date, recurrence...) were dropped as absent optional ones, and the event was invalid.
    const avro = avsc.Type.forSchema(avroSchemaOf('task.created') as avsc.Schema);
    const when = new Date('2026-03-01T12:00:00Z');
    const task = newTask(uuidv7(), 'u', plainFields('now'), when);
    const previous = newTask(task.id, 'u', plainFields('before'), when);
    const data = { user_id: 'u', task, previous, changes: [] };
    assert.deepEqual(eventProblems(eventWith('task.created', data)), [], 'valid before');
    const back = jsonDataOf('task.created', avro.fromBuffer(avro.toBuffer(data)));
    assert.deepEqual(back, JSON.parse(JSON.stringify(data)));
    assert.deepEqual(eventProblems(eventWith('task.created', back)), [], 'valid after');
  });

  it('maps optional fields to [null, X] with a null default and the task to one named record', () => {
    const schema = avroSchemaOf('task.updated');
    assert.equal(schema.namespace, 'taskflow.events');
    const fields = schema.fields as Json[];
    assert.deepEqual(
      fields.map((f) => f.name),
      ['user_id', 'task', 'previous', 'changes'],
    );
    assert.equal(fields[1]!.type.name, 'Task', 'the first use defines the record');
    assert.equal(fields[2]!.type, 'Task', 'the second names it');
    const created = avroSchemaOf('task.created').fields as Json[];
    assert.deepEqual(created[2], { name: 'previous', type: ['null', 'Task'], default: null });
    const task = fields[1]!.type as Json;
    const status = (task.fields as Json[]).find((f) => f.name === 'status')!;
    assert.deepEqual(status.type, { type: 'enum', name: 'TaskStatus', symbols: ['pending', 'completed'] });
    const preset = (
      (task.fields as Json[]).find((f) => f.name === 'recurrence')!.type[1].fields as Json[]
    ).find((f) => f.name === 'preset');
    assert.deepEqual(preset, { name: 'preset', type: ['null', 'string'], default: null });
  });

  it('a reader of one version reads data of the next (a new optional field) and the next reads the last', () => {
    const v1 = avroSchemaOf('reminder.scheduled');
    const v2 = structuredClone(v1);
    (v2.fields as Json[]).push({ name: 'snoozed_until', type: ['null', 'string'], default: null });
    const t1 = avsc.Type.forSchema(v1 as avsc.Schema);
    const t2 = avsc.Type.forSchema(v2 as avsc.Schema);
    const data = fullExampleOf(dataSchema('reminder.scheduled')) as Json;
    const written2 = t2.toBuffer({ ...data, snoozed_until: '2026-12-04T10:00:00.000Z' });
    assert.deepEqual(jsonDataOf('reminder.scheduled', t1.fromBuffer(written2, t1.createResolver(t2))), data);
    const read2 = t2.fromBuffer(t1.toBuffer(data), t2.createResolver(t1)) as Json;
    assert.equal(read2.snoozed_until, null);
    // A new required field (no default) cannot be read from old data: the registry's check refuses it.
    const v3 = structuredClone(v1);
    (v3.fields as Json[]).push({ name: 'reason_code', type: 'string' });
    assert.throws(() => avsc.Type.forSchema(v3 as avsc.Schema).createResolver(t1), /reason_code/);
  });

  it('every generated schema parses, and none defines a name twice', () => {
    for (const type of TYPES) {
      const text = JSON.stringify(avroSchemaOf(type));
      assert.doesNotThrow(() => avsc.Type.forSchema(JSON.parse(text) as avsc.Schema), type);
    }
  });
});
