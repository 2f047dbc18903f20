/**
 * Authentication at its edges, against a real JWKS endpoint (a node:http server serving jose-made ES256 keys):
 * an identity provider that answers 200 with no key set is unavailable (503), not a bad token (401); while it
 * is down, tokens signed by keys fetched before are still accepted (after the key set's cache age too), and
 * only a token whose key is not known gets 503; a key the provider publishes right after a fetch is taken
 * on the retry the 503's Retry-After asks for, while random kids make at most one fetch per cooldown. A
 * user whose subject the verifier takes (up to 200 characters) is served at its own /api/{user_id}/tasks.
 * The OAuth protected-resource metadata of /mcp is described for any URI host (a Docker service name with
 * `_`), and a Host that is not one is a problem+json 400.
 */
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { SignJWT, exportJWK, generateKeyPair, type JWK } from 'jose';
import { AuthError, AuthUnavailableError, createVerifier, type Verifier } from '../../src/auth.ts';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { pino } from 'pino';
import { runTargets } from '../../src/process.ts';
import { MANIFESTS, findTargets } from '../../src/services/index.ts';
import { startApp, testConfig, waitFor } from '../helpers/app.ts';

const listen = (server: Server, port = 0) =>
  new Promise<number>((resolve) =>
    server.listen(port, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  );
const close = (server: Server) =>
  new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });

type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;
const publicJwk = async (key: KeyPair, kid: string): Promise<JWK> => ({
  ...(await exportJWK(key.publicKey)),
  kid,
  alg: 'ES256',
  use: 'sig',
});
let jti = 0;
/** A token of `sub` signed by `key` with header kid `kid` (a new jti each: the verifier's cache never answers). */
const sign = (key: KeyPair, kid: string, sub = 'jw-user') =>
  new SignJWT({})
    .setProtectedHeader({ alg: 'ES256', kid })
    .setSubject(sub)
    .setJti(String(++jti))
    .setExpirationTime('1h')
    .sign(key.privateKey);

/** A JWKS endpoint: `state.keys` while `state.up`, a 500 otherwise; counts the requests it answers. */
async function identityProvider(keys: JWK[]) {
  const state = { keys, up: true, fetches: 0 };
  const server = createServer((_req, res) => {
    state.fetches++;
    res.writeHead(state.up ? 200 : 500, { 'content-type': 'application/json' });
    res.end(state.up ? JSON.stringify({ keys: state.keys }) : '{"error":"down"}');
  });
  const url = `http://127.0.0.1:${await listen(server)}/jwks.json`;
  return { state, url, close: () => close(server) };
}

/** What the verifier made of a token: "user <sub>", "503 (retry in n s)" or "401 <reason>". */
const outcome = (verify: Verifier, token: string) =>
  verify(token).then(
    (p) => `user ${p.userId}`,
    (e: unknown) => {
      if (e instanceof AuthUnavailableError) return `503 (retry in ${e.retryAfterSeconds} s)`;
      if (e instanceof AuthError) return `401 ${e.message}`;
      throw e;
    },
  );

describe('JWKS identity provider misbehaving', () => {
  it('answers 503 (retry), not 401 (log in again), while the JWKS URL answers 200 with JSON that is not a key set', async () => {
    const key = await generateKeyPair('ES256');
    // A maintenance page or a misrouted endpoint answering JSON with 200: the provider is not giving its keys.
    const idp = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'temporarily_unavailable' }));
    });
    const port = await listen(idp);
    const db = await openDb('memory://');
    await migrate(db);
    const app = await startApp(db, {
      env: { JWT_SECRET: '', JWT_JWKS_URL: `http://127.0.0.1:${port}/jwks.json` },
    });
    try {
      const r = await fetch(`${app.url}/api/tasks`, {
        headers: { authorization: `Bearer ${await sign(key, 'k1')}` },
      });
      const body = (await r.json()) as { detail: string };
      assert.equal(r.status, 503, body.detail);
      assert.equal(r.headers.get('retry-after'), '5');
      assert.match(body.detail, /identity provider's keys .* unreachable/);
    } finally {
      await app.stop();
      await db.close();
      await close(idp);
    }
  });

  it('keeps verifying with the keys it fetched while the provider is down past the key set cache age, and asks it once per cooldown', async () => {
    const k1 = await generateKeyPair('ES256');
    const idp = await identityProvider([await publicJwk(k1, 'k1')]);
    // The key set's cache age (10 minutes in production) and the cooldown, shortened: the same code path.
    const verify = createVerifier({ jwksUrl: idp.url }, { maxAgeMs: 300, cooldownMs: 600 });
    try {
      assert.equal(await outcome(verify, await sign(k1, 'k1')), 'user jw-user');
      idp.state.up = false; // the identity provider fails (500) from now on
      await sleep(400); // past the cache age: the set is fetched again beside the check, not before it
      assert.equal(await outcome(verify, await sign(k1, 'k1')), 'user jw-user', 'a known key, provider down');
      await waitFor(() => idp.state.fetches === 2, 5_000, 'the fetch beside the check');
      await sleep(50); // its failure (500) noted
      const fetches = idp.state.fetches;
      // Within the cooldown nothing asks the provider again, whatever the tokens.
      for (let i = 0; i < 5; i++) assert.equal(await outcome(verify, await sign(k1, 'k1')), 'user jw-user');
      const k2 = await generateKeyPair('ES256');
      // A key it does not know cannot be checked while the provider is down: 503, not 401.
      assert.equal(await outcome(verify, await sign(k2, 'k2')), '503 (retry in 5 s)');
      // A token whose signature is not by the key its kid names is still refused.
      assert.match(await outcome(verify, await sign(k2, 'k1')), /^401 token signature is invalid/);
      assert.equal(idp.state.fetches, fetches, 'no fetch within the cooldown after a failed one');
      await sleep(650);
      assert.equal(await outcome(verify, await sign(k1, 'k1')), 'user jw-user');
      await waitFor(() => idp.state.fetches === fetches + 1, 5_000, 'one fetch once the cooldown passed');
      assert.equal(await outcome(verify, await sign(k1, 'k1')), 'user jw-user');
      await sleep(50);
      assert.equal(idp.state.fetches, fetches + 1, 'one fetch at a time');

      // Back with k1 removed: the removal takes effect once the set is fetched again.
      idp.state.keys = [await publicJwk(k2, 'k2')];
      idp.state.up = true;
      await sleep(650);
      assert.equal(await outcome(verify, await sign(k2, 'k2')), 'user jw-user');
      // Its kid is not in the set fetched a moment ago: looked up again after the cooldown, then refused.
      assert.equal(await outcome(verify, await sign(k1, 'k1')), '503 (retry in 1 s)');
      await sleep(650);
      assert.equal(await outcome(verify, await sign(k1, 'k1')), '401 token is malformed or not accepted');
    } finally {
      await idp.close();
    }
  });

  it('verifies with a known key at once while the provider hangs, the set fetched again beside', async () => {
    // A provider black-holed (connections taken, nothing answered): each verification past the cache age waited
    // for jose's fetch to time out (5 s) after every cooldown, with the key in hand.
    const k1 = await generateKeyPair('ES256');
    const jwk = await publicJwk(k1, 'k1');
    const state = { hang: false, fetches: 0 };
    const held: { end(): void }[] = [];
    const server = createServer((_req, res) => {
      state.fetches++;
      if (state.hang) return void held.push(res);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    const url = `http://127.0.0.1:${await listen(server)}/jwks.json`;
    const verify = createVerifier({ jwksUrl: url }, { maxAgeMs: 300, cooldownMs: 600 });
    try {
      assert.equal(await outcome(verify, await sign(k1, 'k1')), 'user jw-user');
      state.hang = true;
      await sleep(400); // past the cache age
      const slow: number[] = [];
      for (const end = Date.now() + 1_500; Date.now() < end; await sleep(100)) {
        const token = await sign(k1, 'k1');
        const start = performance.now();
        assert.equal(await outcome(verify, token), 'user jw-user');
        if (performance.now() - start > 1_000) slow.push(Math.round(performance.now() - start));
      }
      assert.deepEqual(slow, [], 'verifications that waited for a fetch that cannot answer (ms)');
      assert.equal(state.fetches, 2, 'one fetch in flight at a time, beside the checks');
    } finally {
      for (const r of held) r.end();
      server.closeAllConnections();
      await close(server);
    }
  });

  it('with the production timing, still accepts a known key 11 minutes into an outage (the clock moved)', async () => {
    const k1 = await generateKeyPair('ES256');
    const idp = await identityProvider([await publicJwk(k1, 'k1')]);
    const verify = createVerifier({ jwksUrl: idp.url }); // JWKS_TIMING: a 10-minute cache age
    const realNow = Date.now;
    try {
      assert.equal(await outcome(verify, await sign(k1, 'k1')), 'user jw-user');
      idp.state.up = false;
      const start = realNow();
      Date.now = () => realNow() + 11 * 60_000 + (realNow() - start);
      assert.equal(await outcome(verify, await sign(k1, 'k1')), 'user jw-user');
      await waitFor(() => idp.state.fetches === 2, 5_000, 'the set asked for again beside the check');
    } finally {
      Date.now = realNow;
      await idp.close();
    }
  });

  it('answers 503 while no key was ever fetched, and verifies once the provider answers', async () => {
    const k1 = await generateKeyPair('ES256');
    const idp = await identityProvider([await publicJwk(k1, 'k1')]);
    idp.state.up = false;
    const verify = createVerifier({ jwksUrl: idp.url }, { maxAgeMs: 300, cooldownMs: 200 });
    try {
      assert.equal(await outcome(verify, await sign(k1, 'k1')), '503 (retry in 5 s)');
      idp.state.up = true;
      await sleep(250); // the cooldown after the failed fetch (the Retry-After the 503 asks for)
      assert.equal(await outcome(verify, await sign(k1, 'k1')), 'user jw-user');
    } finally {
      await idp.close();
    }
  });

  it('asks a provider that was never reached once per cooldown, answering 503 at once meanwhile', async () => {
    const k1 = await generateKeyPair('ES256');
    const idp = await identityProvider([await publicJwk(k1, 'k1')]);
    idp.state.up = false;
    const verify = createVerifier({ jwksUrl: idp.url }, { maxAgeMs: 600_000, cooldownMs: 60_000 });
    try {
      // Forged tokens of any key: each made a fetch of its own (started while the provider was down).
      for (let i = 0; i < 20; i++)
        assert.equal(await outcome(verify, await sign(k1, `kid-${i}`)), '503 (retry in 5 s)');
      assert.equal(idp.state.fetches, 1, 'fetches of the key set');
    } finally {
      await idp.close();
    }
  });
});

describe('JWKS key rotation', () => {
  it('takes a key the provider published right after the last fetch on the retry its 503 asks for; random kids fetch once per cooldown', async () => {
    const k1 = await generateKeyPair('ES256');
    const k2 = await generateKeyPair('ES256');
    const idp = await identityProvider([await publicJwk(k1, 'k1')]);
    const verify = createVerifier({ jwksUrl: idp.url }, { maxAgeMs: 600_000, cooldownMs: 1_500 });
    try {
      assert.equal(await outcome(verify, await sign(k1, 'k1')), 'user jw-user');
      assert.equal(idp.state.fetches, 1);
      // The provider rotates: publishes k2 and signs new tokens with it at once, within our cooldown.
      idp.state.keys = [await publicJwk(k1, 'k1'), await publicJwk(k2, 'k2')];
      const rotated = await sign(k2, 'k2');
      assert.match(await outcome(verify, rotated), /^503 \(retry in [12] s\)$/, 'not 401: "log in again"');
      // An attacker's random kids within the cooldown make no fetch.
      for (let i = 0; i < 20; i++)
        assert.match(await outcome(verify, await sign(k2, `random-${i}`)), /^503 /);
      // A kid the set has, used with another algorithm, or none: no key to wait for, refused at once.
      const es384 = await generateKeyPair('ES384');
      const otherAlg = await new SignJWT({})
        .setProtectedHeader({ alg: 'ES384', kid: 'k1' })
        .setSubject('jw-user')
        .setExpirationTime('1h')
        .sign(es384.privateKey);
      assert.equal(await outcome(verify, otherAlg), '401 token is malformed or not accepted');
      const noKid = await new SignJWT({})
        .setProtectedHeader({ alg: 'ES384' })
        .setSubject('jw-user')
        .setExpirationTime('1h')
        .sign(es384.privateKey);
      assert.equal(await outcome(verify, noKid), '401 token is malformed or not accepted');
      assert.equal(idp.state.fetches, 1);
      await sleep(1_500); // the rest of the cooldown (Retry-After rounds it up)
      assert.equal(await outcome(verify, rotated), 'user jw-user');
      assert.equal(idp.state.fetches, 2, 'one fetch for the new kid');
      // A kid the freshly fetched set does not have either is refused (401) once the set was fetched for it.
      assert.match(await outcome(verify, await sign(k2, 'random-x')), /^503 \(retry in [12] s\)$/);
      await sleep(1_500);
      assert.equal(
        await outcome(verify, await sign(k2, 'random-x')),
        '401 token is malformed or not accepted',
      );
      assert.equal(idp.state.fetches, 3);
    } finally {
      await idp.close();
    }
  });
});

describe('subjects on the routes that name the user (/api/{user_id}/tasks)', () => {
  it('serves every subject the verifier takes at its own /api/{user_id}/tasks (up to 200 characters)', async () => {
    const db = await openDb('memory://');
    await migrate(db);
    const app = await startApp(db);
    try {
      const refused: string[] = [];
      const subjects = [
        'u'.repeat(200),
        'u'.repeat(150),
        'auth0|abc/def',
        'a%b',
        'a b',
        'a?b#c',
        'é'.repeat(200),
      ];
      for (const sub of subjects) {
        const r = await app.call(sub, 'GET', `/api/${encodeURIComponent(sub)}/tasks`);
        if (r.status !== 200)
          refused.push(`${sub.slice(0, 12)} (${sub.length}): ${r.status} ${r.body?.detail}`);
      }
      assert.deepEqual(refused, [], 'subjects refused on their own path');
      // Past what a subject may be: a 400 naming the bound (the router's 414 is documented nowhere).
      const long = await app.call('u', 'GET', `/api/${'u'.repeat(201)}/tasks`);
      assert.equal(long.status, 400);
      assert.match(long.body.detail, /longer than 200 characters/);
      // The API's description says the same bound.
      const spec = (await app.call(null, 'GET', '/openapi.json')).body;
      const param = spec.paths['/api/{user_id}/tasks'].get.parameters.find(
        (p: { name: string }) => p.name === 'user_id',
      );
      assert.deepEqual([param.schema.minLength, param.schema.maxLength], [1, 200]);
    } finally {
      await app.stop();
      await db.close();
    }
  });
});

/** A request with the Host header `host` (fetch cannot set it): POST with an MCP call for /mcp, else GET. */
const withHost = (url: string, host: string) =>
  new Promise<{ status: number; type: string; body: string; challenge: string }>((resolve, reject) => {
    const u = new URL(url);
    const mcp = u.pathname === '/mcp';
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: mcp ? 'POST' : 'GET',
        headers: { host, ...(mcp ? { 'content-type': 'application/json' } : {}) },
      },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            type: String(res.headers['content-type'] ?? ''),
            body,
            challenge: String(res.headers['www-authenticate'] ?? ''),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(mcp ? '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' : undefined);
  });

describe('OAuth protected resource metadata and the Host', () => {
  it('describes /mcp for any URI host, "_" included (Docker service names), and answers a Host that is not one with problem+json', async () => {
    const db = await openDb('memory://');
    await migrate(db);
    const app = await startApp(db, {
      env: {
        JWT_SECRET: '',
        JWT_JWKS_URL: 'http://127.0.0.1:9/jwks.json',
        JWT_ISSUER: 'https://idp.example.test/realms/taskflow',
      },
    });
    const metadata = `${app.url}/.well-known/oauth-protected-resource/mcp`;
    try {
      for (const host of ['taskflow_api:8080', 'my~host.internal', '[::1]:8080', 'h%C3%A9te']) {
        const r = await withHost(metadata, host);
        assert.equal(r.status, 200, `${host}: ${r.body}`);
        assert.equal((JSON.parse(r.body) as { resource: string }).resource, `http://${host}/mcp`);
        const mcp = await withHost(`${app.url}/mcp`, host);
        assert.equal(mcp.status, 401);
        assert.match(
          mcp.challenge,
          new RegExp(
            `resource_metadata="http://${host.replace(/[.[\]]/g, '\\$&')}/\\.well-known/oauth-protected-resource/mcp"$`,
          ),
          host,
        );
      }
      for (const host of ['a"b', 'user@host', 'a{b}']) {
        const r = await withHost(metadata, host);
        assert.equal(r.status, 400, host);
        assert.match(r.type, /^application\/problem\+json/, `${host}: ${r.type} ${r.body}`);
        assert.match((JSON.parse(r.body) as { detail: string }).detail, /PUBLIC_URL/);
        // /mcp still answers 401, with its plain challenge: nothing of that Host goes into the header.
        const mcp = await withHost(`${app.url}/mcp`, host);
        assert.equal(mcp.status, 401);
        assert.doesNotMatch(mcp.challenge, /resource_metadata/);
      }
    } finally {
      await app.stop();
      await db.close();
    }
  });
});

describe('a key set without an audience', () => {
  it('is said at start: any token the provider signs, for any application, would be taken', async () => {
    const started = async (env: Record<string, string>) => {
      const lines: string[] = [];
      const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
      const db = await openDb('memory://');
      const proc = await runTargets(testConfig({ JWT_SECRET: '', ...env }), findTargets(['api']), {
        db,
        log,
        catalog: MANIFESTS,
      });
      await proc.stop();
      await db.close();
      return lines.filter((l) => l.includes('JWT_AUDIENCE')).length;
    };
    const jwks = { JWT_JWKS_URL: 'http://127.0.0.1:9/jwks.json' };
    assert.equal(await started(jwks), 1);
    assert.equal(await started({ ...jwks, JWT_AUDIENCE: 'taskflow-api' }), 0);
  });
});
