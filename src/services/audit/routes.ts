/**
 * The audit API: `GET /api/audit` (the caller's records, newest first, filters and cursor pagination) and
 * `GET /api/audit/export?format=ndjson|csv` (every matching record, oldest first, streamed in keyset pages
 * bounded in rows and in bytes, written out a chunk of lines at a time as the client reads: memory stays flat
 * whatever the number and the size of the records, and no database connection is held between pages).
 */
import { instantDoc, okWith } from '../../http/openapi.ts';
import { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { Verifier } from '../../auth.ts';
import { authenticatedScope } from '../../http/authenticated.ts';
import { ValidationError, type FieldIssue } from '../../domain/errors.ts';
import { INSTANT_HINT, parseInstant } from '../../domain/task.ts';
import { codePoints, commaList, textProblem } from '../../domain/text.ts';
import { unknownParameters } from '../../domain/fields.ts';
import type { Queryable } from '../../store/db.ts';
import { EVENT_TYPES, instant, type EventType } from '../../contracts/schemas.ts';
import { AUDIT_COLUMNS, toRecord, type AuditRecord, type AuditRow } from './chain.ts';
import { auditManifest } from './manifest.ts';

export interface AuditFilter {
  taskId: string | null;
  operations: string[];
  from: string | null;
  to: string | null;
}

export interface AuditQuery extends AuditFilter {
  limit: number;
  cursor: string | null;
}

const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 200;
/** An export page: at most this many records... */
const EXPORT_PAGE = 1000;
/**
 * ...and about this many bytes of them (as the database renders them as text), the first record whatever its
 * size: a record can be over 100 KB (a 10,000-character description of control characters, each written
 * \uXXXX, before and after), and a page of 1,000 such held hundreds of MB in the process that records every
 * user's audit.
 */
const EXPORT_PAGE_BYTES = 2 * 2 ** 20;
/** The export's chunks: a record's line, or lines joined up to this size (each a write to the response). */
const EXPORT_CHUNK = 64 * 1024;
/** A record's columns other than its text ones (seq, times, hashes, key) and its JSON punctuation, in bytes. */
const RECORD_OVERHEAD = 512;
const FILTER_KEYS = ['task_id', 'operation', 'from', 'to'];
const OPERATION = '[a-z]+(?:\\.[a-z_]+)+';
const OPERATIONS_PATTERN = `^${commaList(OPERATION)}$`;
const OPERATIONS = new RegExp(OPERATIONS_PATTERN);

/** The filters of both audit routes, for the OpenAPI document. */
const filterQueryDoc = {
  task_id: { type: 'string', minLength: 1, maxLength: 100, pattern: '^[^\\u0000]*$' },
  operation: {
    type: 'string',
    pattern: OPERATIONS_PATTERN,
    description: 'comma-separated event types, e.g. task.updated,reminder.triggered',
  },
  from: instantDoc,
  to: instantDoc,
};

/** A record's fields, in the order of an export's CSV columns (and of toRecord). */
export const CSV_COLUMNS = [
  'id',
  'seq',
  'event_id',
  'user_id',
  'task_id',
  'operation',
  'occurred_at',
  'recorded_at',
  'change',
  'trace_id',
  'client_ip',
  'user_agent',
  'prev_hash',
  'hash',
] as const;

const hashDoc = {
  type: 'string',
  pattern: '^[0-9a-f]{64}$',
  description: "SHA-256, or HMAC-SHA256 keyed with the deployment's chain key (AUDIT_CHAIN_KEY), hex",
} as const;
/** A record as the API answers it (chain.ts toRecord; an export's NDJSON line is one too). */
const auditRecordDoc = {
  type: 'object',
  additionalProperties: false,
  required: CSV_COLUMNS,
  properties: {
    id: { type: 'string', pattern: '^[0-9]+$' },
    seq: { type: 'integer', minimum: 1, description: "its place in the user's chain" },
    event_id: { type: 'string', minLength: 1 },
    user_id: { type: 'string', minLength: 1 },
    task_id: { type: ['string', 'null'] },
    operation: {
      type: 'string',
      // The event types of the topics the audit target consumes (anything else is refused before it).
      enum: (Object.keys(EVENT_TYPES) as EventType[]).filter((t) =>
        (auditManifest.consumes.topics as readonly string[]).includes(EVENT_TYPES[t].topic),
      ),
      description: 'the event type',
    },
    occurred_at: instant,
    recorded_at: instant,
    change: {
      type: 'object',
      additionalProperties: false,
      required: ['before', 'after'],
      description:
        'the fields that changed, before and after (a create or a reminder: after only; a delete: before only)',
      properties: { before: { type: ['object', 'null'] }, after: { type: ['object', 'null'] } },
    },
    trace_id: { type: ['string', 'null'] },
    client_ip: { type: ['string', 'null'] },
    user_agent: { type: ['string', 'null'] },
    prev_hash: { ...hashDoc, description: "the previous record's hash (zeros for a user's first)" },
    hash: hashDoc,
  },
} as const;

const single = (v: unknown): string | undefined =>
  v === undefined ? undefined : Array.isArray(v) ? String(v[v.length - 1]) : String(v);

function parseFilter(input: Record<string, unknown>, allowed: string[], issues: FieldIssue[]): AuditFilter {
  issues.push(...unknownParameters(input, allowed));
  const taskId = single(input.task_id) ?? null;
  if (taskId !== null && (taskId.length === 0 || codePoints(taskId) > 100 || textProblem(taskId)))
    issues.push({ path: 'task_id', message: 'must be a task id' });
  // Each value as the document states it: event types joined by commas (the parameter may repeat).
  const rawOps = input.operation === undefined ? [] : [input.operation].flat().map(String);
  if (rawOps.some((o) => !OPERATIONS.test(o)))
    issues.push({
      path: 'operation',
      message: 'must be event types joined by commas, such as task.updated,reminder.triggered',
    });
  const operations = rawOps.flatMap((o) => o.split(','));
  const instant = (key: 'from' | 'to') => {
    const raw = single(input[key]);
    if (raw === undefined) return null;
    // `occurred_at >= from` and `< to`: a bound finer than a millisecond (records keep one) rounds up.
    const v = parseInstant(raw, 'ceil');
    if (v === null) issues.push({ path: key, message: INSTANT_HINT });
    return v;
  };
  return { taskId, operations, from: instant('from'), to: instant('to') };
}

export function parseAuditQuery(input: Record<string, unknown>): AuditQuery {
  const issues: FieldIssue[] = [];
  const filter = parseFilter(input, [...FILTER_KEYS, 'limit', 'cursor'], issues);
  let limit = DEFAULT_LIMIT;
  const rawLimit = single(input.limit);
  if (rawLimit !== undefined) {
    limit = Number(rawLimit);
    if (!/^\d+$/.test(rawLimit) || limit < 1 || limit > MAX_LIMIT)
      issues.push({ path: 'limit', message: `must be an integer 1-${MAX_LIMIT}` });
  }
  let cursor: string | null = null;
  const rawCursor = single(input.cursor);
  if (rawCursor) {
    const decoded = Buffer.from(rawCursor, 'base64url').toString('utf8');
    const m = /^a:(\d{1,19})$/.exec(decoded);
    // A record id is a bigint: 19 digits can still overflow it.
    if (!m || BigInt(m[1]!) > 9_223_372_036_854_775_807n)
      issues.push({ path: 'cursor', message: 'is not a cursor this API returned' });
    else cursor = m[1]!;
  }
  if (issues.length) throw new ValidationError(issues);
  return { ...filter, limit, cursor };
}

const encodeCursor = (id: string) => Buffer.from(`a:${id}`).toString('base64url');

function whereOf(userId: string, f: AuditFilter): { where: string[]; params: unknown[] } {
  const params: unknown[] = [userId];
  const where = ['user_id = $1'];
  const p = (v: unknown) => {
    params.push(v);
    return `$${params.length}`;
  };
  if (f.taskId) where.push(`task_id = ${p(f.taskId)}`);
  if (f.operations.length) where.push(`operation = ANY(${p(f.operations)}::text[])`);
  if (f.from) where.push(`occurred_at >= ${p(f.from)}`);
  if (f.to) where.push(`occurred_at < ${p(f.to)}`);
  return { where, params };
}

export async function listAudit(
  db: Queryable,
  userId: string,
  q: AuditQuery,
): Promise<{ items: AuditRecord[]; next_cursor: string | null }> {
  const { where, params } = whereOf(userId, q);
  if (q.cursor) {
    params.push(q.cursor);
    where.push(`id < $${params.length}`);
  }
  params.push(q.limit + 1);
  const rows = (
    await db.query<AuditRow>(
      `SELECT ${AUDIT_COLUMNS} FROM audit_log WHERE ${where.join(' AND ')} ORDER BY audit_log.id DESC LIMIT $${params.length}`,
      params,
    )
  ).rows.map(toRecord);
  const items = rows.slice(0, q.limit);
  const last = items[items.length - 1];
  return { items, next_cursor: rows.length > q.limit && last ? encodeCursor(last.id) : null };
}

/**
 * Every matching record, oldest first, one keyset page at a time: at most `pageSize` records and, past the first,
 * no more than `pageBytes` of them. One statement sizes the next `limit` records (their text as PostgreSQL
 * renders it, which is what the driver receives and JSON.stringify gives back) and reads those that fit, so the
 * page is one snapshot. `limit` follows what fitted last (a quarter more; twice as many after a page that was
 * not cut, up to `pageSize`), so records that do not fit are not sized again and again.
 */
export async function* auditPages(
  db: Queryable,
  userId: string,
  f: AuditFilter,
  pageSize = EXPORT_PAGE,
  pageBytes = EXPORT_PAGE_BYTES,
): AsyncGenerator<AuditRecord[]> {
  let after = '0';
  let limit = pageSize;
  for (;;) {
    const { where, params } = whereOf(userId, f);
    const p = (v: unknown) => {
      params.push(v);
      return `$${params.length}`;
    };
    where.push(`id > ${p(after)}`);
    const rows = (
      await db.query<AuditRow & { fetched: number }>(
        `WITH sized AS (
           SELECT id, sum(bytes) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) - bytes AS bytes_before
           FROM (
             SELECT id, octet_length(change::text) + octet_length(event_id) + octet_length(user_id)
               + coalesce(octet_length(task_id), 0) + coalesce(octet_length(trace_id), 0)
               + coalesce(octet_length(client_ip), 0) + coalesce(octet_length(user_agent), 0)
               + ${RECORD_OVERHEAD} AS bytes
             FROM audit_log WHERE ${where.join(' AND ')} ORDER BY id LIMIT ${p(limit)}
           ) next_records
         )
         SELECT ${AUDIT_COLUMNS}, (SELECT count(*) FROM sized)::int AS fetched
         FROM audit_log
         WHERE ${where.join(' AND ')}
           AND audit_log.id <= (SELECT max(id) FROM sized WHERE bytes_before < ${p(pageBytes)})
         ORDER BY audit_log.id`,
        params,
      )
    ).rows;
    if (rows.length === 0) return;
    const fetched = Number(rows[0]!.fetched);
    yield rows.map(toRecord);
    const cut = rows.length < fetched;
    if (!cut && fetched < limit) return;
    after = rows[rows.length - 1]!.id;
    limit = Math.min(pageSize, cut ? rows.length + Math.ceil(rows.length / 4) : 2 * limit);
  }
}

/**
 * RFC 4180 field; a leading = + - @ is neutralised so spreadsheets do not evaluate it (CSV injection). A field
 * with a semicolon is quoted too: a spreadsheet whose locale separates lists with `;` splits an unquoted one
 * there, and the part after it (`x;=1+1`) would be a cell of its own, evaluated.
 */
export function csvField(v: unknown): string {
  let s = v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",;\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function exportStream(
  db: Queryable,
  userId: string,
  f: AuditFilter,
  format: 'ndjson' | 'csv',
): Readable {
  // Lines are rendered as the client reads: a chunk at a time (a record's line, or lines up to EXPORT_CHUNK),
  // never a page's worth, and the next page is read only when the last chunk of this one has been taken.
  async function* chunks() {
    if (format === 'csv') yield Buffer.from(CSV_COLUMNS.join(',') + '\r\n');
    let text = '';
    for await (const page of auditPages(db, userId, f)) {
      for (const r of page) {
        text +=
          format === 'ndjson'
            ? JSON.stringify(r) + '\n'
            : CSV_COLUMNS.map((c) => csvField(r[c])).join(',') + '\r\n';
        if (text.length >= EXPORT_CHUNK) {
          yield Buffer.from(text);
          text = '';
        }
      }
    }
    if (text) yield Buffer.from(text);
  }
  return Readable.from(chunks(), { objectMode: false, highWaterMark: 64 * 1024 });
}

const security = [{ bearerAuth: [] }];

export async function registerAuditApi(app: FastifyInstance, deps: { db: Queryable; verify: Verifier }) {
  await authenticatedScope(app, deps, async (scope, userOf) => {
    scope.get(
      '/api/audit',
      {
        schema: {
          tags: ['audit'],
          summary: 'Your audit records, newest first (filters: task_id, operation, from, to; cursor)',
          security,
          querystring: {
            type: 'object',
            properties: {
              ...filterQueryDoc,
              limit: { type: 'integer', minimum: 1, maximum: MAX_LIMIT },
              cursor: { type: 'string' },
            },
          },
          response: okWith('A page of audit records (next_cursor when there are more)', {
            type: 'object',
            additionalProperties: false,
            required: ['items', 'next_cursor'],
            properties: {
              items: { type: 'array', maxItems: MAX_LIMIT, items: auditRecordDoc },
              next_cursor: { type: ['string', 'null'], description: 'send it as cursor= for the next page' },
            },
          }),
        },
      },
      async (req) => listAudit(deps.db, userOf(req), parseAuditQuery(req.query as Record<string, unknown>)),
    );
    scope.get(
      '/api/audit/export',
      {
        schema: {
          tags: ['audit'],
          summary: 'Export your audit records (format=ndjson|csv), streamed, oldest first',
          security,
          querystring: {
            type: 'object',
            properties: {
              ...filterQueryDoc,
              format: { type: 'string', enum: ['ndjson', 'csv'], default: 'ndjson' },
            },
          },
          response: {
            200: {
              description: 'The records, one per line (NDJSON) or row (CSV)',
              content: {
                'application/x-ndjson': { schema: { type: 'string' } },
                'text/csv': { schema: { type: 'string' } },
              },
            },
          },
        },
      },
      async (req, reply) => {
        const input = req.query as Record<string, unknown>;
        const issues: FieldIssue[] = [];
        const format = single(input.format) ?? 'ndjson';
        if (format !== 'ndjson' && format !== 'csv')
          issues.push({ path: 'format', message: 'must be ndjson or csv' });
        const filter = parseFilter(input, [...FILTER_KEYS, 'format'], issues);
        if (issues.length) throw new ValidationError(issues);
        const stream = exportStream(deps.db, userOf(req), filter, format as 'ndjson' | 'csv');
        // After the 200 and the first bytes a failure can only abort the response (no terminating chunk): the
        // client sees a broken transfer, never a complete-looking file.
        stream.once('error', (err) =>
          req.log.error({ err }, 'audit export failed part-way; the response was aborted'),
        );
        return reply
          .header('content-disposition', `attachment; filename="taskflow-audit.${format}"`)
          .header('cache-control', 'no-store')
          .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson')
          .send(stream);
      },
    );
  });
}
