import { OverloadedError } from '../domain/errors.ts';

interface Item<T> {
  item: T;
  at: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

const resolveAll = (items: readonly Item<unknown>[]) => {
  for (const g of items) g.resolve();
};

/**
 * Group commit: concurrent writes that arrive while the previous group is being written are written together
 * by one call (one statement, one commit), and each caller's promise settles once that call did. Nothing
 * waits on a timer: at low rates a group is a single write; under load, the writes queued during one
 * statement make the next group. A group that fails is written again one item at a time, so an item that
 * cannot be written fails alone and the others still go through. Up to `inFlight` groups are written at
 * once (a pool of connections; 1 for a single-connection database).
 *
 * Admission control: when the oldest item not yet written has waited longer than `maxWaitMs`, the writer is behind
 * and a new item is refused at once (OverloadedError: a 503 with Retry-After at the edge) rather than queued
 * for seconds; what was accepted keeps a bounded wait, and the rest of the pipeline (consumers sharing the
 * database) keeps its share of it.
 */
export class GroupCommit<T> {
  private readonly queue: Item<T>[] = [];
  /** The groups being written, for the age of the oldest create not yet written. */
  private readonly writing = new Set<{ at: number }[]>();
  private writers = 0;
  /** Written groups whose callers have yet to resume (see drain). */
  private deferred = 0;

  constructor(
    private readonly write: (items: readonly T[]) => Promise<void>,
    private readonly opts: {
      inFlight: number;
      maxGroup: number;
      maxWaitMs?: number;
      /**
       * Whether a group's callers resume only once the next group has gone to the database (see drain): for
       * a database in another process, which works on it meanwhile. In-process (PGlite) it would only delay
       * them behind the next statement.
       */
      overlap?: boolean;
    } = {
      inFlight: 1,
      maxGroup: 64,
    },
  ) {}

  /** How long the oldest item not yet written (queued or being written) has waited (ms); 0 when none. */
  queuedFor(now = Date.now()): number {
    let oldest = this.queue[0]?.at ?? now;
    for (const group of this.writing) oldest = Math.min(oldest, group[0]!.at);
    return now - oldest;
  }

  submit(item: T): Promise<void> {
    const now = Date.now();
    if (this.opts.maxWaitMs !== undefined && this.queuedFor(now) > this.opts.maxWaitMs)
      return Promise.reject(
        new OverloadedError(
          `writes are queued for more than ${this.opts.maxWaitMs} ms; not accepting more for now`,
        ),
      );
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ item, at: now, resolve, reject });
      if (this.writers < this.opts.inFlight) void this.drain();
    });
  }

  /** Takes the next group off the queue and starts its write (none when the queue is empty). */
  private writeNext(): { group: Item<T>[]; written: Promise<void> | undefined } {
    const group = this.queue.splice(0, this.opts.maxGroup);
    if (group.length === 0) return { group, written: undefined };
    this.writing.add(group);
    return { group, written: this.attempt(group.map((g) => g.item)) };
  }

  private async drain(): Promise<void> {
    this.writers++;
    try {
      let { group, written } = this.writeNext();
      while (written) {
        try {
          await written;
        } catch (err) {
          await this.oneByOne(group, err);
          ({ group, written } = this.writeNext());
          continue;
        }
        // Written. The next group goes to the database before this one's callers go on: the database works on
        // it while their answers are written. Its statement leaves on a later tick (the pool hands a client
        // over in process.nextTick, which waits for every promise callback queued before it), so the callers
        // resume after that, in setImmediate. With its answers written first the database waited for them:
        // +7-9 % creates per second on PostgreSQL (bench:api, docs/benchmarks.md).
        const done = group;
        ({ group, written } = this.writeNext());
        this.writing.delete(done);
        // The callers of groups written whole resume in the order of their groups.
        if ((written && this.opts.overlap) || this.deferred > 0) {
          this.deferred++;
          setImmediate(() => {
            this.deferred--;
            resolveAll(done);
          });
        } else resolveAll(done);
      }
    } finally {
      this.writers--;
    }
  }

  /** `write`, with a writer that throws before returning its promise failing the same way. */
  private attempt(items: T[]): Promise<void> {
    try {
      return this.write(items);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** A group that failed, written again one item at a time: an item that cannot be written fails alone. */
  private async oneByOne(group: Item<T>[], err: unknown): Promise<void> {
    try {
      if (group.length === 1) return group[0]!.reject(err);
      for (const g of group)
        await this.attempt([g.item]).then(
          () => g.resolve(),
          (e: unknown) => g.reject(e),
        );
    } finally {
      this.writing.delete(group);
    }
  }
}
