/** The `api` target: the Task API (REST), its OpenAPI document and docs UI. */
import { readFileSync } from 'node:fs';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { asyncApiDocument } from '../../contracts/asyncapi.ts';
import { apiManifest } from './manifest.ts';
import { TaskOperations } from './task-operations.ts';
import type { RunningTarget, TargetDefinition } from '../../runtime.ts';
import { TaskStore } from '../../store/tasks.ts';
import { UserSettingsStore } from '../../store/user-settings.ts';
import { registerMcp } from './mcp-http.ts';
import { finishDocument, withErrorAnswers } from '../../http/openapi.ts';
import { registerChat } from './chat.ts';
import { reminderPlanner } from '../../store/reminder-plan.ts';
import { registerDevSignIn } from './dev-sign-in.ts';
import { registerTaskApi } from './routes.ts';
import { registerWeb } from './web.ts';

const packageVersion = () =>
  (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string })
    .version;

export const apiTarget: TargetDefinition = {
  name: 'api',
  async start(rt): Promise<RunningTarget> {
    const { app } = rt.http;
    await app.register(swagger, {
      transform: withErrorAnswers,
      transformObject: finishDocument,
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'Taskflow Task API',
          version: '1',
          description:
            'Tasks with priority, tags, due dates, reminders and recurrence. Every change is recorded with its event in one transaction (transactional outbox). Errors are RFC 9457 problem+json.',
        },
        components: {
          securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
        },
      },
    });
    const options = apiManifest.config(rt.config.env);
    const store = new TaskStore(rt.db, rt.clock, { createQueueMaxMs: options.createQueueMaxMs });
    rt.metrics.of(apiManifest).trackCreateQueue(() => store.createQueueAge());
    const settings = new UserSettingsStore(rt.db, rt.config.defaultTimezone);
    const verify = rt.verify;
    // One reminder planner for the answers of REST creates and of MCP add_task (its defaults read shared).
    const planReminders = reminderPlanner(settings, rt.config.reminderGraceMs);
    // The task operations REST and MCP share (task-operations.ts).
    const tasks = new TaskOperations({ store, settings, planReminders });
    await registerTaskApi(app, { tasks, store, settings, verify });
    const mcpDeps = {
      tasks,
      settings,
      clock: rt.clock,
      apiUrl: rt.config.apiUrl,
      log: rt.log.child({ component: 'mcp' }),
    };
    // The chatbot: a language model calling the same MCP tools as the user (chat.ts).
    await registerChat(app, {
      db: rt.db,
      mcp: mcpDeps,
      settings,
      verify,
      chat: options.chat,
      apiUrl: rt.config.apiUrl,
      clock: rt.clock,
      log: rt.log.child({ component: 'chat' }),
    });
    // MCP tools for the AI chatbot (Streamable HTTP, stateless), same store and validation as REST.
    await registerMcp(app, {
      ...mcpDeps,
      verify,
      ...(rt.config.jwt.jwksUrl && rt.config.jwt.issuer
        ? { oauth: { issuer: rt.config.jwt.issuer, publicUrl: rt.config.publicUrl } }
        : {}),
    });
    // The docs page takes a pasted bearer token ("Authorize"): the plugin's CSP with hashes of its own inline
    // scripts, not to be framed by another site (clickjacking), and no upgrade of plain-http requests (a
    // development server on http://localhost would lose its own scripts). Swagger UI sets style attributes,
    // which style hashes would block: inline styles are allowed.
    await app.register(swaggerUi, {
      routePrefix: '/docs',
      staticCSP: true,
      transformStaticCSP: (csp) =>
        csp
          .replace("frame-ancestors 'self'", "frame-ancestors 'none'")
          .replace(/style-src [^;]*;/, "style-src 'self' 'unsafe-inline';")
          .replace(/\s*upgrade-insecure-requests;?/, ''),
      uiHooks: {
        onRequest: async (req, reply) => {
          reply.header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer');
          // The page finds its document at ./json from its whole address, query string included (a link
          // with ?utm_source=... showed no document): the page is sent to its address without one.
          const [path, query] = req.url.split('?', 2);
          if (query !== undefined && (path === '/docs' || path === '/docs/')) return reply.redirect(path);
        },
      },
    });
    app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
    // The event side of the contract, from the same topic table, schemas and subscriptions (AsyncAPI 3.1).
    // As this deployment writes the records: EVENT_ENCODING=avro is Avro in Confluent framing.
    const asyncApi = asyncApiDocument(packageVersion(), rt.catalog, {
      encoding: rt.config.eventEncoding,
      subjectPrefix: rt.config.kafka.topicPrefix,
    });
    app.get('/asyncapi.json', { schema: { hide: true } }, async () => asyncApi);
    await registerWeb(app);
    registerDevSignIn(app, rt.config.jwt);
    return { stop: async () => undefined };
  },
};
