/**
 * A Taskflow process restarting beside its running sidecar (a container restart in Kubernetes: OOM kill, crash,
 * liveness failure; the sidecar keeps running), with a real daprd 1.16 run as the Helm chart runs it, on the
 * suite's Kafka. A review found two defects:
 * - with the chart's app health check, daprd stopped the app's subscriptions when the app went away and
 *   started them again when it came back; the old subscription's unsubscribe (components-contrib's Kafka
 *   Subscribe, after its in-flight redeliveries) ran after the new one had subscribed the topic, and a
 *   one-at-a-time group stopped consuming for good (1-3 runs in 5; dapr/components-contrib#4349);
 * - daprd reads GET /dapr/subscribe once in its lifetime, so the restarted process, whose /readyz waited for
 *   that request, said 503 for good while the sidecar delivered to it: every consumer pod stayed NotReady.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DaprAdmin } from '../../src/bus/dapr/admin.ts';
import { DaprPublisher } from '../../src/bus/dapr/publisher.ts';
import { listDeadLetters } from '../../src/bus/dlq.ts';
import { KafkaAdmin } from '../../src/bus/kafka/index.ts';
import type { BusMessage } from '../../src/bus/types.ts';
import { DLQ_SPEC, dlqTopic } from '../../src/contracts/topics.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { consumerTarget } from '../../src/services/consumer-target.ts';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp, waitFor, type TestApp } from '../helpers/app.ts';
import { chartResources, chartSidecarArgs, startSidecar, type Sidecar, daprSkip } from '../helpers/dapr.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { freePorts } from '../helpers/processes.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const id = randomBytes(3).toString('hex');

describe('Dapr: an app restarting beside its running sidecar', { skip: daprSkip, timeout: 150_000 }, () => {
  it("keeps consuming (the chart's sidecar settings: nothing lost or dead-lettered, the subscription never stopped) and is ready once delivered to", async () => {
    const group = `dapr-restart-${id}`;
    const topic = `dapr-restart-events-${id}`;
    const kafkaAdmin = new KafkaAdmin(
      { brokers: kafkaBrokers!.split(','), clientId: 'dapr-restart', topicPrefix: '' },
      silentLogger,
    );
    await kafkaAdmin.ensureTopics([
      { name: topic, partitions: 3, retentionMs: 3_600_000 },
      { name: dlqTopic(group), ...DLQ_SPEC },
    ]);
    const admin = new DaprAdmin(kafkaAdmin);
    const db = await openDb('memory://');
    await migrate(db);
    const handled: string[] = [];
    const [appPort, httpPort] = await freePorts(2);
    const start = () =>
      startApp(db, {
        targets: [
          consumerTarget({
            manifest: { name: 'restart', consumes: { group, topics: [topic] } },
            setup: async () => ({ handle: async (m: BusMessage) => void handled.push(titleOf(m.event)) }),
          }),
        ],
        env: {
          BUS: 'dapr',
          PORT: String(appPort),
          DAPR_HTTP_PORT: String(httpPort),
          KAFKA_BROKERS: kafkaBrokers!,
        },
      });
    const readyz = async (app: TestApp) => {
      const r = await fetch(`${app.url}/readyz`);
      return { ok: r.status === 200, body: `${r.status} ${await r.text()}` };
    };
    let sidecar: Sidecar | undefined;
    let app: TestApp | undefined;
    let producing: Promise<void> | undefined;
    let stop = false;
    const resources = chartResources();
    try {
      sidecar = await startSidecar({
        appId: group,
        name: group,
        kafkaBrokers: kafkaBrokers!,
        appPort: appPort!,
        httpPort: httpPort!,
        // daprd logs its (un)subscribing at debug.
        logLevel: 'debug',
        resourcesPath: resources,
        daprdArgs: chartSidecarArgs(),
      });
      app = await start();
      await waitFor(async () => (await readyz(app!)).ok, 30_000, 'the first process ready');

      // Six users' events, every 300 ms, through the sidecar, while the app stops and starts again.
      const publisher = new DaprPublisher({ httpPort: httpPort!, pubsubName: 'pubsub-kafka' }, silentLogger);
      const users = ['u0', 'u1', 'u2', 'u3', 'u4', 'u5'];
      const sent: string[] = [];
      producing = (async () => {
        for (let n = 0; !stop; n++) {
          const events = users.map((u) => taskCreated(u, `${u}-${String(n).padStart(4, '0')}`));
          await publisher.publish(events.map((event) => ({ topic, key: event.partitionkey!, event })));
          sent.push(...events.map(titleOf));
          await sleep(300);
        }
      })();
      await sleep(4_000);
      await app.stop();
      // Longer than the chart's app health check (if any) takes to call the app unhealthy.
      await sleep(6_000);
      app = await start();
      await sleep(3_000);
      stop = true;
      await producing;

      await waitFor(() => sent.every((t) => handled.includes(t)), 60_000, 'every event handled').catch(
        (err: Error) => {
          throw new Error(
            `${err.message}: ${sent.filter((t) => !handled.includes(t)).length} of ${sent.length} not handled`,
          );
        },
      );
      assert.deepEqual(await listDeadLetters(admin, group), [], 'nothing dead-lettered');
      for (const u of users) {
        const firsts = [...new Set(handled.filter((t) => t.startsWith(`${u}-`)))];
        assert.deepEqual(firsts, [...firsts].sort(), `${u}'s events handled in order`);
      }
      const unsubscribed = (await sidecar.logs())
        .split('\n')
        .filter((l) => /Unsubscribing to topic/.test(l) && l.includes(topic));
      assert.deepEqual(
        unsubscribed,
        [],
        "daprd never stopped the app's subscription (stopping and starting it again raced in daprd 1.16)",
      );
      const ready = await waitFor(async () => {
        const r = await readyz(app!);
        return r.ok ? r : undefined;
      }, 10_000).catch(async () => (await readyz(app!)).body);
      assert.equal(typeof ready, 'object', `the new process ready while delivered to: ${String(ready)}`);
    } finally {
      stop = true;
      await producing?.catch(() => undefined);
      await app?.stop();
      await sidecar?.stop();
      await admin.close();
      await db.close();
      rmSync(resources, { recursive: true, force: true });
    }
  });
});
