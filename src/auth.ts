/**
 * JWT bearer authentication (jose): HS256 with a shared secret (as Better Auth issues) or any JWKS URL. The
 * user is the token's `sub`, never a path or body value.
 */
import { LRUCache } from 'lru-cache';
import { SignJWT, createRemoteJWKSet, errors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import type { Config } from './config.ts';
import { errorMessage } from './error-text.ts';
import { textProblem } from './domain/text.ts';

/**
 * Why `sub` cannot be a user id, or null: 1 to 200 UTF-16 units of text the database takes (textProblem), as
 * any other field. The verifier refuses such a token and `taskflow token` does not sign one.
 */
export function subjectProblem(sub: string): string | null {
  if (sub.length === 0 || sub.length > 200) return 'must be 1 to 200 characters';
  return textProblem(sub);
}

export class AuthError extends Error {
  override name = 'AuthError';
}

/** The token could not be checked because the identity provider's keys (JWT_JWKS_URL) are unreachable. */
export class AuthUnavailableError extends Error {
  override name = 'AuthUnavailableError';
}

/** Whether jose failed to fetch the key set (network, timeout, bad answer) rather than to accept the token. */
function isKeySetUnavailable(err: unknown): boolean {
  if (err instanceof errors.JWKSTimeout || err instanceof TypeError) return true; // fetch failed
  return (
    err instanceof errors.JOSEError &&
    /^(Expected 200 OK from the JSON Web Key Set|Failed to parse the JSON Web Key Set)/.test(err.message)
  );
}

export interface Principal {
  userId: string;
  /** When the token expires (ms since the epoch, its `exp`): what it opened (a WebSocket) ends then too. */
  expiresAt: number;
}

export type Verifier = (token: string) => Promise<Principal>;

/** Tokens remembered after a successful check, so a client's next requests skip the signature work. */
const CACHE_SIZE = 10_000;
/** With a key set (JWT_JWKS_URL), a token is checked again at least this often: a removed key takes effect. */
const JWKS_RECHECK_MS = 5 * 60_000;
/**
 * How far the identity provider's clock may be from this host's (seconds) for `exp` and `nbf`: a provider
 * whose clock ran 3 s ahead minted tokens refused as not valid yet (`nbf`) until the clocks met. 30 s is the
 * usual allowance; a token not valid for minutes yet (or expired minutes ago) is still refused.
 */
export const CLOCK_TOLERANCE_S = 30;

export function createVerifier(jwt: Config['jwt']): Verifier {
  const verify = verifyToken(jwt);
  // token -> its principal, usable without checking it again until its `exp` (or the JWKS recheck).
  const cache = new LRUCache<string, Principal>({ max: CACHE_SIZE });
  return async (token) => {
    const hit = cache.get(token);
    if (hit) return hit;
    const { principal, exp } = await verify(token);
    const ttl = Math.min(exp * 1000 - Date.now(), jwt.jwksUrl ? JWKS_RECHECK_MS : Infinity);
    if (ttl > 0) cache.set(token, principal, { ttl });
    return principal;
  };
}

function verifyToken(jwt: Config['jwt']): (token: string) => Promise<{ principal: Principal; exp: number }> {
  const secret = jwt.secret ? new TextEncoder().encode(jwt.secret) : undefined;
  const jwks: JWTVerifyGetKey | undefined = jwt.jwksUrl
    ? createRemoteJWKSet(new URL(jwt.jwksUrl))
    : undefined;
  const options = {
    requiredClaims: ['exp'], // a token that never expires is not accepted
    clockTolerance: CLOCK_TOLERANCE_S,
    ...(jwt.issuer ? { issuer: jwt.issuer } : {}),
    ...(jwt.audience ? { audience: jwt.audience } : {}),
  };
  return async (token) => {
    try {
      const { payload } = jwks
        ? await jwtVerify(token, jwks, options)
        : await jwtVerify(token, secret!, { ...options, algorithms: ['HS256'] });
      if (typeof payload.sub !== 'string' || subjectProblem(payload.sub) !== null)
        throw new AuthError('token has no usable subject (sub)');
      return { principal: { userId: payload.sub, expiresAt: payload.exp! * 1000 }, exp: payload.exp! };
    } catch (err) {
      if (err instanceof AuthError) throw err;
      if (jwks && isKeySetUnavailable(err))
        throw new AuthUnavailableError(
          `cannot check the token: the identity provider's keys (JWT_JWKS_URL) are unreachable (${errorMessage(err)})`,
        );
      if (err instanceof errors.JWTExpired) throw new AuthError('token expired');
      if (err instanceof errors.JWTClaimValidationFailed && err.claim === 'exp' && err.reason === 'missing')
        throw new AuthError('token has no expiry (exp)');
      if (err instanceof errors.JWSSignatureVerificationFailed)
        throw new AuthError('token signature is invalid');
      if (err instanceof errors.JWTClaimValidationFailed)
        throw new AuthError(`token claim ${err.claim} is invalid`);
      throw new AuthError('token is malformed or not accepted');
    }
  };
}

export function bearerToken(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer\s+(\S+)$/i.exec(header.trim());
  return m ? m[1]! : null;
}

/** A development token signed with the configured HS256 secret (`taskflow token`). */
export async function signDevToken(
  secret: string,
  userId: string,
  opts: { expiresIn?: string; issuer?: string; audience?: string } = {},
): Promise<string> {
  let jwt = new SignJWT({})
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(opts.expiresIn ?? '30d');
  if (opts.issuer) jwt = jwt.setIssuer(opts.issuer);
  if (opts.audience) jwt = jwt.setAudience(opts.audience);
  return jwt.sign(new TextEncoder().encode(secret));
}
