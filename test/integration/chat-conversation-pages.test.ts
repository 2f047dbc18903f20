/**
 * GET /api/chat/conversations/{id} answers a page of the messages, the last by default, on PGlite and
 * PostgreSQL: a conversation of 250+ messages with tool-call turns (one begun through the chat and the fake model,
 * the rest appended as the chat stores turns) paged backwards gives each message once, in order, whatever the
 * limit, and while new messages arrive; no page begins with a tool answer (its call is on the page); the limit is
 * bounded (default 100, at most 500); a bad limit or cursor, a cursor of another conversation, a parameter given
 * twice or unknown is a 400 naming it; another user's conversation is not found. Before, every message was
 * answered at once, however many.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChatStore, type ChatMessage } from '../../src/store/chat.ts';
import { useChatApp } from '../helpers/chat.ts';
import { backends } from '../helpers/db.ts';

interface Page {
  messages: ChatMessage[];
  next_cursor: string | null;
}

/** A turn of the user's message `n`: a plain reply, or `calls` tool calls (in one assistant message) then a reply. */
function turn(n: number, calls: number): ChatMessage[] {
  const asked = Array.from({ length: calls }, (_, i) => ({
    id: `call-${n}-${i}`,
    type: 'function' as const,
    function: { name: 'list_tasks', arguments: '{}' },
  }));
  return [
    { role: 'user', content: `message ${n}` },
    ...(calls
      ? [
          { role: 'assistant' as const, content: null, tool_calls: asked },
          ...asked.map((c) => ({ role: 'tool' as const, content: `answer to ${c.id}`, tool_call_id: c.id })),
        ]
      : []),
    { role: 'assistant', content: `reply ${n}` },
  ];
}

for (const backend of backends)
  describe(`chat: a conversation read back in pages (${backend.name})`, () => {
    const t = useChatApp(backend);

    const get = (user: string, id: string, query = '') =>
      t.app.call(user, 'GET', `/api/chat/conversations/${id}${query}`);

    /** Every message of the conversation, oldest first, as the database holds them. */
    const stored = async (id: string) =>
      new ChatStore(t.db).messages(id).then((all) => all.map((m) => JSON.stringify(m)));

    /** A conversation begun through the chat (a turn with tool calls), then `turns` appended as the chat does. */
    async function longConversation(user: string, turns: ChatMessage[][]): Promise<string> {
      t.model.script(
        {
          toolCalls: [
            { name: 'add_task', arguments: { title: 'Pay rent' } },
            { name: 'add_task', arguments: { title: 'Buy milk' } },
          ],
        },
        { text: 'Added both.' },
      );
      const first = await t.app.call(user, 'POST', '/api/chat', { message: 'add pay rent and buy milk' });
      assert.equal(first.status, 200, JSON.stringify(first.body));
      const id: string = first.body.conversation_id;
      const store = new ChatStore(t.db);
      for (const messages of turns) await store.append(id, messages);
      return id;
    }

    /** Pages backwards from the last with `limit`, each checked: the pages' messages, oldest first. */
    async function pagedBack(user: string, id: string, limit: number) {
      const read: string[] = [];
      let longest = 0;
      let cursor: string | null = '';
      for (let pages = 0; cursor !== null; pages++) {
        assert.ok(pages < 1_000 && typeof cursor === 'string', `paging ends: cursor ${cursor}`);
        const res = await get(user, id, `?limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`);
        assert.equal(res.status, 200, JSON.stringify(res.body));
        const page = res.body as Page;
        assert.ok(page.messages.length > 0, 'no empty page');
        const [head, ...rest] = page.messages;
        assert.notEqual(head!.role, 'tool', `limit ${limit}: a page begins with a tool answer`);
        // Over the limit only as one assistant message and the answers of its calls.
        if (page.messages.length > limit)
          assert.ok(
            head!.role === 'assistant' && rest.every((m) => m.role === 'tool'),
            `limit ${limit}: a page of ${page.messages.length}`,
          );
        // Each tool answer's call is on its page.
        const called = new Set<string>();
        for (const m of page.messages)
          if (m.role === 'assistant') for (const c of m.tool_calls ?? []) called.add(c.id);
          else if (m.role === 'tool')
            assert.ok(called.has(m.tool_call_id), `${m.tool_call_id} without its call`);
        read.unshift(...page.messages.map((m) => JSON.stringify(m)));
        longest = Math.max(longest, page.messages.length);
        cursor = page.next_cursor;
      }
      return { read, longest };
    }

    it('answers the last 100 messages, and paging back gives each message once, in order, whatever the limit', async () => {
      // 250+ messages: plain turns and turns of 1 to 5 tool calls, and one of 12 calls at once.
      const turns = Array.from({ length: 50 }, (_, n) => turn(n, n === 20 ? 12 : n % 6));
      const id = await longConversation('pam', turns);
      const all = await stored(id);
      assert.ok(all.length >= 250, `${all.length} messages`);

      const last = await get('pam', id);
      assert.equal(last.status, 200, JSON.stringify(last.body));
      assert.equal(last.body.id, id);
      const page = last.body as Page;
      assert.ok(page.messages.length <= 100, `the first page holds ${page.messages.length} messages`);
      assert.ok(page.messages.length >= 100 - 12, `the first page holds ${page.messages.length} messages`);
      assert.deepEqual(
        page.messages.map((m) => JSON.stringify(m)),
        all.slice(-page.messages.length),
        'the last messages, oldest first',
      );
      assert.equal(typeof page.next_cursor, 'string');

      for (const limit of [1, 2, 5, 7, 100, 500]) {
        const { read, longest } = await pagedBack('pam', id, limit);
        assert.deepEqual(read, all, `limit ${limit}`);
        // Under 13, the message of 12 calls is a page with its answers (more than the limit, its calls whole).
        if (limit < 13) assert.equal(longest, 13, `limit ${limit}: the longest page`);
      }
      // The whole of a conversation that fits in one page: no cursor.
      const whole = await get('pam', id, '?limit=500');
      assert.equal(whole.body.messages.length, all.length);
      assert.equal(whole.body.next_cursor, null);
    });

    it('goes on from its cursor while new messages arrive: none read twice or missed', async () => {
      const id = await longConversation(
        'ray',
        Array.from({ length: 30 }, (_, n) => turn(n, n % 3)),
      );
      const before = await stored(id);
      const newest = await get('ray', id, '?limit=20');
      const read = (newest.body as Page).messages.map((m) => JSON.stringify(m));
      let cursor: string | null = newest.body.next_cursor;
      // The user talks on in another tab meanwhile.
      await new ChatStore(t.db).append(id, turn(99, 2));
      for (let pages = 0; cursor !== null; pages++) {
        assert.ok(pages < 100 && typeof cursor === 'string', `paging ends: cursor ${cursor}`);
        const res = await get('ray', id, `?limit=20&cursor=${cursor}`);
        assert.equal(res.status, 200, JSON.stringify(res.body));
        read.unshift(...(res.body as Page).messages.map((m) => JSON.stringify(m)));
        cursor = res.body.next_cursor;
      }
      assert.deepEqual(read, before);
      // The next read from the last page has them.
      const again = (await get('ray', id, '?limit=4')).body as Page;
      assert.deepEqual(
        again.messages.map((m) => m.content),
        [null, 'answer to call-99-0', 'answer to call-99-1', 'reply 99'],
      );
    });

    it('refuses a bad limit or cursor, and a parameter unknown or given twice, naming it (400)', async () => {
      const id = await longConversation(
        'sue',
        Array.from({ length: 5 }, (_, n) => turn(n, 1)),
      );
      const other = await longConversation('sue', [turn(0, 0)]);
      const cursor = (await get('sue', id, '?limit=2')).body.next_cursor as string;
      const otherCursor = (await get('sue', other, '?limit=1')).body.next_cursor as string;
      assert.ok(cursor && otherCursor);
      const forged = (body: unknown) => Buffer.from(JSON.stringify(body)).toString('base64url');
      for (const [query, field, message] of [
        ['?limit=0', 'limit', /integer 1-500/],
        ['?limit=501', 'limit', /integer 1-500/],
        ['?limit=abc', 'limit', /integer 1-500/],
        ['?limit=1.5', 'limit', /integer 1-500/],
        ['?limit=-1', 'limit', /integer 1-500/],
        ['?limit=2&limit=3', 'limit', /given once/],
        ['?cursor=nonsense', 'cursor', /not a cursor this API returned/],
        [`?cursor=${forged({ c: id, before: '0' })}`, 'cursor', /not a cursor/],
        [`?cursor=${forged({ c: id, before: '9223372036854775808' })}`, 'cursor', /not a cursor/],
        [`?cursor=${forged({ c: id, before: 12 })}`, 'cursor', /not a cursor/],
        [`?cursor=${otherCursor}`, 'cursor', /another conversation/],
        [`?cursor=${cursor}&cursor=${cursor}`, 'cursor', /given once/],
        ['?before=5', 'before', /unknown query parameter; allowed: limit, cursor/],
        ['?page=2', 'page', /unknown query parameter/],
      ] as const) {
        const res = await get('sue', id, query);
        assert.equal(res.status, 400, `${query}: ${JSON.stringify(res.body)}`);
        assert.match(res.headers.get('content-type') ?? '', /application\/problem\+json/);
        assert.equal(res.body.errors[0].field, field, query);
        assert.match(res.body.errors[0].message, message, query);
      }
      // The bounds themselves, an empty cursor (the first page), and the cursor with the id in capitals.
      assert.equal((await get('sue', id, '?limit=1')).body.messages.length, 1);
      assert.equal((await get('sue', id, '?limit=500')).status, 200);
      assert.equal((await get('sue', id, '?cursor=')).body.next_cursor, null);
      const upper = await get('sue', id.toUpperCase(), `?limit=2&cursor=${cursor}`);
      assert.equal(upper.status, 200, JSON.stringify(upper.body));
    });

    it("answers another user's conversation not found, with or without a cursor (404)", async () => {
      const id = await longConversation(
        'tia',
        Array.from({ length: 5 }, (_, n) => turn(n, 2)),
      );
      const cursor = (await get('tia', id, '?limit=3')).body.next_cursor as string;
      assert.ok(cursor);
      for (const query of ['', '?limit=3', `?limit=3&cursor=${cursor}`]) {
        const res = await get('uma', id, query);
        assert.equal(res.status, 404, `${query}: ${JSON.stringify(res.body)}`);
        assert.doesNotMatch(JSON.stringify(res.body), /Pay rent|message \d/);
      }
      assert.equal((await get('tia', id, `?limit=3&cursor=${cursor}`)).status, 200);
    });
  });
