/**
 * Backoff: the retry policy and its full-jitter delays, used by the consumer rules (bus/middleware.ts), the
 * tick loops and the transports; and retrying one operation until it succeeds (subscribing, rejoining a
 * consumer group, creating topics): capped exponential backoff between failures, each failure reported, and
 * an abort signal that ends the waiting at once. Rounds that run forever are a TickLoop instead.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/** How often to try (attempts in all) and the bounds of the exponential delay between tries. */
export interface RetryPolicy {
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 5, baseDelayMs: 200, maxDelayMs: 10_000 };

/** Full-jitter exponential backoff (AWS architecture blog): uniform in [0, min(max, base * 2^(n-1))]. */
export function backoffDelay(
  attempt: number,
  policy: RetryPolicy,
  random: () => number = Math.random,
): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(cap * random());
}

export interface RetryOptions {
  policy: RetryPolicy;
  signal: AbortSignal;
  /** The jitter of backoffDelay: a factor in [0, 1] of the capped delay (default: full jitter). */
  random?: () => number;
  /** Waits before the first attempt too, as it follows a failure the caller already saw. */
  waitFirst?: boolean;
  /** Whether a wait keeps the process alive (default true). */
  ref?: boolean;
  /** Called after each failed attempt (numbered from 1) with the wait before the next one. */
  onFailure(err: unknown, attempt: number, retryInMs: number): void;
}

/** Calls `attempt` until it resolves (true) or `signal` aborts (false); it never rejects. */
export async function retryWithBackoff(
  attempt: (n: number) => Promise<void>,
  opts: RetryOptions,
): Promise<boolean> {
  const { policy, signal, random, waitFirst = false, ref = true } = opts;
  let wait = waitFirst ? backoffDelay(1, policy, random) : 0;
  for (let n = 1; ; n++) {
    if (wait > 0) {
      try {
        await sleep(wait, undefined, { signal, ref });
      } catch {
        return false; // aborted
      }
    }
    if (signal.aborted) return false;
    try {
      await attempt(n);
      return true;
    } catch (err) {
      if (signal.aborted) return false;
      wait = backoffDelay(waitFirst ? n + 1 : n, policy, random);
      opts.onFailure(err, n, wait);
    }
  }
}

const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  '57P01', // admin_shutdown: the server is restarting
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: starting up or in recovery
  '53300', // too_many_connections
]);

/**
 * Whether an error says a dependency is unreachable (the database or the network) rather than that the
 * message cannot be handled: a socket error, a PostgreSQL connection-class SQLSTATE (08xxx, shutdown,
 * recovery) or the `pg` driver's own connection errors. Follows `cause` chains.
 */
export function isUnavailable(err: unknown, depth = 0): boolean {
  if (!err || typeof err !== 'object' || depth > 5) return false;
  const { code, message, cause } = err as { code?: unknown; message?: unknown; cause?: unknown };
  // Class 08 is connection trouble, except 08P01 (protocol_violation), which a statement can cause every time.
  if (
    typeof code === 'string' &&
    (UNAVAILABLE_CODES.has(code) || (/^08[0-9A-Z]{3}$/.test(code) && code !== '08P01'))
  )
    return true;
  if (
    typeof message === 'string' &&
    /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error)/.test(
      message,
    )
  )
    return true;
  return isUnavailable(cause, depth + 1);
}

/**
 * For a `.catch` of a dependency's first use: an error of it being unreachable is rethrown naming it and the
 * variable that points at it ("connect ECONNREFUSED 127.0.0.1:5432" alone did not say which); others as they are.
 */
export const nameUnreachable =
  (what: string) =>
  (err: unknown): never => {
    if (!isUnavailable(err)) throw err;
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(`cannot reach ${what}: ${message}`, { cause: err });
  };
