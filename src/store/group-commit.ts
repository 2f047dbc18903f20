/**
 * Group commit: concurrent writes that arrive while the previous group is being written are written together
 * by one call (one statement, one commit), and each caller's promise settles once that call did. Nothing
 * waits on a timer: at low rates a group is a single write; under load, the writes queued during one
 * statement make the next group. A group that fails is written again one item at a time, so an item that
 * cannot be written fails alone and the others still go through. Up to `inFlight` groups are written at
 * once (a pool of connections; 1 for a single-connection database).
 */
export class GroupCommit<T> {
  private readonly queue: { item: T; resolve: () => void; reject: (err: unknown) => void }[] = [];
  private writers = 0;

  constructor(
    private readonly write: (items: readonly T[]) => Promise<void>,
    private readonly opts: { inFlight: number; maxGroup: number } = { inFlight: 1, maxGroup: 64 },
  ) {}

  submit(item: T): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (this.writers < this.opts.inFlight) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.writers++;
    try {
      while (this.queue.length > 0) {
        const group = this.queue.splice(0, this.opts.maxGroup);
        try {
          await this.write(group.map((g) => g.item));
          for (const g of group) g.resolve();
        } catch (err) {
          if (group.length === 1) {
            group[0]!.reject(err);
            continue;
          }
          for (const g of group)
            await this.write([g.item]).then(
              () => g.resolve(),
              (e: unknown) => g.reject(e),
            );
        }
      }
    } finally {
      this.writers--;
    }
  }
}
