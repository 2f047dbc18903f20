/**
 * The chat endpoint against a real HTTP server speaking the OpenAI chat-completions protocol
 * (test/helpers/openai-server.ts), scripted per test: a conversation over several turns that creates a
 * recurring task with a reminder, lists what is due, completes one task and deletes another, checked in the
 * database, on the bus (the events' source) and in the audit trail; the same over server-sent events; a
 * provider timeout, a 429, a 5xx, arguments that are not JSON, an unknown tool and the tool-call bound each
 * give their documented answer; a tool answer over the model's bound is still JSON (a list a shorter page with
 * its next_cursor); another user's conversation is not found; without a model, 503.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp, waitFor, writtenEvents, type TestApp } from '../helpers/app.ts';
import { chatStream } from '../helpers/chat.ts';
import { completion, startFakeModel, type FakeModel, type Step } from '../helpers/openai-server.ts';

/** The server-sent events of a streamed answer, in order. */
async function sse(app: TestApp, user: string, body: unknown) {
  const { res, events } = await chatStream(app, user, body);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  return events;
}

describe('the chat endpoint (POST /api/chat)', () => {
  let db: Db;
  let model: FakeModel;
  let app: TestApp;
  /** The same with the shortest CHAT_TIMEOUT_MS (1 s), for the tests of the timeout: the others, on a loaded
   * machine, took longer than twice that over a few model requests (504). */
  let quick: TestApp;

  before(async () => {
    model = await startFakeModel();
    db = await openDb('memory://');
    await migrate(db);
    const env = (timeoutMs: number) => ({
      CHAT_BASE_URL: model.url,
      CHAT_MODEL: 'fake-model',
      CHAT_API_KEY: 'sk-test',
      CHAT_TIMEOUT_MS: String(timeoutMs),
      CHAT_MAX_TOOL_CALLS: '3',
      DEFAULT_TIMEZONE: 'Europe/Berlin',
    });
    app = await startApp(db, { targets: ['api', 'audit'], env: env(10_000) });
    quick = await startApp(db, { targets: ['api'], env: env(1_000) });
  });
  after(async () => {
    await quick?.stop();
    await app?.stop();
    await model?.close();
    await db?.close();
  });

  it('holds a conversation whose tool calls create, list, complete and delete tasks as the user', async () => {
    // Turn 1: a recurring task with a reminder, in words.
    model.script(
      {
        toolCalls: [
          {
            name: 'add_task',
            arguments: {
              title: 'Pay rent',
              recurrence: 'every month on the 1st',
              reminders: ['1 day before'],
            },
          },
        ],
      },
      { text: 'Added "Pay rent", due on the 1st of every month, with a reminder a day before.' },
    );
    const first = await app.call('alice', 'POST', '/api/chat', {
      message: 'add a task to pay rent every month on the 1st, remind me a day before',
    });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(
      first.body.reply,
      'Added "Pay rent", due on the 1st of every month, with a reminder a day before.',
    );
    assert.equal(first.body.tool_calls.length, 1);
    const added = first.body.tool_calls[0];
    assert.equal(added.name, 'add_task');
    assert.equal(added.is_error, false, JSON.stringify(added.result));
    const rentId: string = added.result.task_id;
    const conversationId: string = first.body.conversation_id;

    // What the model was given: the system prompt with the time, zone and default reminders, and the tools.
    const [askFirst, afterTool] = model.requests.slice(-2);
    assert.equal(askFirst.model, 'fake-model');
    assert.equal(askFirst.messages[0].role, 'system');
    assert.match(askFirst.messages[0].content, /2026-03-01T12:00:00\.000Z/);
    assert.match(askFirst.messages[0].content, /Europe\/Berlin/);
    assert.ok(askFirst.tools.some((t: any) => t.function.name === 'add_task'));
    assert.ok(!JSON.stringify(askFirst.tools).includes('"user_id"'), 'no tool takes a user id');
    const toolAnswer = afterTool.messages.at(-1);
    assert.equal(toolAnswer.role, 'tool');
    assert.equal(JSON.parse(toolAnswer.content).task_id, rentId);

    // In the database, on the bus and in the audit trail, as any API write.
    const rent = (await app.call('alice', 'GET', `/api/tasks/${rentId}`)).body;
    assert.match(rent.recurrence.rrule, /FREQ=MONTHLY;BYMONTHDAY=1/);
    assert.deepEqual(rent.reminders, ['P1D']);
    const created = (await writtenEvents(db)).find(
      (e) => e.event.type === 'task.created' && e.event.data.task.id === rentId,
    );
    assert.equal(created?.event.source, '/taskflow/chat');
    const audited = await waitFor(
      async () =>
        (
          await db.query<{ user_agent: string }>(
            `SELECT user_agent FROM audit_log WHERE user_id = 'alice' AND task_id = $1`,
            [rentId],
          )
        ).rows[0],
      10_000,
      'the audit record of the chat write',
    );
    assert.equal(audited.user_agent, 'taskflow-chat (fake-model)');

    // Turn 2: what is due; the history goes with it.
    const other = (
      await app.call('alice', 'POST', '/api/tasks', { title: 'Old plan', due_date: '2026-03-02T09:00:00Z' })
    ).body;
    model.script(
      { toolCalls: [{ name: 'list_tasks', arguments: { due: 'week', status: 'pending' } }] },
      { text: 'Two tasks are due.' },
    );
    const second = await app.call('alice', 'POST', '/api/chat', {
      conversation_id: conversationId,
      message: 'what is due this week?',
    });
    assert.equal(second.status, 200);
    assert.equal(second.body.conversation_id, conversationId);
    const askSecond = model.requests.at(-2);
    const roles = askSecond.messages.map((m: any) => m.role);
    assert.deepEqual(roles.slice(0, 6), ['system', 'user', 'assistant', 'tool', 'assistant', 'user']);
    assert.ok(second.body.tool_calls[0].result.tasks.some((t: any) => t.task_id === other.id));

    // Turn 3: complete one; turn 4: delete the other.
    model.script(
      { toolCalls: [{ name: 'complete_task', arguments: { task_id: other.id } }] },
      { text: 'Done.' },
    );
    assert.equal(
      (
        await app.call('alice', 'POST', '/api/chat', {
          conversation_id: conversationId,
          message: 'I did the old plan',
        })
      ).status,
      200,
    );
    assert.equal((await app.call('alice', 'GET', `/api/tasks/${other.id}`)).body.status, 'completed');
    model.script(
      { toolCalls: [{ name: 'delete_task', arguments: { task_id: other.id } }] },
      { text: 'Deleted.' },
    );
    assert.equal(
      (
        await app.call('alice', 'POST', '/api/chat', {
          conversation_id: conversationId,
          message: 'delete it',
        })
      ).status,
      200,
    );
    assert.equal((await app.call('alice', 'GET', `/api/tasks/${other.id}`)).status, 404);

    // The stored conversation, and no one else's.
    const list = await app.call('alice', 'GET', '/api/chat/conversations');
    assert.deepEqual(
      list.body.items.map((c: any) => c.id),
      [conversationId],
    );
    const stored = await app.call('alice', 'GET', `/api/chat/conversations/${conversationId}`);
    assert.equal(stored.body.messages.filter((m: any) => m.role === 'user').length, 4);
    assert.equal((await app.call('bob', 'GET', `/api/chat/conversations/${conversationId}`)).status, 404);
    const foreign = await app.call('bob', 'POST', '/api/chat', {
      conversation_id: conversationId,
      message: 'hi',
    });
    assert.equal(foreign.status, 404);
    assert.equal((await app.call('bob', 'POST', '/api/alice/chat', { message: 'hi' })).status, 403);
    assert.equal(
      (await app.call('alice', 'DELETE', `/api/chat/conversations/${conversationId}`)).status,
      204,
    );
    assert.equal((await app.call('alice', 'GET', `/api/chat/conversations/${conversationId}`)).status, 404);
  });

  it('streams tool calls as they happen and the reply token by token (text/event-stream)', async () => {
    model.script(
      { toolCalls: [{ name: 'add_task', arguments: { title: 'Call mom', due_date: 'in 30 minutes' } }] },
      { text: 'Reminder set for 13:30.' },
    );
    const events = await sse(app, 'carol', { message: 'remind me to call mom in 30 minutes' });
    const kinds = events.map((e) => e.event);
    assert.equal(kinds[0], 'tool_call');
    assert.equal(events[0]!.data.name, 'add_task');
    assert.equal(events[0]!.data.result.task.due_date, '2026-03-01T12:30:00.000Z');
    assert.ok(kinds.filter((k) => k === 'token').length >= 2, kinds.join(','));
    assert.equal(
      events
        .filter((e) => e.event === 'token')
        .map((e) => e.data.text)
        .join(''),
      'Reminder set for 13:30.',
    );
    const done = events.at(-1)!;
    assert.equal(done.event, 'done');
    assert.equal(done.data.reply, 'Reminder set for 13:30.');
    assert.ok(done.data.conversation_id);
  });

  it('gives tool errors, unparsable arguments and unknown tools back to the model, and bounds the calls', async () => {
    model.script(
      {
        toolCalls: [
          { name: 'add_task', arguments: '{"title": "x", ' },
          { name: 'launch_rockets', arguments: {} },
          { name: 'get_task', arguments: { task_id: '00000000-0000-4000-8000-000000000000' } },
        ],
      },
      {
        toolCalls: [
          { name: 'get_context', arguments: {} },
          { name: 'get_context', arguments: {} },
          { name: 'get_context', arguments: {} },
        ],
      },
      { text: 'Sorry, something went wrong.' },
    );
    const r = await app.call('dave', 'POST', '/api/chat', { message: 'do things' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const [, secondAsk, thirdAsk] = model.requests.slice(-3);
    const answers = secondAsk.messages.filter((m: any) => m.role === 'tool').map((m: any) => m.content);
    assert.match(answers[0], /JSON/);
    assert.match(answers[1], /Invalid tool_call: "launch_rockets"/);
    assert.match(answers[2], /task not found/);
    // The bound (CHAT_MAX_TOOL_CALLS=3): get_task and two get_context ran; the third is refused to the model.
    const bounded = thirdAsk.messages
      .filter((m: any) => m.role === 'tool')
      .slice(-3)
      .map((m: any) => m.content);
    assert.match(bounded[2], /Not run: this message already used its 3 tool calls/);
    assert.deepEqual(
      r.body.tool_calls.map((c: any) => [c.name, c.is_error]),
      [
        ['get_task', true],
        ['get_context', false],
        ['get_context', false],
      ],
    );
  });

  it('answers a provider timeout 504, its 429 503 with Retry-After, its 5xx 502, as problem+json', async () => {
    model.script({ delayMs: 2_500, then: { text: 'too late' } });
    const slow = await quick.call('erin', 'POST', '/api/chat', { message: 'hello' });
    assert.equal(slow.status, 504);
    assert.match(slow.headers.get('content-type') ?? '', /application\/problem\+json/);
    assert.ok(slow.body.conversation_id);

    model.script({ status: 429, headers: { 'retry-after': '7' } });
    const limited = await quick.call('erin', 'POST', '/api/chat', { message: 'hello' });
    assert.equal(limited.status, 503);
    assert.equal(limited.headers.get('retry-after'), '7');
    // Streamed, the headers are gone by then: the error event carries it.
    model.script({ status: 429, headers: { 'retry-after': '7' } });
    const events = await sse(quick, 'erin', { message: 'hello' });
    const error = events.find((e) => e.event === 'error')!;
    assert.equal(error.data.status, 503);
    assert.equal(error.data.retry_after, '7');

    model.script({ status: 500 });
    const broken = await quick.call('erin', 'POST', '/api/chat', { message: 'hello' });
    assert.equal(broken.status, 502);
    assert.match(broken.body.detail, /500/);
  });

  it('keeps a turn whose model answered NUL or half a surrogate pair, after its tool ran', async () => {
    model.script(
      {
        toolCalls: [
          { id: 'call\u0000nul', name: 'add_task', arguments: { title: 'Written before the NUL' } },
        ],
      },
      { text: 'Done\u0000 \ud800.' },
    );
    const r = await app.call('nora', 'POST', '/api/chat', { message: 'add it' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.reply, 'Done\ufffd \ufffd.');
    const tasks = await app.call('nora', 'GET', '/api/tasks');
    assert.deepEqual(
      tasks.body.items.map((t: any) => t.title),
      ['Written before the NUL'],
    );
    const stored = await app.call('nora', 'GET', `/api/chat/conversations/${r.body.conversation_id}`);
    const [, asked, answered, reply] = stored.body.messages;
    assert.equal(asked.tool_calls[0].id, 'call\ufffdnul');
    assert.equal(answered.tool_call_id, 'call\ufffdnul');
    assert.equal(reply.content, r.body.reply);
  });

  it('cuts a reply that runs on at 20,000 characters, as answered and as stored', async () => {
    model.script({ text: 'y'.repeat(25_000) });
    const r = await app.call('gina', 'POST', '/api/chat', { message: 'talk a lot' });
    assert.equal(r.status, 200);
    assert.equal(r.body.reply, `${'y'.repeat(20_000)} [cut]`);
    const stored = await app.call('gina', 'GET', `/api/chat/conversations/${r.body.conversation_id}`);
    assert.equal(stored.body.messages.at(-1).content, r.body.reply);
  });

  it('gives the model a tool answer over 20,000 characters as JSON: a shorter page it pages on from, texts cut', async () => {
    for (let i = 0; i < 60; i++)
      await app.call('lena', 'POST', '/api/tasks', {
        title: `Task number ${i}`,
        description: 'Call the landlord about the heating, bring the papers',
        due_date: '2026-03-10T09:00:00Z',
      });
    /** The tool answers in the model's latest request: what it read. */
    const reads = (): string[] =>
      model.requests
        .at(-1)
        .messages.filter((m: any) => m.role === 'tool')
        .map((m: any) => m.content);
    const json = (read: string) => {
      try {
        return JSON.parse(read);
      } catch {
        assert.fail(
          `the model read no JSON: ${read.length} characters, ending ${JSON.stringify(read.slice(-40))}`,
        );
      }
    };
    // The model pages on with the next_cursor it read, if it read one (the step is written when it is asked).
    const nextPage: Step = {
      raw: (res) => {
        let cursor: unknown;
        try {
          cursor = JSON.parse(reads().at(-1)!).next_cursor;
        } catch {
          // cut in the middle of its JSON: no cursor to page with
        }
        const call = {
          id: 'page-2',
          type: 'function',
          function: { name: 'list_tasks', arguments: JSON.stringify({ cursor }) },
        };
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify(
            typeof cursor === 'string'
              ? completion({ role: 'assistant', content: null, tool_calls: [call] }, 'tool_calls')
              : completion({ role: 'assistant', content: 'I cannot see the rest.' }, 'stop'),
          ),
        );
      },
    };
    model.script({ toolCalls: [{ name: 'list_tasks', arguments: {} }] }, nextPage, { text: 'You have 60.' });
    const r = await app.call('lena', 'POST', '/api/chat', { message: 'what are my tasks?' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    // Cut in the middle of its JSON, the first page lost its count and next_cursor: the rest was out of reach.
    const [first, second] = reads();
    const page1 = json(first!);
    assert.ok(first!.length <= 20_000, `the model read ${first!.length} characters`);
    assert.ok(page1.tasks.length < 50 && page1.count === page1.tasks.length, `${page1.tasks.length} tasks`);
    assert.match(page1.note, /shorter page .* next_cursor/);
    assert.equal(typeof second, 'string', 'the model paged on');
    const page2 = json(second!);
    assert.equal(page2.next_cursor, null);
    const titles = [...page1.tasks, ...page2.tasks].map((t: any) => t.title);
    assert.equal(new Set(titles).size, 60, 'every task, once');
    // The answer's tool call has the tool's page as it answered it.
    assert.equal(r.body.tool_calls[0].result.tasks.length, 50);

    // One task over the bound alone (10,000 quotes, escaped): its long texts are cut, its id is whole.
    const big = await app.call('lena', 'POST', '/api/tasks', {
      title: 'Quotes',
      description: '"'.repeat(10_000),
    });
    model.script(
      { toolCalls: [{ name: 'get_task', arguments: { task_id: big.body.id } }] },
      { text: 'Got it.' },
    );
    assert.equal((await app.call('lena', 'POST', '/api/chat', { message: 'show it' })).status, 200);
    const task = json(reads().at(-1)!);
    assert.equal(task.task_id, big.body.id);
    assert.match(task.task.description, /^"+ \[cut\]$/);
  });

  it('ends a stream with an error event when the model drops the connection mid-answer', async () => {
    model.script({ drop: 'Hel' });
    const events = await sse(app, 'hank', { message: 'hello' });
    assert.deepEqual(
      events.map((e) => e.event),
      ['token', 'error'],
    );
    assert.equal(events[1]!.data.status, 502);
    assert.ok(events[1]!.data.conversation_id);
    model.script({ drop: '' });
    const plain = await app.call('hank', 'POST', '/api/chat', { message: 'hello again' });
    assert.equal(plain.status, 502);
    // An answer that is JSON but no chat completion: said so, not in the client's internal words.
    model.script({ status: 200, body: {} });
    const empty = await app.call('hank', 'POST', '/api/chat', { message: 'and now' });
    assert.equal(empty.status, 502);
    assert.match(empty.body.detail, /could not be read: it was cut off, or is not a chat-completions answer/);
    assert.doesNotMatch(empty.body.detail, /Cannot read properties/);
  });

  it('stops the turn when the client goes away: a tool call the model asks for afterwards is not run', async () => {
    const before = model.requests.length;
    model.script({
      delayMs: 800,
      then: { toolCalls: [{ name: 'add_task', arguments: { title: 'Never written' } }] },
    });
    const leaving = new AbortController();
    const pending = fetch(`${app.url}/api/chat`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await app.token('ivan')}`,
        'content-type': 'application/json',
        accept: 'text/event-stream',
      },
      body: JSON.stringify({ message: 'add a task' }),
      signal: leaving.signal,
    }).then((r) => r.text());
    await waitFor(async () => model.requests.length > before, 5_000, 'the model to be asked');
    leaving.abort();
    await pending.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal(model.requests.length, before + 1, 'the model is not asked again');
    const tasks = await app.call('ivan', 'GET', '/api/tasks');
    assert.deepEqual(tasks.body.items, [], 'no tool ran after the client left');
  });

  it("answers at most CHAT_TURNS_PER_USER (2) of one user's messages at once, over all their conversations (429)", async () => {
    model.script(
      { delayMs: 800, then: { text: 'one' } },
      { delayMs: 800, then: { text: 'two' } },
      { text: 'three' },
    );
    const before = model.requests.length;
    const first = app.call('pete', 'POST', '/api/chat', { message: 'first' });
    const second = app.call('pete', 'POST', '/api/chat', { message: 'second' });
    await waitFor(async () => model.requests.length >= before + 2, 5_000, 'both asked of the model');
    const third = await app.call('pete', 'POST', '/api/chat', { message: 'third' });
    assert.equal(third.status, 429, JSON.stringify(third.body));
    assert.match(third.body.detail, /2 of your messages are being answered/);
    assert.equal(third.headers.get('retry-after'), '5');
    // Another user is not held back by pete's.
    assert.equal((await app.call('quinn', 'POST', '/api/chat', { message: 'mine' })).status, 200);
    assert.deepEqual([(await first).status, (await second).status], [200, 200]);
    const listed = await app.call('pete', 'GET', '/api/chat/conversations');
    assert.equal(listed.body.items.length, 2, 'the refused message made no conversation');
    model.script({ text: 'now' });
    assert.equal((await app.call('pete', 'POST', '/api/chat', { message: 'third again' })).status, 200);
  });

  it('keeps a conversation usable after an answer without words (a refusal)', async () => {
    model.script({ text: '' });
    const first = await app.call('judy', 'POST', '/api/chat', { message: 'something' });
    assert.equal(first.status, 200);
    model.script({ text: 'Fine.' });
    const second = await app.call('judy', 'POST', '/api/chat', {
      conversation_id: first.body.conversation_id,
      message: 'and now?',
    });
    assert.equal(second.status, 200);
    const sent = model.requests.at(-1).messages;
    for (const m of sent)
      if (m.role === 'assistant' && !m.tool_calls)
        assert.equal(typeof m.content, 'string', JSON.stringify(m));
  });

  it('keeps a turn whose model sent a tool call without a name (null), answered to it as invalid', async () => {
    model.script(
      { toolCalls: [{ name: null as unknown as string, arguments: {} }] },
      { text: 'Sorry, I could not do that.' },
    );
    const r = await app.call('olga', 'POST', '/api/chat', { message: 'do it' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const answered = model.requests.at(-1).messages.find((m: any) => m.role === 'tool');
    assert.match(answered.content, /Invalid tool_call: null/);
    const stored = await app.call('olga', 'GET', `/api/chat/conversations/${r.body.conversation_id}`);
    assert.deepEqual(
      stored.body.messages.map((m: any) => m.role),
      ['user', 'assistant', 'tool', 'assistant'],
    );
  });

  it('answers 409 with the tool calls when the conversation is deleted while the model answers', async () => {
    model.script({ text: 'First.' });
    const first = await app.call('pete', 'POST', '/api/chat', { message: 'hello' });
    const id = first.body.conversation_id;
    model.script(
      { toolCalls: [{ name: 'add_task', arguments: { title: 'Written before the delete' } }] },
      { delayMs: 500, then: { text: 'Added.' } },
    );
    const asked = model.requests.length;
    const turn = app.call('pete', 'POST', '/api/chat', { conversation_id: id, message: 'add one' });
    await waitFor(() => model.requests.length >= asked + 2, 5_000, 'the second model request');
    assert.equal((await app.call('pete', 'DELETE', `/api/chat/conversations/${id}`)).status, 204);
    const r = await turn;
    assert.equal(r.status, 409, JSON.stringify(r.body));
    assert.equal(r.body.conversation_id, id);
    assert.deepEqual(
      r.body.tool_calls.map((c: any) => c.name),
      ['add_task'],
    );
    const tasks = await app.call('pete', 'GET', '/api/tasks');
    assert.deepEqual(
      tasks.body.items.map((t: any) => t.title),
      ['Written before the delete'],
    );
  });

  it('ends a message at twice CHAT_TIMEOUT_MS however many requests it takes (504, with what ran)', async () => {
    // CHAT_TIMEOUT_MS=1000: each request answers within it, the four together do not.
    const step = { delayMs: 700, then: { toolCalls: [{ name: 'get_context', arguments: {} }] } };
    model.script(step, step, step, step, { text: 'Done.' });
    const started = Date.now();
    const r = await quick.call('quinn', 'POST', '/api/chat', { message: 'slowly' });
    const ms = Date.now() - started;
    assert.equal(r.status, 504, JSON.stringify(r.body));
    assert.ok(ms < 2_600, `answered after ${ms} ms`);
    assert.ok(r.body.tool_calls.length >= 1 && r.body.tool_calls.length <= 3, JSON.stringify(r.body));
    model.unscript(); // what the turn did not ask for
  });

  it('says so in the reply when the model never stops calling tools', async () => {
    // CHAT_MAX_TOOL_CALLS=3: at most five model requests, each asking for another tool call.
    const step = { toolCalls: [{ name: 'get_context', arguments: {} }] };
    model.script(step, step, step, step, step, { text: 'never asked for' });
    const r = await app.call('rita', 'POST', '/api/chat', { message: 'loop' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.match(r.body.reply, /I stopped before finishing: this message reached its limit of 3 tool calls/);
    const stored = await app.call('rita', 'GET', `/api/chat/conversations/${r.body.conversation_id}`);
    assert.equal(stored.body.messages.at(-1).content, r.body.reply);
    model.unscript();
  });

  it('answers one message of a conversation at a time: another sent meanwhile is refused 409', async () => {
    model.script({ text: 'First.' });
    const first = await app.call('vera', 'POST', '/api/chat', { message: 'hello' });
    const id = first.body.conversation_id;
    model.script({ delayMs: 500, then: { text: 'Slow answer.' } });
    const asked = model.requests.length;
    const slow = app.call('vera', 'POST', '/api/chat', { conversation_id: id, message: 'slowly' });
    await waitFor(() => model.requests.length > asked, 5_000, 'the model to be asked');
    const meanwhile = await app.call('vera', 'POST', '/api/chat', { conversation_id: id, message: 'and?' });
    assert.equal(meanwhile.status, 409, JSON.stringify(meanwhile.body));
    assert.equal(meanwhile.body.conversation_id, id);
    assert.equal((await slow).status, 200);
    // Once that answer has come, the next message is taken; its history has both earlier turns, in order.
    model.script({ text: 'Third.' });
    const next = await app.call('vera', 'POST', '/api/chat', { conversation_id: id, message: 'now' });
    assert.equal(next.status, 200, JSON.stringify(next.body));
    assert.deepEqual(
      model.requests
        .at(-1)
        .messages.filter((m: any) => m.role !== 'system')
        .map((m: any) => m.content),
      ['hello', 'First.', 'slowly', 'Slow answer.', 'now'],
    );
  });

  it('refuses bad bodies with 400 naming the field', async () => {
    for (const [body, field] of [
      [{}, 'message'],
      [{ message: '   ' }, 'message'],
      [{ message: 'a\u0000b' }, 'message'],
      [{ message: 'x'.repeat(8_001) }, 'message'],
      [{ message: 'hi', conversation_id: 'nope' }, 'conversation_id'],
      [{ message: 'hi', model: 'gpt-4' }, 'model'],
    ] as const) {
      const r = await app.call('frank', 'POST', '/api/chat', body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.body.errors[0].field, field);
    }
  });
});

describe('the chat endpoint without a model', () => {
  it('answers 503 naming the variables to set; the rest of the API works', async () => {
    const db = await openDb('memory://');
    await migrate(db);
    const app = await startApp(db, { targets: ['api'] });
    try {
      const r = await app.call('alice', 'POST', '/api/chat', { message: 'hello' });
      assert.equal(r.status, 503);
      assert.match(r.body.detail, /CHAT_BASE_URL and CHAT_MODEL/);
      assert.equal((await app.call('alice', 'POST', '/api/tasks', { title: 'still works' })).status, 201);
    } finally {
      await app.stop();
      await db.close();
    }
  });
});
