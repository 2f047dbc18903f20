/**
 * The `audit` target: consumes `task-events` and `reminders` (group taskflow-audit) and appends one
 * hash-chained record per event, in the same transaction as the processed-event id (duplicates are no-ops).
 * Serves `GET /api/audit` and `GET /api/audit/export`, and runs the retention job (AUDIT_RETENTION_DAYS,
 * default 365; a purge keeps an anchor so the chain stays verifiable).
 */
import { auditManifest, type AuditOptions } from './manifest.ts';
import type { Runtime } from '../../runtime.ts';
import { consumerTarget, transactional } from '../consumer-target.ts';
import { appendAuditRecord, appendAuditRecords, purgeAudit } from './chain.ts';
import { auditInputOf } from './records.ts';
import { registerAuditApi } from './routes.ts';

export { verifyChain, purgeAudit } from './chain.ts';

const DAY_MS = 86_400_000;
/**
 * PGlite: the planner's statistics of the audit log are refreshed after this many records appended by this
 * process, then after twice as many again, and so on, for the columns the API's queries filter and sort on
 * (`ANALYZE` blocks the one database session: every 5,000 records, of every column, it took 100-230 ms and
 * cost `taskflow up` its p99 at 150 writes/s; these columns take about a quarter of that).
 */
const FIRST_ANALYZE = 1_000;
const ANALYZE_SQL = 'ANALYZE audit_log (id, user_id, user_seq, task_id, operation, occurred_at)';

export type { AuditOptions };

/** The process's AUDIT_CHAIN_KEY. */
const chainKeyOf = (rt: Runtime) => auditManifest.config(rt.config.env).chainKey;

/** Deletes the records older than the retention period (anchors keyed with `key`); returns what it purged. */
export async function runRetention(rt: Runtime, retentionDays: number, key = chainKeyOf(rt)) {
  const now = rt.clock.now();
  const result = await purgeAudit(rt.db, new Date(now.getTime() - retentionDays * DAY_MS), now, key);
  if (result.records > 0) rt.log.info({ ...result, retention_days: retentionDays }, 'audit records purged');
  return result;
}

export function createAuditTarget(opts: Partial<AuditOptions> = {}) {
  return consumerTarget({
    manifest: auditManifest,
    async setup(rt) {
      const options = { ...auditManifest.config(rt.config.env), ...opts };
      const metrics = rt.metrics.of(auditManifest);
      await registerAuditApi(rt.http.app, { db: rt.db, verify: rt.verify });
      let timer: NodeJS.Timeout | undefined;
      let first: NodeJS.Timeout | undefined;
      let running: Promise<unknown> | undefined;
      let appended = 0;
      let analyzeAt = FIRST_ANALYZE;
      if (options.retentionIntervalMs > 0 && options.retentionDays > 0) {
        // One run at a time; the first a second after start, not an interval after it: a target restarted more
        // often than the interval (a redeploy a day, 6 h by default) never purged.
        const retain = () => {
          running ??= runRetention(rt, options.retentionDays, options.chainKey)
            .catch((err: unknown) => rt.log.error({ err }, 'audit retention failed'))
            .finally(() => (running = undefined));
        };
        first = setTimeout(retain, Math.min(1_000, options.retentionIntervalMs)).unref();
        timer = setInterval(retain, options.retentionIntervalMs).unref();
      }
      const recorded = (operations: readonly string[]) => {
        for (const operation of operations) metrics.records.inc({ operation });
        // PGlite has no autovacuum: refresh the planner's statistics as the table grows, or the keyset pages
        // of the query and export API are planned as if the table were empty (a sort of the user's records).
        // Doubling intervals: the distributions it samples hardly change once there are some thousands of
        // records, and row counts are scaled to the table's current size at planning anyway.
        appended += operations.length;
        if (rt.db.kind === 'pglite' && appended >= analyzeAt) {
          analyzeAt = appended * 2;
          void rt.db.query(ANALYZE_SQL).catch(() => undefined);
        }
      };
      const service = transactional({
        db: rt.db,
        group: auditManifest.consumes.group,
        accepts: () => true,
        dedupesItself: true,
        batches: true,
        // A run's records in one transaction, each user's chain growing in the run's order. Alone (a first
        // delivery, or a run that failed) an event already in the log is simply done; in a run it fails the run.
        async effect(tx, consumed) {
          const now = rt.clock.now();
          const inputs = consumed.map((c) => auditInputOf(c.event, now));
          const append = { dedupe: auditManifest.consumes.group, key: options.chainKey };
          const records =
            inputs.length === 1
              ? [await appendAuditRecord(tx, inputs[0]!, append)].filter((r) => r !== null)
              : await appendAuditRecords(tx, inputs, append);
          if (records.length) tx.afterCommit(() => recorded(records.map((r) => r.operation)));
        },
      });
      return {
        ...service,
        async stop() {
          clearTimeout(first);
          clearInterval(timer);
          await running;
        },
      };
    },
  });
}

export const auditTarget = createAuditTarget();
