/**
 * The real-time path with real components: API -> outbox -> relay -> embedded bus ->
 * task-updates -> gateway -> WebSocket clients (the `ws` package). Per-user delivery, resume with
 * `?since=`, resync, slow and dead clients, tickets, two gateway instances over one database, and 1001 on
 * shutdown.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { uuidv7 } from '../../src/ids.ts';
import WebSocket from 'ws';
import { makeEvent } from '../../src/contracts/cloudevent.ts';
import type { TaskChangedData } from '../../src/contracts/events.ts';
import { TOPICS } from '../../src/contracts/topics.ts';
import { newTask } from '../../src/domain/task.ts';
import { apiTarget } from '../../src/services/api/index.ts';
import { createGatewayTarget, gatewayGroup } from '../../src/services/gateway/index.ts';
import { relayTarget } from '../../src/services/relay/index.ts';
import type { TargetDefinition } from '../../src/runtime.ts';
import type { SubscribeOptions } from '../../src/bus/types.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { backends } from '../helpers/db.ts';
import { plainFields } from '../helpers/events.ts';
import { TEST_SECRET, startApp, waitFor, type TestApp } from '../helpers/app.ts';
import { signDevToken } from '../../src/auth.ts';
import { gatewayManifest } from '../../src/services/gateway/manifest.ts';
import { MAX_CLIENT_MESSAGES } from '../../src/services/gateway/hub.ts';
import { within } from '../../src/wait.ts';

const DEADLINE_MS = 8_000;

interface Frame {
  type: string;
  sequence?: number | null;
  change_type?: string;
  task?: { title: string; user_id: string };
  [k: string]: unknown;
}

class Client {
  readonly frames: Frame[] = [];
  /** Binary frames received: none, every frame is text (a browser would get a Blob, not a string). */
  binary = 0;
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: (() => void)[] = [];
  /** The close code and reason, once the connection closed (either side). */
  private closedWith: string | undefined;
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      if (isBinary) this.binary++;
      this.frames.push(JSON.parse(String(data)) as Frame);
      this.wake();
    });
    ws.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        this.closedWith = `${code} ${String(reason)}`;
        this.wake(); // a wait ends at once, saying so
        resolve({ code, reason: String(reason) });
      }),
    );
  }

  static async open(baseUrl: string, opts: { token?: string; since?: number; ticket?: string }) {
    const q = new URLSearchParams();
    if (opts.since !== undefined) q.set('since', String(opts.since));
    if (opts.ticket) q.set('ticket', opts.ticket);
    const url = `${baseUrl.replace(/^http/, 'ws')}/ws${q.size ? `?${q}` : ''}`;
    const ws = new WebSocket(url, opts.token ? ['taskflow.v1', `bearer.${opts.token}`] : []);
    const c = new Client(ws);
    await c.next((f) => f.type === 'hello');
    return c;
  }

  /** The first `task.changed` with this sequence. */
  seq(sequence: number, timeoutMs = DEADLINE_MS): Promise<Frame> {
    return this.next((f) => f.type === 'task.changed' && f.sequence === sequence, timeoutMs);
  }

  changes(): Frame[] {
    return this.frames.filter((f) => f.type === 'task.changed');
  }

  /** Resolves with the first frame (from the start) matching `pred`. */
  async next(pred: (f: Frame) => boolean, timeoutMs = DEADLINE_MS): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.find(pred);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0 || this.closedWith)
        throw new Error(
          `no matching frame ${this.closedWith ? `before the close (${this.closedWith})` : `within ${timeoutMs} ms`}; got ${this.frames.length}`,
        );
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  private wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  close() {
    this.ws.close();
    return this.closed;
  }
}

/** How an upgrade to `url` (ws://…) was answered: 101 when it opened (then closed), else the status and body. */
function upgradeAnswer(url: string, protocols: string[] = []): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, protocols);
    ws.on('error', () => undefined);
    ws.on('open', () => {
      ws.close();
      resolve({ status: 101, body: '' });
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
  });
}

/** A gate: while closed, whatever passes it waits (a consumer that lags, a bus that cannot be reached). */
class Gate {
  private open = true;
  private waiters: (() => void)[] = [];
  close() {
    this.open = false;
  }
  release() {
    this.open = true;
    for (const w of this.waiters.splice(0)) w();
  }
  async pass() {
    if (!this.open) await new Promise<void>((r) => this.waiters.push(r));
  }
}

/**
 * The gateway target with its bus subscriber wrapped (nothing else changed): `gate` in front of its consumer's
 * handlers (`where: 'handler'`, a replica that lags) or of its subscription itself (`where: 'subscribe'`, a bus
 * not reachable at start: the group then starts at the end of the topic, after what was published meanwhile).
 */
function gatedGateway(instanceId: string, gate: Gate, where: 'handler' | 'subscribe'): TargetDefinition {
  const inner = createGatewayTarget({ instanceId });
  return {
    name: 'gateway',
    start(rt) {
      const sub = rt.bus.subscriber;
      const gated = (opts: SubscribeOptions): SubscribeOptions => ({
        ...opts,
        handler: async (m) => {
          await gate.pass();
          return opts.handler(m);
        },
        ...(opts.batchHandler
          ? {
              batchHandler: async (items) => {
                await gate.pass();
                return opts.batchHandler!(items);
              },
            }
          : {}),
      });
      const subscribe = async (opts: SubscribeOptions) => {
        if (where === 'subscribe') {
          await gate.pass();
          return sub.subscribe(opts);
        }
        return sub.subscribe(gated(opts));
      };
      const subscriber = Object.create(sub, { subscribe: { value: subscribe } });
      const bus = Object.create(rt.bus, { subscriber: { value: subscriber } });
      return inner.start(Object.create(rt, { bus: { value: bus } }));
    },
  };
}

const backend = backends[0]!; // the embedded bus on PGlite: the gateway's logic does not depend on the store

describe('WebSocket gateway', () => {
  let db: Db;
  let drop: () => Promise<void>;
  let app: TestApp; // api + relay + gateway "gw-a"
  let second: TestApp | undefined; // another process: gateway "gw-b" only, small replay buffer, fast heartbeats
  const clients: Client[] = [];
  const open = async (target: TestApp, user: string, opts: { since?: number } = {}) => {
    const c = await Client.open(target.url, { token: await app.token(user), ...opts });
    clients.push(c);
    return c;
  };

  before(async () => {
    ({ db, drop } = await backend.fresh());
    app = await startApp(db, {
      targets: [
        apiTarget,
        relayTarget,
        createGatewayTarget({ instanceId: 'gw-a', maxBufferedBytes: 256 * 1024 }),
      ],
      clock: { now: () => new Date() },
    });
  });
  /** Started when first needed (after the flood test, which it would only slow down). */
  const ensureSecond = async () =>
    (second ??= await startApp(db, {
      targets: [createGatewayTarget({ instanceId: 'gw-b', replayPerUser: 20, heartbeatMs: 250 })],
      clock: { now: () => new Date() },
    }));
  after(async () => {
    for (const c of clients) c.ws.terminate();
    await second?.stop();
    await app.stop();
    await drop();
  });

  const create = async (user: string, title: string) => {
    const r = await app.call(user, 'POST', '/api/tasks', { title });
    assert.equal(r.status, 201);
    return r.body as { id: string };
  };

  it('delivers a change to every connection of its user within the deadline, never to another user', async () => {
    const a1 = await open(app, 'ann');
    const a2 = await open(app, 'ann');
    const b = await open(app, 'ben');
    assert.equal(a1.ws.protocol, 'taskflow.v1');
    const started = Date.now();
    await create('ann', 'for ann');
    for (const c of [a1, a2]) {
      const f = await c.next((x) => x.type === 'task.changed');
      assert.equal(f.change_type, 'created');
      assert.equal(f.task!.title, 'for ann');
      assert.equal(f.sequence, 1);
    }
    assert.ok(Date.now() - started < DEADLINE_MS);
    // Ben's first change frame is his own: nothing of Ann's came before it.
    await create('ben', 'for ben');
    const first = await b.next((x) => x.type === 'task.changed');
    assert.equal(first.task!.title, 'for ben');
    assert.equal(first.task!.user_id, 'ben');
    assert.equal(b.changes().length, 1);
    assert.ok(a1.changes().every((f) => f.task!.user_id === 'ann'));
    assert.deepEqual([a1.binary, a2.binary, b.binary], [0, 0, 0], 'text frames');
  });

  it('rejects unauthenticated upgrades; accepts a one-time ticket', async () => {
    const noToken = new WebSocket(`${app.url.replace('http', 'ws')}/ws`);
    noToken.on('error', () => undefined);
    const challenge = await new Promise<string>((resolve) =>
      noToken.on('unexpected-response', (_req, res) => {
        res.resume();
        resolve(`${res.statusCode} ${String(res.headers['www-authenticate'])}`);
      }),
    );
    // A well-formed challenge: its description is one quoted-string (RFC 9110), the subprotocols named in it.
    assert.match(
      challenge,
      /^401 Bearer error="invalid_token", error_description="(?:[^"\\]|\\.)*taskflow\.v1(?:[^"\\]|\\.)*"$/,
    );
    const bad = new WebSocket(`${app.url.replace('http', 'ws')}/ws`, ['taskflow.v1', 'bearer.not-a-jwt']);
    assert.match((await new Promise<Error>((resolve) => bad.on('error', resolve))).message, /401/);

    const issued = await app.call('ann', 'POST', '/api/ws-ticket');
    assert.equal(issued.status, 200);
    assert.equal(issued.body.expires_in, 60);
    const viaTicket = await Client.open(app.url, { ticket: issued.body.ticket });
    clients.push(viaTicket);
    assert.equal(viaTicket.frames[0]!.user_id, 'ann');
    const reuse = new WebSocket(`${app.url.replace('http', 'ws')}/ws?ticket=${issued.body.ticket}`);
    assert.match((await new Promise<Error>((resolve) => reuse.on('error', resolve))).message, /401/);
    assert.equal((await app.call(null, 'POST', '/api/ws-ticket')).status, 401);
    // Two tickets: the answer says so (not "missing credentials").
    const refusal = await upgradeAnswer(`${app.url.replace('http', 'ws')}/ws?ticket=a&ticket=b`);
    assert.equal(refusal.status, 401);
    assert.match(refusal.body, /one ticket only/);

    // Who before what: no credentials and a malformed since is a 401; with credentials, an empty since is a
    // 400 (taken as none, a client lost what changed while it was away); a plain GET is told to upgrade.
    const answer = (url: string, protocols: string[] = []) =>
      upgradeAnswer(`${app.url.replace('http', 'ws')}${url}`, protocols);
    assert.equal((await answer('/ws?since=abc')).status, 401);
    const token = await app.token('ann');
    for (const since of ['', 'abc', '-1']) {
      const r = await answer(`/ws?since=${since}`, ['taskflow.v1', `bearer.${token}`]);
      assert.equal(r.status, 400, `since=${since}`);
      assert.match(r.body, /must be a sequence number/);
    }
    const plain = await fetch(`${app.url}/ws`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(plain.status, 426);
    assert.equal(plain.headers.get('upgrade'), 'websocket');
    assert.match(String(plain.headers.get('content-type')), /application\/problem\+json/);
  });

  it('resumes a client on an instance that knows nothing of its user yet (restarted) from the stream as committed', async () => {
    for (const title of ['one', 'two', 'three']) await create('ivy', title);
    // A gateway that starts now (its group at the end) holds nothing of ivy, as one just restarted.
    const fresh = await startApp(db, {
      targets: [createGatewayTarget({ instanceId: 'gw-fresh' })],
      clock: { now: () => new Date() },
    });
    try {
      const caughtUp = await open(fresh, 'ivy', { since: 3 });
      assert.equal(caughtUp.frames[0]!.sequence, 3, 'hello says the latest sequence');
      const behind = await open(fresh, 'ivy', { since: 2 });
      assert.equal((await behind.next((f) => f.type === 'resync')).sequence, 3);
      const plain = await open(fresh, 'ivy');
      assert.equal(plain.frames[0]!.sequence, 3);
      await create('ivy', 'four');
      for (const c of [caughtUp, behind, plain]) await c.seq(4);
      assert.equal(caughtUp.frames.filter((f) => f.type === 'resync').length, 0, 'missed nothing: no reload');
      assert.deepEqual(
        caughtUp.changes().map((f) => f.sequence),
        [4],
      );
    } finally {
      await fresh.stop();
    }
  });

  it('resumes a client on a replica behind the stream without a resync to an older sequence or a change it had', async () => {
    // gw-lag saw zed's first change, then its consumer is held: a replica that lags (or one catching up after a
    // restart, refilling its buffer from its committed position).
    const gate = new Gate();
    const lagging = await startApp(db, {
      targets: [gatedGateway('gw-lag', gate, 'handler')],
      clock: { now: () => new Date() },
    });
    try {
      const onA = await open(app, 'zed');
      const onLag = await open(lagging, 'zed');
      const task = await create('zed', 'one');
      await onA.seq(1);
      await onLag.seq(1); // gw-lag holds zed's change 1 now
      gate.close();
      for (const title of ['two', 'three'])
        assert.equal((await app.call('zed', 'PATCH', `/api/tasks/${task.id}`, { title })).status, 200);
      await onA.seq(3);
      // The client has 3 (the database's stream head is 3) and resumes on gw-lag, whose buffer ends at 1.
      const back = await open(lagging, 'zed', { since: 3 });
      gate.release();
      assert.equal((await app.call('zed', 'PATCH', `/api/tasks/${task.id}`, { title: 'four' })).status, 200);
      await back.seq(4);
      const seen = back.frames.map((f) => `${f.type}:${f.sequence}`).join(' ');
      assert.ok((back.frames[0]!.sequence ?? 0) >= 3, `hello below the client's own 3: ${seen}`);
      assert.deepEqual(
        back.frames.filter((f) => f.type !== 'hello').map((f) => `${f.type}:${f.sequence}`),
        ['task.changed:4'],
        `missed nothing: no resync, no change it had already (${seen})`,
      );
      // A client ahead of the stream itself (3 is the head) is still resynced, to the head.
      const ahead = await open(lagging, 'zed', { since: 9 });
      assert.equal((await ahead.next((f) => f.type === 'resync')).sequence, 4);
    } finally {
      gate.release();
      await lagging.stop();
    }
  });

  it('tells a connected client of a gap in what reaches the gateway (resync), never skips it silently', async () => {
    // The bus cannot be reached when gw-late starts: it serves sockets without its subscription (after the
    // start-up wait, ~5 s), which starts later at the end of the topic, past what was published meanwhile.
    const gate = new Gate();
    gate.close();
    const late = await startApp(db, {
      targets: [gatedGateway('gw-late', gate, 'subscribe')],
      clock: { now: () => new Date() },
    });
    try {
      const watcher = await open(app, 'gus');
      const client = await open(late, 'gus');
      assert.equal(client.frames[0]!.sequence, 0, 'hello: the stream has nothing of gus yet');
      const task = await create('gus', 'one');
      await watcher.seq(1); // published before gw-late subscribes: it never sees change 1
      gate.release();
      await waitFor(
        async () => (await fetch(`${late.url}/readyz`)).status === 200,
        10_000,
        'gw-late to subscribe',
      );
      for (const title of ['two', 'three'])
        assert.equal((await app.call('gus', 'PATCH', `/api/tasks/${task.id}`, { title })).status, 200);
      await client.seq(3);
      assert.deepEqual(
        client.frames.filter((f) => f.type !== 'hello').map((f) => `${f.type}:${f.sequence}`),
        ['resync:2', 'task.changed:3'],
        'change 1 missed: a resync (the list reloaded holds 2), then live',
      );
    } finally {
      gate.release();
      await late.stop();
    }
  });

  it('answers pings, and closes a socket that floods it with messages (1008)', async () => {
    const calm = await open(app, 'pinger');
    calm.ws.send('{"type":"ping"}');
    await calm.next((f) => f.type === 'pong');
    const flood = await open(app, 'pinger');
    for (let i = 0; i < MAX_CLIENT_MESSAGES + 1; i++) flood.ws.send('{"type":"ping"}');
    const closed = await within(flood.closed, 10_000, 'closing the flooding socket');
    assert.equal(closed.code, 1008);
    assert.match(closed.reason, /too many messages/);
    assert.equal(
      flood.frames.filter((f) => f.type === 'pong').length,
      MAX_CLIENT_MESSAGES,
      'every message within the bound answered',
    );
    // The user's other socket is not affected.
    calm.ws.send('{"type":"ping"}');
    await calm.next((f) => f.type === 'pong' && calm.frames.filter((x) => x.type === 'pong').length === 2);
  });

  it('drops a slow client (1013) without stalling the others', async () => {
    const user = 'slowpoke';
    const fast = await open(app, user);
    const slow = await open(app, user);
    const bystander = await open(app, 'ann');
    (slow.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();

    // Flood until the gateway drops the slow client. How much the kernel holds for a paused reader (its
    // receive buffer plus the server's send buffer) depends on the host's TCP settings: about 4 MB here,
    // more elsewhere. So the flood is not a fixed size; it goes on, 100 frames (~0.9 MB) at a time, until the
    // drop, up to ~70 MB.
    const BATCH = 100;
    const MAX_FRAMES = 8_000;
    const base = newTask(uuidv7(), user, plainFields('big', { description: 'x'.repeat(9_000) }), new Date());
    const slowDrops = async () =>
      (await app.proc.runtime.metrics.of(gatewayManifest).disconnects.get()).values.find(
        (v) => v.labels.reason === 'slow',
      )?.value ?? 0;
    const started = Date.now();
    let sent = 0;
    while ((await slowDrops()) < 1) {
      assert.ok(sent < MAX_FRAMES, `the slow client was not dropped after ${sent} frames of ~9 KB`);
      const events = Array.from({ length: BATCH }, (_, i) =>
        makeEvent<TaskChangedData>({
          type: 'task.changed',
          source: '/taskflow/test',
          key: user,
          data: {
            task_id: base.id,
            user_id: user,
            change_type: 'updated',
            task: base,
            sequence: sent + i + 1,
          },
        }),
      );
      await app.proc.runtime.bus.publisher.publish(
        events.map((event) => ({ topic: TOPICS.taskUpdates, key: user, event })),
      );
      sent += BATCH;
      // The fast client gets every frame: the gateway has sent the batch to everyone before the next one.
      await fast.seq(sent, 120_000); // generous: on a loaded 2-core machine the embedded bus can be slow
    }
    assert.equal(fast.changes().length, sent);
    // Others go on: a change of another user arrives promptly after the flood.
    await create('ann', 'after the flood');
    // (A gateway that waited on the slow socket would never deliver it; 30 s allows for a loaded CI host.)
    await bystander.next((f) => f.task?.title === 'after the flood', 30_000);
    (slow.ws as unknown as { _socket: { resume(): void } })._socket.resume();
    const closed = await slow.closed;
    assert.ok([1013, 1006].includes(closed.code), `closed with ${closed.code}`);
    assert.ok(slow.changes().length < sent, 'the slow client did not get everything');
    console.log(
      `# slow-client flood of ${sent} frames handled in ${Date.now() - started} ms; the slow one got ${slow.changes().length}`,
    );
  });

  it('replays exactly the 50 missed changes, in order, to a client that resumes with its last sequence', async () => {
    const watcher = await open(app, 'cat');
    const leaver = await open(app, 'cat');
    await create('cat', 'before');
    const last = (await leaver.next((f) => f.type === 'task.changed')).sequence!;
    await leaver.close();
    const task = await create('cat', 'changing');
    for (let i = 1; i <= 49; i++) {
      const r = await app.call('cat', 'PATCH', `/api/tasks/${task.id}`, { title: `change ${i}` });
      assert.equal(r.status, 200);
    }
    await watcher.seq(last + 50, 20_000);

    const back = await open(app, 'cat', { since: last });
    await back.seq(last + 50);
    const replayed = back.changes();
    assert.deepEqual(
      replayed.map((f) => f.sequence),
      Array.from({ length: 50 }, (_, i) => last + 1 + i),
    );
    assert.equal(replayed[0]!.task!.title, 'changing');
    assert.equal(replayed[49]!.task!.title, 'change 49');
    assert.equal(back.binary, 0, 'replayed as text frames');
    // Then live, without duplicates.
    await create('cat', 'live');
    await back.seq(last + 51);
    assert.equal(back.changes().length, 51);

    // A client ahead of the stream (its state is from another one, a reset database say): a resync to where the
    // stream is, then live changes (not silence until the stream passes what the client claimed).
    const ahead = await open(app, 'cat', { since: 999_999_999 });
    assert.equal((await ahead.next((f) => f.type === 'resync')).sequence, last + 51);
    await create('cat', 'after the resync');
    await ahead.seq(last + 52);

    // The other instance keeps only 20 per user: resuming from that far back there is a resync.
    const far = await open(await ensureSecond(), 'cat', { since: last });
    const resync = await far.next((f) => f.type === 'resync');
    assert.equal(far.changes().length, 0);
    assert.ok(resync.sequence === null || (resync.sequence as number) >= last + 50);
  });

  it('two gateway instances over one database both deliver every update (own consumer groups)', async () => {
    const onA = await open(app, 'dan');
    const onB = await open(await ensureSecond(), 'dan');
    assert.equal(onB.frames[0]!.instance, 'gw-b');
    await create('dan', 'seen everywhere');
    for (const c of [onA, onB]) assert.equal((await c.next((f) => f.type === 'task.changed')).sequence, 1);
    const groups = await app.proc.runtime.bus.admin.listGroups();
    assert.ok(groups.includes(gatewayGroup('gw-a')) && groups.includes(gatewayGroup('gw-b')), String(groups));
    // A ticket opens one socket whichever instance it is shown to (each remembered its own uses).
    const { ticket } = (await app.call('dan', 'POST', '/api/ws-ticket')).body as { ticket: string };
    clients.push(await Client.open((await ensureSecond()).url, { ticket }));
    const refused = await upgradeAnswer(`${app.url.replace('http', 'ws')}/ws?ticket=${ticket}`);
    assert.equal(refused.status, 401);
    assert.match(refused.body, /ticket was already used/);
  });

  it('closes a socket once its token expires (1008), also one opened with a ticket', async () => {
    const gwB = await ensureSecond(); // heartbeats every 250 ms
    const short = await signDevToken(TEST_SECRET, 'fay', { expiresIn: '3s' });
    const byToken = await Client.open(gwB.url, { token: short });
    const issued = await fetch(`${gwB.url}/api/ws-ticket`, {
      method: 'POST',
      headers: { authorization: `Bearer ${short}` },
    });
    assert.equal(issued.status, 200);
    const { ticket } = (await issued.json()) as { ticket: string };
    const byTicket = await Client.open(gwB.url, { ticket }); // the ticket alone would last 60 s
    const opened = Date.now();
    for (const c of [byToken, byTicket]) {
      const closed = await c.closed;
      assert.equal(closed.code, 1008);
      assert.match(closed.reason, /token expired/);
    }
    assert.ok(Date.now() - opened < 10_000, "closed at the token's expiry, not the ticket's");
  });

  it(
    'sends nothing once the token expired, between heartbeats too, and a ticket outliving its token opens nothing',
    { timeout: 20_000 },
    async () => {
      // gw-a beats every 30 s (the default): the close must come from the token's own expiry, not a beat.
      const short = await signDevToken(TEST_SECRET, 'gil', { expiresIn: '2s' });
      const socket = await Client.open(app.url, { token: short });
      const issued = await fetch(`${app.url}/api/ws-ticket`, {
        method: 'POST',
        headers: { authorization: `Bearer ${short}` },
      });
      const { ticket } = (await issued.json()) as { ticket: string };
      const closed = await Promise.race([
        socket.closed,
        new Promise<{ code: number; reason: string }>((r) =>
          setTimeout(r, 5_000, { code: 0, reason: 'open' }),
        ),
      ]);
      assert.deepEqual([closed.code, closed.reason], [1008, 'token expired; reconnect with a fresh token']);
      await create('gil', 'written after the token expired');
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(socket.changes().length, 0);
      const refusal = await upgradeAnswer(`${app.url.replace('http', 'ws')}/ws?ticket=${ticket}`);
      assert.equal(refusal.status, 401);
      assert.match(refusal.body, /token this ticket was made with has expired/);
    },
  );

  it(
    'resyncs a client ahead of a stream it knows nothing of, then sends what comes (a restored database)',
    { timeout: 20_000 },
    async () => {
      const ahead = await open(app, 'hal', { since: 999 });
      assert.equal((await ahead.next((f) => f.type === 'resync')).sequence, 0, 'the stream has none yet');
      await create('hal', 'after the restore');
      await ahead.seq(1);
    },
  );

  it('terminates dead connections (no pong) and sends 1001 on shutdown', async () => {
    const gwB = await ensureSecond();
    const dead = await open(gwB, 'eve');
    const alive = await open(gwB, 'eve');
    (dead.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const deadDrops = async () =>
      (await gwB.proc.runtime.metrics.of(gatewayManifest).disconnects.get()).values.find(
        (v) => v.labels.reason === 'dead',
      )?.value ?? 0;
    await waitFor(async () => (await deadDrops()) >= 1, 5_000, 'the dead client to be dropped');
    assert.equal(alive.ws.readyState, WebSocket.OPEN);
    await gwB.stop();
    const closed = await alive.closed;
    assert.equal(closed.code, 1001);
  });
});

describe(
  'WebSocket gateway on Kafka: two instances',
  { skip: process.env.TEST_KAFKA_BROKERS ? false : 'needs TEST_KAFKA_BROKERS (scripts/test starts Kafka)' },
  () => {
    it('delivers a change to the user’s clients on both gateway instances', async () => {
      const env = {
        BUS: 'kafka',
        KAFKA_BROKERS: process.env.TEST_KAFKA_BROKERS!,
        KAFKA_TOPIC_PREFIX: `gw${uuidv7().slice(-8)}.`,
      };
      const dbA = await openDb('memory://');
      const dbB = await openDb('memory://');
      const clock = { now: () => new Date() };
      const a = await startApp(dbA, {
        targets: [apiTarget, relayTarget, createGatewayTarget({ instanceId: 'kafka-gw-a' })],
        env,
        clock,
      });
      const b = await startApp(dbB, {
        targets: [createGatewayTarget({ instanceId: 'kafka-gw-b' })],
        env,
        clock,
      });
      const clients: Client[] = [];
      try {
        const token = await a.token('kim');
        clients.push(await Client.open(a.url, { token }), await Client.open(b.url, { token }));
        // Each instance joins its own group from the latest offset, so an update published before a group
        // has its partitions is not for it. Instead of guessing how long that takes, probe: publish a live
        // notification for kim (no sequence, nothing buffered) until each client has received one. Then each
        // group consumes kim's partition from before its probe, and the update below comes after it.
        const probe = () => {
          const id = uuidv7();
          const notification = {
            id,
            reminder_id: `probe-${id}`,
            task_id: uuidv7(),
            title: 'probe',
            body: 'probe',
            due_at: null,
            remind_at: new Date().toISOString(),
            created_at: new Date().toISOString(),
            read_at: null,
          };
          const event = makeEvent({
            type: 'notification.created',
            source: '/taskflow/test',
            subject: notification.task_id,
            key: 'kim',
            data: { user_id: 'kim', notification },
          });
          return a.proc.runtime.bus.publisher.publish([{ topic: TOPICS.taskUpdates, key: 'kim', event }]);
        };
        const deadline = Date.now() + 30_000;
        while (!clients.every((c) => c.frames.some((f) => f.type === 'notification'))) {
          assert.ok(Date.now() < deadline, 'both gateway instances to deliver a probe within 30 s');
          await probe();
          // This probe's frame on every socket, or, for a group still joining (it misses the probe), the next.
          await Promise.all(
            clients.map((c) => c.next((f) => f.type === 'notification', 250).catch(() => undefined)),
          );
        }
        assert.equal((await a.call('kim', 'POST', '/api/tasks', { title: 'on both instances' })).status, 201);
        for (const c of clients) {
          const f = await c.next((x) => x.type === 'task.changed', 30_000);
          assert.equal(f.task!.title, 'on both instances');
        }
      } finally {
        for (const c of clients) c.ws.terminate();
        await b.stop();
        await a.stop();
        await dbA.close();
        await dbB.close();
      }
    });
  },
);
