/**
 * What every route's OpenAPI description shares: the problem+json error shape, the error answers any
 * operation can give (declared once, by `withErrorAnswers`), and the success answers routes declare.
 * Documentation only: requests are validated by the domain (server.ts turns Fastify's validator off).
 */
import { MAX_SUBJECT_LENGTH } from '../auth.ts';

/** An instant, and a time zone: documented with the task fields that take them. */
export { instantDoc, timeZoneDoc } from '../domain/task-fields.ts';

/** A path's user (`/api/{user_id}/...`): the token's subject, as long as the verifier takes one. */
export const userIdParam = {
  type: 'string',
  minLength: 1,
  maxLength: MAX_SUBJECT_LENGTH,
  description: "the token's subject (sub); another user's is refused (403)",
} as const;

export const problemDoc = {
  type: 'object',
  description: 'RFC 9457 problem details (application/problem+json)',
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    detail: { type: 'string' },
    errors: {
      type: 'array',
      items: { type: 'object', properties: { field: { type: 'string' }, message: { type: 'string' } } },
    },
  },
} as const;

/**
 * Marks a response header the answer always carries (`{ type, description, [REQUIRED_HEADER]: true }`):
 * @fastify/swagger copies a header's fields into its schema, so `finishDocument` moves it to `required`.
 */
export const REQUIRED_HEADER = 'x-required';

/** A response header: its value's schema and, in `description`, what it holds and what a client does with it. */
export interface HeaderDoc {
  type: string;
  description: string;
  [keyword: string]: unknown;
}

/**
 * An answer of a route's `response` with the headers it sends. They belong to the answer, not to its body
 * schema: a body schema is shared (a task is also an array's items), and @fastify/swagger reads `headers` only
 * at the answer's level.
 */
export const withHeaders = <A extends object>(answer: A, headers: Record<string, HeaderDoc>) => ({
  ...answer,
  headers,
});

const retryAfterDoc: HeaderDoc = {
  type: 'string',
  description:
    'Seconds to wait (or, from a language model provider, an HTTP date) before sending the request again',
};

/**
 * The headers of error answers, by status: a refused token says why, the rate limit and every 503 say when to
 * try again.
 */
const ERROR_HEADERS: Record<number, Record<string, HeaderDoc>> = {
  401: {
    'WWW-Authenticate': {
      type: 'string',
      description:
        'Bearer, with why the token was refused (RFC 6750): get a new token and send the request again',
    },
  },
  429: { 'Retry-After': retryAfterDoc },
  503: { 'Retry-After': retryAfterDoc },
};

/** A problem+json answer in the document, with the headers of its status. */
const problemAnswer = (code: number, description: string) => ({
  description,
  ...(ERROR_HEADERS[code] ? { headers: ERROR_HEADERS[code] } : {}),
  content: { 'application/problem+json': { schema: problemDoc } },
});

/** Why each error status is answered, where a route does not say more. */
const ERROR_REASONS: Record<number, string> = {
  400: 'Invalid request: problem+json naming each invalid field',
  401: 'Missing, invalid or expired bearer token',
  403: "The user in the path is not the token's user",
  404: 'No such resource for this user',
  409: "Conflicts with the resource's state",
  412: 'If-Match does not name the current version',
  413: 'Body larger than the limit',
  415: 'Body is not application/json',
  422: 'Idempotency-Key reused with another body, or fields valid each but impossible together (a repeat rule with no repeat after the due date)',
  429: 'Over the rate limit; Retry-After says when to try again',
  503: 'Unavailable (shutting down, overloaded or a dependency down); Retry-After says when to try again',
};

interface DocumentedRoute {
  schema?: { hide?: boolean; response?: unknown };
  url: string;
  route: { method: string | string[] };
}

/**
 * @fastify/swagger `transform`: the error answers every operation can give, declared once for the whole API
 * as problem+json (the framework's own ones included: a bad token, the rate limit, a body too large or not
 * JSON, a server shutting down), so each route declares only its success and its own conflicts.
 */
export function withErrorAnswers({ schema, url, route }: DocumentedRoute) {
  if (!schema || schema.hide) return { schema: schema ?? {}, url };
  const methods = [route.method].flat();
  const response: Record<string, unknown> = {};
  for (const [code, s] of Object.entries((schema.response ?? {}) as Record<string, unknown>))
    response[code] =
      Number(code) >= 400 ? problemAnswer(Number(code), ERROR_REASONS[Number(code)] ?? 'Error') : s;
  const add = (code: number) => (response[code] ??= problemAnswer(code, ERROR_REASONS[code]!));
  add(400);
  add(401);
  if (url.includes(':')) add(404);
  if (url.includes(':user_id')) add(403);
  if (methods.some((m) => m === 'POST' || m === 'PUT' || m === 'PATCH')) {
    add(413);
    add(415);
  }
  add(429);
  add(503);
  return { schema: { ...schema, response }, url };
}

/**
 * A 200 answer with its body's schema (documentation and schemathesis's conformance check; not a filter), and
 * the headers it sends.
 */
export const okWith = (description: string, schema: object, headers?: Record<string, HeaderDoc>) => ({
  200: headers ? withHeaders({ description, ...schema }, headers) : { description, ...schema },
});
/** A 201 answer with its body's schema (see okWith). */
export const createdWith = (description: string, schema: object) => ({ 201: { description, ...schema } });
export const noContent = (description: string) => ({ 204: { description, type: 'null' } });

/** Marks a route whose body may be left out (the framework's document says every declared body is required). */
export const BODY_OPTIONAL = 'x-body-optional';
/**
 * A route's OpenAPI links (which operations can use what an answer returns), by status code:
 * `{ 201: { GetTask: { path: '/api/tasks/{id}', method: 'get', parameters: { id: '$response.body#/id' } } } }`.
 */
export const LINKS = 'x-links';

export type RouteLinks = Record<
  number,
  Record<string, { path: string; method: string; parameters: Record<string, string> }>
>;

type Operation = {
  requestBody?: { required?: boolean };
  responses?: Record<
    string,
    { links?: unknown; headers?: Record<string, { required?: boolean; schema?: Record<string, unknown> }> }
  >;
  [key: string]: unknown;
};

/**
 * @fastify/swagger `transformObject`: what its route schemas cannot say. `requestBody.required` false on the
 * routes marked BODY_OPTIONAL, `required` on the response headers marked REQUIRED_HEADER, and each route's
 * LINKS as `links` of its answers (by operationRef).
 */
export function finishDocument(document: { openapiObject: object } | { swaggerObject: object }) {
  const spec = ('openapiObject' in document ? document.openapiObject : document.swaggerObject) as {
    paths?: Record<string, Record<string, Operation>>;
  };
  for (const operations of Object.values(spec.paths ?? {}))
    for (const op of Object.values(operations)) {
      if (!op || typeof op !== 'object') continue;
      if (BODY_OPTIONAL in op) {
        delete op[BODY_OPTIONAL];
        if (op.requestBody) op.requestBody.required = false;
      }
      for (const answer of Object.values(op.responses ?? {}))
        for (const header of Object.values(answer.headers ?? {}))
          if (header.schema && REQUIRED_HEADER in header.schema) {
            delete header.schema[REQUIRED_HEADER];
            header.required = true;
          }
      const links = op[LINKS] as RouteLinks | undefined;
      if (links) {
        delete op[LINKS];
        for (const [status, named] of Object.entries(links)) {
          const answer = op.responses?.[status];
          if (!answer) continue;
          answer.links = Object.fromEntries(
            Object.entries(named).map(([name, l]) => [
              name,
              {
                operationRef: `#/paths/${l.path.replaceAll('~', '~0').replaceAll('/', '~1')}/${l.method}`,
                parameters: l.parameters,
              },
            ]),
          );
        }
      }
    }
  return spec;
}
