/**
 * Conversations of the chat endpoint (services/api/chat.ts): per user, messages in the chat-completions
 * shape. A conversation is only ever read or changed through its owner's id, so another user's is "not found".
 */
import { storableText } from '../domain/text.ts';
import { uuidv7 } from '../ids.ts';
import type { Db, Queryable } from './db.ts';

export interface ChatToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export type ChatMessage =
  | { role: 'user'; content: string }
  | { role: 'assistant'; content: string | null; tool_calls?: ChatToolCall[] }
  | { role: 'tool'; content: string; tool_call_id: string };

export interface Conversation {
  id: string;
  title: string;
  created_at: string;
  updated_at: string;
}

/** What a message sent with an Idempotency-Key was answered: its status and body (the reply, or a problem). */
export interface KeptAnswer {
  status: number;
  body: Record<string, unknown>;
}

/**
 * A message's Idempotency-Key on arrival: taken for this request, answered before (`KeptAnswer`), being answered,
 * or used for another body.
 */
export type KeyClaim = 'claimed' | 'running' | 'mismatch' | KeptAnswer;

/*
 * The keys of chat messages live with those of task creates (idempotency_keys: the same 24 hours, the same
 * pruning) under a prefix no client's key has (a space is not a visible character). `response` is JSON null
 * while the message is answered.
 */
const chatKey = (key: string) => `chat ${key}`;

/**
 * A JSON value with every string in it, keys too, as the database stores text (`storableText`): jsonb refuses a
 * NUL and a lone surrogate (SQLSTATE 22P05, 22P02), and a model's tool arguments may hold either. A message
 * whose answer could not be kept for its Idempotency-Key was answered 400 after its tools wrote, the key was let
 * go, and its retry ran them again (a task added twice).
 */
export function storableJson(value: unknown): unknown {
  if (typeof value === 'string') return storableText(value);
  if (Array.isArray(value)) return value.map(storableJson);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [storableText(k), storableJson(v)]));
}

const iso = (v: unknown) => (v instanceof Date ? v.toISOString() : String(v));
const conversation = (r: Record<string, unknown>): Conversation => ({
  id: String(r.id),
  title: String(r.title),
  created_at: iso(r.created_at),
  updated_at: iso(r.updated_at),
});

/** A stored message in its role's shape. */
const chatMessage = (m: {
  role: string;
  content: string | null;
  tool_calls: ChatToolCall[] | null;
  tool_call_id: string | null;
}): ChatMessage =>
  m.role === 'tool'
    ? { role: 'tool', content: m.content ?? '', tool_call_id: m.tool_call_id ?? '' }
    : m.role === 'assistant'
      ? { role: 'assistant', content: m.content, ...(m.tool_calls ? { tool_calls: m.tool_calls } : {}) }
      : { role: 'user', content: m.content ?? '' };

export class ChatStore {
  constructor(private readonly db: Db) {}

  async get(userId: string, id: string): Promise<Conversation | null> {
    const r = await this.db.query(
      'SELECT id, title, created_at, updated_at FROM chat_conversations WHERE id = $1 AND user_id = $2',
      [id, userId],
    );
    return r.rows[0] ? conversation(r.rows[0]) : null;
  }

  async create(userId: string, title: string): Promise<Conversation> {
    const r = await this.db.query(
      `INSERT INTO chat_conversations (id, user_id, title) VALUES ($1, $2, $3)
       RETURNING id, title, created_at, updated_at`,
      [uuidv7(), userId, title],
    );
    return conversation(r.rows[0]!);
  }

  /** The user's conversations, the most recently continued first. */
  async list(userId: string, limit: number): Promise<Conversation[]> {
    const r = await this.db.query(
      `SELECT id, title, created_at, updated_at FROM chat_conversations WHERE user_id = $1
        ORDER BY updated_at DESC, id DESC LIMIT $2`,
      [userId, limit],
    );
    return r.rows.map(conversation);
  }

  /**
   * Takes the conversation for one turn, for at most `ms` (then another may take it: a replica that died
   * mid-turn lets go), unless one of its messages is being answered ('conversation'), or
   * `perUser` of the user's conversations are ('user': each turn costs the operator model calls, and one user
   * could open conversations without end). Two claims at the same instant may both pass the count: a bound,
   * not an exact one.
   */
  async claimTurn(
    userId: string,
    id: string,
    ms: number,
    perUser = Infinity,
  ): Promise<'claimed' | 'conversation' | 'user'> {
    const r = await this.db.query<{ claimed: boolean; busy: boolean }>(
      `WITH claim AS (
         UPDATE chat_conversations SET turn_until = now() + $3 * interval '1 millisecond'
          WHERE id = $1 AND user_id = $2 AND (turn_until IS NULL OR turn_until < now())
            AND (SELECT count(*) FROM chat_conversations WHERE user_id = $2 AND turn_until >= now()) < $4
          RETURNING 1
       )
       SELECT EXISTS (SELECT 1 FROM claim) AS claimed,
              EXISTS (SELECT 1 FROM chat_conversations WHERE id = $1 AND turn_until >= now()) AS busy`,
      [id, userId, ms, Number.isFinite(perUser) ? perUser : 2_147_483_647],
    );
    const row = r.rows[0]!;
    return row.claimed ? 'claimed' : row.busy ? 'conversation' : 'user';
  }

  async releaseTurn(id: string): Promise<void> {
    await this.db.query('UPDATE chat_conversations SET turn_until = NULL WHERE id = $1', [id]);
  }

  /**
   * Takes `key` for a message of `requestHash`, unless it was taken within 24 hours: then its answer, or that it
   * is being answered (a claim older than `ms` is taken over: a replica that died mid-turn lets go), or that it
   * named another body. Of two requests at once, one takes it and the other finds it being answered.
   */
  async claimKey(userId: string, key: string, requestHash: string, ms: number): Promise<KeyClaim> {
    // The subqueries read the row as it was before this statement: the one that was there when none was taken.
    const r = await this.db.query<{ claimed: boolean; request_hash: string | null; response: unknown }>(
      `WITH claim AS (
         INSERT INTO idempotency_keys AS k (user_id, key, request_hash, response) VALUES ($1, $2, $3, 'null')
         ON CONFLICT (user_id, key) DO UPDATE SET request_hash = $3, response = 'null', created_at = now()
          WHERE k.created_at <= now() - interval '24 hours'
             OR (k.response = 'null' AND k.created_at < now() - $4 * interval '1 millisecond')
         RETURNING 1
       )
       SELECT EXISTS (SELECT 1 FROM claim) AS claimed, k.request_hash, k.response
         FROM (SELECT 1) one LEFT JOIN idempotency_keys k ON k.user_id = $1 AND k.key = $2`,
      [userId, chatKey(key), requestHash, ms],
    );
    const row = r.rows[0]!;
    if (row.claimed) return 'claimed';
    if (row.request_hash !== null && row.request_hash !== requestHash) return 'mismatch';
    return row.response ? (row.response as KeptAnswer) : 'running';
  }

  /** Keeps the answer of the message `key` was taken for (its text as the database stores it: storableJson). */
  async keepAnswer(userId: string, key: string, answer: KeptAnswer): Promise<void> {
    await this.db.query('UPDATE idempotency_keys SET response = $3 WHERE user_id = $1 AND key = $2', [
      userId,
      chatKey(key),
      JSON.stringify(storableJson(answer)),
    ]);
  }

  /** Lets go of `key` without an answer: a retry runs the message again. */
  async releaseKey(userId: string, key: string): Promise<void> {
    await this.db.query(
      `DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND response = 'null'`,
      [userId, chatKey(key)],
    );
  }

  async delete(userId: string, id: string): Promise<boolean> {
    const r = await this.db.query('DELETE FROM chat_conversations WHERE id = $1 AND user_id = $2', [
      id,
      userId,
    ]);
    return r.rowCount > 0;
  }

  /**
   * The last `limit` messages of a conversation, oldest first (`limit` Infinity: all), and when they begin inside
   * a turn, the user message that began it: a turn of more messages than `limit` (many tool calls at once) is
   * still the history of the next message, as its words (usableHistory); without it there was none at all.
   */
  async messages(conversationId: string, limit = Infinity): Promise<ChatMessage[]> {
    const r = await this.db.query<{
      role: string;
      content: string | null;
      tool_calls: ChatToolCall[] | null;
      tool_call_id: string | null;
    }>(
      `WITH last AS (SELECT * FROM chat_messages WHERE conversation_id = $1 ORDER BY id DESC LIMIT $2)
       SELECT role, content, tool_calls, tool_call_id FROM (
         SELECT * FROM last
         UNION ALL
         (SELECT * FROM chat_messages
           WHERE conversation_id = $1 AND role = 'user' AND id < (SELECT min(id) FROM last)
             AND (SELECT role FROM last ORDER BY id LIMIT 1) <> 'user'
           ORDER BY id DESC LIMIT 1)
       ) window_ ORDER BY id`,
      [conversationId, Number.isFinite(limit) ? limit : null],
    );
    return r.rows.map(chatMessage);
  }

  /**
   * A page of a conversation's messages for reading it back, oldest first: at most `limit` of those before the
   * message `before` (null: the newest), and the id of its first message when earlier ones remain (the next
   * page's `before`), else null. A page never begins with a tool answer: the answers of an assistant's tool calls
   * are on the page of that call, so no page holds an answer without its call. When the `limit` messages begin
   * with tool answers, the page begins after them (fewer than `limit`; they start the earlier page); when they
   * are all tool answers (one message's calls, more than `limit`), it reaches back to the assistant message that
   * asked them. Pages end where the next one begins, by id: paging backwards reads each message once, in order,
   * while new ones are appended.
   */
  async messagePage(
    conversationId: string,
    limit: number,
    before: string | null,
  ): Promise<{ messages: ChatMessage[]; earlierBefore: string | null }> {
    const r = await this.db.query<{
      id: string;
      role: string;
      content: string | null;
      tool_calls: ChatToolCall[] | null;
      tool_call_id: string | null;
      earlier: boolean;
    }>(
      `WITH window_ AS (
         SELECT id, role FROM chat_messages
          WHERE conversation_id = $1 AND ($2::bigint IS NULL OR id < $2::bigint)
          ORDER BY id DESC LIMIT $3
       ), first_ AS (
         SELECT COALESCE(
           (SELECT min(id) FROM window_ WHERE role <> 'tool'),
           (SELECT max(id) FROM chat_messages
             WHERE conversation_id = $1 AND role <> 'tool' AND id < (SELECT min(id) FROM window_)),
           (SELECT min(id) FROM window_)
         ) AS id
       ), start_ AS (
         SELECT id, EXISTS (SELECT 1 FROM chat_messages e WHERE e.conversation_id = $1 AND e.id < first_.id) AS earlier
           FROM first_
       )
       SELECT m.id::text AS id, m.role, m.content, m.tool_calls, m.tool_call_id, start_.earlier
         FROM chat_messages m, start_
        WHERE m.conversation_id = $1 AND m.id >= start_.id AND ($2::bigint IS NULL OR m.id < $2::bigint)
        ORDER BY m.id`,
      [conversationId, before, limit],
    );
    const first = r.rows[0];
    return { messages: r.rows.map(chatMessage), earlierBefore: first?.earlier ? first.id : null };
  }

  /**
   * Appends a turn's messages and marks the conversation continued, in one transaction; their text as the
   * database stores it (storableJson).
   */
  async append(conversationId: string, turn: readonly ChatMessage[]): Promise<void> {
    if (turn.length === 0) return;
    const messages = storableJson(turn) as ChatMessage[];
    await this.db.transaction(async (tx: Queryable) => {
      // Arrays, not a VALUES row per message: a turn's messages are bounded by the model's tool calls, and 16,400
      // of them (4 parameters each) passed PostgreSQL's 65,535 parameters.
      await tx.query(
        `INSERT INTO chat_messages (conversation_id, role, content, tool_calls, tool_call_id)
         SELECT $1::uuid, m.role, m.content, m.tool_calls::jsonb, m.tool_call_id
           FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY
                AS m(role, content, tool_calls, tool_call_id, n)
          ORDER BY m.n`,
        [
          conversationId,
          messages.map((m) => m.role),
          messages.map((m) => m.content),
          messages.map((m) => (m.role === 'assistant' && m.tool_calls ? JSON.stringify(m.tool_calls) : null)),
          messages.map((m) => (m.role === 'tool' ? m.tool_call_id : null)),
        ],
      );
      await tx.query('UPDATE chat_conversations SET updated_at = now() WHERE id = $1', [conversationId]);
    });
  }
}
