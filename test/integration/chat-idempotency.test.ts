/**
 * Idempotency-Key on the chat endpoint (POST /api/chat), on PGlite and PostgreSQL, against the fake model
 * (test/helpers/openai-server.ts): a retried message answers the first reply, JSON or streamed, without asking
 * the model again or running its tools again; another body with the key is 422; a retry while the first is
 * answered is 409 with Retry-After; keys are per user; a turn that failed before any write is run again on a
 * retry, one that failed after a write answers the same failure; a client that goes away leaves a keyed turn
 * running, for its retry; a turn whose tool arguments hold what jsonb refuses (NUL) is kept all the same.
 */
import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import { waitFor } from '../helpers/app.ts';
import { chatStream, useChatApp } from '../helpers/chat.ts';
import { backends } from '../helpers/db.ts';

for (const backend of backends)
  describe(`chat: Idempotency-Key (${backend.name})`, () => {
    const t = useChatApp(backend);
    // A test that failed leaves no steps for the next.
    beforeEach(() => t.model.unscript());

    const chat = (user: string, body: unknown, key?: string) =>
      t.app.call(user, 'POST', '/api/chat', body, key === undefined ? {} : { 'idempotency-key': key });
    /** The same, streamed: the response and its events. */
    const streamed = (user: string, body: unknown, key: string) =>
      chatStream(t.app, user, body, { 'idempotency-key': key });
    const titles = async (user: string) =>
      ((await t.app.call(user, 'GET', '/api/tasks')).body.items as { title: string }[]).map((t) => t.title);
    const add = (title: string) => ({ toolCalls: [{ name: 'add_task', arguments: { title } }] });

    it('a chat message retried with its Idempotency-Key adds its task once and answers the same reply', async () => {
      t.model.script(add('Buy milk'), { text: 'Added "Buy milk".' });
      const body = { message: 'add buy milk' };
      const first = await chat('ann', body, 'msg-1');
      assert.equal(first.status, 200, JSON.stringify(first.body));
      assert.equal(first.headers.get('idempotent-replayed'), null);
      const asked = t.model.requests.length;
      const again = await chat('ann', body, 'msg-1');
      assert.equal(again.status, 200, JSON.stringify(again.body));
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.deepEqual(again.body, first.body);
      assert.equal(t.model.requests.length, asked, 'the model is not asked again');
      assert.deepEqual(await titles('ann'), ['Buy milk']);
      // Streamed, the stored answer comes as one piece in the stream's format: its tool calls, the reply, done.
      const { res, events } = await streamed('ann', body, 'msg-1');
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('idempotent-replayed'), 'true');
      assert.deepEqual(
        events.map((e) => e.event),
        ['tool_call', 'token', 'done'],
      );
      assert.deepEqual(events[0]!.data, first.body.tool_calls[0]);
      assert.deepEqual(events[1]!.data, { text: 'Added "Buy milk".' });
      assert.deepEqual(events[2]!.data, first.body);
      // One conversation, with the message once.
      const conversations = (await t.app.call('ann', 'GET', '/api/chat/conversations')).body.items;
      assert.equal(conversations.length, 1);
      const stored = await t.app.call('ann', 'GET', `/api/chat/conversations/${first.body.conversation_id}`);
      assert.equal(stored.body.messages.filter((m: { role: string }) => m.role === 'user').length, 1);
      assert.equal(t.model.requests.length, asked);
    });

    it('refuses the key with another body (422), a malformed key (400), and keeps keys per user', async () => {
      t.model.script({ text: 'Hello.' });
      assert.equal((await chat('ben', { message: 'hi' }, 'k')).status, 200);
      const other = await chat('ben', { message: 'hello' }, 'k');
      assert.equal(other.status, 422, JSON.stringify(other.body));
      assert.match(other.headers.get('content-type') ?? '', /application\/problem\+json/);
      assert.match(other.body.detail, /Idempotency-Key "k" was used .* another body/);
      const bad = await chat('ben', { message: 'hi' }, 'has space');
      assert.equal(bad.status, 400);
      assert.match(JSON.stringify(bad.body), /Idempotency-Key/);
      // Another user's same key and body is their own message.
      t.model.script(add('Cat food'), { text: 'Added.' });
      const cat = await chat('cat', { message: 'hi' }, 'k');
      assert.equal(cat.status, 200, JSON.stringify(cat.body));
      assert.equal(cat.headers.get('idempotent-replayed'), null);
      assert.deepEqual(await titles('cat'), ['Cat food']);
      assert.deepEqual(await titles('ben'), []);
    });

    it('refuses a retry while the first is being answered (409, Retry-After), then answers its reply', async () => {
      t.model.script({ delayMs: 1_000, then: add('Slow') }, { text: 'Added "Slow".' });
      const body = { message: 'add slow' };
      const asked = t.model.requests.length;
      const first = chat('dan', body, 'slow');
      await waitFor(() => t.model.requests.length > asked, 5_000, 'the first turn to ask the model');
      const during = await chat('dan', body, 'slow');
      assert.equal(during.status, 409, JSON.stringify(during.body));
      assert.match(during.headers.get('content-type') ?? '', /application\/problem\+json/);
      assert.ok(Number(during.headers.get('retry-after')) > 0);
      assert.match(during.body.detail, /Idempotency-Key "slow" is being answered/);
      const answered = await first;
      assert.equal(answered.status, 200, JSON.stringify(answered.body));
      const after = await chat('dan', body, 'slow');
      assert.equal(after.status, 200);
      assert.deepEqual(after.body, answered.body);
      assert.deepEqual(await titles('dan'), ['Slow']);
    });

    it('runs a retry of a turn that failed before any write again; answers the failure of one that wrote', async () => {
      // The model failed before any tool ran: nothing changed, so the key is not kept and a retry runs.
      t.model.script({ status: 500 });
      const failed = await chat('eve', { message: 'add tea' }, 'tea');
      assert.equal(failed.status, 502);
      assert.deepEqual(failed.body.tool_calls, []);
      t.model.script(add('Tea'), { text: 'Added "Tea".' });
      const retried = await chat('eve', { message: 'add tea' }, 'tea');
      assert.equal(retried.status, 200, JSON.stringify(retried.body));
      assert.equal(retried.headers.get('idempotent-replayed'), null);
      assert.deepEqual(await titles('eve'), ['Tea']);
      // The model failed after add_task ran: the task stands, and a retry answers that failure again (with the
      // tool call) rather than adding the task a second time.
      t.model.script(add('Coffee'), { status: 500 });
      const wrote = await chat('eve', { message: 'add coffee' }, 'coffee');
      assert.equal(wrote.status, 502);
      assert.equal(wrote.body.tool_calls.length, 1);
      const asked = t.model.requests.length;
      const again = await chat('eve', { message: 'add coffee' }, 'coffee');
      assert.equal(again.status, 502);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.deepEqual(again.body, wrote.body);
      const { events } = await streamed('eve', { message: 'add coffee' }, 'coffee');
      assert.deepEqual(
        events.map((e) => e.event),
        ['tool_call', 'error'],
      );
      assert.deepEqual(events[1]!.data, wrote.body);
      assert.equal(t.model.requests.length, asked);
      assert.deepEqual((await titles('eve')).sort(), ['Coffee', 'Tea']);
    });

    it('answers the failure of a turn whose conversation could not be stored after a write, not running it again', async () => {
      // The database refuses the turn's messages (as a full disk would) after add_task wrote its task.
      await t.db.query(`CREATE FUNCTION refuse_soap() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.content LIKE '%Soap%' THEN RAISE EXCEPTION 'no room for soap'; END IF; RETURN NEW; END $$`);
      await t.db.query(
        'CREATE TRIGGER refuse_soap BEFORE INSERT ON chat_messages FOR EACH ROW EXECUTE FUNCTION refuse_soap()',
      );
      try {
        t.model.script(add('Soap'), { text: 'Added "Soap".' });
        const failed = await chat('hal', { message: 'add soap' }, 'soap');
        assert.equal(failed.status, 500, JSON.stringify(failed.body));
        assert.equal(failed.body.tool_calls?.length, 1, JSON.stringify(failed.body));
        assert.doesNotMatch(
          JSON.stringify(failed.body),
          /no room/,
          'the database error is logged, not answered',
        );
        const asked = t.model.requests.length;
        const again = await chat('hal', { message: 'add soap' }, 'soap');
        assert.equal(again.status, 500, JSON.stringify(again.body));
        assert.equal(again.headers.get('idempotent-replayed'), 'true');
        assert.deepEqual(again.body, failed.body);
        assert.equal(t.model.requests.length, asked, 'the model is not asked again');
        assert.deepEqual(await titles('hal'), ['Soap']);
      } finally {
        await t.db.query('DROP TRIGGER refuse_soap ON chat_messages');
        await t.db.query('DROP FUNCTION refuse_soap()');
      }
    });

    it('keeps the answer of a turn whose refused tool arguments hold a NUL or a lone surrogate: a retry adds nothing', async () => {
      // The second call is refused by the tool, but its arguments are the model's, in the answer kept for the
      // key (jsonb refuses both): the message was answered 400 after the first call wrote, and a retry wrote again.
      for (const [user, title, kept] of [
        ['nul', 'Pay rent\u0000', 'Pay rent\ufffd'],
        ['surrogate', 'Pay rent \ud83d', 'Pay rent \ufffd'],
      ] as const) {
        const step = { toolCalls: [...add('Pay rent').toolCalls, ...add(title).toolCalls] };
        const body = { message: 'add pay rent' };
        t.model.script(step, { text: 'Added "Pay rent".' });
        const first = await chat(user, body, 'rent');
        assert.equal(first.status, 200, JSON.stringify(first.body));
        assert.deepEqual(
          first.body.tool_calls.map((c: { arguments: { title: string }; is_error: boolean }) => [
            c.arguments.title,
            c.is_error,
          ]),
          [
            ['Pay rent', false],
            [kept, true],
          ],
        );
        const again = await chat(user, body, 'rent');
        assert.equal(again.status, 200, JSON.stringify(again.body));
        assert.equal(again.headers.get('idempotent-replayed'), 'true');
        assert.deepEqual(again.body, first.body);
        assert.deepEqual(await titles(user), ['Pay rent'], user);
        const stored = await t.app.call(user, 'GET', `/api/chat/conversations/${first.body.conversation_id}`);
        assert.equal(stored.body.messages.at(-1).content, 'Added "Pay rent".');
      }
    });

    it('keeps a keyed turn running when its client goes away: the retry gets its answer', async () => {
      t.model.script({ delayMs: 800, then: add('Bread') }, { text: 'Added "Bread".' });
      const body = { message: 'add bread' };
      const asked = t.model.requests.length;
      const leaving = new AbortController();
      const gone = fetch(`${t.app.url}/api/chat`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${await t.app.token('fay')}`,
          'content-type': 'application/json',
          'idempotency-key': 'bread',
        },
        body: JSON.stringify(body),
        signal: leaving.signal,
      }).catch(() => null);
      await waitFor(() => t.model.requests.length > asked, 5_000, 'the turn to ask the model');
      leaving.abort();
      await gone;
      const answer = await waitFor(
        async () => {
          const r = await chat('fay', body, 'bread');
          return r.status === 409 ? undefined : r;
        },
        10_000,
        'the first turn to end',
      );
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.headers.get('idempotent-replayed'), 'true');
      assert.equal(answer.body.reply, 'Added "Bread".');
      assert.deepEqual(await titles('fay'), ['Bread']);
    });

    it('stores a streamed answer for a JSON retry', async () => {
      t.model.script(add('Jam'), { text: 'Added "Jam".' });
      const { events } = await streamed('gus', { message: 'add jam' }, 'jam');
      const done = events.at(-1)!;
      assert.equal(done.event, 'done');
      const again = await chat('gus', { message: 'add jam' }, 'jam');
      assert.equal(again.status, 200);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.deepEqual(again.body, done.data);
      assert.deepEqual(await titles('gus'), ['Jam']);
    });
  });
