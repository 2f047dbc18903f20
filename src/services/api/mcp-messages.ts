/**
 * Checks of incoming MCP messages that both transports make before the SDK sees them (mcp-http.ts, and
 * `taskflow mcp` on stdio), where the SDK's own answer would blame the server.
 */

export const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** A request's id, or null (a notification, or an id that is not a string or number). */
export const requestId = (message: unknown): string | number | null =>
  isPlainObject(message) && (typeof message.id === 'string' || typeof message.id === 'number')
    ? message.id
    : null;

/**
 * What is wrong with a `tools/call` message's params, if anything: its `name` must be a string and its
 * `arguments`, when given, an object. The SDK answers those with -32603 (internal error), as if the server had
 * failed; they are the client's invalid params (-32602).
 */
export function toolCallProblem(
  message: unknown,
): { id: string | number | null; problem: string } | undefined {
  if (!isPlainObject(message) || message.method !== 'tools/call') return undefined;
  const id = requestId(message);
  const params = message.params;
  if (!isPlainObject(params)) return { id, problem: 'params must be an object' };
  if (typeof params.name !== 'string') return { id, problem: 'params.name must be a string (the tool)' };
  if (params.arguments !== undefined && !isPlainObject(params.arguments))
    return { id, problem: "params.arguments must be an object (the tool's arguments by name)" };
  return undefined;
}
