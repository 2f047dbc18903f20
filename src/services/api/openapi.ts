/**
 * OpenAPI fragments for the route schemas (documentation; validation is the domain's). The task fields are
 * generated from their schemas (domain/task-fields.ts), the ones REST and MCP validate with.
 */
import { DEFAULT_LIMIT, MAX_LIMIT, PRIORITY_LIST_PATTERN, SEARCH_MAX } from '../../domain/query.ts';
import { bodyJsonSchema } from '../../domain/fields.ts';
import { LIMITS, SETTINGS_FIELDS, TASK_FIELDS, TEXT } from '../../domain/task-fields.ts';
import { instantDoc } from '../../http/openapi.ts';

/** GET /api/tasks/counts (TaskStore.counts). */
export const countsDoc = {
  type: 'object',
  additionalProperties: false,
  required: ['total', 'pending', 'completed', 'overdue', 'today', 'upcoming'],
  description:
    'Sizes of the board’s views: all tasks, pending, completed, and of the pending ones those overdue (due before now), due today and upcoming (due from tomorrow on), days in the user’s time zone',
  properties: Object.fromEntries(
    ['total', 'pending', 'completed', 'overdue', 'today', 'upcoming'].map((k) => [
      k,
      { type: 'integer', minimum: 0 },
    ]),
  ),
} as const;

/** The task fields as a client sends them, one JSON Schema each, from the schemas the API validates with. */
const taskFieldsDoc = bodyJsonSchema(TASK_FIELDS);

/** Reminders holding an offset before due (an instant is not one). */
const withOffsets = { type: 'array', contains: { type: 'string', pattern: '^P' } } as const;

export const taskCreateDoc = {
  ...taskFieldsDoc,
  required: ['title'],
  // Offsets before due need a due date.
  if: { required: ['reminders'], properties: { reminders: withOffsets } },
  then: { required: ['due_date'], properties: { due_date: { type: 'string' } } },
} as const;

export const taskPatchDoc = {
  ...taskFieldsDoc,
  minProperties: 1,
  description:
    'Fields to change. Reminders before due need a due date: a change that leaves the task with offsets and no due date answers 409 (400 when the body itself sets both).',
  if: { required: ['reminders', 'due_date'], properties: { reminders: withOffsets } },
  then: { properties: { due_date: { type: 'string' } } },
} as const;

export const listQueryDoc = {
  type: 'object',
  properties: {
    status: { type: 'string', enum: ['pending', 'completed', 'all'], default: 'all' },
    priority: {
      type: 'string',
      pattern: PRIORITY_LIST_PATTERN,
      description: 'comma-separated priorities (none, low, medium, high, urgent; in any case)',
    },
    tag: {
      type: 'string',
      pattern: TEXT,
      description: `comma-separated tags (case-insensitive), at most ${LIMITS.tagsMax}, each at most ${LIMITS.tagMax} characters; empty: no filter`,
    },
    tag_mode: { type: 'string', enum: ['any', 'all'], description: 'any (the default) or all of the tags' },
    due_before: {
      ...instantDoc,
      description: 'due strictly before this instant (tasks without a due date never match)',
    },
    due_after: { ...instantDoc, description: 'due strictly after this instant' },
    overdue: { type: 'boolean' },
    due: {
      type: 'string',
      enum: ['today', 'tomorrow', 'week', 'upcoming'],
      description:
        "due today, tomorrow, in the 7 days from today, or upcoming (from tomorrow on), in the user's time zone (PUT /api/me/settings)",
    },
    q: {
      type: 'string',
      pattern: TEXT,
      maxLength: SEARCH_MAX,
      description:
        'search in title and description: every word, as written or by its English stem, or the text as any part of a word; empty: no search',
    },
    sort: {
      type: 'string',
      enum: ['due', 'priority', 'created', 'updated', 'title'],
      description:
        'created (the default), updated, priority, due or title; ties by id. Tasks without a due date come last when sorting by due, in either order',
    },
    order: {
      type: 'string',
      enum: ['asc', 'desc'],
      description:
        'default: asc for due (soonest first) and title (A to Z), desc for the others (newest, highest priority first)',
    },
    limit: { type: 'integer', minimum: 1, maximum: MAX_LIMIT, default: DEFAULT_LIMIT },
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
    search: {
      type: 'string',
      pattern: TEXT,
      maxLength: SEARCH_MAX,
      description: 'full-text search (this API: q)',
    },
    tags: {
      type: 'string',
      pattern: TEXT,
      description: `comma-separated tags, every one must match (this API: tag with tag_mode=all); at most ${LIMITS.tagsMax}, each at most ${LIMITS.tagMax} characters`,
    },
  },
} as const;

/** PUT /api/me/settings, from the settings' field schemas (domain/task-fields.ts). */
export const settingsInputDoc = bodyJsonSchema(SETTINGS_FIELDS);
