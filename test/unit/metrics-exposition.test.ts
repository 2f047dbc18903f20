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
