/**
 * Who sent a request, for the routes meant for this machine or this pod only (development sign-in, the Dapr
 * sidecar's routes without a token, metrics): the socket's address, never a header a client can write, and no
 * header a proxy adds. A reverse proxy on the same host connects from loopback: a request it passes on carries
 * what it added (X-Forwarded-For, Forwarded, X-Real-IP, Via) when it adds any, and ingress controllers do; one
 * configured to add none (nginx's bare proxy_pass) is not told apart from a client on this machine.
 */
import { readFileSync } from 'node:fs';
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

/**
 * The uid of the process at the other end of a loopback TCP connection: the socket whose local port is the
 * connection's remote port and whose remote port is its local one, in the kernel's table of this network
 * namespace (/proc/net/tcp and tcp6, Linux). Null when it is not there (or ports match sockets of more than one
 * uid); undefined where there is no such table (not Linux): the owner is not knowable here.
 */
export function loopbackPeerUid(
  socket: { remotePort?: number | undefined; localPort?: number | undefined },
  read: (path: string) => string = (path) => readFileSync(path, 'latin1'),
): number | null | undefined {
  if (process.platform !== 'linux') return undefined;
  const { remotePort, localPort } = socket;
  if (remotePort === undefined || localPort === undefined) return null;
  const uids = new Set<number>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = read(table);
    } catch {
      continue; // no IPv6 in this kernel
    }
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid ...
      const [, local, remote, , , , , uid] = line.trim().split(/\s+/);
      if (!local || !remote || uid === undefined) continue;
      const port = (address: string) => parseInt(address.slice(address.lastIndexOf(':') + 1), 16);
      if (port(local) === remotePort && port(remote) === localPort) uids.add(Number(uid));
    }
  }
  return uids.size === 1 ? [...uids][0]! : null;
}

/**
 * The part of a client's address that names the client, for per-address limits: an IPv4 address as it is,
 * an IPv6 address's /64 (`2001:db8:1:2::/64`), an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, as a
 * dual-stack socket reports an IPv4 client) and a NAT64 one (`64:ff9b::192.0.2.1`) as its IPv4 address. A
 * network is given a /64 and its hosts pick any address in it (privacy addresses change by the hour): keyed
 * by the whole address, a client took a new one for each try and was never limited. Anything else (not an
 * address) is returned as it is.
 */
export function clientPrefix(address: string): string {
  const bare = address.split('%')[0]!; // a zone (fe80::1%eth0) is not part of the address
  if (isIP(bare) !== 6) return address;
  const groups = (part: string) =>
    part === ''
      ? []
      : part.split(':').flatMap((g) => {
          if (!g.includes('.')) return [parseInt(g, 16)];
          const [a, b, c, d] = g.split('.').map(Number) as [number, number, number, number];
          return [(a << 8) | b, (c << 8) | d];
        });
  const [head = '', tail] = bare.split('::');
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const all = [...front, ...Array<number>(8 - front.length - back.length).fill(0), ...back];
  const v4 = () => [all[6]! >> 8, all[6]! & 0xff, all[7]! >> 8, all[7]! & 0xff].join('.');
  if (all.slice(0, 5).every((g) => g === 0) && all[5] === 0xffff) return v4(); // IPv4-mapped
  // NAT64's well-known prefix (64:ff9b::/96, RFC 6052): an IPv4 client behind a translator, keyed as itself
  // (by its /64 every such client shared one budget).
  if (all[0] === 0x64 && all[1] === 0xff9b && all.slice(2, 6).every((g) => g === 0)) return v4();
  return `${all
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`;
}
