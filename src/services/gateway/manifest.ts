/** The `gateway` target: what it is, its GATEWAY_* settings and its metrics (the list of targets: services/index.ts). */
import { hostname } from 'node:os';
import { Counter, Gauge, type Registry } from 'prom-client';
import { ConfigError, int, type Env, TIMER_MAX_MS } from '../../config.ts';
import { TOPICS } from '../../contracts/topics.ts';
import type { TargetManifest } from '../../runtime.ts';

export const gatewayManifest = {
  name: 'gateway',
  routes: ['/ws', '/api/ws-ticket'],
  description: 'WebSocket /ws: pushes task.changed to the user, with resume (?since=) and heartbeats',
  // Every instance sees every update, and dead-letters nothing: a client that missed one resumes with ?since=.
  consumes: {
    group: 'taskflow-gateway',
    perInstance: true,
    topics: [TOPICS.taskUpdates],
    deadLetters: false,
  },
  produces: [],
  effects: 'WebSocket frames on `/ws` (`task.changed`, `notification`)',
  owns: ['used WebSocket tickets'],
  config: (env: Env) => ({
    instanceId: env.GATEWAY_INSTANCE_ID || hostname(),
    replayPerUser: int(env, 'GATEWAY_REPLAY_PER_USER', 500, 1),
    replayMaxBytes: int(env, 'GATEWAY_REPLAY_MAX_BYTES', 64 * 1024 * 1024, 1024),
    maxBufferedBytes: int(env, 'GATEWAY_MAX_BUFFERED_BYTES', 1024 * 1024, 1024),
    heartbeatMs: int(env, 'GATEWAY_HEARTBEAT_MS', 30_000, 10, TIMER_MAX_MS),
    maxConnectionsPerUser: int(env, 'GATEWAY_MAX_CONNECTIONS_PER_USER', 50, 1),
    ...(env.GATEWAY_TICKET_SECRET ? { ticketSecret: ticketSecretOf(env.GATEWAY_TICKET_SECRET) } : {}),
  }),
  metrics: (registry: Registry) => ({
    connections: new Gauge({
      name: 'taskflow_websocket_connections',
      help: 'Open WebSocket connections of the gateway',
      registers: [registry],
    }),
    messages: new Counter({
      name: 'taskflow_websocket_messages_sent_total',
      help: 'Frames sent by the gateway, by type (task.changed, resync, hello)',
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    disconnects: new Counter({
      name: 'taskflow_websocket_disconnects_total',
      help: 'WebSocket connections closed, by reason (client, slow, dead, expired, flood, shutdown)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
  }),
} as const satisfies TargetManifest;

export type GatewayOptions = ReturnType<typeof gatewayManifest.config> & { ticketSecret?: string };
export type GatewayMetrics = ReturnType<typeof gatewayManifest.metrics>;

/**
 * The HMAC key of WebSocket tickets, at least 32 bytes as JWT_SECRET (which signs the same kind of credential):
 * a short one could be found offline from one ticket, and tickets forged to open /ws as any user.
 */
function ticketSecretOf(secret: string): string {
  if (Buffer.byteLength(secret) < 32)
    throw new ConfigError('GATEWAY_TICKET_SECRET must be at least 32 bytes');
  return secret;
}
