/**
 * Development sign-in for the board: "continue as <name>" instead of pasting a token. It exists only with
 * the generated development secret (the embedded default: a PGlite data directory and neither JWT_SECRET nor
 * JWT_JWKS_URL; never with PostgreSQL), and answers only requests from this machine (the socket's address is
 * loopback, and no proxy passed it on: http/peer.ts) made to a loopback name (Host, and Origin when sent: a page
 * of another site that rebinds its DNS name to 127.0.0.1 reaches the socket from this machine, but under
 * its own name), by the account that runs this process (on Linux, the uid owning the connection's other end:
 * another account on the machine, which cannot read the secret's file, would otherwise get the same power
 * through this route; elsewhere the owner is not knowable and any local account may sign in, as the README
 * says): `GET /api/dev/sign-in` says it is there, `POST
 * /api/dev/sign-in {"user": "<id>"}` answers a token as `taskflow token --user <id>` makes. Elsewhere both
 * are 404, and production signs in through its identity provider (JWT_JWKS_URL).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { signDevToken } from '../../auth.ts';
import type { Config } from '../../config.ts';
import { ValidationError } from '../../domain/errors.ts';
import { fromThisMachine, isLoopbackAddress, loopbackPeerUid } from '../../http/peer.ts';
import { problem, sendProblem } from '../../http/problem.ts';

const USER = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$/;
const isUserId = (v: unknown): v is string => typeof v === 'string' && USER.test(v);
const TOKEN_LIFETIME = '7d';

/** Whether a Host (`name[:port]`) or an Origin (`scheme://name[:port]`) names this machine. */
const namesLoopback = (value: string | undefined, isOrigin: boolean) => {
  if (!value) return false;
  let name: string;
  try {
    name = new URL(isOrigin ? value : `http://${value}`).hostname;
  } catch {
    return false;
  }
  return (
    name === 'localhost' || name.endsWith('.localhost') || isLoopbackAddress(name.replace(/^\[(.*)\]$/, '$1'))
  );
};

export function registerDevSignIn(app: FastifyInstance, jwt: Config['jwt']): void {
  const secret = jwt.devSecretFile !== undefined ? jwt.secret : undefined;
  if (!secret) return;
  const ownUid = process.getuid?.();
  const byThisAccount = (req: FastifyRequest) => {
    const uid = loopbackPeerUid(req.socket);
    return uid === undefined || uid === ownUid;
  };
  const local = (req: FastifyRequest) =>
    fromThisMachine(req) &&
    namesLoopback(req.headers.host, false) &&
    (req.headers.origin === undefined || namesLoopback(req.headers.origin, true)) &&
    byThisAccount(req);
  const notHere = problem(
    404,
    'development sign-in is only for requests from this machine, by the account that runs taskflow',
  );
  app.get('/api/dev/sign-in', { schema: { hide: true } }, async (req, reply) =>
    local(req) ? { available: true, token_lifetime: TOKEN_LIFETIME } : sendProblem(reply, notHere),
  );
  app.post(
    '/api/dev/sign-in',
    { schema: { hide: true } },
    async (req: FastifyRequest<{ Body: { user?: unknown } | null }>, reply) => {
      if (!local(req)) return sendProblem(reply, notHere);
      // Handlers validate (the API's schemas only document, and this route is not documented).
      const user = req.body?.user;
      if (!isUserId(user))
        throw new ValidationError([
          {
            path: 'user',
            message: 'must be 1-100 letters, digits or . _ @ -, starting with a letter or digit',
          },
        ]);
      const claims = {
        expiresIn: TOKEN_LIFETIME,
        ...(jwt.issuer ? { issuer: jwt.issuer } : {}),
        ...(jwt.audience ? { audience: jwt.audience } : {}),
      };
      return { user, token: await signDevToken(secret, user, claims) };
    },
  );
}
