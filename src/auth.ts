/**
 * JWT bearer authentication (jose): HS256 with a shared secret (as Better Auth issues) or any JWKS URL. The
 * user is the token's `sub`, never a path or body value.
 */
import { LRUCache } from 'lru-cache';
import {
  SignJWT,
  createLocalJWKSet,
  createRemoteJWKSet,
  errors,
  jwksCache,
  jwtVerify,
  type ExportedJWKSCache,
  type JWTVerifyGetKey,
} from 'jose';
import type { Config } from './config.ts';
import { errorMessage } from './error-text.ts';
import { textProblem } from './domain/text.ts';

/** The longest `sub` taken (UTF-16 units); the router takes path parameters as long (`/api/{user_id}/...`). */
export const MAX_SUBJECT_LENGTH = 200;

/**
 * Why `sub` cannot be a user id, or null: 1 to 200 UTF-16 units of text the database takes (textProblem), as
 * any other field. The verifier refuses such a token and `taskflow token` does not sign one.
 */
export function subjectProblem(sub: string): string | null {
  if (sub.length === 0 || sub.length > MAX_SUBJECT_LENGTH)
    return `must be 1 to ${MAX_SUBJECT_LENGTH} characters`;
  return textProblem(sub);
}

export class AuthError extends Error {
  override name = 'AuthError';
}

/**
 * The token could not be checked yet: the identity provider's keys (JWT_JWKS_URL) are unreachable, or its key
 * is not among those fetched a moment ago (a key just published). 503 with Retry-After: the client retries.
 */
export class AuthUnavailableError extends Error {
  override name = 'AuthUnavailableError';
  constructor(
    message: string,
    readonly retryAfterSeconds = 5,
    /** The identity provider did not answer with its keys (logged); false: waiting for the next fetch. */
    readonly providerUnreachable = true,
  ) {
    super(message);
  }
}

/**
 * Whether jose failed to get the key set (network, timeout, an answer that is not 200, not JSON, or JSON that
 * is not a key set: a maintenance page served with 200) rather than to accept the token.
 */
function isKeySetUnavailable(err: unknown): boolean {
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid || err instanceof TypeError)
    return true; // fetch failed, or no key set in the answer
  return (
    err instanceof errors.JOSEError &&
    /^(Expected 200 OK from the JSON Web Key Set|Failed to parse the JSON Web Key Set)/.test(err.message)
  );
}

const unreachable = (err: unknown) =>
  new AuthUnavailableError(
    `cannot check the token: the identity provider's keys (JWT_JWKS_URL) are unreachable (${errorMessage(err)})`,
  );

/** How the key set of JWT_JWKS_URL is kept (createVerifier's second argument: tests shorten them). */
export interface KeySetTiming {
  /** The set is fetched again before a token is checked once it is this old (jose's cacheMaxAge). */
  maxAgeMs: number;
  /**
   * After a fetch, and after a failed one, the provider is not asked again for this long: a token whose key
   * (kid) is not in the set is answered 503 with Retry-After until then, not 401 (jose's cooldownDuration).
   */
  cooldownMs: number;
}

export const JWKS_TIMING: KeySetTiming = { maxAgeMs: 10 * 60_000, cooldownMs: 5_000 };

/**
 * The identity provider's key set (JWT_JWKS_URL), as jose's remote set fetches and caches it, with what jose
 * does not do:
 * - While the provider is unreachable (or answers no key set), tokens are checked with the last set it gave:
 *   jose refetches a set older than its cache age and has no fallback, so after 10 minutes of an outage every
 *   token got 503, its key known or not. 503 stays for a token whose key is not known (none fetched yet, or
 *   its kid not in the last set), and a failed fetch is not tried again for `cooldownMs` (each request would
 *   wait for it, up to its 5 s timeout), a set fetched before or not.
 * - A token whose kid is not in a set fetched less than `cooldownMs` ago gets 503 with Retry-After (the rest
 *   of the cooldown), not 401: a provider that publishes a key and signs with it at once (rotation) had its
 *   tokens refused with 401 ("log in again") for up to jose's 30 s cooldown. The retry fetches the set again
 *   and is accepted, or refused (401) if the key is still not there. A short cooldown rather than a shorter
 *   one alone: any cooldown leaves that window, and an answer the client retries closes it. Random kids still
 *   make at most one fetch per cooldown (5 s: 12 a minute per process, nothing to an identity provider).
 */
function remoteKeySet(url: URL, timing: KeySetTiming): JWTVerifyGetKey {
  const cache: Partial<ExportedJWKSCache> = {}; // jose keeps its last good set here, and when it got it (uat)
  const remote = createRemoteJWKSet(url, {
    cacheMaxAge: timing.maxAgeMs,
    cooldownDuration: timing.cooldownMs,
    [jwksCache]: cache as ExportedJWKSCache,
  });
  let lastGood: { uat: number; keys: JWTVerifyGetKey } | undefined;
  const knownKeys = () => {
    const { uat, jwks } = cache;
    if (uat === undefined || !jwks) return undefined;
    if (lastGood?.uat !== uat) lastGood = { uat, keys: createLocalJWKSet(jwks) };
    return lastGood.keys;
  };
  /** The last failed fetch: it holds until the cooldown passed or a fetch succeeded since. */
  let failed: { at: number; err: unknown } | undefined;
  /**
   * Whether the token names a key (a kid) that the last set does not have: one the provider may have published
   * since. A token without a kid, or whose kid is in the set with another algorithm, has no key to wait for.
   */
  const unknownKid = ([header, token]: Parameters<JWTVerifyGetKey>) => {
    const { kid } = { ...header, ...token?.header };
    return typeof kid === 'string' && !cache.jwks?.keys.some((k) => k.kid === kid);
  };
  /** With the last good set while the provider is down: a kid it does not have is unknown, not refused. */
  const withKnown = async (keys: JWTVerifyGetKey, args: Parameters<JWTVerifyGetKey>, err: unknown) => {
    try {
      return await keys(...args);
    } catch (e) {
      throw e instanceof errors.JWKSNoMatchingKey && unknownKid(args) ? unreachable(err) : e;
    }
  };
  /** One fetch at a time in the background; its failure holds as a failed fetch does. */
  let refreshing: Promise<void> | undefined;
  const refreshBeside = () => {
    refreshing ??= remote
      .reload()
      .then(
        () => void (failed = undefined),
        (err: unknown) => void (failed = { at: Date.now(), err }),
      )
      .finally(() => (refreshing = undefined));
  };
  return async (...args) => {
    const keys = knownKeys();
    if (keys && failed && failed.at > cache.uat! && Date.now() - failed.at < timing.cooldownMs)
      return withKnown(keys, args, failed.err);
    // A set past its age that has the token's key: verified with it now, and fetched again beside. Awaited, a
    // provider that hangs held each such verification for the fetch's timeout (5 s) after every cooldown. A
    // key just published (a kid the set does not have) still waits for the fetch.
    if (keys && Date.now() - cache.uat! >= timing.maxAgeMs && !unknownKid(args)) {
      refreshBeside();
      return withKnown(keys, args, failed?.err);
    }
    // No set yet (started while the provider was down) and a fetch failed within the cooldown: 503 at once.
    // Each request made a fetch of its own (any well-formed token, unauthenticated, drove them at the provider
    // as it came back), and with a provider that does not answer each waited for the fetch's 5 s timeout.
    if (!keys && failed && Date.now() - failed.at < timing.cooldownMs) throw unreachable(failed.err);
    const fetchedAt = cache.uat;
    try {
      return await remote(...args);
    } catch (err) {
      if (isKeySetUnavailable(err)) {
        failed = { at: Date.now(), err };
        if (keys) return withKnown(keys, args, err);
        throw err;
      }
      // No fetch for this token (jose's cooldown): it may be signed by a key published since the last one.
      if (
        err instanceof errors.JWKSNoMatchingKey &&
        fetchedAt !== undefined &&
        cache.uat === fetchedAt &&
        unknownKid(args)
      ) {
        const waitMs = fetchedAt + timing.cooldownMs - Date.now();
        if (waitMs > 0)
          throw new AuthUnavailableError(
            `the token's key (kid) is not among the identity provider's keys (JWT_JWKS_URL) fetched a moment ago; they are fetched again in ${Math.ceil(waitMs / 1000)} s (a key just published): retry then`,
            Math.ceil(waitMs / 1000),
            false,
          );
      }
      throw err;
    }
  };
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
 * How far ahead of this host's the identity provider's clock may be (seconds): a provider whose clock ran 3 s
 * ahead minted tokens refused as not valid yet (`nbf`) until the clocks met. 30 s is the usual allowance; a
 * token not valid for minutes yet is still refused. Not for `exp`: a token is never taken past it (what it
 * opened, a WebSocket, ends then, and the cache keeps it no longer); a clock behind only shortens a token.
 */
export const CLOCK_TOLERANCE_S = 30;

export function createVerifier(jwt: Config['jwt'], timing: KeySetTiming = JWKS_TIMING): Verifier {
  const verify = verifyToken(jwt, timing);
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

function verifyToken(
  jwt: Config['jwt'],
  timing: KeySetTiming,
): (token: string) => Promise<{ principal: Principal; exp: number }> {
  const secret = jwt.secret ? new TextEncoder().encode(jwt.secret) : undefined;
  const jwks = jwt.jwksUrl ? remoteKeySet(new URL(jwt.jwksUrl), timing) : undefined;
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
      // jose's clockTolerance covers exp too: past it the token is expired here whatever the tolerance.
      if (payload.exp! * 1000 <= Date.now()) throw new AuthError('token expired');
      if (typeof payload.sub !== 'string' || subjectProblem(payload.sub) !== null)
        throw new AuthError('token has no usable subject (sub)');
      return { principal: { userId: payload.sub, expiresAt: payload.exp! * 1000 }, exp: payload.exp! };
    } catch (err) {
      if (err instanceof AuthError || err instanceof AuthUnavailableError) throw err;
      if (jwks && isKeySetUnavailable(err)) throw unreachable(err);
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
