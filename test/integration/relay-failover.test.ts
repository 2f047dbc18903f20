/**
 * Relay failover and fencing, as it runs in production: two `taskflow serve relay` processes on one
 * PostgreSQL database and a real Kafka broker, while this process keeps committing events to the outbox.
 * The active relay is paused (SIGSTOP) past its lease, resumed, and later killed (SIGKILL). Checked on what
 * the broker holds: every committed event is there; per user, first deliveries are in commit order; the
 * paused relay sends nothing from its pause until it is active again; a copy of an event exists only when the
 * relay that lost the lease had sent it before losing it (the next relay looks for those on the broker and
 * marks them: the second test). The takeover times and copies are printed (docs/benchmarks.md).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { createKafkaBus } from '../../src/bus/kafka/index.ts';
import type { StoredMessage } from '../../src/bus/types.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { RELAY_HEADER } from '../../src/services/relay/index.ts';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { appendEvents, pendingOutbox } from '../../src/store/outbox.ts';
import { TEST_SECRET, outboxRelayed, waitFor } from '../helpers/app.ts';
import { createPgDatabase } from '../helpers/db.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { startServer, stopChild, type ServerProcess } from '../helpers/processes.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const pgUrl = process.env.TEST_DATABASE_URL;
const skip =
  !pgUrl || !kafkaBrokers
    ? 'needs TEST_DATABASE_URL and TEST_KAFKA_BROKERS (scripts/test starts both)'
    : false;
const USERS = ['ann', 'bob', 'cho', 'dan', 'eve', 'fay', 'gus', 'hal'];

/** Whether process `pid` is stopped (SIGSTOP took effect): its state in /proc, after the command name, is `T`. */
function stopped(pid: number): boolean {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat[stat.lastIndexOf(')') + 2] === 'T';
}

/**
 * A fresh database whose events go to the outbox (no bus), for the relays, and what a `taskflow serve relay`
 * process needs to publish them to topics of their own (`tag` and a random part).
 */
async function relaySetup(tag: string) {
  const created = await createPgDatabase(pgUrl!);
  const db = await openDb(created.url);
  await migrate(db);
  const prefix = `${tag}${randomBytes(3).toString('hex')}.`;
  const env = {
    DATABASE_URL: created.url,
    BUS: 'kafka',
    KAFKA_BROKERS: kafkaBrokers!,
    KAFKA_TOPIC_PREFIX: prefix,
    LOG_LEVEL: 'warn',
    JWT_SECRET: TEST_SECRET,
  };
  return { created, db, prefix, env };
}

/** Every message on the `task-events` topic of `prefix`, per partition in offset order. */
async function readTaskEvents(prefix: string, clientId: string): Promise<StoredMessage[]> {
  const bus = createKafkaBus(
    { brokers: kafkaBrokers!.split(','), clientId, topicPrefix: prefix },
    { log: silentLogger },
  );
  try {
    return await bus.admin.read('task-events', { limit: Infinity });
  } finally {
    await bus.close();
  }
}

describe('relay failover on PostgreSQL and Kafka', { skip }, () => {
  it('a standby takes over from a paused or killed relay; nothing is lost, order holds, a paused relay stays silent', async (t) => {
    const { created, db, prefix, env } = await relaySetup('fo');
    const relays: ServerProcess[] = [];
    let writing = true;
    let written = 0;
    const writer = (async () => {
      // About 100 events/s over 8 users, one transaction each, as API writes would be.
      while (writing) {
        const user = USERS[written % USERS.length]!;
        await db.transaction((tx) => appendEvents(tx, [taskCreated(user, `fo-${written}`)]));
        written++;
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const activePid = async () => {
      const r = await db.query<{ holder: string }>(
        `SELECT holder FROM leases WHERE name = 'relay' AND lease_until > now()`,
      );
      return r.rows[0] ? Number(r.rows[0].holder.split('/')[1]) : undefined;
    };
    const pending = async () =>
      Number(
        (await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM outbox WHERE published_at IS NULL`))
          .rows[0]!.n,
      );
    try {
      relays.push(await startServer(['relay'], env), await startServer(['relay'], env));
      const byPid = (pid: number) => relays.find((r) => r.child.pid === pid)!;
      const first = byPid(await waitFor(activePid, 30_000, 'a relay to take the lease'));
      const second = relays.find((r) => r !== first)!;
      await waitFor(async () => written > 150 && (await pending()) < 20, 30_000, 'events flowing');

      // 1. Pause the active relay past its lease: the standby takes over; the paused one, resumed, stands by.
      // The pause's instant is taken once the process is seen stopped (a signal takes effect a moment after
      // kill returns), so each send it began before carries an earlier record time: the publisher stamps a
      // record when it is asked to send it, not when the client later encodes it.
      first.child.kill('SIGSTOP');
      await waitFor(() => stopped(first.child.pid!), 5_000, 'the active relay to stop');
      const pausedAt = Date.now();
      await waitFor(async () => (await activePid()) === second.child.pid, 30_000, 'the standby to take over');
      const pauseTakeoverMs = Date.now() - pausedAt;
      await new Promise((r) => setTimeout(r, 1_000));
      first.child.kill('SIGCONT');
      await waitFor(async () => written > 600, 60_000, 'more writes after the resume');

      // 2. Kill the active relay: the one that was paused takes over.
      second.child.kill('SIGKILL');
      const killedAt = Date.now();
      await waitFor(
        async () => (await activePid()) === first.child.pid,
        30_000,
        'the other relay to take over',
      );
      const killTakeoverMs = Date.now() - killedAt;
      await waitFor(async () => written > 900, 60_000, 'writes after the kill');
      writing = false;
      await writer;
      await outboxRelayed(db, 60_000);

      const messages = await readTaskEvents(prefix, 'failover-check');
      const seq = (m: StoredMessage) => Number(titleOf(m.event).slice('fo-'.length));
      const sender = (m: StoredMessage) => Number(m.headers[RELAY_HEADER]?.split('/')[1]);
      const sentAt = (m: StoredMessage) => Date.parse(m.timestamp);

      // Nothing lost: every committed event is on the broker.
      const ids = new Set(messages.map((m) => m.event.id));
      assert.equal(ids.size, written, 'every committed event is published');
      // Per user, first deliveries in commit order (messages come per partition in offset order).
      for (const user of USERS) {
        const seen = new Set<string>();
        const firsts = messages
          .filter((m) => m.key === user && !seen.has(m.event.id) && seen.add(m.event.id))
          .map(seq);
        assert.deepEqual(
          firsts,
          [...firsts].sort((a, b) => a - b),
          `${user}: first deliveries in commit order`,
        );
      }
      // The paused relay sent nothing from its pause until it took over again after the kill.
      const fromPaused = messages.filter(
        (m) => sender(m) === first.child.pid && sentAt(m) > pausedAt && sentAt(m) < killedAt,
      );
      assert.deepEqual(
        fromPaused.map(seq),
        [],
        'the paused relay sent nothing between its pause and the kill',
      );
      // A copy exists only of what the relay that lost the lease sent before it lost it. (Both copies are in
      // the key's partition, which `read` returns in offset order.)
      const firstCopy = new Map<string, StoredMessage>();
      const copies: StoredMessage[] = [];
      for (const m of messages) {
        if (firstCopy.has(m.event.id)) copies.push(m);
        else firstCopy.set(m.event.id, m);
      }
      for (const copy of copies) {
        const original = firstCopy.get(copy.event.id)!;
        const lostAt = sender(original) === first.child.pid ? pausedAt : killedAt;
        assert.ok(
          sender(original) !== sender(copy) && sentAt(original) <= lostAt,
          `event fo-${seq(copy)} published twice: first by ${sender(original)} at ${sentAt(original)}, ` +
            `again by ${sender(copy)} at ${sentAt(copy)} (pause ${pausedAt}, kill ${killedAt})`,
        );
      }
      t.diagnostic(
        `relay failover: ${written} events; standby active ${pauseTakeoverMs} ms after SIGSTOP and ` +
          `${killTakeoverMs} ms after SIGKILL of the active relay; ${copies.length} events published twice`,
      );
      // What the relay that lost the lease had sent without marking, the next one finds on the broker and
      // marks (the test below checks that directly), so copies are rare: one could come only from a pause
      // between a relay's lease check and its socket write (ADR 0010), and then only of what it sent then.
      // RELAY_LEASE_MS defaults to 1.5 s: a standby checks every 0.5 s, so takes over in about 2 s. Loosely
      // bounded here (a loaded machine); the figure itself is the diagnostic above.
      assert.ok(killTakeoverMs < 6_000, `takeover after kill -9 took ${killTakeoverMs} ms`);
    } finally {
      writing = false;
      await writer.catch(() => undefined);
      for (const r of relays) {
        r.child.kill('SIGCONT');
        r.child.kill('SIGKILL');
      }
      await db.close();
      await created.drop();
    }
  });
  it('a relay that cannot reach the broker leaves the lease to one that can', async (t) => {
    const { created, db, prefix, env } = await relaySetup('fb');
    // A lease longer than the retries' longest backoff (15 s): a failing relay renewed it between its retries, so
    // it never lapsed and nothing was published while a relay that could publish stood by.
    const lease = { RELAY_LEASE_MS: '30000' };
    const holderPid = async () => {
      const r = await db.query<{ holder: string }>(
        `SELECT holder FROM leases WHERE name = 'relay' AND lease_until > now()`,
      );
      return r.rows[0] ? Number(r.rows[0].holder.split('/')[1]) : undefined;
    };
    const relays: ServerProcess[] = [];
    try {
      // Port 1 of the loopback refuses connections: this relay reaches PostgreSQL, not the broker.
      const cut = await startServer(['relay'], {
        ...env,
        ...lease,
        KAFKA_BROKERS: '127.0.0.1:1',
        LOG_LEVEL: 'info',
      });
      relays.push(cut);
      await waitFor(
        async () => (await holderPid()) === cut.child.pid,
        30_000,
        'the cut-off relay to take the lease',
      );
      const good = await startServer(['relay'], { ...env, ...lease });
      relays.push(good);
      for (let i = 0; i < 20; i++)
        await db.transaction((tx) => appendEvents(tx, [taskCreated(USERS[i % USERS.length]!, `fb-${i}`)]));
      const writtenAt = Date.now();
      // The standby asks every 10 s (a third of the lease); the cut-off relay leaves the lease for 15 s.
      await outboxRelayed(db, 45_000);
      const relayedMs = Date.now() - writtenAt;
      const messages = await readTaskEvents(prefix, 'failover-cut');
      assert.deepEqual(
        messages.map((m) => titleOf(m.event)).sort(),
        Array.from({ length: 20 }, (_, i) => `fb-${i}`).sort(),
        'every event is on the broker once',
      );
      assert.ok(
        messages.every((m) => Number(m.headers[RELAY_HEADER]?.split('/')[1]) === good.child.pid),
        'the relay that can reach the broker sent them',
      );
      const log = cut.output();
      assert.match(log, /a round failed, so the lease is left to another relay/);
      // Standing by is not a recovery: the cut-off relay still cannot publish.
      assert.doesNotMatch(log, /relay recovered/);
      t.diagnostic(`relayed ${relayedMs} ms after the writes, by the relay that can reach the broker`);
    } finally {
      for (const r of relays) r.child.kill('SIGKILL');
      await db.close();
      await created.drop();
    }
  });
  it('a relay taking over marks what its predecessor sent and did not mark, and sends it no second time', async (t) => {
    const { created, db, prefix, env } = await relaySetup('fm');
    const bus = createKafkaBus(
      { brokers: kafkaBrokers!.split(','), clientId: 'failover-mark', topicPrefix: prefix },
      { log: silentLogger },
    );
    let relay: ServerProcess | undefined;
    try {
      const write = async (from: number, n: number) => {
        for (let i = from; i < from + n; i++)
          await db.transaction((tx) => appendEvents(tx, [taskCreated(USERS[i % USERS.length]!, `fm-${i}`)]));
      };
      // A first relay provisions the topics and publishes a first backlog; then it is gone.
      await write(0, 20);
      relay = await startServer(['relay'], env);
      await outboxRelayed(db, 30_000);
      await stopChild(relay.child, 'SIGKILL');
      // The state a relay leaves when it dies between a send and its marking: 40 more events committed, the
      // first 25 of them on the broker (sent by it), none marked.
      await write(20, 40);
      const sentUnmarked = await pendingOutbox(db, 25);
      await bus.publisher.publish(
        sentUnmarked.map((r) => ({
          topic: r.topic,
          key: r.key,
          event: r.event,
          headers: { [RELAY_HEADER]: 'lost-host/1/dead' },
        })),
      );
      // The next relay takes the lease (the dead one's expires) and publishes the rest.
      relay = await startServer(['relay'], env);
      await outboxRelayed(db, 30_000);
      const messages = await bus.admin.read('task-events', { limit: Infinity });
      const count = new Map<string, number>();
      for (const m of messages) count.set(titleOf(m.event), (count.get(titleOf(m.event)) ?? 0) + 1);
      assert.equal(count.size, 60, 'every committed event is on the broker');
      assert.deepEqual(
        [...count].filter(([, n]) => n > 1).map(([title]) => title),
        [],
        'no event is on the broker twice',
      );
      const lost = new Set(sentUnmarked.map((r) => r.event.id));
      assert.ok(
        messages
          .filter((m) => lost.has(m.event.id))
          .every((m) => m.headers[RELAY_HEADER] === 'lost-host/1/dead'),
        'what the lost relay sent is not sent again',
      );
      t.diagnostic(
        `${sentUnmarked.length} events sent and not marked by a lost relay: marked, none sent twice`,
      );
    } finally {
      relay?.child.kill('SIGKILL');
      await bus.close();
      await db.close();
      await created.drop();
    }
  });
});
