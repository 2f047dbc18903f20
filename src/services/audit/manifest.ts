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
 * AUDIT_CHAIN_KEY keys the hashes of new records (and anchors), used exactly as given; AUDIT_CHAIN_PREVIOUS_KEYS,
 * comma-separated and each trimmed, are keys rotated out, which verify still needs for the records they keyed;
 * AUDIT_CHAIN_PREVIOUS_KEYS_BASE64, comma-separated, are such keys by their bytes in base64: the way to rotate out
 * a key the plain list cannot hold as it was, with white space around it (a secret file's trailing newline) or a
 * comma in it (the plain list split or trimmed it into another key, and every record it keyed failed verify).
 * Each at least 32 bytes. A key is bytes: decoded base64 is never read as text (that made different keys one).
 */
function chainKeys(env: Env): { chainKey: ChainKey | undefined; previousChainKeys: ChainKey[] } {
  const key = (name: string, secret: string | Buffer) => {
    if (Buffer.byteLength(secret) < 32) throw new ConfigError(`${name} must be at least 32 bytes`);
    return chainKey(secret);
  };
  const list = (value: string | undefined) =>
    (value ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  const previous = list(env.AUDIT_CHAIN_PREVIOUS_KEYS).map((s) =>
    key('each of AUDIT_CHAIN_PREVIOUS_KEYS', s),
  );
  const encoded = list(env.AUDIT_CHAIN_PREVIOUS_KEYS_BASE64).map((b64, i, all) => {
    const name = `each of AUDIT_CHAIN_PREVIOUS_KEYS_BASE64 (key ${i + 1} of ${all.length})`;
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0)
      throw new ConfigError(`${name} must be base64 (the key's bytes), as \`base64 < keyfile\` writes it`);
    return key(name, Buffer.from(b64, 'base64'));
  });
  return {
    chainKey: env.AUDIT_CHAIN_KEY ? key('AUDIT_CHAIN_KEY', env.AUDIT_CHAIN_KEY) : undefined,
    previousChainKeys: [...previous, ...encoded],
  };
}
