/**
 * One way for every target to serve authenticated routes: a Fastify scope whose requests carry the verified
 * user (the JWT's subject), with the per-user rate limit. Services register their routes inside it.
 */
import rateLimit, { type FastifyRateLimitStore, type FastifyRateLimitStoreCtor } from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import { AuthError, bearerToken, type Principal, type Verifier } from '../auth.ts';
import { childTraceparent } from '../observability/trace.ts';
import type { EventMeta } from '../store/tasks.ts';
import { RateLimitedError } from '../domain/errors.ts';
import { clientPrefix } from './peer.ts';

export interface AuthScopeOptions {
  verify: Verifier;
}

/** The authenticated user of a request inside an authenticated scope. */
export type UserOf = (req: FastifyRequest) => string;
/** The whole principal of that request: the user and when the token expires. */
export type PrincipalOf = (req: FastifyRequest) => Principal;

const WINDOW_MS = 60_000;

/**
 * The most windows (users and client addresses) a server keeps. Past it the least recently counted one is
 * forgotten (it starts a new window when it comes back): a flood of new keys (failed authentication from
 * many addresses) costs bounded memory and constant time per request. The previous store scanned the whole
 * map for every new key once 50,000 were live (2,000 new keys then held the event loop 934 ms) and had no cap.
 * A key counted within the minute is recently used, so it is not what a flood of one-off keys pushes out
 * first; a few MB at the cap.
 */
export const MAX_WINDOWS = 100_000;

/**
 * One fixed one-minute window per user for a whole HTTP server: every service registers its own
 * authenticated scope (tasks, MCP, audit, recurrence, notifications), and the plugin's default store would
 * give each scope a counter of its own, multiplying the limit by the number of scopes.
 */
export class SharedMinuteWindows implements FastifyRateLimitStore {
  // An expired window is replaced when its key comes back, or pushed out by newer ones: no scan ever.
  private readonly windows = new LRUCache<string, { count: number; start: number }>({ max: MAX_WINDOWS });

  incr(
    key: string,
    callback: (error: Error | null, result?: { current: number; ttl: number }) => void,
  ): void {
    callback(null, this.hit(key));
  }

  /** Counts one request of `key`: how many in its window so far, and the ms until the window ends. */
  hit(key: string): { current: number; ttl: number } {
    const now = Date.now();
    let w = this.windows.get(key);
    if (!w || now - w.start >= WINDOW_MS) {
      w = { count: 0, start: now };
      this.windows.set(key, w);
    }
    w.count++;
    return { current: w.count, ttl: w.start + WINDOW_MS - now };
  }

  /** How many windows are kept (live or not yet pushed out). */
  get size(): number {
    return this.windows.size;
  }

  child(): FastifyRateLimitStore {
    return this;
  }
}

/** Each server's per-user limit and its one store (the plugin constructs a store with `new`: `Store` hands it back). */
const limits = new WeakMap<
  FastifyInstance,
  { perMinute: number; Store: FastifyRateLimitStoreCtor; windows: SharedMinuteWindows }
>();

/** The per-user limit (RATE_LIMIT_PER_MINUTE; 0: none) of every authenticated scope registered on `app`. */
export function setRateLimit(app: FastifyInstance, perMinute: number): void {
  const shared = new SharedMinuteWindows();
  const Store = function SharedStore() {
    return shared;
  } as unknown as FastifyRateLimitStoreCtor;
  limits.set(app, { perMinute, Store, windows: shared });
}

/**
 * Counts one request of `key` against `app`'s per-minute limit, for requests outside an authenticated scope's
 * own counting: WebSocket tickets and upgrades (key: the user), failed authentication (key: `ip:<address>`).
 * Throws RateLimitedError (429 with Retry-After) beyond the limit.
 */
export function chargeRequest(app: FastifyInstance, key: string): void {
  const limit = limits.get(app);
  if (!limit || limit.perMinute <= 0) return;
  const { current, ttl } = limit.windows.hit(key);
  if (current > limit.perMinute) {
    const seconds = Math.max(1, Math.ceil(ttl / 1000));
    throw new RateLimitedError(
      `rate limit of ${limit.perMinute} requests per minute exceeded; retry in ${seconds} s`,
      seconds,
    );
  }
}

/**
 * A user's key in the rate limit's store, apart from the client addresses' (`ip:`): a user named "ip:1.2.3.4"
 * shared that address's budget for failed authentication.
 */
const userKey = (userId: string) => `user:${userId}`;
/** A client's key: its IPv4 address, or its IPv6 address's /64 (clientPrefix). */
const ipKey = (req: FastifyRequest) => `ip:${clientPrefix(req.ip)}`;

/** Counts one request against the user's budget; throws RateLimitedError (429) past it. */
export const chargeUser = (app: FastifyInstance, userId: string): void => chargeRequest(app, userKey(userId));

/** Verifies with `verify`; a failed authentication counts against the client address's limit (401, then 429). */
export async function authenticateOrCharge<T>(
  app: FastifyInstance,
  req: FastifyRequest,
  verify: () => Promise<T>,
): Promise<T> {
  try {
    return await verify();
  } catch (err) {
    if (err instanceof AuthError) chargeRequest(app, ipKey(req));
    throw err;
  }
}

export async function authenticatedScope(
  app: FastifyInstance,
  opts: AuthScopeOptions,
  routes: (scope: FastifyInstance, userOf: UserOf, principalOf: PrincipalOf) => Promise<void> | void,
): Promise<void> {
  await app.register(async (scope) => {
    const principals = new WeakMap<FastifyRequest, Principal>();
    scope.addHook('onRequest', async (req) => {
      const principal = await authenticateOrCharge(app, req, async () => {
        const token = bearerToken(req.headers.authorization);
        if (!token) throw new AuthError('missing bearer token (Authorization: Bearer <jwt>)');
        return opts.verify(token);
      });
      principals.set(req, principal);
    });
    const limit = limits.get(app);
    if (limit && limit.perMinute > 0)
      await scope.register(rateLimit, {
        max: limit.perMinute,
        timeWindow: WINDOW_MS,
        store: limit.Store,
        // Before the body is read and parsed: a request over the limit costs no parse (a 256 KB body took
        // milliseconds of the one thread every user shares).
        hook: 'onRequest',
        keyGenerator: (req) => {
          const principal = principals.get(req);
          return principal ? userKey(principal.userId) : ipKey(req);
        },
        // Thrown by the plugin, so it reaches the shared error handler as problem+json with this detail.
        errorResponseBuilder: (_req, ctx) =>
          Object.assign(
            new Error(`rate limit of ${ctx.max} requests per minute exceeded; retry in ${ctx.after}`),
            { statusCode: 429 },
          ),
      });
    const principalOf: PrincipalOf = (req) => {
      const principal = principals.get(req);
      if (!principal) throw new AuthError('not authenticated');
      return principal;
    };
    const userOf: UserOf = (req) => principalOf(req).userId;
    await routes(scope, userOf, principalOf);
  });
}

/** Request context for the events a request causes (trace, client IP and user agent for the audit trail). */
export function eventMeta(req: FastifyRequest, source: string): EventMeta {
  return {
    source,
    traceparent: childTraceparent(req.headers.traceparent as string | undefined),
    clientIp: req.ip,
    ...(req.headers['user-agent'] ? { userAgent: String(req.headers['user-agent']) } : {}),
  };
}
