/**
 * Checks of incoming MCP messages that both transports make before the SDK sees them (mcp-http.ts, and
 * `taskflow mcp` on stdio), where the SDK's own answer would blame the server or break the protocol.
 */
import {
  CallToolRequestSchema,
  InitializeRequestSchema,
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
