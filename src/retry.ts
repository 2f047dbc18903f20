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
