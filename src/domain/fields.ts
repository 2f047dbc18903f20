/**
 * Request bodies as zod schemas, one per field (ADR 0014): the helpers every body's fields share. A field's
 * schema validates (its messages are what the API answers, with the field's path) and documents itself: its
 * JSON Schema is generated (`fieldJsonSchema`), with `.meta()` for what a check cannot express.
 */
import * as z from 'zod';
import { fail, ok, type FieldIssue, type Result } from './errors.ts';

export type Fields = Record<string, z.ZodType>;

/** Adds an issue with `message` to a check's or a transform's context, at `path` below the field. */
export const refuse = (
  ctx: { issues: unknown[]; value: unknown },
  message: string,
  path: PropertyKey[] = [],
): void => {
  (ctx.issues as z.core.$ZodRawIssue[]).push({ code: 'custom', message, input: ctx.value, path });
};

export const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** An issue for each key of a query string that is not `allowed`: a misspelt parameter is refused, not ignored. */
export function unknownParameters(query: Record<string, unknown>, allowed: readonly string[]): FieldIssue[] {
  return Object.keys(query)
    .filter((key) => !allowed.includes(key))
    .map((key) => ({
      // A parameter with no name (`?=x`) is named as such, not left to read as the body.
      path: key === '' ? '(empty name)' : key,
      message: allowed.length
        ? `unknown query parameter; allowed: ${allowed.join(', ')}`
        : 'unknown query parameter; this route takes none',
    }));
}

/**
 * The issues of a query whose parameters each take one value: an unknown one (unknownParameters), and one
 * given twice (which value was meant is a guess; the last was taken).
 */
export function singleValuedParameterIssues(
  query: Record<string, unknown>,
  allowed: readonly string[],
): FieldIssue[] {
  const issues = unknownParameters(query, allowed);
  for (const key of allowed)
    if (Array.isArray(query[key])) issues.push({ path: key, message: 'must be given once' });
  return issues;
}

/** `tags[2]`, `keys.auth`: a field's name and the path below it, as FieldIssue paths are written. */
export const issuePath = (key: string, below: readonly PropertyKey[]): string =>
  key + below.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');

/** Parses `value` with a field's schema, its issues named by the field; undefined when it failed. */
export function parseField(key: string, schema: z.ZodType, value: unknown, issues: FieldIssue[]): unknown {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  for (const i of parsed.error.issues) issues.push({ path: issuePath(key, i.path), message: i.message });
  return undefined;
}

/**
 * A JSON object body of `fields`: unknown fields refused by name, `required` ones asked for, each present
 * field parsed with its schema (a field left out stays out of the result).
 */
export function parseBody<F extends Fields>(
  input: unknown,
  fields: F,
  opts: { required?: readonly (keyof F & string)[]; message?: string } = {},
): Result<{ [K in keyof F]?: z.output<F[K]> }> {
  if (!isObject(input)) return fail([{ path: '', message: opts.message ?? 'body must be a JSON object' }]);
  const names = Object.keys(fields);
  const issues: FieldIssue[] = Object.keys(input)
    .filter((k) => !names.includes(k))
    .map((k) => ({ path: k, message: `unknown field; allowed: ${names.join(', ')}` }));
  for (const key of opts.required ?? [])
    if (input[key] === undefined) issues.push({ path: key, message: 'is required' });
  const out: Record<string, unknown> = {};
  for (const key of names) {
    if (input[key] === undefined) continue;
    const before = issues.length;
    const value = parseField(key, fields[key]!, input[key], issues);
    if (issues.length === before) out[key] = value;
  }
  return issues.length ? fail(issues) : ok(out as { [K in keyof F]?: z.output<F[K]> });
}

/** A field's JSON Schema as a client sends it (OpenAPI, MCP tool arguments). */
export function fieldJsonSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _, ...json } = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<
    string,
    unknown
  >;
  return json;
}

/** The OpenAPI schema of a JSON object body of `fields`. */
export const bodyJsonSchema = (fields: Fields, extra: Record<string, unknown> = {}) => ({
  type: 'object',
  additionalProperties: false,
  properties: Object.fromEntries(Object.entries(fields).map(([k, s]) => [k, fieldJsonSchema(s)])),
  ...extra,
});
