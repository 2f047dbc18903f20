/**
 * What Kafka and the embedded bus do with one partition's messages once they have fetched them: runs of up
 * to `maxBatch` through the consumer, in order, paced by `batchIntervalMs`; the position committed only past
 * handled (or dead-lettered) messages, at most every COMMIT_INTERVAL_MS while busy, and by the transport
 * within that interval once idle (`commitDueIn`) and on stop. A commit the transport refuses means the
 * partition is no longer this member's (fenced): the work ends and the new owner goes on from the last commit.
 */
import { COMMIT_INTERVAL_MS } from './consumer.ts';

export interface PartitionWorkerOptions<M> {
  /** Handles a run in order; resolves how many are done (fewer on shutdown only). */
  consume(run: readonly M[]): Promise<number>;
  /** Commits the position after `last`; false when the partition is no longer this member's. */
  commit(last: M): Promise<boolean>;
  maxBatch: number;
  batchIntervalMs: number;
  /** False once this member may no longer handle the partition (the embedded bus's lease may have lapsed). */
  owns?(): boolean;
}

export class PartitionWorker<M> {
  /** The last message handled since the last commit. */
  private handled: M | undefined;
  private committedAt = 0;
  private batchAt = 0;
  /** The partition went to another member: its commit was refused, or its lease lapsed. */
  lost = false;

  constructor(private readonly o: PartitionWorkerOptions<M>) {}

  /**
   * How long a batch of `count` messages ready now waits for more, so that a busy consumer runs one
   * transaction for many messages (SubscribeOptions.batchIntervalMs): 0 when it goes at once.
   */
  waitBefore(count: number): number {
    const early = this.batchAt + this.o.batchIntervalMs - Date.now();
    return early > 0 && count < this.o.maxBatch ? early : 0;
  }

  /**
   * Handles `messages` (consecutive, from the partition's position) in runs, committing when due; resolves
   * how many are done. Fewer than all: shutdown, or the partition was lost (`lost`).
   */
  async handle(messages: readonly M[]): Promise<number> {
    if (this.lost) return 0;
    this.batchAt = Date.now();
    let done = 0;
    while (done < messages.length) {
      if (this.o.owns && !this.o.owns()) {
        this.lost = true; // the uncommitted rest is redelivered to the owner
        break;
      }
      const run = messages.slice(done, done + this.o.maxBatch);
      const n = await this.o.consume(run);
      if (n > 0) this.handled = run[n - 1];
      done += n;
      if (n < run.length) break; // shutdown: the rest stays uncommitted
      // A commit that failed keeps its message to commit (commit): the run goes on, and it is tried again.
      if (this.commitDueIn() <= 0 && !(await this.commit().catch(() => true))) break;
    }
    return done;
  }

  /** Milliseconds until the handled messages are due a commit (0: now); Infinity when none waits. */
  commitDueIn(): number {
    return this.handled === undefined ? Infinity : this.committedAt + COMMIT_INTERVAL_MS - Date.now();
  }

  /** Commits the position after the last handled message now; false when the partition was lost. */
  async commit(): Promise<boolean> {
    const last = this.handled;
    if (last === undefined) return !this.lost;
    this.handled = undefined;
    this.committedAt = Date.now();
    let committed: boolean;
    try {
      committed = await this.o.commit(last);
    } catch (err) {
      this.handled ??= last; // still to commit (on stop, say), unless a later message is handled since
      throw err;
    }
    if (committed) return true;
    this.lost = true;
    return false;
  }
}
