/**
 * The `gateway` target: WebSocket at `/ws` on the process's HTTP server (@fastify/websocket). Authenticated
 * with the API's JWT, carried in `Sec-WebSocket-Protocol` (`["taskflow.v1", "bearer.<jwt>"]`, the server
 * answers `taskflow.v1`), or a one-time `?ticket=` from `POST /api/ws-ticket` (60 s). Pushes each
 * `task.changed` of `task-updates` to that user's connections only, with resume (`?since=<sequence>`) from a
 * bounded replay buffer, heartbeats, backpressure and 1001 close frames on shutdown.
 *
 * Every instance must see every update, so each subscribes with its own consumer group
 * (`taskflow-gateway-<GATEWAY_INSTANCE_ID or hostname>`, new groups start at the end): docs/adr/0005.
 */
import { okWith } from '../../http/openapi.ts';
import websocket from '@fastify/websocket';
import type { FastifyRequest } from 'fastify';
import { AuthError, bearerToken, type Principal } from '../../auth.ts';
import { gatewayManifest, type GatewayOptions } from './manifest.ts';
import { ValidationError } from '../../domain/errors.ts';
import type { RunningTarget, TargetDefinition } from '../../runtime.ts';
import { consumerGroupSource, subscribeWhenReachable } from '../consumer-target.ts';
import { authenticateOrCharge, authenticatedScope, chargeUser } from '../../http/authenticated.ts';
import { problem, sendProblem } from '../../http/problem.ts';
import { Hub, type Refusal } from './hub.ts';
import { streamHead } from '../../store/outbox.ts';
import { within } from '../../wait.ts';
import { keySequenceStream } from '../../contracts/schemas.ts';
import { TicketIssuer, type VerifiedTicket } from './tickets.ts';

/** How long an upgrade waits for the user's latest sequence (a database that hangs): then the client resyncs. */
const HEAD_READ_MS = 2_000;

export const SUBPROTOCOL = 'taskflow.v1';

/**
 * Lets socket I/O run after a delivery: with an in-process database (PGlite) the bus loop would otherwise
 * chain microtasks only, and a burst would reach the clients' buffers before any read.
 */
const yieldToIo = () => new Promise<void>((resolve) => setImmediate(resolve));
const BEARER_PREFIX = 'bearer.';

export type { GatewayOptions };

/** A consumer-group-safe id: letters, digits, dot, dash, underscore. */
export const sanitizeInstanceId = (id: string) =>
  id.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 100) || 'gateway';

export const gatewayGroup = (instanceId: string) =>
  `${gatewayManifest.consumes.group}-${sanitizeInstanceId(instanceId)}`;

export function createGatewayTarget(overrides: Partial<GatewayOptions> = {}): TargetDefinition {
  return {
    name: 'gateway',
    async start(rt): Promise<RunningTarget> {
      const merged: GatewayOptions = { ...gatewayManifest.config(rt.config.env), ...overrides };
      const opts = { ...merged, instanceId: sanitizeInstanceId(merged.instanceId) };
      const log = rt.log.child({ component: 'gateway', instance: opts.instanceId });
      const verify = rt.verify;
      const ticketSecret = opts.ticketSecret ?? rt.config.jwt.secret;
      if (!ticketSecret)
        log.warn(
          'no JWT_SECRET or GATEWAY_TICKET_SECRET: WebSocket tickets work only on the issuing instance',
        );
      // A ticket's use is recorded in the database, so it opens one socket on any instance, restarts included.
      const tickets = new TicketIssuer(ticketSecret, rt.clock, async (jti, expiresAt, now) => {
        const r = await rt.db.query(
          // Kept 5 minutes past the ticket's expiry: an instance whose clock is ahead must not forget a use
          // while another, behind, still takes the ticket.
          `WITH expired AS (DELETE FROM gateway_spent_tickets WHERE expires_at < $3::timestamptz - interval '5 minutes')
           INSERT INTO gateway_spent_tickets (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING`,
          [jti, expiresAt.toISOString(), now.toISOString()],
        );
        return r.rowCount > 0;
      });
      const hub = new Hub(opts, log, rt.metrics.of(gatewayManifest));
      const { app } = rt.http;

      await app.register(websocket, {
        options: {
          maxPayload: 4096,
          // Never echo the bearer "protocol"; only the application protocol is selected.
          handleProtocols: (protocols: Set<string>) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
        },
        preClose: async () => hub.shutdown(),
        // A client's protocol error (a frame over maxPayload, invalid UTF-8, a dropped connection) is the
        // client's: ws has already closed the socket with the right code (1009, 1007); one debug line, not
        // an error with a stack per misbehaving client.
        errorHandler: (err, socket, req) => {
          const code = (err as { code?: string }).code ?? '';
          if (code.startsWith('WS_ERR_') || code === 'ECONNRESET' || code === 'EPIPE')
            req.log.debug({ err: err.message, code }, 'WebSocket client error');
          else req.log.error({ err }, 'WebSocket handler failed');
          socket.terminate();
        },
      });

      /** The user, and for a ticket how to use it up (the upgrade does last: see onRequest). */
      const authenticate = async (
        req: FastifyRequest,
      ): Promise<{ user: Principal; spend?: VerifiedTicket['spend'] }> => {
        const offered = String(req.headers['sec-websocket-protocol'] ?? '')
          .split(',')
          .map((p) => p.trim());
        const bearer = offered.find((p) => p.startsWith(BEARER_PREFIX));
        if (bearer) return { user: await verify(bearer.slice(BEARER_PREFIX.length)) };
        const ticket = (req.query as Record<string, unknown>).ticket;
        if (typeof ticket === 'string' && ticket) return tickets.verify(ticket);
        if (Array.isArray(ticket)) throw new AuthError('one ticket only: ?ticket= appears more than once');
        const header = bearerToken(req.headers.authorization);
        if (header) return { user: await verify(header) };
        throw new AuthError(
          'missing credentials: the subprotocols taskflow.v1 and bearer.<jwt> (Sec-WebSocket-Protocol: taskflow.v1, bearer.<jwt>), or ?ticket= (POST /api/ws-ticket)',
        );
      };
      const upgrades = new WeakMap<
        FastifyRequest,
        | { user: Principal; since: number | undefined; head: number | undefined; release: () => void }
        | { refused: Refusal }
      >();

      await app.register(async (scope) => {
        scope.get(
          '/ws',
          {
            websocket: true,
            schema: { hide: true },
            onRequest: async (req, reply) => {
              if (String(req.headers.upgrade ?? '').toLowerCase() !== 'websocket')
                return sendProblem(
                  reply.header('upgrade', 'websocket'),
                  problem(426, '/ws is a WebSocket: open it with an Upgrade: websocket request'),
                );
              // Who first (a 401 before anything about the request), then what it asks. A ticket is only checked
              // here and spent last, once nothing refuses the upgrade: a refused client retries with it.
              const { user, spend } = await authenticateOrCharge(app, req, () => authenticate(req));
              chargeUser(app, user.userId); // an upgrade counts against the user's budget like a request
              const raw = (req.query as Record<string, unknown>).since;
              let since: number | undefined;
              if (raw !== undefined) {
                // An empty since is refused too: taken as none, a client lost what changed while it was away.
                if (typeof raw !== 'string' || !/^\d{1,15}$/.test(raw))
                  throw new ValidationError([{ path: 'since', message: 'must be a sequence number' }]);
                since = Number(raw);
              }
              // The user's limit (or a shutdown) refuses with the close accept would send. Admitted, a connection
              // is held for this upgrade until its socket is accepted: a concurrent upgrade of the user cannot
              // take it while this one spends its ticket.
              const admitted = hub.admit(user.userId);
              if (!('release' in admitted)) return void upgrades.set(req, { refused: admitted });
              const { release } = admitted;
              // An upgrade that never reaches the handler (the client went) lets go when its socket closes.
              req.raw.socket.once('close', release);
              if (req.raw.socket.destroyed) release();
              try {
                // Nothing of the user in the replay buffer (this instance restarted, or trimmed it), or less
                // than the client has (this instance is behind the stream): the user's latest sequence as
                // committed tells a client that missed nothing so (hello), and lets it resume without a reload
                // (or a resync to a sequence older than its own). Unreadable (the database down), the client
                // resyncs as before.
                const head = !hub.needsHead(user.userId, since)
                  ? undefined
                  : await within(
                      streamHead(rt.db, keySequenceStream('task.changed', user.userId)),
                      HEAD_READ_MS,
                      "reading the user's latest sequence",
                    ).catch((err: unknown) => {
                      log.warn({ err }, "could not read the user's latest sequence; a resume resyncs");
                      return undefined;
                    });
                // Last: nothing refuses the socket after it (a concurrent upgrade with the ticket spent it
                // first: 401), so a ticket is used by the one upgrade it opens a socket for.
                if (spend) await authenticateOrCharge(app, req, spend);
                upgrades.set(req, { user, since, head, release });
              } catch (err) {
                release();
                throw err;
              }
            },
          },
          (socket, req) => {
            const up = upgrades.get(req);
            if (!up) return socket.close(1008, 'not authenticated');
            if ('refused' in up) return socket.close(up.refused.code, up.refused.reason);
            up.release(); // in the same tick as accept: the held connection becomes this socket
            hub.accept(socket, up.user.userId, up.since, up.user.expiresAt, up.head);
          },
        );
      });
      // The ticket route is an authenticated route like any other: bearer token, the user's rate limit.
      await authenticatedScope(app, { verify }, (scope, _userOf, principalOf) => {
        scope.post(
          '/api/ws-ticket',
          {
            schema: {
              tags: ['realtime'],
              summary: 'A one-time 60 s ticket to open /ws?ticket=... (for clients that cannot set headers)',
              security: [{ bearerAuth: [] }],
              response: okWith('The ticket and when it expires', {
                type: 'object',
                required: ['ticket', 'expires_in'],
                properties: {
                  ticket: { type: 'string', description: 'for /ws?ticket=; once' },
                  expires_in: { type: 'integer', description: 'seconds' },
                },
              }),
            },
          },
          // The ticket carries the token's expiry: the socket it opens ends with the token.
          async (req) => tickets.issue(principalOf(req)),
        );
      });

      const group = gatewayGroup(opts.instanceId);
      hub.start();
      const subscription = await subscribeWhenReachable(rt, {
        group,
        topics: gatewayManifest.consumes.topics,
        fromBeginning: false,
        deadLetters: gatewayManifest.consumes.deadLetters,
        handler: async (m) => {
          hub.ingest(m.event);
          await yieldToIo();
        },
        // A run at once, yielding once: a yield per message let the gateway fan out only one message per turn
        // of a busy event loop (taskflow up on PGlite at 250 writes/s: 350 ms behind at p99).
        batchHandler: async (items) => {
          for (const { message } of items) hub.ingest(message.event);
          await yieldToIo();
        },
        hooks: rt.metrics.consumerHooks(group),
      });
      // Its partitions it committed nothing on are not lag: a new instance starts at their end (fromBeginning).
      const untrack = rt.metrics.trackConsumerGroup(group, consumerGroupSource(rt, group, []));
      log.info({ group }, 'gateway listening on /ws');
      return {
        stop: async () => {
          untrack();
          await hub.shutdown(); // no-op when the HTTP server's preClose already did it
          await subscription.close();
        },
      };
    },
  };
}

export const gatewayTarget = createGatewayTarget();
