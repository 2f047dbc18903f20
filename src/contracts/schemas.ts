/**
 * JSON Schemas (draft-07) of every event type of docs/architecture.md section 3. Producers validate before writing,
 * consumers validate on read. Each type's schema has a version; every version is published under
 * `schemas/events/<type>/v<N>.json` and a change must be compatible with the last published version as the
 * type declares (`compatibility`, checked by `taskflow schemas check` and the test suite; see the README on
 * evolving an event). Events name their schema and version in `dataschema` and `schemaversion`.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import * as formatsModule from 'ajv-formats';
import type { Compatibility } from './schema-compat.ts';

/** What this module reads of an event (a CloudEvent; `cloudevent.ts` builds them with the versions here). */
interface TypedEvent {
  type: string;
  partitionkey?: string | undefined;
}

/** The `dataschema` of events of `type` written under `version` of its schema. */
export const dataschemaFor = (type: string, version: number) => `urn:taskflow:schema:${type}:v${version}`;

/** An instant as events and answers carry it (ISO 8601, UTC); the HTTP answers' documents use it too. */
export const instant = { type: 'string', format: 'date-time' } as const;
export const nullableInstant = { anyOf: [instant, { type: 'null' }] } as const;

export const taskSchema = {
  $id: 'urn:taskflow:schema:task:v1',
  type: 'object',
  required: [
    'id',
    'user_id',
    'title',
    'description',
    'status',
    'priority',
    'tags',
    'due_date',
    'reminders',
    'recurrence',
    'series_id',
    'created_at',
    'updated_at',
    'completed_at',
    'version',
  ],
  properties: {
    id: { type: 'string', format: 'uuid' },
    user_id: { type: 'string', minLength: 1 },
    title: { type: 'string', minLength: 1, maxLength: 500 },
    description: { type: 'string', maxLength: 10000 },
    status: { enum: ['pending', 'completed'] },
    priority: { enum: ['none', 'low', 'medium', 'high', 'urgent'] },
    tags: { type: 'array', maxItems: 20, items: { type: 'string', minLength: 1, maxLength: 50 } },
    due_date: nullableInstant,
    reminders: { anyOf: [{ type: 'array', items: { type: 'string' }, maxItems: 10 }, { type: 'null' }] },
    recurrence: {
      anyOf: [
        {
          type: 'object',
          required: ['rrule', 'mode', 'timezone'],
          properties: {
            rrule: { type: 'string', minLength: 1 },
            mode: { enum: ['schedule', 'after_completion'] },
            timezone: { type: 'string', minLength: 1 },
            preset: { type: 'string' },
          },
        },
        { type: 'null' },
      ],
    },
    series_id: { anyOf: [{ type: 'string', format: 'uuid' }, { type: 'null' }] },
    created_at: instant,
    updated_at: instant,
    completed_at: nullableInstant,
    version: { type: 'integer', minimum: 1 },
  },
} as const;

const envelope = (type: string, data: object, version = 1) => ({
  $id: dataschemaFor(type, version),
  type: 'object',
  required: ['specversion', 'id', 'source', 'type', 'time', 'data'],
  properties: {
    specversion: { const: '1.0' },
    id: { type: 'string', minLength: 1 },
    source: { type: 'string', minLength: 1 },
    type: { const: type },
    subject: { type: 'string' },
    time: instant,
    datacontenttype: { const: 'application/json' },
    dataschema: { type: 'string' },
    schemaversion: { type: 'string' },
    traceparent: { type: 'string', pattern: '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$' },
    partitionkey: { type: 'string' },
    data,
  },
});

const taskEventData = (previousRequired: boolean) => ({
  type: 'object',
  required: ['user_id', 'task', 'changes', ...(previousRequired ? ['previous'] : [])],
  properties: {
    user_id: { type: 'string', minLength: 1 },
    task: { $ref: 'urn:taskflow:schema:task:v1' },
    previous: previousRequired
      ? { $ref: 'urn:taskflow:schema:task:v1' }
      : { anyOf: [{ $ref: 'urn:taskflow:schema:task:v1' }, { type: 'null' }] },
    changes: { type: 'array', items: { type: 'string' } },
  },
});

export const REMINDER_CHANNELS = ['email', 'push', 'in_app', 'webhook'] as const;

const reminderData = {
  type: 'object',
  required: ['reminder_id', 'task_id', 'user_id', 'title', 'due_at', 'remind_at', 'channels'],
  properties: {
    reminder_id: { type: 'string', minLength: 1 },
    task_id: { type: 'string', format: 'uuid' },
    user_id: { type: 'string', minLength: 1 },
    title: { type: 'string' },
    due_at: nullableInstant,
    remind_at: instant,
    channels: { type: 'array', items: { enum: REMINDER_CHANNELS } },
    reason: { type: 'string' },
    triggered_at: instant,
  },
};

const taskChangedData = {
  type: 'object',
  required: ['task_id', 'user_id', 'change_type', 'task', 'sequence'],
  properties: {
    task_id: { type: 'string', format: 'uuid' },
    user_id: { type: 'string', minLength: 1 },
    change_type: { enum: ['created', 'updated', 'completed', 'reopened', 'deleted'] },
    task: { $ref: 'urn:taskflow:schema:task:v1' },
    changes: { type: 'array', items: { type: 'string' } },
    sequence: { type: 'integer', minimum: 1 },
  },
};

/** An in-app notification: in `notification.created` and as the notification routes answer it. */
export const inAppNotificationSchema = {
  type: 'object',
  required: ['id', 'reminder_id', 'task_id', 'title', 'body', 'due_at', 'remind_at', 'created_at', 'read_at'],
  properties: {
    id: { type: 'string', format: 'uuid' },
    reminder_id: { type: 'string', minLength: 1 },
    task_id: { type: 'string', format: 'uuid' },
    title: { type: 'string' },
    body: { type: 'string' },
    due_at: nullableInstant,
    remind_at: instant,
    created_at: instant,
    read_at: nullableInstant,
  },
};

const notificationCreatedData = {
  type: 'object',
  required: ['user_id', 'notification'],
  properties: {
    user_id: { type: 'string', minLength: 1 },
    notification: inAppNotificationSchema,
  },
};

/**
 * Every type is read by consumers of other targets, which upgrade at their own pace: a new version must be
 * readable by consumers of the last one (forward) and read events written under it (backward).
 */
const FULL: Compatibility = 'full';

export const EVENT_TYPES = {
  'task.created': {
    topic: 'task-events',
    version: 1,
    compatibility: FULL,
    schema: envelope('task.created', taskEventData(false)),
  },
  'task.updated': {
    topic: 'task-events',
    version: 1,
    compatibility: FULL,
    schema: envelope('task.updated', taskEventData(true)),
  },
  'task.completed': {
    topic: 'task-events',
    version: 1,
    compatibility: FULL,
    schema: envelope('task.completed', taskEventData(true)),
  },
  'task.reopened': {
    topic: 'task-events',
    version: 1,
    compatibility: FULL,
    schema: envelope('task.reopened', taskEventData(true)),
  },
  'task.deleted': {
    topic: 'task-events',
    version: 1,
    compatibility: FULL,
    schema: envelope('task.deleted', taskEventData(true)),
  },
  'reminder.scheduled': {
    topic: 'reminders',
    version: 1,
    compatibility: FULL,
    schema: envelope('reminder.scheduled', reminderData),
  },
  'reminder.triggered': {
    topic: 'reminders',
    version: 1,
    compatibility: FULL,
    schema: envelope('reminder.triggered', reminderData),
  },
  'reminder.dismissed': {
    topic: 'reminders',
    version: 1,
    compatibility: FULL,
    schema: envelope('reminder.dismissed', reminderData),
  },
  'reminder.missed': {
    topic: 'reminders',
    version: 1,
    compatibility: FULL,
    schema: envelope('reminder.missed', reminderData),
  },
  'task.changed': {
    topic: 'task-updates',
    version: 1,
    compatibility: FULL,
    schema: envelope('task.changed', taskChangedData),
    keySequenced: true,
  },
  'notification.created': {
    topic: 'task-updates',
    version: 1,
    compatibility: FULL,
    schema: envelope('notification.created', notificationCreatedData),
  },
} as const;
export type EventType = keyof typeof EVENT_TYPES;
export const isEventType = (t: string): t is EventType => Object.hasOwn(EVENT_TYPES, t);

// ajv-formats is CommonJS; depending on the loader its function arrives as `default` or `default.default`.
type AddFormats = (ajv: Ajv) => Ajv;
const formats = formatsModule as unknown as { default: AddFormats | { default: AddFormats } };
/** ajv-formats' plugin function, whichever way the loader delivers it (also for validators in the tests). */
export const addFormats: AddFormats =
  typeof formats.default === 'function' ? formats.default : formats.default.default;
// Each event type's validator is compiled when the first event of that type is checked: compiling all of them
// took about a second of every start-up (and every CLI command), most of it for types a process never sees.
let ajv: Ajv | undefined;
const validators = new Map<string, ValidateFunction>();
function validatorOf(type: EventType): ValidateFunction {
  let validate = validators.get(type);
  if (!validate) {
    if (!ajv) {
      ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
      addFormats(ajv);
      ajv.addSchema(taskSchema);
    }
    validate = ajv.compile(EVENT_TYPES[type].schema);
    validators.set(type, validate);
  }
  return validate;
}

export class EventValidationError extends Error {
  constructor(
    readonly eventType: string,
    readonly errors: string[],
  ) {
    super(`invalid ${eventType} event: ${errors.join('; ')}`);
    this.name = 'EventValidationError';
  }
}

const describe = (errors: ErrorObject[] | null | undefined) =>
  (errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`);

/** Returns the problems of an event (empty when valid). Unknown types are a problem too. */
export function eventProblems(event: unknown): string[] {
  const type = (event as { type?: unknown } | null)?.type;
  if (typeof type !== 'string') return ['/type is missing'];
  if (!isEventType(type)) return [`unknown event type ${type}`];
  const validate = validatorOf(type);
  return validate(event) ? [] : describe(validate.errors);
}

export function assertValidEvent(event: TypedEvent): void {
  const problems = eventProblems(event);
  if (problems.length) throw new EventValidationError(event.type, problems);
}

/**
 * Whether events of `type` carry a `data.sequence` that the event sink assigns in the statement writing
 * them: 1, 2, 3... per partition key and type, without gaps, in commit order (`keySequenceStream`).
 */
export function isKeySequenced(type: string): boolean {
  return isEventType(type) && 'keySequenced' in EVENT_TYPES[type];
}

/** The `event_streams` row that numbers a key-sequenced event. */
export const keySequenceStream = (type: string, key: string) => `${type}/${key}`;

/**
 * The `event_streams` row an outbox write of an event that is not key-sequenced takes for its key (the row
 * lock that orders a key's transactions). It starts with '/', which no `type/key` row does (a type is never
 * empty): named by the bare key, a user whose id is `task.changed/alice` counted in alice's task.changed.
 */
export const keyLockStream = (key: string) => `/${key}`;

/** The stream that numbers `event` when its type is key-sequenced, else undefined. */
export const sequenceStreamOf = (event: TypedEvent): string | undefined =>
  isKeySequenced(event.type) && event.partitionkey
    ? keySequenceStream(event.type, event.partitionkey)
    : undefined;

/** SQL: the jsonb event `value` with its `data.sequence` set to the SQL expression `sequence`. */
export const numberedSql = (value: string, sequence: string) =>
  `jsonb_set(${value}, '{data,sequence}', to_jsonb(${sequence}))`;

/** The current version of `type`'s schema. */
export const schemaVersionOf = (type: EventType): number => EVENT_TYPES[type].version;

/**
 * `type`'s schema as published: standalone, the task schema written out where it is referenced (a consumer
 * elsewhere, a registry or a code generator needs no other file).
 */
export function publishedSchema(type: EventType): Record<string, unknown> {
  const { $id: _, ...task } = taskSchema;
  const inline = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(inline);
    if (node === null || typeof node !== 'object') return node;
    if ((node as { $ref?: unknown }).$ref === taskSchema.$id) return inline(task);
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, inline(v)]));
  };
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    ...(inline(EVENT_TYPES[type].schema) as object),
  };
}

export function topicOf(type: EventType): string {
  return EVENT_TYPES[type].topic;
}
