/**
 * The `audit` target: consumes `task-events` and `reminders` (group taskflow-audit) and appends one
 * hash-chained record per event, in the same transaction as the processed-event id (duplicates are no-ops).
 * Serves `GET /api/audit` and `GET /api/audit/export`, and runs the retention job (AUDIT_RETENTION_DAYS,
 * default 365; a purge keeps an anchor so the chain stays verifiable).
 */
import { createVerifier } from '../../auth.ts';
import { GROUPS, TOPICS } from '../../contracts/topics.ts';
import type { Config } from '../../config.ts';
import type { Runtime } from '../../runtime.ts';
import { consumerTarget } from '../consumer-target.ts';
import { appendAuditRecord, appendAuditRecords, purgeAudit } from './chain.ts';
import { auditInputOf } from './records.ts';
import { registerAuditApi } from './routes.ts';

export { verifyChain, purgeAudit } from './chain.ts';

const DAY_MS = 86_400_000;
const ANALYZE_EVERY = 5_000;

/** `config.audit` (AUDIT_* variables). */
export type AuditOptions = Config['audit'];

/** Deletes the records older than the retention period; returns what it purged. */
export async function runRetention(rt: Runtime, retentionDays: number) {
  const now = rt.clock.now();
  const result = await purgeAudit(rt.db, new Date(now.getTime() - retentionDays * DAY_MS), now);
  if (result.records > 0) rt.log.info({ ...result, retention_days: retentionDays }, 'audit records purged');
  return result;
}

export function createAuditTarget(opts: Partial<AuditOptions> = {}) {
  return consumerTarget({
    name: 'audit',
    group: GROUPS.audit,
    topics: [TOPICS.taskEvents, TOPICS.reminders],
    async setup(rt) {
      const options = { ...rt.config.audit, ...opts };
      await registerAuditApi(rt.http.app, { db: rt.db, verify: createVerifier(rt.config.jwt) });
      let timer: NodeJS.Timeout | undefined;
      let running: Promise<unknown> = Promise.resolve();
      let appended = 0;
      if (options.retentionIntervalMs > 0 && options.retentionDays > 0) {
        timer = setInterval(() => {
          running = runRetention(rt, options.retentionDays).catch((err: unknown) =>
            rt.log.error({ err }, 'audit retention failed'),
          );
        }, options.retentionIntervalMs);
        timer.unref();
      }
      const recorded = async (operations: readonly string[]) => {
        for (const operation of operations) rt.metrics.auditRecords.inc({ operation });
        // PGlite has no autovacuum: refresh the planner's statistics now and then, or the keyset pages of
        // the query and export API are planned as if the table were empty (a sort of the user's records).
        const before = appended;
        appended += operations.length;
        if (
          rt.db.kind === 'pglite' &&
          Math.floor(before / ANALYZE_EVERY) < Math.floor(appended / ANALYZE_EVERY)
        )
          await rt.db.query('ANALYZE audit_log').catch(() => undefined);
      };
      return {
        // Alone (a first delivery, or a run that failed): an event already in the log is simply done.
        async handle(message) {
          const input = auditInputOf(message.event, rt.clock.now());
          const record = await rt.db.transaction((tx) =>
            appendAuditRecord(tx, input, { dedupe: GROUPS.audit }),
          );
          if (record) await recorded([record.operation]);
        },
        // A run of events in one transaction; each user's chain grows in the run's order.
        async handleBatch(items) {
          const now = rt.clock.now();
          const inputs = items.map((i) => auditInputOf(i.message.event, now));
          const records = await rt.db.transaction((tx) =>
            appendAuditRecords(tx, inputs, { dedupe: GROUPS.audit }),
          );
          await recorded(records.map((r) => r.operation));
        },
        async stop() {
          clearInterval(timer);
          await running;
        },
      };
    },
  });
}

export const auditTarget = createAuditTarget();
