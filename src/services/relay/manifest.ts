/** The `relay` target: what it is, its RELAY_* settings and its metrics (the list of targets: services/index.ts). */
import { Counter, Gauge, type Registry } from 'prom-client';
import { int, type Env, TIMER_MAX_MS } from '../../config.ts';
import type { TargetManifest } from '../../runtime.ts';

export const relayManifest = {
  name: 'relay',
  description: 'publishes outbox rows to the bus (transactional outbox relay)',
  serves: 'the outbox',
  produces: [],
  effects: 'every topic (Kafka, Dapr)',
  owns: ['the relay lease'],
  config: (env: Env) => ({
    batchSize: int(env, 'RELAY_BATCH_SIZE', 500, 1),
    pollIntervalMs: int(env, 'RELAY_POLL_MS', 200, 1, TIMER_MAX_MS),
    batchIntervalMs: int(env, 'RELAY_BATCH_INTERVAL_MS', 25, 0, TIMER_MAX_MS),
    leaseMs: int(env, 'RELAY_LEASE_MS', 1500, 300, TIMER_MAX_MS),
  }),
  metrics: (registry: Registry) => ({
    outboxPending: new Gauge({
      name: 'taskflow_outbox_pending_events',
      help: 'Outbox rows not yet published',
      registers: [registry],
    }),
    outboxOldestAge: new Gauge({
      name: 'taskflow_outbox_oldest_pending_age_seconds',
      help: 'Age of the oldest unpublished outbox row',
      registers: [registry],
    }),
    // A record the bus refuses for good (too large for the topic) is retried for ever and every event behind it
    // waits (per-key order): this says so, and `taskflow lag` which event and why.
    outboxHeadAttempts: new Gauge({
      name: 'taskflow_outbox_head_attempts',
      help: 'Failed sends of the oldest unpublished outbox row, which every row behind it waits for (0: none failed)',
      registers: [registry],
    }),
    publishFailures: new Counter({
      name: 'taskflow_outbox_publish_failures_total',
      help: 'Sends of a batch of outbox rows to the bus that failed (the relay retries them)',
      registers: [registry],
    }),
    ledgerPruned: new Counter({
      name: 'taskflow_ledger_pruned_rows_total',
      help: "Rows of the consumers' dedupe ledger (processed_events) deleted past LEDGER_RETENTION_MS",
      registers: [registry],
    }),
  }),
} as const satisfies TargetManifest;

export type RelayOptions = ReturnType<typeof relayManifest.config>;
