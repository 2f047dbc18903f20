/** The embedded bus's settings (EMBEDDED_* in the config) and how its rows read as bus messages. */
import type { CloudEvent } from '../../contracts/cloudevent.ts';
import type { Logger } from '../../observability/logger.ts';
import type { ConsumeHooks } from '../consumer.ts';
import type { RetryPolicy } from '../../retry.ts';
import type { BusMessage } from '../types.ts';
export interface EmbeddedBusOptions {
  log: Logger;
  retry?: RetryPolicy;
  /**
   * How often an idle partition worker looks for new messages anyway: appends wake it at once (in-process
   * signals; NOTIFY from other processes on PostgreSQL), so this only bounds a missed wake-up.
   */
  pollIntervalMs?: number;
  heartbeatIntervalMs?: number;
  /** A member (and its partition leases) is considered gone after this long without a heartbeat. */
  sessionTimeoutMs?: number;
  batchSize?: number;
  hooks?: ConsumeHooks;
  /** Called for each event once its append committed (metrics: events produced, publish latency). */
  onAppended?: (topic: string, event: CloudEvent) => void;
}

/** EmbeddedBusOptions.sessionTimeoutMs when not given. */
export const DEFAULT_SESSION_TIMEOUT_MS = 10_000;

export interface MessageRow {
  topic: string;
  partition: number;
  offset: string;
  key: string;
  headers: Record<string, string>;
  value: CloudEvent;
  created_at: Date;
}

export const toMessage = (r: MessageRow): BusMessage => ({
  topic: r.topic,
  partition: r.partition,
  offset: r.offset,
  key: r.key,
  headers: r.headers,
  event: r.value,
  timestamp: new Date(r.created_at).toISOString(),
});
