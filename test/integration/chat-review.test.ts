/**
 * The chat endpoint with a short history window (CHAT_HISTORY_MESSAGES), against the fake model
 * (test/helpers/openai-server.ts): a message whose turn alone has more messages than the window (a model that
 * asks for many tool calls at once) is still the history of the next one, as its words.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Db } from '../../src/store/db.ts';
import { startApp, type TestApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';
import { startFakeModel, type FakeModel } from '../helpers/openai-server.ts';

for (const backend of backends)
  describe(`chat: a turn longer than the history window (CHAT_HISTORY_MESSAGES, ${backend.name})`, () => {
    let db: Db;
    let drop: () => Promise<void>;
    let model: FakeModel;
    let app: TestApp;
    before(async () => {
      model = await startFakeModel();
      ({ db, drop } = await backend.fresh());
      app = await startApp(db, {
        targets: ['api'],
        env: {
          CHAT_BASE_URL: model.url,
          CHAT_MODEL: 'm',
          CHAT_TIMEOUT_MS: '5000',
          CHAT_MAX_TOOL_CALLS: '3',
          CHAT_HISTORY_MESSAGES: '6',
        },
      });
    });
    after(async () => {
      await app?.stop();
      await model?.close();
      await drop?.();
    });

    it('sends the next message that turn as its words (the message and the reply), not no history at all', async () => {
      model.script({ text: 'Hello.' });
      const hello = await app.call('bulk', 'POST', '/api/chat', { message: 'hi' });
      assert.equal(hello.status, 200, JSON.stringify(hello.body));
      const id = hello.body.conversation_id;
      // Five calls at once, three run (CHAT_MAX_TOOL_CALLS): user, assistant, 5 tool answers, reply = 8 messages.
      model.script(
        {
          toolCalls: Array.from({ length: 5 }, (_, i) => ({
            name: 'get_context',
            arguments: {},
            id: `c${i}`,
          })),
        },
        { text: 'I did 3 of the 5; ask me to go on.' },
      );
      const bulk = await app.call('bulk', 'POST', '/api/chat', {
        conversation_id: id,
        message: 'do all five',
      });
      assert.equal(bulk.status, 200, JSON.stringify(bulk.body));
      model.script({ text: 'Going on.' });
      const next = await app.call('bulk', 'POST', '/api/chat', { conversation_id: id, message: 'go on' });
      assert.equal(next.status, 200, JSON.stringify(next.body));
      const sent = model.requests.at(-1).messages.filter((m: any) => m.role !== 'system');
      assert.deepEqual(
        sent.map((m: any) => [m.role, m.content]),
        [
          ['user', 'do all five'],
          ['assistant', 'I did 3 of the 5; ask me to go on.'],
          ['user', 'go on'],
        ],
      );
    });
  });
