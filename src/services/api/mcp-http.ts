/**
 * The MCP endpoint of the API (Streamable HTTP, stateless) at /mcp. The tools and the MCP SDK (mcp.ts, about
 * 0.25 s and 25 MB to load) are loaded at the first request, not at every start of the API.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Verifier } from '../../auth.ts';
import { authenticatedScope, chargeUser } from '../../http/authenticated.ts';
import { problem, sendProblem } from '../../http/problem.ts';
import type * as McpModule from './mcp.ts';
import type { McpDeps } from './mcp.ts';
import {
  JSON_RPC_MESSAGE_SHAPE,
  MAX_MCP_BATCH,
  batchProblem,
  isJsonRpcMessage,
  paramsProblem,
} from './mcp-messages.ts';

export interface McpHttpDeps extends McpDeps {
  verify: Verifier;
  /**
   * Where MCP clients get tokens (JWT_ISSUER, with JWT_JWKS_URL): served as OAuth 2.0 Protected Resource
   * Metadata (RFC 9728) and named on every 401 of /mcp, as the MCP authorization spec asks. Unset: neither.
   */
  oauth?: { issuer: string; publicUrl: string | null };
}

/** The metadata document's path for the resource `/mcp` (RFC 9728 section 3: the well-known prefix + path). */
export const PROTECTED_RESOURCE_PATH = '/.well-known/oauth-protected-resource';

/**
 * A URI's host and optional port (RFC 3986 section 3.2.2): an IP literal in brackets, or a reg-name of
 * unreserved characters (`_` and `~` too: Docker and compose service names have `_`), percent-encodings and
 * sub-delims. None of them is `"`, `\`, a space or a control character, so it goes into a quoted header
 * parameter as it is. Letters, digits, `.` `-` and `:` only refused `taskflow_api:8080` (400, and no
 * resource_metadata on /mcp's 401).
 */
const URI_HOST = /^(?:\[[0-9A-Fa-f:.]+\]|(?:[\w.~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+)(?::[0-9]*)?$/;

const jsonRpcError = (
  reply: FastifyReply,
  status: number,
  code: number,
  message: string,
  id: string | number | null = null,
) => reply.code(status).send({ jsonrpc: '2.0', error: { code, message }, id });

/** The most JSON-RPC messages a POST may carry (mcp-messages.ts says why). */
export { MAX_MCP_BATCH };

export async function registerMcp(app: FastifyInstance, deps: McpHttpDeps): Promise<void> {
  let mcp: Promise<typeof McpModule> | undefined;
  // Before the /mcp route: its scope takes the hooks the app has when it is registered.
  if (deps.oauth) {
    const { issuer, publicUrl } = deps.oauth;
    // PUBLIC_URL when set; otherwise the address the client used (Host, or X-Forwarded-* with TRUST_PROXY),
    // when it is a URI host and nothing else (it goes into a quoted header parameter).
    const base = (req: FastifyRequest) =>
      publicUrl ?? (URI_HOST.test(req.host) ? `${req.protocol}://${req.host}` : undefined);
    // RFC 9728 section 3: the document at the well-known path + the resource's path describes that resource.
    const metadata = (path: string) => async (req: FastifyRequest, reply: FastifyReply) => {
      const origin = base(req);
      if (!origin)
        return sendProblem(
          reply,
          problem(
            400,
            'the Host header is not a URI host (RFC 3986); set PUBLIC_URL to describe the resource',
          ),
        );
      // Built from the address the client used: a shared cache must not give one client's to another.
      if (!publicUrl) reply.header('vary', 'Host, X-Forwarded-Host, X-Forwarded-Proto');
      return {
        resource: `${origin}${path}`,
        authorization_servers: [issuer],
        bearer_methods_supported: ['header'],
        resource_name: 'Taskflow',
        resource_documentation: `${origin}/docs`,
      };
    };
    app.get(PROTECTED_RESOURCE_PATH, { schema: { hide: true } }, metadata(''));
    app.get(`${PROTECTED_RESOURCE_PATH}/mcp`, { schema: { hide: true } }, metadata('/mcp'));
    app.addHook('onSend', async (req, reply) => {
      const origin = base(req);
      if (reply.statusCode !== 401 || req.routeOptions.url !== '/mcp' || !origin) return;
      const challenge = reply.getHeader('www-authenticate');
      const resource = `resource_metadata="${origin}${PROTECTED_RESOURCE_PATH}/mcp"`;
      reply.header(
        'www-authenticate',
        challenge ? `${String(challenge)}, ${resource}` : `Bearer ${resource}`,
      );
    });
  }
  // The authenticated scope applies the per-user rate limit: an agent in a loop is throttled like a client.
  await authenticatedScope(app, { verify: deps.verify }, (authed, userOf) => {
    // A body that is not JSON is a JSON-RPC Parse error (section 5.1), which an MCP client reads; the server's
    // problem document it cannot. Every other error goes to the server's handler.
    authed.setErrorHandler((err: { code?: string }, _req, reply) => {
      if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err instanceof SyntaxError)
        return jsonRpcError(reply, 400, -32700, 'Parse error: the body is not valid JSON');
      throw err;
    });
    authed.post('/mcp', { schema: { hide: true } }, async (req: FastifyRequest, reply: FastifyReply) => {
      const userId = userOf(req);
      // No body at all (the server's JSON parser takes an empty one as none): nothing to parse.
      if (req.body === undefined) return jsonRpcError(reply, 400, -32700, 'Parse error: the body is empty');
      const messages: unknown[] = Array.isArray(req.body) ? req.body : [req.body];
      // Each message of a batch is a request for the user's rate limit (the POST counted one): a batch of
      // ten tool calls cost one of the 1,200 a minute. One too large is refused unread.
      if (messages.length <= MAX_MCP_BATCH) for (let i = 1; i < messages.length; i++) chargeUser(app, userId);
      if (messages.length !== 1) {
        // Checked as `taskflow mcp` checks a batch (mcp-stdio.ts), refused whole (400): nothing of it was done.
        const refused = batchProblem(messages, { sentIn: 'requests' });
        if (refused) return jsonRpcError(reply, 400, refused.code, refused.message, refused.id);
      } else {
        const [message] = messages;
        const bad = paramsProblem(message);
        // Answered as the SDK answers a request's protocol error (200, the spec's JSON-RPC response to a
        // request): its client reads a 400 as the transport failing, not as the error in the body.
        if (bad) return jsonRpcError(reply, 200, -32602, `Invalid params: ${bad.problem}`, bad.id);
        // JSON-RPC 2.0 section 5.1: what is valid JSON but not a message is an Invalid Request (-32600); the
        // SDK called it a parse error (-32700), and a batch of one such message got no array.
        if (!isJsonRpcMessage(message))
          return jsonRpcError(
            reply,
            400,
            -32600,
            `Invalid Request: the body is not a JSON-RPC 2.0 message: ${JSON_RPC_MESSAGE_SHAPE}`,
          );
      }
      const { handleMcpRequest } = await (mcp ??= import('./mcp.ts'));
      return handleMcpRequest(deps, userId, req, reply);
    });
  });
  // No server-initiated streams or sessions in stateless mode.
  const notAllowed = async (_req: FastifyRequest, reply: FastifyReply) =>
    jsonRpcError(
      reply.header('allow', 'POST'),
      405,
      -32000,
      'method not allowed: this MCP endpoint is stateless, use POST',
    );
  app.get('/mcp', { schema: { hide: true } }, notAllowed);
  app.delete('/mcp', { schema: { hide: true } }, notAllowed);
}
