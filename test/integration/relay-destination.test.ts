/**
 * One database's outbox goes to one place. A relay configured for another (a topic prefix or bus of another
 * environment, pointed at this database by mistake) that takes the lease over drains the outbox there, and
 * this environment's consumers never see those events: the takeover says so, naming both destinations.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { pino } from 'pino';
import { loadConfig } from '../../src/config.ts';
import { Metrics } from '../../src/observability/metrics.ts';
import type { Runtime } from '../../src/runtime.ts';
import { Relay } from '../../src/services/relay/index.ts';
import { openDb } from '../../src/store/db.ts';
import { expireLease } from '../../src/store/lease.ts';
import { migrate } from '../../src/store/migrate.ts';
import { TEST_SECRET } from '../helpers/app.ts';

it('warns when a relay takes over from one that published elsewhere (another prefix), not from a peer', async () => {
  const db = await openDb('memory://');
  await migrate(db);
  const lines: string[] = [];
  const log = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
  const relayTo = (prefix: string) =>
    new Relay({
      config: loadConfig({
        DATABASE_URL: 'memory://',
        JWT_SECRET: TEST_SECRET,
        BUS: 'kafka',
        KAFKA_TOPIC_PREFIX: prefix,
      }),
      db,
      log,
      metrics: new Metrics({ defaultMetrics: false }),
    } as unknown as Runtime);
  const hold = (r: Relay) => (r as unknown as { holdLease(): Promise<boolean> }).holdLease();
  try {
    const staging = relayTo('staging.');
    assert.equal(await hold(staging), true);
    await expireLease(db, 'relay', staging.holder);
    const peer = relayTo('staging.');
    assert.equal(await hold(peer), true);
    assert.deepEqual(lines, [], 'a peer of the same destination takes over quietly');
    await peer.stop(); // a clean stop (a rolling deploy) hands over as a failure does
    const other = relayTo('production.');
    assert.equal(await hold(other), true);
    const [warned] = lines.map((l) => JSON.parse(l) as { msg: string });
    assert.match(warned?.msg ?? '', /published to kafka:staging\.; this one publishes to kafka:production\./);
  } finally {
    await db.close();
  }
});
