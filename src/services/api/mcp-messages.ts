/**
 * Checks of incoming MCP messages that both transports make before the SDK sees them (mcp-http.ts, and
 * `taskflow mcp` on stdio), where the SDK's own answer would blame the server or break the protocol.
 */
import {
  CallToolRequestSchema,
  InitializeRequestSchema,
  JSONRPCMessageSchema,
  ListToolsRequestSchema,
  PingRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';

export const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** A request's id, or null (a notification, or an id that is not a string or number). */
export const requestId = (message: unknown): string | number | null =>
  isPlainObject(message) && (typeof message.id === 'string' || typeof message.id === 'number')
    ? message.id
    : null;

/** Whether `message` is a JSON-RPC 2.0 message as the SDK reads one (a request, a notification, a response). */
export const isJsonRpcMessage = (message: unknown): boolean =>
  JSONRPCMessageSchema.safeParse(message).success;

/** What a JSON-RPC 2.0 message is, for the answers that refuse something else. */
export const JSON_RPC_MESSAGE_SHAPE =
  'an object with "jsonrpc": "2.0" and a "method" (and an "id", a string or an integer, for a request); "params", when given, an object';

/**
 * The tools createMcpServer registers (it refuses to register another): a `tools/call` of any other name is
 * refused here, before the SDK answers it as a tool result with `isError: true` ("Tool x not found"), where
 * the spec (every version this server speaks, 2024-11-05 to 2025-11-25: Tools, Error Handling) makes it a
 * protocol error, -32602. Known here, the HTTP route refuses it without loading the SDK.
 */
export const MCP_TOOLS: readonly string[] = [
  'add_task',
  'complete_task',
  'confirm_email',
  'delete_task',
  'dismiss_reminder',
  'get_context',
  'get_task',
  'list_notifications',
  'list_reminders',
  'list_tasks',
  'mark_notification_read',
  'preview_occurrences',
  'reopen_task',
  'search_tasks',
  'send_email_code',
  'set_notification_email',
  'set_recurrence',
  'set_reminder',
  'skip_occurrence',
  'snooze_reminder',
  'update_settings',
  'update_task',
];

/** The SDK's schemas of the requests this server answers, by method. */
const REQUEST_SCHEMAS: Record<
  string,
  {
    safeParse(v: unknown): {
      success: boolean;
      error?: { issues: { path: PropertyKey[]; message: string }[] };
    };
  }
> = {
  initialize: InitializeRequestSchema,
  ping: PingRequestSchema,
  'tools/list': ListToolsRequestSchema,
  'tools/call': CallToolRequestSchema,
};

/**
 * What is wrong with a request's params, if anything, by the SDK's schema of its method (for `tools/call`,
 * in words of our own: `name` one of MCP_TOOLS, `arguments` an object). The SDK answers those with -32603
 * (internal error) and the validator's raw issue list, as if the server had failed; they are the client's
 * invalid params (-32602). Notifications and methods the server does not answer are left to the SDK.
 */
export function paramsProblem(message: unknown): { id: string | number | null; problem: string } | undefined {
  if (!isPlainObject(message) || !('id' in message) || typeof message.method !== 'string') return undefined;
  const schema = Object.hasOwn(REQUEST_SCHEMAS, message.method) ? REQUEST_SCHEMAS[message.method] : undefined;
  if (!schema) return undefined;
  const id = requestId(message);
  const params = message.params;
  if (message.method === 'tools/call') {
    if (!isPlainObject(params)) return { id, problem: 'params must be an object' };
    if (typeof params.name !== 'string') return { id, problem: 'params.name must be a string (the tool)' };
    if (params.arguments !== undefined && !isPlainObject(params.arguments))
      return { id, problem: "params.arguments must be an object (the tool's arguments by name)" };
    if (!MCP_TOOLS.includes(params.name))
      return {
        id,
        problem: `unknown tool ${JSON.stringify(params.name.slice(0, 100))}; the ${MCP_TOOLS.length} tools are ${MCP_TOOLS.join(', ')} (tools/list describes them)`,
      };
  }
  const checked = schema.safeParse({ method: message.method, ...(params === undefined ? {} : { params }) });
  if (checked.success) return undefined;
  const issue = checked.error?.issues[0];
  return {
    id,
    problem: issue
      ? `${issue.path.map(String).join('.') || 'params'}: ${issue.message}`
      : 'params do not fit the method',
  };
}

/**
 * The most JSON-RPC messages a batch may carry. Each counts against the user's rate limit, but the HTTP
 * transport's own bound (100) let one request do a hundred tool calls, each a write or a recurrence preview of
 * up to about 30 ms, on the event loop in one go. MCP since 2025-06-18 has no batches; older clients send few.
 */
export const MAX_MCP_BATCH = 10;

/** Why a batch is refused whole, nothing of it done: the JSON-RPC error each of its requests is answered. */
export interface BatchProblem {
  code: -32600 | -32602;
  message: string;
  /** Invalid params: the request whose params they are (/mcp answers the batch with one error, its). */
  id?: string | number | null;
}

/**
 * What is wrong with a JSON-RPC batch (an array of messages, as sent), checked before any of it is done, the
 * same by both transports (a POST to /mcp, a line of `taskflow mcp`), so that they cannot drift apart: at most
 * MAX_MCP_BATCH messages, not empty, each message with an id of its own (a notification has none: each answer
 * is matched to its request by id, so one of two answers would be lost, a write's included; MCP says an id is
 * never used twice), params that fit their method, JSON-RPC messages only, and `initialize` alone. `sentIn`
 * is what carries a batch (the advice for one too large); `idInUse` an id a batch before still waits on
 * (stdio: its answer would go to that batch, which would then wait for ever for its own).
 */
export function batchProblem(
  messages: readonly unknown[],
  options: { sentIn: 'requests' | 'lines'; idInUse?: (id: string | number) => boolean },
): BatchProblem | undefined {
  const invalid = (message: string): BatchProblem => ({
    code: -32600,
    message: `Invalid Request: ${message}`,
  });
  if (messages.length > MAX_MCP_BATCH)
    return invalid(
      `a batch takes at most ${MAX_MCP_BATCH} messages (${messages.length} sent); send them in several ${options.sentIn}`,
    );
  // JSON-RPC 2.0 section 6: an empty batch is one Invalid Request.
  if (messages.length === 0) return invalid('an empty batch');
  const seen = new Set<string | number>();
  for (const m of messages) {
    const id = requestId(m);
    if (id === null) continue;
    if (seen.has(id))
      return invalid(
        `the id ${JSON.stringify(id)} is used by two requests of the batch (each needs its own); nothing was done`,
      );
    if (options.idInUse?.(id))
      return invalid(
        `the id ${JSON.stringify(id)} is used by a request of an earlier batch not answered yet (each needs its own); nothing was done`,
      );
    seen.add(id);
  }
  for (const [i, m] of messages.entries()) {
    const bad = paramsProblem(m);
    if (bad)
      return {
        code: -32602,
        message: `Invalid params: ${bad.problem} (message ${i + 1} of the batch; nothing was done)`,
        id: bad.id,
      };
  }
  const notMessage = messages.findIndex((m) => !isJsonRpcMessage(m));
  if (notMessage >= 0)
    return invalid(
      `message ${notMessage + 1} of the batch is not a JSON-RPC 2.0 message: ${JSON_RPC_MESSAGE_SHAPE}; nothing was done`,
    );
  // MCP 2025-03-26 (Lifecycle): the initialize request MUST NOT be part of a batch.
  if (messages.length > 1 && messages.some((m) => isPlainObject(m) && m.method === 'initialize'))
    return invalid('initialize is sent alone, not in a batch with other messages; nothing was done');
  return undefined;
}
