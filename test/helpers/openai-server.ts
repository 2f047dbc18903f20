/**
 * A real HTTP server that speaks the OpenAI chat-completions protocol (POST /v1/chat/completions, JSON or
 * server-sent events when the request says `stream: true`), answering from a script: the stand-in for a
 * paid language model in the chat tests. Each request takes the next step; every request body is kept.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Step =
  | { text: string }
  | { toolCalls: { name: string; arguments: string | Record<string, unknown>; id?: string }[] }
  | { status: number; headers?: Record<string, string>; body?: unknown }
  | { delayMs: number; then: Step }
  /** Starts answering (streamed: these words first), then drops the connection. */
  | { drop: string }
  /** Writes the HTTP answer itself: a malformed body, a stall, an endless stream. */
  | { raw: (res: ServerResponse, req: IncomingMessage) => void };

export interface FakeModel {
  /** The base URL to give CHAT_BASE_URL. */
  url: string;
  /** The bodies of the requests received, in order. */
  requests: any[];
  script(...steps: Step[]): void;
  /** Drops the steps not used yet (a turn that ended before it asked for them). */
  unscript(): void;
  close(): Promise<void>;
}

let callSeq = 0;

/** A chat-completions answer (JSON) with `message`. */
export const completion = (message: Record<string, unknown>, finish: string) => ({
  id: `chatcmpl-${++callSeq}`,
  object: 'chat.completion',
  created: Math.floor(Date.now() / 1000),
  model: 'fake-model',
  choices: [{ index: 0, message, finish_reason: finish, logprobs: null }],
  usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
});

/** A chunk of a streamed answer. */
export const chunk = (delta: Record<string, unknown>, finish: string | null) => ({
  id: `chatcmpl-${callSeq}`,
  object: 'chat.completion.chunk',
  created: Math.floor(Date.now() / 1000),
  model: 'fake-model',
  choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
});

/** A chunk as a server-sent event. */
export const event = (delta: Record<string, unknown>, finish: string | null = null) =>
  `data: ${JSON.stringify(chunk(delta, finish))}\n\n`;

/** `fallback`: the answer when the script is used up (else a 500 saying so). */
export async function startFakeModel(opts: { fallback?: Step } = {}): Promise<FakeModel> {
  const steps: Step[] = [];
  const requests: any[] = [];
  const toolCalls = (step: Extract<Step, { toolCalls: unknown }>) =>
    step.toolCalls.map((c, i) => ({
      id: c.id ?? `call_${++callSeq}_${i}`,
      type: 'function',
      function: {
        name: c.name,
        arguments: typeof c.arguments === 'string' ? c.arguments : JSON.stringify(c.arguments),
      },
    }));

  const answer = async (step: Step, stream: boolean, res: ServerResponse, req: IncomingMessage) => {
    if ('raw' in step) return step.raw(res, req);
    if ('delayMs' in step) {
      await new Promise((r) => setTimeout(r, step.delayMs));
      if (!res.destroyed) await answer(step.then, stream, res, req);
      return;
    }
    if ('drop' in step) {
      if (stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write(`data: ${JSON.stringify(chunk({ role: 'assistant', content: step.drop }, null))}\n\n`);
        await new Promise((r) => setTimeout(r, 50));
      }
      res.destroy();
      return;
    }
    if ('status' in step) {
      res.writeHead(step.status, { 'content-type': 'application/json', ...step.headers });
      res.end(
        JSON.stringify(step.body ?? { error: { message: `scripted ${step.status}`, type: 'server_error' } }),
      );
      return;
    }
    if (!stream) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify(
          'text' in step
            ? completion({ role: 'assistant', content: step.text, refusal: null }, 'stop')
            : completion(
                { role: 'assistant', content: null, tool_calls: toolCalls(step), refusal: null },
                'tool_calls',
              ),
        ),
      );
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const send = (data: unknown) => res.write(`data: ${JSON.stringify(data)}\n\n`);
    if ('text' in step) {
      send(chunk({ role: 'assistant', content: '' }, null));
      // In three pieces, as a model streams tokens.
      const third = Math.ceil(step.text.length / 3);
      for (let i = 0; i < step.text.length; i += third)
        send(chunk({ content: step.text.slice(i, i + third) }, null));
      send(chunk({}, 'stop'));
    } else {
      const calls = toolCalls(step);
      send(chunk({ role: 'assistant', content: null }, null));
      calls.forEach((c, index) => {
        // The arguments in two pieces, as a model streams them.
        const half = Math.ceil(c.function.arguments.length / 2);
        send(
          chunk(
            {
              tool_calls: [
                {
                  index,
                  id: c.id,
                  type: 'function',
                  function: { name: c.function.name, arguments: c.function.arguments.slice(0, half) },
                },
              ],
            },
            null,
          ),
        );
        send(
          chunk({ tool_calls: [{ index, function: { arguments: c.function.arguments.slice(half) } }] }, null),
        );
      });
      send(chunk({}, 'tool_calls'));
    }
    res.end('data: [DONE]\n\n');
  };

  const server: Server = createServer((req, res) => {
    let raw = '';
    req.on('data', (b: Buffer) => (raw += b.toString()));
    req.on('end', () => {
      if (req.method !== 'POST' || !req.url?.endsWith('/chat/completions')) {
        res.writeHead(404).end();
        return;
      }
      const body = JSON.parse(raw);
      requests.push(body);
      const step = steps.shift() ?? opts.fallback;
      if (!step) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: 'the test scripted no more answers' } }));
        return;
      }
      void answer(step, body.stream === true, res, req);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    script: (...s) => steps.push(...s),
    unscript: () => steps.splice(0),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
