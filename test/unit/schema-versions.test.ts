/**
 * Event schema versions: the published files match the code and each version is compatible with every one
 * before it (the check `taskflow schemas check` runs), the compatibility rules name the field and the rule,
 * a consumer built from a published version reads today's events, and events name their schema version.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Ajv } from 'ajv';
import { compatibilityProblems } from '../../src/contracts/schema-compat.ts';
import {
  PUBLISHED_DIR,
  checkPublishedSchemas,
  publishSchemas,
  readPublished,
} from '../../src/contracts/schema-versions.ts';
import { EVENT_TYPES, addFormats, publishedSchema, type EventType } from '../../src/contracts/schemas.ts';
import { taskCreated } from '../helpers/events.ts';

type Schema = Record<string, any>;
const clone = <T>(x: T): T => structuredClone(x);
const taskOf = (s: Schema) => s.properties.data.properties.task;

describe('event schema versions', () => {
  it('the repository publishes every type at its current version, each compatible with the one before', () => {
    assert.deepEqual(checkPublishedSchemas(), []);
    for (const type of Object.keys(EVENT_TYPES) as EventType[])
      assert.deepEqual(readPublished(PUBLISHED_DIR, type, EVENT_TYPES[type].version), publishedSchema(type));
  });

  it('names the field and the rule of an incompatible change, in the direction it breaks', () => {
    const v1 = publishedSchema('task.created');
    const problems = (change: (s: Schema) => void) => {
      const v2 = clone(v1) as Schema;
      change(v2);
      return compatibilityProblems(v1, v2, 'full').map((p) => `${p.direction} ${p.path}: ${p.rule}`);
    };
    // A new required field: old events do not carry it.
    assert.deepEqual(
      problems((s) => {
        taskOf(s).properties.estimate = { type: 'integer' };
        taskOf(s).required.push('estimate');
      }),
      ['backward /data/task/estimate: required by the reader, optional or absent for the writer'],
    );
    // A removed field: consumers of v1 require it.
    assert.deepEqual(
      problems((s) => {
        delete taskOf(s).properties.series_id;
        taskOf(s).required = taskOf(s).required.filter((f: string) => f !== 'series_id');
      }),
      ['forward /data/task/series_id: required by the reader, optional or absent for the writer'],
    );
    // A type change breaks both ways.
    assert.deepEqual(
      problems((s) => {
        taskOf(s).properties.version = { type: 'string' };
      }),
      [
        'backward /data/task/version: type integer is no longer accepted',
        'forward /data/task/version: type string is no longer accepted',
      ],
    );
    // A new enum value: consumers of v1 refuse events that use it.
    assert.deepEqual(
      problems((s) => {
        taskOf(s).properties.priority.enum.push('critical');
      }),
      ['forward /data/task/priority: value "critical" is no longer accepted'],
    );
    // A longer title: old consumers would refuse the long ones.
    assert.deepEqual(
      problems((s) => {
        taskOf(s).properties.title.maxLength = 1000;
      }),
      ['forward /data/task/title: maxLength lowered 1000 -> 500'],
    );
    // A keyword the check cannot judge is reported, never passed.
    assert.match(
      problems((s) => {
        taskOf(s).properties.tags = { oneOf: [{ type: 'array' }] };
      }).join('\n'),
      /does not know the keyword "oneOf"/,
    );
  });

  it('passes a compatible change: a new optional field', () => {
    const v1 = publishedSchema('task.updated');
    const v2 = clone(v1) as Schema;
    taskOf(v2).properties.estimate = { anyOf: [{ type: 'integer', minimum: 0 }, { type: 'null' }] };
    assert.deepEqual(compatibilityProblems(v1, v2, 'full'), []);
  });

  it('the check refuses a changed schema under its old version, and an incompatible one, naming the field', () => {
    const dir = mkdtempSync(join(tmpdir(), 'schemas-'));
    try {
      cpSync(PUBLISHED_DIR, dir, { recursive: true });
      // As if the code had dropped an optional envelope field since v1 was published: compatible, so the
      // check asks for a new version rather than a rewrite of v1.
      const created = readPublished(dir, 'task.created', 1) as Schema;
      created.properties.note = { type: 'string' };
      writeFileSync(join(dir, 'task.created', 'v1.json'), JSON.stringify(created));
      // As if the code had stopped requiring a field v1 consumers require.
      const deleted = readPublished(dir, 'task.deleted', 1) as Schema;
      deleted.properties.data.required.push('reason');
      deleted.properties.data.properties.reason = { type: 'string' };
      writeFileSync(join(dir, 'task.deleted', 'v1.json'), JSON.stringify(deleted));
      assert.deepEqual(checkPublishedSchemas(dir), [
        'task.created: the schema changed compatibly but is still called v1; set its version to 2 and run `taskflow schemas publish`',
        'task.deleted v1 -> (changed): /data/reason: required by the reader, optional or absent for the writer (consumers of the old version reading new events; full compatibility)',
      ]);
      // Publishing refuses while the check fails, and never rewrites a published version.
      const refused = publishSchemas(dir);
      assert.deepEqual(refused.written, []);
      assert.equal(refused.problems.length, 2);
      // A type without a published version: publish writes it.
      rmSync(join(dir, 'reminder.missed'), { recursive: true });
      writeFileSync(join(dir, 'task.created', 'v1.json'), JSON.stringify(publishedSchema('task.created')));
      writeFileSync(join(dir, 'task.deleted', 'v1.json'), JSON.stringify(publishedSchema('task.deleted')));
      assert.deepEqual(checkPublishedSchemas(dir), [
        'reminder.missed: v1 is not published yet; run `taskflow schemas publish` to publish v1',
      ]);
      assert.deepEqual(publishSchemas(dir).written, [join(dir, 'reminder.missed', 'v1.json')]);
      assert.deepEqual(checkPublishedSchemas(dir), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('checks a new version against every published version: a field removed, then re-added with another type', () => {
    // task.deleted: v1 had an optional data.reason string, v2 removed it (compatible with v1: optional), and
    // the build's v3 re-adds it as an integer (compatible with v2, which does not describe it). v1 events are
    // still on task-events and in dead-letter topics (30 days) and fail v3: the check compared neighbours only.
    const dir = mkdtempSync(join(tmpdir(), 'schemas-'));
    const entry = EVENT_TYPES['task.deleted'] as unknown as { version: number; schema: Schema };
    const saved = { version: entry.version, schema: entry.schema };
    try {
      cpSync(PUBLISHED_DIR, dir, { recursive: true });
      const base = publishedSchema('task.deleted') as Schema;
      const v1 = clone(base);
      v1.properties.data.properties.reason = { type: 'string' };
      const v2 = clone(base);
      v2.$id = 'urn:taskflow:schema:task.deleted:v2';
      writeFileSync(join(dir, 'task.deleted', 'v1.json'), `${JSON.stringify(v1, null, 2)}\n`);
      writeFileSync(join(dir, 'task.deleted', 'v2.json'), `${JSON.stringify(v2, null, 2)}\n`);
      assert.deepEqual(checkPublishedSchemas(dir), [
        'task.deleted: version 1 is older than the published v2; versions only go up',
      ]);
      const v3 = clone(entry.schema);
      v3.$id = 'urn:taskflow:schema:task.deleted:v3';
      v3.properties.data.properties.reason = { type: 'integer' };
      entry.version = 3;
      entry.schema = v3;
      const problems = checkPublishedSchemas(dir);
      assert.ok(
        problems.some((p) => p.startsWith('task.deleted v1 -> v3: /data/reason')),
        `v3 checked against v1: ${JSON.stringify(problems)}`,
      );
      assert.ok(!problems.some((p) => p.startsWith('task.deleted v2 -> v3')), 'v2 -> v3 alone is compatible');
      assert.equal(publishSchemas(dir).written.length, 0, 'not published');
      // The same history published as files: v3 is checked against v1 there too.
      writeFileSync(
        join(dir, 'task.deleted', 'v3.json'),
        `${JSON.stringify(publishedSchema('task.deleted'), null, 2)}\n`,
      );
      assert.ok(
        checkPublishedSchemas(dir).some((p) =>
          p.startsWith('task.deleted v1 -> v3 (published): /data/reason'),
        ),
      );
    } finally {
      entry.version = saved.version;
      entry.schema = saved.schema;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a consumer built from the published version reads events of today and of a compatible next version', () => {
    const ajv = new Ajv({ allErrors: true, strict: false });
    addFormats(ajv);
    const { $id: _, ...v1 } = readPublished(PUBLISHED_DIR, 'task.created', 1);
    const validate = ajv.compile(v1);
    const event = taskCreated('ada', 'rolling upgrade');
    assert.equal(validate(event), true, JSON.stringify(validate.errors));
    // What a producer on a next version with an optional field writes.
    const next = clone(event) as Schema;
    next.data.task.estimate = 3;
    next.schemaversion = '2';
    assert.equal(validate(next), true, JSON.stringify(validate.errors));
  });

  it('events name their schema and its version', () => {
    const event = taskCreated('ada', 'versioned');
    assert.equal(event.dataschema, 'urn:taskflow:schema:task.created:v1');
    assert.equal(event.schemaversion, '1');
    assert.equal(publishedSchema('task.created').$id, event.dataschema);
  });
});
