/**
 * The Task API over HTTP: canonical routes under /api/tasks, and the Phase II/III compatibility routes under
 * /api/{user_id}/tasks as thin aliases of the same handlers. The user is always the token's subject.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Verifier } from '../../auth.ts';
import { authenticatedScope, eventMeta } from '../../http/authenticated.ts';
import { ValidationError } from '../../domain/errors.ts';
import { idempotencyKeyHeader, parseIdempotencyKey, requestHash } from '../../domain/idempotency.ts';
import { bodyJsonSchema, unknownParameters } from '../../domain/fields.ts';
import { COMPLETION_FIELDS, fromCompatQuery, parseCompletionBody } from '../../domain/query.ts';
import { complete, reopen, toggle, validateSettings } from '../../domain/task.ts';
import type { EventMeta, TaskStore } from '../../store/tasks.ts';
import type { UserSettingsStore } from '../../store/user-settings.ts';
import type { TaskChange, TaskOperations } from './task-operations.ts';
import { problem, sendProblem } from '../../http/problem.ts';
import {
  etag,
  etagHeaderDoc,
  ifMatchHeaderDoc,
  ifNoneMatchHeaderDoc,
  noneMatchHits,
  parseIfMatch,
} from '../../http/task-version.ts';
import {
  BODY_OPTIONAL,
  LINKS,
  REQUIRED_HEADER,
  noContent,
  okWith,
  problemDoc,
  userIdParam,
  withHeaders,
  type RouteLinks,
} from '../../http/openapi.ts';
import {
  compatListQueryDoc,
  listQueryDoc,
  settingsInputDoc,
  taskCreateDoc,
  countsDoc,
  taskPatchDoc,
} from './openapi.ts';
import { changedAnswer, taskCreatedDoc, taskDoc } from '../../http/task-answers.ts';

export interface ApiDeps {
  /** The task operations REST and MCP share. */
  tasks: TaskOperations;
  /** The board's counts. */
  store: TaskStore;
  settings: UserSettingsStore;
  verify: Verifier;
  source?: string;
}

const security = [{ bearerAuth: [] }];
const errors = { 400: problemDoc, 401: problemDoc, 404: problemDoc };
/** What a created task's id can be used with at once (the task API's own operations, read-your-writes). */
const createdTaskLinks = (prefix: string, user: Record<string, string>, ops: [string, string, string][]) => ({
  201: Object.fromEntries(
    ops.map(([name, method, suffix]) => [
      name,
      { path: `${prefix}/{id}${suffix}`, method, parameters: { ...user, id: '$response.body#/id' } },
    ]),
  ),
});
const nativeLinks: RouteLinks = createdTaskLinks('/api/tasks', {}, [
  ['GetTask', 'get', ''],
  ['UpdateTask', 'patch', ''],
  ['DeleteTask', 'delete', ''],
  ['CompleteTask', 'post', '/complete'],
  ['ReopenTask', 'post', '/reopen'],
]);
const compatLinks: RouteLinks = createdTaskLinks(
  '/api/{user_id}/tasks',
  { user_id: '$request.path.user_id' },
  [
    ['GetTask', 'get', ''],
    ['ReplaceTask', 'put', ''],
    ['DeleteTask', 'delete', ''],
    ['SetCompletion', 'patch', '/complete'],
  ],
);
const idParam = { type: 'object', properties: { id: { type: 'string', format: 'uuid' } } } as const;
const userParam = { type: 'object', properties: { user_id: userIdParam } } as const;
const userTaskParams = {
  type: 'object',
  properties: { user_id: userIdParam, id: { type: 'string', format: 'uuid' } },
} as const;
const idempotencyHeaderDoc = idempotencyKeyHeader(
  'Makes a retried create safe: the same key and body within 24 hours answers the first task (header Idempotent-Replayed: true) and creates nothing; the same key with another body answers 422, and 409 once that task is deleted',
);
/** A task as `get` answers it, and as a change answers it (`sendChange`): with its version as the ETag. */
const taskAnswer = withHeaders({ ...taskDoc, description: 'The task' }, { ETag: etagHeaderDoc });
/** A create's answer (`create` below): the task, where it lives, and whether a retry was answered. */
const createdAnswer = withHeaders(
  { ...taskCreatedDoc, description: 'The task created, with its reminder plan' },
  {
    Location: {
      type: 'string',
      format: 'uri-reference',
      description: "The task's URL (/api/tasks/{id}, on either create route): where to read or change it",
      [REQUIRED_HEADER]: true,
    },
    // Not on a replay: the first answer's version may be stale by then.
    ETag: {
      type: etagHeaderDoc.type,
      pattern: etagHeaderDoc.pattern,
      description: `${etagHeaderDoc.description}; absent on a replay (Idempotent-Replayed), whose task may have changed since`,
    },
    'Idempotent-Replayed': {
      type: 'string',
      enum: ['true'],
      description:
        'Present when the Idempotency-Key was seen before: the task is the one the first request created, and nothing was created now',
    },
  },
);
/** A read answered 304: the client's copy (its If-None-Match) is current. */
const NOT_MODIFIED = { type: 'null', description: 'Not modified: the ETag sent is current' } as const;

/** The compatibility list's answer (`compatList` below): the next page is named in headers, not the body. */
const compatPageAnswer = withHeaders(
  { type: 'array', items: taskDoc, description: 'A page of tasks' },
  {
    'X-Next-Cursor': {
      type: 'string',
      description: "The next page's cursor, absent on the last page: send it back as cursor=",
    },
    Link: {
      type: 'string',
      description: 'The next page\'s URL as an RFC 8288 link (<...>; rel="next"), absent on the last page',
    },
  },
);
const pageDoc = {
  type: 'object',
  properties: { items: { type: 'array', items: taskDoc }, next_cursor: { type: ['string', 'null'] } },
} as const;

/** A user's settings as GET and PUT /api/me/settings answer them. */
const settingsDoc = {
  type: 'object',
  required: ['user_id', 'timezone', 'default_reminders'],
  properties: {
    user_id: { type: 'string' },
    timezone: { type: 'string', description: 'IANA time zone' },
    default_reminders: {
      type: 'array',
      items: { type: 'string' },
      description: 'reminder offsets (ISO 8601 durations) of tasks that name none',
    },
  },
} as const;

export async function registerTaskApi(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  const { tasks, store, settings } = deps;
  const source = deps.source ?? '/taskflow/api';

  const meta = (req: FastifyRequest): EventMeta => eventMeta(req, source);

  await authenticatedScope(app, deps, async (api, userOf) => {
    // Compatibility routes: the path's user must be the token's subject.
    api.addHook('preHandler', async (req, reply) => {
      const params = req.params as { user_id?: string } | undefined;
      if (params?.user_id !== undefined && params.user_id !== userOf(req))
        return sendProblem(reply, problem(403, 'the user in the path is not the authenticated user'));
    });

    const create = async (req: FastifyRequest, reply: FastifyReply) => {
      const { task, replayed, reminder_plan } = await tasks.create(userOf(req), req.body, meta(req), {
        idempotency: () => {
          const key = parseIdempotencyKey(req.headers['idempotency-key'], 'Idempotency-Key');
          return key ? { key, requestHash: requestHash(req.body) } : undefined;
        },
      });
      // A replay answers what the first request was answered; the task may have changed since, so no ETag
      // (a stale one made the client's next If-Match a 412): GET the task for its current version.
      if (replayed) reply.header('idempotent-replayed', 'true');
      else reply.header('etag', etag(task));
      return reply
        .code(201)
        .header('location', `/api/tasks/${task.id}`)
        .send({ ...task, reminder_plan });
    };
    const page = (req: FastifyRequest, query: Record<string, unknown>) => tasks.list(userOf(req), query);
    /** A change's answer: the task, with reminder_plan when the change moved its reminders. */
    const sendChange = (reply: FastifyReply, { task, reminder_plan }: TaskChange) =>
      reply.header('etag', etag(task)).send(reminder_plan ? { ...task, reminder_plan } : task);
    const list = (req: FastifyRequest) => page(req, req.query as Record<string, unknown>);
    // Phase II/III clients read the list as a JSON array; the next page's cursor is in the headers.
    const compatList = async (req: FastifyRequest, reply: FastifyReply) => {
      const query = fromCompatQuery(req.query as Record<string, unknown>);
      if (!query.ok) throw new ValidationError(query.issues);
      const { items, next_cursor } = await page(req, query.value);
      if (next_cursor) {
        const next = new URL(req.url, 'http://host');
        next.searchParams.set('cursor', next_cursor);
        reply
          .header('x-next-cursor', next_cursor)
          .header('link', `<${next.pathname}${next.search}>; rel="next"`);
      }
      return reply.send(items);
    };
    const get = async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
      const task = await tasks.get(userOf(req), req.params.id);
      reply.header('etag', etag(task));
      // The client's copy is current: no body to send again (a poll costs a 304).
      if (noneMatchHits(req.headers['if-none-match'], task)) return reply.code(304).send();
      return reply.send(task);
    };
    const patch = async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
      const expected = parseIfMatch(req.headers['if-match']);
      return sendChange(
        reply,
        await tasks.update(userOf(req), req.params.id, req.body, meta(req), { expected }),
      );
    };
    const remove = async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
      const expected = parseIfMatch(req.headers['if-match']);
      await tasks.delete(userOf(req), req.params.id, meta(req), expected);
      return reply.code(204).send();
    };
    /** A state change; `pick` chooses it from the request (the compat route reads its body). */
    const transition =
      (pick: (req: FastifyRequest) => typeof complete) =>
      async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
        const expected = parseIfMatch(req.headers['if-match']);
        return sendChange(
          reply,
          await tasks.transition(userOf(req), req.params.id, pick(req), meta(req), expected),
        );
      };
    // `{"completed": bool}` sets the state (a retried request changes nothing more); no body toggles.
    const completion = (req: FastifyRequest): typeof complete => {
      const completed = parseCompletionBody(req.body);
      if (!completed.ok) throw new ValidationError(completed.issues);
      return completed.value === null ? toggle : completed.value ? complete : reopen;
    };

    const doc = (summary: string, extra: object = {}) => ({
      schema: { tags: ['tasks'], summary, security, ...extra },
    });
    const one = { params: idParam, response: { 200: taskAnswer, ...errors } };
    // A change's answer: with reminder_plan when it moved the reminders; If-Match makes it compare-and-set.
    const changed = {
      ...one,
      headers: ifMatchHeaderDoc,
      response: { ...one.response, 200: changedAnswer, 409: problemDoc, 412: problemDoc },
    };
    // 409: a recurring task's occurrence that cannot change state now (an earlier one reopened, say).

    api.post(
      '/api/tasks',
      doc('Create a task', {
        [LINKS]: nativeLinks,
        body: taskCreateDoc,
        headers: idempotencyHeaderDoc,
        // 422: an Idempotency-Key reused with another body. 503 + Retry-After: admission control
        // (CREATE_QUEUE_MAX_MS) while the database is behind.
        // 409: the key's task was deleted since.
        response: { 201: createdAnswer, ...errors, 409: problemDoc, 422: problemDoc, 503: problemDoc },
      }),
      create,
    );
    api.get(
      '/api/tasks',
      doc('List, filter, search and sort tasks', {
        querystring: listQueryDoc,
        response: { 200: pageDoc, ...errors },
      }),
      list,
    );
    api.get(
      '/api/tasks/counts',
      doc('How many tasks each view of the board holds', {
        response: { 200: countsDoc, ...errors },
      }),
      async (req) => {
        // It takes no filter: `?status=pending` answered the unfiltered counts as if it had applied.
        const unknown = unknownParameters(req.query as Record<string, unknown>, []);
        if (unknown.length) throw new ValidationError(unknown);
        const user = userOf(req);
        return store.counts(user, (await settings.get(user)).timezone);
      },
    );
    api.get(
      '/api/tasks/:id',
      doc('Get a task (If-None-Match: 304 when unchanged)', {
        ...one,
        headers: ifNoneMatchHeaderDoc,
        response: {
          ...one.response,
          304: NOT_MODIFIED,
        },
      }),
      get,
    );
    api.patch(
      '/api/tasks/:id',
      doc('Update fields of a task (If-Match: version)', {
        ...changed,
        body: taskPatchDoc,
        // 422: a repeat rule set that ends before its first repeat after the due date.
        response: { ...changed.response, 422: problemDoc },
      }),
      patch,
    );
    api.delete(
      '/api/tasks/:id',
      doc('Delete a task', {
        params: idParam,
        headers: ifMatchHeaderDoc,
        response: { 204: { type: 'null' }, ...errors, 412: problemDoc },
      }),
      remove,
    );
    api.post(
      '/api/tasks/:id/complete',
      doc('Mark a task completed', changed),
      transition(() => complete),
    );
    api.post(
      '/api/tasks/:id/reopen',
      doc('Reopen a completed task', changed),
      transition(() => reopen),
    );

    const compat = (summary: string, extra: object = {}) => ({
      schema: {
        tags: ['compatibility'],
        summary: `${summary} (Phase II/III route)`,
        security,
        params: userTaskParams,
        ...extra,
      },
    });
    api.get(
      '/api/:user_id/tasks',
      compat(
        'List tasks as a JSON array (next page: X-Next-Cursor and Link headers; search = q, tags = every tag)',
        {
          params: userParam,
          querystring: compatListQueryDoc,
          response: { 200: compatPageAnswer, ...errors },
        },
      ),
      compatList,
    );
    api.post(
      '/api/:user_id/tasks',
      compat('Create a task', {
        [LINKS]: compatLinks,
        params: userParam,
        body: taskCreateDoc,
        headers: idempotencyHeaderDoc,
        response: { 201: createdAnswer, 409: problemDoc, 422: problemDoc, 503: problemDoc },
      }),
      create,
    );
    api.get(
      '/api/:user_id/tasks/:id',
      compat('Get a task (If-None-Match: 304 when unchanged)', {
        headers: ifNoneMatchHeaderDoc,
        response: { 200: taskAnswer, 304: NOT_MODIFIED },
      }),
      get,
    );
    api.put(
      '/api/:user_id/tasks/:id',
      compat('Update a task', {
        body: taskPatchDoc,
        headers: ifMatchHeaderDoc,
        response: { 200: changedAnswer, 409: problemDoc, 412: problemDoc, 422: problemDoc },
      }),
      patch,
    );
    api.delete(
      '/api/:user_id/tasks/:id',
      compat('Delete a task', {
        headers: ifMatchHeaderDoc,
        response: { ...noContent('Deleted'), 412: problemDoc },
      }),
      remove,
    );
    api.patch(
      '/api/:user_id/tasks/:id/complete',
      compat('Set completion with {"completed": true|false}; no body toggles it', {
        [BODY_OPTIONAL]: true,
        body: bodyJsonSchema(COMPLETION_FIELDS, { required: ['completed'] }),
        headers: ifMatchHeaderDoc,
        response: { 200: changedAnswer, 409: problemDoc, 412: problemDoc },
      }),
      transition(completion),
    );

    api.get(
      '/api/me/settings',
      {
        schema: {
          tags: ['settings'],
          summary: 'Your time zone and default reminders',
          security,
          response: okWith('Your settings', settingsDoc),
        },
      },
      async (req) => settings.get(userOf(req)),
    );
    api.put(
      '/api/me/settings',
      {
        schema: {
          tags: ['settings'],
          summary: 'Set your time zone and default reminder offsets',
          security,
          body: settingsInputDoc,
          response: okWith('Your settings now', settingsDoc),
        },
      },
      async (req) => {
        const parsed = validateSettings(req.body);
        if (!parsed.ok) throw new ValidationError(parsed.issues);
        return settings.update(userOf(req), parsed.value);
      },
    );
  });
}
