/** Named leases with expiry in the database: one holder at a time, taken over when it stops renewing. */
import type { Queryable } from './db.ts';

/**
 * Takes or renews the lease `name` for `holder` unless another holder's is still running. `held`: it is this
 * holder's now. `continued`: the lease was this holder's before the statement too, expired or not, so no one
 * else held it since this holder last did (another holder's acquisition writes its own name; its release
 * deletes the row). Both read in the statement's one snapshot: an acquisition by another holder after it
 * leaves the lease to that holder (`held` false). `previous`: who held it before, when this holder got it.
 */
export async function tryAcquireLease(
  db: Queryable,
  name: string,
  holder: string,
  ttlMs: number,
): Promise<{ held: boolean; continued: boolean; previous: string | null }> {
  const r = await db.query<{ previous: string | null }>(
    `WITH previous AS (SELECT holder FROM leases WHERE name = $1)
     INSERT INTO leases (name, holder, lease_until) VALUES ($1, $2, now() + ($3::int * interval '1 millisecond'))
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until
     WHERE leases.holder = excluded.holder OR leases.lease_until < now()
     RETURNING (SELECT holder FROM previous) AS previous`,
    [name, holder, ttlMs],
  );
  const row = r.rows[0];
  return { held: row !== undefined, continued: row?.previous === holder, previous: row?.previous ?? null };
}

export async function releaseLease(db: Queryable, name: string, holder: string): Promise<void> {
  await db.query('DELETE FROM leases WHERE name = $1 AND holder = $2', [name, holder]);
}

/**
 * Ends `holder`'s lease now but keeps its name on it: the next holder learns whom it took over from (the
 * relay reads its predecessor's batch size from it), which a release would erase.
 */
export async function expireLease(db: Queryable, name: string, holder: string): Promise<void> {
  await db.query(
    `UPDATE leases SET lease_until = now() - interval '1 millisecond' WHERE name = $1 AND holder = $2`,
    [name, holder],
  );
}
