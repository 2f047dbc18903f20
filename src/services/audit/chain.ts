/**
 * The audit log's storage: append-only records, hash-chained per user so that tampering is detectable
 * (docs/architecture.md section 6).
 *
 *   hash = sha256_hex(prev_hash + canonicalJson(record without id, prev_hash, hash))
 *
 * or, with a chain key (AUDIT_CHAIN_KEY), HMAC-SHA256 keyed with it: then whoever can write the database but
 * does not hold the key cannot recompute the hashes of records they altered, and each record names its key
 * (`key_id`, a fingerprint) so that verify can use keys rotated out.
 * The first record of a user chains to GENESIS_HASH. canonicalJson sorts object keys (RFC 8785 style), so the
 * hash survives jsonb's key reordering. A retention purge deletes a prefix of a chain and keeps an anchor (the
 * last purged record's seq and hash), so what remains still verifies. `verifyChain` recomputes every chain and
 * names the first broken record of each user.
 */
import { canonicalJson } from '../../domain/canonical-json.ts';
import { createHmac, hash } from 'node:crypto';
import type { Db, Queryable } from '../../store/db.ts';

export const GENESIS_HASH = '0'.repeat(64);

export { canonicalJson };

export interface AuditChange {
  before: Record<string, unknown> | null;
  after: Record<string, unknown> | null;
}

/** What the consumer derives from an event; seq, prev_hash and hash are assigned by `appendAuditRecord`. */
export interface AuditInput {
  event_id: string;
  user_id: string;
  task_id: string | null;
  operation: string;
  occurred_at: string;
  recorded_at: string;
  change: AuditChange;
  trace_id: string | null;
  client_ip: string | null;
  user_agent: string | null;
}

export interface AuditRecord extends AuditInput {
  id: string;
  seq: number;
  prev_hash: string;
  hash: string;
}

/** The hashed content of a record: everything but the database id and the hashes themselves. */
export function hashedContent(r: AuditInput & { seq: number }): string {
  return canonicalJson({
    seq: r.seq,
    event_id: r.event_id,
    user_id: r.user_id,
    task_id: r.task_id,
    operation: r.operation,
    occurred_at: r.occurred_at,
    recorded_at: r.recorded_at,
    change: r.change,
    trace_id: r.trace_id,
    client_ip: r.client_ip,
    user_agent: r.user_agent,
  });
}

/** A chain key (AUDIT_CHAIN_KEY) and the fingerprint stored beside each record it keyed. */
export interface ChainKey {
  id: string;
  /** The key's bytes: a string's UTF-8, or bytes given in base64 (AUDIT_CHAIN_PREVIOUS_KEYS_BASE64). */
  secret: string | Buffer;
}

export const chainKey = (secret: string | Buffer): ChainKey => ({
  id: createHmac('sha256', secret).update('taskflow audit chain key id').digest('hex').slice(0, 16),
  secret,
});

export function recordHash(prevHash: string, r: AuditInput & { seq: number }, key?: ChainKey): string {
  const content = prevHash + hashedContent(r);
  if (key) return createHmac('sha256', key.secret).update(content).digest('hex');
  // One-shot: no Hash object per record (its construction showed in profiles of the audit consumer).
  return hash('sha256', content, 'hex');
}

/** What keys an anchor (a retention purge's mark) so that one cannot be made up without the key. */
const anchorMac = (key: ChainKey, a: { user_id: string; seq: number; hash: string }) =>
  createHmac('sha256', key.secret)
    .update(canonicalJson({ anchor: { user_id: a.user_id, seq: a.seq, hash: a.hash } }))
    .digest('hex');

/**
 * A timestamp column as PostgreSQL writes it when no Date can hold it ('infinity', '-infinity', past 275760-09-13,
 * the last instant a Date holds), else null: only a record altered in the database has one (appends write ISO
 * instants), and the driver's Date or Infinity in its place failed every reader of the user's records.
 */
const storedIfNoDate = (column: string) =>
  `CASE WHEN NOT isfinite(${column}) OR ${column} > '275760-09-13 00:00:00+00' THEN ${column}::text END AS ${column}_stored`;

export const AUDIT_COLUMNS = `id::text AS id, event_id, user_id, user_seq::text AS seq, task_id, operation, occurred_at,
  recorded_at, ${storedIfNoDate('occurred_at')}, ${storedIfNoDate('recorded_at')}, change, trace_id, client_ip,
  user_agent, prev_hash, hash`;

export interface AuditRow {
  id: string;
  event_id: string;
  user_id: string;
  seq: string;
  task_id: string | null;
  operation: string;
  occurred_at: Date | string | number;
  recorded_at: Date | string | number;
  /** The time as stored when no Date holds it (storedIfNoDate); the record then shows that. */
  occurred_at_stored: string | null;
  recorded_at_stored: string | null;
  change: AuditChange;
  trace_id: string | null;
  client_ip: string | null;
  user_agent: string | null;
  prev_hash: string;
  hash: string;
}

const iso = (d: Date | string | number) => new Date(d).toISOString();

/** The first time of a row that no Date holds (the record was altered), as stored. */
function timeWithoutDate(r: AuditRow): { column: string; stored: string } | null {
  if (r.occurred_at_stored !== null) return { column: 'occurred_at', stored: r.occurred_at_stored };
  if (r.recorded_at_stored !== null) return { column: 'recorded_at', stored: r.recorded_at_stored };
  return null;
}

export function toRecord(r: AuditRow): AuditRecord {
  return {
    id: r.id,
    event_id: r.event_id,
    user_id: r.user_id,
    seq: Number(r.seq),
    task_id: r.task_id,
    operation: r.operation,
    occurred_at: r.occurred_at_stored ?? iso(r.occurred_at),
    recorded_at: r.recorded_at_stored ?? iso(r.recorded_at),
    change: r.change,
    trace_id: r.trace_id,
    client_ip: r.client_ip,
    user_agent: r.user_agent,
    prev_hash: r.prev_hash,
    hash: r.hash,
  };
}

/**
 * Appends one record at the end of its user's chain, inside the caller's transaction. The chain head's row
 * lock serializes the appends of one user. Returns null when the event was already recorded (in the log, or
 * in the `dedupe` consumer's processed-event ledger, which it is then added to).
 */
export async function appendAuditRecord(
  tx: Queryable,
  input: AuditInput,
  opts: AppendOptions = {},
): Promise<AuditRecord | null> {
  return (await appendChained(tx, [input], opts))?.[0] ?? null;
}

export interface AppendOptions {
  /** The consumer whose processed-event ledger dedupes the records (see appendAuditRecords). */
  dedupe?: string;
  /** The chain key the new records' hashes are keyed with (none: plain SHA-256). */
  key?: ChainKey | undefined;
}

/**
 * `appendAuditRecord` for a run of records in two statements. The caller has deduplicated the run (one
 * record per event id, none recorded before), or names the consumer whose processed-event ledger does it
 * (`dedupe`): then the run's new event ids are recorded there by the first statement, and only their records
 * are appended (the first occurrence of an id in the run wins). If a record is in the log already the run
 * throws and its transaction must roll back, so a chain is never computed past a record that was not
 * written.
 */
export async function appendAuditRecords(
  tx: Queryable,
  inputs: readonly AuditInput[],
  opts: AppendOptions = {},
): Promise<AuditRecord[]> {
  if (inputs.length === 0) return [];
  const records = await appendChained(tx, inputs, opts);
  if (!records)
    throw new Error('an audit record of the run is in the log already; the run is appended one by one');
  return records;
}

/**
 * Locks the users' chain heads in user order (creating missing ones) and reads them, with the run's dedupe
 * when asked, in one statement; chains each user's records in the given order; writes the rows and the new
 * heads in a second one. Null, with the heads untouched, when an event id is in the log already.
 */
async function appendChained(
  tx: Queryable,
  inputs: readonly AuditInput[],
  { dedupe, key }: AppendOptions,
): Promise<AuditRecord[] | null> {
  const users = [...new Set(inputs.map((r) => r.user_id))].sort();
  const first = await tx.query<{
    fresh: string[] | null;
    heads: { user_id: string; last_seq: number; last_hash: string }[];
  }>(
    `WITH fresh AS (
       INSERT INTO processed_events (consumer, event_id) SELECT $3, unnest($4::text[])
        WHERE $3::text IS NOT NULL ON CONFLICT DO NOTHING RETURNING event_id
     ), heads AS (
       INSERT INTO audit_chain_heads (user_id, last_seq, last_hash)
       SELECT u, 0, $2 FROM unnest($1::text[]) AS u ORDER BY u
       ON CONFLICT (user_id) DO UPDATE SET user_id = excluded.user_id
       RETURNING user_id, last_seq, last_hash
     )
     SELECT (SELECT array_agg(event_id) FROM fresh) AS fresh,
            (SELECT json_agg(heads) FROM heads) AS heads`,
    [users, GENESIS_HASH, dedupe ?? null, dedupe ? inputs.map((i) => i.event_id) : []],
  );
  let todo = inputs;
  if (dedupe) {
    const fresh = new Set(first.rows[0]?.fresh ?? []);
    todo = inputs.filter((i) => fresh.delete(i.event_id)); // the first occurrence of an id wins
    if (todo.length === 0) return [];
  }
  const heads = new Map(
    (first.rows[0]?.heads ?? []).map((h) => [h.user_id, { seq: Number(h.last_seq), hash: h.last_hash }]),
  );
  const chained = todo.map((input) => {
    const rec = { ...input, occurred_at: iso(input.occurred_at), recorded_at: iso(input.recorded_at) };
    const head = heads.get(rec.user_id)!;
    const seq = head.seq + 1;
    const hash = recordHash(head.hash, { ...rec, seq }, key);
    heads.set(rec.user_id, { seq, hash });
    return { ...rec, seq, prev_hash: head.hash, hash };
  });
  const column = <K extends keyof (typeof chained)[number]>(k: K) => chained.map((r) => r[k]);
  const moved = [...new Set(chained.map((r) => r.user_id))];
  // The heads move only when every record was written (the count check): otherwise the caller rolls back.
  const inserted = await tx.query<{ id: string; event_id: string }>(
    `WITH ins AS (
       INSERT INTO audit_log (event_id, user_id, user_seq, task_id, operation, occurred_at, recorded_at, change,
         trace_id, client_ip, user_agent, prev_hash, hash, key_id)
       SELECT event_id, user_id, seq, task_id, operation, occurred_at, recorded_at, change, trace_id,
              client_ip, user_agent, prev_hash, hash, $18::text
         FROM ROWS FROM (unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::timestamptz[],
                                $7::timestamptz[]),
                         jsonb_array_elements($8::jsonb),
                         unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[]))
              WITH ORDINALITY AS t(event_id, user_id, seq, task_id, operation, occurred_at, recorded_at, change,
                                   trace_id, client_ip, user_agent, prev_hash, hash, ord)
        ORDER BY ord
       ON CONFLICT (event_id) DO NOTHING RETURNING id::text AS id, event_id
     ), moved AS (
       UPDATE audit_chain_heads h SET last_seq = v.seq, last_hash = v.hash
         FROM unnest($14::text[], $15::bigint[], $16::text[]) AS v(user_id, seq, hash)
        WHERE h.user_id = v.user_id AND (SELECT count(*) FROM ins) = $17
     )
     SELECT id, event_id FROM ins`,
    [
      column('event_id'),
      column('user_id'),
      column('seq'),
      column('task_id'),
      column('operation'),
      column('occurred_at'),
      column('recorded_at'),
      JSON.stringify(chained.map((r) => r.change)), // one jsonb parameter, as jsonArrayParam (store/db.ts)
      column('trace_id'),
      column('client_ip'),
      column('user_agent'),
      column('prev_hash'),
      column('hash'),
      moved,
      moved.map((u) => heads.get(u)!.seq),
      moved.map((u) => heads.get(u)!.hash),
      chained.length,
      key?.id ?? null,
    ],
  );
  if (inserted.rows.length !== chained.length) return null;
  const ids = new Map(inserted.rows.map((r) => [r.event_id, r.id]));
  return chained.map((r) => ({ ...r, id: ids.get(r.event_id)! }));
}

export interface BrokenRecord {
  user_id: string;
  /** The position in the user's chain of the first record that does not verify. */
  seq: number;
  /** Database id and event id of that record (null when the record is missing). */
  id: string | null;
  event_id: string | null;
  reason: string;
}

export interface VerifyResult {
  ok: boolean;
  users: number;
  records: number;
  /** How many of the verified records are not keyed (plain SHA-256). */
  unkeyed: number;
  /** The first broken record of each user whose chain does not verify. */
  broken: BrokenRecord[];
}

export interface VerifyOptions {
  userId?: string;
  /** The keys records may be keyed with: the current AUDIT_CHAIN_KEY and those rotated out. */
  keys?: readonly ChainKey[];
  /**
   * Every record and anchor must be keyed: a chain rewritten without keys by someone who cannot compute them
   * is then refused, not only one keyed record made plain (which is refused always).
   */
  requireKeyed?: boolean;
  /** Called after each page of records and each user's chain (verify of a large log takes minutes). */
  onProgress?: (p: VerifyProgress) => void;
}

export interface VerifyProgress {
  /** Records verified so far, of those there were when verify started. */
  records: number;
  recordsTotal: number;
  /** User chains done, of `usersTotal`. */
  users: number;
  usersTotal: number;
}

const PAGE = 1000;

async function verifyUser(
  db: Queryable,
  userId: string,
  opts: VerifyOptions,
  /** After each whole page: the user's records verified so far. */
  onPage: (records: number) => void = () => {},
): Promise<{ records: number; unkeyed: number; broken: BrokenRecord | null }> {
  const keys = new Map((opts.keys ?? []).map((k) => [k.id, k]));
  const anchor = (
    await db.query<{ seq: string; hash: string; key_id: string | null; mac: string | null }>(
      'SELECT seq::text, hash, key_id, mac FROM audit_anchors WHERE user_id = $1',
      [userId],
    )
  ).rows[0];
  const head = (
    await db.query<{ last_seq: string; last_hash: string }>(
      'SELECT last_seq::text, last_hash FROM audit_chain_heads WHERE user_id = $1',
      [userId],
    )
  ).rows[0];
  let prevSeq = anchor ? Number(anchor.seq) : 0;
  let prevHash = anchor ? anchor.hash : GENESIS_HASH;
  let records = 0;
  let unkeyed = 0;
  /**
   * Whether a keyed record came before: a plain one after it was rewritten without the key. (A keyed anchor
   * may come before plain records: a purge with the key of records written before it was set.)
   */
  let keyedBefore = false;
  /** The answer that `at` (a record, or the place in the chain of one that is missing) is broken. */
  const broken = (at: AuditRecord | number, reason: string) => ({
    records,
    unkeyed,
    broken:
      typeof at === 'number'
        ? { user_id: userId, seq: at, id: null, event_id: null, reason }
        : { user_id: userId, seq: at.seq, id: at.id, event_id: at.event_id, reason },
  });
  const missingKey = (id: string) =>
    `keyed with chain key ${id}, which verify was not given (AUDIT_CHAIN_KEY, AUDIT_CHAIN_PREVIOUS_KEYS)`;
  /** An anchor without its key's id or its MAC is plain (one half alone is no keyed anchor either). */
  const anchorPlain = anchor !== undefined && (anchor.mac === null || anchor.key_id === null);
  if (anchor) {
    const reason = ((): string | null => {
      if (anchor.mac === null || anchor.key_id === null)
        return opts.requireKeyed ? 'the retention anchor before it is not keyed' : null;
      const key = keys.get(anchor.key_id);
      if (!key) return `the retention anchor before it is ${missingKey(anchor.key_id)}`;
      return anchorMac(key, { user_id: userId, seq: prevSeq, hash: prevHash }) === anchor.mac
        ? null
        : 'the retention anchor before it does not match its key (the anchor was altered or made up)';
    })();
    if (reason) return broken(prevSeq + 1, reason);
  }
  // Records numbered at or before the anchor (or below 1) are never read below, yet the API lists them: a
  // purge leaves none there, so one was put there afterwards.
  const below = (
    await db.query<AuditRow & { key_id: string | null }>(
      `SELECT ${AUDIT_COLUMNS}, key_id FROM audit_log WHERE user_id = $1 AND user_seq <= $2 ORDER BY user_seq LIMIT 1`,
      [userId, prevSeq],
    )
  ).rows[0];
  if (below)
    return broken(
      toRecord(below),
      anchor
        ? `numbered at or before the retention anchor (${prevSeq}), whose records were purged: put there afterwards`
        : 'numbered below 1, where no chain starts: put there afterwards',
    );
  for (;;) {
    const rows = (
      await db.query<AuditRow & { key_id: string | null }>(
        `SELECT ${AUDIT_COLUMNS}, key_id FROM audit_log WHERE user_id = $1 AND user_seq > $2 ORDER BY user_seq LIMIT $3`,
        [userId, prevSeq, PAGE],
      )
    ).rows;
    for (const row of rows) {
      const r = toRecord(row);
      if (r.seq !== prevSeq + 1)
        return broken(
          r,
          `record(s) ${prevSeq + 1}${r.seq - 1 > prevSeq + 1 ? `..${r.seq - 1}` : ''} missing before it`,
        );
      if (r.prev_hash !== prevHash) return broken(r, 'prev_hash does not match the previous record');
      let key: ChainKey | undefined;
      if (row.key_id === null) {
        if (keyedBefore) return broken(r, 'not keyed, after keyed records (rewritten without the key)');
        if (opts.requireKeyed) return broken(r, 'not keyed');
      } else {
        // A plain anchor right before a keyed record: a purge never writes one (without the key it leaves such a
        // chain alone), so it was made up over deleted records.
        if (records === 0 && anchorPlain)
          return broken(r, 'keyed, after a retention anchor that is not (the anchor was made up)');
        key = keys.get(row.key_id);
        if (!key) return broken(r, missingKey(row.key_id));
        keyedBefore = true;
      }
      // Said as such: its hash could be recomputed over it (plain), yet no append writes one.
      const noDate = timeWithoutDate(row);
      if (noDate)
        return broken(
          r,
          `${noDate.column} is ${noDate.stored}, not a time a record is written with (the record was altered)`,
        );
      if (recordHash(r.prev_hash, r, key) !== r.hash)
        return broken(r, 'content does not match its hash (the record was altered)');
      prevSeq = r.seq;
      prevHash = r.hash;
      records++;
      if (!key) unkeyed++; // counted with the records verified: a broken one is neither
    }
    onPage(records);
    if (rows.length < PAGE) break;
  }
  if (!head && records > 0) return broken(prevSeq, 'chain head is missing');
  if (head && (Number(head.last_seq) !== prevSeq || head.last_hash !== prevHash))
    return broken(
      prevSeq + 1,
      `chain head is record ${head.last_seq} but the last stored record is ${prevSeq} (records removed at the end)`,
    );
  return { records, unkeyed, broken: null };
}

/**
 * Runs `fn` on one snapshot of the database (a read-only REPEATABLE READ transaction), so that appends
 * committing meanwhile (the audit consumer keeps running) cannot look like a chain whose head and records
 * disagree. A plain Queryable (already a transaction) is used as it is.
 */
function inSnapshot<T>(db: Queryable, fn: (q: Queryable) => Promise<T>): Promise<T> {
  if (!('transaction' in db)) return fn(db);
  return (db as Db).transaction(async (tx) => {
    await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    return fn(tx);
  });
}

/** Recomputes the chain of one user, or of every user; reads in pages (flat memory). */
export async function verifyChain(db: Queryable, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const users = opts.userId
    ? [opts.userId]
    : (
        await db.query<{ user_id: string }>(
          'SELECT user_id FROM audit_chain_heads UNION SELECT DISTINCT user_id FROM audit_log ORDER BY 1',
        )
      ).rows.map((r) => r.user_id);
  const result: VerifyResult = { ok: true, users: users.length, records: 0, unkeyed: 0, broken: [] };
  const { onProgress } = opts;
  const counted = !onProgress
    ? undefined
    : opts.userId
      ? await db.query<{ n: string }>('SELECT count(*)::text AS n FROM audit_log WHERE user_id = $1', [
          opts.userId,
        ])
      : await db.query<{ n: string }>('SELECT count(*)::text AS n FROM audit_log');
  const recordsTotal = Number(counted?.rows[0]?.n ?? 0);
  const progress = (users: number, records: number) =>
    onProgress?.({ records, recordsTotal, users, usersTotal: result.users });
  for (const [i, user] of users.entries()) {
    const r = await inSnapshot(db, (q) => verifyUser(q, user, opts, (n) => progress(i, result.records + n)));
    result.records += r.records;
    result.unkeyed += r.unkeyed;
    if (r.broken) {
      result.ok = false;
      result.broken.push(r.broken);
    }
    progress(i + 1, result.records);
  }
  return result;
}

/**
 * Retention: deletes, per user, the longest prefix of the chain whose records all occurred before `before`,
 * and moves the user's anchor to the last deleted record; without the key, a chain purged whole starts over
 * (no anchor, numbered from 1 again: an export from before has those numbers too). Returns how many records
 * it deleted.
 */
export async function purgeAudit(
  db: Db,
  before: Date,
  now: Date,
  key?: ChainKey,
): Promise<{ users: number; records: number }> {
  const users = (
    await db.query<{ user_id: string }>('SELECT DISTINCT user_id FROM audit_log WHERE occurred_at < $1', [
      before.toISOString(),
    ])
  ).rows.map((r) => r.user_id);
  let records = 0;
  let touched = 0;
  for (const user of users) {
    const n = await db.transaction(async (tx) => {
      await tx.query('SELECT 1 FROM audit_chain_heads WHERE user_id = $1 FOR UPDATE', [user]);
      const bounds = (
        await tx.query<{ keep_from: string | null; last: string | null }>(
          `SELECT (SELECT min(user_seq)::text FROM audit_log WHERE user_id = $1 AND occurred_at >= $2) AS keep_from,
                  (SELECT max(user_seq)::text FROM audit_log WHERE user_id = $1) AS last`,
          [user, before.toISOString()],
        )
      ).rows[0]!;
      if (bounds.last === null) return 0;
      const cut = bounds.keep_from === null ? Number(bounds.last) : Number(bounds.keep_from) - 1;
      // Without the key, a whole chain past retention starts over (no anchor, the head back at the start): a plain
      // anchor would stand right before the user's next record, keyed once AUDIT_CHAIN_KEY is set, which is what
      // verify refuses as made up. A plain anchor with nothing after it guards nothing a keyless writer could
      // not rewrite anyway.
      if (!key && bounds.keep_from === null) {
        const deleted = await tx.query('DELETE FROM audit_log WHERE user_id = $1', [user]);
        await tx.query('DELETE FROM audit_anchors WHERE user_id = $1', [user]);
        await tx.query('UPDATE audit_chain_heads SET last_seq = 0, last_hash = $2 WHERE user_id = $1', [
          user,
          GENESIS_HASH,
        ]);
        return deleted.rowCount;
      }
      const anchorRec = (
        await tx.query<{ seq: string; hash: string }>(
          `SELECT user_seq::text AS seq, hash FROM audit_log WHERE user_id = $1 AND user_seq <= $2
            ORDER BY user_seq DESC LIMIT 1`,
          [user, cut],
        )
      ).rows[0];
      if (!anchorRec) return 0;
      // Without the key, a chain whose kept part starts keyed is left as it is: its anchor could not be keyed,
      // and verify refuses a plain anchor before a keyed record (what a made-up one looks like).
      if (!key) {
        const next = await tx.query<{ key_id: string | null }>(
          'SELECT key_id FROM audit_log WHERE user_id = $1 AND user_seq > $2 ORDER BY user_seq LIMIT 1',
          [user, anchorRec.seq],
        );
        if (next.rows[0]?.key_id) return 0;
      }
      const deleted = await tx.query('DELETE FROM audit_log WHERE user_id = $1 AND user_seq <= $2', [
        user,
        anchorRec.seq,
      ]);
      await tx.query(
        `INSERT INTO audit_anchors (user_id, seq, hash, purged_records, purged_at, key_id, mac)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (user_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
           purged_records = audit_anchors.purged_records + excluded.purged_records, purged_at = excluded.purged_at,
           key_id = excluded.key_id, mac = excluded.mac`,
        [
          user,
          anchorRec.seq,
          anchorRec.hash,
          deleted.rowCount,
          now.toISOString(),
          key?.id ?? null,
          key ? anchorMac(key, { user_id: user, seq: Number(anchorRec.seq), hash: anchorRec.hash }) : null,
        ],
      );
      return deleted.rowCount;
    });
    records += n;
    if (n > 0) touched++;
  }
  return { users: touched, records };
}
