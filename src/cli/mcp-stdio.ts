/**
 * `taskflow mcp`: the MCP tools over stdin/stdout for one user (TASKFLOW_TOKEN), a composition root of its
 * own beside runTargets: it opens the database and runs the api target's MCP server on it, without HTTP or
 * a bus consumer.
 */
import { PassThrough, type Readable } from 'node:stream';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { STDIO_DEFAULT_MAX_BUFFER_SIZE } from '@modelcontextprotocol/sdk/shared/stdio.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import { createVerifier } from '../auth.ts';
import { EmbeddedLog } from '../bus/embedded/log.ts';
import type { Config } from '../config.ts';
import { onStopSignal } from './signals.ts';
import { systemClock } from '../domain/clock.ts';
import type { Logger } from '../observability/logger.ts';
import { createMcpServer } from '../services/api/mcp.ts';
import { restClient } from '../services/api/mcp-rest.ts';
import {
  batchProblem,
  isPlainObject,
  requestId,
  paramsProblem,
  type BatchProblem,
} from '../services/api/mcp-messages.ts';
import { TaskOperations } from '../services/api/task-operations.ts';
import { exitWhenDatabaseStops, openDb } from '../store/db.ts';
import { migrate } from '../store/migrate.ts';
import { reminderPlanner } from '../store/reminder-plan.ts';
import { TaskStore } from '../store/tasks.ts';
import { UserSettingsStore } from '../store/user-settings.ts';

/**
 * Serves the tools over stdin/stdout until stdin closes. Writes go through TaskStore into the configured
 * database (DATABASE_URL), i.e. into its outbox: the relay of the running system publishes them. Use a
 * PostgreSQL DATABASE_URL shared with the running system. A PGlite directory belongs to one process at a time
 * (store/data-dir-lock.ts): while `taskflow up` runs on it this refuses, naming the server; use the server's
 * HTTP endpoint /mcp instead.
 */
export async function serveMcpStdio(opts: { config: Config; token: string; log: Logger }): Promise<void> {
  const { config, log } = opts;
  const { userId, expiresAt } = await createVerifier(config.jwt)(opts.token);
  const db = await openDb(config.databaseUrl, { log: log.child({ component: 'pglite-maintenance' }) });
  exitWhenDatabaseStops(db, (m) => log.fatal(m));
  await migrate(db);
  // With the embedded bus, its log in this database is where the events go (as in the server).
  if (config.bus === 'embedded') EmbeddedLog.of(db);
  const settings = new UserSettingsStore(db, config.defaultTimezone);
  const server = createMcpServer(
    {
      tasks: new TaskOperations({
        store: new TaskStore(db, systemClock),
        settings,
        planReminders: reminderPlanner(settings, config.reminderGraceMs),
      }),
      settings,
      log,
    },
    { userId, rest: restClient({ authorization: `Bearer ${opts.token}`, apiUrl: config.apiUrl }) },
  );
  const input = lines(
    process.stdin,
    MAX_LINE_BYTES,
    (bytes) => {
      log.warn({ bytes, max_bytes: MAX_LINE_BYTES }, 'MCP: a line longer than the most this server reads');
      answerError(
        transport,
        null,
        -32600,
        `Invalid Request: a line is longer than ${MAX_LINE_BYTES} bytes (${bytes} read so far), the most this server reads; it was not read, send less in one message`,
      );
    },
    (line) => batches.split(line),
  );
  const transport = new StdioServerTransport(input);
  // Below the other wrappers of send (trackRequests): they see each answer, this writes a batch's together.
  const batches = batchAnswers(transport);
  let inFlight: InFlight | undefined;
  let closing: Promise<void> | undefined;
  // Once only, and never re-entered: server.close() closes the transport, whose onclose calls this again
  // (synchronously: before `closing` was set, that recursed until the stack overflowed).
  const close = () =>
    (closing ??= Promise.resolve().then(async () => {
      await server.close().catch(() => undefined);
      await db.close().catch(() => undefined);
    }));
  await new Promise<void>((resolve) => {
    transport.onclose = () => void close().then(resolve);
    // A client that writes its requests and closes stdin (a pipe) still gets every answer: what is in flight
    // finishes first (closing the database under it lost the answer, or the write itself).
    input.once('end', () => void (inFlight?.idle(DRAIN_MS) ?? Promise.resolve()).then(close).then(resolve));
    onStopSignal(() => void close().then(resolve));
    void server.connect(transport).then(() => {
      guard(transport, expiresAt);
      batches.watchCancellations();
      inFlight = trackRequests(transport);
      log.info({ user_id: userId }, 'MCP server on stdio');
    });
  });
}

/**
 * The longest line read: the SDK's transport closes itself, and so this server, silently, when its buffer
 * would go over its limit; each line is given to it alone, with its newline.
 */
const MAX_LINE_BYTES = STDIO_DEFAULT_MAX_BUFFER_SIZE - 1;

/**
 * `input` cut into lines, one chunk each with its newline, for the SDK's transport, which never read a last
 * line without a newline, and closed itself on a line over its buffer. A line over `maxBytes` is dropped up to
 * its newline, and reported once (`tooLong`) as soon as it goes over. Each line is given on as the lines
 * `expand` makes of it (a batch: its messages). An error of `input` ends the lines.
 */
function lines(
  input: Readable,
  maxBytes: number,
  tooLong: (bytes: number) => void,
  expand: (line: Buffer) => Buffer[],
): Readable {
  // One 'data' event per line, however many lines wait while the reader is not attached yet.
  const out = new PassThrough({ readableObjectMode: true });
  let parts: Buffer[] = [];
  let size = 0;
  let dropping = false;
  // An empty line is given on too (the SDK answers it as a line that is not JSON).
  const line = () => {
    if (!dropping) for (const one of expand(Buffer.concat(parts))) out.write(Buffer.concat([one, NEWLINE]));
    parts = [];
    size = 0;
    dropping = false;
  };
  input.on('data', (chunk: Buffer) => {
    for (let start = 0; ;) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl === -1 ? chunk.length : nl;
      size += end - start;
      if (!dropping && size > maxBytes) {
        dropping = true;
        parts = [];
        tooLong(size);
      } else if (!dropping) parts.push(chunk.subarray(start, end));
      if (nl === -1) break;
      line();
      start = nl + 1;
    }
  });
  const end = () => {
    if (out.writableEnded) return;
    // The last line without a newline is a line, unless it is only blanks (a trailing "\r", a space).
    if (!dropping && Buffer.concat(parts).toString('utf8').trim() !== '') line();
    out.end();
  };
  input.once('end', end);
  input.on('error', end);
  return out;
}

const NEWLINE = Buffer.from('\n');

/** How long a closed stdin waits for the requests in flight (a tool call is a few statements). */
const DRAIN_MS = 30_000;

interface InFlight {
  /** Resolves once no request is waiting for its answer, or after `maxMs`. */
  idle(maxMs: number): Promise<void>;
}

/** Counts the requests read and not answered yet (by their id). */
function trackRequests(transport: StdioServerTransport): InFlight {
  const waiting = new Set<string | number>();
  let onIdle: (() => void) | undefined;
  /** The request `id` needs no answer any more (answered, or cancelled by the client). */
  const settle = (id: string | number | null) => {
    if (id !== null && waiting.delete(id) && waiting.size === 0) onIdle?.();
  };
  const deliver = transport.onmessage;
  transport.onmessage = (message: JSONRPCMessage) => {
    const id = requestId(message);
    if (id !== null && 'method' in message) waiting.add(id);
    // A request the client cancelled is never answered (the SDK drops it): waited for, it held the exit 30 s.
    if ('method' in message && message.method === 'notifications/cancelled') {
      settle(requestId({ id: (message.params as { requestId?: unknown } | undefined)?.requestId }));
    }
    deliver?.(message);
  };
  const send = transport.send.bind(transport);
  transport.send = async (message: JSONRPCMessage) => {
    try {
      await send(message);
    } finally {
      if (!('method' in message)) settle(requestId(message));
    }
  };
  return {
    idle: (maxMs) =>
      waiting.size === 0
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, maxMs);
            onIdle = () => {
              clearTimeout(timer);
              resolve();
            };
          }),
  };
}

interface Batch {
  /** Its requests' ids, in its order: the order of its answers. */
  ids: (string | number)[];
  /** The ids not answered yet (nor cancelled). */
  waiting: Set<string | number>;
  answers: Map<string | number, JSONRPCMessage>;
}

/**
 * JSON-RPC batches: a line that is an array of messages. MCP 2025-03-26, which this server negotiates with a
 * client that asks for it, says a server MUST take them, and /mcp takes them under every protocol version (also
 * 2025-06-18 and later, which dropped them): so does stdio. The SDK's transport read such a line as one message
 * that is not JSON-RPC, answered one Invalid Request with id null, and the client waited for its requests'
 * answers until its timeout. A batch line is checked as /mcp checks a batch (batchProblem): a refused one is
 * answered an error for each of its requests, and nothing of it is done. Else its messages are read one by one,
 * and their answers written together once each request is answered (or cancelled), one array in the order of
 * the requests (JSON-RPC 2.0 section 6; a batch of notifications only is answered nothing).
 */
function batchAnswers(transport: StdioServerTransport) {
  /** The batch each request id not answered yet belongs to. */
  const batchOf = new Map<string | number, Batch>();
  const send = transport.send.bind(transport);
  const write = (answers: object[]) => send(answers as unknown as JSONRPCMessage);
  const answerIfDone = async (batch: Batch) => {
    if (batch.waiting.size > 0) return;
    const answers = batch.ids.flatMap((id) => batch.answers.get(id) ?? []);
    if (answers.length) await write(answers);
  };
  /** The request `id` of a batch needs no answer any more: answered with `answer`, or cancelled. */
  const settle = (id: string | number, answer?: JSONRPCMessage) => {
    const batch = batchOf.get(id);
    if (!batch) return undefined;
    batchOf.delete(id);
    batch.waiting.delete(id);
    if (answer) batch.answers.set(id, answer);
    return answerIfDone(batch);
  };
  transport.send = async (message: JSONRPCMessage) => {
    const id = 'method' in message ? null : requestId(message);
    const held = id === null ? undefined : settle(id, message);
    return held ?? send(message);
  };

  const requestIds = (messages: unknown[]) => [
    ...new Set(
      messages.flatMap((m) => {
        const id = isPlainObject(m) && typeof m.method === 'string' ? requestId(m) : null;
        return id === null ? [] : [id];
      }),
    ),
  ];
  /**
   * Each request of the batch is answered `refused` (nothing of it was done), one with id null if it has none;
   * an empty batch is answered one error, not an array (JSON-RPC 2.0 section 6).
   */
  const refuse = (messages: unknown[], refused: BatchProblem) => {
    if (messages.length === 0) return answerError(transport, null, refused.code, refused.message);
    const ids = requestIds(messages);
    const error = { code: refused.code, message: refused.message };
    void write(
      ids.length ? ids.map((id) => ({ jsonrpc: '2.0', id, error })) : [{ jsonrpc: '2.0', id: null, error }],
    ).catch(() => undefined);
  };

  return {
    /** The lines the SDK's transport reads for `line`: its messages when it is a batch, else the line. */
    split(line: Buffer): Buffer[] {
      if (line[line.findIndex((byte) => !JSON_BLANK.has(byte))] !== LEFT_BRACKET) return [line];
      let messages: unknown;
      try {
        messages = JSON.parse(line.toString('utf8'));
      } catch {
        return [line]; // answered by the SDK and guard: Parse error
      }
      if (!Array.isArray(messages)) return [line];
      let read: Buffer[];
      try {
        const refused = batchProblem(messages, { sentIn: 'lines', idInUse: (id) => batchOf.has(id) });
        if (refused) {
          refuse(messages, refused);
          return [];
        }
        read = messages.map((m) => Buffer.from(JSON.stringify(m)));
      } catch {
        // JSON.parse reads arrays nested a million deep, and JSON.stringify overflows the stack on them: thrown
        // here, in a stream's listener, that ended the process.
        refuse(messages, {
          code: -32600,
          message: 'Invalid Request: the batch is nested too deeply to be read; nothing was done',
        });
        return [];
      }
      const ids = requestIds(messages);
      if (ids.length) {
        const batch: Batch = { ids, waiting: new Set(ids), answers: new Map() };
        for (const id of ids) batchOf.set(id, batch);
      }
      return read;
    },
    /** A request of a batch the client cancelled is never answered (the SDK drops it): not waited for. */
    watchCancellations(): void {
      const deliver = transport.onmessage;
      transport.onmessage = (message: JSONRPCMessage) => {
        if ('method' in message && message.method === 'notifications/cancelled') {
          const id = requestId({ id: (message.params as { requestId?: unknown } | undefined)?.requestId });
          if (id !== null) void settle(id)?.catch(() => undefined);
        }
        deliver?.(message);
      };
    },
  };
}

/** JSON's white space (RFC 8259), which may come before a batch's `[`. */
const JSON_BLANK = new Set([0x20, 0x09, 0x0a, 0x0d]);
const LEFT_BRACKET = 0x5b;

/** Answers `id` (null: a line whose id could not be read) with a JSON-RPC error. */
const answerError = (
  transport: StdioServerTransport,
  id: string | number | null,
  code: number,
  message: string,
) =>
  void transport
    .send({ jsonrpc: '2.0', id, error: { code, message } } as JSONRPCMessage)
    .catch(() => undefined);

/**
 * Answers, before the SDK sees them, what it would answer wrongly or not at all: a line that is not JSON
 * (-32700, id null; the SDK answered nothing) or not a JSON-RPC message (-32600), a `tools/call` with invalid
 * params (-32602; the SDK said internal error, -32603, with its validator's dump), and, once the token has
 * expired, every request (-32001): HTTP checks a token at each request, this process was checking it once.
 */
function guard(transport: StdioServerTransport, tokenExpiresAt: number): void {
  const deliver = transport.onmessage;
  const reported = transport.onerror;
  const refuse = (id: string | number | null, code: number, message: string) =>
    answerError(transport, id, code, message);
  transport.onmessage = (message) => {
    const id = requestId(message);
    if (Date.now() >= tokenExpiresAt && id !== null)
      return refuse(
        id,
        -32001,
        `Unauthorized: TASKFLOW_TOKEN expired at ${new Date(tokenExpiresAt).toISOString()}; make a new one (taskflow token) and start taskflow mcp again`,
      );
    const bad = paramsProblem(message);
    if (bad) return refuse(bad.id, -32602, `Invalid params: ${bad.problem}`);
    deliver?.(message);
  };
  transport.onerror = (err) => {
    if (err instanceof SyntaxError) refuse(null, -32700, `Parse error: a line is not JSON (${err.message})`);
    else if (err.name === 'ZodError')
      refuse(
        null,
        -32600,
        'Invalid Request: a line is not a JSON-RPC 2.0 message: an object with "jsonrpc": "2.0" and a "method" (and an "id", a string or an integer, for a request)',
      );
    reported?.(err);
  };
}
