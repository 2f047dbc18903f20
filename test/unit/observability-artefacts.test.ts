/**
 * The alerting rules and the Grafana dashboard query metrics that exist: every PromQL expression parses
 * (the Prometheus project's own PromQL grammar, @prometheus-io/lezer-promql) and every `taskflow_*` metric
 * it names is one this code registers. A renamed metric or a broken rule fails here, not in production.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parser } from '@prometheus-io/lezer-promql';
import { parse as parseYaml } from 'yaml';
import { Metrics } from '../../src/observability/metrics.ts';
import { MANIFESTS } from '../../src/services/index.ts';

const root = new URL('../../deploy/observability/', import.meta.url);

function syntaxErrors(expr: string): number {
  let errors = 0;
  parser.parse(expr).iterate({
    enter: (node) => {
      if (node.type.isError) errors++;
    },
  });
  return errors;
}

/** Metric names an expression uses (histogram series map to their histogram). */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\btaskflow_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''));
}

async function registeredNames(): Promise<Set<string>> {
  const metrics = new Metrics();
  // Every target's own metrics, as a process that runs them all registers them.
  for (const { name, metrics: make } of MANIFESTS) if (make) metrics.of({ name, metrics: make });
  return new Set((await metrics.registry.getMetricsAsJSON()).map((m) => m.name));
}

function checkExpressions(exprs: readonly string[], known: Set<string>) {
  assert.ok(exprs.length > 5, 'found the expressions');
  for (const expr of exprs) {
    assert.equal(syntaxErrors(expr), 0, `PromQL does not parse: ${expr}`);
    for (const name of metricNames(expr))
      assert.ok(known.has(name) || known.has(`${name}_total`), `unknown metric ${name} in: ${expr}`);
  }
}

describe('observability artefacts', () => {
  it('the grammar check is not a rubber stamp', () => {
    assert.ok(syntaxErrors('sum by (group (rate(x[5m]))') > 0);
    assert.equal(syntaxErrors('sum by (group) (rate(x[5m]))'), 0);
  });

  it('deploy/observability/prometheus-rules.yaml: valid PromQL over registered metrics', async () => {
    const rules = parseYaml(readFileSync(new URL('prometheus-rules.yaml', root), 'utf8')) as {
      groups: { rules: { expr: string; alert?: string; record?: string }[] }[];
    };
    const exprs = rules.groups.flatMap((g) => g.rules.map((r) => r.expr));
    checkExpressions(exprs, await registeredNames());
  });

  it('deploy/observability/grafana-dashboard.json: valid PromQL over registered metrics', async () => {
    const substituted = dashboardExpressions().map((e) =>
      e.replaceAll('$__rate_interval', '5m').replaceAll('$job', '.*'),
    );
    checkExpressions(substituted, await registeredNames());
  });

  it('never sums a gauge every replica reads from the same table or broker over the replicas', () => {
    // Each replica of a target reports the whole figure (the reminders table, the outbox, a group's lag and
    // dead letters): summed over replicas, a panel showed it 2-3 times over under the chart's autoscaler.
    const shared = [
      'taskflow_reminders_pending',
      'taskflow_outbox_pending_events',
      'taskflow_outbox_oldest_pending_age_seconds',
      'taskflow_outbox_head_attempts',
      'taskflow_consumer_lag_messages',
      'taskflow_dlq_messages',
    ];
    const rules = parseYaml(readFileSync(new URL('prometheus-rules.yaml', root), 'utf8')) as {
      groups: { rules: { expr: string }[] }[];
    };
    const exprs = [...dashboardExpressions(), ...rules.groups.flatMap((g) => g.rules.map((r) => r.expr))];
    let seen = 0;
    for (const expr of exprs)
      for (const m of expr.matchAll(/\btaskflow_[a-z0-9_]+/g)) {
        if (!shared.includes(m[0])) continue;
        seen++;
        const before = expr.slice(0, m.index);
        assert.doesNotMatch(
          before,
          /\bsum(\s+by\s*\([^)]*\))?\s*\(\s*$/,
          `${m[0]} summed over replicas in: ${expr}`,
        );
      }
    assert.ok(seen >= shared.length, 'found the gauges');
  });
});

/** Every PromQL expression of the Grafana dashboard. */
function dashboardExpressions(): string[] {
  const exprs: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object')
      for (const [k, x] of Object.entries(v)) {
        if (k === 'expr' && typeof x === 'string') exprs.push(x);
        else walk(x);
      }
  };
  walk(JSON.parse(readFileSync(new URL('grafana-dashboard.json', root), 'utf8')));
  return exprs;
}
