/**
 * A record on a one-at-a-time group's topic that is no CloudEvent but has a top-level `entries` array (another
 * producer's batch message), delivered by a real daprd 1.16 sidecar (the suite's Kafka). A review found the
 * route took it for a bulk delivery whatever the subscription: `{"entries":[]}` was answered SUCCESS (not
 * handled, not dead-lettered, not logged), and an entry's inner event was handled. Only a bulk subscription's
 * route takes bulk deliveries now: here each such record is dead-lettered like any record that is no event.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Producer, stringSerializers } from '@platformatic/kafka';
import { listDeadLetters } from '../../src/bus/dlq.ts';
import type { BusMessage } from '../../src/bus/types.ts';
import { consumerTarget } from '../../src/services/consumer-target.ts';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { waitFor } from '../helpers/app.ts';
import { startDaprApp, type DaprApp, daprSkip, makeTopicAndDeadLetters } from '../helpers/dapr.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const id = randomBytes(3).toString('hex');

describe('Dapr one-at-a-time route', { skip: daprSkip, timeout: 90_000 }, () => {
  it('dead-letters a record with an `entries` array as one that is no event; handles no event inside it', async () => {
    const group = `dapr-entries-${id}`;
    const topic = `${group}-events`;
    await makeTopicAndDeadLetters(topic, group);
    const db = await openDb('memory://');
    await migrate(db);
    const handled: string[] = [];
    let dapr: DaprApp | undefined;
    const producer = new Producer({
      clientId: 'dapr-entries',
      bootstrapBrokers: kafkaBrokers!.split(','),
      serializers: stringSerializers,
    });
    try {
      dapr = await startDaprApp(db, {
        appId: group,
        name: group,
        targets: [
          consumerTarget({
            manifest: { name: 'entries-probe', consumes: { group, topics: [topic] } },
            setup: async () => ({ handle: async (m: BusMessage) => void handled.push(titleOf(m.event)) }),
          }),
        ],
        topics: [topic],
        kafkaBrokers: kafkaBrokers!,
      });
      const values = [
        JSON.stringify({ hello: 'not an event' }),
        JSON.stringify({ entries: [], note: 'a batch message of another producer' }),
        JSON.stringify({ entries: [{ entryId: 'x', event: taskCreated('someone-else', 'inside') }] }),
        JSON.stringify(taskCreated('u', 'after')),
      ];
      await producer.send({ messages: values.map((value) => ({ topic, key: 'u', value })) });
      await waitFor(() => handled.includes('after'), 60_000, 'the event after them');
      const bus = dapr.app.proc.runtime.bus;
      let offsets: string[] = [];
      await waitFor(
        async () => {
          offsets = (await listDeadLetters(bus.admin, group)).map((l) => l.source.offset).sort();
          return offsets.length >= 3 || sleep(500).then(() => false);
        },
        20_000,
        'three dead letters',
      );
      await sleep(500);
      assert.deepEqual(handled, ['after'], 'no event inside a record was handled');
      assert.deepEqual(offsets, ['0', '1', '2'], 'each record that is no event is dead-lettered');
    } finally {
      await producer.close();
      await dapr?.stop();
      await db.close();
    }
  });
});
