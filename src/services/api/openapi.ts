/** OpenAPI fragments for the route schemas (documentation; validation is the domain's). */
import { taskSchema } from '../../contracts/schemas.ts';

const { $id: _id, ...taskShape } = taskSchema;
export const taskDoc = { ...taskShape, additionalProperties: false } as const;

export const taskInputDoc = {
  type: 'object',
  additionalProperties: false,
  properties: {
    title: { type: 'string', minLength: 1, maxLength: 500 },
    description: { type: 'string', maxLength: 10000 },
    status: { type: 'string', enum: ['pending', 'completed'] },
    priority: { type: 'string', enum: ['none', 'low', 'medium', 'high', 'urgent'] },
    tags: { type: 'array', maxItems: 20, items: { type: 'string', minLength: 1, maxLength: 50 } },
    due_date: { type: ['string', 'null'], format: 'date-time' },
    reminders: {
      type: ['array', 'null'],
      items: { type: 'string' },
      description: 'Offsets before due (ISO 8601 durations: PT1H, P1D) or instants; null = your default',
    },
    recurrence: {
      description:
        'A preset (daily, weekdays, weekly, monthly, yearly) or {rrule|preset, interval, mode, timezone, until, count}',
      oneOf: [
        { type: 'string', enum: ['daily', 'weekdays', 'weekly', 'monthly', 'yearly'] },
        {
          type: 'object',
          properties: {
            rrule: { type: 'string', example: 'FREQ=MONTHLY;BYMONTHDAY=-1' },
            preset: { type: 'string' },
            interval: { type: 'integer', minimum: 1 },
            mode: { type: 'string', enum: ['schedule', 'after_completion'] },
            timezone: { type: 'string', example: 'Europe/Berlin' },
            until: { type: 'string', format: 'date-time' },
            count: { type: 'integer', minimum: 1 },
          },
        },
        { type: 'null' },
      ],
    },
  },
} as const;

export const listQueryDoc = {
  type: 'object',
  properties: {
    status: { type: 'string', enum: ['pending', 'completed', 'all'] },
    priority: { type: 'string', description: 'comma-separated priorities' },
    tag: { type: 'string', description: 'comma-separated tags (case-insensitive)' },
    tag_mode: { type: 'string', enum: ['any', 'all'] },
    due_before: { type: 'string', format: 'date-time' },
    due_after: { type: 'string', format: 'date-time' },
    overdue: { type: 'boolean' },
    due: {
      type: 'string',
      enum: ['today', 'tomorrow', 'week'],
      description:
        "due today, tomorrow, or in the 7 days from today, in the user's time zone (PUT /api/me/settings)",
    },
    q: { type: 'string', description: 'full-text search over title and description' },
    sort: { type: 'string', enum: ['due', 'priority', 'created', 'updated', 'title'] },
    order: { type: 'string', enum: ['asc', 'desc'] },
    limit: { type: 'integer', minimum: 1, maximum: 200 },
    cursor: { type: 'string' },
  },
} as const;

/** The list query of the Phase II/III route: this API's, plus the names those clients send. */
export const compatListQueryDoc = {
  type: 'object',
  properties: {
    ...listQueryDoc.properties,
    search: { type: 'string', description: 'the same as q' },
    tags: {
      type: 'string',
      description: 'comma-separated tags, every one must match (tag with tag_mode=all)',
    },
  },
} as const;

export const settingsInputDoc = {
  type: 'object',
  additionalProperties: false,
  properties: {
    timezone: { type: 'string', description: 'an IANA time zone', example: 'Europe/Berlin' },
    default_reminders: {
      type: 'array',
      maxItems: 10,
      items: { type: 'string', description: 'a positive ISO 8601 duration', example: 'PT1H' },
    },
  },
} as const;
