import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allTopics } from '../../src/bus/index.ts';
import { ConfigError, loadConfig } from '../../src/config.ts';
import { deadLetterGroups } from '../../src/runtime.ts';
import { MANIFESTS } from '../../src/services/index.ts';

const base = { DATABASE_URL: 'memory://', JWT_SECRET: 'x'.repeat(32) };

describe('topic settings from the environment', () => {
  it('applies KAFKA_TOPIC_PARTITIONS and KAFKA_TOPIC_RETENTION_MS to the topics to create', () => {
    const config = loadConfig({
      ...base,
      KAFKA_TOPIC_PARTITIONS: '6',
      KAFKA_TOPIC_RETENTION_MS: 'task-events=86400000, dlq=604800000',
    });
    const byName = new Map(allTopics(config, deadLetterGroups(MANIFESTS)).map((t) => [t.name, t]));
    assert.deepEqual(byName.get('task-events'), {
      name: 'task-events',
      partitions: 6,
      retentionMs: 86_400_000,
    });
    assert.equal(byName.get('reminders')?.retentionMs, 7 * 86_400_000, 'the default where not overridden');
    assert.equal(byName.get('taskflow-audit.dlq')?.retentionMs, 604_800_000);
    assert.equal(byName.get('taskflow-audit.dlq')?.partitions, 1);
  });

  it('refuses unknown topics, non-numbers and retentions under a minute', () => {
    for (const bad of ['tasks=86400000', 'task-events=1d', 'task-events=1000', 'task-events'])
      assert.throws(
        () => loadConfig({ ...base, KAFKA_TOPIC_RETENTION_MS: bad }),
        (err: unknown) => err instanceof ConfigError && /KAFKA_TOPIC_RETENTION_MS must be/.test(err.message),
        bad,
      );
  });
});
