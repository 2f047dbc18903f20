/**
 * The chat endpoint with a short history window (CHAT_HISTORY_MESSAGES), against the fake model
 * (test/helpers/openai-server.ts): a message whose turn alone has more messages than the window (a model that
 * asks for many tool calls at once) is still the history of the next one, as its words.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { useChatApp } from '../helpers/chat.ts';
import { backends } from '../helpers/db.ts';

for (const backend of backends)
  describe(`chat: a turn longer than the history window (CHAT_HISTORY_MESSAGES, ${backend.name})`, () => {
    const t = useChatApp(backend, { CHAT_HISTORY_MESSAGES: '6' });

    it('sends the next message that turn as its words (the message and the reply), not no history at all', async () => {
      t.model.script({ text: 'Hello.' });
      const hello = await t.app.call('bulk', 'POST', '/api/chat', { message: 'hi' });
      assert.equal(hello.status, 200, JSON.stringify(hello.body));
      const id = hello.body.conversation_id;
      // Five calls at once, three run (CHAT_MAX_TOOL_CALLS): user, assistant, 5 tool answers, reply = 8 messages.
      t.model.script(
        {
          toolCalls: Array.from({ length: 5 }, (_, i) => ({
            name: 'get_context',
            arguments: {},
            id: `c${i}`,
          })),
        },
        { text: 'I did 3 of the 5; ask me to go on.' },
      );
      const bulk = await t.app.call('bulk', 'POST', '/api/chat', {
        conversation_id: id,
        message: 'do all five',
      });
      assert.equal(bulk.status, 200, JSON.stringify(bulk.body));
      t.model.script({ text: 'Going on.' });
      const next = await t.app.call('bulk', 'POST', '/api/chat', { conversation_id: id, message: 'go on' });
      assert.equal(next.status, 200, JSON.stringify(next.body));
      const sent = t.model.requests.at(-1).messages.filter((m: any) => m.role !== 'system');
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
