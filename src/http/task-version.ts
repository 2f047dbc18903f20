/**
 * A task's version as an HTTP validator: responses carry it as the ETag, and If-Match makes a write a
 * compare-and-set (the task API and the recurrence routes both use it).
 */
import { ValidationError } from '../domain/errors.ts';
import type { Task } from '../domain/task.ts';
import { REQUIRED_HEADER, type HeaderDoc } from './openapi.ts';

export const etag = (task: Task) => `"${task.version}"`;

/** The ETag response header of an answer that is a task (`etag`), for its OpenAPI document. */
export const etagHeaderDoc: HeaderDoc = {
  type: 'string',
  pattern: '^"[1-9][0-9]*"$',
  description:
    'The task\'s version ("3"): send it as If-Match so a write applies only if no one changed the task since',
  [REQUIRED_HEADER]: true,
};

/**
 * If-Match as the routes take it: the version as an ETag (`"3"`, `W/"3"` or `3`), a list of them separated by
 * commas (RFC 9110 13.1.1: any of them; at most 20), or `*` (any version).
 */
const ONE_VERSION = '(?:W/)?"?\\d{1,9}"?';
export const IF_MATCH_PATTERN = `^\\s*(?:\\*|${ONE_VERSION}(?:\\s*,\\s*${ONE_VERSION}){0,19})\\s*$`;
const IF_MATCH = new RegExp(IF_MATCH_PATTERN);

/** The If-Match request header of a task's writes, for their OpenAPI document (from the same pattern). */
export const ifMatchHeaderDoc = {
  type: 'object',
  properties: {
    'if-match': {
      type: 'string',
      pattern: IF_MATCH_PATTERN,
      description:
        'The version the task must have (its ETag, e.g. "3", or several separated by commas: any of them): otherwise 412 and nothing changes; absent or * takes any version',
    },
  },
} as const;

/** Parses If-Match (IF_MATCH_PATTERN) into the versions it accepts; absent or `*` means any version. */
export function parseIfMatch(header: string | undefined): readonly number[] | undefined {
  if (header === undefined) return undefined;
  if (!IF_MATCH.test(header))
    throw new ValidationError([
      {
        path: 'If-Match',
        message: 'must be the task version as an ETag, e.g. "3" (or several separated by commas, or *)',
      },
    ]);
  if (header.trim() === '*') return undefined;
  return header.split(',').map((tag) => Number(/\d+/.exec(tag)![0]));
}

/** The If-None-Match request header of a task's read, for its OpenAPI document. */
export const ifNoneMatchHeaderDoc = {
  type: 'object',
  properties: {
    'if-none-match': {
      type: 'string',
      description:
        'ETags the client has (e.g. "3", or several joined by commas): 304 without a body when one is the current version',
    },
  },
} as const;

/**
 * Whether If-None-Match names the task's current version (RFC 9110 13.1.2: a list of entity tags compared
 * weakly, or `*`): the client's copy is current and the answer is 304.
 */
export function noneMatchHits(header: string | undefined, task: Task): boolean {
  if (header === undefined) return false;
  if (header.trim() === '*') return true;
  return header
    .split(',')
    .map((t) => t.trim().replace(/^W\//, ''))
    .includes(etag(task));
}
