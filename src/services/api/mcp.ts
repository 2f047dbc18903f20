/**
 * MCP tools for the AI chatbot (Model Context Protocol, official TypeScript SDK), served two ways:
 * - Streamable HTTP at `/mcp` on the api target (stateless: a server per request), bearer JWT, the user is the
 *   token's subject;
 * - stdio (`taskflow mcp`, composed in src/cli/mcp-stdio.ts), the user from the token in TASKFLOW_TOKEN.
 * Both go through the same TaskStore and the same domain validation as REST (validateCreate / validatePatch /
 * parseTaskQuery): every change writes its event to the outbox in the same transaction, and the relay of the
 * running system publishes it. Failures are tool errors (`isError: true`) with a message naming the argument;
 * another user's task is "task not found".
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import { type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import * as z from 'zod';
import { systemClock, type Clock } from '../../domain/clock.ts';
import {
  ConflictError,
  IdempotencyMismatchError,
  NotFoundError,
  ValidationError,
  VersionConflictError,
  OverloadedError,
  type FieldIssue,
} from '../../domain/errors.ts';
import { parseIdempotencyKey, requestHash } from '../../domain/idempotency.ts';
import { isUuid } from '../../domain/text.ts';
import { RestUnavailableError, restClient, type RestClient, type RestTarget } from './mcp-rest.ts';
import {
  nowFor,
  resolveDuration,
  resolveRecurrence,
  resolveReminder,
  isDurationSaid,
  resolveWhen,
  type Resolved,
} from '../../domain/natural-time.ts';
import { DUE_WINDOWS, MAX_LIMIT, SORT_FIELDS } from '../../domain/query.ts';
import { fieldJsonSchema } from '../../domain/fields.ts';
import { SETTINGS_FIELDS, TASK_FIELDS } from '../../domain/task-fields.ts';
import { CONFIRM_EMAIL_FIELDS, EMAIL_CONFIRMATION, PREFERENCE_FIELDS } from '../../domain/notifications.ts';
import {
  RECURRENCE_MODES,
  RECURRENCE_NUMBER_MAX,
  RECURRENCE_PRESETS,
  isRecurrencePreset,
} from '../../domain/recurrence.ts';
import {
  LIMITS,
  PRIORITIES,
  STATUSES,
  complete,
  needsTimeZone,
  parseInstant,
  reopen,
  type Task,
  type ValidationContext,
  validateSettings,
} from '../../domain/task.ts';
import type { Logger } from '../../observability/logger.ts';
import { childTraceparent } from '../../observability/trace.ts';
import { SpanKind, withSpan } from '../../observability/tracing.ts';
import type { EventMeta } from '../../store/tasks.ts';
import type { UserSettingsStore } from '../../store/user-settings.ts';
import type { TaskChange, TaskOperations } from './task-operations.ts';
import { MCP_TOOLS } from './mcp-messages.ts';

export const MCP_SOURCE = '/taskflow/mcp';
const VERSION = '1.0.0';

export interface McpDeps {
  /** The task operations REST and MCP share. */
  tasks: TaskOperations;
  /** Where the deployment serves every target (Config.apiUrl), for tools of targets not in this process. */
  apiUrl?: string | null;
  settings: UserSettingsStore;
  log: Logger;
  source?: string;
  /** What get_context calls now (the system clock by default). */
  clock?: Clock;
}

/** Who is calling: the user is always the token's subject. */
export interface McpCaller {
  /** The REST API as this caller, for tools whose data other targets own (mcp-rest.ts). */
  rest?: RestClient;
  userId: string;
  /** The caller's W3C trace context (HTTP `traceparent`), continued when tracing is off. */
  traceparent?: string;
  clientIp?: string;
  userAgent?: string;
}

// ---------------------------------------------------------------------------------------------------------
// Argument schemas (JSON Schema for the model; the domain validation below is the one that decides)

/**
 * A tool's arguments: these and no others, except `user_id`, which clients written for the seed's Phase III
 * tools send with every call. It is not advertised (the user comes from the token) and is accepted only when
 * it names the authenticated user (checked in `run`). The JSON Schema says `additionalProperties: false`.
 */
function toolArgs<S extends z.ZodRawShape>(shape: S) {
  return z
    .looseObject(shape)
    .check((ctx) => {
      for (const key of Object.keys(ctx.value))
        if (!Object.hasOwn(shape, key) && key !== 'user_id')
          ctx.issues.push({
            code: 'custom',
            message:
              Object.keys(shape).length === 0
                ? `unknown argument ${key}; this tool takes no arguments`
                : `unknown argument ${key}; the arguments are ${Object.keys(shape).join(', ')}`,
            input: ctx.value,
            path: [key],
          });
    })
    .meta({ additionalProperties: false });
}
/**
 * A string argument whose schema errors read well as the SDK writes them, `<message> at <argument>`: "a required
 * argument is missing at task_id", "expected a string at task_id".
 */
const str = () =>
  z.string({
    error: (issue) => (issue.input === undefined ? 'a required argument is missing' : 'expected a string'),
  });

const taskIdArg = str().describe(
  'The task id (a UUID), as returned by add_task, list_tasks or search_tasks.',
);
const versionArg = z
  .number()
  .int()
  .min(1)
  .max(Number.MAX_SAFE_INTEGER)
  .optional()
  .describe('Optional optimistic concurrency: apply only if the task still has this version.');

// Each field of a rule may be null, as REST takes it (null counts as left out: a rule sent back with `preset: null`
// was refused). preset and mode are strings whose values are listed (`enum`) and checked by parseRecurrence,
// which names the field (`recurrence.mode: must be one of ...`), where an enum here failed the whole union.
const recurrenceObject = z
  .strictObject({
    preset: z
      .string()
      .meta({ enum: [...RECURRENCE_PRESETS] })
      .nullish(),
    rrule: z
      .string()
      .nullish()
      .describe('An RFC 5545 RRULE such as FREQ=WEEKLY;BYDAY=MO,WE (no RRULE: prefix).'),
    interval: z
      .number()
      .int()
      .min(1)
      .max(RECURRENCE_NUMBER_MAX)
      .nullish()
      .describe('Repeat every n periods of the preset (default 1).'),
    mode: z
      .string()
      .meta({ enum: [...RECURRENCE_MODES] })
      .nullish()
      .describe(
        'schedule: next due follows the calendar; after_completion: counted from when it was completed.',
      ),
    timezone: z
      .string()
      .nullish()
      .describe('IANA time zone of the rule, e.g. Europe/Berlin (default: the user’s).'),
    until: z.string().nullish().describe('Last possible occurrence, ISO 8601 date-time.'),
    count: z
      .number()
      .int()
      .min(1)
      .max(RECURRENCE_NUMBER_MAX)
      .nullish()
      .describe('Number of occurrences in total.'),
  })
  .describe('A recurrence rule: a preset or an RRULE, with options.');
const recurrenceArg = z
  .union([z.string(), recurrenceObject], {
    error: `must be a preset (${RECURRENCE_PRESETS.join(', ')}), a rule in words, an object with rrule or preset, or null`,
  })
  .nullable()
  .describe(
    `Repeat the task: a preset (${RECURRENCE_PRESETS.join(', ')}), words ("every other Monday at 9", "every Tuesday and Thursday at 18:30", "every month on the 1st", "the last Friday of every month", "every 2 weeks on Monday and Wednesday", "every 3 weeks"; a time said is the time of every repeat; without a due_date the first occurrence becomes it), or an object with rrule/preset, mode, timezone, until, count; null stops repeating. Completing a repeating task creates the next occurrence.`,
  );
// The limit is documented, not checked here: the field's validation says it ("must have at most 10 reminders").
const remindersArg = z
  .array(z.string())
  .meta({ maxItems: LIMITS.remindersMax })
  .nullable()
  .describe(
    'When to remind: offsets before the due date (PT15M, PT1H, P1D, or "30 minutes before"; need a due_date), or times (ISO 8601 date-times, or words: "in 30 minutes", "tomorrow 8am"); null = the user’s default reminders, [] = none. A task due sooner than every offset is reminded at its due time.',
  );
/**
 * An argument that is a task or settings field, with that field's JSON Schema constraints (its limits and
 * patterns, from the schema REST validates with: domain/task-fields.ts). It is read leniently: the tool
 * validates it with that same schema (validateCreate, validatePatch, validateSettings) once words are read,
 * with messages that name the argument.
 */
function fieldArg<T extends z.ZodType>(arg: T, field: z.ZodType): T {
  const json = fieldJsonSchema(field);
  const value = (json.anyOf as Record<string, unknown>[] | undefined)?.find((s) => s.type !== 'null') ?? json;
  const { type: _type, anyOf: _anyOf, description: _description, ...constraints } = value;
  return arg.meta(constraints);
}

/**
 * The task fields, each taking at least what REST takes: the SDK refuses what the zod schema refuses before the
 * tool runs, in words of its own (description: null, which clears it, and priority "High" were refused).
 * priority and status are strings whose values the JSON Schema lists (`enum`, from the field), and the limits of
 * tags and reminders are documented: the field's validation checks them, as REST's, naming the argument.
 */
const taskFields = {
  title: fieldArg(str(), TASK_FIELDS.title).describe(`Short title, 1-${LIMITS.titleMax} characters.`),
  description: fieldArg(str().nullable(), TASK_FIELDS.description).describe(
    `Details, up to ${LIMITS.descriptionMax} characters; null clears them.`,
  ),
  priority: fieldArg(str(), TASK_FIELDS.priority).describe('Priority (default none).'),
  status: fieldArg(str(), TASK_FIELDS.status).describe(
    'pending or completed (complete_task / reopen_task do the same).',
  ),
  tags: fieldArg(z.array(z.string()), TASK_FIELDS.tags).describe(
    `Labels such as work, home; up to ${LIMITS.tagsMax}, case-insensitive unique.`,
  ),
  due_date: z
    .string()
    .nullable()
    .describe(
      'Due date-time: ISO 8601 with an offset (2026-01-10T09:00:00Z), or words read in the user’s time zone ("tomorrow 9am", "next Friday at 17:00", "in 2 hours"; a day without a time is noon). The answer’s resolved says how words were read. null clears it.',
    ),
  reminders: remindersArg,
  recurrence: recurrenceArg,
};

const filterArgs = {
  status: z
    .enum(['all', 'pending', 'completed'])
    .optional()
    .describe('Which tasks: all (default), pending or completed.'),
  // In any case, as the REST filter (?priority=High) and a task's priority take them.
  priority: z.array(fieldArg(z.string(), TASK_FIELDS.priority)).optional().describe('Only these priorities.'),
  tags: z.array(z.string()).optional().describe('Only tasks with these tags (see tag_mode).'),
  tag_mode: z
    .enum(['any', 'all'])
    .optional()
    .describe('any (default): at least one of tags; all: every tag.'),
  due_before: z.string().optional().describe('Only tasks due before this ISO 8601 date-time.'),
  due_after: z.string().optional().describe('Only tasks due after this ISO 8601 date-time.'),
  overdue: z.boolean().optional().describe('true: only pending tasks past due; false: none of those.'),
  due: z
    .enum(DUE_WINDOWS)
    .optional()
    .describe(
      "Only tasks due today, tomorrow, in the week from today (7 days), or upcoming (from tomorrow on), in the user's time zone.",
    ),
  sort: z
    .enum(SORT_FIELDS)
    .optional()
    .describe('Sort by due, priority, created (default), updated or title.'),
  order: z.enum(['asc', 'desc']).optional().describe('Sort order (default depends on sort).'),
  limit: z
    .number()
    .int()
    .min(1)
    .max(MAX_LIMIT)
    .optional()
    .describe(`Page size 1-${MAX_LIMIT} (default 50); pass next_cursor as cursor for the next page.`),
  cursor: z.string().optional().describe('next_cursor of the previous page (keep sort and order).'),
};

// ---------------------------------------------------------------------------------------------------------
// Result schemas

const taskOut = z
  .looseObject({
    id: z.string(),
    title: z.string(),
    status: z.enum(STATUSES),
    priority: z.enum(PRIORITIES),
    version: z.number(),
  })
  .describe('The task as the REST API returns it.');
const changeOut = {
  task_id: z.string(),
  status: z
    .string()
    .describe(
      'What happened: created, updated, completed, reopened, skipped or deleted (get_task: the task status); add_task with an idempotency_key used before: replayed (the task that call created, not a new one).',
    ),
  title: z.string(),
  task: taskOut,
  resolved: z
    .array(z.object({ argument: z.string(), said: z.string(), as: z.string(), local: z.string() }))
    .optional()
    .describe('How dates and reminders given in words were read, in the user’s time zone: confirm them.'),
  reminder_plan: z
    .object({
      scheduled: z.array(
        z.object({
          remind_at: z.string(),
          specs: z.array(z.string()),
          why: z.enum(['asked', 'at_due_instead']),
        }),
      ),
      skipped: z.array(
        z.object({ remind_at: z.string(), specs: z.array(z.string()), why: z.literal('past') }),
      ),
    })
    .optional()
    .describe(
      'add_task, and a change that moves the reminders (a new due date or reminders, complete, reopen): the reminders the task gets (UTC instants) and those it asked for that are already past and will not exist; at_due_instead: one at the due time because every asked-for reminder was past. Tell the user about skipped ones.',
    ),
};
const listItemOut = z.looseObject({ task_id: z.string(), status: z.enum(STATUSES), title: z.string() });
const listOut = {
  tasks: z.array(listItemOut),
  count: z.number(),
  next_cursor: z.string().nullable(),
};

// ---------------------------------------------------------------------------------------------------------

const json = (value: unknown) => JSON.stringify(value);

const contextOut = z.strictObject({
  now: z.string(),
  local_time: z.string(),
  weekday: z.string(),
  timezone: z.string(),
  default_reminders: z.array(z.string()),
});

function ok(structured: Record<string, unknown>): CallToolResult {
  return { content: [{ type: 'text', text: json(structured) }], structuredContent: structured };
}

/** A REST answer >= 400 to a tool's request: its problem detail goes back to the model. */
class RestRefusedError extends Error {}

function toolError(message: string): CallToolResult {
  return { isError: true, content: [{ type: 'text', text: message }] };
}

/** Domain issue paths (REST names) as the tool's argument names. */
type Rename = Record<string, string>;

function describeIssues(issues: FieldIssue[], rename: Rename = {}): string {
  return issues
    .map((i) => {
      const [head, ...rest] = i.path.split(/(?=[.[])/);
      const path = head ? [rename[head] ?? head, ...rest].join('') : 'arguments';
      return `${path}: ${i.message}`;
    })
    .join('; ');
}

const changeResult = (
  status: string,
  task: Task,
  resolved: readonly WordsRead[] = [],
  extra: Record<string, unknown> = {},
) =>
  ok({
    task_id: task.id,
    status,
    title: task.title,
    task,
    ...(resolved.length ? { resolved } : {}),
    ...extra,
  });

type WordsRead = Resolved & { argument: string };

const listItem = (t: Task) => {
  const { id, ...rest } = t;
  return { task_id: id, ...rest };
};

/** Arguments without undefined values and without the tool-only ones. */
function fieldsOf(args: Record<string, unknown>, omit: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(args)) if (v !== undefined && !omit.includes(k)) out[k] = v;
  return out;
}

/** The list/search arguments as the REST query string would carry them, for parseTaskQuery. */
function queryOf(args: Record<string, unknown>): Record<string, unknown> {
  const q: Record<string, unknown> = {};
  const set = (key: string, v: unknown) => {
    if (v !== undefined) q[key] = v;
  };
  set('status', args.status);
  // An empty list is no filter, as for tags (it was a priority filter of "", refused).
  const priorities = args.priority as string[] | undefined;
  if (priorities?.length) q.priority = priorities.join(',');
  if (Array.isArray(args.tags) && args.tags.length) q.tag = args.tags;
  set('tag_mode', args.tag_mode);
  set('due_before', args.due_before);
  set('due_after', args.due_after);
  if (typeof args.overdue === 'boolean') q.overdue = String(args.overdue);
  set('due', args.due);
  set('q', args.query);
  set('sort', args.sort);
  set('order', args.order);
  if (args.limit !== undefined) q.limit = String(args.limit);
  set('cursor', args.cursor);
  return q;
}

const QUERY_RENAME: Rename = { tag: 'tags', q: 'query' };

/** Creates the MCP server of one caller (HTTP: one per request; stdio: one per process). */
export function createMcpServer(deps: McpDeps, caller: McpCaller): McpServer {
  const { tasks, settings, log } = deps;
  const source = deps.source ?? MCP_SOURCE;
  const server = new McpServer(
    { name: 'taskflow', title: 'Taskflow tasks', version: VERSION },
    {
      instructions:
        'Manage the signed-in user’s tasks: add_task, list_tasks, search_tasks, get_task, update_task, complete_task, reopen_task, delete_task, set_reminder, set_recurrence; their reminders (list_reminders, snooze_reminder, dismiss_reminder), repeats (skip_occurrence, preview_occurrences), notifications (list_notifications, mark_notification_read; the address reminders are emailed to: set_notification_email, then confirm_email with the code the user reads to you, send_email_code for a new one) and settings (update_settings). Dates (due_date, reminders, snooze) take the user’s words as they said them ("tomorrow at 9", "in 30 minutes", "next Friday"), read in the user’s time zone, or ISO 8601 date-times with an offset; each answer’s resolved says how words were read, to confirm with the user. get_context gives the current time, the user’s time zone and default reminders. Task ids are UUIDs from add_task/list_tasks.',
    },
  );
  // The guards refuse a tools/call of a name not in MCP_TOOLS before the SDK sees it (mcp-messages.ts): a tool
  // registered here and not named there could never be called.
  const registered = new Set<string>();
  const register = server.registerTool.bind(server) as (name: string, ...rest: unknown[]) => unknown;
  server.registerTool = ((name: string, ...rest: unknown[]) => {
    if (!MCP_TOOLS.includes(name)) throw new Error(`MCP tool ${name} is not in MCP_TOOLS (mcp-messages.ts)`);
    registered.add(name);
    return register(name, ...rest);
  }) as typeof server.registerTool;

  const meta = (): EventMeta => ({
    source,
    traceparent: childTraceparent(caller.traceparent),
    ...(caller.clientIp ? { clientIp: caller.clientIp } : {}),
    ...(caller.userAgent ? { userAgent: caller.userAgent } : {}),
  });
  // The user's time zone, read once per tool call at most, and only when needed (a recurrence rule, words).
  let zone: Promise<string> | undefined;
  const userZone = () => (zone ??= settings.get(caller.userId).then((u) => u.timezone));
  const zoneFor = async (input: unknown): Promise<ValidationContext> =>
    needsTimeZone(input) ? { timezone: await userZone() } : {};

  /**
   * `due_date` and `reminders` given in words ("tomorrow 9am", "in 30 minutes", "1 hour before") read in the
   * user's time zone (natural-time.ts); the user's settings are read only then. A text that is no date is
   * left as it is: validation names the argument.
   */
  const readWords = async (
    fields: Record<string, unknown>,
    /** A rule in words sets the due date to its first occurrence when none is given (a new task only). */
    opts: { firstOccurrenceDue?: boolean } = {},
  ): Promise<{ fields: Record<string, unknown>; resolved: WordsRead[] }> => {
    // "past Friday" is words, not a malformed duration.
    const words = (v: unknown): v is string =>
      typeof v === 'string' && !isDurationSaid(v) && !parseInstant(v);
    // A duration with spaces around it (" PT1H"), as models write, is the duration (REST refuses the spaces).
    const reminders = Array.isArray(fields.reminders)
      ? (fields.reminders as unknown[]).map((r) =>
          typeof r === 'string' && isDurationSaid(r) ? r.trim() : r,
        )
      : [];
    if (Array.isArray(fields.reminders)) fields = { ...fields, reminders };
    const rule =
      typeof fields.recurrence === 'string' && !isRecurrencePreset(fields.recurrence)
        ? fields.recurrence
        : undefined;
    if (!words(fields.due_date) && !reminders.some(words) && rule === undefined)
      return { fields, resolved: [] };
    const ctx = { now: clock.now(), timeZone: await userZone() };
    const resolved: WordsRead[] = [];
    const out = { ...fields };
    // Words that read as no date are refused as words, not as a malformed ISO 8601 date-time: the model said
    // what the user said, and is told how to say it.
    const unread = (path: string, text: string, as: string, examples: string) =>
      new ValidationError([
        {
          path,
          message: `could not read ${JSON.stringify(text.slice(0, 200))} as ${as}; say it as ${examples}`,
        },
      ]);
    if (words(fields.due_date)) {
      const when = resolveWhen(fields.due_date, ctx);
      if (!when)
        throw unread(
          'due_date',
          fields.due_date,
          'a date',
          '"tomorrow at 9", "in 30 minutes", "next Friday 18:00", "Jan 10 at 9am", or an ISO 8601 date-time with an offset (2026-01-10T09:00:00Z)',
        );
      if (when.resolved) resolved.push({ argument: 'due_date', ...when.resolved });
      out.due_date = when.instant;
    }
    if (rule !== undefined) {
      // "every other Monday at 9": the rule, and (without a due date) its first occurrence as the due date.
      const repeat = resolveRecurrence(rule, ctx);
      const preset = rule.trim().toLowerCase();
      if (repeat) {
        out.recurrence = { rrule: repeat.rrule };
        if (opts.firstOccurrenceDue && fields.due_date === undefined) out.due_date = repeat.first;
        resolved.push({ argument: 'recurrence', ...repeat.resolved });
      } else if (isRecurrencePreset(preset))
        out.recurrence = preset; // "Daily", "WEEKLY"
      else
        throw new ValidationError([
          {
            path: 'recurrence',
            message: `could not read ${JSON.stringify(rule)} as a repeat; say it as "every day", "every weekday at 9", "every other Monday at 9", "every Tuesday and Thursday at 18:30", "every month on the 1st", "the last Friday of every month", "every 2 weeks on Monday and Wednesday" or "every 3 weeks", or give a preset (daily, weekdays, weekly, monthly, yearly) or an RRULE object. A task repeats at most daily (a few times a day with an RRULE's BYHOUR)`,
          },
        ]);
    }
    if (reminders.some(words))
      out.reminders = reminders.map((r, i) => {
        if (!words(r)) return r;
        const read = resolveReminder(r, ctx);
        if (!read)
          throw unread(
            `reminders[${i}]`,
            r,
            'a reminder',
            '"30 minutes before", "1 hour before", "1 day before", "tomorrow at 8am", "in 2 hours", an ISO 8601 duration before the due date (PT1H) or a date-time with an offset',
          );
        if (read.resolved) resolved.push({ argument: `reminders[${i}]`, ...read.resolved });
        return read.value;
      });
    return { fields: out, resolved };
  };

  /** Wraps a tool: span, user check, and every failure as a tool error (never a crash). */
  const run =
    <A extends Record<string, unknown>>(
      name: string,
      rename: Rename,
      fn: (args: A) => Promise<CallToolResult>,
    ) =>
    (args: A): Promise<CallToolResult> =>
      withSpan(
        `mcp tools/call ${name}`,
        { kind: SpanKind.INTERNAL, attributes: { 'mcp.tool.name': name, 'enduser.id': caller.userId } },
        async (span) => {
          try {
            if (args.user_id !== undefined && args.user_id !== caller.userId)
              return toolError(
                'user_id: is not the authenticated user (omit it; the user comes from the token)',
              );
            return await fn(args);
          } catch (err) {
            if (err instanceof ValidationError)
              return toolError(`Invalid arguments: ${describeIssues(err.issues, rename)}`);
            if (err instanceof NotFoundError) return toolError('task not found');
            if (err instanceof OverloadedError)
              return toolError(
                `the service is busy; the task was not created, retry in ${err.retryAfterSeconds} s`,
              );
            if (err instanceof IdempotencyMismatchError)
              return toolError(
                `idempotency_key "${err.key}" was used in the last 24 hours with other arguments; use a new key for a new task`,
              );
            if (err instanceof ConflictError) return toolError(err.message);
            if (err instanceof RestUnavailableError || err instanceof RestRefusedError)
              return toolError(err.message);
            if (err instanceof VersionConflictError)
              return toolError(
                `expected_version: ${err.message}; call get_task for the current version (${err.actual})`,
              );
            span.recordException(err instanceof Error ? err : new Error(String(err)));
            log.error({ err, tool: name, user_id: caller.userId }, 'MCP tool failed');
            return toolError('internal error; the operation was not applied, try again later');
          }
        },
      );

  const change = (status: string) => (task: Task) => changeResult(status, task);
  /** A change's answer, with the reminder plan when it moved the reminders. */
  const changed = (
    status: string,
    { task, reminder_plan }: TaskChange,
    resolved: readonly WordsRead[] = [],
  ) => changeResult(status, task, resolved, reminder_plan ? { reminder_plan } : {});
  const clock = deps.clock ?? systemClock;

  server.registerTool(
    'get_context',
    {
      title: 'Current time and the user’s settings',
      description:
        'The current date and time, in UTC and in the user’s time zone (with its offset and weekday), the time zone (IANA name) and the reminders a task gets when it names none (ISO 8601 durations before its due date). Call it to answer questions about the date or to work out a date yourself; the date arguments of the other tools also take the user’s words ("tomorrow at 9am", "in 30 minutes") and read them in the user’s time zone.',
      inputSchema: toolArgs({}),
      outputSchema: contextOut,
      annotations: { readOnlyHint: true },
    },
    run('get_context', {}, async () => {
      const user = await settings.get(caller.userId);
      const { now, local, weekday } = nowFor(clock.now(), user.timezone);
      return ok({
        now,
        local_time: local,
        weekday,
        timezone: user.timezone,
        default_reminders: user.default_reminders,
      });
    }),
  );

  server.registerTool(
    'add_task',
    {
      title: 'Add a task',
      description:
        'Create a task for the user. Only title is required. Answers {task_id, status: "created", title, task, reminder_plan}: reminder_plan says which reminders were scheduled and which were not (already past).',
      inputSchema: toolArgs({
        title: taskFields.title,
        description: taskFields.description.optional(),
        priority: taskFields.priority.optional(),
        tags: taskFields.tags.optional(),
        due_date: taskFields.due_date.optional(),
        reminders: taskFields.reminders.optional(),
        recurrence: taskFields.recurrence.optional(),
        idempotency_key: z
          .string()
          .optional()
          .describe(
            'Optional. A key you choose (e.g. a UUID) to make a retry safe: the same key and arguments within 24 h return the first task and create nothing; other arguments with the key are refused',
          ),
      }),
      outputSchema: changeOut,
    },
    run('add_task', {}, async (args) => {
      // The retry of a request is the same words, not the instants they meant a moment ago.
      const said = fieldsOf(args, ['user_id', 'idempotency_key']);
      const { fields, resolved } = await readWords(said, { firstOccurrenceDue: true });
      const ctx = await zoneFor(fields);
      const { task, replayed, reminder_plan } = await tasks.create(caller.userId, fields, meta(), {
        idempotency: () => {
          const key = parseIdempotencyKey(args.idempotency_key, 'idempotency_key');
          return key ? { key, requestHash: requestHash(said) } : undefined;
        },
        ctx,
      });
      return changeResult(replayed ? 'replayed' : 'created', task, resolved, { reminder_plan });
    }),
  );

  /** list_tasks and search_tasks: the REST list's query, one page of list items. */
  const listPage = async (args: Record<string, unknown>) => {
    const page = await tasks.list(caller.userId, queryOf(args));
    return ok({ tasks: page.items.map(listItem), count: page.items.length, next_cursor: page.next_cursor });
  };

  server.registerTool(
    'list_tasks',
    {
      title: 'List tasks',
      description:
        'List the user’s tasks, filtered and sorted. Answers {tasks: [{task_id, status, title, ...}], count, next_cursor}.',
      inputSchema: toolArgs({ ...filterArgs }),
      outputSchema: listOut,
      annotations: { readOnlyHint: true },
    },
    run('list_tasks', QUERY_RENAME, (args) => listPage(args)),
  );

  server.registerTool(
    'search_tasks',
    {
      title: 'Search tasks',
      description:
        'Full-text search in titles and descriptions, with the list_tasks filters: a task matches when every word of the query is in it, as written or by its English stem, or the query is part of a word. No operators: quotes and a leading - are read as plain words (to leave tasks out, use the filters). Answers like list_tasks.',
      inputSchema: toolArgs({
        query: str().describe('What to look for, up to 200 characters.'),
        ...filterArgs,
      }),
      outputSchema: listOut,
      annotations: { readOnlyHint: true },
    },
    run('search_tasks', QUERY_RENAME, async (args) => {
      if (args.query.trim() === '') throw new ValidationError([{ path: 'q', message: 'must not be empty' }]);
      return listPage(args);
    }),
  );

  server.registerTool(
    'get_task',
    {
      title: 'Get a task',
      description: 'One task by id. Answers {task_id, status (the task status), title, task}.',
      inputSchema: toolArgs({ task_id: taskIdArg }),
      outputSchema: changeOut,
      annotations: { readOnlyHint: true },
    },
    run('get_task', {}, async (args) => {
      const task = await tasks.get(caller.userId, args.task_id);
      return changeResult(task.status, task);
    }),
  );

  server.registerTool(
    'update_task',
    {
      title: 'Update a task',
      description:
        'Change fields of a task; only the given fields change. Answers {task_id, status: "updated", title, task}, and reminder_plan when the due date or reminders changed.',
      inputSchema: toolArgs({
        task_id: taskIdArg,
        title: taskFields.title.optional(),
        description: taskFields.description.optional(),
        status: taskFields.status.optional(),
        priority: taskFields.priority.optional(),
        tags: taskFields.tags.optional(),
        due_date: taskFields.due_date.optional(),
        reminders: taskFields.reminders.optional(),
        recurrence: taskFields.recurrence.optional(),
        expected_version: versionArg,
      }),
      outputSchema: changeOut,
    },
    run('update_task', {}, async (args) => {
      const { fields, resolved } = await readWords(
        fieldsOf(args, ['user_id', 'task_id', 'expected_version']),
      );
      const ctx = await zoneFor(fields);
      const change = await tasks
        .update(caller.userId, args.task_id, fields, meta(), { expected: args.expected_version, ctx })
        .catch((err: unknown) => {
          if (!(err instanceof ValidationError)) throw err;
          throw new ValidationError(
            err.issues.map((i) =>
              i.path === '' ? { path: '', message: 'set at least one field to change besides task_id' } : i,
            ),
          );
        });
      return changed('updated', change, resolved);
    }),
  );

  const transition = (
    name: string,
    title: string,
    description: string,
    fn: typeof complete,
    status: string,
  ) =>
    server.registerTool(
      name,
      {
        title,
        description,
        inputSchema: toolArgs({ task_id: taskIdArg, expected_version: versionArg }),
        outputSchema: changeOut,
        annotations: { idempotentHint: true },
      },
      run(name, {}, async (args) =>
        changed(
          status,
          await tasks.transition(caller.userId, args.task_id, fn, meta(), args.expected_version),
        ),
      ),
    );
  transition(
    'complete_task',
    'Complete a task',
    'Mark a task completed (a repeating task then gets its next occurrence). Answers {task_id, status: "completed", title, task, reminder_plan (empty: its reminders are dismissed)}.',
    complete,
    'completed',
  );
  transition(
    'reopen_task',
    'Reopen a task',
    'Mark a completed task pending again. Answers {task_id, status: "reopened", title, task, reminder_plan}.',
    reopen,
    'reopened',
  );

  server.registerTool(
    'delete_task',
    {
      title: 'Delete a task',
      description: 'Delete a task for good. Answers {task_id, status: "deleted", title, task (as it was)}.',
      inputSchema: toolArgs({ task_id: taskIdArg, expected_version: versionArg }),
      outputSchema: changeOut,
      annotations: { destructiveHint: true },
    },
    run('delete_task', {}, async (args) =>
      change('deleted')(await tasks.delete(caller.userId, args.task_id, meta(), args.expected_version)),
    ),
  );

  server.registerTool(
    'set_reminder',
    {
      title: 'Set reminders',
      description:
        'Replace the reminders of a task (e.g. ["PT1H"] = one hour before due). Answers {task_id, status: "updated", title, task, reminder_plan}: tell the user about skipped ones.',
      inputSchema: toolArgs({
        task_id: taskIdArg,
        reminders: remindersArg,
        expected_version: versionArg,
      }),
      outputSchema: changeOut,
      annotations: { idempotentHint: true },
    },
    run('set_reminder', {}, async (args) => {
      const { fields, resolved } = await readWords({ reminders: args.reminders });
      return changed(
        'updated',
        await tasks.update(caller.userId, args.task_id, fields, meta(), { expected: args.expected_version }),
        resolved,
      );
    }),
  );

  server.registerTool(
    'set_recurrence',
    {
      title: 'Set recurrence',
      description:
        'Make a task repeat (daily, weekdays, weekly, monthly, yearly, an RRULE, or words such as "every other Monday") or stop repeating (null). Its due date stays. Answers {task_id, status: "updated", title, task}.',
      inputSchema: toolArgs({
        task_id: taskIdArg,
        recurrence: recurrenceArg,
        expected_version: versionArg,
      }),
      outputSchema: changeOut,
      annotations: { idempotentHint: true },
    },
    run('set_recurrence', {}, async (args) => {
      const { fields, resolved } = await readWords({ recurrence: args.recurrence });
      const ctx = await zoneFor(fields);
      return changed(
        'updated',
        await tasks.update(caller.userId, args.task_id, fields, meta(), {
          expected: args.expected_version,
          ctx,
        }),
        resolved,
      );
    }),
  );

  // -------------------------------------------------------------------------------------------------------
  // Tools whose data other targets own (reminders, recurrence, notifications): through the REST API as the
  // caller (mcp-rest.ts), so they answer the same and check the same as REST.

  const rest = async (target: RestTarget, method: 'GET' | 'POST' | 'PUT', url: string, body?: unknown) => {
    if (!caller.rest) throw new RestUnavailableError('this MCP server has no access to the REST API');
    const r = await caller.rest({ target, method, url, ...(body === undefined ? {} : { body }) });
    const detail = String((r.body as { detail?: unknown } | null)?.detail ?? `the API answered ${r.status}`);
    // "reminder not found" and the like are what they say: only the task unknown there may be one not seen yet.
    if (r.status === 404 && detail === new NotFoundError('task').message) await notYetSeen(url);
    if (r.status >= 400) throw new RestRefusedError(detail);
    return r.body as Record<string, unknown>;
  };
  /**
   * A task's reminders and repeats are known to their targets once they have consumed its event, a moment
   * after its write: until then their routes answer "task not found", which a model took for a task that does
   * not exist (and made it again). When the task exists, the answer says to try again.
   */
  const notYetSeen = async (url: string) => {
    const taskId = /^\/api\/tasks\/([0-9a-f-]{36})\//.exec(url)?.[1];
    if (!taskId) return;
    const exists = await tasks.get(caller.userId, taskId).then(
      () => true,
      () => false,
    );
    if (exists)
      throw new RestRefusedError(
        'the task exists, but its reminders and repeats are not known yet: it was written a moment ago and the service that keeps them has not seen it; try again in a second',
      );
  };
  /** An id in a path: a UUID or nothing found (never a path of its own, such as `..`). */
  const idIn = (id: string, what: string) => {
    if (!isUuid(id)) throw new RestRefusedError(`${what} not found`);
    return id;
  };
  const taskPath = (taskId: string) => `/api/tasks/${idIn(taskId, 'task')}`;
  /** The reminder the user means by "that reminder": the one given, else the task's last one that fired. */
  const reminderOf = async (taskId: string, reminderId: string | undefined) => {
    if (reminderId) return reminderId;
    const { items } = (await rest('reminders', 'GET', `${taskPath(taskId)}/reminders`)) as {
      items: { id: string; status: string; triggered_at: string | null; dismiss_reason?: string | null }[];
    };
    // Fired: triggered, or snoozed since (scheduled again, its triggered_at kept); not one missed or put aside.
    const fired = items
      .filter(
        (r) =>
          r.triggered_at &&
          (r.status === 'triggered' || r.status === 'scheduled') &&
          (r.dismiss_reason ?? null) === null,
      )
      .sort((a, b) => b.triggered_at!.localeCompare(a.triggered_at!));
    if (fired[0]) return fired[0].id;
    throw new RestRefusedError(
      `reminder_id: the task has no reminder that fired; its reminders: ${items.map((r) => `${r.id} (${r.status})`).join(', ') || 'none'}`,
    );
  };
  const reminderIdArg = z
    .string()
    .optional()
    .describe('The reminder (an id from list_reminders); default: the task’s reminder that fired last.');
  const passthrough = z.looseObject({});

  server.registerTool(
    'list_reminders',
    {
      title: 'List the reminders of a task',
      description:
        'The reminders of a task: when each fires (remind_at), its status (scheduled, triggered, missed, dismissed) and whether it was snoozed. Answers {items: [...]}.',
      inputSchema: toolArgs({ task_id: taskIdArg }),
      outputSchema: passthrough,
      annotations: { readOnlyHint: true },
    },
    run('list_reminders', {}, async (args) =>
      ok(await rest('reminders', 'GET', `${taskPath(args.task_id)}/reminders`)),
    ),
  );

  server.registerTool(
    'snooze_reminder',
    {
      title: 'Snooze a reminder',
      description:
        'Fire a reminder again later: after a length of time ("10 minutes", "an hour", PT10M) or at a time ("tomorrow 8am", an ISO 8601 date-time). Without reminder_id, the task’s reminder that fired last. Answers the reminder with its new remind_at.',
      inputSchema: toolArgs({
        task_id: taskIdArg,
        reminder_id: reminderIdArg,
        for: z.string().optional().describe('How long to snooze: "10 minutes", "2 hours", PT10M.'),
        until: z.string().optional().describe('Or until when: "tomorrow 8am", or an ISO 8601 date-time.'),
      }),
      outputSchema: passthrough,
    },
    run('snooze_reminder', {}, async (args) => {
      const body: Record<string, string> = {};
      if (args.for !== undefined) {
        const duration = resolveDuration(args.for);
        if (!duration)
          throw new ValidationError([
            { path: 'for', message: 'must be a length of time such as "10 minutes" or PT10M' },
          ]);
        body.duration = duration;
      }
      if (args.until !== undefined) {
        const now = clock.now();
        const when = resolveWhen(args.until, { now, timeZone: await userZone() });
        if (!when || Date.parse(when.instant) <= now.getTime())
          throw new ValidationError([
            { path: 'until', message: 'must be a time to come, such as "tomorrow 8am"' },
          ]);
        body.until = when.instant;
      }
      const id = await reminderOf(args.task_id, args.reminder_id);
      return ok(
        await rest(
          'reminders',
          'POST',
          `${taskPath(args.task_id)}/reminders/${idIn(id, 'reminder')}/snooze`,
          body,
        ),
      );
    }),
  );

  server.registerTool(
    'dismiss_reminder',
    {
      title: 'Dismiss a reminder',
      description:
        'Stop a reminder: it will not fire (again). Without reminder_id, the task’s reminder that fired last. Answers the reminder.',
      inputSchema: toolArgs({ task_id: taskIdArg, reminder_id: reminderIdArg }),
      outputSchema: passthrough,
      annotations: { idempotentHint: true },
    },
    run('dismiss_reminder', {}, async (args) => {
      const id = await reminderOf(args.task_id, args.reminder_id);
      return ok(
        await rest(
          'reminders',
          'POST',
          `${taskPath(args.task_id)}/reminders/${idIn(id, 'reminder')}/dismiss`,
        ),
      );
    }),
  );

  server.registerTool(
    'skip_occurrence',
    {
      title: 'Skip an occurrence',
      description:
        'Skip the current occurrence of a repeating task: its due date moves to the next one of the rule (nothing is completed). Answers {task_id, status: "skipped", title, task}, and reminder_plan when its reminders moved.',
      inputSchema: toolArgs({ task_id: taskIdArg }),
      outputSchema: changeOut,
    },
    // The REST answer is the task (with reminder_plan beside its fields): answered as the other writes are.
    run('skip_occurrence', {}, async (args) => {
      const { reminder_plan, ...task } = await rest('recurrence', 'POST', `${taskPath(args.task_id)}/skip`);
      return changeResult('skipped', task as unknown as Task, [], reminder_plan ? { reminder_plan } : {});
    }),
  );

  server.registerTool(
    'preview_occurrences',
    {
      title: 'Preview the next due dates',
      description:
        'The due dates of a repeating task after its current one, to confirm a rule with the user before relying on it. Answers {occurrences: [ISO 8601 date-times], ...}.',
      inputSchema: toolArgs({
        task_id: taskIdArg,
        count: z.number().int().min(1).max(50).optional().describe('How many (1-50, default 5).'),
      }),
      outputSchema: passthrough,
      annotations: { readOnlyHint: true },
    },
    run('preview_occurrences', {}, async (args) =>
      ok(await rest('recurrence', 'GET', `${taskPath(args.task_id)}/occurrences?count=${args.count ?? 5}`)),
    ),
  );

  server.registerTool(
    'list_notifications',
    {
      title: 'List notifications',
      description:
        'The user’s in-app notifications (reminders that fired), newest first, and how many are unread. Answers {items: [{id, title, body, task_id, read_at, created_at}], unread_count}.',
      inputSchema: toolArgs({
        unread_only: z.boolean().optional().describe('Only unread ones (default false).'),
        limit: z.number().int().min(1).max(200).optional().describe('At most this many (1-200, default 50).'),
      }),
      outputSchema: passthrough,
      annotations: { readOnlyHint: true },
    },
    run('list_notifications', {}, async (args) =>
      ok(
        await rest(
          'notifications',
          'GET',
          `/api/notifications?unread=${args.unread_only === true}&limit=${args.limit ?? 50}`,
        ),
      ),
    ),
  );

  server.registerTool(
    'mark_notification_read',
    {
      title: 'Mark a notification read',
      description:
        'Mark an in-app notification read (an id from list_notifications). Answers the notification.',
      inputSchema: toolArgs({
        notification_id: str().describe('The notification id, from list_notifications.'),
      }),
      outputSchema: passthrough,
      annotations: { idempotentHint: true },
    },
    run('mark_notification_read', {}, async (args) =>
      ok(
        await rest(
          'notifications',
          'POST',
          `/api/notifications/${idIn(args.notification_id, 'notification')}/read`,
        ),
      ),
    ),
  );

  server.registerTool(
    'set_notification_email',
    {
      title: 'Set the email address for reminders',
      description:
        'Set (or, with null, remove) the address reminders are emailed to. A new address gets a 6-digit code by email: reminders are mailed to it only once the user tells you the code and you pass it to confirm_email. Answers the notification preferences: email, email_confirmed, and email_confirmation (where the code went, or why none was sent).',
      inputSchema: toolArgs({
        email: fieldArg(z.string().nullable(), PREFERENCE_FIELDS.email).describe(
          'The address, e.g. dana@example.com; null removes it.',
        ),
      }),
      outputSchema: passthrough,
      annotations: { idempotentHint: true },
    },
    run('set_notification_email', {}, async (args) =>
      ok(await rest('notifications', 'PUT', '/api/notifications/preferences', { email: args.email })),
    ),
  );

  server.registerTool(
    'confirm_email',
    {
      title: 'Confirm the email address with its code',
      description:
        'Confirm the user’s email address with the 6-digit code mailed to it (the user reads it to you). A wrong code says how many tries are left. Answers the notification preferences, email_confirmed true.',
      inputSchema: toolArgs({
        code: fieldArg(str(), CONFIRM_EMAIL_FIELDS.code).describe('The 6 digits, e.g. "042917".'),
      }),
      outputSchema: passthrough,
      annotations: { idempotentHint: true },
    },
    run('confirm_email', {}, async (args) =>
      ok(await rest('notifications', 'POST', '/api/notifications/email/confirm', { code: args.code })),
    ),
  );

  server.registerTool(
    'send_email_code',
    {
      title: 'Mail a new confirmation code',
      description: `Mail a new code to the user’s unconfirmed email address (the one before is void), when the user did not get it or it expired. At most ${EMAIL_CONFIRMATION.perDay} in 24 hours. Answers where it went and until when it is valid.`,
      inputSchema: toolArgs({}),
      outputSchema: passthrough,
    },
    run('send_email_code', {}, async () =>
      ok(await rest('notifications', 'POST', '/api/notifications/email/confirmation-code')),
    ),
  );

  server.registerTool(
    'update_settings',
    {
      title: 'Change the user’s settings',
      description:
        'Set the user’s time zone (IANA name such as Europe/Berlin: dates in words and "today" are read in it) and/or default reminders (ISO 8601 durations before the due date, e.g. ["P1D", "PT1H"]; [] = none). Answers the settings.',
      inputSchema: toolArgs({
        timezone: z.string().optional().describe('IANA time zone, e.g. America/New_York.'),
        default_reminders: fieldArg(z.array(z.string()), SETTINGS_FIELDS.default_reminders)
          .optional()
          .describe('Offsets before the due date for tasks that name no reminders, e.g. ["PT30M"].'),
      }),
      outputSchema: passthrough,
      annotations: { idempotentHint: true },
    },
    // Settings are the api target's own data, as the tasks are: written here, in any process with the database.
    run('update_settings', {}, async (args) => {
      const parsed = validateSettings(fieldsOf(args, ['user_id']));
      if (!parsed.ok) throw new ValidationError(parsed.issues);
      return ok({ ...(await settings.update(caller.userId, parsed.value)) });
    }),
  );

  const missing = MCP_TOOLS.filter((name) => !registered.has(name));
  if (missing.length) throw new Error(`MCP_TOOLS names tools not registered: ${missing.join(', ')}`);
  return server;
}

// ---------------------------------------------------------------------------------------------------------
// Streamable HTTP at /mcp (stateless): the route is registered by mcp-http.ts, which loads this module (and
// the MCP SDK) at the first request.

/** Answers one MCP request of `userId` with a new server and transport (stateless, plain JSON answers). */
export async function handleMcpRequest(
  deps: McpDeps,
  userId: string,
  req: FastifyRequest,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const server = createMcpServer(deps, {
    userId,
    rest: restClient({
      app: req.server,
      authorization: req.headers.authorization ?? '',
      caller: {
        ip: req.ip,
        ...(typeof req.headers['user-agent'] === 'string' ? { userAgent: req.headers['user-agent'] } : {}),
        ...(typeof req.headers.traceparent === 'string' ? { traceparent: req.headers.traceparent } : {}),
      },
      apiUrl: deps.apiUrl ?? null,
    }),
    clientIp: req.ip,
    ...(typeof req.headers.traceparent === 'string' ? { traceparent: req.headers.traceparent } : {}),
    ...(req.headers['user-agent'] ? { userAgent: String(req.headers['user-agent']) } : {}),
  });
  // The SDK's web-standard transport answers with a Response that this route sends: the Node adapter wrote to the
  // socket itself, and answered a batch of one message with a bare object, where JSON-RPC 2.0 (section 6)
  // answers a batch with an array.
  const transport = new WebStandardStreamableHTTPServerTransport({
    sessionIdGenerator: undefined,
    enableJsonResponse: true,
  });
  reply.raw.on('close', () => {
    void transport.close().catch(() => undefined);
    void server.close().catch(() => undefined);
  });
  try {
    await server.connect(transport);
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers))
      if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(', ') : value);
    const answer = await transport.handleRequest(
      new Request(`http://localhost${req.url}`, { method: req.method, headers }),
      { parsedBody: req.body },
    );
    let body = await answer.text();
    if (Array.isArray(req.body) && answer.ok && body.startsWith('{')) body = `[${body}]`;
    reply.code(answer.status);
    answer.headers.forEach((value, name) => {
      if (name !== 'content-length') reply.header(name, value);
    });
    return reply.send(body.length ? body : undefined);
  } catch (err) {
    deps.log.error({ err }, 'MCP request failed');
    return reply
      .code(500)
      .type('application/json')
      .send(json({ jsonrpc: '2.0', error: { code: -32603, message: 'internal error' }, id: null }));
  }
}
