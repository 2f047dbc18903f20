/**
 * `taskflow dlq show --id` and `dlq replay --id` find an event's letters a page at a time (a review of the CLI
 * found each failing before): they read the whole dead-letter topic in one read (`limit: Infinity`: SQL LIMIT NULL
 * on the embedded bus, every record on Kafka) to find one id. With 200,000 letters `dlq show` peaked at 1.57 GB on
 * PGlite and 510 MB on PostgreSQL, and with a 512 MB heap both commands died ("JavaScript heap out of memory").
 * On every transport: every read is a bounded page, every letter of the ids is found (an event dead-lettered
 * twice has two), and a replay by id moves the replay cursor as before (over the run of replayed letters that
 * starts at it). The CLI, on PostgreSQL, finds a letter of a topic larger than its heap.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { findDeadLetters, listDeadLetters, replayDeadLetters } from '../../src/bus/dlq.ts';
import { DLQ_HEADERS } from '../../src/bus/middleware.ts';
import type { BusAdmin, OutgoingMessage } from '../../src/bus/types.ts';
import { createEmbeddedBus } from '../../src/bus/embedded/index.ts';
import { dlqTopic } from '../../src/contracts/topics.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { TEST_SECRET } from '../helpers/app.ts';
import { postgresBackend } from '../helpers/db.ts';
import { taskCreated } from '../helpers/events.ts';
import { harnesses } from '../helpers/transports.ts';

const DAY = 86_400_000;

/** `admin`, recording the limit of each read. */
function observed(admin: BusAdmin, limits: number[]): BusAdmin {
  return new Proxy(admin, {
    get(target, key) {
      if (key === 'read')
        return (topic: string, opts?: Parameters<BusAdmin['read']>[1]) => {
          limits.push(opts?.limit ?? 1000);
          return target.read(topic, opts);
        };
      const value = Reflect.get(target, key, target) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** A letter of `group` for `event`, from `source` (its i-th). */
const letter = (
  group: string,
  source: string,
  event: OutgoingMessage['event'],
  i: number,
): OutgoingMessage => ({
  topic: dlqTopic(group),
  key: event.partitionkey ?? 'k',
  event,
  headers: {
    [DLQ_HEADERS.error]: `boom ${i}`,
    [DLQ_HEADERS.attempts]: '5',
    [DLQ_HEADERS.sourceTopic]: source,
    [DLQ_HEADERS.sourcePartition]: '0',
    [DLQ_HEADERS.sourceOffset]: String(i),
    [DLQ_HEADERS.group]: group,
  },
});

for (const factory of harnesses) {
  describe(
    `dead letters found by event id, a page at a time: ${factory.name}`,
    { skip: factory.skip },
    () => {
      it('reads bounded pages, finds every letter of the ids, and moves the replay cursor as before', async () => {
        const h = await factory.create();
        const p = await h.start();
        try {
          const group = h.unique('search');
          const source = h.unique('source');
          await p.bus.admin.ensureTopics([
            { name: dlqTopic(group), partitions: 3, retentionMs: DAY },
            { name: source, partitions: 1, retentionMs: DAY },
          ]);
          const events = Array.from({ length: 1_200 }, (_, i) => taskCreated(`u${i % 3}`, `letter ${i}`));
          // The event of letter 7 failed again later: two letters, the second in a later page.
          const twice = events[7]!;
          const letters = [
            ...events.map((e, i) => letter(group, source, e, i)),
            letter(group, source, twice, 1_200),
          ];
          for (let i = 0; i < letters.length; i += 400)
            await p.bus.publisher.publish(letters.slice(i, i + 400));
          const last = events.at(-1)!;

          const limits: number[] = [];
          const admin = observed(p.bus.admin, limits);
          const found = await findDeadLetters(admin, group, [twice.id, last.id, 'no-such-id'], {
            pageSize: 100,
          });
          assert.deepEqual(found.map((d) => d.error).sort(), ['boom 1199', 'boom 1200', 'boom 7']);
          assert.ok(limits.length > 10, `read in pages: ${limits.length} reads`);
          assert.ok(
            limits.every((l) => l <= 100),
            `every read a page of at most 100: ${[...new Set(limits)].join(', ')}`,
          );

          // The first two letters of a partition, replayed by id: the cursor moves over them (and only there).
          const all = await listDeadLetters(p.bus.admin, group, { limit: 2_000, all: true });
          const partition = all[0]!.dlqPartition;
          const [first, second, third] = all.filter((d) => d.dlqPartition === partition);
          limits.length = 0;
          const bus = { ...p.bus, admin };
          const replayed = await replayDeadLetters(bus, group, {
            ids: [second!.event.id, first!.event.id],
            pageSize: 100,
          });
          assert.deepEqual(replayed.missing, []);
          assert.equal(replayed.replayed.length, 2);
          assert.ok(
            limits.length > 10 && limits.every((l) => l <= 100),
            `replay by id read in pages: ${limits}`,
          );
          const pending = await listDeadLetters(p.bus.admin, group, { limit: 2_000 });
          const pendingOf = pending.filter((d) => d.dlqPartition === partition);
          assert.equal(
            pendingOf[0]?.event.id,
            third!.event.id,
            'the cursor moved past the two, not past the third',
          );
          assert.equal(pending.length, letters.length - 2);

          // Letters replayed by id away from the cursor are sent, and stay listed behind the letters before them.
          const again = await replayDeadLetters(bus, group, { ids: [twice.id], pageSize: 100 });
          assert.equal(again.replayed.length, 1, 'an event with two letters is sent once');
          assert.equal(
            (await listDeadLetters(p.bus.admin, group, { limit: 2_000 })).length,
            letters.length - 2,
          );
          const sent = (await p.bus.admin.read(source, { limit: 100 })).map((m) => m.event.id);
          assert.deepEqual(sent.sort(), [first!.event.id, second!.event.id, twice.id].sort());
        } finally {
          await p.close();
          await h.cleanup();
        }
      });
    },
  );
}

describe(
  'taskflow dlq show --id on a dead-letter topic larger than its heap',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    it('finds the letter (it read every letter into memory at once, and died)', async () => {
      const { db, url, drop } = await postgresBackend!.fresh();
      const bus = createEmbeddedBus(db, { log: silentLogger });
      const group = 'taskflow-audit';
      try {
        // 5,000 letters of 10 KB: 50 MB of JSON, some hundreds of MB as objects.
        const description = 'd'.repeat(10_000);
        const events = Array.from({ length: 5_000 }, (_, i) =>
          taskCreated('u-big', `letter ${i}`, { description }),
        );
        for (let i = 0; i < events.length; i += 500)
          await bus.publisher.publish(
            events.slice(i, i + 500).map((e, j) => letter(group, 'task-events', e, i + j)),
          );
        const last = events.at(-1)!;
        const { stdout } = await promisify(execFile)(
          process.execPath,
          ['--max-old-space-size=64', 'bin/taskflow.js', 'dlq', 'show', '--id', last.id],
          {
            env: {
              ...process.env,
              BUS: 'embedded',
              DATABASE_URL: url,
              JWT_SECRET: TEST_SECRET,
              LOG_LEVEL: 'warn',
            },
            timeout: 120_000,
            maxBuffer: 64 * 2 ** 20,
          },
        );
        const shown = JSON.parse(stdout) as { error: string; event: { id: string } }[];
        assert.deepEqual(
          shown.map((d) => [d.event.id, d.error]),
          [[last.id, 'boom 4999']],
        );
      } finally {
        await bus.close();
        await drop();
      }
    });
  },
);
