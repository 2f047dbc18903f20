/**
 * A background loop of rounds (the relay, the reminder scheduler, the notification delivery worker): run a
 * round, wait as long as it asks or until poked, and on an error log it and retry with capped exponential
 * backoff, so a database or broker outage never ends the loop.
 */
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { backoffDelay } from './retry.ts';
import { waitForEvent } from './wait.ts';
import { errorWithCause } from './error-text.ts';

export interface TickLoopOptions {
  /** Names the loop in its log lines ("relay", "reminder scheduler"). */
  name: string;
  log: Logger;
  /**
   * One round of work. Resolves how long to wait before the next round (0 runs it at once), or an idle round's
   * wait: a round that did not do the work (a relay standing by), which says nothing of whether the work would
   * now succeed, so it neither logs a recovery nor resets the backoff of the failures before it.
   */
  round: () => Promise<number | IdleRound>;
  /** After a poke, wait this long before the round, so a burst of pokes is served by one round. */
  lingerMs?: number;
  /**
   * After a poke, wait until at least this long has passed since the previous round began: while pokes keep
   * coming (a busy writer), rounds come at most this often and each takes what arrived meanwhile.
   */
  minIntervalMs?: number;
}

/** A round that did not do the loop's work (see TickLoopOptions.round). */
export interface IdleRound {
  idle: true;
  waitMs: number;
}

const RETRY = { maxAttempts: 0, baseDelayMs: 250, maxDelayMs: 15_000 };

export class TickLoop {
  private readonly stopping = new AbortController();
  private readonly wake = new EventEmitter();
  private running: Promise<void> | undefined;
  /** A poke that came while a round ran: the round may have looked before that work was committed. */
  private poked = false;

  constructor(private readonly opts: TickLoopOptions) {}

  /** Aborted once `stop` is called: rounds check it to cut long work short. */
  get signal(): AbortSignal {
    return this.stopping.signal;
  }

  start(): void {
    this.running ??= this.run();
  }

  /** Ends the current wait: the next round runs now (new work was committed in this process). */
  poke(): void {
    this.poked = true;
    this.wake.emit('wake');
  }

  /** Stops after the current round. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.running;
  }

  private async run(): Promise<void> {
    const { name, log, round, lingerMs = 0, minIntervalMs = 0 } = this.opts;
    let failures = 0;
    let roundAt = 0;
    while (!this.signal.aborted) {
      let waitMs: number;
      this.poked = false;
      roundAt = Date.now();
      try {
        const result = await round();
        if (typeof result === 'number') {
          waitMs = result;
          if (failures > 0) log.info({ after_failures: failures }, `${name} recovered`);
          failures = 0;
        } else waitMs = result.waitMs;
      } catch (err) {
        failures++;
        const delay = backoffDelay(failures, RETRY);
        log.warn({ err: errorWithCause(err), failures, retry_in_ms: delay }, `${name} failed; will retry`);
        await this.pause(delay);
        continue;
      }
      if (waitMs <= 0) continue;
      const poked = this.poked || (await waitForEvent(this.wake, 'wake', waitMs, this.signal));
      const linger = Math.max(lingerMs, roundAt + minIntervalMs - Date.now());
      if (poked && linger > 0) await this.pause(linger);
    }
  }

  private pause(ms: number): Promise<void> {
    return sleep(ms, undefined, { signal: this.signal }).catch(() => undefined);
  }
}
