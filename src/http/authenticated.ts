/**
 * One way for every target to serve authenticated routes: a Fastify scope whose requests carry the verified
 * user (the JWT's subject), with the per-user rate limit. Services register their routes inside it.
 */
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AuthError, bearerToken, type Verifier } from '../auth.ts';
import { childTraceparent } from '../observability/trace.ts';
import type { EventMeta } from '../store/tasks.ts';

export interface AuthScopeOptions {
  verify: Verifier;
  /** Requests per minute per user; 0 or absent disables the limit. */
  rateLimitPerMinute?: number;
}

/** The authenticated user of a request inside an authenticated scope. */
export type UserOf = (req: FastifyRequest) => string;

export async function authenticatedScope(
  app: FastifyInstance,
  opts: AuthScopeOptions,
  routes: (scope: FastifyInstance, userOf: UserOf) => Promise<void> | void,
): Promise<void> {
  await app.register(async (scope) => {
    const users = new WeakMap<FastifyRequest, string>();
    scope.addHook('onRequest', async (req) => {
      const token = bearerToken(req.headers.authorization);
      if (!token) throw new AuthError('missing bearer token (Authorization: Bearer <jwt>)');
      users.set(req, (await opts.verify(token)).userId);
    });
    if (opts.rateLimitPerMinute && opts.rateLimitPerMinute > 0)
      await scope.register(rateLimit, {
        max: opts.rateLimitPerMinute,
        timeWindow: 60_000,
        hook: 'preHandler',
        keyGenerator: (req) => users.get(req) ?? req.ip,
        // Thrown by the plugin, so it reaches the shared error handler as problem+json with this detail.
        errorResponseBuilder: (_req, ctx) =>
          Object.assign(
            new Error(`rate limit of ${ctx.max} requests per minute exceeded; retry in ${ctx.after}`),
            { statusCode: 429 },
          ),
      });
    const userOf: UserOf = (req) => {
      const user = users.get(req);
      if (!user) throw new AuthError('not authenticated');
      return user;
    };
    await routes(scope, userOf);
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
