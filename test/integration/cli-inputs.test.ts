/**
 * What the CLI is given that it cannot use, refused in one line that names the setting (a review of the CLI
 * found each; each failed before its fix):
 * - a command that reads what a running system wrote (lag, tail, dlq, audit verify) given a PGlite DATABASE_URL
 *   that is a directory holding no database (`.data`, the parent of the default `.data/db`) made a 39 MB
 *   cluster there beside the user's files, narrowed the directory's mode to 700, and said "run taskflow
 *   migrate"; after that, `audit verify` said "ok: 0 user chain(s)". On `memory://` these answered on an empty
 *   database made for the command. A database directory's mode was narrowed by them too;
 * - another user's data directory: "EPERM: operation not permitted, chmod '<dir>'", no setting named;
 * - the table printer spread one argument per row into Math.max: "Maximum call stack size exceeded" past about
 *   125,000 rows (`dlq list --limit 200000`); --limit had no bound;
 * - a `.env` that cannot be read (a directory, a file this user may not read) failed every command, --version
 *   too, with a stack trace, or said ENOENT;
 * - `taskflow serve ""`: "unknown target(s) ;".
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createEmbeddedBus } from '../../src/bus/embedded/index.ts';
import { DLQ_HEADERS } from '../../src/bus/middleware.ts';
import { dlqTopic } from '../../src/contracts/topics.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { openDb } from '../../src/store/db.ts';
import { TEST_SECRET } from '../helpers/app.ts';
import { othersCanRead } from '../helpers/files.ts';
import { taskCreated } from '../helpers/events.ts';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * The CLI as a separate process in `cwd` (a directory of the test's: no `.env` of the checkout), on the
 * embedded bus; `node` adds options of node's own; `asUser` runs it as that uid (from source: that user
 * cannot rebuild dist/).
 */
async function taskflow(
  env: Record<string, string>,
  args: string[],
  opts: { cwd?: string; node?: string[]; asUser?: number } = {},
): Promise<Ran> {
  const entry =
    opts.asUser === undefined
      ? [join(root, 'bin/taskflow.js')]
      : ['--import', import.meta.resolve('tsx'), join(root, 'src/cli/main.ts')];
  return run(process.execPath, [...(opts.node ?? []), ...entry, ...args], {
    cwd: opts.cwd ?? tmpdir(),
    env: { ...process.env, BUS: 'embedded', JWT_SECRET: TEST_SECRET, LOG_LEVEL: 'warn', ...env },
    timeout: 120_000,
    maxBuffer: 256 * 1024 * 1024,
    ...(opts.asUser === undefined ? {} : { uid: opts.asUser, gid: opts.asUser }),
  }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number; stdout: string; stderr: string }) => err,
  );
}

/** A refusal: exit code `code`, and stderr one line (no stack trace). */
function refused(ran: Ran, code: number, what: string): string {
  assert.equal(
    ran.code,
    code,
    `${what}: exit code ${ran.code}\nstdout: ${ran.stdout}\nstderr: ${ran.stderr}`,
  );
  // bin/taskflow.js says when it rebuilt dist/ first (src/ changed since).
  const lines = ran.stderr
    .trimEnd()
    .split('\n')
    .filter((l) => !/^taskflow: compiled src\//.test(l));
  assert.equal(lines.length, 1, `${what}: one line, got:\n${ran.stderr}`);
  return lines[0]!;
}

const mode = (path: string) => statSync(path).mode & 0o777;

/** Whether another user can read `file` (every directory above it searchable by others). */
const otherUser =
  process.platform !== 'linux' || process.getuid?.() !== 0
    ? 'needs Linux, run as root (the command runs as user nobody)'
    : !othersCanRead(process.execPath) || !othersCanRead(join(root, 'src/cli/main.ts'))
      ? `user nobody cannot run ${process.execPath} on ${root}`
      : false;

/** The commands that only read what a running system wrote. */
const READERS = [
  ['lag'],
  ['tail', 'task-events', '--from-beginning'],
  ['dlq', 'list'],
  ['dlq', 'show', '--id', 'x'],
  ['audit', 'verify'],
];

describe('a command that reads what a running system wrote, on a DATABASE_URL that holds none', () => {
  let parent: string;
  let database: string;
  before(async () => {
    // The user's project directory: `.data` holds the database (`.data/db`, the default) and the user's files.
    parent = mkdtempSync(join(tmpdir(), 'taskflow-cli-inputs-'));
    chmodSync(parent, 0o755);
    database = join(parent, 'db');
    const db = await openDb(database);
    await db.close();
    writeFileSync(join(parent, 'notes.txt'), 'my notes\n');
  });
  after(() => rmSync(parent, { recursive: true, force: true }));

  it('refuses the directory above the database, making and changing nothing there', async () => {
    const before = readdirSync(parent).sort();
    for (const args of READERS) {
      const line = refused(await taskflow({ DATABASE_URL: parent }, args), 2, args.join(' '));
      assert.match(line, /DATABASE_URL/, args.join(' '));
      assert.match(line, /holds no database/, args.join(' '));
      // What it found: the database below it.
      assert.ok(line.includes(`DATABASE_URL=${database}`), `${args.join(' ')}: ${line}`);
      assert.deepEqual(readdirSync(parent).sort(), before, `${args.join(' ')}: nothing made`);
      assert.equal(mode(parent).toString(8), '755', `${args.join(' ')}: its mode`);
    }
  });

  it('refuses an empty directory, and a file', async () => {
    const empty = join(parent, 'empty');
    mkdirSync(empty, { mode: 0o755 });
    try {
      const line = refused(await taskflow({ DATABASE_URL: empty }, ['audit', 'verify']), 2, 'empty');
      assert.match(line, /DATABASE_URL.*holds no database.*empty/);
      assert.deepEqual(readdirSync(empty), []);
      assert.equal(mode(empty).toString(8), '755');
    } finally {
      rmSync(empty, { recursive: true });
    }
    const line = refused(await taskflow({ DATABASE_URL: join(parent, 'notes.txt') }, ['lag']), 2, 'a file');
    assert.match(line, /DATABASE_URL.*notes\.txt.*not a directory/);
  });

  it("opens the database's own directory and leaves its mode as it is", async () => {
    chmodSync(database, 0o755);
    const verified = await taskflow({ DATABASE_URL: database }, ['audit', 'verify']);
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stdout, /^ok: 0 user chain\(s\)/);
    const lag = await taskflow({ DATABASE_URL: database }, ['lag']);
    assert.equal(lag.code, 0, lag.stderr);
    assert.equal(mode(database).toString(8), '755');
  });

  it('refuses memory:// (a new, empty database of its own) on the embedded bus', async () => {
    for (const args of [['audit', 'verify'], ['lag'], ['dlq', 'replay', '--group', 'taskflow-audit']]) {
      const line = refused(await taskflow({ DATABASE_URL: 'memory://' }, args), 2, args.join(' '));
      assert.match(line, /DATABASE_URL is memory:\/\//, args.join(' '));
    }
  });

  it(
    "names DATABASE_URL and the directory's owner for another user's directory",
    { skip: otherUser },
    async () => {
      chmodSync(database, 0o755);
      // lag refuses before it opens (exit code 2, a setting); migrate as it opens (1, as for a lock in use).
      for (const [args, code] of [
        [['lag'], 2],
        [['migrate'], 1],
      ] as const) {
        const line = refused(
          await taskflow({ DATABASE_URL: database }, [...args], { asUser: 65534 }),
          code,
          args.join(' '),
        );
        assert.ok(line.includes(`${database} (DATABASE_URL)`), `${args.join(' ')}: ${line}`);
        assert.match(line, /belongs to uid 0.*uid 65534/, args.join(' '));
        assert.equal(mode(database).toString(8), '755');
      }
      // One it cannot even look into.
      chmodSync(database, 0o700);
      const line = refused(await taskflow({ DATABASE_URL: database }, ['lag'], { asUser: 65534 }), 2, '700');
      assert.ok(line.includes(`${database} (DATABASE_URL)`), line);
      assert.match(line, /belongs to uid 0/);
    },
  );
});

describe('the table of a long listing', () => {
  /** Dead letters per group: the most `dlq list --limit` takes. */
  const PER_GROUP = 20_000;
  const GROUPS = ['taskflow-audit', 'taskflow-reminders'];
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'taskflow-cli-table-'));
    const db = await openDb(join(dir, 'db'));
    const bus = createEmbeddedBus(db, { log: silentLogger });
    await bus.publisher.publish(
      GROUPS.map((group) => ({
        topic: dlqTopic(group),
        key: 'u-table',
        event: taskCreated('u-table', 'a letter'),
        headers: { [DLQ_HEADERS.error]: 'boom', [DLQ_HEADERS.sourceTopic]: 'task-events' },
      })),
    );
    await bus.close();
    // Copies of each under ids of their own, after it in its partition (in SQL: published, they took 20 s).
    await db.query(
      `WITH first AS (SELECT * FROM bus_messages WHERE topic = ANY($1))
       INSERT INTO bus_messages (topic, partition, "offset", key, headers, value)
       SELECT topic, partition, "offset" + g, key, headers, jsonb_set(value, '{id}', to_jsonb(topic || '-' || g))
         FROM first, generate_series(1, $2 - 1) g`,
      [GROUPS.map(dlqTopic), PER_GROUP],
    );
    await db.query(
      `UPDATE bus_partitions p SET next_offset = m.next
         FROM (SELECT topic, partition, max("offset") + 1 AS next FROM bus_messages GROUP BY topic, partition) m
        WHERE m.topic = p.topic AND m.partition = p.partition AND p.topic = ANY($1)`,
      [GROUPS.map(dlqTopic)],
    );
    await db.close();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('takes no stack per row (a smaller stack stands for 125,000 rows)', async () => {
    // With 200 KB of stack, Math.max(...widths) overflowed at about 25,000 arguments (984 KB: 125,000).
    const listed = await taskflow(
      { DATABASE_URL: join(dir, 'db') },
      ['dlq', 'list', '--limit', String(PER_GROUP)],
      { node: ['--stack-size=200'] },
    );
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal(listed.stdout.trimEnd().split('\n').length, GROUPS.length * PER_GROUP + 1);
  });

  it('--limit has a bound, named', async () => {
    const ran = await taskflow({ DATABASE_URL: 'memory://' }, ['dlq', 'list', '--limit', '20001']);
    assert.equal(ran.code, 1);
    assert.match(ran.stderr, /--limit must be a whole number from 1 to 20000/);
  });
});

describe('a .env that cannot be read', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'taskflow-cli-env-'));
    chmodSync(dir, 0o755);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('is named in one line, for --version and --help too', async () => {
    mkdirSync(join(dir, '.env'));
    try {
      for (const args of [['--version'], ['--help'], ['lag']]) {
        const line = refused(await taskflow({}, args, { cwd: dir }), 2, `.env a directory: ${args[0]}`);
        assert.equal(line, `taskflow: ${join(dir, '.env')} is a directory, not a file of NAME=value lines`);
      }
    } finally {
      rmSync(join(dir, '.env'), { recursive: true });
    }
    // None there: nothing said.
    const version = await taskflow({}, ['--version'], { cwd: dir });
    assert.equal(version.code, 0);
    assert.equal(version.stderr, '');
  });

  it('says a file this user may not read is one, not ENOENT', { skip: otherUser }, async () => {
    writeFileSync(join(dir, '.env'), 'PORT=3000\n', { mode: 0o000 });
    try {
      const line = refused(await taskflow({}, ['--version'], { cwd: dir, asUser: 65534 }), 2, 'mode 000');
      assert.match(line, /^taskflow: cannot read .*\.env: EACCES: permission denied/);
    } finally {
      rmSync(join(dir, '.env'));
    }
  });

  it('the environment still wins over it', async () => {
    writeFileSync(join(dir, '.env'), 'DATABASE_URL=memory://\nBUS=nonsense\n');
    try {
      const line = refused(await taskflow({ BUS: 'nonsense2' }, ['lag'], { cwd: dir }), 2, 'BUS');
      assert.match(line, /nonsense2/);
    } finally {
      rmSync(join(dir, '.env'));
    }
  });
});

describe('taskflow serve with an empty target name', () => {
  it('says the name is empty', async () => {
    for (const args of [[''], ['api', ' ']]) {
      const line = refused(await taskflow({ DATABASE_URL: 'memory://' }, ['serve', ...args]), 1, 'serve');
      assert.match(line, /an empty target name/);
      assert.doesNotMatch(line, /unknown target/);
    }
  });
});
