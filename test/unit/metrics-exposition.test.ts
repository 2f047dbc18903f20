/** /metrics writes NaN as the exposition format spells it (prom-client writes `Nan`, which parsers refuse). */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { Metrics } from '../../src/observability/metrics.ts';
import { relayManifest } from '../../src/services/relay/manifest.ts';

it('writes a NaN sample as NaN', async () => {
  const m = new Metrics({ defaultMetrics: false });
  m.of(relayManifest).outboxOldestAge.set(NaN);
  const text = await m.exposition();
  assert.match(text, /^taskflow_outbox_oldest_pending_age_seconds NaN$/m);
  assert.doesNotMatch(text, / Nan$/m);
});

it('shows no lag or dead-letter series of a group while the bus cannot be read, not the last ones read', async () => {
  const m = new Metrics({ defaultMetrics: false });
  let reachable = true;
  m.trackConsumerGroup('taskflow-audit', {
    lag: async () => {
      if (!reachable) throw new Error('broker down');
      return [{ topic: 'task-events', partition: 0, lag: 0 }];
    },
    deadLetters: async () => {
      if (!reachable) throw new Error('broker down');
      return 0;
    },
  });
  const before = await m.exposition();
  assert.match(before, /^taskflow_consumer_lag_messages\{group="taskflow-audit".*\} 0$/m);
  assert.match(before, /^taskflow_dlq_messages\{group="taskflow-audit"\} 0$/m);
  reachable = false;
  await m.exposition(); // the error counter is written before the gauges' read in a scrape: it shows next time
  const during = await m.exposition();
  assert.doesNotMatch(during, /^taskflow_consumer_lag_messages\{/m);
  assert.doesNotMatch(during, /^taskflow_dlq_messages\{/m);
  assert.match(during, /^taskflow_metrics_bus_read_errors_total\{group="taskflow-audit"\} [1-9]\d*$/m);
});

it("labels a consumed event's type only with a type of the contract, whatever a writer of the broker made up", async () => {
  const m = new Metrics({ defaultMetrics: false });
  const hooks = m.consumerHooks('taskflow-audit');
  for (let i = 0; i < 50; i++) {
    const event = { type: `made-up-${i}` };
    hooks.onRetry({ event });
    hooks.onDeadLetter({ topic: 'task-events', event });
  }
  hooks.onHandled({ topic: 'task-events', event: { type: 'task.created' }, timestamp: '' }, 1);
  hooks.onHandled({ topic: 'task-events', event: { type: 'made-up' }, timestamp: '' }, 1);
  const text = await m.exposition();
  assert.doesNotMatch(text, /made-up/);
  assert.match(text, /^taskflow_events_consumed_total\{[^}]*type="invalid",outcome="dead_lettered"\} 50$/m);
  assert.match(text, /^taskflow_events_consumed_total\{[^}]*type="task.created",outcome="handled"\} 1$/m);
  assert.match(text, /^taskflow_handler_retries_total\{[^}]*type="invalid"\} 50$/m);
});
