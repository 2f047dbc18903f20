/**
 * JWT verification against a real JWKS endpoint (an HTTP server serving an ES256 public key): tokens are
 * checked with the identity provider's keys, must expire, and an unreachable identity provider answers 503
 * (retry) rather than 401 (which clients take for "log in again").
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp } from '../helpers/app.ts';

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
      assert.equal((await list(await sign())).status, 200);
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
    } finally {
      await app.stop();
      await db.close();
      if (idp.listening) await close(idp);
    }
  });
});
