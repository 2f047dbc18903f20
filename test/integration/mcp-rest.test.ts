/**
 * How MCP tools reach routes of other targets (mcp-rest.ts): through this process's server when it serves
 * the route, else over HTTP to PUBLIC_URL with the caller's token, else a clear refusal.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createHttpServer, type HttpServer } from '../../src/http/server.ts';
import { Metrics } from '../../src/observability/metrics.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { RestUnavailableError, restClient } from '../../src/services/api/mcp-rest.ts';

describe('the REST client of MCP tools', () => {
  let local: HttpServer;
  const seen: { method?: string; url?: string; headers: IncomingHttpHeaders; body: string }[] = [];
  // The deployment behind PUBLIC_URL: answers every request with what it got.
  const deployment = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      seen.push({ method: req.method, url: req.url, headers: req.headers, body });
      if (req.url?.startsWith('/proxy-error')) {
        res.writeHead(502, { 'content-type': 'text/html' });
        return res.end('<html>Bad Gateway</html>');
      }
      if (req.url?.startsWith('/moved')) {
        res.writeHead(302, { location: 'http://127.0.0.1:9/elsewhere' });
        return res.end();
      }
      if (req.url?.includes('/unrouted')) {
        res.writeHead(404, { 'content-type': 'application/problem+json' });
        return res.end(JSON.stringify({ status: 404, detail: `no route ${req.method} ${req.url}` }));
      }
      res.writeHead(req.url?.startsWith('/missing') ? 404 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ detail: req.url?.startsWith('/missing') ? 'task not found' : 'remote' }));
    });
  });
  let publicUrl: string;

  before(async () => {
    local = await createHttpServer({ log: silentLogger, metrics: new Metrics({ defaultMetrics: false }) });
    local.app.get('/api/here', async (req) => ({ where: 'local', authorization: req.headers.authorization }));
    await local.app.ready();
    await new Promise<void>((resolve) => deployment.listen(0, '127.0.0.1', resolve));
    publicUrl = `http://127.0.0.1:${(deployment.address() as AddressInfo).port}`;
  });
  after(async () => {
    await local.app.close();
    await new Promise<void>((resolve) => deployment.close(() => resolve()));
  });

  it('serves a route of this process in-process, with the caller’s token', async () => {
    const rest = restClient({ app: local.app, authorization: 'Bearer t1', apiUrl: publicUrl });
    assert.deepEqual(await rest({ target: 'notifications', method: 'GET', url: '/api/here' }), {
      status: 200,
      body: { where: 'local', authorization: 'Bearer t1' },
    });
    assert.equal(seen.length, 0, 'nothing went over the network');
  });

  it('sends a route this process does not serve to PUBLIC_URL, with the token and the body', async () => {
    const rest = restClient({ app: local.app, authorization: 'Bearer t2', apiUrl: publicUrl });
    const r = await rest({
      target: 'reminders',
      method: 'POST',
      url: '/api/tasks/x/reminders/y/snooze',
      body: { duration: 'PT10M' },
    });
    assert.deepEqual(r, { status: 200, body: { detail: 'remote' } });
    const got = seen.at(-1)!;
    assert.deepEqual(
      [got.method, got.url, got.headers.authorization, got.headers['content-type'], got.body],
      ['POST', '/api/tasks/x/reminders/y/snooze', 'Bearer t2', 'application/json', '{"duration":"PT10M"}'],
    );
    // A 404 of the deployment (the resource) comes back as it is.
    assert.deepEqual(await rest({ target: 'notifications', method: 'GET', url: '/missing' }), {
      status: 404,
      body: { detail: 'task not found' },
    });
    // Without a server of its own (stdio), everything goes to PUBLIC_URL.
    const stdio = restClient({ authorization: 'Bearer t3', apiUrl: publicUrl });
    assert.equal((await stdio({ target: 'notifications', method: 'GET', url: '/api/here' })).status, 200);
    assert.deepEqual([seen.at(-1)!.url, seen.at(-1)!.headers.authorization], ['/api/here', 'Bearer t3']);
  });

  it('says the API did not answer for a proxy’s page, a redirect or a refused connection', async () => {
    const rest = restClient({ authorization: 'Bearer t5', apiUrl: publicUrl });
    const unavailable = (pattern: RegExp) => (err: unknown) => {
      assert.ok(err instanceof RestUnavailableError, String(err));
      assert.match(err.message, pattern);
      return true;
    };
    await assert.rejects(
      rest({ target: 'notifications', method: 'GET', url: '/proxy-error' }),
      unavailable(/answered 502 without JSON/),
    );
    // The token is not sent anywhere PUBLIC_URL redirects to.
    await assert.rejects(
      rest({ target: 'notifications', method: 'GET', url: '/moved' }),
      unavailable(/at http:\/\/127\.0\.0\.1:\d+ failed/),
    );
    // The address is one process without the target (INTERNAL_URL at an API process): said so.
    await assert.rejects(
      rest({ target: 'notifications', method: 'GET', url: '/unrouted/notifications' }),
      unavailable(/is not served at http:\/\/127\.0\.0\.1:\d+: set INTERNAL_URL .*every target/),
    );
    const down = restClient({ authorization: 'Bearer t6', apiUrl: 'http://127.0.0.1:9' });
    await assert.rejects(
      down({ target: 'notifications', method: 'GET', url: '/api/here' }),
      unavailable(/at http:\/\/127\.0\.0\.1:\d+ failed/),
    );
  });

  it('sends each route to its target’s own address when INTERNAL_URL has {target} in it', async () => {
    const rest = restClient({ authorization: 'Bearer t7', apiUrl: `${publicUrl}/{target}` });
    for (const [target, url] of [
      ['reminders', '/api/tasks/x/reminders'],
      ['recurrence', '/api/tasks/x/occurrences?count=2'],
      ['notifications', '/api/notifications?limit=5'],
    ] as const) {
      assert.equal((await rest({ target, method: 'GET', url })).status, 200);
      assert.equal(seen.at(-1)!.url, `/${target}${url}`);
    }
    await assert.rejects(
      rest({ target: 'recurrence', method: 'GET', url: '/unrouted' }),
      (err: unknown) =>
        err instanceof RestUnavailableError &&
        err.message.includes(`is not served at ${publicUrl}/recurrence:`),
    );
  });

  it('refuses clearly when no server serves the route and PUBLIC_URL is not set', async () => {
    const rest = restClient({ app: local.app, authorization: 'Bearer t4', apiUrl: null });
    await assert.rejects(
      rest({ target: 'notifications', method: 'GET', url: '/api/notifications?limit=5' }),
      (err: unknown) => {
        assert.ok(err instanceof RestUnavailableError);
        assert.match(err.message, /GET \/api\/notifications is served by a target .*set PUBLIC_URL/);
        return true;
      },
    );
  });
});
