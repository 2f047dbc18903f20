/**
 * JWT verification against a real JWKS endpoint (an HTTP server serving an ES256 public key): tokens are
 * checked with the identity provider's keys, must expire, and an unreachable identity provider answers 503
 * (retry) rather than 401 (which clients take for "log in again"); a token whose kid names no key of the set
 * fetched a moment ago waits for the next fetch (503, Retry-After). Then the claims with an HS256 secret: JWT_ISSUER and JWT_AUDIENCE are enforced when set (and
 * only then), a token not valid yet (nbf) or expired is refused, and the kid is not consulted.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { TEST_SECRET, startApp, waitFor } from '../helpers/app.ts';

const listen = (server: Server, port = 0) =>
  new Promise<number>((resolve) =>
    server.listen(port, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  );
const close = (server: Server) => new Promise<void>((resolve) => server.close(() => resolve()));

describe('JWT verification with a JWKS URL', () => {
  it('accepts tokens signed by the key set, refuses ones without exp, and answers 503 while it is unreachable', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    const jwksServer = () =>
      createServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ keys: [jwk] }));
      });
    let idp = jwksServer();
    const port = await listen(idp);
    await close(idp); // down when the app starts: its key cache is empty
    const sign = (claims: { exp?: boolean } = {}) => {
      let jwt = new SignJWT({})
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setSubject('jw-user')
        .setIssuedAt();
      if (claims.exp !== false) jwt = jwt.setExpirationTime('10m');
      return jwt.sign(privateKey);
    };
    const db = await openDb('memory://');
    await migrate(db);
    const app = await startApp(db, {
      env: { JWT_SECRET: '', JWT_JWKS_URL: `http://127.0.0.1:${port}/jwks.json` },
    });
    const list = async (token: string) =>
      fetch(`${app.url}/api/tasks`, { headers: { authorization: `Bearer ${token}` } });
    try {
      const down = await list(await sign());
      assert.equal(down.status, 503);
      assert.equal(down.headers.get('retry-after'), '5');
      assert.match(
        ((await down.json()) as { detail: string }).detail,
        /identity provider's keys .* unreachable/,
      );

      idp = jwksServer();
      await listen(idp, port);
      // Back, it is asked again once the failed fetch's cooldown (the Retry-After) is over.
      await waitFor(
        async () => (await list(await sign())).status === 200,
        15_000,
        'the key set fetched again',
      );
      const noExp = await list(await sign({ exp: false }));
      assert.equal(noExp.status, 401);
      assert.match(((await noExp.json()) as { detail: string }).detail, /no expiry/);
      const { privateKey: otherKey } = await generateKeyPair('ES256');
      const foreign = await new SignJWT({})
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setSubject('jw-user')
        .setExpirationTime('10m')
        .sign(otherKey);
      assert.equal((await list(foreign)).status, 401);

      // kid: the key is chosen by the token's kid. A kid the key set fetched a moment ago does not have may
      // be a key just published: 503 with Retry-After until the set may be fetched again (auth-edges.test.ts:
      // then 401 if it is still not there), even when the signature is by a key of the set.
      const withKid = (kid: string | undefined) => {
        const header = kid === undefined ? { alg: 'ES256' } : { alg: 'ES256', kid };
        return new SignJWT({})
          .setProtectedHeader(header)
          .setSubject('jw-user')
          .setExpirationTime('10m')
          .sign(privateKey);
      };
      const unknownKid = await list(await withKid('k-unknown'));
      assert.equal(unknownKid.status, 503);
      assert.ok(Number(unknownKid.headers.get('retry-after')) <= 5, 'the cooldown is a few seconds');
      assert.match(((await unknownKid.json()) as { detail: string }).detail, /fetched again in \d s/);
      // Without a kid, the set's one key of the token's algorithm is used.
      assert.equal((await list(await withKid(undefined))).status, 200);
      assert.equal((await list(await withKid('k1'))).status, 200);
    } finally {
      await app.stop();
      await db.close();
      if (idp.listening) await close(idp);
    }
  });
});

describe('OAuth 2.0 protected resource metadata for MCP clients (RFC 9728)', () => {
  it('names the issuer when a JWKS issuer is configured, and every 401 of /mcp points to it', async () => {
    const db = await openDb('memory://');
    await migrate(db);
    const issuer = 'https://idp.example.test/realms/taskflow';
    const app = await startApp(db, {
      env: { JWT_SECRET: '', JWT_JWKS_URL: 'http://127.0.0.1:9/jwks.json', JWT_ISSUER: issuer },
    });
    try {
      // RFC 9728 section 3: the well-known path + a resource's path describes that resource.
      for (const [path, resource] of [
        ['/.well-known/oauth-protected-resource', app.url],
        ['/.well-known/oauth-protected-resource/mcp', `${app.url}/mcp`],
      ] as const) {
        const r = await fetch(`${app.url}${path}`);
        assert.equal(r.status, 200, path);
        // Without PUBLIC_URL it is built from the Host: a shared cache keeps one per Host.
        assert.match(r.headers.get('vary') ?? '', /\bHost\b/);
        assert.deepEqual(await r.json(), {
          resource,
          authorization_servers: [issuer],
          bearer_methods_supported: ['header'],
          resource_name: 'Taskflow',
          resource_documentation: `${app.url}/docs`,
        });
      }
      const unauthenticated = await fetch(`${app.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
      });
      assert.equal(unauthenticated.status, 401);
      assert.match(
        unauthenticated.headers.get('www-authenticate') ?? '',
        new RegExp(`^Bearer .*resource_metadata="${app.url}/\\.well-known/oauth-protected-resource/mcp"$`),
      );
      // Other routes keep their plain challenge.
      const rest = await fetch(`${app.url}/api/tasks`);
      assert.equal(rest.status, 401);
      assert.doesNotMatch(rest.headers.get('www-authenticate') ?? '', /resource_metadata/);
    } finally {
      await app.stop();
      await db.close();
    }
  });

  it('serves no metadata with a shared secret (no issuer to send clients to)', async () => {
    const db = await openDb('memory://');
    await migrate(db);
    const app = await startApp(db);
    try {
      assert.equal((await fetch(`${app.url}/openapi.json`)).status, 200, 'the api target runs');
      assert.equal((await fetch(`${app.url}/.well-known/oauth-protected-resource`)).status, 404);
    } finally {
      await app.stop();
      await db.close();
    }
  });
});

describe('JWT claims with an HS256 secret', () => {
  const ISSUER = 'https://auth.taskflow.test';
  const AUDIENCE = 'taskflow-api';
  const NOW = () => Math.floor(Date.now() / 1000);
  /** An HS256 token for `sub` with the given claims (`exp` 10 minutes ahead unless given). */
  const token = (claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}) =>
    new SignJWT({ exp: NOW() + 600, ...claims })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT', ...header })
      .setSubject('claims-user')
      .setIssuedAt()
      .sign(new TextEncoder().encode(TEST_SECRET));
  const withApp = async (
    env: Record<string, string>,
    fn: (list: (t: string) => Promise<Response>) => Promise<void>,
  ) => {
    const db = await openDb('memory://');
    await migrate(db);
    const app = await startApp(db, { env });
    try {
      await fn((t) => fetch(`${app.url}/api/tasks`, { headers: { authorization: `Bearer ${t}` } }));
    } finally {
      await app.stop();
      await db.close();
    }
  };
  const refused = async (res: Response, detail: RegExp) => {
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    assert.match(((await res.json()) as { detail: string }).detail, detail);
  };

  it('enforces JWT_ISSUER and JWT_AUDIENCE when they are set', async () => {
    await withApp({ JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE }, async (list) => {
      assert.equal((await list(await token({ iss: ISSUER, aud: AUDIENCE }))).status, 200);
      assert.equal((await list(await token({ iss: ISSUER, aud: ['other-api', AUDIENCE] }))).status, 200);
      await refused(await list(await token({ aud: AUDIENCE })), /claim iss is invalid/);
      await refused(
        await list(await token({ iss: 'https://evil.test', aud: AUDIENCE })),
        /claim iss is invalid/,
      );
      await refused(await list(await token({ iss: ISSUER })), /claim aud is invalid/);
      await refused(await list(await token({ iss: ISSUER, aud: 'other-api' })), /claim aud is invalid/);
      await refused(await list(await token({ iss: ISSUER, aud: ['other-api'] })), /claim aud is invalid/);
    });
  });

  it('checks only what is configured: an issuer alone, and neither', async () => {
    await withApp({ JWT_ISSUER: ISSUER }, async (list) => {
      assert.equal((await list(await token({ iss: ISSUER }))).status, 200);
      assert.equal((await list(await token({ iss: ISSUER, aud: 'anything' }))).status, 200);
      await refused(await list(await token({ iss: 'https://evil.test' })), /claim iss is invalid/);
    });
    await withApp({}, async (list) => {
      assert.equal((await list(await token())).status, 200);
      assert.equal((await list(await token({ iss: 'https://any.test', aud: 'any' }))).status, 200);
    });
  });

  it('refuses a token not valid yet (nbf in the future) or expired, and a foreign signature', async () => {
    await withApp({}, async (list) => {
      await refused(await list(await token({ nbf: NOW() + 120 })), /claim nbf is invalid/);
      assert.equal((await list(await token({ nbf: NOW() - 5 }))).status, 200);
      await refused(await list(await token({ exp: NOW() - 120 })), /expired/);
      const foreign = await new SignJWT({ exp: NOW() + 600 })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('claims-user')
        .sign(new TextEncoder().encode('another-secret-that-is-long-enough-for-hs256'));
      await refused(await list(foreign), /signature is invalid/);
      await refused(await list('not.a.jwt'), /malformed|not accepted/);
    });
  });

  it('takes an identity provider whose clock is up to 30 s ahead (nbf and iat 3 s ahead), never a token past its exp', async () => {
    await withApp({}, async (list) => {
      // A provider whose clock runs 3 s ahead of this host's mints tokens "from the future".
      const ahead = NOW() + 3;
      const skewed = await new SignJWT({ nbf: ahead, iat: ahead, exp: ahead + 600 })
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setSubject('claims-user')
        .sign(new TextEncoder().encode(TEST_SECRET));
      const r = await list(skewed);
      assert.equal(r.status, 200, `fresh token refused: ${JSON.stringify(await r.json())}`);
      assert.equal((await list(await token({ nbf: NOW() + 25 }))).status, 200);
      await refused(await list(await token({ nbf: NOW() + 40 })), /claim nbf is invalid/);
      await refused(await list(await token({ exp: NOW() - 1 })), /expired/);
    });
  });

  it('does not consult the kid with one shared secret: any kid, or none, verifies by the secret', async () => {
    await withApp({}, async (list) => {
      assert.equal((await list(await token({}, { kid: 'unknown-kid' }))).status, 200);
      assert.equal((await list(await token({}, {}))).status, 200);
      const foreign = await new SignJWT({ exp: NOW() + 600 })
        .setProtectedHeader({ alg: 'HS256', kid: 'unknown-kid' })
        .setSubject('claims-user')
        .sign(new TextEncoder().encode('another-secret-that-is-long-enough-for-hs256'));
      await refused(await list(foreign), /signature is invalid/);
    });
  });
});
