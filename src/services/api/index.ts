/** The `api` target: the Task API (REST), its OpenAPI document and docs UI. */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { createVerifier } from '../../auth.ts';
import type { RunningTarget, TargetDefinition } from '../../runtime.ts';
import { TaskStore } from '../../store/tasks.ts';
import { UserSettingsStore } from '../../store/user-settings.ts';
import { registerTaskApi } from './routes.ts';

export const apiTarget: TargetDefinition = {
  name: 'api',
  description: 'Task API: REST under /api, OpenAPI at /openapi.json, docs at /docs',
  async start(rt): Promise<RunningTarget> {
    const { app, addReadinessCheck } = rt.http;
    await app.register(swagger, {
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
    await registerTaskApi(app, {
      store: new TaskStore(rt.db, rt.clock),
      settings: new UserSettingsStore(rt.db, rt.config.defaultTimezone),
      verify: createVerifier(rt.config.jwt),
      rateLimitPerMinute: rt.config.rateLimitPerMinute,
    });
    await app.register(swaggerUi, { routePrefix: '/docs' });
    app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
    addReadinessCheck('database', async () => {
      await rt.db.query('SELECT 1');
    });
    return { stop: async () => undefined };
  },
};
