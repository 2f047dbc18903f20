/**
 * Outbound HTTP to user-supplied URLs (webhooks, web-push endpoints) without server-side request forgery: a user's webhook must
 * not reach the cluster's own services or the cloud metadata endpoint. The check runs on the addresses the
 * connection actually uses (a DNS lookup hook on node:http), so a name that resolves to a private address,
 * or re-resolves to one after a check (DNS rebinding), is refused too. Hand-written: fetch (undici) takes no
 * lookup hook without the separate undici package, and node:http does.
 */
import {
  lookup as dnsLookup,
  promises as dnsPromises,
  type LookupAddress,
  type LookupAllOptions,
} from 'node:dns';
import { request as httpRequest, type RequestOptions } from 'node:http';
import { request as httpsRequest, type Agent } from 'node:https';
import { BlockList, isIP } from 'node:net';
import { causeOf } from '../../error-text.ts';

/** Loopback, private, link-local (cloud metadata), carrier-grade NAT, multicast and reserved ranges. */
const NON_PUBLIC = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const)
  NON_PUBLIC.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [
  ['::', 96], // the unspecified and loopback addresses, and the deprecated IPv4-compatible ::a.b.c.d (::7f00:1)
  ['64:ff9b::', 96], // NAT64 of any IPv4 address
  ['64:ff9b:1::', 48], // local-use NAT64 (RFC 8215)
  ['2002::', 16], // 6to4: an IPv4 address inside (2002:7f00:1::)
  ['100::', 64], // discard-only (RFC 6666)
  ['2001::', 32], // Teredo: an IPv4 address inside
  ['2001:db8::', 32], // documentation
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10], // deprecated site-local
  ['ff00::', 8],
] as const)
  NON_PUBLIC.addSubnet(net, bits, 'ipv6');

/** Whether an IP address is not on the public internet (IPv4-mapped IPv6 is checked as IPv4). */
export function isNonPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  if (family === 6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped) return NON_PUBLIC.check(mapped[1]!, 'ipv4');
    // IPv4-translated (RFC 2765, ::ffff:0:a.b.c.d): never a public destination (BlockList does not match it).
    if (/^::ffff:0:/i.test(address)) return true;
    return NON_PUBLIC.check(address, 'ipv6');
  }
  return NON_PUBLIC.check(address, 'ipv4');
}

export class BlockedAddressError extends Error {
  override name = 'BlockedAddressError';
  constructor(host: string, address: string) {
    super(
      `${host} resolves to ${address}, which is not a public address (NOTIFY_WEBHOOK_ALLOW_PRIVATE=true allows it for webhooks and push endpoints)`,
    );
  }
}

type LookupCallback = (
  err: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

/** dns.lookup that fails when any address of the name is not public. */
export function publicOnlyLookup(
  hostname: string,
  options: LookupAllOptions | object,
  callback: LookupCallback,
) {
  const wantsAll = (options as { all?: boolean }).all === true;
  dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, wantsAll ? [] : '');
    const blocked = addresses.find((a) => isNonPublicAddress(a.address));
    if (blocked) return callback(new BlockedAddressError(hostname, blocked.address), wantsAll ? [] : '');
    if (wantsAll) return callback(null, addresses);
    const first = addresses[0]!;
    callback(null, first.address, first.family);
  });
}

/** How long `nonPublicTarget` waits for DNS before it lets the URL through (the send checks again). */
const TARGET_LOOKUP_MS = 2_000;

/**
 * Why a URL a user gives (a webhook, a push endpoint) can never be delivered to, or null: its host is written
 * as, or resolves only now to, an address that is not public. Answered when the URL is saved, so the user
 * hears of it then and not as a dead delivery hours later; a name that does not resolve, or not in time,
 * passes (the send's own check is the guard, against DNS changes too).
 */
export async function nonPublicTarget(url: URL): Promise<string | null> {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (isIP(host)) return isNonPublicAddress(host) ? `${host} is not a public address` : null;
  const addresses = await Promise.race([
    dnsPromises.lookup(host, { all: true }).catch(() => []),
    new Promise<LookupAddress[]>((resolve) => setTimeout(resolve, TARGET_LOOKUP_MS, []).unref()),
  ]);
  const blocked = addresses.find((a) => isNonPublicAddress(a.address));
  return blocked ? `${host} resolves to ${blocked.address}, which is not a public address` : null;
}

export interface PostResult {
  status: number;
  /** The answer's first POST_TEXT_MAX bytes, as text (for the error of a refusal); the rest is not kept. */
  text: string;
  /** Its Retry-After header, if any (a 429 or 503 says when to come back). */
  retryAfter?: string;
}

/** What is kept of an answer's body: enough to say why it refused. */
const POST_TEXT_MAX = 200;

/** Refuses a URL whose host is written as an address that is not public (a name is checked as it resolves). */
export function assertPublicHost(url: URL): void {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (isNonPublicAddress(host)) throw new BlockedAddressError(host, host);
}

/**
 * POSTs `body` to `url` (http or https, no redirects followed) and resolves with the status once the answer
 * is read, all within `timeoutMs` (a receiver that trickles its answer is cut there, and only the first bytes of
 * what it sends are kept); rejects with BlockedAddressError when the host is not public, unless `allowPrivate`.
 * `agent`: the connection's agent (a test's trusted certificate); the public-only lookup applies unless allowed.
 */
export async function post(
  url: string,
  body: string | Buffer,
  opts: { headers: Record<string, string>; timeoutMs: number; allowPrivate: boolean; agent?: Agent },
): Promise<PostResult> {
  const target = new URL(url);
  if (!opts.allowPrivate) assertPublicHost(target);
  const request = target.protocol === 'https:' ? httpsRequest : httpRequest;
  const options: RequestOptions = {
    method: 'POST',
    headers: { ...opts.headers, 'content-length': String(Buffer.byteLength(body)) },
    signal: AbortSignal.timeout(opts.timeoutMs),
    ...(opts.agent ? { agent: opts.agent } : {}),
    ...(opts.allowPrivate ? {} : { lookup: publicOnlyLookup as unknown as RequestOptions['lookup'] }),
  };
  return new Promise((resolve, reject) => {
    const req = request(target, options, (res) => {
      const kept: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        if (size < POST_TEXT_MAX) kept.push(chunk.subarray(0, POST_TEXT_MAX - size));
        size += chunk.length;
      });
      res.on('error', reject);
      res.on('end', () => {
        const retryAfter = res.headers['retry-after'];
        resolve({
          status: res.statusCode ?? 0,
          text: Buffer.concat(kept).toString('utf8'),
          ...(retryAfter ? { retryAfter } : {}),
        });
      });
    });
    // net wraps lookup errors: the BlockedAddressError of publicOnlyLookup is a cause.
    req.on('error', (err) => reject(causeOf(err, BlockedAddressError) ?? err));
    req.end(body);
  });
}
