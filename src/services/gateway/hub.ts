/**
 * The gateway's connections: which sockets belong to which user, the replay buffer, and the rules of the
 * protocol (see docs/adr/0005-gateway-fanout.md and web/app.js):
 *
 *   server -> client  {type:"hello", user_id, instance, sequence}      after authentication (sequence: latest known)
 *                     {type:"task.changed", sequence, change_type, task_id, task, changes, event_id, time}
 *                     {type:"resync", sequence}                        reload the list; the buffer does not reach back
 *                     {type:"notification", notification, event_id, time}  a new in-app notification (live only:
 *                                                                      no sequence; the inbox API has them all)
 *                     {type:"pong"}                                    answer to {type:"ping"}
 *   client -> server  {type:"ping"}                                    (browsers cannot send ping frames)
 *
 * A frame is sent to a connection only when its sequence is above what that connection already has, so the
 * replay on resume and the live stream never duplicate or reorder; one that is not the next (a gap: changes that
 * never reached this instance) is sent as a resync to its sequence instead. Sends never wait: a socket whose
 * unsent bytes exceed `maxBufferedBytes` is closed (1013) so one slow client cannot stall or bloat the rest.
 */
import type { WebSocket } from 'ws';
import { TIMER_MAX_MS } from '../../config.ts';
import type { CloudEvent } from '../../contracts/cloudevent.ts';
import type { NotificationCreatedData, TaskChangedData } from '../../contracts/events.ts';
import type { Logger } from '../../observability/logger.ts';
import type { GatewayMetrics, GatewayOptions } from './manifest.ts';
import { encodeFrame, ReplayBuffer } from './replay-buffer.ts';

/** The GATEWAY_* settings without the ticket secret, which the hub never needs. */
export type HubOptions = Omit<GatewayOptions, 'ticketSecret'>;

export const CLOSE = {
  goingAway: 1001,
  policy: 1008,
  tryAgainLater: 1013,
} as const;

const OPEN = 1;

interface Connection {
  ws: WebSocket;
  user: string;
  lastSent: number;
  alive: boolean;
  /** When the token that opened it expires (ms): closed then (1008), and nothing is sent to it after. */
  expiresAt: number;
  /** Closes it at `expiresAt` (the heartbeat does for tokens longer than a timer can wait). */
  expiry?: NodeJS.Timeout;
  /** The client's messages in the current window (MESSAGE_WINDOW_MS), from `windowStart` on. */
  messages: number;
  windowStart: number;
}

/**
 * A client's messages allowed per window: a client pings every 25-30 s, so this is far above any real one, and
 * each message (a parse, a pong) costs the instance as a request does; a socket over it is closed (1008).
 */
export const MAX_CLIENT_MESSAGES = 50;
const MESSAGE_WINDOW_MS = 10_000;

const EXPIRED = 'token expired; reconnect with a fresh token';
const SHUTTING_DOWN = 'server shutting down';
const TOO_MANY = 'too many connections for this user';

/** Why a socket is refused: the close code and reason it gets. */
export interface Refusal {
  code: number;
  reason: string;
}

export class Hub {
  private readonly byUser = new Map<string, Set<Connection>>();
  private readonly all = new Set<Connection>();
  /** Upgrades of each user admitted (`admit`) whose socket is not accepted yet: they count against the limit. */
  private readonly admitted = new Map<string, number>();
  readonly buffer: ReplayBuffer;
  private heartbeat: NodeJS.Timeout | undefined;
  private closing = false;

  constructor(
    private readonly opts: HubOptions,
    private readonly log: Logger,
    private readonly metrics: GatewayMetrics,
  ) {
    this.buffer = new ReplayBuffer(opts.replayPerUser, opts.replayMaxBytes);
  }

  get connections(): number {
    return this.all.size;
  }

  start(): void {
    this.heartbeat = setInterval(() => this.beat(), this.opts.heartbeatMs);
    this.heartbeat.unref();
  }

  /** A task.changed from the bus: keep it for resumes and push it to the user's connections. */
  ingest(event: CloudEvent): void {
    if (event.type === 'notification.created') return this.pushNotification(event);
    const d = event.data as TaskChangedData;
    // Encoded once: the buffer keeps these bytes, and every connection is sent them (no encoding per send).
    const frame = encodeFrame(
      JSON.stringify({
        type: 'task.changed',
        sequence: d.sequence,
        change_type: d.change_type,
        task_id: d.task_id,
        task: d.task,
        changes: d.changes ?? [],
        event_id: event.id,
        time: event.time,
      }),
    );
    if (!this.buffer.add(d.user_id, d.sequence, frame)) return; // duplicate delivery
    const conns = this.byUser.get(d.user_id);
    if (!conns) return;
    let resync: string | undefined;
    for (const c of [...conns]) {
      if (d.sequence <= c.lastSent) continue;
      const gap = d.sequence > c.lastSent + 1;
      c.lastSent = d.sequence;
      // Changes between what the connection has and this one never reached this instance (its subscription
      // started late, at the end of the topic; the topic's retention passed its position): sent this one
      // alone, the client would skip them silently. A resync instead: it reloads the list, which holds this
      // change, and goes on from it.
      if (gap) this.send(c, (resync ??= JSON.stringify({ type: 'resync', sequence: d.sequence })), 'resync');
      else this.send(c, frame, 'task.changed');
    }
  }

  /** Sends a new in-app notification to every connection of its user; nothing is buffered for resumes. */
  private pushNotification(event: CloudEvent): void {
    const d = event.data as NotificationCreatedData;
    const conns = this.byUser.get(d.user_id);
    if (!conns) return;
    const frame = JSON.stringify({
      type: 'notification',
      notification: d.notification,
      event_id: event.id,
      time: event.time,
    });
    for (const c of [...conns]) this.send(c, frame, 'notification');
  }

  /**
   * Whether a connection of `user` resuming from `since` (if any) needs the user's latest sequence as
   * committed (`accept`'s `head`): the replay buffer holds nothing of the user, or less than `since` (this
   * instance is behind the stream, or the client ahead of it).
   */
  needsHead(user: string, since: number | undefined): boolean {
    return this.buffer.needsHead(user, since);
  }

  /**
   * Holds one of `user`'s connections for an upgrade until `release` (idempotent), which the upgrade calls
   * when its socket is accepted or it fails; else why `accept` would refuse the socket. What the upgrade
   * spends meanwhile (a ticket) then buys a socket that concurrent upgrades of the user cannot take.
   */
  admit(user: string): { release: () => void } | Refusal {
    if (this.closing) return { code: CLOSE.goingAway, reason: SHUTTING_DOWN };
    const held = this.admitted.get(user) ?? 0;
    if ((this.byUser.get(user)?.size ?? 0) + held >= this.opts.maxConnectionsPerUser)
      return { code: CLOSE.policy, reason: TOO_MANY };
    this.admitted.set(user, held + 1);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        const left = (this.admitted.get(user) ?? 1) - 1;
        if (left > 0) this.admitted.set(user, left);
        else this.admitted.delete(user);
      },
    };
  }

  /**
   * A new authenticated socket; `since`: the last sequence the client has (resume), if any; `expiresAt`: when
   * its token expires (ms), after which it is closed with 1008 within a heartbeat; `head`: the user's latest
   * sequence as committed, read when the buffer holds nothing of the user or less than `since` (`needsHead`).
   */
  accept(ws: WebSocket, user: string, since: number | undefined, expiresAt = Infinity, head?: number): void {
    if (this.closing) {
      ws.close(CLOSE.goingAway, SHUTTING_DOWN);
      return;
    }
    if (expiresAt <= Date.now()) {
      ws.close(CLOSE.policy, EXPIRED);
      return;
    }
    const mine = this.byUser.get(user) ?? new Set<Connection>();
    if (mine.size >= this.opts.maxConnectionsPerUser) {
      ws.close(CLOSE.policy, TOO_MANY);
      return;
    }
    // The latest known: this instance's, or the stream's as committed when read (an instance behind has less).
    const held = this.buffer.latest(user);
    const latest = held === null ? (head ?? null) : Math.max(held, head ?? held);
    const c: Connection = {
      ws,
      user,
      lastSent: latest ?? 0,
      alive: true,
      expiresAt,
      messages: 0,
      windowStart: Date.now(),
    };
    this.byUser.set(user, mine);
    mine.add(c);
    this.all.add(c);
    this.metrics.connections.inc();
    const lifetime = expiresAt - Date.now();
    if (lifetime < TIMER_MAX_MS) {
      c.expiry = setTimeout(() => this.drop(c, CLOSE.policy, EXPIRED, 'expired'), lifetime);
      c.expiry.unref();
    }
    ws.on('pong', () => (c.alive = true));
    ws.on('message', (data, isBinary) => {
      if (!this.all.has(c)) return; // dropped, closing
      c.alive = true;
      const now = Date.now();
      if (now - c.windowStart >= MESSAGE_WINDOW_MS) {
        c.windowStart = now;
        c.messages = 0;
      }
      if (++c.messages > MAX_CLIENT_MESSAGES)
        return this.drop(
          c,
          CLOSE.policy,
          `too many messages: at most ${MAX_CLIENT_MESSAGES} in ${MESSAGE_WINDOW_MS / 1000} s`,
          'flood',
        );
      if (isBinary) return;
      let msg: unknown;
      try {
        msg = JSON.parse(String(data));
      } catch {
        return;
      }
      if ((msg as { type?: unknown } | null)?.type === 'ping') this.send(c, '{"type":"pong"}', 'pong');
    });
    ws.on('close', () => this.remove(c, 'client'));
    ws.on('error', () => undefined);

    this.send(
      c,
      JSON.stringify({ type: 'hello', user_id: user, instance: this.opts.instanceId, sequence: latest }),
      'hello',
    );
    if (since === undefined) return;
    // Replay and registration happen in the same tick as the buffer read: nothing can slip in between.
    const plan = this.buffer.plan(user, since, head);
    if (plan.kind === 'resync') {
      // From the stream's latest on (the client reloads); with nothing known of the user yet, whatever comes
      // (from `since` on, a client ahead of the stream, after a database restore say, got nothing again).
      c.lastSent = plan.latest ?? 0;
      this.send(c, JSON.stringify({ type: 'resync', sequence: plan.latest }), 'resync');
      return;
    }
    // At `since` (or past it, by what is replayed): on an instance behind the stream, the changes after
    // `since` come live as it catches up, and the ones the client has are not sent again.
    c.lastSent = Math.max(since, plan.latest);
    for (const f of plan.frames) this.send(c, f.frame, 'task.changed');
  }

  /** Sends a frame, a string or its UTF-8 bytes (a text frame either way). */
  private send(c: Connection, frame: string | Uint8Array, type: string): void {
    if (c.ws.readyState !== OPEN) return;
    // Its token expired and its timer has not run yet (a busy loop): nothing more for it.
    if (c.expiresAt <= Date.now()) return this.drop(c, CLOSE.policy, EXPIRED, 'expired');
    if (c.ws.bufferedAmount > this.opts.maxBufferedBytes) {
      this.drop(c, CLOSE.tryAgainLater, 'client too slow; reconnect with ?since=<sequence>', 'slow');
      return;
    }
    c.ws.send(frame, { binary: false });
    this.metrics.messages.inc({ type });
  }

  /** Closes a connection and stops sending to it; kills the socket if the close handshake does not finish. */
  private drop(c: Connection, code: number, reason: string, why: string): void {
    this.remove(c, why);
    try {
      c.ws.close(code, reason);
    } catch {
      /* already closing */
    }
    setTimeout(() => c.ws.terminate(), 2_000).unref();
  }

  private remove(c: Connection, why: string): void {
    if (!this.all.delete(c)) return;
    clearTimeout(c.expiry);
    const mine = this.byUser.get(c.user);
    mine?.delete(c);
    if (mine && mine.size === 0) this.byUser.delete(c.user);
    this.metrics.connections.dec();
    this.metrics.disconnects.inc({ reason: why });
    if (why === 'slow' || why === 'flood')
      this.log.warn({ user_id: c.user, reason: why }, 'dropped a WebSocket client');
  }

  private beat(): void {
    const now = Date.now();
    for (const c of [...this.all]) {
      if (c.expiresAt <= now) {
        this.drop(c, CLOSE.policy, EXPIRED, 'expired');
        continue;
      }
      if (!c.alive) {
        this.remove(c, 'dead');
        c.ws.terminate();
        continue;
      }
      c.alive = false;
      try {
        c.ws.ping();
      } catch {
        /* closing */
      }
    }
  }

  /** Graceful shutdown: close frames 1001 to everyone, wait briefly for the handshakes, then cut the rest. */
  async shutdown(graceMs = 2_000): Promise<void> {
    this.closing = true;
    clearInterval(this.heartbeat);
    const sockets = [...this.all].map((c) => c.ws);
    for (const c of [...this.all]) this.remove(c, 'shutdown');
    await Promise.all(
      sockets.map(
        (ws) =>
          new Promise<void>((resolve) => {
            if (ws.readyState === 3) return resolve();
            const timer = setTimeout(() => {
              ws.terminate();
              resolve();
            }, graceMs);
            timer.unref();
            ws.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
            try {
              ws.close(CLOSE.goingAway, SHUTTING_DOWN);
            } catch {
              ws.terminate();
            }
          }),
      ),
    );
  }
}
