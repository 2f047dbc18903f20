/**
 * The MCP endpoint of the API (Streamable HTTP, stateless) at /mcp. The tools and the MCP SDK (mcp.ts, about
 * 0.25 s and 25 MB to load) are loaded at the first request, not at every start of the API.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Verifier } from '../../auth.ts';
import { authenticatedScope } from '../../http/authenticated.ts';
import type { McpDeps, handleMcpRequest } from './mcp.ts';

export interface McpHttpDeps extends McpDeps {
  verify: Verifier;
}

const jsonRpcError = (reply: FastifyReply, status: number, message: string) =>
  reply
    .code(status)
    .header('allow', 'POST')
    .send({ jsonrpc: '2.0', error: { code: -32000, message }, id: null });

export async function registerMcp(app: FastifyInstance, deps: McpHttpDeps): Promise<void> {
  let mcp: Promise<{ handleMcpRequest: typeof handleMcpRequest }> | undefined;
  // The authenticated scope applies the per-user rate limit: an agent in a loop is throttled like a client.
  await authenticatedScope(app, { verify: deps.verify }, (authed, userOf) => {
    authed.post('/mcp', { schema: { hide: true } }, async (req: FastifyRequest, reply: FastifyReply) => {
      const userId = userOf(req);
      const { handleMcpRequest } = await (mcp ??= import('./mcp.ts'));
      await handleMcpRequest(deps, userId, req, reply);
    });
  });
  // No server-initiated streams or sessions in stateless mode.
  const notAllowed = async (_req: FastifyRequest, reply: FastifyReply) =>
    jsonRpcError(reply, 405, 'method not allowed: this MCP endpoint is stateless, use POST');
  app.get('/mcp', { schema: { hide: true } }, notAllowed);
  app.delete('/mcp', { schema: { hide: true } }, notAllowed);
}
