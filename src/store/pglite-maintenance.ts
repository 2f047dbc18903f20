/**
 * Autovacuum's job for PGlite. PGlite runs PostgreSQL in single-user mode, where no autovacuum runs: the rows
 * every retention prune deletes (the dedupe ledger, idempotency keys, the outbox, the embedded bus's log,
 * reminders, notifications, audit) left pages the free space map never learnt of, so a table whose live rows
 * retention bounds grew on disk for ever (the `task-updates` topic alone: about 90 MB an hour at 9 writes/s),
 * transaction ids were never frozen, and the planner had no statistics but those migrations gathered.
 *
 * Here, every minute, the process that holds the database runs what autovacuum would: VACUUM of a table whose
 * dead rows pass `autovacuum_vacuum_threshold + autovacuum_vacuum_scale_factor x reltuples` (its TOAST
 * table's too), whose rows inserted since the last VACUUM pass the insert threshold, or whose
 * `age(relfrozenxid)` passes `autovacuum_freeze_max_age` (VACUUM then freezes as `vacuum_freeze_table_age`
 * says); ANALYZE of one whose rows changed since the last ANALYZE pass `autovacuum_analyze_threshold +
 * autovacuum_analyze_scale_factor x reltuples`. PGlite keeps these counts (pg_stat_all_tables), but flushes
 * them at most once a second and loses them when it closes: a pass flushes them first, and the first pass
 * after the database opens vacuums every table once (what was deleted before is counted nowhere).
 *
 * Each VACUUM and each ANALYZE is a statement of its own, in the database's background lane, after a pause:
 * PGlite has one connection, on this thread, and a statement holds every other, and the event loop, for its
 * duration (docs/benchmarks.md: up to about a second for a VACUUM on a database of a GB).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage } from '../error-text.ts';
import { createLogger } from '../observability/logger.ts';

/** What a pass needs of the database (db.ts's Queryable; not imported: db.ts opens this module). */
interface Statements {
  query<T>(sql: string, params?: readonly unknown[]): Promise<{ rows: T[] }>;
}

/** How often a maintenance pass runs (autovacuum's `autovacuum_naptime`). */
export const MAINTENANCE_INTERVAL_MS = 60_000;

/** Where a pass says what it did (debug) and the first failure (warn): a pino logger fits. */
export interface MaintenanceLog {
  debug(details: object, message: string): void;
  warn(details: object, message: string): void;
}

/**
 * Without a logger given: one as the process's is configured (LOG_LEVEL, LOG_FORMAT), on stderr, as stdout may
 * carry a protocol (`taskflow mcp` on stdio); made at its first use. When it cannot be made (a LOG_LEVEL pino
 * does not know), the first failure is a line on stderr.
 */
export function stderrLog(): MaintenanceLog {
  let log: MaintenanceLog | undefined;
  const made = (): MaintenanceLog => {
    if (log) return log;
    try {
      const format = process.env.LOG_FORMAT;
      log = createLogger({
        fd: 2,
        ...(format === 'json' || format === 'pretty' ? { format } : {}),
      }).child({ component: 'pglite-maintenance' });
    } catch {
      log = {
        debug: () => undefined,
        warn: (details, message) => {
          const err = (details as { err?: unknown }).err;
          process.stderr.write(`taskflow: ${message}${err ? `: ${errorMessage(err)}` : ''}\n`);
        },
      };
    }
    return log;
  };
  return {
    debug: (details, message) => made().debug(details, message),
    warn: (details, message) => made().warn(details, message),
  };
}

/** A table a pass works on, and why (the counts against autovacuum's thresholds): unset, not due. */
export interface TableDue {
  table: string;
  vacuum: string | null;
  analyze: string | null;
}

/** What one pass did: each statement and its duration, the whole pass's. */
export interface PassReport {
  statements: { table: string; statement: string; why: string; ms: number }[];
  ms: number;
  failures: number;
}

/**
 * The tables due, by autovacuum's rules and its settings (relation options aside: Taskflow sets none).
 * Every table of the database, the catalogs too (they need freezing as much); a TOAST table is vacuumed with
 * its table. pg_statistic is not analyzed (autovacuum skips it: ANALYZE writes it).
 */
const DUE_SQL = `
WITH s AS (
  SELECT current_setting('autovacuum_vacuum_threshold')::float8 AS vt,
         current_setting('autovacuum_vacuum_scale_factor')::float8 AS vs,
         current_setting('autovacuum_vacuum_insert_threshold')::float8 AS it,
         current_setting('autovacuum_vacuum_insert_scale_factor')::float8 AS "is",
         current_setting('autovacuum_analyze_threshold')::float8 AS at,
         current_setting('autovacuum_analyze_scale_factor')::float8 AS "as",
         current_setting('autovacuum_freeze_max_age')::bigint AS fma,
         current_setting('autovacuum_multixact_freeze_max_age')::bigint AS mfma
), t AS (
  SELECT c.oid::regclass::text AS "table", c.oid = 'pg_catalog.pg_statistic'::regclass AS statistic,
         greatest(c.reltuples, 0) AS tuples, greatest(toast.reltuples, 0) AS toast_tuples,
         pg_stat_get_dead_tuples(c.oid) AS dead, pg_stat_get_ins_since_vacuum(c.oid) AS inserted,
         pg_stat_get_mod_since_analyze(c.oid) AS changed,
         coalesce(pg_stat_get_dead_tuples(toast.oid), 0) AS toast_dead,
         coalesce(pg_stat_get_ins_since_vacuum(toast.oid), 0) AS toast_inserted,
         greatest(age(c.relfrozenxid), coalesce(age(toast.relfrozenxid), 0)) AS xid_age,
         greatest(mxid_age(c.relminmxid), coalesce(mxid_age(toast.relminmxid), 0)) AS mxid_age
    FROM pg_class c LEFT JOIN pg_class toast ON toast.oid = c.reltoastrelid
   WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't'
), due AS (
  SELECT t."table", t.statistic,
         concat_ws(', ',
           CASE WHEN $1 THEN 'first pass since the database opened' END,
           CASE WHEN t.dead > s.vt + s.vs * t.tuples
                THEN format('%s dead > %s', t.dead, round(s.vt + s.vs * t.tuples)) END,
           CASE WHEN t.toast_dead > s.vt + s.vs * t.toast_tuples
                THEN format('TOAST %s dead > %s', t.toast_dead, round(s.vt + s.vs * t.toast_tuples)) END,
           CASE WHEN t.inserted > s.it + s."is" * t.tuples
                THEN format('%s inserted > %s', t.inserted, round(s.it + s."is" * t.tuples)) END,
           CASE WHEN t.toast_inserted > s.it + s."is" * t.toast_tuples
                THEN format('TOAST %s inserted > %s', t.toast_inserted, round(s.it + s."is" * t.toast_tuples)) END,
           CASE WHEN t.xid_age > s.fma THEN format('xid age %s > %s', t.xid_age, s.fma) END,
           CASE WHEN t.mxid_age > s.mfma THEN format('multixact age %s > %s', t.mxid_age, s.mfma) END
         ) AS vacuum_why,
         CASE WHEN NOT t.statistic AND t.changed > s.at + s."as" * t.tuples
              THEN format('%s changed > %s', t.changed, round(s.at + s."as" * t.tuples)) END AS analyze_why
    FROM t CROSS JOIN s
)
SELECT "table", nullif(vacuum_why, '') AS vacuum, analyze_why AS analyze
  FROM due
 WHERE vacuum_why <> '' OR analyze_why IS NOT NULL
 ORDER BY "table"`;

/**
 * The statements that do what `due` asks: VACUUM and ANALYZE apart, as `VACUUM (ANALYZE)` would hold the
 * database for both at once.
 */
export const maintenanceStatements = (due: TableDue): { statement: string; why: string }[] => [
  ...(due.vacuum ? [{ statement: `VACUUM ${due.table}`, why: due.vacuum }] : []),
  ...(due.analyze ? [{ statement: `ANALYZE ${due.table}`, why: due.analyze }] : []),
];

/**
 * The pause before each statement of a pass. A statement holds the thread PGlite runs on, so the event
 * loop too: what arrived meanwhile (requests, timers) runs, and queues its statements, before the pass's
 * next one, which was queued at once after the last and went first otherwise (a pass of three VACUUMs held a
 * writer 5 s where the longest took 2.6).
 */
const PAUSE_MS = 10;

/**
 * Runs a pass every `intervalMs` (an unref'd timer: it keeps no process alive), the next an interval after
 * the last one ended, so two never overlap. `db` is where statements go: the PGlite database's background
 * lane, where each runs alone, outside any transaction. `stop` (before the database closes) waits for a
 * pass under way to end; none starts after it.
 */
export class PGliteMaintenance {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<PassReport> | undefined;
  private stopped = false;
  private opened = true;
  /** Statements that failed so far: the first is a warning, the rest are counted at debug. */
  failures = 0;

  constructor(
    private readonly db: Statements,
    private readonly intervalMs = MAINTENANCE_INTERVAL_MS,
    private readonly log: MaintenanceLog = stderrLog(),
  ) {}

  start(): this {
    this.schedule();
    return this;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.pass().finally(() => this.schedule());
    }, this.intervalMs).unref();
  }

  /** Runs a pass now, or resolves the one under way. */
  pass(): Promise<PassReport> {
    this.running ??= this.runPass().finally(() => (this.running = undefined));
    return this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private async runPass(): Promise<PassReport> {
    const started = performance.now();
    const report: PassReport = { statements: [], ms: 0, failures: 0 };
    if (this.stopped) return report;
    const due = await this.step(report, 'reading the tables due', async () => {
      // The counts of the last second are pending until the session is idle a second after its last flush.
      await this.db.query('SELECT pg_stat_force_next_flush()');
      return (await this.db.query<TableDue>(DUE_SQL, [this.opened])).rows;
    });
    if (due) this.opened = false;
    const statements = (due ?? []).flatMap((table) =>
      maintenanceStatements(table).map((s) => ({ table: table.table, ...s })),
    );
    for (const { table, statement, why } of statements) {
      await sleep(PAUSE_MS);
      if (this.stopped) break;
      const at = performance.now();
      const done = await this.step(report, statement, () => this.db.query(statement));
      if (done) report.statements.push({ table, statement, why, ms: since(at) });
    }
    report.ms = since(started);
    if (report.statements.length > 0)
      this.log.debug(
        { ms: report.ms, statements: report.statements, failures: report.failures },
        `PGlite maintenance: ${report.statements.length} VACUUM or ANALYZE statement(s) in ${report.ms} ms`,
      );
    return report;
  }

  /** `fn`'s value, or undefined when it failed (counted: the first failure is a warning). */
  private async step<T>(report: PassReport, what: string, fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (err) {
      report.failures++;
      this.failures++;
      if (this.failures === 1)
        this.log.warn(
          { err, statement: what },
          `PGlite maintenance (VACUUM, ANALYZE) failed (${what}); it goes on every ${this.intervalMs / 1000} s, further failures are counted at debug`,
        );
      else this.log.debug({ err, statement: what, failures: this.failures }, 'PGlite maintenance failed');
      return undefined;
    }
  }
}

const since = (t: number) => Math.round(performance.now() - t);
