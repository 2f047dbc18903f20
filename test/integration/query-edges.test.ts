/**
 * Listing and search at their edges, each failing before its fix (a review of the list API found them):
 * - MCP `list_tasks` / `search_tasks` take `priority: []` as no filter, as they take `tags: []` (it was a
 *   priority filter of "", refused: models send empty lists);
 * - `search_tasks` says what a query does: its description promised `"phrases"` and `-excluded` words, which
 *   the search reads as plain words (a model asked for "milk but not oat" got exactly the oat ones);
 * - the OpenAPI document states the defaults of `status` (all) and `limit` (50);
 * - a cursor is refused with other filters than its page's (it was taken, and skipped tasks without a word: a
 *   client or a model that changed `q` while paging lost the tasks before the cursor's position);
 * - `sort=title` puts an accented initial with its letter, page after page (in the C collation of PGlite and
 *   of a PostgreSQL made with --no-locale, "Äpfel" came after "Zahnarzt");
 * - a word of `q` with a sign the text search drops is found as written: "C++" found "C#" (both are "c");
 * - on a PostgreSQL database in the C locale, `q` finds a title or description whatever the case of its
 *   letters beyond ASCII (ILIKE folded ASCII only there: "école" did not find "École").
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import pg from 'pg';
import { DEFAULT_LIMIT } from '../../src/domain/query.ts';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp, type TestApp } from '../helpers/app.ts';
import { backends, createPgDatabase } from '../helpers/db.ts';

type ToolResult = {
  isError?: boolean;
  structuredContent?: { count: number; tasks: { title: string }[] };
  content: { text?: string }[];
};

for (const backend of backends)
  describe(`listing and search at their edges on ${backend.name}`, () => {
    let drop: () => Promise<void>;
    let app: TestApp;
    before(async () => {
      const fresh = await backend.fresh();
      drop = fresh.drop;
      app = await startApp(fresh.db, { targets: ['api'] });
    });
    after(async () => {
      await app.stop();
      await drop();
    });
    const create = async (user: string, body: object) => {
      const r = await app.call(user, 'POST', '/api/tasks', body);
      assert.equal(r.status, 201, JSON.stringify(r.body));
    };
    const mcp = async (user: string) => {
      const client = new Client({ name: 'query-edges', version: '1.0.0' });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`), {
          requestInit: { headers: { authorization: `Bearer ${await app.token(user)}` } },
        }),
      );
      return {
        call: async (name: string, args: Record<string, unknown>) =>
          (await client.callTool({ name, arguments: args })) as ToolResult,
        tools: async () => (await client.listTools()).tools,
        close: () => client.close(),
      };
    };
    const problem = (r: ToolResult) => r.content.map((x) => x.text).join(' ');

    it('MCP list_tasks and search_tasks take priority: [] as no filter, as they take tags: []', async () => {
      await create('mcp-priority', { title: 'Call the bank', priority: 'high' });
      const c = await mcp('mcp-priority');
      try {
        for (const [tool, args] of [
          ['list_tasks', {}],
          ['search_tasks', { query: 'bank' }],
        ] as const) {
          const r = await c.call(tool, { ...args, priority: [], tags: [] });
          assert.equal(r.isError, undefined, `${tool}: ${problem(r)}`);
          assert.equal(r.structuredContent?.count, 1);
          const high = await c.call(tool, { ...args, priority: ['high', 'urgent'] });
          assert.equal(high.structuredContent?.count, 1);
          assert.equal((await c.call(tool, { ...args, priority: ['low'] })).structuredContent?.count, 0);
        }
      } finally {
        await c.close();
      }
    });

    it('MCP search_tasks says what a query does: quotes and a leading - are plain words', async () => {
      await create('mcp-search', { title: 'Buy milk' });
      await create('mcp-search', { title: 'Buy oat milk' });
      await create('mcp-search', { title: 'Milk the oat field' });
      const c = await mcp('mcp-search');
      try {
        const description = (await c.tools()).find((t) => t.name === 'search_tasks')?.description ?? '';
        assert.doesNotMatch(description, /-excluded|"phrases"/);
        assert.match(description, /every word/);
        assert.match(description, /quotes and a leading - are read as plain words/);
        // As it says: every word, in any order; the minus and the quotes do not exclude or bind.
        const titles = async (query: string) =>
          (await c.call('search_tasks', { query })).structuredContent?.tasks.map((t) => t.title).sort();
        assert.deepEqual(await titles('milk -oat'), ['Buy oat milk', 'Milk the oat field']);
        assert.deepEqual(await titles('"oat milk"'), ['Buy oat milk', 'Milk the oat field']);
      } finally {
        await c.close();
      }
    });

    it('the OpenAPI document states the defaults of status and limit the list applies', async () => {
      const doc = (await (await fetch(`${app.url}/openapi.json`)).json()) as {
        paths: Record<string, { get: { parameters: { name: string; schema: { default?: unknown } }[] } }>;
      };
      const param = (name: string) => doc.paths['/api/tasks']!.get.parameters.find((p) => p.name === name);
      assert.equal(param('status')?.schema.default, 'all');
      assert.equal(param('limit')?.schema.default, DEFAULT_LIMIT);
      // What the list does without them: every status, DEFAULT_LIMIT tasks.
      await create('defaults', { title: 'open' });
      const done = await app.call('defaults', 'POST', '/api/tasks', { title: 'done', status: 'completed' });
      assert.equal(done.status, 201);
      const page = await app.call('defaults', 'GET', '/api/tasks');
      assert.deepEqual(page.body.items.map((t: { title: string }) => t.title).sort(), ['done', 'open']);
    });

    it('refuses a cursor with other filters than its page, and takes it with the same ones spelt otherwise', async () => {
      const user = 'cursor-filters';
      for (let i = 0; i < 4; i++) {
        await create(user, { title: `milk ${i}`, tags: ['a', 'b'], priority: 'high' });
        await create(user, { title: `bread ${i}`, tags: ['a', 'b'], priority: 'low' });
      }
      const titles = (r: { body: { items: { title: string }[] } }) => r.body.items.map((t) => t.title);
      const first = await app.call(user, 'GET', '/api/tasks?q=bread&tag=a,b&priority=low,high&limit=2');
      assert.deepEqual(titles(first), ['bread 3', 'bread 2']);
      const cursor = first.body.next_cursor as string;
      const other = await app.call(
        user,
        'GET',
        `/api/tasks?q=milk&tag=a,b&priority=low,high&cursor=${cursor}`,
      );
      assert.equal(other.status, 400, JSON.stringify(other.body));
      assert.match(JSON.stringify(other.body), /cursor.*belongs to other filters/);
      const fewerTags = await app.call(
        user,
        'GET',
        `/api/tasks?q=bread&tag=a&priority=low,high&cursor=${cursor}`,
      );
      assert.equal(fewerTags.status, 400);
      // The same filters in another order and case: the next page.
      const same = await app.call(
        user,
        'GET',
        `/api/tasks?q=bread&tag=B&tag=a&priority=HIGH,low&limit=2&cursor=${cursor}`,
      );
      assert.equal(same.status, 200, JSON.stringify(same.body));
      assert.deepEqual(titles(same), ['bread 1', 'bread 0']);
      // A cursor of the version before, without the filters' digest, is taken as it was.
      const old = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as Record<string, unknown>;
      assert.equal(typeof old.f, 'string');
      delete old.f;
      const legacy = Buffer.from(JSON.stringify(old)).toString('base64url');
      const page = await app.call(
        user,
        'GET',
        `/api/tasks?q=bread&tag=a,b&priority=low,high&cursor=${legacy}`,
      );
      assert.deepEqual(titles(page), ['bread 1', 'bread 0']);
    });

    it('finds a word with a sign as written (C++ is not C#), and a word by its letters when punctuation ends it', async () => {
      const user = 'signs';
      for (const title of [
        'Learn C++',
        'Learn C#',
        'Node.js upgrade',
        'Nodes and edges',
        'Buy milk',
        '#home chores',
      ])
        await create(user, { title });
      const found = async (q: string) =>
        (await app.call(user, 'GET', `/api/tasks?q=${encodeURIComponent(q)}`)).body.items
          .map((t: { title: string }) => t.title)
          .sort();
      assert.deepEqual(await found('C++'), ['Learn C++']);
      assert.deepEqual(await found('c#'), ['Learn C#']);
      assert.deepEqual(await found('learn c++'), ['Learn C++']);
      assert.deepEqual(await found('node.js'), ['Node.js upgrade']);
      assert.deepEqual(await found('#home'), ['#home chores']);
      assert.deepEqual(await found('milk,'), ['Buy milk'], 'a comma after a word is not a sign');
      assert.deepEqual(await found('"milk"'), ['Buy milk']);
      assert.deepEqual(await found('learn'), ['Learn C#', 'Learn C++']);
    });

    it('pages sort=due in both orders: dated by date and id, undated last, each task once, filters kept', async () => {
      const user = 'due-pages';
      const dues = [
        '2027-01-03T09:00:00Z',
        '2027-01-01T09:00:00Z',
        null,
        '2027-01-02T09:00:00Z',
        '2027-01-01T09:00:00Z', // a tie: the id decides
        null,
        '2027-01-01T09:00:00Z',
        null,
      ];
      for (const [i, due] of dues.entries())
        await create(user, { title: `t${i}`, due_date: due, ...(i % 2 ? { tags: ['odd'] } : {}) });
      const listed = (await app.call(user, 'GET', '/api/tasks?limit=100')).body.items as {
        id: string;
        title: string;
        due_date: string | null;
        tags: string[];
      }[];
      const expected = (order: 'asc' | 'desc', keep: (t: (typeof listed)[number]) => boolean) => {
        const dated = listed.filter((t) => t.due_date !== null && keep(t));
        const byIdHex = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0); // uuid order is its hex's
        dated.sort((a, b) => byIdHex(a.due_date!, b.due_date!) || byIdHex(a.id, b.id));
        const undated = listed
          .filter((t) => t.due_date === null && keep(t))
          .sort((a, b) => byIdHex(a.id, b.id));
        if (order === 'desc') {
          dated.reverse();
          undated.reverse();
        }
        return [...dated, ...undated].map((t) => t.title);
      };
      for (const order of ['asc', 'desc'] as const)
        for (const [query, keep] of [
          ['', () => true],
          ['&tag=odd', (t: (typeof listed)[number]) => t.tags.includes('odd')],
        ] as const)
          for (const limit of [1, 2, 3, 100]) {
            const seen: string[] = [];
            let cursor = '';
            do {
              const r = await app.call(
                user,
                'GET',
                `/api/tasks?sort=due&order=${order}&limit=${limit}${query}${cursor}`,
              );
              assert.equal(r.status, 200, JSON.stringify(r.body));
              seen.push(...r.body.items.map((t: { title: string }) => t.title));
              cursor = r.body.next_cursor ? `&cursor=${r.body.next_cursor}` : '';
            } while (cursor);
            assert.deepEqual(seen, expected(order, keep), `order=${order} limit=${limit}${query}`);
          }
    });

    it('sorts titles with their accented initials among their letters, in both orders and across pages', async () => {
      const user = 'title-sort';
      const titles = ['Zahnarzt', 'Äpfel kaufen', 'Birnen', 'École', 'apfel', 'élan', 'Ångström'];
      for (const title of titles) await create(user, { title });
      const all = async (order: string) => {
        const seen: string[] = [];
        let cursor = '';
        do {
          const r = await app.call(user, 'GET', `/api/tasks?sort=title&order=${order}&limit=2${cursor}`);
          assert.equal(r.status, 200, JSON.stringify(r.body));
          seen.push(...r.body.items.map((t: { title: string }) => t.title));
          cursor = r.body.next_cursor ? `&cursor=${r.body.next_cursor}` : '';
        } while (cursor);
        return seen;
      };
      const expected = ['Ångström', 'apfel', 'Äpfel kaufen', 'Birnen', 'École', 'élan', 'Zahnarzt'];
      assert.deepEqual(await all('asc'), expected);
      assert.deepEqual(await all('desc'), [...expected].reverse());
    });
  });

const pgUrl = process.env.TEST_DATABASE_URL;
describe(
  'search on a PostgreSQL database in the C locale',
  { skip: pgUrl ? false : 'needs TEST_DATABASE_URL' },
  () => {
    it('finds a title or description whatever the case of its letters beyond ASCII', async () => {
      const created = await createPgDatabase(pgUrl!, 'tf_test_c');
      // Made again in the C locale, as initdb makes every database on a host without a UTF-8 locale.
      const admin = new pg.Client({ connectionString: pgUrl });
      await admin.connect();
      const name = new URL(created.url).pathname.slice(1);
      await admin.query(`DROP DATABASE ${name}`);
      await admin.query(
        `CREATE DATABASE ${name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`,
      );
      await admin.end();
      const db = await openDb(created.url);
      await migrate(db);
      const app = await startApp(db, { targets: ['api'] });
      try {
        assert.deepEqual(
          (await db.query(`SELECT lower('É') AS l`)).rows,
          [{ l: 'É' }],
          "the database's own lower() folds ASCII only",
        );
        for (const body of [
          { title: 'École primaire' },
          { title: 'Summer', description: 'ÉTÉ à Paris' },
          { title: 'Straße' },
        ])
          assert.equal((await app.call('c-user', 'POST', '/api/tasks', body)).status, 201);
        const found = async (q: string) =>
          (await app.call('c-user', 'GET', `/api/tasks?q=${encodeURIComponent(q)}`)).body.items
            .map((t: { title: string }) => t.title)
            .sort();
        assert.deepEqual(await found('école'), ['École primaire']);
        assert.deepEqual(await found('ÉCOLE'), ['École primaire']);
        assert.deepEqual(await found('été'), ['Summer']);
        assert.deepEqual(await found('STRASSE'), [], 'folding, not ß expanded');
        assert.deepEqual(await found('straße'), ['Straße']);
        assert.deepEqual(await found('a%b'), [], 'a % is a character, not a wildcard');
      } finally {
        await app.stop();
        await db.close();
        await created.drop();
      }
    });
  },
);
