/**
 * Waits for `event` on `emitter`, at most `ms`, or until `stop` aborts; resolves true when the event came.
 * A plain timer, not `AbortSignal.any([.., AbortSignal.timeout(ms)])`: on Node 20 the combined signal can be
 * garbage-collected during the wait and never fire (nodejs/node#57736), which stalled idle loops forever.
 */
import type { EventEmitter } from 'node:events';

export function waitForEvent(
  emitter: EventEmitter,
  event: string,
  ms: number,
  stop?: AbortSignal,
): Promise<boolean> {
  return new Promise((resolve) => {
    if (stop?.aborted) return resolve(false);
    const done = (woken: boolean) => {
      clearTimeout(timer);
      emitter.off(event, onEvent);
      stop?.removeEventListener('abort', onAbort);
      resolve(woken);
    };
    const onEvent = () => done(true);
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(false), ms);
    emitter.on(event, onEvent);
    stop?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * `p`, or a rejection naming `what` once `ms` pass first (the work itself goes on: a query is not cancelled).
 * The timer is cleared when `p` settles: none is left behind a read that answered (a deadline of seconds
 * holds the process no longer than the work it waits for would).
 */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
