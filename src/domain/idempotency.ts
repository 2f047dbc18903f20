/**
 * Idempotency keys of task creates and chat messages (the IETF draft's `Idempotency-Key` header; MCP `idempotency_key`): a key
 * is 1-255 visible ASCII characters chosen by the client; a request is identified by the hash of its body
 * with object keys sorted, so the same body written in another key order is the same request.
 */
import { createHash } from 'node:crypto';
import { canonicalJson } from './canonical-json.ts';
import { ValidationError } from './errors.ts';

/** 1-255 visible ASCII characters (also the OpenAPI pattern of the header). */
export const IDEMPOTENCY_KEY_PATTERN = '^[!-~]{1,255}$';
const KEY = new RegExp(IDEMPOTENCY_KEY_PATTERN);

/** The key, or undefined when none was given; ValidationError naming `field` when it is malformed. */
export function parseIdempotencyKey(raw: unknown, field: string): string | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw === 'string' && KEY.test(raw)) return raw;
  throw new ValidationError([
    { path: field, message: 'must be 1-255 visible ASCII characters (e.g. a UUID), given once' },
  ]);
}

/** The OpenAPI headers object of a route taking an Idempotency-Key, its meaning there in `description`. */
export const idempotencyKeyHeader = (description: string) =>
  ({
    type: 'object',
    properties: { 'idempotency-key': { type: 'string', pattern: IDEMPOTENCY_KEY_PATTERN, description } },
  }) as const;

export function requestHash(body: unknown): string {
  return createHash('sha256').update(canonicalJson(body)).digest('hex');
}
