/**
 * The REST API of the deployment as the calling user, for MCP tools whose data another target owns
 * (reminders, recurrence, notifications): targets talk through events and HTTP, never by importing each
 * other. When that target runs in this process (`taskflow up`) the request goes through this server
 * without a socket (Fastify `inject`, from the caller's address); otherwise to the deployment's address
 * (INTERNAL_URL or PUBLIC_URL), where every target is served, or, with `{target}` in INTERNAL_URL, to that
 * target's own address (a Kubernetes Service per target: `http://taskflow-{target}`).
 */
import type { FastifyInstance } from 'fastify';
import { childTraceparent } from '../../observability/trace.ts';

export interface RestAnswer {
  status: number;
  body: unknown;
}

export type RestClient = (req: {
  /** The target that serves the route: `{target}` in the deployment's address is replaced by it. */
  target: RestTarget;
  method: 'GET' | 'POST' | 'PUT';
  url: string;
  body?: unknown;
}) => Promise<RestAnswer>;

/** The targets whose routes MCP tools call (the data they own). */
export type RestTarget = 'reminders' | 'recurrence' | 'notifications';

/** The placeholder of a deployment address that is one per target (INTERNAL_URL). */
export const TARGET_PLACEHOLDER = '{target}';

/** No server answered: the target is elsewhere and no address is set, or the deployment is unreachable. */
export class RestUnavailableError extends Error {}

const NO_ROUTE = /^no route /;
const TIMEOUT_MS = 10_000;

export function restClient(opts: {
  /** This process's server, when there is one. */
  app?: FastifyInstance;
  authorization: string;
  /** The deployment's address (Config.apiUrl). */
  apiUrl: string | null;
  /** Who is calling, passed on in-process: the routes see the MCP client's address, agent and trace. */
  caller?: { ip: string; userAgent?: string; traceparent?: string };
}): RestClient {
  const requestOf = (req: Parameters<RestClient>[0]) => ({
    headers: {
      authorization: opts.authorization,
      ...(opts.caller?.userAgent ? { 'user-agent': opts.caller.userAgent } : {}),
      // The tool's span when tracing is on (a child of it), else the caller's trace with a span of its own.
      traceparent: childTraceparent(opts.caller?.traceparent),
      ...(req.body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: req.body === undefined ? undefined : JSON.stringify(req.body),
  });
  const remote = async (req: Parameters<RestClient>[0]): Promise<RestAnswer> => {
    const where = `${req.method} ${req.url.split('?')[0]}`;
    if (!opts.apiUrl)
      throw new RestUnavailableError(
        `${where} is served by a target that does not run in this process; set PUBLIC_URL (or INTERNAL_URL) to the deployment's address`,
      );
    const { headers, body } = requestOf(req);
    const base = opts.apiUrl.replaceAll(TARGET_PLACEHOLDER, req.target);
    let r: Response;
    try {
      r = await fetch(`${base}${req.url}`, {
        method: req.method,
        headers,
        ...(body === undefined ? {} : { body }),
        redirect: 'error', // the token goes to that address and nowhere else
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (err) {
      throw new RestUnavailableError(
        `${where} at ${base} failed: ${(err as Error).message}; try again later`,
      );
    }
    const answer = parsed(await r.text(), r.status, where);
    // The address answers, but not with that route: it is a process without the target (INTERNAL_URL set
    // to one API process, say), not the deployment's router.
    if (r.status === 404 && NO_ROUTE.test(String((answer as { detail?: unknown } | null)?.detail ?? '')))
      throw new RestUnavailableError(
        `${where} is not served at ${base}: set INTERNAL_URL (or PUBLIC_URL) to an address that reaches every target (the deployment's router, or each target's own with ${TARGET_PLACEHOLDER} in it), not one process`,
      );
    return { status: r.status, body: answer };
  };
  return async (req) => {
    if (!opts.app) return remote(req);
    const { headers, body } = requestOf(req);
    const r = await opts.app.inject({
      method: req.method,
      url: req.url,
      headers,
      ...(body === undefined ? {} : { payload: body }),
      ...(opts.caller ? { remoteAddress: opts.caller.ip } : {}),
    });
    const answer = parsed(r.body, r.statusCode, req.url);
    const noRoute =
      r.statusCode === 404 && NO_ROUTE.test(String((answer as { detail?: unknown } | null)?.detail ?? ''));
    return noRoute ? remote(req) : { status: r.statusCode, body: answer };
  };
}

/** A JSON answer; anything else (a proxy's HTML error page) means the API did not answer. */
function parsed(text: string, status: number, where: string): unknown {
  if (!text) return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new RestUnavailableError(`${where} answered ${status} without JSON; try again later`);
  }
}
