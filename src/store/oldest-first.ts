/**
 * Prunes by age, a batch a statement, oldest first: the dedupe ledger, Idempotency-Key rows, a deleted task's
 * reminders, a forgotten series.
 */
import type { Queryable } from './db.ts';

/**
 * Runs `sql`, a DELETE of at most `batch` rows by age, until a statement deletes fewer or `goOn` says to stop
 * (asked before each batch but the first): short statements, so on PGlite other work runs between them, and a
 * prune of a million rows (seconds) can end between two of them (the target stopping). `sql` takes `$1`, the
 * time its walk of the age's index starts at, then `params`, then the batch's size; it answers one row:
 * `deleted` (the rows of the batch), `last` (the latest time among them, as text) and any other counts. Each
 * batch starts at the last one's `last`: from the start each time, every batch stepped over the index entries
 * of all those deleted before it (not yet vacuumed: a million ledger rows took 19.5 s, 3.2 s now,
 * docs/benchmarks.md); not after it, as rows of that very time may be left. Resolves every count summed.
 */
export async function deleteOldestFirst<Counts extends { deleted: number }>(
  q: Queryable,
  sql: string,
  params: readonly unknown[],
  batch: number,
  goOn: () => boolean,
): Promise<Counts> {
  const total: Record<string, number> = { deleted: 0 };
  let from = '-infinity';
  for (let first = true; first || goOn(); first = false) {
    const { last, ...counts } = (
      await q.query<Record<string, number | string | null>>(sql, [from, ...params, batch])
    ).rows[0]!;
    for (const [name, n] of Object.entries(counts)) total[name] = (total[name] ?? 0) + Number(n);
    if (Number(counts.deleted) < batch || last === null || last === undefined) break;
    from = String(last);
  }
  return total as Counts;
}
