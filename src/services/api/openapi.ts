/** OpenAPI fragments for the route schemas (documentation; validation is the domain's). */
import { taskSchema } from '../../contracts/schemas.ts';

const { $id: _id, ...taskShape } = taskSchema;
export const taskDoc = { ...taskShape, additionalProperties: false } as const;

/** Text the API stores: no NUL character (PostgreSQL refuses it). */
const TEXT = '^[^\\u0000]*$';
/** Text with something besides white space, and no NUL. */
const NON_BLANK = '^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$';

export const taskInputDoc = {
  type: 'object',
  additionalProperties: false,
  properties: {
    title: { type: 'string', minLength: 1, maxLength: 500, pattern: NON_BLANK },
    description: { type: ['string', 'null'], maxLength: 10000, pattern: TEXT },
    status: { type: 'string', enum: ['pending', 'completed'] },
    priority: { type: 'string', enum: ['none', 'low', 'medium', 'high', 'urgent'] },
    tags: {
      type: 'array',
      maxItems: 20,
      uniqueItems: true,
      description: 'unique ignoring case',
      items: { type: 'string', minLength: 1, maxLength: 50, pattern: NON_BLANK },
    },
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
          // One of rrule and preset; COUNT and UNTIL not both (RFC 5545).
          oneOf: [{ required: ['rrule'] }, { required: ['preset'] }],
          not: { required: ['count', 'until'] },
          properties: {
            rrule: { type: 'string', example: 'FREQ=MONTHLY;BYMONTHDAY=-1' },
            preset: { type: 'string', enum: ['daily', 'weekdays', 'weekly', 'monthly', 'yearly'] },
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
    priority: { type: 'string', description: 'comma-separated priorities (none, low, medium, high, urgent)' },
    tag: { type: 'string', pattern: TEXT, description: 'comma-separated tags (case-insensitive)' },
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
    q: { type: 'string', pattern: TEXT, description: 'full-text search over title and description' },
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
    ...Object.fromEntries(
      Object.entries(listQueryDoc.properties).filter(([k]) => !['q', 'tag', 'tag_mode'].includes(k)),
    ),
    search: { type: 'string', pattern: TEXT, description: 'full-text search (this API: q)' },
    tags: {
      type: 'string',
      pattern: TEXT,
      description: 'comma-separated tags, every one must match (this API: tag with tag_mode=all)',
    },
  },
} as const;

export const settingsInputDoc = {
  type: 'object',
  additionalProperties: false,
  properties: {
    timezone: { type: 'string', enum: Intl.supportedValuesOf('timeZone'), description: 'an IANA time zone' },
    default_reminders: {
      type: 'array',
      maxItems: 10,
      items: {
        type: 'string',
        pattern: '^P(?=\\d|T\\d)(\\d+W)?(\\d+D)?(T(?=\\d)(\\d+H)?(\\d+M)?)?$',
        description: 'a positive ISO 8601 duration of weeks, days, hours and minutes, at most 366 days',
        example: 'PT1H',
      },
    },
  },
} as const;
