/** A field-level problem with client input; `path` names the field (e.g. `tags[2]`, `recurrence.rrule`). */
export interface FieldIssue {
  path: string;
  message: string;
}

export type Result<T> = { ok: true; value: T } | { ok: false; issues: FieldIssue[] };

export const ok = <T>(value: T): Result<T> => ({ ok: true, value });
export const fail = <T>(issues: FieldIssue[]): Result<T> => ({ ok: false, issues });

/** Domain errors the edges (REST, MCP) translate to their own error shapes. */
export class ValidationError extends Error {
  constructor(readonly issues: FieldIssue[]) {
    super(issues.map((i) => `${i.path}: ${i.message}`).join('; '));
    this.name = 'ValidationError';
  }
}

/**
 * Fields each valid, together impossible (a repeat rule that ends before its first repeat): 422, as a request
 * that conforms to the document but cannot be carried out (RFC 9110 15.5.21).
 */
export class UnprocessableError extends ValidationError {
  constructor(issues: FieldIssue[]) {
    super(issues);
    this.name = 'UnprocessableError';
  }
}

export class NotFoundError extends Error {
  constructor(what = 'task') {
    super(`${what} not found`);
    this.name = 'NotFoundError';
  }
}

/** A request the resource's current state does not allow (409; the message says what to do instead). */
export class ConflictError extends Error {
  override name = 'ConflictError';
  readonly statusCode = 409;
}

export class VersionConflictError extends Error {
  constructor(
    readonly expected: ExpectedVersion,
    readonly actual: number,
  ) {
    super(`version mismatch: If-Match ${[expected].flat().join(', ')}, current ${actual}`);
    this.name = 'VersionConflictError';
  }
}

/** The version a conditional write requires: one, or any of a list (an If-Match with several ETags). */
export type ExpectedVersion = number | readonly number[];

/** Throws VersionConflictError unless `actual` is (one of) the expected version(s); none expected takes any. */
export function assertVersion(expected: ExpectedVersion | undefined, actual: number): void {
  if (expected === undefined) return;
  if (typeof expected === 'number' ? expected !== actual : !expected.includes(actual))
    throw new VersionConflictError(expected, actual);
}

/** The service refuses new work for now (writes queue longer than it accepts); retry after a moment. */
export class OverloadedError extends Error {
  constructor(
    message: string,
    readonly retryAfterSeconds = 1,
  ) {
    super(message);
    this.name = 'OverloadedError';
  }
}

/** A service the request needs refused it or did not answer (the mail server): 503, retry later. */
export class DependencyFailedError extends OverloadedError {
  override name = 'DependencyFailedError';
}

/** Too many requests from one user (or one client address, unauthenticated) in the current window. */
export class RateLimitedError extends Error {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
    this.name = 'RateLimitedError';
  }
}

/** An Idempotency-Key used again with another request body (422): the key names another request. */
export class IdempotencyMismatchError extends Error {
  constructor(readonly key: string) {
    super(
      `Idempotency-Key "${key}" was used in the last 24 hours for a request with another body; use a new key for a new request`,
    );
    this.name = 'IdempotencyMismatchError';
  }
}
