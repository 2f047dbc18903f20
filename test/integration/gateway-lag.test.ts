/**
 * `taskflow lag` (the CLI as a separate process) for the WebSocket gateway, whose instances each read every
 * partition of task-updates with a group of their own (docs/adr/0005), on the embedded bus (PostgreSQL) and on
 * Kafka: each running instance's group on every partition of task-updates with its lag, the partitions no
 * update reached yet too; and a stopped instance's group, left behind, named apart instead of as a lag that
 * grows for ever.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { partitionFor } from '../../src/bus/partitioner.ts';
import type { PartitionLag } from '../../src/bus/types.ts';
import { TOPICS } from '../../src/contracts/topics.ts';
import { createGatewayTarget, gatewayGroup } from '../../src/services/gateway/index.ts';
import { findTargets } from '../../src/services/index.ts';
import type { Db } from '../../src/store/db.ts';
import { TEST_SECRET, startApp, waitFor, type TestApp } from '../helpers/app.ts';
import { postgresBackend } from '../helpers/db.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const run = promisify(execFile);
const USER = 'lag-user';

const transports = [
  {
    name: 'embedded on postgres',
    skip: postgresBackend ? false : 'needs TEST_DATABASE_URL',
    env: (): Record<string, string> => ({ BUS: 'embedded' }),
  },
  {
    name: 'kafka',
    skip: !postgresBackend
      ? 'needs TEST_DATABASE_URL'
      : kafkaBrokers
        ? false
        : 'needs TEST_KAFKA_BROKERS (scripts/test starts Kafka)',
    env: (): Record<string, string> => ({
      BUS: 'kafka',
      KAFKA_BROKERS: kafkaBrokers!,
      KAFKA_TOPIC_PREFIX: `gwlag${randomBytes(3).toString('hex')}.`,
    }),
  },
];

interface LagJson {
  lag: PartitionLag[];
  stoppedInstanceGroups?: string[];
}

for (const transport of transports) {
  describe(
    `taskflow lag of the gateway's instance groups: ${transport.name}`,
    { skip: transport.skip },
    () => {
      const env = transport.env();
      const [groupA, groupB] = [gatewayGroup('gw-a'), gatewayGroup('gw-b')];
      let db: Db;
      let url: string;
      let drop: () => Promise<void>;
      let writer: TestApp;
      let second: TestApp | undefined;
      let partitions: number;
      let userPartition: number;

      const taskflow = async (...args: string[]) =>
        run(process.execPath, ['bin/taskflow.js', 'lag', ...args], {
          env: { ...process.env, ...env, DATABASE_URL: url, JWT_SECRET: TEST_SECRET, LOG_LEVEL: 'warn' },
          timeout: 120_000,
        });
      const lagJson = async (...args: string[]) =>
        JSON.parse((await taskflow('--json', ...args)).stdout) as LagJson;
      const rowsOf = (lag: PartitionLag[], group: string) =>
        lag.filter((l) => l.group === group && l.topic === TOPICS.taskUpdates);

      /** Whether `group` handled and committed everything on the user's partition. */
      const caughtUp = async (group: string) =>
        (await writer.proc.runtime.bus.admin.lag(group)).some(
          (l) =>
            l.topic === TOPICS.taskUpdates &&
            l.partition === userPartition &&
            l.committed !== null &&
            l.lag === 0,
        );

      /**
       * Writes a task of USER until each of `groups` handled one: a new instance starts at the end of the topic,
       * so a write before its group joined is not its to handle.
       */
      async function writeUntilHandled(groups: string[]) {
        await waitFor(
          async () => {
            const created = await writer.call(USER, 'POST', '/api/tasks', { title: 'a change' });
            assert.equal(created.status, 201);
            try {
              await waitFor(
                async () => (await Promise.all(groups.map(caughtUp))).every(Boolean),
                5_000,
                'handled',
              );
              return true;
            } catch {
              return false;
            }
          },
          90_000,
          `a change handled by ${groups.join(', ')}`,
        );
      }

      before(async () => {
        ({ db, url, drop } = await postgresBackend!.fresh());
        writer = await startApp(db, {
          targets: [...findTargets(['api', 'relay']), createGatewayTarget({ instanceId: 'gw-a' })],
          env,
        });
        second = await startApp(db, { targets: [createGatewayTarget({ instanceId: 'gw-b' })], env });
        const topic = (await writer.proc.runtime.bus.admin.describeTopics()).find(
          (t) => t.name === TOPICS.taskUpdates,
        );
        partitions = topic?.partitions ?? 0;
        assert.ok(partitions >= 2, `task-updates has ${partitions} partitions: the test needs two at least`);
        userPartition = partitionFor(USER, partitions);
      });

      after(async () => {
        await second?.stop();
        await writer?.stop();
        await drop?.();
      });

      it('lists every partition of task-updates for each running instance, with its lag', async () => {
        // Every update goes to one partition (one user): the others carry none.
        await writeUntilHandled([groupA, groupB]);
        const { lag, stoppedInstanceGroups } = await lagJson();
        for (const group of [groupA, groupB]) {
          const rows = rowsOf(lag, group);
          assert.deepEqual(
            rows.map((l) => l.partition),
            Array.from({ length: partitions }, (_, p) => p),
            `${group}: every partition of task-updates (${JSON.stringify(rows)})`,
          );
          assert.deepEqual(
            rows.map((l) => l.lag),
            rows.map(() => 0),
            `${group}: caught up everywhere, the partitions it never got an update on too`,
          );
          // Where it started is its position there: a change it has not handled yet would be lag.
          assert.ok(
            rows.every((l) => l.committed !== null),
            `${group}: a position on every partition (${JSON.stringify(rows)})`,
          );
        }
        assert.deepEqual(stoppedInstanceGroups ?? [], []);
        const text = (await taskflow()).stdout;
        for (const group of [groupA, groupB])
          assert.equal(
            text.split('\n').filter((line) => line.startsWith(`${group} `)).length,
            partitions,
            `${group}: a line per partition:\n${text}`,
          );
      });

      it("names a stopped instance's group apart, not as a lag that grows for ever", async () => {
        await second!.stop();
        second = undefined;
        await writeUntilHandled([groupA]);
        await writeUntilHandled([groupA]);
        const { lag, stoppedInstanceGroups } = await lagJson();
        assert.deepEqual(
          rowsOf(lag, groupB),
          [],
          `${groupB} is no consumer that lags: its instance is gone (${JSON.stringify(rowsOf(lag, groupB))})`,
        );
        assert.deepEqual(stoppedInstanceGroups, [groupB]);
        assert.equal(rowsOf(lag, groupA).length, partitions, 'the running instance is listed as before');
        const text = (await taskflow()).stdout;
        assert.ok(!text.split('\n').some((line) => line.startsWith(`${groupB} `)), text);
        assert.match(text, new RegExp(`not running.*${groupB}`, 's'));

        // Asked for by name, it is shown, with what it did not read while it was gone, and said to be stopped.
        const named = await lagJson('--group', groupB);
        assert.deepEqual(named.stoppedInstanceGroups, [groupB]);
        const rows = rowsOf(named.lag, groupB);
        assert.equal(rows.length, partitions);
        assert.ok(
          rows.find((l) => l.partition === userPartition)!.lag >= 2,
          `the changes written since it stopped: ${JSON.stringify(rows)}`,
        );
        assert.match((await taskflow('--group', groupB)).stdout, /not running/);
      });
    },
  );
}
