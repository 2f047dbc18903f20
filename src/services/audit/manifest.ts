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
 * are keys rotated out, which verify still needs for the records they keyed. Each key is used exactly as given
 * (the bytes that keyed records are the bytes configured: never trimmed), at least 32 bytes. `base64:<...>`
 * gives a key by its bytes in base64 (either variable): the way to rotate a key with white space around it (a
 * secret file's trailing newline) or a comma in it into the list, where it was split or trimmed into another key
 * and every record it keyed failed verify. AUDIT_CHAIN_KEY is taken as it is, such a key too (refused, an
 * upgrade would not start, and records already keyed with it); an entry of the list with white space around it
 * or that is not valid base64 is refused (a typo, "k1, k2", is another key).
 */
function chainKeys(env: Env): { chainKey: ChainKey | undefined; previousChainKeys: ChainKey[] } {
  const key = (name: string, given: string, inList: boolean) => {
    let secret = given;
    if (given.startsWith('base64:')) {
      const b64 = given.slice('base64:'.length);
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0)
        throw new ConfigError(`${name} starts with "base64:" but the rest is not base64`);
      secret = Buffer.from(b64, 'base64').toString('utf8');
    } else if (inList && /^\s|\s$/.test(given))
      throw new ConfigError(
        `${name} has white space around it: keys are joined by commas alone and used exactly as given; a key that has white space around it goes in as base64:<its bytes in base64>`,
      );
    if (Buffer.byteLength(secret) < 32) throw new ConfigError(`${name} must be at least 32 bytes`);
    return chainKey(secret);
  };
  const previous = (env.AUDIT_CHAIN_PREVIOUS_KEYS ?? '').split(',').filter((s) => s !== '');
  return {
    chainKey: env.AUDIT_CHAIN_KEY ? key('AUDIT_CHAIN_KEY', env.AUDIT_CHAIN_KEY, false) : undefined,
    previousChainKeys: previous.map((s, i) =>
      key(`each of AUDIT_CHAIN_PREVIOUS_KEYS (key ${i + 1} of ${previous.length})`, s, true),
    ),
  };
}
