/**
 * Admission by the requests in flight (MAX_REQUESTS_IN_FLIGHT): once `max` requests have been in flight for
 * `standingMs` without a break, new ones are refused. Past its capacity a process only queues what it cannot
 * serve yet (Little's law: what is in flight over what completes per second is the wait), so a bound on what
 * stands in flight bounds the wait of what is accepted. A burst above `max` that drains within `standingMs`
 * (the requests read at once after a busy stretch of the thread) is not refused: the count may pass `max`
 * for that long. Pure: the caller gives the time.
 */
export class InFlightLimit {
  private inFlight = 0;
  /** Since when `max` or more have been in flight without a break (NaN: fewer now). */
  private fullSince = NaN;

  constructor(
    readonly max: number,
    private readonly standingMs: number,
  ) {}

  /** Whether a new request may be taken now. */
  admits(now: number): boolean {
    return !(this.inFlight >= this.max && now - this.fullSince > this.standingMs);
  }

  enter(now: number): void {
    if (++this.inFlight === this.max) this.fullSince = now;
  }

  leave(): void {
    if (--this.inFlight < this.max) this.fullSince = NaN;
  }

  get count(): number {
    return this.inFlight;
  }
}
