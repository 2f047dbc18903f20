/**
 * One small database seam over two drivers: PostgreSQL (`pg`, production) and PGlite (in-process
 * PostgreSQL compiled to WASM, the embedded default). Both speak the same SQL, so there is one schema and
 * one migration set. `DATABASE_URL` picks the driver: `postgres://…`, a directory path, or `memory://`.
 */
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { CloudEvent } from '../contracts/cloudevent.ts';
import type { PGliteSession } from './pglite-session.ts';
import type { MaintenanceLog, PGliteMaintenance } from './pglite-maintenance.ts';
import type { PGlite } from '@electric-sql/pglite';
import { isPostgresUrl, withSessionOptions } from './database-url.ts';

export interface QueryResult<T> {
  rows: T[];
  rowCount: number;
}

export interface Queryable {
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>>;
}

/** A statement run in its own transaction (autocommit) or inside `Db.transaction`. */
export interface Tx extends Queryable {
  /** The database this runs on (its event sink, its signals). */
  readonly db: Db;
  /**
   * Runs `fn` once the work is durable: after COMMIT inside `Db.transaction` (never after a rollback), at
   * once when this is the Db itself (a statement that has already committed on its own).
   */
  afterCommit(fn: () => void): void;
}

/**
 * Where the events of a transaction are written, in the same transaction as the state they describe: the
 * outbox table (a relay moves them to Kafka or Dapr), or the embedded bus's log itself when the bus lives in
 * this database (BUS=embedded: nothing to relay). See docs/adr/0008-the-cost-of-a-write.md.
 */
export interface EventSink {
  /**
   * Resolves once `compose` can write events of these topics (the embedded log knows their partitions);
   * `q` is where the write will run. Undefined when nothing needs doing.
   */
  ready(topics: readonly string[], q: Tx): Promise<void> | undefined;
  /**
   * The write as SQL to compose: `WITH <ctes>, ... <insert>`, parameters numbered from `first`. `committed`
   * gets the rows the statement returned and runs after the commit (wake-ups, in-process delivery).
   */
  compose(events: readonly CloudEvent[], first?: number): EventWrite;
}

export interface EventWrite {
  ctes: string;
  insert: string;
  params: unknown[];
  committed(rows: readonly Record<string, unknown>[]): void;
}

export interface Db extends Tx {
  readonly kind: 'postgres' | 'pglite';
  readonly url: string;
  /** Where events written with this database's transactions go; unset: the outbox (store/outbox.ts). */
  events: EventSink | undefined;
  /** Statements run so far, by kind (the `taskflow_db_statements_total` metric). */
  readonly statements: StatementCounts;
  /** Runs `fn` in one transaction: commits when it resolves, rolls back when it throws. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  /** Runs several statements (migrations). */
  exec(sql: string): Promise<void>;
  /**
   * This database for work that can wait (side-effect consumers): where statements run one at a time
   * (PGlite), its statements and transactions go after the waiting ones of the API and the real-time path,
   * unless they have waited 100 ms (`backgroundMaxWaitMs`); elsewhere (a PostgreSQL pool) the database itself.
   */
  background(): Db;
  /** In-process signal of new bus data, so embedded subscribers wake without waiting for their poll. */
  readonly signals: EventEmitter;
  /**
   * Also emits `notifyEvent(channel)` on `signals`, with the payload, for each NOTIFY other processes send on
   * `channel`, not those of this database's own connections (PostgreSQL; a dedicated connection, reconnected
   * with backoff; after a reconnect, once with the payload '*', as notifications may have been missed). A
   * no-op on PGlite, which only this process opens.
   */
  listen(channel: string): void;
  close(): Promise<void>;
}

/**
 * Counts statements by a short kind taken from their text (the first keyword and table): the figure the cost
 * of a write is made of. Kinds are cached per SQL text; texts beyond the cache (generated SQL) are still
 * counted, only classified again.
 */
export class StatementCounts {
  readonly byKind = new Map<string, number>();
  private readonly kinds = new Map<string, string>();
  count(sql: string): void {
    let kind = this.kinds.get(sql);
    if (kind === undefined) {
      kind = statementKind(sql);
      if (this.kinds.size < 2_000) this.kinds.set(sql, kind);
    }
    this.byKind.set(kind, (this.byKind.get(kind) ?? 0) + 1);
  }
}

const KIND_RE =
  /^\s*(?:(BEGIN|COMMIT|ROLLBACK)|WITH\s+(\w+)\s+AS\s*\(\s*(\w+)(?:\s+INTO|\s+FROM)?\s+(\w+)|(SELECT|INSERT|UPDATE|DELETE)(?:[\s\S]*?\b(?:INTO|FROM|UPDATE)\s+("?\w+"?))?)/i;

/** `BEGIN`, `insert tasks`, `with task: insert tasks + events`, `select bus_messages`... */
export function statementKind(sql: string): string {
  const m = KIND_RE.exec(sql);
  const events = /INSERT INTO (bus_messages|outbox)\b/.test(sql) ? ' + events' : '';
  if (!m) return /^\s*WITH/i.test(sql) ? `with${events}` : 'other';
  if (m[1]) return m[1].toUpperCase();
  if (m[2]) return `with ${m[2]}: ${m[3]!.toLowerCase()} ${m[4]}${events}`;
  const verb = m[5]!.toLowerCase();
  if (verb === 'update') {
    const t = /^\s*UPDATE\s+(\w+)/i.exec(sql)?.[1];
    return t ? `update ${t}` : 'update';
  }
  return m[6] ? `${verb} ${m[6].replace(/"/g, '')}` : verb;
}

/**
 * JSON texts as one parameter holding a JSON array, for `jsonb_array_elements($n::jsonb)`: not a `text[]`,
 * which node-postgres escapes quote by quote into an array literal for PostgreSQL to unescape before it
 * parses each element as jsonb anyway (escapeElement was 3-4 % of the server's thread at 800 writes/s with
 * every target on Kafka; docs/benchmarks.md).
 */
export const jsonArrayParam = (texts: readonly string[]): string => `[${texts.join(',')}]`;

/**
 * Row ids (decimal strings, as `id::text` reads them) as one `bigint[]` literal, `{1,2,3}`: node-postgres
 * would escape each element of a JS array (the relay marks 500 per statement).
 */
export const bigintArrayParam = (ids: readonly string[]): string => `{${ids.join(',')}}`;

/** The `signals` event a NOTIFY on `channel` becomes (Db.listen). */
export const notifyEvent = (channel: string) => `notify:${channel}`;
/**
 * Emitted on `signals` once, with the error, when the embedded database stopped (a PANIC, e.g. its log on a
 * full disk): nothing more can be done with it, and the process that opened it ends (exitWhenDatabaseStops).
 */
export const DATABASE_STOPPED = 'database-stopped';

/**
 * Ends the process when the embedded database it opened stopped (a PANIC: DATABASE_STOPPED): every statement
 * fails from then on, and a supervisor restarts a process that ends, as PostgreSQL's server restarts its own.
 */
export function exitWhenDatabaseStops(
  db: Db,
  say: (msg: string) => void = (m) => process.stderr.write(`taskflow: ${m}\n`),
): void {
  db.signals.once(DATABASE_STOPPED, (err: Error) => {
    say(
      `${err.message}; Taskflow stops (free what it lacked, e.g. space on its file system, and start it again)`,
    );
    process.exit(1);
  });
}

/** The server process id of a node-postgres connection (`processID`, untyped), once connected. */
const backendPid = (client: pg.PoolClient): number | undefined => {
  const pid = (client as unknown as { processID?: unknown }).processID;
  return typeof pid === 'number' ? pid : undefined;
};

/** TCP keep-alive probes after 10 s idle: a peer that vanished in a network partition is noticed. */
const KEEP_ALIVE = { keepAlive: true, keepAliveInitialDelayMillis: 10_000 } as const;

/**
 * How long PostgreSQL lets a session of this process sit idle inside a transaction before it ends it (its
 * `idle_in_transaction_session_timeout`). Every transaction here runs statements back to back, so only a
 * process that stopped in the middle of one (SIGSTOP, a frozen VM, a debugger) sits there: its row locks (a
 * user's event stream, a task, a consumer's ledger) held every other writer of them until it came back, for
 * good if it never did. `?idle_in_transaction_session_timeout=0` in DATABASE_URL turns it off.
 */
const IDLE_IN_TRANSACTION_MS = 60_000;

// int8 (bigint) and numeric come back as strings from pg; offsets fit in JS numbers for our purposes, but we
// keep them as strings at the seams that need exactness. Timestamps parse to Date in both drivers.
/** Runs the callbacks registered with `afterCommit` once the transaction committed; a failing one is logged. */
function runAfterCommit(callbacks: (() => void)[]): void {
  for (const fn of callbacks) {
    try {
      fn();
    } catch (err) {
      process.emitWarning(`afterCommit callback failed: ${String(err)}`);
    }
  }
}

/** What both drivers share: signals, statement counts, the event sink; a statement commits on its own. */
abstract class DbBase implements Db {
  abstract readonly kind: Db['kind'];
  abstract readonly url: string;
  readonly signals = new EventEmitter();
  readonly statements = new StatementCounts();
  events: EventSink | undefined;
  constructor() {
    this.signals.setMaxListeners(0);
  }
  get db(): Db {
    return this;
  }
  afterCommit(fn: () => void): void {
    fn();
  }
  abstract query<T>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>>;
  abstract transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  abstract exec(sql: string): Promise<void>;
  abstract listen(channel: string): void;
  abstract close(): Promise<void>;
  background(): Db {
    return this;
  }
}

/** SQL texts run as named prepared statements on PostgreSQL; the rest (generated SQL) run unnamed. */
const NAMED_TEXTS = 1_000;

/** PostgreSQL refuses a prepared statement whose result columns a schema change altered (SQLSTATE 0A000). */
function isStalePlan(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e.code === '0A000' && /cached plan must not change result type/.test(e.message ?? '');
}

class PostgresDb extends DbBase {
  readonly kind = 'postgres' as const;
  private readonly pool: pg.Pool;
  constructor(
    readonly url: string,
    poolSize: number,
    /** node-postgres, loaded only when a PostgreSQL URL is opened. */
    private readonly driver: typeof pg,
    idleInTransactionMs = IDLE_IN_TRANSACTION_MS,
  ) {
    super();
    // A bounded wait for a connection, so a database outage fails requests and loops (which retry) instead
    // of queueing them forever.
    const session = withSessionOptions(url);
    this.pool = new driver.Pool({
      connectionString: session.url,
      max: poolSize,
      connectionTimeoutMillis: 10_000,
      idle_in_transaction_session_timeout: idleInTransactionMs,
      // Instants rendered as text (json_agg of rows, ::text) in UTC, whatever zone the server was set up in
      // (initdb takes the host's): before a zone's standard time its offset has seconds ("-04:56:02"), which
      // Date cannot read (a task due in 1850 stopped the reminders consumer on its next event). A startup
      // option, not a statement: nothing to run before each connection's first query.
      options: session.options,
      ...KEEP_ALIVE,
    });
    // An idle client error (server restart) must not crash the process; the next query reconnects.
    this.pool.on('error', () => undefined);
    this.pool.on('connect', (client) => {
      const pid = backendPid(client);
      if (pid !== undefined) this.backends.add(pid);
    });
    this.pool.on('remove', (client) => {
      const pid = backendPid(client);
      if (pid !== undefined) this.backends.delete(pid);
    });
  }
  /**
   * Server processes of this pool's connections. A NOTIFY one of them sent is this process's own write,
   * whose commit already signalled in-process (the embedded log's tail, the relay's poke): `listen` passes on
   * only the others'. Passed on, each of its own appends made every partition worker of the process read the
   * table besides taking the tail (embedded bus on PostgreSQL, every target: 1.88 SELECTs of bus_messages per
   * write; docs/benchmarks.md). Behind a pooler that gives out ids of its own, they do not match and every
   * notification is passed on, as before (an own one then costs a table read), unless one happens to equal
   * another process's server id. A notification left out that way, or a commit whose reply was lost (its
   * in-process signal never ran), is picked up at the next poll: later, never lost.
   */
  private readonly backends = new Set<number>();
  /**
   * Server-side prepared statements: each SQL text gets a name, so each connection parses and plans it once
   * and then only binds and executes it (node-postgres keeps the names a connection has prepared). Texts
   * beyond NAMED_TEXTS (generated SQL) run unnamed.
   */
  private readonly names = new Map<string, string>();
  private nameCount = 0;
  private statement(sql: string, params: readonly unknown[]): pg.QueryConfig {
    let name = this.names.get(sql);
    if (name === undefined && this.names.size < NAMED_TEXTS)
      this.names.set(sql, (name = `tf${++this.nameCount}`));
    return name === undefined
      ? { text: sql, values: params as unknown[] }
      : { name, text: sql, values: params as unknown[] };
  }
  async query<T>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<T>> {
    this.statements.count(sql);
    let r: pg.QueryResult;
    try {
      r = await this.pool.query(this.statement(sql, params));
    } catch (err) {
      if (!isStalePlan(err)) throw err;
      // The schema changed under a prepared statement (a migration by another process): prepare it anew.
      this.names.delete(sql);
      r = await this.pool.query(this.statement(sql, params));
    }
    return { rows: r.rows as T[], rowCount: r.rowCount ?? 0 };
  }
  async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    // A checked-out client is not covered by the pool's error listener: without one, a connection dropped
    // mid-transaction (database restart, failover) would be an uncaught 'error' event ending the process.
    // The failing query rejects as well, and the broken client is destroyed on release, not pooled again.
    let broken: Error | undefined;
    const onError = (err: Error) => (broken = err);
    client.on('error', onError);
    const committed: (() => void)[] = [];
    try {
      this.statements.count('BEGIN');
      await client.query('BEGIN');
      const tx: Tx = {
        db: this,
        afterCommit: (cb) => committed.push(cb),
        query: async <R>(sql: string, params: readonly unknown[] = []) => {
          this.statements.count(sql);
          try {
            const r = await client.query(this.statement(sql, params));
            return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 };
          } catch (err) {
            if (isStalePlan(err)) this.names.delete(sql); // the transaction is lost; its retry prepares anew
            throw err;
          }
        },
      };
      const result = await fn(tx);
      this.statements.count('COMMIT');
      // A statement that failed inside `fn` and was caught there aborted the transaction: COMMIT answers
      // ROLLBACK, without an error. Its after-commit callbacks must not run (the embedded log would hand its
      // consumers a message that was never written, and lose the next one written at its offset).
      if ((await client.query('COMMIT')).command === 'ROLLBACK')
        throw new Error('transaction aborted by an earlier failed statement; rolled back');
      runAfterCommit(committed);
      return result;
    } catch (err) {
      if (!broken) await client.query('ROLLBACK').catch((e: Error) => (broken = e));
      throw err;
    } finally {
      client.off('error', onError);
      client.release(broken ?? false);
    }
  }
  async exec(sql: string): Promise<void> {
    await this.pool.query(sql);
    this.names.clear(); // DDL may have changed what prepared statements return: new names, prepared anew
  }

  private readonly channels = new Set<string>();
  private listener: pg.Client | undefined;
  private listening: Promise<void> | undefined;
  private readonly closing = new AbortController();

  listen(channel: string): void {
    if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`bad LISTEN channel name ${channel}`);
    if (this.channels.has(channel)) return;
    this.channels.add(channel);
    if (this.listener) void this.listener.query(`LISTEN ${channel}`).catch(() => undefined); // else: on connect
    this.listening ??= this.keepListening();
  }

  /** Holds one connection that LISTENs on every channel asked for, until close; reconnects after a loss. */
  private async keepListening(): Promise<void> {
    for (let attempt = 0; !this.closing.signal.aborted;) {
      const client = new this.driver.Client({ connectionString: this.url, ...KEEP_ALIVE });
      const lost = new Promise<void>((resolve) => {
        client.on('error', () => resolve());
        client.on('end', () => resolve());
      });
      client.on('notification', (n) => {
        if (!this.backends.has(n.processId)) this.signals.emit(notifyEvent(n.channel), n.payload ?? '');
      });
      const onClose = () => void client.end().catch(() => undefined);
      this.closing.signal.addEventListener('abort', onClose, { once: true });
      try {
        await client.connect();
        for (const c of this.channels) await client.query(`LISTEN ${c}`);
        this.listener = client;
        attempt = 0;
        for (const c of this.channels) this.signals.emit(notifyEvent(c), '*');
        await lost;
      } catch {
        // connect or LISTEN failed: the server is down; retry below
      }
      this.closing.signal.removeEventListener('abort', onClose);
      this.listener = undefined;
      await client.end().catch(() => undefined);
      await sleep(Math.min(10_000, 250 * 2 ** attempt++), undefined, { signal: this.closing.signal }).catch(
        () => undefined, // closed
      );
    }
  }

  async close(): Promise<void> {
    this.closing.abort(); // ends the listening connection, or its reconnect wait
    await this.listening;
    await this.pool.end();
  }
}

/** A background statement or transaction that has waited this long goes before foreground ones. */
const BACKGROUND_MAX_WAIT_MS = 100;

type Lane = 'foreground' | 'background';

class PGliteDb extends DbBase {
  readonly kind = 'pglite' as const;
  private running = false;
  private readonly waiting: Record<Lane, { start: () => void; since: number }[]> = {
    foreground: [],
    background: [],
  };
  private backgroundView: Db | undefined;
  /** Autovacuum's job (pglite-maintenance.ts), stopped before the database closes. */
  maintenance: PGliteMaintenance | undefined;
  constructor(
    readonly url: string,
    private readonly session: PGliteSession,
    private readonly backgroundMaxWaitMs = BACKGROUND_MAX_WAIT_MS,
  ) {
    super();
  }
  override background(): Db {
    return (this.backgroundView ??= new BackgroundPGlite(this));
  }
  /**
   * Runs `fn` alone: one statement or one transaction at a time, as on a single connection. Waiting work
   * of the foreground lane goes first; background work that has waited `backgroundMaxWaitMs` goes before it.
   */
  exclusive<T>(fn: () => Promise<T>, lane: Lane = 'foreground'): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const start = () =>
        void fn()
          .then(resolve, reject)
          .finally(() => this.next());
      if (this.running) this.waiting[lane].push({ start, since: performance.now() });
      else {
        this.running = true;
        start();
      }
    });
  }
  private next(): void {
    const { foreground, background } = this.waiting;
    const overdue =
      background.length > 0 && performance.now() - background[0]!.since >= this.backgroundMaxWaitMs;
    const up = (overdue ? background.shift() : undefined) ?? foreground.shift() ?? background.shift();
    if (up) up.start();
    else this.running = false;
  }
  query<T>(sql: string, params: readonly unknown[] = [], lane: Lane = 'foreground'): Promise<QueryResult<T>> {
    this.statements.count(sql);
    return this.exclusive(() => this.session.run<T>(sql, params, true), lane);
  }
  transaction<T>(fn: (tx: Tx) => Promise<T>, lane: Lane = 'foreground'): Promise<T> {
    return this.exclusive(async () => {
      const committed: (() => void)[] = [];
      // BEGIN goes with the transaction's first statement, in one call; none ran: nothing to commit.
      let begun = false;
      let value: T;
      try {
        value = await fn({
          db: this,
          afterCommit: (cb) => committed.push(cb),
          query: <R>(sql: string, params: readonly unknown[] = []) => {
            if (!begun) this.statements.count('BEGIN');
            this.statements.count(sql);
            const first = !begun;
            begun = true;
            return this.session.run<R>(sql, params, false, first);
          },
        });
      } catch (err) {
        if (begun) await this.session.run('ROLLBACK', [], false);
        throw err;
      }
      if (!begun) {
        runAfterCommit(committed);
        return value;
      }
      this.statements.count('COMMIT');
      // A statement that failed inside `fn` and was caught there aborted the transaction: COMMIT rolls back.
      if ((await this.session.run('COMMIT', [], true)).command === 'ROLLBACK')
        throw new Error('transaction aborted by an earlier failed statement; rolled back');
      runAfterCommit(committed);
      return value;
    }, lane);
  }
  exec(sql: string): Promise<void> {
    return this.exclusive(() => this.session.exec(sql));
  }
  listen(): void {} // one process: its own writes already signal
  async close(): Promise<void> {
    // No maintenance statement after the close: a pass under way ends first, and none starts after.
    await this.maintenance?.stop();
    return this.exclusive(() => this.session.close());
  }
}

/** A PGlite database's background lane (Db.background): the same database, its work queued behind. */
class BackgroundPGlite implements Db {
  constructor(private readonly main: PGliteDb) {}
  get kind() {
    return this.main.kind;
  }
  get url() {
    return this.main.url;
  }
  get events() {
    return this.main.events;
  }
  set events(sink: EventSink | undefined) {
    this.main.events = sink;
  }
  get statements() {
    return this.main.statements;
  }
  get signals() {
    return this.main.signals;
  }
  get db(): Db {
    return this;
  }
  afterCommit(fn: () => void): void {
    fn();
  }
  query<T>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>> {
    return this.main.query<T>(sql, params, 'background');
  }
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.main.transaction(fn, 'background');
  }
  exec(sql: string): Promise<void> {
    return this.main.exec(sql);
  }
  background(): Db {
    return this;
  }
  listen(): void {} // PGlite: one process
  close(): Promise<void> {
    return this.main.close();
  }
}

/**
 * `backgroundMaxWaitMs` (PGlite): how long background work yields to foreground work (Db.background).
 * `maintenanceIntervalMs` (PGlite): how often VACUUM and ANALYZE run where due (pglite-maintenance.ts; 0:
 * never), saying what they did at debug and their first failure as a warning on `log` (unset: a logger on
 * stderr, as LOG_LEVEL and LOG_FORMAT say).
 */
export async function openDb(
  url: string,
  opts: {
    poolSize?: number;
    backgroundMaxWaitMs?: number;
    idleInTransactionMs?: number;
    maintenanceIntervalMs?: number;
    log?: MaintenanceLog;
    /** PGlite: open only a directory that already holds a database, unchanged (openPGlite's `existingOnly`). */
    existingOnly?: boolean;
  } = {},
): Promise<Db> {
  if (isPostgresUrl(url)) {
    const { default: driver } = await import('pg');
    const db = new PostgresDb(url, opts.poolSize ?? 10, driver, opts.idleInTransactionMs);
    await db.query('select 1');
    return db;
  }
  const [{ openPGlite }, { PGliteSession }, { migrate, migrationsKey }, { PGliteMaintenance }] =
    await Promise.all([
      import('./pglite-open.ts'),
      import('./pglite-session.ts'),
      import('./migrate.ts'),
      import('./pglite-maintenance.ts'),
    ]);
  // A new database starts from an image with every migration applied (made once, cached on disk).
  const seed = {
    key: () => `migrated-${migrationsKey()}`,
    prepare: (pglite: PGlite) => migrate(new PGliteDb('memory://', new PGliteSession(pglite))).then(() => {}),
  };
  const { pglite, location, unlock } = await openPGlite(url, seed, opts.existingOnly);
  const session = new PGliteSession(pglite, undefined, unlock, (err) =>
    db.signals.emit(DATABASE_STOPPED, err),
  );
  const db = new PGliteDb(location, session, opts.backgroundMaxWaitMs);
  // PGlite runs PostgreSQL in single-user mode, without autovacuum: this process does its job.
  if (opts.maintenanceIntervalMs !== 0)
    db.maintenance = new PGliteMaintenance(db.background(), opts.maintenanceIntervalMs, opts.log).start();
  return db;
}
