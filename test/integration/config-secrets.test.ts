/**
 * Secrets in the configuration's URLs stay out of what Taskflow prints, and the URLs work as written (each
 * failed before):
 * - SCHEMA_REGISTRY_URL with its credentials in it (`https://user:secret@registry`, as hosted registries hand
 *   it out): fetch refused the URL, and the start failed with it in its message, the password twice;
 * - SMTP_URL with a `#` in its password: the start failed after migrating with `taskflow: Invalid URL`, naming
 *   nothing, and Node's DEP0170 warning printed the URL, password and all;
 * - DATABASE_URL with the password as a parameter (`?password=`, which node-postgres takes): the start-up
 *   banner printed it.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { RegistryError, SchemaRegistryClient, subjectOf } from '../../src/bus/schema-registry.ts';
import { EVENT_TYPES, publishedSchema, type EventType } from '../../src/contracts/schemas.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp, TEST_SECRET } from '../helpers/app.ts';
import { createPgDatabase } from '../helpers/db.ts';
import { freePorts, stopChild } from '../helpers/processes.ts';
import { startFakeRegistry, type FakeRegistry } from '../helpers/schema-registry.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const AUTH = { username: 'svc-account', password: 'Registry@S3cret' };
/** A URL with the user and password of `auth` in it, percent-encoded as they must be. */
const withCredentials = (url: string, auth = AUTH) => {
  const u = new URL(url);
  u.username = encodeURIComponent(auth.username);
  u.password = encodeURIComponent(auth.password);
  return u.href;
};

/** `taskflow serve <target>` until it exits (each of these fails at start): all it printed. */
function startFailing(
  target: string,
  env: Record<string, string>,
): { status: number | null; output: string } {
  const r = spawnSync(process.execPath, ['bin/taskflow.js', 'serve', target], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      DATABASE_URL: 'memory://',
      JWT_SECRET: TEST_SECRET,
      PORT: '0',
      LOG_FORMAT: 'json',
      ...env,
    },
    encoding: 'utf8',
    timeout: 100_000,
  });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe('SCHEMA_REGISTRY_URL with the credentials in it', () => {
  let db: Db;
  let registry: FakeRegistry;
  before(async () => {
    db = await openDb('memory://');
    await migrate(db);
    registry = await startFakeRegistry(AUTH);
  });
  after(async () => {
    await registry.close();
    await db.close();
  });

  it('registers the schemas with them as its Basic auth', async () => {
    const app = await startApp(db, {
      targets: ['api'],
      env: { SCHEMA_REGISTRY_URL: withCredentials(registry.url), KAFKA_TOPIC_PREFIX: 'inurl.' },
    });
    await app.stop();
    const types = Object.keys(EVENT_TYPES) as EventType[];
    for (const t of types) assert.equal(registry.subjects.get(subjectOf(t, 'inurl.'))?.length, 1, t);
  });

  it('a client given such a URL uses them, and its errors do not quote them', async () => {
    const client = new SchemaRegistryClient({ url: withCredentials(registry.url), compatibility: 'FULL' });
    const schema = JSON.stringify(publishedSchema('task.created'));
    assert.equal(typeof (await client.register('client-task.created', schema)), 'number');
    const [closed] = await freePorts(1);
    const unreachable = new SchemaRegistryClient({
      url: withCredentials(`http://127.0.0.1:${closed}/`),
      compatibility: 'FULL',
    });
    await assert.rejects(unreachable.register('client-task.created', schema), (err: Error) => {
      assert.ok(err instanceof RegistryError);
      assert.match(err.message, new RegExp(`^schema registry http://127\\.0\\.0\\.1:${closed}/subjects/`));
      assert.ok(!err.message.includes('S3cret'), err.message);
      return true;
    });
  });

  it(
    'a start that cannot reach the registry says so without printing the password',
    { timeout: 120_000 },
    async () => {
      const [closed] = await freePorts(1);
      const { status, output } = startFailing('api', {
        SCHEMA_REGISTRY_URL: withCredentials(`https://127.0.0.1:${closed}/`),
      });
      assert.notEqual(status, 0);
      assert.match(
        output,
        new RegExp(`taskflow: schema registry https://127\\.0\\.0\\.1:${closed}/subjects/\\S+ unreachable`),
      );
      assert.ok(!output.includes('S3cret'), output);
    },
  );
});

describe('SMTP_URL with a # in its password', () => {
  it(
    'stops the start naming SMTP_URL and how to write it, without printing the password',
    { timeout: 120_000 },
    () => {
      const { status, output } = startFailing('notifications', {
        SMTP_URL: 'smtp://mailer:Smtp#S3cret@127.0.0.1:2525',
      });
      assert.notEqual(status, 0);
      assert.match(output, /^taskflow: SMTP_URL must be smtp:\/\/user:password@host:port .*# as %23/m);
      assert.ok(!output.includes('S3cret'), output);
    },
  );
});

const pgUrl = process.env.TEST_DATABASE_URL;

describe('the start-up banner', { skip: pgUrl ? false : 'needs TEST_DATABASE_URL' }, () => {
  it('masks a password given as a parameter of DATABASE_URL', { timeout: 120_000 }, async () => {
    const created = await createPgDatabase(pgUrl!, 'tf_banner');
    const url = new URL(created.url);
    // The URL's own password, moved into the query as a deployment may write it (the test server may trust
    // any, then one of ours).
    const password = decodeURIComponent(url.password) || 'S3cret-banner-pw';
    url.password = '';
    url.searchParams.set('password', password);
    const child = spawn(process.execPath, ['bin/taskflow.js', 'up'], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: url.href, JWT_SECRET: TEST_SECRET, PORT: '0', LOG_FORMAT: 'json' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no banner:\n${output}`)), 100_000);
        const read = (chunk: Buffer) => {
          output += chunk.toString();
          if (/is running at .*\n/.test(output)) {
            clearTimeout(timer);
            resolve();
          }
        };
        child.stdout.on('data', read);
        child.stderr.on('data', read);
        child.once('exit', () => reject(new Error(`exited before its banner:\n${output}`)));
      });
      const banner = output.split('\n').find((l) => l.includes('is running at'))!;
      assert.match(banner, /database: postgres:\/\/\S+\?password=\*\*\*;/);
      assert.ok(!output.includes(password), banner);
    } finally {
      await stopChild(child);
      await created.drop();
    }
  });
});
