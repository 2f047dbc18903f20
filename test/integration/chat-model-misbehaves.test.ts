/**
 * The chat endpoint against a language model that misbehaves in ways a real provider or proxy does: a reply
 * whose content is text parts or not text at all, an error that quotes the API key, a reply that never ends, an
 * answer that stalls after its headers, 16,400 tool calls at once, thousands in each of its answers. Each gets a
 * bounded, clear answer with the tool calls that ran, never a 500, at a bounded cost; and a streamed answer carries
 * the CORS headers a browser front end needs.
 */
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { Db } from '../../src/store/db.ts';
import { startApp, type TestApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';
import { completion, event, startFakeModel, type FakeModel } from '../helpers/openai-server.ts';

const KEY = 'sk-operator-secret-0123456789abcdef';
const ORIGIN = 'https://app.example.com';
const TIMEOUT_MS = 1_500;

describe('chat: a model that misbehaves', () => {
  let db: Db;
  let drop: () => Promise<void>;
  let app: TestApp;
  let model: FakeModel;
  before(async () => {
    model = await startFakeModel();
    ({ db, drop } = await backends[0]!.fresh());
    app = await startApp(db, {
      targets: ['api'],
      env: {
        CHAT_BASE_URL: model.url,
        CHAT_MODEL: 'm',
        CHAT_API_KEY: KEY,
        CHAT_TIMEOUT_MS: String(TIMEOUT_MS),
        CORS_ORIGINS: ORIGIN,
      },
    });
  });
  after(async () => {
    await app?.stop();
    await model?.close();
    await drop?.();
  });

  /** POST /api/chat as `user`, streamed or not: the status, the body or the stream's last event, the time. */
  const chat = async (user: string, stream: boolean, extra: Record<string, string> = {}) => {
    const started = Date.now();
    const res = await fetch(`${app.url}/api/chat`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await app.token(user)}`,
        'content-type': 'application/json',
        ...(stream ? { accept: 'text/event-stream' } : {}),
        ...extra,
      },
      body: JSON.stringify({ message: 'hi' }),
    });
    const text = await res.text();
    const ms = Date.now() - started;
    if (!stream) return { res, text, ms, event: null, body: JSON.parse(text) };
    const last = text.split('\n\n').filter(Boolean).at(-1) ?? '';
    return {
      res,
      text,
      ms,
      event: /^event: (.+)$/m.exec(last)?.[1] ?? null,
      body: JSON.parse(/^data: (.+)$/m.exec(last)?.[1] ?? 'null'),
    };
  };

  it('reads a reply of text parts as its text; a reply that is not text is a 502 with the tool calls that ran', async () => {
    const add = (title: string) => ({ toolCalls: [{ name: 'add_task', arguments: { title } }] });
    const reply = (content: unknown) => ({
      raw: (res: ServerResponse) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(completion({ role: 'assistant', content }, 'stop')));
      },
    });
    model.script(
      add('parts'),
      reply([
        { type: 'text', text: 'Added ' },
        { type: 'text', text: 'it.' },
      ]),
    );
    const parts = await chat('parts', false);
    assert.equal(parts.res.status, 200, parts.text);
    assert.equal(parts.body.reply, 'Added it.');
    const stored = await app.call('parts', 'GET', `/api/chat/conversations/${parts.body.conversation_id}`);
    assert.equal(stored.body.messages.at(-1).content, 'Added it.');

    model.script(add('number'), reply(42));
    const number = await chat('number', false);
    assert.equal(number.res.status, 502, number.text);
    assert.deepEqual(
      number.body.tool_calls.map((c: { name: string }) => c.name),
      ['add_task'],
    );
    const tasks = await app.call('number', 'GET', '/api/tasks');
    assert.deepEqual(
      tasks.body.items.map((t: { title: string }) => t.title),
      ['number'],
      'the task the tool call wrote stands',
    );
  });

  it('does not pass the API key on to the user when the provider quotes it', async () => {
    for (const stream of [false, true]) {
      model.script(
        {
          status: 401,
          body: { error: { message: `Incorrect API key provided: ${KEY}`, type: 'invalid_request_error' } },
        },
        {
          raw: (res, req) => {
            res.writeHead(500, { 'content-type': 'text/plain' });
            res.end(`upstream failed for request with authorization: ${req.headers.authorization}`);
          },
        },
      );
      for (let i = 0; i < 2; i++) {
        const r = await chat(`keyed-${stream}-${i}`, stream);
        assert.equal(stream ? r.body.status : r.res.status, 502, r.text);
        assert.ok(!r.text.includes(KEY), `the answer carries the API key: ${r.text.slice(0, 300)}`);
        assert.ok(!r.text.includes(KEY.slice(-16)), r.text.slice(0, 300));
      }
    }
  });

  it('stops reading a streamed reply that never ends at 20,000 characters, and answers it cut', async () => {
    let written = 0;
    model.script({
      raw: (res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(event({ role: 'assistant', content: '' }));
        const piece = event({ content: 'z'.repeat(16_000) });
        const timer = setInterval(() => {
          if (res.destroyed || written > 64e6) return clearInterval(timer);
          for (let i = 0; i < 4; i++) {
            res.write(piece);
            written += piece.length;
          }
        }, 2);
        res.on('close', () => clearInterval(timer));
      },
    });
    const r = await chat('chatty', true);
    assert.equal(r.event, 'done', r.text.slice(-300));
    assert.equal(r.body.reply, `${'z'.repeat(20_000)} [cut]`);
    assert.ok(written < 4e6, `read ${written} bytes of the model's reply to answer 20,000 characters`);
    const stored = await app.call('chatty', 'GET', `/api/chat/conversations/${r.body.conversation_id}`);
    assert.equal(stored.body.messages.at(-1).content, r.body.reply);
  });

  it('ends a model request that sends nothing for CHAT_TIMEOUT_MS after its headers: 504', async () => {
    // JSON: the headers, then the body after longer than the timeout.
    model.script({
      raw: (res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.flushHeaders();
        setTimeout(
          () =>
            !res.destroyed &&
            res.end(JSON.stringify(completion({ role: 'assistant', content: 'late' }, 'stop'))),
          TIMEOUT_MS + 1_300,
        );
      },
    });
    const plain = await chat('stalled', false);
    assert.equal(plain.res.status, 504, plain.text);
    assert.ok(plain.ms < TIMEOUT_MS + 1_000, `answered after ${plain.ms} ms`);
    // Streamed: a first token, then silence.
    model.script({
      raw: (res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(event({ role: 'assistant', content: 'Hel' }));
      },
    });
    const streamed = await chat('stalled-stream', true);
    assert.equal(streamed.event, 'error', streamed.text);
    assert.equal(streamed.body.status, 504);
    assert.ok(streamed.ms < TIMEOUT_MS + 1_000, `the stream ended after ${streamed.ms} ms`);
  });

  it('sends a tool call whose arguments are not a JSON object back to the model as {}: a provider refuses them (Ollama: 400), in that turn and every later one', async () => {
    const isObject = (raw: unknown) => {
      try {
        const v = JSON.parse(raw as string);
        return typeof v === 'object' && v !== null && !Array.isArray(v);
      } catch {
        return false;
      }
    };
    /** As Ollama's OpenAI API answers: 400 to a request with such arguments in its messages, else `text`. */
    const strict = (text: string) => ({
      raw: (res: ServerResponse) => {
        const asked = model.requests.at(-1);
        if (
          asked.messages.some((m: any) =>
            (m.tool_calls ?? []).some((c: any) => !isObject(c.function.arguments)),
          )
        ) {
          res.writeHead(400, { 'content-type': 'application/json' });
          res.end(
            JSON.stringify({
              error: { message: 'invalid tool call arguments', type: 'invalid_request_error' },
            }),
          );
        } else if (asked.stream) {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.end(`${event({ role: 'assistant', content: text })}${event({}, 'stop')}data: [DONE]\n\n`);
        } else {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(completion({ role: 'assistant', content: text }, 'stop')));
        }
      },
    });
    const post = async (body: Record<string, unknown>, stream: boolean) => {
      const res = await fetch(`${app.url}/api/chat`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${await app.token('sloppy')}`,
          'content-type': 'application/json',
          ...(stream ? { accept: 'text/event-stream' } : {}),
        },
        body: JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, text };
    };
    // Streamed or not, then the other way for the next message.
    for (const stream of [false, true]) {
      model.script(
        {
          toolCalls: [
            { name: 'add_task', arguments: '{"title": "Buy milk", ' },
            { name: 'get_context', arguments: '[]' },
          ],
        },
        strict('I could not read my own arguments; which task?'),
      );
      const first = await post({ message: 'add buy milk' }, stream);
      assert.equal(first.status, 200, first.text);
      assert.match(first.text, stream ? /event: done/ : /"reply"/, first.text);
      const answers = model.requests
        .at(-1)
        .messages.filter((m: any) => m.role === 'tool')
        .map((m: any) => m.content);
      assert.match(answers[0], /not valid JSON/);
      assert.match(answers[1], /must be a JSON object/);
      const id = /"conversation_id":"([^"]+)"/.exec(first.text)![1];
      // The conversation goes on, its history with the refused calls in it.
      model.script(strict('Added.'));
      const second = await post({ conversation_id: id, message: 'buy milk' }, !stream);
      assert.equal(second.status, 200, second.text);
      assert.match(second.text, stream ? /"reply":"Added\."/ : /event: done/, second.text);
      const stored = await app.call('sloppy', 'GET', `/api/chat/conversations/${id}`);
      assert.deepEqual(
        stored.body.messages[1].tool_calls.map((c: any) => c.function.arguments),
        ['{}', '{}'],
      );
    }
  });

  it('answers a streamed turn with the CORS headers of the JSON one', async () => {
    for (const stream of [false, true]) {
      model.script({ text: 'Hello.' });
      const r = await chat(`cors-${stream}`, stream, { origin: ORIGIN });
      assert.equal(r.res.status, 200, r.text);
      assert.equal(r.res.headers.get('access-control-allow-origin'), ORIGIN, `stream: ${stream}`);
    }
  });
});

for (const backend of backends)
  describe(`chat: a model asking for thousands of tool calls (${backend.name})`, () => {
    /** The api target against a fresh model and database, for `test`. */
    async function withChat(
      maxToolCalls: number,
      test: (app: TestApp, model: FakeModel, db: Db) => Promise<void>,
    ) {
      const model = await startFakeModel();
      const { db, drop } = await backend.fresh();
      const app = await startApp(db, {
        targets: ['api'],
        env: {
          CHAT_BASE_URL: model.url,
          CHAT_MODEL: 'm',
          CHAT_TIMEOUT_MS: '20000',
          CHAT_MAX_TOOL_CALLS: String(maxToolCalls),
        },
      });
      try {
        await test(app, model, db);
      } finally {
        await app.stop();
        await model.close();
        await drop();
      }
    }
    const manyCalls = (n: number, name: string) => ({
      toolCalls: Array.from({ length: n }, (_, i) => ({ id: `c${i}`, name, arguments: {} })),
    });

    it('answers 16,400 at once with the calls within the bound run, stops there and stores it, not 500', () =>
      withChat(3, async (app, model) => {
        model.script(manyCalls(16_400, 'get_context'), { text: 'never asked for' });
        const r = await app.call('loop', 'POST', '/api/chat', { message: 'go' });
        assert.equal(r.status, 200, `answered ${r.status}: ${JSON.stringify(r.body)}`);
        assert.equal(r.body.tool_calls.length, 3);
        assert.match(
          r.body.reply,
          /I stopped before finishing: this message reached its limit of 3 tool calls/,
        );
        assert.equal(model.requests.length, 1, 'the model is not asked again');
        // The calls a message may ask for (twice CHAT_MAX_TOOL_CALLS): three ran, three answered "Not run".
        const stored = await app.call('loop', 'GET', `/api/chat/conversations/${r.body.conversation_id}`);
        const messages = stored.body.messages;
        assert.deepEqual(
          messages.map((m: any) => m.role),
          ['user', 'assistant', ...Array(6).fill('tool'), 'assistant'],
        );
        assert.equal(messages[1].tool_calls.length, 6);
        assert.match(messages[7].content, /Not run: this message already used its 3 tool calls/);
        assert.equal(messages.at(-1).content, r.body.reply);
      }));

    it('costs a message a bounded multiple of what the model sent, however many calls each answer asks for', () =>
      withChat(8, async (app, model, db) => {
        // Each unknown tool's call is answered with the list of all tools (420 characters for a 40-byte call),
        // which went back with every later request of the turn: 226 MB sent to the model, 80,012 messages stored.
        const step = manyCalls(8_000, 'x');
        for (let i = 0; i < 10; i++) model.script(step);
        model.script({ text: 'Done.' });
        const r = await app.call('flood', 'POST', '/api/chat', { message: 'go' });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.match(r.body.reply, /I stopped before finishing/);
        const received = JSON.stringify(step).length; // about what the model's one answer was
        const sent = model.requests.reduce((n, b) => n + JSON.stringify(b).length, 0);
        const stored = (
          await db.query<{ bytes: number; n: number }>(
            `SELECT coalesce(sum(length(content) + coalesce(length(tool_calls::text), 0)), 0)::int AS bytes,
                    count(*)::int AS n FROM chat_messages`,
          )
        ).rows[0]!;
        assert.ok(sent < received, `sent ${sent} characters to the model for ${received} it answered`);
        assert.ok(stored.bytes < 20_000, `stored ${stored.bytes} characters`);
        assert.equal(model.requests.length, 1, 'the model is not asked again');
        // The user's message, the answer with the 16 calls a message may ask for, their answers, the reply.
        assert.equal(stored.n, 19);
        model.unscript();
      }));
  });
