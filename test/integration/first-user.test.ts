/**
 * What a new user met walking through the README, each failing before its fix:
 * - `taskflow token` on a DATABASE_URL no server started on (a typo, another directory) made a new development
 *   secret and signed with it: the server refused the token as badly signed. It refuses, saying why;
 * - `taskflow migrate` on a directory that was not there said "database is up to date": it says it made one;
 * - a `.env` line that is not NAME=value ("PORT 3922") was skipped without a word;
 * - curl's default body type (`-d` without a content-type) got "Unsupported Media Type" and no hint;
 * - a client that sends `content-type: application/json` on every request got Fastify's "Body cannot be empty"
 *   for a POST that takes no body (complete, skip);
 * - a reminder id of no reminder's form was answered "task not found" for a task that exists;
 * - a route of a target that does not run in the process (`taskflow serve api`, then GET /api/audit) was "no
 *   route", as for a path nobody serves: it names the target;
 * - MCP: a due date or reminder in words that read as none was refused as a malformed ISO 8601 date-time,
 *   telling the model the opposite of what the tools' descriptions say.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { signDevToken } from '../../src/auth.ts';
import { runTargets } from '../../src/process.ts';
import { MANIFESTS, findTargets } from '../../src/services/index.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { TEST_SECRET, startApp, testConfig, type TestApp } from '../helpers/app.ts';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = (dir: string, ...args: string[]) =>
  run(process.execPath, [join(root, 'bin/taskflow.js'), ...args], {
    cwd: dir,
    env: { ...process.env, DATABASE_URL: join(dir, 'db'), JWT_SECRET: '', LOG_LEVEL: 'warn' },
    timeout: 120_000,
  });

describe('the CLI on a DATABASE_URL no server started on', () => {
  const dir = mkdtempSync(join(tmpdir(), 'taskflow-first-user-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('token refuses rather than sign with a new secret', async () => {
    await assert.rejects(cli(dir, 'token', '--user', 'bob'), (err: { stderr: string }) => {
      assert.match(err.stderr, /no development secret at .*db\.dev-jwt-secret/);
      assert.match(err.stderr, /start taskflow there first/);
      return true;
    });
    assert.equal(existsSync(join(dir, 'db.dev-jwt-secret')), false, 'no secret made');
    assert.equal(existsSync(join(dir, 'db')), false, 'no database made');
  });

  it('says which .env line it ignores (not NAME=value), and takes the rest', async () => {
    writeFileSync(join(dir, '.env'), 'PORT 3922\n# a comment\nLOG_LEVEL=warn\nNOTE="two\nlines"\n');
    try {
      const { stderr } = await cli(dir, '--help');
      assert.match(stderr, /\.env line 1 is not NAME=value; it is ignored/);
      assert.doesNotMatch(stderr, /\.env line [2-5]/);
    } finally {
      rmSync(join(dir, '.env'));
    }
  });

  it('migrate says it made a new database, then that it is up to date', async () => {
    assert.match((await cli(dir, 'migrate')).stdout, /made a new database at .*db \(DATABASE_URL\)/);
    assert.match((await cli(dir, 'migrate')).stdout, /database is up to date/);
  });
});

describe('request bodies as clients send them', () => {
  let db: Db;
  let app: TestApp;
  before(async () => {
    db = await openDb('memory://');
    await migrate(db);
    app = await startApp(db, { targets: ['api', 'reminders'] });
  });
  after(async () => {
    await app.stop();
    await db.close();
  });

  it("curl's default form type is refused with the content-type to send", async () => {
    const r = await app.call('ann', 'POST', '/api/tasks', '{"title":"x"}', {
      'content-type': 'application/x-www-form-urlencoded',
    });
    assert.equal(r.status, 415);
    assert.match(r.body.detail, /send JSON with content-type: application\/json/);
  });

  it('a POST that takes no body is served with content-type: application/json and no body', async () => {
    const created = await app.call('ann', 'POST', '/api/tasks', { title: 'x' });
    assert.equal(created.status, 201);
    const res = await fetch(`${app.url}/api/tasks/${created.body.id}/complete`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await app.token('ann')}`, 'content-type': 'application/json' },
    });
    assert.equal(res.status, 200, await res.text());
  });

  it('a reminder id no reminder has is "reminder not found", not "task not found"', async () => {
    const created = await app.call('ann', 'POST', '/api/tasks', { title: 'y' });
    const r = await app.call('ann', 'POST', `/api/tasks/${created.body.id}/reminders/nope/dismiss`);
    assert.equal(r.status, 404);
    assert.match(r.body.detail, /reminder not found/);
  });

  it('a POST that needs a body says so when it gets none', async () => {
    const res = await fetch(`${app.url}/api/tasks`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await app.token('ann')}`, 'content-type': 'application/json' },
    });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { detail?: string };
    assert.doesNotMatch(String(body.detail), /Body cannot be empty/);
  });
});

describe('MCP: dates in words that read as none', () => {
  let db: Db;
  let app: TestApp;
  let client: Client;
  before(async () => {
    db = await openDb('memory://');
    await migrate(db);
    app = await startApp(db, { targets: ['api'] });
    client = new Client({ name: 'first-user', version: '1.0.0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${await app.token('ann')}` } },
      }),
    );
  });
  after(async () => {
    await client.close();
    await app.stop();
    await db.close();
  });
  const text = async (args: Record<string, unknown>) => {
    const r = (await client.callTool({ name: 'add_task', arguments: args })) as {
      isError?: boolean;
      content: { text: string }[];
    };
    assert.equal(r.isError, true);
    return r.content.map((c) => c.text).join('\n');
  };

  it('are refused as words, with how to say them', async () => {
    const due = await text({ title: 'x', due_date: 'next blursday' });
    assert.match(due, /could not read "next blursday" as a date; say it as "tomorrow at 9"/);
    assert.doesNotMatch(due, /must be an ISO 8601/);
    const reminder = await text({ title: 'x', due_date: 'tomorrow at 9', reminders: ['a bit before'] });
    assert.match(reminder, /could not read "a bit before" as a reminder; say it as "30 minutes before"/);
  });
});

describe('a route of a target this process does not run', () => {
  it('is answered 404 naming the target that serves it', async () => {
    const db = await openDb('memory://');
    await migrate(db);
    const proc = await runTargets(testConfig(), findTargets(['api']), { db, catalog: MANIFESTS });
    try {
      const get = async (path: string) => {
        const res = await fetch(`${proc.url}${path}`, {
          headers: { authorization: `Bearer ${await signDevToken(TEST_SECRET, 'ann')}` },
        });
        return { status: res.status, detail: String(((await res.json()) as { detail?: string }).detail) };
      };
      const audit = await get('/api/audit?limit=5');
      assert.equal(audit.status, 404);
      assert.match(
        audit.detail,
        /the audit target serves it, and it does not run here \(taskflow serve audit/,
      );
      assert.match(
        (await get('/api/tasks/01a24e11-96ff-7518-b8ca-01aac0e14c66/reminders')).detail,
        /the reminders target serves it/,
      );
      assert.match((await get('/api/notifications/preferences')).detail, /the notifications target/);
      assert.equal((await get('/api/nothing-here')).detail, 'no route GET /api/nothing-here');
    } finally {
      await proc.stop();
      await db.close();
    }
  });
});

describe('the address a server listening on IPv6 says it runs at', () => {
  for (const [host, shown] of [
    ['::', '[::1]'],
    ['::1', '[::1]'],
  ] as const)
    it(`HOST=${host}: a URL that answers (it printed http://${host}:PORT, which no client parses)`, async () => {
      const db = await openDb('memory://');
      await migrate(db);
      const proc = await runTargets({ ...testConfig(), host, port: 0 }, findTargets(['api']), {
        db,
        catalog: MANIFESTS,
      });
      try {
        assert.match(proc.url, new RegExp(`^http://${shown.replace(/[[\]]/g, '\\$&')}:\\d+$`));
        assert.equal((await fetch(`${proc.url}/healthz`)).status, 200);
      } finally {
        await proc.stop();
        await db.close();
      }
    });
});
