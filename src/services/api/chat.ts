/**
 * The chatbot: `POST /api/chat` runs a tool-calling conversation with any OpenAI-compatible chat-completions
 * model (CHAT_BASE_URL, CHAT_MODEL, CHAT_API_KEY) over the MCP task tools. The tools are the MCP server's own
 * (mcp.ts), reached in process through the MCP SDK's in-memory transport: one definition of each tool, the
 * same validation, words for dates and answers as over /mcp, and each write a normal API write (outbox event,
 * audit record) whose source is the chat. The tool loop is the official `openai` package's `runTools`.
 * Conversations are stored per user (store/chat.ts), so any replica continues any conversation. With
 * `Accept: text/event-stream` the reply streams as server-sent events: `token` (text as the model writes it),
 * `tool_call` (each call with its arguments and result, as it happens), then `done` or `error`.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type { OutgoingHttpHeaders } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import * as z from 'zod';
// Types only: the package is loaded when a model is configured (start-up of the default stays as it was).
import type OpenAI from 'openai';
import type * as OpenAISdk from 'openai';
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import type { RunnableToolFunctionWithParse } from 'openai/lib/RunnableFunction';
import type { Verifier } from '../../auth.ts';
import type { ChatConfig } from './manifest.ts';
import { systemClock, type Clock } from '../../domain/clock.ts';
import { IdempotencyMismatchError, NotFoundError, ValidationError } from '../../domain/errors.ts';
import { idempotencyKeyHeader, parseIdempotencyKey, requestHash } from '../../domain/idempotency.ts';
import { bodyJsonSchema, parseBody, refuse, singleValuedParameterIssues } from '../../domain/fields.ts';
import { codePoints, firstCodePoints, isUuid, storableText, textProblem } from '../../domain/text.ts';
import { causeOf, errorText } from '../../error-text.ts';
import { authenticatedScope } from '../../http/authenticated.ts';
import { instant } from '../../contracts/schemas.ts';
import { noContent, okWith, problemDoc, userIdParam } from '../../http/openapi.ts';
import { problem, sendProblem, type Problem } from '../../http/problem.ts';
import type { Logger } from '../../observability/logger.ts';
import {
  ChatStore,
  storableJson,
  type ChatMessage,
  type ChatToolCall,
  type KeptAnswer,
} from '../../store/chat.ts';
import type { Db } from '../../store/db.ts';
import type { UserSettingsStore } from '../../store/user-settings.ts';
import { systemPrompt } from './chat-prompt.ts';
import { NON_BLANK } from '../../domain/task-fields.ts';
import { createMcpServer, type McpDeps } from './mcp.ts';
import { restClient } from './mcp-rest.ts';

export const CHAT_SOURCE = '/taskflow/chat';
/** A user message, in code points. */
export const MESSAGE_MAX = 8_000;
/** A tool's answer as the model reads it, in characters (still JSON: toolAnswerForModel). */
const TOOL_RESULT_MAX = 20_000;
/** The history sent with a message, in characters: the oldest messages go first (small local models). */
export const HISTORY_MAX_CHARS = 60_000;
/** A reply as answered and stored, in characters (a model that runs on is cut, and says so). */
export const REPLY_MAX = 20_000;
/** What a cut text ends with. */
const CUT = ' [cut]';
const bounded = (text: string, max: number) => (text.length > max ? `${text.slice(0, max)}${CUT}` : text);
/** The conversations listed, the most recently continued first. */
const CONVERSATIONS_LISTED = 100;
/**
 * The most bytes read of one model answer (a JSON body or a stream): a reply is cut at REPLY_MAX characters and
 * eight tool calls' arguments are small, so a model that runs on is stopped, not held in memory until the
 * message's deadline (117 MB in 2 s from a local server).
 */
const MODEL_ANSWER_MAX_BYTES = 4 * 1024 * 1024;

/** A model answer over MODEL_ANSWER_MAX_BYTES. */
class ModelAnswerTooLarge extends Error {}
/** Thrown to end the tool loop without asking the model again: it asked for too many tool calls. */
class TooManyToolCalls extends Error {}
/** A model request that got no byte for CHAT_TIMEOUT_MS. */
class ModelRequestTimedOut extends Error {}

/**
 * The text of a message's `content`: a string, or the text parts some providers answer instead (an array of
 * `{type: 'text', text}`); null for anything else.
 */
function contentText(content: unknown): string | null {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return null;
  return content
    .map((p: unknown) =>
      typeof p === 'string'
        ? p
        : typeof (p as { text?: unknown })?.text === 'string'
          ? (p as { text: string }).text
          : '',
    )
    .join('');
}

/**
 * The fetch of the model client: a request ends when no byte of its answer (headers or body) came for
 * `timeoutMs` (the client's own timeout covers only the headers: a model that stalled after them was waited for
 * until the message's deadline), and when its body passes MODEL_ANSWER_MAX_BYTES.
 */
function modelFetch(timeoutMs: number): typeof fetch {
  return async (input, init) => {
    const idle = new AbortController();
    let timer = setTimeout(() => idle.abort(new ModelRequestTimedOut()), timeoutMs);
    const signal = init?.signal ? AbortSignal.any([init.signal, idle.signal]) : idle.signal;
    let res: Response;
    try {
      res = await fetch(input, { ...init, signal });
    } catch (err) {
      clearTimeout(timer);
      throw idle.signal.aborted ? idle.signal.reason : err;
    }
    if (!res.body) {
      clearTimeout(timer);
      return res;
    }
    let read = 0;
    const body = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          read += chunk.byteLength;
          if (read > MODEL_ANSWER_MAX_BYTES) {
            clearTimeout(timer);
            idle.abort(new ModelAnswerTooLarge());
            controller.error(idle.signal.reason);
            return;
          }
          clearTimeout(timer);
          timer = setTimeout(() => {
            idle.abort(new ModelRequestTimedOut());
            controller.error(idle.signal.reason);
          }, timeoutMs);
          controller.enqueue(chunk);
        },
        flush() {
          clearTimeout(timer);
        },
      }),
    );
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

export interface ChatDeps {
  db: Db;
  mcp: McpDeps;
  settings: UserSettingsStore;
  verify: Verifier;
  chat: ChatConfig | null;
  apiUrl: string | null;
  log: Logger;
  clock?: Clock;
}

/** A tool call of this turn, as answered: what the model asked and what the tool said. */
interface ToolCallRecord {
  name: string;
  arguments: unknown;
  result: unknown;
  is_error: boolean;
}

/*
 * The answers' schemas, from the code that builds them: `turn` (the reply), store/chat.ts (conversations and
 * their messages, as `toStored` writes them).
 */
const toolCallRecordDoc = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'arguments', 'result', 'is_error'],
  properties: {
    name: { type: 'string', description: 'the MCP tool' },
    arguments: { type: 'object', description: 'as the model gave them' },
    result: {
      type: ['object', 'string', 'null'],
      description: "the tool's structured answer, else its text",
    },
    is_error: { type: 'boolean' },
  },
} as const;

/** A turn's answer (`turn`), and the data of the streamed `done` event. */
const chatAnswerDoc = {
  type: 'object',
  additionalProperties: false,
  required: ['conversation_id', 'reply', 'tool_calls'],
  properties: {
    conversation_id: { type: 'string', format: 'uuid', description: 'send it back to continue' },
    reply: { type: 'string', maxLength: REPLY_MAX + CUT.length },
    tool_calls: { type: 'array', items: toolCallRecordDoc, description: 'in the order they ran' },
  },
} as const;

/** A turn that failed (the model's error, its time, a conversation deleted meanwhile): what it did still stands. */
const turnProblemDoc = {
  ...problemDoc,
  properties: {
    ...problemDoc.properties,
    conversation_id: { type: 'string', format: 'uuid' },
    tool_calls: { type: 'array', items: toolCallRecordDoc, description: 'the tool calls that ran before it' },
  },
} as const;

/** The chat's Idempotency-Key, as on task creates (routes.ts), and the header of a replay. */
const chatKeyDoc = idempotencyKeyHeader(
  'Makes a retried message safe: the same key and body within 24 hours answers the first answer (header Idempotent-Replayed: true) without asking the model or running a tool again, and the turn runs on when its client goes away; the same key while that message is answered is 409 with Retry-After, with another body 422. A failure is kept as the answer only once a tool that may write ran; before that a retry runs the message again',
);
const replayedHeaderDoc = {
  type: 'string',
  enum: ['true'],
  description:
    "Present when the Idempotency-Key was seen before: this is the first message's answer (also on its error answers), and nothing ran now",
};

const conversationDoc = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'title', 'created_at', 'updated_at'],
  properties: {
    id: { type: 'string', format: 'uuid' },
    title: { type: 'string', description: 'the start of its first message' },
    created_at: instant,
    updated_at: { ...instant, description: 'when it was last continued' },
  },
} as const;

/** An assistant's tool call as the chat-completions API writes it (ChatToolCall). */
const storedToolCallDoc = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'type', 'function'],
  properties: {
    id: { type: 'string' },
    type: { const: 'function' },
    // The provider's object, as it came (the SDK may add fields).
    function: {
      type: 'object',
      required: ['name', 'arguments'],
      properties: {
        name: { type: 'string' },
        arguments: {
          type: 'string',
          description: 'JSON, as the model wrote it; `{}` when that was not a JSON object (refused to it)',
        },
      },
    },
  },
} as const;

/** A stored message (ChatMessage): one shape per role. */
const chatMessageDoc = {
  oneOf: [
    {
      type: 'object',
      additionalProperties: false,
      required: ['role', 'content'],
      properties: { role: { const: 'user' }, content: { type: 'string' } },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['role', 'content'],
      properties: {
        role: { const: 'assistant' },
        content: { type: ['string', 'null'], description: 'null beside tool calls' },
        tool_calls: { type: 'array', items: storedToolCallDoc },
      },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['role', 'content', 'tool_call_id'],
      properties: {
        role: { const: 'tool' },
        content: { type: 'string', description: "the tool's answer as the model read it" },
        tool_call_id: { type: 'string' },
      },
    },
  ],
} as const;

/** A conversation's messages answered at once (GET /api/chat/conversations/{id}), by default and at most. */
const CONVERSATION_PAGE = 100;
const CONVERSATION_PAGE_MAX = 500;
const CONVERSATION_PAGE_PARAMETERS = ['limit', 'cursor'] as const;

/**
 * A cursor to the messages before `before` in a conversation: opaque to clients, and naming its conversation,
 * so that one used with another conversation is refused rather than answering a page of it from that point.
 */
const encodeMessageCursor = (conversationId: string, before: string) =>
  Buffer.from(JSON.stringify({ c: conversationId, before })).toString('base64url');

/** The largest bigint (chat_messages.id): a larger one in a cursor would be a 500 from the database. */
const BIGINT_MAX = 9_223_372_036_854_775_807n;

/** A message id out of a cursor this API returned, else null. */
function decodeMessageCursor(raw: string): { c: string; before: string } | null {
  try {
    const c = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as Record<string, unknown> | null;
    if (typeof c !== 'object' || c === null || typeof c.c !== 'string' || typeof c.before !== 'string')
      return null;
    if (!/^[1-9]\d{0,18}$/.test(c.before) || BigInt(c.before) > BIGINT_MAX) return null;
    return { c: c.c, before: c.before };
  } catch {
    return null;
  }
}

/**
 * The page of a conversation asked for, or a 400 naming each parameter that is wrong: an unknown one, one given
 * twice, a limit out of range, a cursor this API did not return for this conversation (as the task list's).
 */
function conversationPageQuery(
  query: Record<string, unknown>,
  conversationId: string,
): { limit: number; before: string | null } {
  const issues = singleValuedParameterIssues(query, CONVERSATION_PAGE_PARAMETERS);
  // One given twice is refused above, and its values are not read.
  const one = (key: (typeof CONVERSATION_PAGE_PARAMETERS)[number]): string | undefined => {
    const value = query[key];
    return value === undefined || Array.isArray(value) ? undefined : String(value);
  };
  const rawLimit = one('limit');
  const limit = rawLimit === undefined ? CONVERSATION_PAGE : Number(rawLimit);
  if (rawLimit !== undefined && (!/^\d+$/.test(rawLimit) || limit < 1 || limit > CONVERSATION_PAGE_MAX))
    issues.push({ path: 'limit', message: `must be an integer 1-${CONVERSATION_PAGE_MAX}` });
  const rawCursor = one('cursor');
  let before: string | null = null;
  if (rawCursor !== undefined && rawCursor !== '') {
    const cursor = decodeMessageCursor(rawCursor);
    if (!cursor) issues.push({ path: 'cursor', message: 'is not a cursor this API returned' });
    // The database writes a uuid in lower case (the cursor's), a client may not.
    else if (cursor.c !== conversationId.toLowerCase())
      issues.push({
        path: 'cursor',
        message: "belongs to another conversation; page with this one's next_cursor",
      });
    else before = cursor.before;
  }
  if (issues.length) throw new ValidationError(issues);
  return { limit, before };
}

/** The fields of a chat request (ADR 0014): each validates, and documents itself for the OpenAPI body. */
const CHAT_FIELDS = {
  conversation_id: z
    .unknown()
    .check((ctx) => {
      const id = ctx.value;
      if (id !== null && (typeof id !== 'string' || !isUuid(id)))
        refuse(ctx, 'must be the id of one of your conversations');
    })
    .meta({
      type: ['string', 'null'],
      format: 'uuid',
      description: 'continue this conversation (left out or null: a new one)',
    }),
  message: z
    .unknown()
    .check((ctx) => {
      const message = ctx.value;
      if (typeof message !== 'string' || message.trim() === '')
        return refuse(ctx, 'must be a non-empty string');
      if (codePoints(message) > MESSAGE_MAX) return refuse(ctx, `must be at most ${MESSAGE_MAX} characters`);
      const bad = textProblem(message);
      if (bad) refuse(ctx, bad);
    })
    .meta({ type: 'string', minLength: 1, maxLength: MESSAGE_MAX, pattern: NON_BLANK }),
};
const chatBodyDoc = bodyJsonSchema(CHAT_FIELDS, { required: ['message'] });

function parseChatBody(body: unknown): { conversationId: string | null; message: string } {
  const parsed = parseBody(body, CHAT_FIELDS, {
    required: ['message'],
    message: 'body must be a JSON object {conversation_id?, message}',
  });
  if (!parsed.ok) throw new ValidationError(parsed.issues);
  const id = parsed.value.conversation_id;
  return { conversationId: typeof id === 'string' ? id : null, message: parsed.value.message as string };
}

/**
 * A tool call's arguments as they go back to the model: as it wrote them when they are a JSON object, else `{}`
 * (the tool's answer told it they were refused). A provider may refuse a request whose messages carry others:
 * Ollama answers 400 "invalid tool call arguments", to the rest of that turn and to every later message of the
 * conversation.
 */
function replayableArguments(raw: unknown): string {
  try {
    const value: unknown = typeof raw === 'string' ? JSON.parse(raw) : null;
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return raw as string;
  } catch {
    // not JSON: `{}`
  }
  return '{}';
}

/** A page of list_tasks or search_tasks: tasks, their count, and the cursor of the next page. */
interface ListPage {
  tasks: unknown[];
  count: number;
  next_cursor: string | null;
}
const isListPage = (v: unknown): v is ListPage =>
  typeof v === 'object' && v !== null && Array.isArray((v as ListPage).tasks) && 'next_cursor' in v;

/** What a page asked again for fewer tasks says to the model. */
const SHORTER_PAGE = `a shorter page than asked, to fit the ${TOOL_RESULT_MAX} characters of a tool answer: pass next_cursor as cursor for the rest`;

/** How many of `items`, from the first, fit in `room` characters as the elements of a JSON array. */
function itemsThatFit(items: readonly unknown[], room: number): number {
  let used = 0;
  for (let i = 0; i < items.length; i++) {
    used += (JSON.stringify(items[i]) ?? 'null').length + (i > 0 ? 1 : 0);
    if (used > room) return i;
  }
  return items.length;
}

/** `value` with its strings over `max` characters cut (marked), but not a cursor (the model pages with it). */
function textsCut(value: unknown, max: number): unknown {
  if (typeof value === 'string')
    return value.length > max ? `${value.slice(0, max).replace(/[\uD800-\uDBFF]$/, '')}${CUT}` : value;
  if (Array.isArray(value)) return value.map((v) => textsCut(v, max));
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [k, k === 'next_cursor' ? v : textsCut(v, max)]),
  );
}

/**
 * A list page over TOOL_RESULT_MAX asked again (`relist`) for as many tasks as fit, so that its next_cursor goes
 * on from the last task the model reads. The cursor of that page is not known before it comes: room for it is
 * guessed from the one at hand, and the page asked again when the guess was short.
 */
async function shorterPage(
  page: ListPage,
  relist: (limit: number) => Promise<unknown>,
): Promise<Record<string, unknown>> {
  let current = page;
  for (let asked = 0; asked < 3; asked++) {
    const cursorRoom = Math.max(current.next_cursor?.length ?? 0, 200) + 500;
    const shell = JSON.stringify({ ...current, tasks: [], next_cursor: '', note: SHORTER_PAGE }).length;
    const fit = Math.max(1, itemsThatFit(current.tasks, TOOL_RESULT_MAX - shell - cursorRoom));
    if (fit >= current.tasks.length) break;
    const shorter = await relist(fit);
    if (!isListPage(shorter)) break;
    current = shorter;
  }
  return current.next_cursor === null ? { ...current } : { ...current, note: SHORTER_PAGE };
}

/**
 * Another answer over TOOL_RESULT_MAX with its longest list shortened to the items that fit, saying how many were
 * left out (list_notifications, up to 200 of them).
 */
function withItemsLeftOut(answer: Record<string, unknown>): Record<string, unknown> {
  const lists = Object.entries(answer).filter((e): e is [string, unknown[]] => Array.isArray(e[1]));
  const longest = lists.sort((a, b) => JSON.stringify(b[1]).length - JSON.stringify(a[1]).length)[0];
  if (!longest) return answer;
  const [key, items] = longest;
  const leftOut = (n: number) =>
    `${n} of the ${items.length} ${key} left out, to fit the ${TOOL_RESULT_MAX} characters of a tool answer`;
  const shell = JSON.stringify({ ...answer, [key]: [], left_out: leftOut(items.length) }).length;
  const fit = itemsThatFit(items, TOOL_RESULT_MAX - shell);
  // A list that fits whole is not what makes the answer too long (a task's description is).
  if (fit === items.length) return answer;
  return { ...answer, [key]: items.slice(0, fit), left_out: leftOut(items.length - fit) };
}

/**
 * A tool's answer as the model reads it: at most TOOL_RESULT_MAX characters, and JSON when the tool answered JSON.
 * A list cut in the middle of its JSON lost its count and next_cursor (at its end): the model could neither see
 * the rest nor page to it. A list page (`relist`: list_tasks, search_tasks) comes as a shorter page that goes on
 * where it ends (shorterPage), another list without the items that do not fit (withItemsLeftOut), and what is
 * still too long with its long texts cut (a task's description of 10,000 characters). Text is cut, marked.
 */
async function toolAnswerForModel(
  result: unknown,
  relist: ((limit: number) => Promise<unknown>) | null,
): Promise<string> {
  if (typeof result === 'string') return bounded(result, TOOL_RESULT_MAX);
  const whole = JSON.stringify(result) ?? 'null';
  if (
    whole.length <= TOOL_RESULT_MAX ||
    typeof result !== 'object' ||
    result === null ||
    Array.isArray(result)
  )
    return bounded(whole, TOOL_RESULT_MAX);
  const fitted =
    isListPage(result) && relist
      ? await shorterPage(result, relist)
      : withItemsLeftOut(result as Record<string, unknown>);
  for (const max of [Infinity, 1_000, 100]) {
    const text = JSON.stringify(textsCut(fitted, max));
    if (text.length <= TOOL_RESULT_MAX) return text;
  }
  return JSON.stringify({
    error: `the answer was over ${TOOL_RESULT_MAX} characters, too long to read even with its texts cut`,
  });
}

/** What messages cost of the history's budget, in characters. */
const historySize = (messages: readonly ChatMessage[]) =>
  messages.reduce(
    (n, m) =>
      n + (m.content?.length ?? 0) + (m.role === 'assistant' ? JSON.stringify(m.tool_calls ?? []).length : 0),
    0,
  );

/**
 * Whether every tool answer of a turn follows the call it answers: a turn the history window began inside of
 * (ChatStore.messages) is not whole, and its answers without their calls would be refused by a provider.
 */
function whole(turn: readonly ChatMessage[]): boolean {
  const asked = new Set<string>();
  for (const m of turn) {
    if (m.role === 'assistant') for (const c of m.tool_calls ?? []) asked.add(c.id);
    else if (m.role === 'tool' && !asked.has(m.tool_call_id)) return false;
  }
  return true;
}

/**
 * History sent to the model: whole turns (a user message and what followed it), the newest first while they fit
 * in `maxChars`, so a window never starts in the middle of a tool exchange (a provider refuses that). A newest
 * turn too long alone (tool answers of a large list), or not whole (more messages than the window: many tool calls
 * at once), is kept as its words: the user's message and the reply, without the tool exchange; before, the whole
 * history went and the model lost what "the second one" meant, or what "go on" was about.
 * No assistant tool call is left without all its answers (a turn cut off by an error), and each call's arguments
 * are a JSON object (replayableArguments).
 */
export function usableHistory(messages: readonly ChatMessage[], maxChars = Infinity): ChatMessage[] {
  let out: ChatMessage[] = [];
  let used = 0;
  for (let end = messages.length; end > 0;) {
    let start = end - 1;
    while (start > 0 && messages[start]!.role !== 'user') start--;
    if (messages[start]!.role !== 'user') break; // messages before the first user message: no turn
    let turn = messages.slice(start, end);
    let cost = historySize(turn);
    if (used + cost > maxChars || !whole(turn)) {
      if (out.length > 0) break;
      const reply = turn.findLast((m) => m.role === 'assistant' && !m.tool_calls?.length && m.content);
      turn = reply ? [turn[0]!, reply] : [turn[0]!];
      cost = historySize(turn);
      if (cost > maxChars) break;
    }
    out = [...turn, ...out];
    used += cost;
    end = start;
  }
  for (let i = out.length - 1; i >= 0; i--) {
    const m = out[i]!;
    if (m.role !== 'assistant' || !m.tool_calls?.length) continue;
    const answered = new Set(out.slice(i + 1).flatMap((n) => (n.role === 'tool' ? [n.tool_call_id] : [])));
    if (!m.tool_calls.every((c) => answered.has(c.id))) out.splice(i);
  }
  return out.map((m) =>
    m.role === 'assistant' && m.tool_calls
      ? {
          ...m,
          tool_calls: m.tool_calls.map((c) => ({
            ...c,
            function: { ...c.function, arguments: replayableArguments(c.function.arguments) },
          })),
        }
      : m,
  );
}

/** The runner's messages in the stored shape (system messages are not stored). */
function toStored(m: ChatCompletionMessageParam): ChatMessage | null {
  if (m.role === 'user') return { role: 'user', content: typeof m.content === 'string' ? m.content : '' };
  if (m.role === 'tool')
    return {
      role: 'tool',
      content: typeof m.content === 'string' ? m.content : '',
      tool_call_id: m.tool_call_id,
    };
  if (m.role === 'assistant') {
    const calls = (m.tool_calls ?? []).flatMap((c): ChatToolCall[] =>
      c.type === 'function' ? [{ id: c.id, type: 'function', function: c.function }] : [],
    );
    // Without tool calls an assistant message needs text (a provider refuses a null one in the history):
    // a refusal's words, or nothing.
    const text = contentText(m.content);
    return calls.length
      ? { role: 'assistant', content: text, tool_calls: calls }
      : { role: 'assistant', content: text ?? m.refusal ?? '' };
  }
  return null;
}

/**
 * A message the model wrote, made storable (`storableText`): a model may answer NUL or half a surrogate pair,
 * which the database refuses, and by then the tools it asked for have run; the turn is kept, not refused.
 */
function storable(m: ChatMessage): ChatMessage {
  if (m.role === 'tool')
    return { ...m, content: storableText(m.content), tool_call_id: storableText(m.tool_call_id) };
  if (m.role !== 'assistant') return m;
  const out: ChatMessage = { ...m, content: m.content === null ? null : storableText(m.content) };
  // A model may also send a tool call whose id, name or arguments are not strings (null): the runner answered
  // it as an invalid call, and it is stored as text.
  const text = (v: unknown) => storableText(typeof v === 'string' ? v : String(v));
  if (m.tool_calls)
    out.tool_calls = m.tool_calls.map((c) => ({
      ...c,
      id: text(c.id),
      function: { name: text(c.function.name), arguments: text(c.function.arguments) },
    }));
  return out;
}

/**
 * A provider's error text without the API key (a provider or proxy may quote the key it was sent: the text goes
 * to every chat user), nor any bearer token.
 */
function withoutSecret(text: string, apiKey: string | undefined): string {
  const out = apiKey && apiKey.length >= 8 ? text.replaceAll(apiKey, '[redacted]') : text;
  return out.replace(/(bearer\s+)\S+/gi, '$1[redacted]');
}

/** What a provider's failure answers: 504 on a timeout, 503 + Retry-After on its rate limit, else 502. */
function providerProblem(
  err: unknown,
  sdk: typeof OpenAISdk,
  apiKey: string | undefined,
): { problem: Problem; retryAfter?: string } | null {
  const { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError, RateLimitError } = sdk;
  if (causeOf(err, ModelAnswerTooLarge))
    return {
      problem: problem(
        502,
        `the language model's answer ran past ${MODEL_ANSWER_MAX_BYTES} bytes and was stopped`,
      ),
    };
  if (
    err instanceof APIConnectionTimeoutError ||
    err instanceof APIUserAbortError ||
    causeOf(err, ModelRequestTimedOut)
  )
    return { problem: problem(504, 'the language model did not answer in time; try again') };
  if (err instanceof RateLimitError) {
    const retryAfter = err.headers?.get('retry-after') ?? undefined;
    return {
      problem: problem(503, 'the language model is rate limited; try again later'),
      ...(retryAfter ? { retryAfter } : {}),
    };
  }
  if (err instanceof APIConnectionError)
    return { problem: problem(502, 'the language model cannot be reached') };
  if (err instanceof APIError)
    return {
      problem: problem(
        502,
        `the language model answered ${err.status ?? 'an error'}: ${withoutSecret(err.message, apiKey).slice(0, 300)}`,
      ),
    };
  // Anything else of the client (a connection dropped mid-answer, a chunk or answer it cannot read). Its
  // message can be the SDK's own internals ("Cannot read properties of undefined (reading 'map')" for an
  // answer without choices): the detail says what happened, the log has the message.
  if (err instanceof sdk.OpenAIError)
    return {
      problem: problem(
        502,
        "the language model's answer could not be read: it was cut off, or is not a chat-completions answer",
      ),
    };
  return null;
}

export async function registerChat(app: FastifyInstance, deps: ChatDeps): Promise<void> {
  const store = new ChatStore(deps.db);
  const clock = deps.clock ?? systemClock;
  const chat = deps.chat;
  const sdk = chat ? await import('openai') : null;
  const configured: { chat: ChatConfig; openai: OpenAI; sdk: typeof OpenAISdk } | null =
    chat && sdk
      ? {
          chat,
          sdk,
          openai: new sdk.default({
            baseURL: chat.baseUrl,
            apiKey: chat.apiKey,
            timeout: chat.timeoutMs,
            fetch: modelFetch(chat.timeoutMs),
            maxRetries: 0,
          }),
        }
      : null;
  const security = [{ bearerAuth: [] }];
  const doc = (summary: string, extra: object = {}) => ({
    schema: { tags: ['chat'], summary, security, ...extra },
  });

  const wantsStream = (req: FastifyRequest) => /\btext\/event-stream\b/.test(req.headers.accept ?? '');

  /** Answers with server-sent events: the reply's headers sent, and how to send an event. */
  function openStream(reply: FastifyReply) {
    reply.hijack();
    // With the headers set on the reply so far (CORS): hijacked, Fastify no longer writes them.
    reply.raw.writeHead(200, {
      ...(reply.getHeaders() as OutgoingHttpHeaders),
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
    });
    return (event: string, data: unknown) => {
      if (!reply.raw.writableEnded && !reply.raw.destroyed)
        reply.raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
  }

  /**
   * A message's kept answer to a retry with its Idempotency-Key: as JSON, or streamed in one piece (its tool
   * calls, the reply as one `token`, then `done`; a failure's tool calls, then `error`).
   */
  function replay(req: FastifyRequest, reply: FastifyReply, kept: KeptAnswer) {
    reply.header('idempotent-replayed', 'true');
    if (!wantsStream(req)) return kept.status === 200 ? kept.body : sendProblem(reply, kept.body as Problem);
    const send = openStream(reply);
    const { tool_calls: calls, reply: text } = kept.body as { tool_calls?: unknown[]; reply?: string };
    for (const call of calls ?? []) send('tool_call', call);
    if (kept.status !== 200) send('error', kept.body);
    else {
      if (text) send('token', { text });
      send('done', kept.body);
    }
    reply.raw.end();
    return reply;
  }

  /** The MCP task tools for `userId`, in process: a client of a server made for this request. */
  async function toolsFor(req: FastifyRequest, userId: string) {
    const server = createMcpServer(
      { ...deps.mcp, source: CHAT_SOURCE },
      {
        userId,
        rest: restClient({
          app: req.server,
          authorization: req.headers.authorization ?? '',
          caller: { ip: req.ip },
          apiUrl: deps.apiUrl,
        }),
        clientIp: req.ip,
        // The audit trail's user agent names the chat and its model: the writes' source.
        userAgent: `taskflow-chat (${deps.chat?.model ?? 'no model'})`,
      },
    );
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
    const client = new Client({ name: 'taskflow-chat', version: '1.0.0' });
    await server.connect(serverSide);
    await client.connect(clientSide);
    const { tools } = await client.listTools();
    return { client, tools, close: () => Promise.allSettled([client.close(), server.close()]) };
  }

  async function converse(req: FastifyRequest, reply: FastifyReply, userId: string) {
    if (!configured)
      return sendProblem(
        reply,
        problem(
          503,
          'the chat endpoint has no language model: set CHAT_BASE_URL and CHAT_MODEL (and CHAT_API_KEY if the provider needs one)',
        ),
      );
    const { conversationId, message } = parseChatBody(req.body);
    // Held for at most the whole message's bound and the tools' time after it.
    const holdMs = configured.chat.timeoutMs * 2 + 60_000;
    // Idempotency-Key, as on task creates: a retry of a message answers its first answer, and the model is not
    // asked again. Before the conversation: a replay makes none.
    const key = parseIdempotencyKey(req.headers['idempotency-key'], 'Idempotency-Key');
    if (key) {
      const held = await store.claimKey(userId, key, requestHash(req.body), holdMs);
      if (held === 'mismatch') throw new IdempotencyMismatchError(key);
      if (held === 'running')
        return sendProblem(
          reply.header('retry-after', '5'),
          problem(
            409,
            `a message with Idempotency-Key "${key}" is being answered; send it again after Retry-After for its answer`,
          ),
        );
      if (held !== 'claimed') return replay(req, reply, held);
    }
    let kept = false;
    const keep = key
      ? async (answer: KeptAnswer) => {
          await store.keepAnswer(userId, key, answer);
          kept = true;
        }
      : null;
    try {
      return await claimAndAnswer(req, reply, userId, conversationId, message, holdMs, keep);
    } finally {
      // Not answered (refused, failed before any write, or an error): a retry runs the message again.
      if (key && !kept) await store.releaseKey(userId, key).catch(() => undefined);
    }
  }

  async function claimAndAnswer(
    req: FastifyRequest,
    reply: FastifyReply,
    userId: string,
    conversationId: string | null,
    message: string,
    holdMs: number,
    keep: ((answer: KeptAnswer) => Promise<void>) | null,
  ) {
    const { turnsPerUser } = configured!.chat;
    const conversation = conversationId
      ? await store.get(userId, conversationId)
      : await store.create(userId, firstCodePoints(message.trim(), 80));
    if (!conversation) throw new NotFoundError('conversation');
    // One turn at a time: a second one would read the same history, and their messages would interleave.
    const claim = await store.claimTurn(userId, conversation.id, holdMs, turnsPerUser);
    if (claim === 'conversation')
      return sendProblem(reply, {
        ...problem(
          409,
          'a message of this conversation is being answered; send this one once that answer has come',
        ),
        conversation_id: conversation.id,
      } as Problem);
    if (claim === 'user') {
      if (!conversationId) await store.delete(userId, conversation.id); // made for this message: not kept
      return sendProblem(reply.header('retry-after', '5'), {
        ...problem(
          429,
          `${turnsPerUser} of your messages are being answered (CHAT_TURNS_PER_USER); send this one once one of those answers has come`,
        ),
        conversation_id: conversation.id,
      } as Problem);
    }
    try {
      return await answerTurn(req, reply, userId, conversation.id, message, keep);
    } finally {
      await store.releaseTurn(conversation.id).catch(() => undefined);
    }
  }

  async function answerTurn(
    req: FastifyRequest,
    reply: FastifyReply,
    userId: string,
    conversationId: string,
    message: string,
    keep: ((answer: KeptAnswer) => Promise<void>) | null,
  ) {
    const history = usableHistory(
      await store.messages(conversationId, configured!.chat.historyMessages),
      HISTORY_MAX_CHARS,
    );
    // The caller going away stops the turn: no more model requests, no more tool calls as the user. Not with an
    // Idempotency-Key: its client retries for the answer (a flaky network), so the turn ends and keeps it.
    const gone = new AbortController();
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished && !keep) gone.abort();
    });
    /**
     * The answer of the turn, or its failure (as the stream's `error` event: the tool calls that ran before it,
     * whose writes stand), kept for the key before it is sent: a retry after it finds it. A failure is kept only
     * when a tool may have written: else the key is let go and a retry runs the message again.
     */
    const finish = async (outcome: Awaited<ReturnType<typeof turn>>) => {
      const answer: KeptAnswer =
        'answer' in outcome
          ? { status: 200, body: outcome.answer }
          : { status: outcome.problem.status, body: { ...outcome.problem, tool_calls: outcome.calls } };
      if ('answer' in outcome || outcome.wrote) await keep?.(answer);
      return answer;
    };
    if (!wantsStream(req)) {
      const outcome = await turn(req, userId, conversationId, history, message, gone.signal, null);
      const answer = await finish(outcome);
      if (answer.status === 200) return answer.body;
      if ('retryAfter' in outcome && outcome.retryAfter) reply.header('retry-after', outcome.retryAfter);
      return sendProblem(reply, answer.body as Problem);
    }
    const send = openStream(reply);
    // Whatever happens from here, the stream ends with `done` or `error`.
    try {
      const outcome = await turn(req, userId, conversationId, history, message, gone.signal, send);
      const answer = await finish(outcome);
      if (answer.status === 200) send('done', answer.body);
      // The headers are sent: a rate limit's Retry-After goes in the event (seconds, or an HTTP date).
      else
        send('error', {
          ...answer.body,
          ...('retryAfter' in outcome && outcome.retryAfter ? { retry_after: outcome.retryAfter } : {}),
        });
    } catch (err) {
      deps.log.error({ err, conversation_id: conversationId }, 'chat: the turn failed');
      send('error', {
        ...problem(500, 'internal error; what the assistant did so far is in the conversation'),
        conversation_id: conversationId,
      });
    } finally {
      reply.raw.end();
    }
    return reply;
  }

  /**
   * One message of a conversation: the model and its tool calls until it answers in words, then the turn's
   * messages stored (a failed turn too: its tool calls may have written tasks). `send` streams events.
   */
  async function turn(
    req: FastifyRequest,
    userId: string,
    conversationId: string,
    history: ChatMessage[],
    message: string,
    gone: AbortSignal,
    send: ((event: string, data: unknown) => void) | null,
  ): Promise<
    | { answer: { conversation_id: string; reply: string; tool_calls: ToolCallRecord[] } }
    | { problem: Problem; retryAfter?: string; calls: ToolCallRecord[]; wrote: boolean }
  > {
    const { chat: model, openai: client, sdk: lib } = configured!;
    const user = await deps.settings.get(userId);
    const mcp = await toolsFor(req, userId);
    const calls: ToolCallRecord[] = [];
    // Whether a tool that may write ran (one not read-only, even if it answered an error).
    const readOnly = new Set(mcp.tools.filter((t) => t.annotations?.readOnlyHint).map((t) => t.name));
    const wrote = () => calls.some((c) => !readOnly.has(c.name));
    const userMessage: ChatMessage = { role: 'user', content: message };
    const prefix: ChatCompletionMessageParam[] = [
      {
        role: 'system',
        content: systemPrompt({
          now: clock.now(),
          timezone: user.timezone,
          defaultReminders: user.default_reminders,
        }),
      },
      ...(history as ChatCompletionMessageParam[]),
    ];
    /**
     * A failure of ours once tools may have run (the turn not stored, an error that is not the provider's): a
     * 500 with the tool calls, which an Idempotency-Key keeps when one wrote, so a retry does not run them again.
     */
    const failedAfterTools = (err: unknown) => {
      deps.log.error({ err, conversation_id: conversationId }, 'chat: the turn failed');
      return {
        problem: {
          ...problem(500, 'internal error; the tool calls this message made (tool_calls) stand'),
          conversation_id: conversationId,
        } as Problem,
        calls,
        wrote: wrote(),
      };
    };
    let runner: { messages: ChatCompletionMessageParam[] } | undefined;
    let failure: unknown;
    let timer: NodeJS.Timeout | undefined;
    let replyText = '';
    /** Whether an answer of the model asked for more tool calls than the message may (boundCalls). */
    let flooded = false;
    /** The reply, cut, when its stream was stopped at REPLY_MAX characters. */
    let cut: string | null = null;
    /** The final answer's text: a string or text parts; anything else is not a chat-completions answer. */
    const replyOf = (content: unknown): string => {
      const text = contentText(content ?? '');
      if (text === null) throw new lib.OpenAIError('the reply is neither text nor text parts');
      return storableText(bounded(text, REPLY_MAX));
    };
    try {
      // Tools run one at a time, in the order the model asked for them (writes depend on each other).
      let queue: Promise<unknown> = Promise.resolve();
      const tools: RunnableToolFunctionWithParse<Record<string, unknown>>[] = mcp.tools.map((t) => ({
        type: 'function',
        function: {
          name: t.name,
          description: t.description ?? '',
          parameters: t.inputSchema as Record<string, unknown>,
          // A call whose arguments are not JSON goes back to the model as the tool's answer (runTools).
          parse: (raw: string) => {
            let value: unknown;
            try {
              value = JSON.parse(raw || '{}');
            } catch (err) {
              throw new Error(
                `the arguments are not valid JSON (${(err as Error).message}); send them as a JSON object`,
              );
            }
            if (typeof value !== 'object' || value === null || Array.isArray(value))
              throw new Error('the arguments must be a JSON object');
            return value as Record<string, unknown>;
          },
          function: (args: Record<string, unknown>) => {
            const run = queue.then(async () => {
              if (gone.aborted) return 'Not run: the user left.';
              if (calls.length >= model.maxToolCalls)
                return `Not run: this message already used its ${model.maxToolCalls} tool calls. Tell the user what was done and what is left.`;
              const r = await mcp.client.callTool({ name: t.name, arguments: args });
              const first = (r.content as { type: string; text?: string }[] | undefined)?.[0];
              const result = r.structuredContent ?? first?.text ?? null;
              // As it is answered, stored and kept for an Idempotency-Key: arguments the tool refused (a NUL, a lone
              // surrogate) are the model's, and jsonb refuses them (storableJson).
              const record = storableJson({
                name: t.name,
                arguments: args,
                result,
                is_error: r.isError === true,
              }) as ToolCallRecord;
              calls.push(record);
              send?.('tool_call', record);
              // A tool that pages (a `limit` argument) is asked again for a page that fits the model's bound.
              const relist =
                'limit' in (t.inputSchema.properties ?? {})
                  ? async (limit: number) => {
                      const page = await mcp.client.callTool({ name: t.name, arguments: { ...args, limit } });
                      return page.isError ? null : page.structuredContent;
                    }
                  : null;
              return toolAnswerForModel(result, relist);
            });
            queue = run.catch(() => undefined);
            return run;
          },
        },
      }));
      const params = {
        model: model.model,
        messages: [...prefix, userMessage as ChatCompletionMessageParam],
        tools,
      };
      // The whole message's bound: a timer of its own, cleared below (a timeout signal combined with
      // AbortSignal.any did not fire: a turn of four 3 s requests ran 12 s against a bound of 10).
      const deadline = new AbortController();
      timer = setTimeout(() => deadline.abort(), model.timeoutMs * 2);
      gone.addEventListener('abort', () => deadline.abort(), { once: true });
      const options = {
        maxChatCompletions: model.maxToolCalls + 2,
        signal: deadline.signal,
        // An answer that asked for too many tool calls (boundCalls): the turn ends, the model is not asked again.
        afterCompletion: () => {
          if (flooded) throw new TooManyToolCalls();
        },
      };
      /*
       * Every tool call the model asks for is answered with a message (an unknown tool's lists all the tools, 420
       * characters), sent back with each later request of the turn and stored: 8,000 unknown-tool calls an answer,
       * ten answers, sent 226 MB to the model and stored 80,012 messages. A message may ask for twice the calls
       * that run (CHAT_MAX_TOOL_CALLS), run or not, so a model that asks for a few too many is answered "Not run"
       * and can tell the user what is left; the calls of an answer past that are dropped from it (neither run, nor
       * answered, sent or stored), and the turn ends with the reply that says it stopped.
       */
      const callsAskedMax = model.maxToolCalls * 2;
      let callsAsked = 0;
      const boundCalls = (m: ChatCompletionMessageParam) => {
        if (m.role !== 'assistant' || !m.tool_calls?.length) return;
        const room = Math.max(0, callsAskedMax - callsAsked);
        callsAsked += m.tool_calls.length;
        if (m.tool_calls.length <= room) return;
        deps.log.warn(
          { conversation_id: conversationId, asked: callsAsked, bound: callsAskedMax },
          'chat: the model asked for more tool calls than a message may; the turn stops',
        );
        m.tool_calls.splice(room);
        flooded = true;
      };
      // Once the model's tool calls are answered (their arguments read), the runner sends them back with its next
      // request as they came: arguments that are not a JSON object go as `{}` (replayableArguments), each call
      // once, at its message's first answer.
      let asked: ChatCompletionMessageParam | undefined;
      const replayable = (m: ChatCompletionMessageParam) => {
        if (m.role === 'assistant') asked = m;
        if (m.role !== 'tool' || asked?.role !== 'assistant') return;
        for (const c of asked.tool_calls ?? [])
          if (c.type === 'function') c.function.arguments = replayableArguments(c.function.arguments);
        asked = undefined;
      };
      if (send) {
        const streaming = client.chat.completions.runTools({ ...params, stream: true }, options);
        runner = streaming;
        streaming.on('message', boundCalls);
        streaming.on('message', replayable);
        // The reply streams up to REPLY_MAX characters, as it is answered and stored; there the model's answer is
        // no longer read (a model that runs on would be read to the message's deadline) and the reply is what
        // came, cut.
        let streamed = '';
        streaming.on('content', (delta: unknown) => {
          if (typeof delta !== 'string' || cut !== null) return;
          const text = delta.slice(0, REPLY_MAX - streamed.length);
          streamed += text;
          send('token', { text });
          if (streamed.length >= REPLY_MAX) {
            cut = storableText(bounded(streamed + CUT, REPLY_MAX));
            streaming.abort();
          }
        });
        try {
          replyText = replyOf(await streaming.finalContent());
        } catch (err) {
          if (cut === null) throw err;
          replyText = cut;
        }
      } else {
        const plain = client.chat.completions.runTools(params, options);
        runner = plain;
        plain.on('message', boundCalls);
        plain.on('message', replayable);
        replyText = replyOf(await plain.finalContent());
      }
    } catch (err) {
      if (!causeOf(err, TooManyToolCalls)) failure = err;
    } finally {
      clearTimeout(timer);
      await mcp.close();
    }
    const messages = (runner?.messages ?? [])
      .slice(prefix.length)
      .map(toStored)
      .filter((m): m is ChatMessage => m !== null)
      .map(storable)
      .map((m) =>
        m.role === 'assistant' && m.content ? { ...m, content: bounded(m.content, REPLY_MAX) } : m,
      );
    // Stopped while the model wrote its reply: the runner has no message of it.
    if (cut !== null) messages.push({ role: 'assistant', content: cut });
    // An answer whose tool calls were all past the bound (boundCalls) is not kept: none of them ran.
    const last = messages.at(-1);
    if (flooded && last?.role === 'assistant' && !last.tool_calls?.length) messages.pop();
    // The model asked for tools until the bound of requests (maxChatCompletions), or for too many at once, and
    // never answered in words: the user is told so, in the reply and in the conversation, rather than given an
    // empty one.
    if (failure === undefined && replyText === '' && (flooded || messages.at(-1)?.role === 'tool')) {
      replyText = `I stopped before finishing: this message reached its limit of ${model.maxToolCalls} tool calls. What ran is listed with this reply; ask me to go on.`;
      messages.push({ role: 'assistant', content: replyText });
      send?.('token', { text: replyText });
    }
    try {
      await store.append(conversationId, usableHistory(messages.length ? messages : [userMessage]));
    } catch (err) {
      // Deleted while the model answered (DELETE /api/chat/conversations/{id}): what the tools did stands.
      if ((err as { code?: string }).code !== '23503') return failedAfterTools(err);
      return {
        problem: {
          ...problem(
            409,
            'the conversation was deleted while this message was answered: nothing of it is stored, and the tool calls it made (tool_calls) stand',
          ),
          conversation_id: conversationId,
        } as Problem,
        calls,
        wrote: wrote(),
      };
    }
    if (failure === undefined)
      return { answer: { conversation_id: conversationId, reply: replyText, tool_calls: calls } };
    // 499 (nginx's "client closed request"): nobody reads it; the log says why the turn stopped.
    const mapped = gone.aborted
      ? { problem: problem(499, 'the client went away') }
      : providerProblem(failure, lib, model.apiKey);
    if (!mapped) return failedAfterTools(failure);
    // Its text without the key, as in the answer: the SDK's error quotes what the provider said, which may be it.
    deps.log.warn(
      {
        err: withoutSecret(errorText(failure), model.apiKey),
        status: (failure as { status?: unknown }).status,
        conversation_id: conversationId,
      },
      'chat: the language model failed',
    );
    return {
      ...mapped,
      problem: { ...mapped.problem, conversation_id: conversationId } as Problem,
      calls,
      wrote: wrote(),
    };
  }

  await authenticatedScope(app, deps, async (scope, userOf) => {
    const chatDoc = {
      body: chatBodyDoc,
      headers: chatKeyDoc,
      // 503 carries the provider's Retry-After when it is rate limited (withErrorAnswers declares it).
      response: {
        ...okWith(
          'The reply and the tool calls it made, or with Accept: text/event-stream as they happen',
          {
            content: {
              'application/json': { schema: chatAnswerDoc },
              'text/event-stream': {
                schema: {
                  type: 'string',
                  description:
                    'Server-sent events: `token` {text} as the model writes, `tool_call` (a tool call, as in tool_calls) as each runs, then `done` (the JSON answer) or `error` (problem details with conversation_id and the tool_calls so far, and retry_after when the model is rate limited); a replay (Idempotent-Replayed) sends the kept answer in one piece: its tool calls, the reply as one `token`, then `done` (or `error`)',
                },
              },
            },
          },
          { 'Idempotent-Replayed': replayedHeaderDoc },
        ),
        404: problemDoc,
        // Also a retry while its Idempotency-Key's message is answered, with Retry-After.
        409: turnProblemDoc,
        422: problemDoc,
        502: turnProblemDoc,
        503: turnProblemDoc,
        504: turnProblemDoc,
      },
    };
    scope.post(
      '/api/chat',
      doc('Talk to the task assistant (a language model calling the task tools as you)', chatDoc),
      (req, reply) => converse(req, reply, userOf(req)),
    );
    scope.post(
      '/api/:user_id/chat',
      doc('Talk to the task assistant (Phase III route)', {
        ...chatDoc,
        params: { type: 'object', properties: { user_id: userIdParam } },
      }),
      (req: FastifyRequest<{ Params: { user_id: string } }>, reply) => {
        if (req.params.user_id !== userOf(req))
          return sendProblem(reply, problem(403, 'the user in the path is not the authenticated user'));
        return converse(req, reply, userOf(req));
      },
    );
    scope.get(
      '/api/chat/conversations',
      doc('Your conversations, the most recently continued first', {
        response: okWith(`Your ${CONVERSATIONS_LISTED} most recently continued conversations`, {
          type: 'object',
          additionalProperties: false,
          required: ['items'],
          properties: { items: { type: 'array', maxItems: CONVERSATIONS_LISTED, items: conversationDoc } },
        }),
      }),
      async (req) => ({ items: await store.list(userOf(req), CONVERSATIONS_LISTED) }),
    );
    const idParam = { type: 'object', properties: { id: { type: 'string', format: 'uuid' } } };
    // A page of the messages, the last by default: a conversation used for months holds thousands (a message
    // each for the user, the reply and every tool call), and all of them were read, answered and drawn at once.
    scope.get(
      '/api/chat/conversations/:id',
      doc('A conversation with a page of its messages, the last by default', {
        params: idParam,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            limit: {
              type: 'integer',
              minimum: 1,
              maximum: CONVERSATION_PAGE_MAX,
              default: CONVERSATION_PAGE,
              description:
                "messages on the page; fewer when they would begin with tool answers (those go with their call's page), more only when one message's tool calls are more",
            },
            cursor: {
              type: 'string',
              description: "a page's next_cursor: the page of the messages before that page",
            },
          },
        },
        response: okWith('The conversation and a page of its messages, oldest first', {
          ...conversationDoc,
          required: [...conversationDoc.required, 'messages', 'next_cursor'],
          properties: {
            ...conversationDoc.properties,
            messages: {
              type: 'array',
              items: chatMessageDoc,
              description:
                'the last messages before the cursor (without one, the newest), oldest first; a page never begins with a tool answer, so each tool answer is on the page of the assistant message that called it',
            },
            next_cursor: {
              type: ['string', 'null'],
              description:
                'the earlier messages: send it back as cursor= (null: this page begins the conversation); paging back reads each message once, in order',
            },
          },
        }),
      }),
      async (req: FastifyRequest<{ Params: { id: string } }>) => {
        const { limit, before } = conversationPageQuery(req.query as Record<string, unknown>, req.params.id);
        const c = isUuid(req.params.id) ? await store.get(userOf(req), req.params.id) : null;
        if (!c) throw new NotFoundError('conversation');
        const page = await store.messagePage(c.id, limit, before);
        return {
          ...c,
          messages: page.messages,
          next_cursor: page.earlierBefore === null ? null : encodeMessageCursor(c.id, page.earlierBefore),
        };
      },
    );
    scope.delete(
      '/api/chat/conversations/:id',
      doc('Delete a conversation', { params: idParam, response: noContent('Deleted') }),
      async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
        if (!isUuid(req.params.id) || !(await store.delete(userOf(req), req.params.id)))
          throw new NotFoundError('conversation');
        return reply.code(204).send();
      },
    );
  });
}
