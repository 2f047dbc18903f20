/**
 * One-time WebSocket tickets (`POST /api/ws-ticket` -> `/ws?ticket=`) with real gateways over one database,
 * on each backend (the use is recorded in `gateway_spent_tickets`): an upgrade the gateway refuses (a bad
 * `since`, the per-user connection limit) leaves the ticket usable, and a ticket opens one socket at most,
 * also under concurrent upgrades on two instances.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { createGatewayTarget } from '../../src/services/gateway/index.ts';
import { gatewayManifest } from '../../src/services/gateway/manifest.ts';
import type { Db } from '../../src/store/db.ts';
import { backends } from '../helpers/db.ts';
import { startApp, waitFor, type TestApp } from '../helpers/app.ts';

/** How an upgrade ended: opened (its hello, the socket kept), closed before a hello, or refused over HTTP. */
type Outcome =
  | { kind: 'opened'; ws: WebSocket }
  | { kind: 'closed'; code: number; reason: string }
  | { kind: 'refused'; status: number; body: string };

function attempt(
  target: TestApp,
  opts: { ticket?: string; token?: string; since?: string },
): Promise<Outcome> {
  const q = new URLSearchParams();
  if (opts.ticket) q.set('ticket', opts.ticket);
  if (opts.since !== undefined) q.set('since', opts.since);
  const url = `${target.url.replace(/^http/, 'ws')}/ws${q.size ? `?${q}` : ''}`;
  const ws = new WebSocket(url, opts.token ? ['taskflow.v1', `bearer.${opts.token}`] : []);
  return new Promise((resolve) => {
    ws.on('error', () => undefined);
    ws.once('message', () => resolve({ kind: 'opened', ws }));
    ws.on('close', (code, reason) => resolve({ kind: 'closed', code, reason: String(reason) }));
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => {
        req.destroy();
        resolve({ kind: 'refused', status: res.statusCode ?? 0, body });
      });
    });
  });
}

/** The outcome as a line to compare: `opened`, `closed <code> <reason>`, `<status> <detail>`. */
const said = (o: Outcome) =>
  o.kind === 'opened'
    ? 'opened'
    : o.kind === 'closed'
      ? `closed ${o.code} ${o.reason}`
      : `${o.status} ${(JSON.parse(o.body) as { detail?: string }).detail ?? o.body}`;

const USED = '401 ticket was already used';
const FULL = 'closed 1008 too many connections for this user';

for (const backend of backends) {
  describe(`WebSocket tickets (${backend.name})`, () => {
    let db: Db;
    let drop: () => Promise<void>;
    let one: TestApp; // gateway "tk-a": at most one socket per user
    let many: TestApp; // gateway "tk-b" over the same database: the default limit
    const sockets: WebSocket[] = [];
    const keep = (o: Outcome) => {
      if (o.kind === 'opened') sockets.push(o.ws);
      return o;
    };
    const ticketOf = async (user: string) =>
      ((await one.call(user, 'POST', '/api/ws-ticket')).body as { ticket: string }).ticket;
    /** Closes `ws` and waits until `target` has let it go (its gauge), so the user's limit counts it no more. */
    const closeOn = async (target: TestApp, ws: WebSocket) => {
      const gauge = target.proc.runtime.metrics.of(gatewayManifest).connections;
      const before = (await gauge.get()).values[0]?.value ?? 0;
      ws.close();
      await waitFor(
        async () => ((await gauge.get()).values[0]?.value ?? 0) < before,
        5_000,
        'the gateway to drop the closed socket',
      );
    };

    before(async () => {
      ({ db, drop } = await backend.fresh());
      const clock = { now: () => new Date() };
      one = await startApp(db, {
        targets: [createGatewayTarget({ instanceId: 'tk-a', maxConnectionsPerUser: 1 })],
        clock,
      });
      many = await startApp(db, { targets: [createGatewayTarget({ instanceId: 'tk-b' })], clock });
    });
    after(async () => {
      for (const ws of sockets) ws.terminate();
      await many?.stop();
      await one?.stop();
      await drop();
    });

    it('a ticket refused for a bad since or the per-user limit stays usable, then opens one socket', async () => {
      const ticket = await ticketOf('una');
      assert.equal(
        said(await attempt(one, { ticket, since: 'abc' })),
        '400 since: must be a sequence number',
      );
      const held = keep(await attempt(one, { token: await one.token('una') }));
      assert.equal(said(held), 'opened');
      assert.equal(said(await attempt(one, { ticket })), FULL);
      // Refused twice, the ticket still opens a socket (on the other instance), and then never another.
      assert.equal(said(keep(await attempt(many, { ticket }))), 'opened');
      await closeOn(one, (held as { ws: WebSocket }).ws);
      assert.equal(said(await attempt(one, { ticket })), USED);
      assert.equal(said(await attempt(many, { ticket })), USED);
      // The refused upgrade let go of the connection it held: una's one socket on tk-a is still to be had.
      assert.equal(said(keep(await attempt(one, { token: await one.token('una') }))), 'opened');
    });

    it('one ticket in concurrent upgrades on two instances opens one socket', async () => {
      const ticket = await ticketOf('vic');
      const outcomes = (
        await Promise.all([attempt(one, { ticket }), attempt(many, { ticket }), attempt(many, { ticket })])
      ).map(keep);
      assert.deepEqual(outcomes.map(said).sort(), [USED, USED, 'opened'].sort());
    });

    it('of two tickets racing for the last socket of a user, the one refused stays usable', async () => {
      const [t1, t2] = [await ticketOf('wes'), await ticketOf('wes')];
      const outcomes = (await Promise.all([attempt(one, { ticket: t1 }), attempt(one, { ticket: t2 })])).map(
        keep,
      );
      assert.deepEqual(outcomes.map(said).sort(), [FULL, 'opened'].sort());
      const opened = outcomes.findIndex((o) => o.kind === 'opened');
      await closeOn(one, (outcomes[opened] as { ws: WebSocket }).ws);
      assert.equal(said(keep(await attempt(one, { ticket: opened === 0 ? t2 : t1 }))), 'opened');
    });
  });
}
