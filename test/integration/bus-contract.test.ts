/**
 * One contract, every transport: ordering per key, at-least-once with redelivery, dead-lettering, replay,
 * consumer groups sharing partitions, and positions that survive a restart.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { COMMIT_INTERVAL_MS } from '../../src/bus/consumer.ts';
import { DLQ_HEADERS } from '../../src/bus/middleware.ts';
import {
  listDeadLetters,
  renewReplayCursor,
  replayCursor,
  replayDeadLetters,
  unreplayedCount,
} from '../../src/bus/dlq.ts';
import type { BusMessage, Subscription } from '../../src/bus/types.ts';
import { PermanentError } from '../../src/bus/types.ts';
import { dlqReplayCursor, dlqTopic } from '../../src/contracts/topics.ts';
import { partitionFor } from '../../src/bus/partitioner.ts';
import { waitFor } from '../helpers/app.ts';
import { keyPerPartition, taskCreated, titleOf } from '../helpers/events.ts';
import { harnesses, type BusProcess, type TransportHarness } from '../helpers/transports.ts';

const DAY = 86_400_000;

/**
 * The barrier of a "nothing more happened" check, instead of a pause: a sentinel published to every partition
 * after the messages under test. A partition is consumed in order, so once a subscription has handled every
 * sentinel, whatever it was going to get before them (a duplicate, a redelivery, a replayed message) it has
 * got. Handlers pass each message to `saw` first and skip it when it is a sentinel.
 */
class Sentinels {
  private readonly seen = new Set<string>();
  private round = 0;
  /** Whether `m` is a sentinel (then recorded as handled). */
  saw = (m: BusMessage): boolean => {
    const title = titleOf(m.event);
    if (!title.startsWith('sentinel ')) return false;
    this.seen.add(title);
    return true;
  };
  async pass(p: BusProcess, topic: string, partitions: number): Promise<void> {
    const round = ++this.round;
    const titles = keyPerPartition(partitions, 'sentinel').map((key) => ({
      key,
      title: `sentinel ${round} ${key}`,
    }));
    await p.bus.publisher.publish(
      titles.map(({ key, title }) => ({ topic, key, event: taskCreated(key, title) })),
    );
    await waitFor(
      () => titles.every(({ title }) => this.seen.has(title)),
      30_000,
      `a sentinel handled on each of ${partitions} partitions`,
    );
  }
}

for (const factory of harnesses) {
  describe(`bus contract: ${factory.name}`, { skip: factory.skip }, () => {
    let h: TransportHarness;
    before(async () => {
      h = await factory.create();
    });
    after(async () => {
      await h.cleanup();
    });

    async function topicWith(partitions: number) {
      const name = h.unique('contract');
      const p = await h.start();
      await p.bus.admin.ensureTopics([{ name, partitions, retentionMs: DAY }]);
      await p.close();
      return name;
    }

    it('delivers every message once, in order per key, across partitions', async () => {
      const topic = await topicWith(3);
      const p = await h.start();
      const keys = Array.from({ length: 8 }, (_, i) => `user-${i}`);
      const messages = [];
      for (let i = 0; i < 240; i++) {
        const key = keys[i % keys.length]!;
        messages.push({ topic, key, event: taskCreated(key, String(i)) });
      }
      for (let i = 0; i < messages.length; i += 40) await p.bus.publisher.publish(messages.slice(i, i + 40));
      const got = new Map<string, number[]>();
      let total = 0;
      const partitionsSeen = new Set<number>();
      const wrongPartition: string[] = [];
      const sentinels = new Sentinels();
      const sub = await p.bus.subscriber.subscribe({
        group: h.unique('order'),
        topics: [topic],
        handler: async (m) => {
          if (sentinels.saw(m)) return;
          got.set(m.key, [...(got.get(m.key) ?? []), Number(titleOf(m.event))]);
          partitionsSeen.add(m.partition);
          if (m.partition !== partitionFor(m.key, 3)) wrongPartition.push(m.key);
          total++;
        },
      });
      await waitFor(() => total >= 240, 30_000, '240 messages');
      await sentinels.pass(p, topic, 3);
      await sub.close();
      await p.close();
      assert.equal(total, 240, 'no duplicates without failures');
      for (const key of keys) {
        const seqs = got.get(key)!;
        assert.equal(seqs.length, 30, key);
        assert.deepEqual(
          seqs,
          [...seqs].sort((a, b) => a - b),
          `${key} in order`,
        );
      }
      assert.ok(partitionsSeen.size > 1, 'keys spread over partitions');
      assert.deepEqual(wrongPartition, [], 'murmur2(key) mod partitions, as Java clients do');
    });

    it('redelivers after a handler error (with backoff), keeping the key order', async () => {
      const topic = await topicWith(1);
      const p = await h.start();
      await p.bus.publisher.publish(
        ['a', 'b', 'c'].map((t) => ({ topic, key: 'u1', event: taskCreated('u1', t) })),
      );
      const attempts = new Map<string, number>();
      const handled: string[] = [];
      const sub = await p.bus.subscriber.subscribe({
        group: h.unique('redeliver'),
        topics: [topic],
        handler: async (m) => {
          const t = titleOf(m.event);
          attempts.set(t, (attempts.get(t) ?? 0) + 1);
          if (t === 'b' && attempts.get(t)! < 3) throw new Error('transient');
          handled.push(t);
        },
      });
      await waitFor(() => handled.length >= 3, 20_000, 'three handled');
      await sub.close();
      await p.close();
      assert.deepEqual(handled, ['a', 'b', 'c']);
      assert.equal(attempts.get('b'), 3);
    });

    it('dead-letters after the configured attempts with failure headers, then moves on; replay handles it once, in that group only', async () => {
      const topic = await topicWith(1);
      const group = h.unique('dlq');
      const p = await h.start({ retry: { maxAttempts: 3, baseDelayMs: 5, maxDelayMs: 10 } });
      const poison = taskCreated('u2', 'poison');
      await p.bus.publisher.publish([
        { topic, key: 'u2', event: taskCreated('u2', 'before') },
        { topic, key: 'u2', event: poison },
        { topic, key: 'u2', event: taskCreated('u2', 'after') },
      ]);
      let broken = true;
      let poisonAttempts = 0;
      const effects = new Map<string, number>();
      const sentinels = new Sentinels();
      const sub = await p.bus.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m) => {
          if (sentinels.saw(m)) return;
          if (titleOf(m.event) === 'poison') {
            poisonAttempts++;
            if (broken) throw new Error('cannot handle poison');
          }
          effects.set(m.event.id, (effects.get(m.event.id) ?? 0) + 1);
        },
      });
      // Another group on the topic, which handles everything: a replay is not for it.
      const bystander = new Map<string, number>();
      const bystanderTitles: string[] = [];
      const other = await p.bus.subscriber.subscribe({
        group: h.unique('bystander'),
        topics: [topic],
        handler: async (m) => {
          bystanderTitles.push(titleOf(m.event));
          bystander.set(m.event.id, (bystander.get(m.event.id) ?? 0) + 1);
        },
      });
      await waitFor(() => effects.size >= 2, 20_000, 'messages around the poison');
      assert.equal(poisonAttempts, 3);
      const letters = await waitFor(
        async () => {
          const l = await listDeadLetters(p.bus.admin, group);
          return l.length ? l : undefined;
        },
        10_000,
        'dead letter',
      );
      assert.equal(letters.length, 1);
      const [dl] = letters;
      assert.equal(dl!.event.id, poison.id);
      assert.equal(dl!.attempts, 3);
      assert.match(dl!.error, /cannot handle poison/);
      assert.equal(dl!.source.topic, topic);
      assert.equal(dl!.source.partition, 0);
      assert.equal(dl!.source.offset, '1');
      assert.ok(dl!.firstFailure && dl!.lastFailure);
      const raw = await p.bus.admin.read(dlqTopic(group));
      assert.equal(raw[0]!.headers[DLQ_HEADERS.group], group);

      broken = false;
      const { replayed } = await replayDeadLetters(p.bus, group, { ids: [poison.id] });
      assert.equal(replayed.length, 1);
      // Replayed: no longer listed, not replayed again by a replay of all, kept in the topic.
      assert.deepEqual(await listDeadLetters(p.bus.admin, group), []);
      assert.equal((await replayDeadLetters(p.bus, group)).replayed.length, 0);
      // Committed again as it is (Kafka expires an idle group's offsets); a group without one gets none.
      const position = await replayCursor(p.bus.admin, group);
      const committed: [string, string, [number, bigint][]][] = [];
      const advance = p.bus.admin.advanceOffsets.bind(p.bus.admin);
      p.bus.admin.advanceOffsets = (g, t, o) => {
        committed.push([g, t, [...o]]);
        return advance(g, t, o);
      };
      await renewReplayCursor(p.bus.admin, group);
      await renewReplayCursor(p.bus.admin, `${group}-never-replayed`);
      assert.deepEqual(committed, [[dlqReplayCursor(group), dlqTopic(group), [...position]]]);
      assert.deepEqual(await replayCursor(p.bus.admin, group), position);
      assert.equal((await replayCursor(p.bus.admin, `${group}-never-replayed`)).size, 0);
      // The position never moves back (a replay by id of an earlier letter, a renewal racing a replay).
      await p.bus.admin.advanceOffsets(dlqReplayCursor(group), dlqTopic(group), new Map([[0, 0n]]));
      assert.deepEqual(await replayCursor(p.bus.admin, group), position);
      assert.deepEqual(
        (await listDeadLetters(p.bus.admin, group, { all: true })).map((d) => [d.event.id, d.replayed]),
        [[poison.id, true]],
      );
      await waitFor(() => effects.get(poison.id) === 1, 20_000, 'replayed poison handled');
      await sentinels.pass(p, topic, 1);
      await waitFor(
        () => bystanderTitles.some((t) => t.startsWith('sentinel ')),
        20_000,
        'the sentinel at the other group (after the replay in the partition)',
      );
      await sub.close();
      await other.close();
      await p.close();
      assert.equal(effects.get(poison.id), 1, 'handled once after replay');
      assert.equal(effects.size, 3);
      assert.equal(bystander.get(poison.id), 1, 'the other group does not handle the replay again');
    });

    it('a replay of all sends the letters there when it started, once per event; one written while it runs stays listed for the next', async () => {
      const topic = await topicWith(1);
      const group = h.unique('refailed');
      const p = await h.start();
      const publish = p.bus.publisher.publish.bind(p.bus.publisher);
      try {
        // Two partitions, and pages of one letter: the replay reads many times, each time up to the end then.
        await p.bus.admin.ensureTopics([{ name: dlqTopic(group), partitions: 2, retentionMs: DAY }]);
        const [k0, k1] = keyPerPartition(2, 'refail') as [string, string];
        const x = taskCreated(k0, 'fails again');
        const y = taskCreated(k1, 'other');
        const letter = (event: typeof x, error: string) => ({
          topic: dlqTopic(group),
          key: event.partitionkey!,
          event,
          headers: {
            [DLQ_HEADERS.error]: error,
            [DLQ_HEADERS.sourceTopic]: topic,
            [DLQ_HEADERS.sourcePartition]: '0',
            [DLQ_HEADERS.sourceOffset]: '0',
            [DLQ_HEADERS.group]: group,
          },
        });
        // x dead-lettered twice before the replay (sent once), y once.
        await publish([letter(x, 'boom 1'), letter(y, 'boom 2'), letter(x, 'boom 3')]);
        // The group fails the replayed x again at once: a new letter of x, written during the replay (and a letter
        // of another event with it), after the end the replay started from.
        const z = taskCreated(k1, 'new failure');
        let refailed = 0;
        p.bus.publisher.publish = async (messages) => {
          await publish(messages);
          if (messages.some((m) => m.topic === topic && m.event.id === x.id) && !refailed++)
            await publish([letter(x, 'boom again'), letter(z, 'boom z')]);
        };
        const sentOf = async (id: string) =>
          (await p.bus.admin.read(topic, { limit: Infinity })).filter((m) => m.event.id === id).length;
        const listed = async () =>
          (await listDeadLetters(p.bus.admin, group, { limit: Infinity })).map(
            (d) => `${titleOf(d.event)}: ${d.error}`,
          );

        const first = await replayDeadLetters(p.bus, group, { pageSize: 1 });
        assert.equal(refailed, 1, 'x was dead-lettered again during the replay');
        assert.deepEqual(first.replayed.map((d) => titleOf(d.event)).sort(), ['fails again', 'other']);
        assert.equal(await sentOf(x.id), 1);
        assert.equal(await sentOf(z.id), 0);
        // Written after it started: neither sent nor passed by, listed (and counted) for the next replay.
        assert.deepEqual((await listed()).sort(), ['fails again: boom again', 'new failure: boom z']);
        if (p.bus.admin.messageCount) assert.equal(await unreplayedCount(p.bus.admin, group), 2);

        const second = await replayDeadLetters(p.bus, group, { pageSize: 1 });
        assert.deepEqual(second.replayed.map((d) => titleOf(d.event)).sort(), ['fails again', 'new failure']);
        assert.equal(await sentOf(x.id), 2);
        assert.equal(await sentOf(z.id), 1);
        assert.deepEqual(await listed(), []);
      } finally {
        p.bus.publisher.publish = publish;
        await p.close();
      }
    });

    it('dead-letters invalid events and PermanentError at once, without calling the handler again', async () => {
      const topic = await topicWith(1);
      const group = h.unique('invalid');
      const p = await h.start();
      const invalid = taskCreated('u3', 'x');
      (invalid.data as { task: { title: string } }).task.title = '';
      const permanent = taskCreated('u3', 'permanent');
      await p.bus.publisher.publish([
        { topic, key: 'u3', event: invalid },
        { topic, key: 'u3', event: permanent },
        { topic, key: 'u3', event: taskCreated('u3', 'fine') },
      ]);
      const calls: string[] = [];
      const sub = await p.bus.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m) => {
          calls.push(titleOf(m.event));
          if (titleOf(m.event) === 'permanent') throw new PermanentError('will never work');
        },
      });
      await waitFor(() => calls.includes('fine'), 20_000, 'fine handled');
      const letters = await waitFor(
        async () => {
          const l = await listDeadLetters(p.bus.admin, group);
          return l.length >= 2 ? l : undefined;
        },
        10_000,
        'two dead letters',
      );
      await sub.close();
      await p.close();
      assert.deepEqual(calls, ['permanent', 'fine'], 'the invalid event never reaches the handler');
      assert.match(letters[0]!.error, /invalid event/);
      assert.equal(letters[0]!.attempts, 0);
      assert.match(letters[1]!.error, /will never work/);
      assert.equal(letters[1]!.attempts, 1);
    });

    it('hands runs of one partition to a batch handler; a failing run is handled message by message', async () => {
      const topic = await topicWith(1);
      const group = h.unique('batch');
      const p = await h.start();
      const titles = Array.from({ length: 60 }, (_, i) => (i === 37 ? 'poison' : String(i)));
      await p.bus.publisher.publish(titles.map((t) => ({ topic, key: 'u5', event: taskCreated('u5', t) })));
      const effects: string[] = [];
      const runs: number[] = [];
      let alone = 0;
      const sentinels = new Sentinels();
      const sub = await p.bus.subscriber.subscribe({
        group,
        topics: [topic],
        maxBatch: 25,
        batchHandler: async (items) => {
          const mine = items.filter((i) => !sentinels.saw(i.message));
          if (mine.length === 0) return;
          runs.push(mine.length);
          const got = mine.map((i) => titleOf(i.message.event));
          if (got.includes('poison')) throw new Error('a poison message in the run');
          effects.push(...got); // all or nothing: only when the whole run succeeds
        },
        handler: async (m) => {
          if (sentinels.saw(m)) return;
          alone++;
          if (titleOf(m.event) === 'poison') throw new PermanentError('poison');
          effects.push(titleOf(m.event));
        },
      });
      await waitFor(() => effects.length >= 59, 30_000, '59 messages handled');
      const letters = await waitFor(
        async () => {
          const l = await listDeadLetters(p.bus.admin, group);
          return l.length ? l : undefined;
        },
        10_000,
        'the poison dead-lettered',
      );
      await sentinels.pass(p, topic, 1);
      await sub.close();
      await p.close();
      assert.deepEqual(
        effects,
        titles.filter((t) => t !== 'poison'),
        'each once, in order',
      );
      assert.ok(
        Math.max(...runs) > 1 && Math.max(...runs) <= 25,
        `runs of 2..25 messages: ${runs.join(',')}`,
      );
      assert.ok(alone >= 1 && alone <= 25 + 1, `only the failed run went message by message (${alone})`);
      assert.equal(letters.length, 1);
      assert.equal(titleOf(letters[0]!.event), 'poison');
      assert.equal(letters[0]!.attempts, 1);
    });

    it('splits partitions between members of one group; every group gets everything', async () => {
      const topic = await topicWith(4);
      const group = h.unique('shared');
      const p1 = await h.start();
      const p2 = await h.start();
      const byMember: [Map<string, BusMessage>, Map<string, BusMessage>] = [new Map(), new Map()];
      const other = new Map<string, BusMessage>();
      const subs: Subscription[] = [];
      // Probes (one key per partition) show which member holds which partition; they are not counted.
      const probeKeys = keyPerPartition(4, 'probe');
      const probesOf: [Set<string>, Set<string>] = [new Set(), new Set()];
      const isProbe = (m: BusMessage) => titleOf(m.event).startsWith('probe ');
      const record = (into: Map<string, BusMessage>, probes?: Set<string>) => async (m: BusMessage) => {
        if (!isProbe(m)) into.set(m.event.id, m);
        else probes?.add(titleOf(m.event));
      };
      subs.push(
        await p1.bus.subscriber.subscribe({
          group,
          topics: [topic],
          handler: record(byMember[0], probesOf[0]),
        }),
      );
      subs.push(
        await p2.bus.subscriber.subscribe({
          group,
          topics: [topic],
          handler: record(byMember[1], probesOf[1]),
        }),
      );
      subs.push(
        await p1.bus.subscriber.subscribe({
          group: h.unique('other'),
          topics: [topic],
          handler: record(other),
        }),
      );
      // Before producing, the group must have settled on two members (no fixed wait): send rounds of probes,
      // one per partition, until two rounds in a row are handled with the same partition -> member split and
      // both members in it.
      let previous = '';
      for (let round = 0; ; round++) {
        const titles = probeKeys.map((key) => `probe ${round} ${key}`);
        await p1.bus.publisher.publish(
          probeKeys.map((key, i) => ({ topic, key, event: taskCreated(key, titles[i]!) })),
        );
        await waitFor(
          () => titles.every((t) => probesOf[0].has(t) || probesOf[1].has(t)),
          30_000,
          `probe round ${round}`,
        );
        const split = titles.map((t) => (probesOf[0].has(t) ? 'a' : 'b')).join('');
        if (split === previous && split.includes('a') && split.includes('b')) break;
        previous = split;
        assert.ok(round < 100, 'the group never settled on two members');
      }
      const events = Array.from({ length: 100 }, (_, i) => ({
        topic,
        key: `k${i % 20}`,
        event: taskCreated(`k${i % 20}`, String(i)),
      }));
      await p1.bus.publisher.publish(events);
      await waitFor(
        () => byMember[0].size + byMember[1].size >= 100 && other.size >= 100,
        30_000,
        'all delivered',
      );
      for (const s of subs) await s.close();
      await p1.close();
      await p2.close();
      assert.ok(
        byMember[0].size > 0 && byMember[1].size > 0,
        `both members worked: ${byMember[0].size}/${byMember[1].size}`,
      );
      const parts0 = new Set([...byMember[0].values()].map((m) => m.partition));
      const parts1 = new Set([...byMember[1].values()].map((m) => m.partition));
      assert.deepEqual(
        [...parts0].filter((x) => parts1.has(x)),
        [],
        'a partition belongs to one member',
      );
      const union = new Set([...byMember[0].keys(), ...byMember[1].keys()]);
      assert.equal(union.size, 100);
      assert.equal(other.size, 100);
    });

    it('stops handling a partition the group gives to another member, its queued messages included', async () => {
      const topic = await topicWith(2);
      const group = h.unique('handover');
      const pa = await h.start();
      const pb = await h.start();
      const keys = keyPerPartition(2, 'ho');
      const titles = keys.flatMap((key) => Array.from({ length: 10 }, (_, i) => `${key} ${i}`));
      await pa.bus.publisher.publish(
        titles.map((title) => {
          const key = title.split(' ')[0]!;
          return { topic, key, event: taskCreated(key, title) };
        }),
      );
      // A takes both partitions, handles (and commits) the first three messages of each, then holds the fourth
      // of each in hand until B has joined the group. After a join Kafka's client fetches a partition again
      // from its last commit: what A has queued past it must not come twice.
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      const entered = new Set<number>();
      const byA: string[] = [];
      const byB: string[] = [];
      const subA = await pa.bus.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m) => {
          if (Number(titleOf(m.event).split(' ')[1]) >= 3) {
            entered.add(m.partition);
            await gate;
          }
          byA.push(titleOf(m.event));
        },
      });
      await waitFor(
        () => entered.size === 2,
        30_000,
        'member A with the fourth message of each partition in hand',
      );
      await new Promise((resolve) => setTimeout(resolve, 2 * COMMIT_INTERVAL_MS)); // the first three committed
      const subB = await pb.bus.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m) => void byB.push(titleOf(m.event)),
      });
      // The group has rebalanced once B handles something (Kafka: B reads its partition at once), or once A
      // has let one go (embedded: A releases it after the message in hand, so B cannot read it before the gate
      // opens; a few heartbeats are enough for A to decide).
      await waitFor(() => byB.length > 0, 3_000, 'B').catch(() => undefined);
      open();
      try {
        await waitFor(
          () => titles.every((t) => byA.includes(t) || byB.includes(t)),
          60_000,
          'every message handled by one member or the other',
        );
        await new Promise((resolve) => setTimeout(resolve, 1_000)); // what A still had queued would come now
      } finally {
        await subA.close();
        await subB.close();
        await pa.close();
        await pb.close();
      }
      assert.ok(byB.length > 0, 'B took a partition');
      for (const key of keys) {
        const ofKey = (list: string[]) => list.filter((t) => t.startsWith(`${key} `));
        if (ofKey(byB).length === 0) continue; // A kept it
        assert.ok(
          ofKey(byA).every((t) => Number(t.split(' ')[1]) <= 3),
          `${key}: A handled only what it had in hand when the partition went to B, not its queue: ${ofKey(byA).join(', ')}`,
        );
      }
      assert.equal(new Set(byA).size, byA.length, `A handled nothing twice: ${byA.join(', ')}`);
    });

    it("takes one key's batch of 1.8 MB with multi-byte headers in one publish, in order", async () => {
      // Over the broker's 1 MiB record batch limit for one partition, with headers whose UTF-8 bytes are three
      // times their characters: a publisher that sized its requests by characters, or not at all, is refused
      // (on Kafka it goes as two requests: test/unit/kafka-chunks.test.ts).
      const topic = await topicWith(2);
      const p = await h.start();
      const key = 'big-batch';
      const userAgent = `日本語のブラウザ ${'字'.repeat(480)}`;
      const messages = Array.from({ length: 800 }, (_, i) => {
        const event = taskCreated(key, String(i));
        event.useragent = userAgent;
        return { topic, key, event };
      });
      await p.bus.publisher.publish(messages);
      const got: number[] = [];
      const otherAgents: string[] = [];
      const sub = await p.bus.subscriber.subscribe({
        group: h.unique('big'),
        topics: [topic],
        handler: async (m) => {
          if (m.event.useragent !== userAgent) otherAgents.push(String(m.event.useragent));
          got.push(Number(titleOf(m.event)));
        },
      });
      await waitFor(() => got.length >= 800, 30_000, '800 messages');
      await sub.close();
      await p.close();
      assert.deepEqual(
        got,
        Array.from({ length: 800 }, (_, i) => i),
        'each once, in order',
      );
      assert.deepEqual(otherAgents, [], 'the header arrives as it was sent');
    });

    it('reports the lag of a group on every partition it reads, those it never committed on too', async () => {
      const topic = await topicWith(2);
      const group = h.unique('lagging');
      const p = await h.start();
      try {
        // Keys that land on both partitions (the partitioner is the bus's own).
        await p.bus.publisher.publish(
          Array.from({ length: 12 }, (_, i) => ({
            topic,
            key: `k${i}`,
            event: taskCreated(`k${i}`, `t${i}`),
          })),
        );
        const lag = await p.bus.admin.lag(group, new Map([[group, [topic]]]));
        assert.deepEqual(
          lag.map((l) => [l.topic, l.partition, l.committed]),
          [
            [topic, 0, null],
            [topic, 1, null],
          ],
        );
        assert.equal(
          lag.reduce((n, l) => n + l.lag, 0),
          12,
          'all of it',
        );
        assert.deepEqual(
          await p.bus.admin.lag(group),
          [],
          'not said to read the topic: nothing committed, nothing listed',
        );
      } finally {
        await p.close();
      }
    });

    it('keeps committed positions across a restart', async () => {
      const topic = await topicWith(2);
      const group = h.unique('restart');
      let p = await h.start();
      await p.bus.publisher.publish(
        Array.from({ length: 20 }, (_, i) => ({
          topic,
          key: `r${i % 3}`,
          event: taskCreated(`r${i % 3}`, `first-${i}`),
        })),
      );
      const seen: string[] = [];
      let sub = await p.bus.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m) => void seen.push(titleOf(m.event)),
      });
      await waitFor(() => seen.length >= 20, 20_000, 'first batch');
      await sub.close();
      await p.close();

      p = await h.start();
      await p.bus.publisher.publish(
        Array.from({ length: 10 }, (_, i) => ({
          topic,
          key: `r${i % 3}`,
          event: taskCreated(`r${i % 3}`, `second-${i}`),
        })),
      );
      const afterRestart: string[] = [];
      const sentinels = new Sentinels();
      sub = await p.bus.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m) => {
          if (!sentinels.saw(m)) afterRestart.push(titleOf(m.event));
        },
      });
      await waitFor(() => afterRestart.length >= 10, 20_000, 'second batch');
      await sentinels.pass(p, topic, 2);
      await sub.close();
      const lag = await p.bus.admin.lag(group);
      await p.close();
      assert.equal(seen.length, 20);
      assert.deepEqual(afterRestart.sort(), Array.from({ length: 10 }, (_, i) => `second-${i}`).sort());
      assert.equal(
        lag.reduce((n, l) => n + l.lag, 0),
        0,
        'no lag left',
      );
    });
  });
}
