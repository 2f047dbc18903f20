/**
 * The REST API of the deployment as the calling user, for MCP tools whose data another target owns
 * (reminders, recurrence, notifications): targets talk through events and HTTP, never by importing each
 * other. When that target runs in this process (`taskflow up`) the request goes through this server
 * without a socket (Fastify `inject`); otherwise to PUBLIC_URL, where the deployment serves every target.
 */
import type { FastifyInstance } from 'fastify';

export interface RestAnswer {
  status: number;
  body: unknown;
}

export type RestClient = (req: {
  method: 'GET' | 'POST' | 'PUT';
  url: string;
  body?: unknown;
}) => Promise<RestAnswer>;

/** Raised when no server serves the route: the target is elsewhere and PUBLIC_URL is not set. */
export class RestUnavailableError extends Error {}

const NO_ROUTE = /^no route /;

export function restClient(opts: {
  /** This process's server, when there is one. */
  app?: FastifyInstance;
  authorization: string;
  publicUrl: string | null;
}): RestClient {
  const remote = async (req: Parameters<RestClient>[0]): Promise<RestAnswer> => {
    if (!opts.publicUrl)
      throw new RestUnavailableError(
        `${req.method} ${req.url.split('?')[0]} is served by a target that does not run in this process; set PUBLIC_URL to the deployment's address`,
      );
    const r = await fetch(`${opts.publicUrl}${req.url}`, {
      method: req.method,
      headers: {
        authorization: opts.authorization,
        ...(req.body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(req.body === undefined ? {} : { body: JSON.stringify(req.body) }),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await r.text();
    return { status: r.status, body: text ? (JSON.parse(text) as unknown) : null };
  };
  return async (req) => {
    if (!opts.app) return remote(req);
    const r = await opts.app.inject({
      method: req.method,
      url: req.url,
      headers: {
        authorization: opts.authorization,
        ...(req.body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(req.body === undefined ? {} : { payload: JSON.stringify(req.body) }),
    });
    const body = r.body ? (JSON.parse(r.body) as unknown) : null;
    const noRoute =
      r.statusCode === 404 && NO_ROUTE.test(String((body as { detail?: unknown } | null)?.detail ?? ''));
    return noRoute ? remote(req) : { status: r.statusCode, body };
  };
}
