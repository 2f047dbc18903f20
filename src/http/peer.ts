/**
 * Who sent a request, for the routes meant for this machine or this pod only (development sign-in, the Dapr
 * sidecar's routes without a token, metrics): the socket's address, never a header a client can write, and no
 * header a proxy adds. A reverse proxy on the same host connects from loopback: a request it passes on carries
 * what it added (X-Forwarded-For, Forwarded, X-Real-IP, Via) when it adds any, and ingress controllers do; one
 * configured to add none (nginx's bare proxy_pass) is not told apart from a client on this machine.
 */
import { isIP } from 'node:net';
import type { FastifyRequest } from 'fastify';

const PROXY_HEADERS = [
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-real-ip',
  'via',
] as const;

export const isLoopbackAddress = (address: string | undefined): boolean => {
  if (!address || !isIP(address)) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return v4 === '::1' || v4.startsWith('127.');
};

/** Whether a proxy passed the request on (one of the headers proxies add is there). */
export const cameThroughProxy = (req: FastifyRequest): boolean =>
  PROXY_HEADERS.some((h) => req.headers[h] !== undefined);

/** Whether the request comes from this machine itself, not through a proxy. */
export const fromThisMachine = (req: FastifyRequest): boolean =>
  isLoopbackAddress(req.socket.remoteAddress) && !cameThroughProxy(req);
