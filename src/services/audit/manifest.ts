/** The `audit` target: what it is, its AUDIT_* settings and its metrics (the list of targets: services/index.ts). */
import { Counter, type Registry } from 'prom-client';
import { ConfigError, int, type Env, TIMER_MAX_MS } from '../../config.ts';
import { chainKey, type ChainKey } from './chain.ts';
import { TOPICS } from '../../contracts/topics.ts';
import type { TargetManifest } from '../../runtime.ts';

export const auditManifest = {
  name: 'audit',
  routes: ['/api/audit'],
  description: 'audit trail: hash-chained records of every event; /api/audit query and export',
  consumes: {
    group: 'taskflow-audit',
    topics: [TOPICS.taskEvents, TOPICS.reminders],
    deadLetters: true,
  },
  produces: [],
  effects: 'the audit API and export',
  owns: ['the audit log (hash chain)'],
  /** retentionIntervalMs 0 turns the retention job off. */
  config: (env: Env) => ({
    // 0 keeps records for good; at most a hundred years (a cutoff before year 1 fails every purge).
    retentionDays: int(env, 'AUDIT_RETENTION_DAYS', 365, 0, 36_500),
    retentionIntervalMs: int(env, 'AUDIT_RETENTION_INTERVAL_MS', 6 * 3_600_000, 0, TIMER_MAX_MS),
    ...chainKeys(env),
  }),
  metrics: (registry: Registry) => ({
    records: new Counter({
      name: 'taskflow_audit_records_total',
      help: 'Audit records appended, by operation (event type)',
      labelNames: ['operation'] as const,
      registers: [registry],
    }),
  }),
} as const satisfies TargetManifest;

export type AuditOptions = ReturnType<typeof auditManifest.config>;

/**
 * AUDIT_CHAIN_KEY keys the hashes of new records (and anchors); AUDIT_CHAIN_PREVIOUS_KEYS, comma-separated,
 * are keys rotated out, which verify still needs for the records they keyed. Both are read the same way: each
 * key exactly as given, at least 32 bytes, and refused with white space around it or a comma in it. Such a key
 * could not be rotated: moved into the comma-separated list, it was split or trimmed into another key, and
 * every record keyed before the rotation failed verify. Refused rather than trimmed: trimming would change the
 * key that signs without a word (a secret file's trailing newline taken off on upgrade keys new records with
 * another key), where a refusal stops the start-up and says which variable to fix.
 */
function chainKeys(env: Env): { chainKey: ChainKey | undefined; previousChainKeys: ChainKey[] } {
  const key = (name: string, secret: string) => {
    if (/^\s|\s$/.test(secret))
      throw new ConfigError(
        `${name} must have no white space around it (a secret file's trailing newline?): take it off, the key is used exactly as given`,
      );
    if (secret.includes(','))
      throw new ConfigError(
        `${name} must not hold a comma: AUDIT_CHAIN_PREVIOUS_KEYS separates keys with commas, so the key could not be rotated into it`,
      );
    if (Buffer.byteLength(secret) < 32) throw new ConfigError(`${name} must be at least 32 bytes`);
    return chainKey(secret);
  };
  const previous = (env.AUDIT_CHAIN_PREVIOUS_KEYS ?? '').split(',').filter((s) => s !== '');
  return {
    chainKey: env.AUDIT_CHAIN_KEY ? key('AUDIT_CHAIN_KEY', env.AUDIT_CHAIN_KEY) : undefined,
    previousChainKeys: previous.map((s, i) =>
      key(`each of AUDIT_CHAIN_PREVIOUS_KEYS (key ${i + 1} of ${previous.length})`, s),
    ),
  };
}
