/**
 * The chat endpoint in tests: the `api` target on a fresh database, talking to the fake model
 * (openai-server.ts), and a streamed message's server-sent events.
 */
import { after, before } from 'node:test';
import type { Db } from '../../src/store/db.ts';
import { startApp, type TestApp } from './app.ts';
import type { Backend } from './db.ts';
import { startFakeModel, type FakeModel } from './openai-server.ts';

/**
 * The `api` target on a fresh database of `backend` with the chat pointed at a fake model (5 s timeout, 3 tool
 * calls a message; `env` adds or overrides), started before the suite's tests and stopped after them.
 */
export function useChatApp(backend: Backend, env: Record<string, string> = {}) {
  const t = {} as { db: Db; model: FakeModel; app: TestApp };
  let drop: (() => Promise<void>) | undefined;
  before(async () => {
    t.model = await startFakeModel();
    ({ db: t.db, drop } = await backend.fresh());
    t.app = await startApp(t.db, {
      targets: ['api'],
      env: {
        CHAT_BASE_URL: t.model.url,
        CHAT_MODEL: 'm',
        CHAT_TIMEOUT_MS: '5000',
        CHAT_MAX_TOOL_CALLS: '3',
        ...env,
      },
    });
  });
  after(async () => {
    await t.app?.stop();
    await t.model?.close();
    await drop?.();
  });
  return t;
}

/** POST /api/chat with Accept: text/event-stream: the response and its events, in order. */
export async function chatStream(
  app: TestApp,
  user: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ res: Response; events: { event: string; data: any }[] }> {
  const res = await fetch(`${app.url}/api/chat`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${await app.token(user)}`,
      'content-type': 'application/json',
      accept: 'text/event-stream',
      ...headers,
    },
    body: JSON.stringify(body),
  });
  const events = (await res.text())
    .split('\n\n')
    .filter(Boolean)
    .map((frame) => ({
      event: /^event: (.+)$/m.exec(frame)?.[1] ?? 'message',
      data: JSON.parse(/^data: (.+)$/m.exec(frame)?.[1] ?? 'null'),
    }));
  return { res, events };
}
