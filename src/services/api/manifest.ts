/** The `api` target: what it is, its CREATE_QUEUE_MAX_MS and CHAT_* settings and its metrics. */
import { Gauge, type Registry } from 'prom-client';
import { int, type Env, TIMER_MAX_MS } from '../../config.ts';
import type { TargetManifest } from '../../runtime.ts';

export const apiManifest = {
  name: 'api',
  routes: [
    '/api/tasks',
    '/api/chat',
    '/api/me',
    '/api/:user_id/tasks',
    '/api/:user_id/chat',
    '/mcp',
    '/openapi.json',
  ],
  description: 'Task API: REST under /api, MCP at /mcp, OpenAPI at /openapi.json, docs at /docs',
  serves: 'HTTP: REST `/api`, MCP `/mcp`, the chat `/api/chat`, `/openapi.json`, the board',
  // Each task event with its task.changed on task-updates, in one statement (ADR 0011).
  produces: [
    'task.created',
    'task.updated',
    'task.completed',
    'task.reopened',
    'task.deleted',
    'task.changed',
  ],
  sources: ['/taskflow/api', '/taskflow/mcp', '/taskflow/chat'],
  owns: ['tasks', 'outbox', 'user settings', 'idempotency keys', 'chat conversations'],
  config: (env: Env) => ({
    /** Admission control of creates: refuse (503) while one has waited this long unwritten; 0 = never. */
    createQueueMaxMs: int(env, 'CREATE_QUEUE_MAX_MS', 500),
    /** The chat endpoint's model (any OpenAI-compatible chat-completions API); null without CHAT_BASE_URL and CHAT_MODEL. */
    chat:
      env.CHAT_BASE_URL && env.CHAT_MODEL
        ? {
            baseUrl: env.CHAT_BASE_URL.replace(/\/+$/, ''),
            apiKey: env.CHAT_API_KEY || 'unused',
            model: env.CHAT_MODEL,
            timeoutMs: int(env, 'CHAT_TIMEOUT_MS', 60_000, 1_000, TIMER_MAX_MS / 2),
            maxToolCalls: int(env, 'CHAT_MAX_TOOL_CALLS', 8, 1),
            historyMessages: int(env, 'CHAT_HISTORY_MESSAGES', 40, 2),
            /** Messages of one user answered at once, over all their conversations (each costs model calls). */
            turnsPerUser: int(env, 'CHAT_TURNS_PER_USER', 2, 1),
          }
        : null,
  }),
  metrics: (registry: Registry) => {
    let ageMs: (() => number) | undefined;
    const createQueueAge = new Gauge({
      name: 'taskflow_create_queue_age_seconds',
      help: 'How long the oldest task create not yet written has waited (admission control refuses new creates past CREATE_QUEUE_MAX_MS)',
      registers: [registry],
      collect() {
        this.set((ageMs?.() ?? 0) / 1000);
      },
    });
    return {
      createQueueAge,
      /** Where the create queue's age comes from (the api target's task store). */
      trackCreateQueue: (source: () => number) => {
        ageMs = source;
      },
    };
  },
} as const satisfies TargetManifest;

export type ApiConfig = ReturnType<typeof apiManifest.config>;
export type ChatConfig = NonNullable<ApiConfig['chat']>;
