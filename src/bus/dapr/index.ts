/**
 * The Dapr transport (BUS=dapr): the process talks to its own sidecar (daprd) over HTTP only
 * (docs/adr/0006-dapr-transport.md).
 * - Publisher: structured CloudEvents (`application/cloudevents+json`), key = `partitionKey` metadata (the
 *   Kafka record key). A batch goes out in rounds of distinct keys through the bulk publish API
 *   (`/v1.0-alpha1/publish/bulk`, ~50x the throughput of one request per message on 1.16), so one key's
 *   messages stay in order; `/v1.0/publish` one by one when the sidecar has no bulk API. Any failure
 *   (sidecar unreachable, non-2xx) throws, so the relay keeps the rows and backs off.
 * - Subscriber: programmatic subscriptions. `GET /dapr/subscribe` on the process HTTP app lists every
 *   subscription of this process with `deadLetterTopic: <group>.dlq`; daprd reads it once, when it first
 *   sees the app port open, so subscriptions must exist before the server listens (runTargets starts the
 *   targets first). Deliveries come to `POST /dapr/events/<group>/<topic>` and are answered with
 *   SUCCESS (handled), RETRY (transient error: daprd redelivers per its resiliency policy and sends the
 *   event to the dead-letter topic once the retries are used up) or DROP (invalid event or PermanentError:
 *   straight to the dead-letter topic). Our in-process retry (CONSUMER_*) is not used on Dapr. A batching
 *   group (a batch handler and a batch interval) subscribes in bulk (`bulkSubscribe`, alpha in 1.16): daprd
 *   sends up to maxBatch events of a partition per request, at most the interval apart, and gets a status
 *   per entry; the batch handler takes them in one transaction (deliverBulk), and an entry that fails alone
 *   is retried here and dead-lettered by this process (through the sidecar, with the failure's headers), then
 *   answered SUCCESS: daprd 1.16's bulk path commits past a DROP whose dead letter it could not write.
 * - The Kafka consumer group is the Dapr app id (component `consumerGroup: '{appID}'`): run one consumer
 *   target per sidecar with app id = its group. Dapr allows one subscription per topic per app, so a second
 *   group on the same topic in one process is refused.
 * - Admin (topics, lag, dead letters) is not part of Dapr's API: it goes to the Kafka brokers behind the
 *   component when KAFKA_BROKERS is set, and reads Dapr's structured messages and dead letters.
 * One file per concern: settings.ts, wire.ts (what daprd sends and stores), publisher.ts, subscriber.ts,
 * admin.ts; this file puts them together as a Bus.
 */
import { KafkaAdmin } from '../kafka/admin.ts';
import { assembleBus, type Bus } from '../types.ts';
import { DaprAdmin } from './admin.ts';
import { DaprPublisher } from './publisher.ts';
import type { DaprBusOptions, DaprSettings } from './settings.ts';
import { DaprSubscriber } from './subscriber.ts';

export { DaprAdmin } from './admin.ts';
export { DaprPublisher } from './publisher.ts';
export type { DaprBusOptions, DaprSettings } from './settings.ts';
export { checkDaprComponent } from './settings.ts';
export { DaprSubscriber } from './subscriber.ts';
export { cleanDaprEvent, eventFromDelivery, normalizeStored, type DaprStatus } from './wire.ts';

export function createDaprBus(s: DaprSettings, opts: DaprBusOptions): Bus {
  const publisher = new DaprPublisher(s, opts.log);
  const subscriber = new DaprSubscriber(s, opts.log, opts.app, publisher);
  opts.readiness?.('dapr subscriptions', async () => subscriber.checkSubscriptions());
  const admin = new DaprAdmin(s.kafka ? new KafkaAdmin({ ...s.kafka, topicPrefix: '' }, opts.log) : null);
  return assembleBus('dapr', { publisher, subscriber, admin });
}
