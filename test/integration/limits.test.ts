/**
 * Limits without holes: WebSocket tickets and upgrades count against the user's per-minute budget like any
 * request; failed authentication counts against the client address (401s, then 429), an IPv6 client's
 * whole /64, and a flood of new addresses costs constant time each; over the limit the
 * answer is problem+json with Retry-After; while the server shuts down, requests on open connections get a
 * problem+json 503 with Retry-After; while the event loop lags (MAX_EVENT_LOOP_DELAY_MS), API requests get a
 * problem+json 503 with Retry-After and nothing of them is written, while health, metrics and WebSockets
 * are still served, and once it caught up writes are taken again; past MAX_REQUESTS_IN_FLIGHT API requests
 * in flight (standing, not a burst), API requests get the same 503 until a slot is free (an API route by a
 * percent-encoded path too), and a request cut off by its client frees its slot.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { signDevToken } from '../../src/auth.ts';
import type { FastifyInstance } from 'fastify';
import { chargeRequest, setRateLimit } from '../../src/http/authenticated.ts';
import { startApp, waitFor } from '../helpers/app.ts';
import { startServer, stopChild } from '../helpers/processes.ts';

async function limitedApp(perMinute: number) {
  const db = await openDb('memory://');
  await migrate(db);
  const app = await startApp(db, {
    targets: ['api', 'gateway'],
    env: { RATE_LIMIT_PER_MINUTE: String(perMinute) },
  });
  return {
    app,
    close: async () => {
      await app.stop();
      await db.close();
    },
  };
}

/** The HTTP status a WebSocket upgrade was answered with (101 when it opened). */
function upgradeStatus(url: string, protocols: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    ws.once('open', () => {
      ws.close();
      resolve(101);
    });
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
    });
    ws.once('error', (err) => (err.message.includes('Unexpected server response') ? undefined : reject(err)));
  });
}

function assertProblem429(res: { status: number; headers: Headers; body: unknown }, what: string) {
  assert.equal(res.status, 429, what);
  assert.match(res.headers.get('content-type') ?? '', /application\/problem\+json/, what);
  assert.ok(Number(res.headers.get('retry-after')) >= 1, `${what}: retry-after`);
  assert.match(JSON.stringify(res.body), /rate limit of \d+ requests per minute/, what);
}

describe('limits without holes', () => {
  it('counts WebSocket tickets and upgrades against the user budget', async () => {
    const { app, close } = await limitedApp(4);
    try {
      const ws = `${app.url.replace('http', 'ws')}/ws`;
      const bearer = ['taskflow.v1', `bearer.${await app.token('alice')}`];
      assert.equal((await app.call('alice', 'POST', '/api/ws-ticket')).status, 200);
      assert.equal((await app.call('alice', 'POST', '/api/ws-ticket')).status, 200);
      assert.equal(await upgradeStatus(ws, bearer), 101);
      assert.equal((await app.call('alice', 'GET', '/api/tasks')).status, 200); // the 4th of alice's minute
      assertProblem429(await app.call('alice', 'POST', '/api/ws-ticket'), 'ticket over the budget');
      assert.equal(await upgradeStatus(ws, bearer), 429);
      assert.equal(await upgradeStatus(ws, ['taskflow.v1', `bearer.${await app.token('bob')}`]), 101);
    } finally {
      await close();
    }
  });

  it('refuses a request over the limit before reading its body; counts each message of an MCP batch', async () => {
    const { app, close } = await limitedApp(5);
    try {
      const post = (body: string) =>
        fetch(`${app.url}/api/tasks`, {
          method: 'POST',
          headers: { authorization: `Bearer ${signed}`, 'content-type': 'application/json' },
          body,
        });
      const signed = await app.token('dora');
      const mcp = (n: number) =>
        fetch(`${app.url}/mcp`, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${signed}`,
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
          },
          body: JSON.stringify(
            Array.from({ length: n }, (_, i) => ({ jsonrpc: '2.0', id: i + 1, method: 'tools/list' })),
          ),
        });
      assert.equal((await mcp(4)).status, 200); // four of dora's five
      assert.equal((await post('{"title":"the fifth"}')).status, 201);
      // Over the limit: refused as such (429), not as a body that is not JSON (400): it was not read.
      const over = await post('{not json');
      assert.equal(over.status, 429);
      assert.match(await over.text(), /rate limit of 5 requests per minute/);
    } finally {
      await close();
    }
  });

  it('refuses a body nested deeper than any request needs before parsing it (400)', async () => {
    const { app, close } = await limitedApp(0);
    try {
      const deep = `{"title":"x","description":${'['.repeat(10_000)}${']'.repeat(10_000)}}`;
      const r = await app.call('erin', 'POST', '/api/tasks', deep);
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.match(r.body.detail, /nests deeper than 64 levels/);
      // Deep but small, or large but flat: parsed and answered on their merits.
      const flat = JSON.stringify({ title: 'long', description: 'd'.repeat(9_000) });
      assert.equal((await app.call('erin', 'POST', '/api/tasks', JSON.parse(flat))).status, 201);
    } finally {
      await close();
    }
  });

  it('limits failed authentication per client address: 401 until the budget is spent, then 429', async () => {
    const { app, close } = await limitedApp(3);
    try {
      for (let i = 0; i < 3; i++)
        assert.equal(
          (await app.call(null, 'GET', '/api/tasks', undefined, { authorization: 'Bearer nope' })).status,
          401,
        );
      assertProblem429(await app.call(null, 'GET', '/api/tasks'), 'no token over the budget');
      assert.equal(
        await upgradeStatus(`${app.url.replace('http', 'ws')}/ws`, ['taskflow.v1', 'bearer.bad']),
        429,
      );
      // A user with a valid token has a budget of their own, also one whose name reads as an address's key.
      assert.equal((await app.call('carol', 'GET', '/api/tasks')).status, 200);
      assert.equal((await app.call('ip:127.0.0.1', 'GET', '/api/tasks')).status, 200);
      assert.equal((await app.call('ip:::ffff:127.0.0.1', 'GET', '/api/tasks')).status, 200);
    } finally {
      await close();
    }
  });

  it('limits failed authentication per IPv6 /64: a client rotating addresses within its network is limited', async () => {
    const db = await openDb('memory://');
    await migrate(db);
    // One proxy (the ingress) in front, as the Helm chart sets: it appends the client's address.
    const app = await startApp(db, { env: { RATE_LIMIT_PER_MINUTE: '5', TRUST_PROXY: '1' } });
    const failed = async (address: string) =>
      (
        await fetch(`${app.url}/api/tasks`, {
          headers: { authorization: 'Bearer guessed.token.here', 'x-forwarded-for': address },
        })
      ).status;
    try {
      const rotating: number[] = [];
      for (let i = 1; i <= 7; i++) rotating.push(await failed(`2001:db8:1:2::${i.toString(16)}`));
      assert.deepEqual(rotating, [401, 401, 401, 401, 401, 429, 429], 'seven addresses of one /64');
      // Another /64 (and its written forms) is another client; an IPv4-mapped address is its IPv4 address.
      assert.equal(await failed('2001:db8:1:3::1'), 401);
      assert.equal(await failed('2001:0DB8:0001:0002:ffff::9'), 429, 'the same /64 written in full');
      for (let i = 0; i < 5; i++) assert.equal(await failed(i % 2 ? '192.0.2.7' : '::ffff:192.0.2.7'), 401);
      assert.equal(await failed('192.0.2.7'), 429);
    } finally {
      await app.stop();
      await db.close();
    }
  });

  it('counts a new client in constant time however many windows are live', () => {
    const app = {} as FastifyInstance; // the store is per server object; every failed authentication is a charge
    setRateLimit(app, 1200);
    for (let i = 0; i < 50_000; i++) chargeRequest(app, `ip:10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`);
    const t = performance.now();
    for (let i = 0; i < 2_000; i++) chargeRequest(app, `ip:10.9.${i >> 8}.${i & 255}`);
    const ms = performance.now() - t;
    // Constant time: microseconds each. A scan of the live windows per new key took 934 ms for these.
    assert.ok(ms < 250, `2,000 new keys beside 50,000 live windows took ${ms.toFixed(0)} ms`);
  });

  it('answers a request that arrives during shutdown with a problem+json 503 and Retry-After', async () => {
    const { app, close } = await limitedApp(0);
    try {
      // A connection whose request has begun (headers not finished) is not idle: closing waits for it.
      const fastify = app.proc.runtime.http.app;
      const accepted = new Promise<Socket>((r) => fastify.server.once('connection', r));
      const { port } = new URL(app.url);
      const socket = connect(Number(port), '127.0.0.1');
      const head = 'GET /healthz HTTP/1.1\r\nHost: x\r\n';
      socket.write(head);
      const serverSide = await accepted;
      await waitFor(() => serverSide.bytesRead >= head.length, 5_000, 'the server to read the request begun');
      const stopping = fastify.close();
      // The server stops listening after the preClose hooks: the server is shutting down from then on.
      await waitFor(() => !fastify.server.listening, 5_000, 'the server to begin closing');
      let answer = '';
      socket.on('data', (b: Buffer) => (answer += b.toString()));
      const ended = new Promise((r) => socket.once('close', r));
      socket.write('\r\n');
      await ended;
      await stopping;
      assert.match(answer, /^HTTP\/1\.1 503 /, answer);
      assert.match(answer, /content-type: application\/problem\+json/i);
      assert.match(answer, /retry-after: 1/i);
      assert.match(answer, /shutting down/);
    } finally {
      await close().catch(() => undefined);
    }
  });
});

describe('admission control by the event loop', () => {
  it('refuses API requests while the loop lags, serves health, metrics and WebSockets, and recovers', async () => {
    const db = await openDb('memory://');
    await migrate(db);
    const app = await startApp(db, { targets: ['api', 'gateway'], env: { MAX_EVENT_LOOP_DELAY_MS: '10' } });
    // A busy process: every few ms, 40 ms of synchronous work.
    const busy = setInterval(() => {
      const until = performance.now() + 40;
      while (performance.now() < until);
    }, 5);
    let accepted = 0; // alice's creates that got in anyway (a sample below the bound): they must be listed
    try {
      // Just ready: start-up lags every loop, so nothing is refused for the first seconds, even after the
      // lag was sampled (250 ms samples): without the wait the first request could beat the first sample.
      await sleep(700);
      const early = await app.call('alice', 'POST', '/api/tasks', { title: 'just started' });
      assert.equal(early.status, 201, 'not refused right after start');
      accepted++;
      let refused: Awaited<ReturnType<typeof app.call>> | undefined;
      await waitFor(
        async () => {
          const r = await app.call('alice', 'POST', '/api/tasks', { title: 'while busy' });
          if (r.status === 201) accepted++;
          if (r.status === 503) refused = r;
          return refused !== undefined;
        },
        15_000,
        'a 503 while the loop lags (after the start-up grace)',
      );
      assert.equal(refused!.headers.get('retry-after'), '1');
      assert.match(refused!.headers.get('content-type') ?? '', /^application\/problem\+json/);
      assert.match(refused!.body.detail, /event loop delay \d+ ms > 10 ms/);
      await waitFor(
        async () => (await app.call('alice', 'GET', '/api/tasks')).status === 503,
        15_000, // as long as the first: on a loaded machine the process gets its half core in fewer samples
        'reads of the API refused too',
      );
      assert.equal((await fetch(`${app.url}/healthz`)).status, 200);
      assert.equal((await fetch(`${app.url}/metrics`)).status, 200);
      assert.equal(
        await upgradeStatus(`${app.url.replace('http', 'ws')}/ws`, [
          'taskflow.v1',
          `bearer.${await app.token('alice')}`,
        ]),
        101,
      );
    } finally {
      clearInterval(busy);
    }
    // Caught up: the next sample lets writes in again, and only what was accepted was written.
    await waitFor(
      async () => (await app.call('bob', 'POST', '/api/tasks', { title: 'after' })).status === 201,
      5_000,
      'a 201 once caught up',
    );
    // Counted in the database: a list's page holds 50, and a loaded machine accepted more before a 503.
    const written = await db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM tasks WHERE user_id = 'alice'",
    );
    assert.equal(written.rows[0]!.n, accepted, 'no refused create was written');
    await app.stop();
    await db.close();
  });
});

describe('admission control by the requests in flight', () => {
  it('refuses API requests past MAX_REQUESTS_IN_FLIGHT while they stand, never leaks a slot, and recovers', async () => {
    const db = await openDb('memory://');
    await migrate(db);
    // CREATE_QUEUE_MAX_MS off: the creates held behind the database must not be refused by the create queue.
    const app = await startApp(db, {
      targets: ['api'],
      env: { MAX_REQUESTS_IN_FLIGHT: '3', CREATE_QUEUE_MAX_MS: '0' },
    });
    const token = await app.token('alice');
    const body = JSON.stringify({ title: 'x' });
    const create = (title: string, signal?: AbortSignal) =>
      fetch(`${app.url}/api/tasks`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ title }),
        signal,
      });
    /** The slots taken (the gauge /metrics shows; read in the process: a scrape reads the held database). */
    const inFlight = async () => (await app.proc.runtime.metrics.httpInFlight.get()).values[0]?.value ?? NaN;
    const slotsTaken = (n: number, what: string) =>
      waitFor(async () => (await inFlight()) === n, 5_000, what);
    /**
     * Refused now? A request with a bad token touches no database: 401 when admitted, 503 when refused
     * (admission comes before authentication).
     */
    const refusing = async () =>
      (await fetch(`${app.url}/api/tasks`, { headers: { authorization: 'Bearer nope' } })).status === 503;
    let releaseHeld = async () => {};
    const sockets: Socket[] = []; // destroyed in the end whatever happened, or closing the server waits on them
    /** Holds PGlite's one connection in a transaction until released: every statement waits behind it. */
    const holdDatabase = async () => {
      let release!: () => void;
      let held!: () => void;
      const isHeld = new Promise<void>((r) => (held = r));
      const done = db.transaction(async (tx) => {
        await tx.query('SELECT 1');
        held();
        await new Promise<void>((r) => (release = r));
      });
      await isHeld;
      releaseHeld = async () => {
        release();
        await done;
      };
      return releaseHeld;
    };
    try {
      const release = await holdDatabase();
      // Two creates cut off by their clients while they wait, and three pipelined on one connection that
      // is reset (a pipelined request's response never closes: its connection's close frees the slot).
      const aborts = [1, 2].map(() => new AbortController());
      const cut = aborts.map((a, i) => create(`cut ${i}`, a.signal).catch(() => 'aborted'));
      const socket = connect(Number(new URL(app.url).port), '127.0.0.1');
      sockets.push(socket);
      await new Promise((r) => socket.once('connect', r));
      const pipelined = [1, 2, 3]
        .map(
          () =>
            `POST /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
            `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
        )
        .join('');
      socket.write(pipelined);
      await slotsTaken(5, 'the five creates to take their slots (a burst above the limit is let in)');
      for (const a of aborts) a.abort();
      socket.resetAndDestroy();
      assert.deepEqual(await Promise.all(cut), ['aborted', 'aborted']);
      await slotsTaken(0, 'every slot of a request whose client left to be freed');
      // A request whose body never comes holds no slot (it takes one once it is ready for its handler).
      const stalled = connect(Number(new URL(app.url).port), '127.0.0.1');
      sockets.push(stalled);
      await new Promise((r) => stalled.once('connect', r));
      stalled.write(
        `POST /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
          `Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{`,
      );
      await sleep(200);
      assert.equal(await inFlight(), 0, 'a body still on its way takes no slot');
      stalled.destroy();
      // Three in flight again: once they stood past the window, requests are refused at once, reads too.
      const waiting = [1, 2, 3].map((i) => create(`waiting ${i}`));
      await slotsTaken(3, 'three creates in flight');
      await waitFor(refusing, 5_000, 'a 503 once three have stood in flight');
      // At once: admitted, it would wait behind the held database (and fail on the timeout).
      const refused = await create('one too many', AbortSignal.timeout(5_000));
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get('retry-after'), '1');
      assert.match(refused.headers.get('content-type') ?? '', /^application\/problem\+json/);
      assert.match(
        ((await refused.json()) as { detail: string }).detail,
        /serving 3 requests already \(MAX_REQUESTS_IN_FLIGHT\)/,
      );
      assert.equal((await fetch(`${app.url}/healthz`)).status, 200, 'health is never refused');
      await release();
      assert.deepEqual(
        (await Promise.all(waiting)).map((r) => r.status),
        [201, 201, 201],
        'what was accepted is written',
      );
      await slotsTaken(0, 'the slots of answered requests to be freed');
      assert.ok(!(await refusing()), 'taken again once slots are free');
      // (A create cut off by its client after its body was read is still written: the client cannot tell.)
      const listed = await app.call('alice', 'GET', '/api/tasks?limit=100');
      assert.deepEqual(
        listed.body.items
          .map((t: { title: string }) => t.title)
          .filter((t: string) => t.startsWith('waiting') || t === 'one too many')
          .sort(),
        ['waiting 1', 'waiting 2', 'waiting 3'],
        'the refused create was not written',
      );
    } finally {
      for (const s of sockets) s.destroy();
      await releaseHeld();
      await app.stop();
      await db.close();
    }
  });
});

describe('admission control by the route, not the raw URL', () => {
  it('refuses a request to an API route however its path is percent-encoded (/%61pi/tasks is /api/tasks)', async () => {
    const db = await openDb('memory://');
    await migrate(db);
    const app = await startApp(db, {
      targets: ['api'],
      env: { MAX_REQUESTS_IN_FLIGHT: '2', CREATE_QUEUE_MAX_MS: '0' },
    });
    const token = await app.token('alice');
    const create = (path: string, title: string, signal?: AbortSignal) =>
      fetch(`${app.url}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ title }),
        ...(signal ? { signal } : {}),
      });
    // The database held: the two creates below stand in flight.
    let release!: () => void;
    let held!: () => void;
    const isHeld = new Promise<void>((r) => (held = r));
    const done = db.transaction(async (tx) => {
      await tx.query('SELECT 1');
      held();
      await new Promise<void>((r) => (release = r));
    });
    await isHeld;
    try {
      const waiting = [1, 2].map((i) => create('/api/tasks', `waiting ${i}`));
      const status = async (path: string) =>
        (await fetch(`${app.url}${path}`, { headers: { authorization: 'Bearer nope' } })).status;
      await waitFor(
        async () => (await status('/api/tasks')) === 503,
        5_000,
        'a 503 once two stand in flight',
      );
      assert.equal(await status('/%61pi/tasks'), 503, 'the same route by an encoded path');
      assert.equal(await status('/api/%74asks'), 503);
      // A write by the encoded path is refused at once, not admitted to queue behind the held database.
      const write = await create('/%61pi/tasks', 'sneaked in', AbortSignal.timeout(1_500)).then(
        (r) => String(r.status),
        (e: Error) => `no answer in 1.5 s (${e.name}): admitted, waiting in flight`,
      );
      assert.equal(write, '503');
      assert.equal(await status('/healthz'), 200, 'health is never refused');
      release();
      for (const r of await Promise.all(waiting)) assert.equal(r.status, 201);
    } finally {
      release?.();
      await done;
      await app.stop();
      await db.close();
    }
  });
});

describe('admission control on a busy machine', () => {
  it('does not refuse a lone client while the loop lags because the process waits for a core, not because it is busy', async () => {
    // The process descheduled (SIGSTOP/SIGCONT, as on a machine busy with other processes): its loop lags by
    // 80 ms in every sample, yet it uses almost no CPU of its own.
    const server = await startServer(['api'], {
      DATABASE_URL: 'memory://',
      JWT_SECRET: 'limits-busy-machine-secret-0123456789',
      MAX_EVENT_LOOP_DELAY_MS: '10',
      LOG_LEVEL: 'warn',
    });
    const token = await signDevToken('limits-busy-machine-secret-0123456789', 'lone');
    const create = (title: string) =>
      fetch(`${server.url}/api/tasks`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ title }),
      });
    // Warm: the first creates compile what they use (hundreds of ms of the process's own work).
    for (let i = 0; i < 5; i++) assert.equal((await create(`warm-up ${i}`)).status, 201);
    let stalls = 0;
    const stall = setInterval(() => {
      server.child.kill('SIGSTOP');
      setTimeout(() => server.child.kill('SIGCONT'), 80);
      stalls++;
    }, 120);
    try {
      await sleep(3_500); // past the start-up grace, with the lag sampled many times
      const statuses: number[] = [];
      for (let i = 0; i < 15; i++) {
        statuses.push((await create(`one at a time ${i}`)).status);
      }
      assert.ok(stalls > 20);
      assert.deepEqual(statuses, Array(15).fill(201), 'a lone client on a busy machine is served');
    } finally {
      clearInterval(stall);
      server.child.kill('SIGCONT');
      await stopChild(server.child);
    }
  });
});
