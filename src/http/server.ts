/**
 * The HTTP listener every target process has: health, readiness, metrics and uniform problem+json errors.
 * Targets add their routes (the API, the gateway's WebSocket, Dapr subscription routes) to it.
 */
import { readFileSync } from 'node:fs';
import fastifyCors from '@fastify/cors';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type {} from '@fastify/swagger'; // route `schema.hide` and OpenAPI fields
import { isUtf8 } from 'node:buffer';
import { STATUS_CODES } from 'node:http';
import { Socket } from 'node:net';
import { AuthError, AuthUnavailableError, MAX_SUBJECT_LENGTH } from '../auth.ts';
import { setRateLimit } from './authenticated.ts';
import {
  IdempotencyMismatchError,
  NotFoundError,
  OverloadedError,
  RateLimitedError,
  ValidationError,
  VersionConflictError,
  UnprocessableError,
} from '../domain/errors.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import {
  SpanKind,
  SpanStatusCode,
  runWithSpan,
  startSpan,
  tracingEnabled,
} from '../observability/tracing.ts';
import type { Span } from '@opentelemetry/api';
import { problem, sendProblem, validationProblem } from './problem.ts';
import { errorMessage } from '../error-text.ts';
import { isUnavailable } from '../retry.ts';
import { cameThroughProxy } from './peer.ts';
import { InFlightLimit } from './in-flight.ts';
import { within } from '../wait.ts';

/** How long a stop lets connections with a request in flight run on before it ends them. */
const CLOSE_CONNECTIONS_AFTER_MS = 10_000;

export type ReadinessCheck = () => Promise<void>;
/** How long /readyz waits for one check: under the Helm chart's probe timeout (3 s). */
export const READINESS_CHECK_TIMEOUT_MS = 2_000;

/**
 * The longest path parameter the router takes, decoded (UTF-16 units): a user id (`/api/{user_id}/tasks`) is
 * the token's subject, which may be as long as the verifier takes (subjectProblem: 200). At the router's
 * default of 100, a user whose subject was 101-200 characters got 414 on their own routes.
 */
export const MAX_PARAM_LENGTH = MAX_SUBJECT_LENGTH;

export interface HttpServer {
  app: FastifyInstance;
  addReadinessCheck(name: string, check: ReadinessCheck): void;
}

export async function createHttpServer(opts: {
  log: Logger;
  metrics: Metrics;
  bodyLimit?: number;
  /** See Config.trustProxy; default: trust no proxy header. */
  trustProxy?: boolean | number | string;
  /** Per-user requests per minute over all authenticated routes (RATE_LIMIT_PER_MINUTE); 0: none. */
  rateLimitPerMinute?: number;
  /** MAX_EVENT_LOOP_DELAY_MS: API requests are refused (503) while the event loop lags this much; 0: never. */
  maxEventLoopDelayMs?: number;
  /** MAX_REQUESTS_IN_FLIGHT: while this many API requests have been in flight for 50 ms, new ones get 503; 0: never. */
  maxRequestsInFlight?: number;
  /** CORS_ORIGINS: the browser origins that may call the API from another site (none: same origin only). */
  corsOrigins?: readonly string[];
  /** The target, not run by this process, that serves `path` (a 404 there says so); undefined when none. */
  servedElsewhere?: (path: string) => string | undefined;
}): Promise<HttpServer> {
  const app = Fastify({
    loggerInstance: opts.log.child({ component: 'http' }) as FastifyBaseLogger,
    // One line per request would drown the event logs; metrics count requests instead.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: opts.bodyLimit ?? 256 * 1024,
    // A request (headers and body) must arrive within this: a client that announces a body and never sends
    // it is cut off instead of holding its connection and its handler's turn forever (Fastify's default is
    // no limit). Responses are not bound by it (chat's server-sent events run longer).
    requestTimeout: 30_000,
    // What Node's HTTP parser refuses (headers over its 16 KB, a malformed request, a request too slow to
    // arrive) is answered as problem+json too, on the socket, which then closes (as Fastify's own handler does).
    clientErrorHandler: (err: NodeJS.ErrnoException, socket) => {
      if (err.code === 'ECONNRESET' || socket.destroyed) return;
      const [status, detail] =
        err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'the request did not arrive in time']
          : err.code === 'HPE_HEADER_OVERFLOW'
            ? [431, 'the request line and headers are larger than the server accepts (16 KB)']
            : [400, 'the request is not valid HTTP'];
      const body = JSON.stringify(problem(status, detail));
      if (socket.writable)
        socket.write(
          `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
            `Content-Type: application/problem+json\r\nConnection: close\r\n\r\n${body}`,
        );
      socket.destroy(err);
    },
    // What the router refuses before any route runs (a malformed URL, a path parameter over MAX_PARAM_LENGTH
    // characters) is problem+json too, as every other error.
    frameworkErrors: (err, _req, reply) => {
      // A path parameter past its bound is a 400, as any parameter out of its documented bounds (the router's
      // own 414 is an answer no operation documents).
      if (err.code === 'FST_ERR_MAX_PARAM_LENGTH')
        return void sendProblem(
          reply,
          problem(400, `a path parameter is longer than ${MAX_PARAM_LENGTH} characters`),
        );
      void sendProblem(reply, problem(err.statusCode ?? 400, 'the URL is not valid (bad percent-encoding)'));
    },
    // A hop count as proxy-addr's trust function: the nearest `n` addresses are proxies.
    trustProxy:
      typeof opts.trustProxy === 'number'
        ? (
            (hops: number) => (_addr: string, hop: number) =>
              hop < hops
          )(opts.trustProxy)
        : (opts.trustProxy ?? false),
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: MAX_PARAM_LENGTH },
    // While closing, requests still arriving on open connections get a problem+json 503 with Retry-After
    // (the hook below) instead of Fastify's own plain body.
    return503OnClosing: false,
  });
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
    // An open connection holds close() until it ends; one a request was answered on (a request in flight when
    // the stop began) stayed open for its keep-alive time (72 s) after its answer: the stop waited, the 30 s
    // budget ran out and the process exited 1 without stopping its targets (the relay's batch unmarked, offsets
    // not committed). Answers say Connection: close meanwhile (below); a connection still open after
    // CLOSE_CONNECTIONS_AFTER_MS (a long chat stream, an export) is ended.
    setTimeout(() => app.server.closeAllConnections(), CLOSE_CONNECTIONS_AFTER_MS).unref();
  });
  // A callback, not an async function: it runs for every answer, and costs no promise.
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (closing) reply.header('connection', 'close');
    done(null, payload);
  });
  app.addHook('onRequest', async (_req, reply) => {
    if (!closing) return;
    reply.header('connection', 'close').header('retry-after', '1');
    return sendProblem(
      reply,
      problem(503, 'the server is shutting down; retry (another instance may answer)'),
    );
  });
  const cors = (opts.corsOrigins?.length ?? 0) > 0;
  if (cors)
    await app.register(fastifyCors, {
      origin: [...opts.corsOrigins!],
      methods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
      allowedHeaders: [
        'authorization',
        'content-type',
        'accept',
        'if-match',
        'if-none-match',
        'idempotency-key',
        'mcp-session-id',
        'mcp-protocol-version',
        'last-event-id',
      ],
      // What a client of another origin must be able to read: the version, the paging, the back-off, a replay.
      exposedHeaders: [
        'etag',
        'location',
        'link',
        'x-next-cursor',
        'retry-after',
        'idempotent-replayed',
        'mcp-session-id',
      ],
      maxAge: 600,
    });
  setRateLimit(app, opts.rateLimitPerMinute ?? 0);
  if (opts.maxEventLoopDelayMs) await shedWhenBehind(app, opts.maxEventLoopDelayMs);
  if (opts.maxRequestsInFlight) limitInFlight(app, opts.maxRequestsInFlight, opts.metrics);
  const checks = new Map<string, ReadinessCheck>();

  // Validation is done by the domain (one code path for REST and MCP); route schemas document the API.
  app.setValidatorCompiler(() => () => true);
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));

  // JSON bodies are UTF-8 (RFC 8259 8.1): bytes that are not are refused, not stored as U+FFFD, and a body
  // that says it is another charset is refused as such; then Fastify's own parser (prototype poisoning).
  const parseJson = app.getDefaultJsonParser('error', 'error');
  // No route takes text: a JSON text sent as text/plain is refused as the media type it says it is (415),
  // not read as a string and refused as "not a JSON object" (400).
  app.removeContentTypeParser('text/plain');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(String(req.headers['content-type']))?.[1];
    if (charset && !/^utf-?8$/i.test(charset))
      return done(
        Object.assign(new Error(`a JSON body is UTF-8; charset ${charset} is not taken`), {
          statusCode: 415,
        }),
        undefined,
      );
    if (!isUtf8(body as Buffer))
      return done(Object.assign(new Error('body is not valid UTF-8'), { statusCode: 400 }), undefined);
    const text = (body as Buffer).toString('utf8');
    // No body, as a client that always sends `content-type: application/json` sends a POST that takes none
    // (complete, skip): no body, not Fastify's "Body cannot be empty" (a route that needs one says so).
    if (text.length === 0) return done(null, undefined);
    // Nesting no request needs is refused before it is parsed: 240 KB of nested arrays took the parser about
    // 50 ms of the thread all users share (a small body is cheap to parse whatever its shape).
    if (text.length > DEPTH_SCAN_FROM && nestingDepth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH)
      return done(
        Object.assign(new Error(`body nests deeper than ${MAX_JSON_DEPTH} levels`), { statusCode: 400 }),
        undefined,
      );
    parseJson(req, text, (err, value) => {
      if (!err) return done(null, value);
      // JSON.parse takes it: valid JSON that the parser refused for a prototype-polluting key (the parser
      // takes a leading byte order mark, JSON.parse does not).
      let valid = false;
      try {
        JSON.parse(text.replace(/^\uFEFF/, ''));
        valid = true;
      } catch {
        // not JSON
      }
      done(
        valid
          ? Object.assign(
              new Error('body has a "__proto__" or "constructor.prototype" key, which is refused'),
              {
                statusCode: 400,
              },
            )
          : err,
        undefined,
      );
    });
  });

  // Tracing (only when switched on): a SERVER span per request, child of the caller's `traceparent`, active
  // for the hooks and the handler (re-entered after body parsing, which runs outside the request's context).
  const spans = new WeakMap<object, Span>();
  app.addHook('onRequest', (req, _reply, done) => {
    if (!tracingEnabled()) return done();
    const span = startSpan(req.method, {
      kind: SpanKind.SERVER,
      parent: req.headers.traceparent as string | undefined,
      attributes: { 'http.request.method': req.method, 'url.path': req.url.split('?')[0] ?? '/' },
    });
    if (!span) return done();
    spans.set(req, span);
    runWithSpan(span, done);
  });
  app.addHook('preHandler', (req, _reply, done) => {
    const span = spans.get(req);
    return span ? runWithSpan(span, done) : done();
  });
  const endSpan = (req: { method: string; routeOptions: { url?: string } }, status?: number) => {
    const span = spans.get(req);
    if (!span) return;
    spans.delete(req);
    const route = req.routeOptions.url;
    if (route) {
      span.updateName(`${req.method} ${route}`);
      span.setAttribute('http.route', route);
    }
    if (status !== undefined) {
      span.setAttribute('http.response.status_code', status);
      if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    }
    span.end();
  };
  app.addHook('onRequestAbort', async (req) => endSpan(req));

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    opts.metrics.httpRequests.inc({ method: req.method, route, status: String(reply.statusCode) });
    opts.metrics.httpDuration.observe({ method: req.method, route }, reply.elapsedTime / 1000);
    endSpan(req, reply.statusCode);
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (err instanceof ValidationError)
      return sendProblem(
        reply,
        validationProblem(err.issues, req.url, err instanceof UnprocessableError ? 422 : 400),
      );
    if (err instanceof NotFoundError) return sendProblem(reply, problem(404, err.message));
    if (err instanceof VersionConflictError)
      return sendProblem(reply, problem(412, err.message, { current_version: err.actual }));
    if (err instanceof IdempotencyMismatchError) return sendProblem(reply, problem(422, err.message));
    if (err instanceof RateLimitedError) {
      reply.header('retry-after', String(err.retryAfterSeconds));
      return sendProblem(reply, problem(429, err.message));
    }
    if (err instanceof OverloadedError) {
      reply.header('retry-after', String(err.retryAfterSeconds));
      return sendProblem(reply, problem(503, err.message));
    }
    if (err instanceof AuthUnavailableError) {
      // Not logged while a token waits for the next fetch of the keys: anyone can send an unknown kid.
      if (err.providerUnreachable)
        req.log.warn({ err: err.message }, 'token not checked: identity provider unreachable');
      reply.header('retry-after', String(err.retryAfterSeconds));
      return sendProblem(reply, problem(503, err.message));
    }
    if (err instanceof AuthError) {
      reply.header(
        'www-authenticate',
        `Bearer error="invalid_token", error_description=${quotedString(err.message)}`,
      );
      return sendProblem(reply, problem(401, err.message));
    }
    // Safety net behind the edge validation: a value the database refuses as data (SQLSTATE class 22: out
    // of range, invalid text, ...) is the client's, not a server failure; its statement did not commit (a
    // request of several steps, a chat turn, may have made earlier ones: the answer does not say otherwise).
    if (typeof err.code === 'string' && /^22[0-9A-Z]{3}$/.test(err.code)) {
      req.log.warn({ sqlstate: err.code, err: err.message }, 'database refused a value of the request');
      return sendProblem(
        reply,
        problem(400, `a value of the request cannot be stored (SQLSTATE ${err.code})`),
      );
    }
    // The database (or another dependency) unreachable: nothing was applied, and retrying later is the answer.
    if (isUnavailable(err)) {
      req.log.warn({ err: errorMessage(err) }, 'request not served: a dependency is unavailable');
      reply.header('retry-after', '5');
      return sendProblem(
        reply,
        problem(503, 'a dependency is unavailable (the database or the network); retry shortly'),
      );
    }
    const status = typeof err.statusCode === 'number' ? err.statusCode : 500;
    if (status >= 500) {
      req.log.error({ err }, 'request failed');
      return sendProblem(reply, problem(500, 'internal error; the request was not applied'));
    }
    const detail =
      err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err instanceof SyntaxError
        ? 'body is not valid JSON'
        : err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
          ? `a body of content-type ${String(req.headers['content-type'] ?? '(none)').slice(0, 100)} is not taken: send JSON with content-type: application/json (curl -d sends application/x-www-form-urlencoded unless told)`
          : err.message;
    return sendProblem(reply, problem(status, detail));
  });
  // A path that exists with other methods answers 405 with Allow (RFC 9110 15.5.6), not 404: what each
  // route path accepts, collected as routes are added.
  const methodsByPath: { pattern: RegExp; fixed: boolean; methods: Set<string> }[] = [];
  // The methods of each path without parameters (/api/tasks/counts), by path.
  const fixedPaths = new Map<string, Set<string>>();
  const pathOf = (url: string) => {
    const path = url.split('?')[0]!;
    return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
  };
  app.addHook('onRoute', (route) => {
    if (route.url.includes('*')) return;
    const source = `^${routePattern(route.url)}/?$`;
    let entry = methodsByPath.find((e) => e.pattern.source === source);
    if (!entry)
      methodsByPath.push(
        (entry = { pattern: new RegExp(source), fixed: !/:\w+/.test(route.url), methods: new Set() }),
      );
    const own = entry.fixed ? (fixedPaths.get(pathOf(route.url)) ?? new Set<string>()) : undefined;
    if (own) fixedPaths.set(pathOf(route.url), own);
    for (const m of [route.method].flat()) {
      entry.methods.add(m);
      own?.add(m);
    }
  });
  /** No route for this method: 405 with Allow when the path takes other methods, else 404. */
  const noRoute = (req: FastifyRequest, reply: FastifyReply) => {
    const path = pathOf(req.url);
    // A fixed path is its own resource (the router prefers it): /api/tasks/counts is not /api/tasks/:id.
    const matching = methodsByPath.filter((e) => e.pattern.test(path));
    const fixed = matching.filter((e) => e.fixed);
    const allowed = new Set((fixed.length ? fixed : matching).flatMap((e) => [...e.methods]));
    if (allowed.size === 0) {
      const owner = opts.servedElsewhere?.(path);
      return sendProblem(
        reply,
        problem(
          404,
          owner
            ? `no route ${req.method} ${path} in this process: the ${owner} target serves it, and it does not run here (taskflow serve ${owner}, or taskflow up)`
            : `no route ${req.method} ${path}`,
        ),
      );
    }
    reply.header('allow', [...allowed].sort().join(', '));
    return sendProblem(reply, problem(405, `${req.method} is not allowed on ${path}`));
  };
  // Answered early, before the body is read: an unknown route's body is never parsed (Fastify would refuse a
  // QUERY without a Content-Type with 400 first). The not-found handler stays for what reaches it otherwise.
  // A fixed path takes only its own methods: the router would hand PATCH /api/tasks/counts to the
  // parameter route beside it (PATCH /api/tasks/:id, a task "counts").
  app.addHook('onRequest', async (req, reply) => {
    // A CORS preflight is the CORS plugin's to answer (its own OPTIONS route), on any path.
    if (cors && req.method === 'OPTIONS' && req.headers['access-control-request-method']) return;
    if (req.is404) return noRoute(req, reply);
    const own = fixedPaths.get(pathOf(req.url));
    if (own && !own.has(req.method)) return noRoute(req, reply);
  });
  app.setNotFoundHandler(noRoute);

  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { hide: true } }, async (req, reply) => {
    // In the order the checks were added, whichever answers first.
    const results: Record<string, string> = Object.fromEntries([...checks.keys()].map((name) => [name, '']));
    let ready = true;
    // At once and each bounded: a dependency that stops answering (a stalled database connection) names
    // itself in a 503 within the probe's timeout, instead of holding the answer (the probe then fails without
    // saying why) and every probe after it.
    await Promise.all(
      [...checks].map(async ([name, check]) => {
        try {
          await within(check(), READINESS_CHECK_TIMEOUT_MS, 'the check');
          results[name] = 'ok';
        } catch (err) {
          ready = false;
          // Through a proxy (an ingress's catch-all rule), which check fails, not its error (a host name, say).
          results[name] = cameThroughProxy(req) ? 'failing' : errorMessage(err);
        }
      }),
    );
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks: results });
  });
  // For the scraper, which reaches the pod itself: a request a proxy passed on (an ingress's catch-all rule)
  // is not answered.
  app.get('/metrics', { schema: { hide: true } }, async (req, reply) =>
    cameThroughProxy(req)
      ? sendProblem(
          reply,
          problem(404, 'metrics are served to scrapers of this process, not through a proxy'),
        )
      : reply.type(opts.metrics.registry.contentType).send(await opts.metrics.exposition()),
  );

  return { app, addReadinessCheck: (name, check) => checks.set(name, check) };
}

/**
 * How long `max` requests must have stayed in flight before new ones are refused: a burst read off the
 * sockets at once after a busy stretch of the thread is answered within a group commit or two and refused
 * nothing, a standing queue is. The real-time path at 2,000 writes/s (sustained, p99 < 100 ms) had 0-152 of
 * 16,000 writes refused in five runs with 25 ms, 0-21 in three with 50 ms; at 2x with every target the
 * accepted writes' e2e p99 was 220-291 ms with 25, 300-347 ms with 50 (docs/benchmarks.md).
 */
const IN_FLIGHT_STANDING_MS = 50;

/**
 * The path admission control decides by: the route the router matched (`/api/tasks/:id`), else (no route) the
 * percent-decoded path. The raw URL let `/%61pi/tasks`, which the router takes for /api/tasks, past every
 * check.
 */
const admissionPath = (req: FastifyRequest): string => {
  if (req.routeOptions.url) return req.routeOptions.url;
  const path = req.url.split('?')[0]!;
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
};

/** The requests admission control may refuse: the API's. Health, metrics, WebSockets and Dapr never. */
const sheddable = (path: string) => path.startsWith('/api/') || path === '/mcp';

/** Routes whose requests last as long as a language model or a download takes: not counted in flight. */
const LONG_LIVED = /^\/api\/(?:[^/?]+\/)?chat(?:[/?]|$)|^\/api\/audit\/export(?:[/?]|$)/;

/**
 * Admission control by the requests being served (`InFlightLimit`): while `max` API requests (`/api/...`,
 * `/mcp`) or more have been in flight for IN_FLIGHT_STANDING_MS, a new one is refused at once with a 503
 * problem+json and `Retry-After: 1`, before its body is read or its token checked. At 2x the sustainable
 * rate of `taskflow up` on Kafka the accepted writes' e2e p99 stayed at 0.25-0.35 s instead of growing to
 * seconds (docs/benchmarks.md), and nothing is refused below capacity.
 *
 * A request takes its slot once it is ready for its handler (body read, token checked: a client that never
 * sends the body it announced holds none) and frees it when its response closes or its connection does,
 * whichever comes first (pipelined requests behind a reset connection never see their response close).
 * Not counted: chat turns and audit exports (seconds each; the event-loop check still covers them),
 * WebSocket upgrades, and the requests the process makes to itself (`inject`, MCP tools over the REST
 * routes), which would otherwise take a second slot for one call.
 */
function limitInFlight(app: FastifyInstance, max: number, metrics: Metrics): void {
  const limit = new InFlightLimit(max, IN_FLIGHT_STANDING_MS);
  metrics.countInFlight(() => limit.count);
  const counted = new WeakSet<FastifyRequest>();
  app.addHook('onRequest', async (req) => {
    const path = admissionPath(req);
    if (!sheddable(path) || LONG_LIVED.test(path) || req.headers.upgrade) return;
    if (!(req.raw.socket instanceof Socket)) return; // inject: the outer request holds the slot
    if (!limit.admits(performance.now()))
      throw new OverloadedError(
        `the server is serving ${max} requests already (MAX_REQUESTS_IN_FLIGHT); retry shortly`,
      );
    counted.add(req);
  });
  app.addHook('preHandler', async (req, reply) => {
    if (!counted.delete(req)) return;
    limit.enter(performance.now());
    const socket = req.raw.socket;
    let freed = false;
    const free = () => {
      if (freed) return;
      freed = true;
      reply.raw.off('close', free);
      socket.off('close', free);
      limit.leave();
    };
    reply.raw.once('close', free);
    socket.once('close', free);
  });
}

/** Sampled this often: how soon a lagging loop starts refusing, and stops once it caught up. */
const PRESSURE_SAMPLE_MS = 250;
/**
 * Nothing is refused this long after the server is ready: starting lags the loop (modules compiled, PGlite's
 * first statements, consumers catching up), and refusing the first requests of a process that has just said
 * it is ready would be wrong. Measured: `npm start` on a new data directory refused 1-4 of the requests sent
 * 50 ms apart in the first half second without it.
 */
const PRESSURE_GRACE_MS = 3_000;

/** A route path (`/api/tasks/:id`) as regular-expression source: literal text, each `:name` one segment. */
export const routePattern = (route: string): string =>
  route.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/:\w+/g, '[^/]+');

/**
 * A header parameter's quoted-string (RFC 9110 section 5.6.4): `"` and `\` escaped, control characters dropped
 * (an error's text may quote what the client sent).
 */
export const quotedString = (text: string): string =>
  // eslint-disable-next-line no-control-regex
  `"${text.replace(/[\x00-\x08\x0a-\x1f\x7f]/g, '').replace(/["\\]/g, '\\$&')}"`;

/**
 * The 503's detail while the event loop lags. The delay is Infinity (no sample in the last interval) while a
 * long task still holds the loop: that is said in words, not as "Infinity ms".
 */
export const behindDetail = (delayMs: number | undefined, maxDelayMs: number): string =>
  `the server is behind (event loop delay ${delayMs !== undefined && Number.isFinite(delayMs) ? `${delayText(delayMs, maxDelayMs)} ms` : 'over a sample'} > ${maxDelayMs} ms); retry shortly`;

/** A delay just over the bound keeps a decimal: 25.4 rounded read "25 ms > 25 ms". */
const delayText = (delayMs: number, maxDelayMs: number) =>
  Math.round(delayMs) > maxDelayMs ? String(Math.round(delayMs)) : delayMs.toFixed(1);

/**
 * Admission control by the event loop (`@fastify/under-pressure`): while its delay, averaged over the last
 * sample, exceeds `maxDelayMs`, new API requests (`/api/...`, `/mcp`) are refused at once with a 503
 * problem+json and `Retry-After: 1`, which costs far less than serving them. Refusing them early keeps the
 * accepted writes' latency bounded and leaves the loop to what must not starve: the relay, the consumers,
 * WebSocket fan-out, Dapr deliveries, health and metrics, which are never refused. Group commit's queue age
 * (CREATE_QUEUE_MAX_MS) covers a database that is behind; this covers a process that is (2x its sustainable
 * rate measured in docs/benchmarks.md).
 */
async function shedWhenBehind(app: FastifyInstance, maxDelayMs: number): Promise<void> {
  const { default: underPressure } = await import('@fastify/under-pressure');
  let armedAt = Infinity;
  const busy = new ProcessBusy(PRESSURE_SAMPLE_MS);
  const busyToShed = BUSY_TO_SHED * cpuQuota();
  app.addHook('onReady', async () => {
    armedAt = performance.now() + PRESSURE_GRACE_MS;
    busy.start();
  });
  app.addHook('onClose', async () => busy.stop());
  await app.register(underPressure, {
    maxEventLoopDelay: maxDelayMs,
    sampleInterval: PRESSURE_SAMPLE_MS,
    pressureHandler: (req: FastifyRequest, _reply: FastifyReply, _type: string, value?: number) =>
      sheddable(admissionPath(req)) && performance.now() >= armedAt && busy.fraction >= busyToShed
        ? Promise.reject(new OverloadedError(behindDetail(value, maxDelayMs)))
        : undefined,
  });
}

/**
 * The share of one core the process must have used over the last sample for a lagging loop to refuse
 * requests. A loop lags also when the machine is busy with other processes and this one waits for a core:
 * refusing then frees nothing here, and refused a lone client sending one request at a time (seen at load
 * 3 on 2 cores). A process that is itself behind runs its thread flat out (about 1.0).
 */
const BUSY_TO_SHED = 0.5;

/**
 * The cores the process may use (cgroup v2 `cpu.max`: a container's CPU limit), at most 1 (one thread serves);
 * 1 without a limit. Under a limit of 0.3 cores a process flat out uses 0.3: the share that counts as busy
 * is BUSY_TO_SHED of this, or a limited pod never refused anything.
 */
export function cpuQuota(read: (path: string) => string = (path) => readFileSync(path, 'utf8')): number {
  try {
    const [quota, period] = read('/sys/fs/cgroup/cpu.max').trim().split(/\s+/);
    const cores = Number(quota) / Number(period);
    return quota !== 'max' && Number.isFinite(cores) && cores > 0 ? Math.min(1, cores) : 1;
  } catch {
    return 1;
  }
}

/** How much CPU (of one core) the process used over the last interval, sampled on a timer. */
class ProcessBusy {
  fraction = 0;
  private timer: NodeJS.Timeout | undefined;
  private last = { cpu: process.cpuUsage(), at: performance.now() };
  constructor(private readonly intervalMs: number) {}

  start(): void {
    this.last = { cpu: process.cpuUsage(), at: performance.now() };
    this.timer ??= setInterval(() => {
      const now = { cpu: process.cpuUsage(), at: performance.now() };
      const usedMs = (now.cpu.user - this.last.cpu.user + now.cpu.system - this.last.cpu.system) / 1_000;
      this.fraction = usedMs / Math.max(1, now.at - this.last.at);
      this.last = now;
    }, this.intervalMs).unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** How deep a JSON body may nest (a task, an MCP call or a chat turn is under ten levels). */
export const MAX_JSON_DEPTH = 64;
/** Bodies up to this many characters are parsed without the scan. */
const DEPTH_SCAN_FROM = 8 * 1024;

/** The deepest nesting of arrays and objects in a JSON text, outside strings; stops once past `stopAbove`. */
export function nestingDepth(text: string, stopAbove = Infinity): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // a backslash: the next character is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > deepest && (deepest = depth) > stopAbove) return deepest;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return deepest;
}
