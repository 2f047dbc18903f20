/** The history a chat message sends its model (usableHistory): whole turns, newest first, within a budget. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { usableHistory } from '../../src/services/api/chat.ts';
import type { ChatMessage } from '../../src/store/chat.ts';

const user = (content: string): ChatMessage => ({ role: 'user', content });
const reply = (content: string): ChatMessage => ({ role: 'assistant', content });
const asks = (id: string): ChatMessage => ({
  role: 'assistant',
  content: null,
  tool_calls: [{ id, type: 'function', function: { name: 'list_tasks', arguments: '{}' } }],
});
const answer = (id: string, content: string): ChatMessage => ({ role: 'tool', content, tool_call_id: id });

describe('usableHistory', () => {
  it('keeps the newest whole turns that fit, dropping the oldest', () => {
    const history = [user('a'.repeat(50)), reply('b'.repeat(50)), user('c'), reply('d')];
    assert.deepEqual(usableHistory(history, 60), [user('c'), reply('d')]);
    assert.deepEqual(usableHistory(history, 1_000), history);
  });

  it('never starts inside a turn: messages before the first user message go', () => {
    assert.deepEqual(usableHistory([answer('x', 'late'), reply('r'), user('u'), reply('v')]), [
      user('u'),
      reply('v'),
    ]);
  });

  it('keeps a newest turn too long alone as its words: the user message and the reply, not the tool exchange', () => {
    const big = [
      user('list everything'),
      asks('c1'),
      answer('c1', 'x'.repeat(5_000)),
      reply('Here they are.'),
    ];
    assert.deepEqual(usableHistory(big, 1_000), [user('list everything'), reply('Here they are.')]);
    // Older turns that still fit come with it.
    assert.deepEqual(usableHistory([user('older'), reply('old'), ...big], 1_000), [
      user('older'),
      reply('old'),
      user('list everything'),
      reply('Here they are.'),
    ]);
  });

  it('sends a tool call whose arguments are not a JSON object with {} (a provider refuses the history otherwise)', () => {
    const called = (args: string): ChatMessage => ({
      role: 'assistant',
      content: null,
      tool_calls: [{ id: 'c1', type: 'function', function: { name: 'add_task', arguments: args } }],
    });
    for (const args of ['{"title": "x", ', '[]', 'null', '', '"x"'])
      assert.deepEqual(usableHistory([user('u'), called(args), answer('c1', 'not JSON')]), [
        user('u'),
        called('{}'),
        answer('c1', 'not JSON'),
      ]);
    const good = [user('u'), called('{"title":"x"}'), answer('c1', 'ok')];
    assert.deepEqual(usableHistory(good), good);
  });

  it('keeps a newest turn the window began inside of as its words: no tool answer without its call', () => {
    // The store's window: the turn's user message, then the last messages (its call is before them).
    const cut = [user('do all five'), answer('c1', '{}'), answer('c2', '{}'), reply('Did two.')];
    assert.deepEqual(usableHistory(cut), [user('do all five'), reply('Did two.')]);
  });

  it('drops a tool call that was never answered (a turn cut off by an error)', () => {
    assert.deepEqual(usableHistory([user('u'), asks('c1')]), [user('u')]);
  });
});
