/**
 * A task's version as an HTTP validator: responses carry it as the ETag, and If-Match makes a write a
 * compare-and-set (the task API and the recurrence routes both use it).
 */
import { ValidationError } from '../domain/errors.ts';
import type { Task } from '../domain/task.ts';

export const etag = (task: Task) => `"${task.version}"`;

/** Parses If-Match: `"3"`, `W/"3"` or `3`; `*` or absent means any version. */
export function parseIfMatch(header: string | undefined): number | undefined {
  if (header === undefined || header.trim() === '*') return undefined;
  const m = /^\s*(?:W\/)?"?(\d{1,9})"?\s*$/.exec(header);
  if (!m)
    throw new ValidationError([
      { path: 'If-Match', message: 'must be the task version as an ETag, e.g. "3"' },
    ]);
  return Number(m[1]);
}
