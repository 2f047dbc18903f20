/** Named leases with expiry in the database: one holder at a time, taken over when it stops renewing. */
import type { Queryable } from './db.ts';

export async function tryAcquireLease(
  db: Queryable,
  name: string,
  holder: string,
  ttlMs: number,
): Promise<boolean> {
  const r = await db.query(
    `INSERT INTO leases (name, holder, lease_until) VALUES ($1, $2, now() + ($3::int * interval '1 millisecond'))
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until
     WHERE leases.holder = excluded.holder OR leases.lease_until < now()
     RETURNING holder`,
    [name, holder, ttlMs],
  );
  return r.rowCount > 0;
}

export async function releaseLease(db: Queryable, name: string, holder: string): Promise<void> {
  await db.query('DELETE FROM leases WHERE name = $1 AND holder = $2', [name, holder]);
}
