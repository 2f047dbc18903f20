/**
 * `taskflow dlq` on a dead-letter topic longer than one page (the embedded bus on PostgreSQL, the CLI as a
 * separate process): a letter past the first 1,000 can be shown and replayed, `list --limit` says how many
 * it left out, and gateway instance groups are included when no group is named. And the operations commands
 * refuse, naming why, what they cannot do (a misspelt topic or group, a bad limit, a token the server refuses).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { replayDeadLetters } from '../../src/bus/dlq.ts';
import { DLQ_HEADERS } from '../../src/bus/middleware.ts';
import { UNDECODABLE_EVENT_TYPE } from '../../src/bus/types.ts';
import { createEmbeddedBus } from '../../src/bus/embedded/index.ts';
import { dlqTopic } from '../../src/contracts/topics.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { TEST_SECRET } from '../helpers/app.ts';
import { createPgDatabase, postgresBackend } from '../helpers/db.ts';
import { taskCreated } from '../helpers/events.ts';

const run = promisify(execFile);

/** The CLI as a separate process, on the embedded bus in the database at `url`. */
const taskflow = (url: string, ...args: string[]) =>
  run(process.execPath, ['bin/taskflow.js', ...args], {
    env: { ...process.env, BUS: 'embedded', DATABASE_URL: url, JWT_SECRET: TEST_SECRET, LOG_LEVEL: 'warn' },
    timeout: 120_000,
  });

/** The failure headers of the i-th dead letter of `group`, as the consumer writes them (task-events, partition 0). */
const letterHeaders = (group: string, i: number) => ({
  [DLQ_HEADERS.error]: `boom ${i}`,
  [DLQ_HEADERS.attempts]: '5',
  [DLQ_HEADERS.sourceTopic]: 'task-events',
  [DLQ_HEADERS.sourcePartition]: '0',
  [DLQ_HEADERS.sourceOffset]: String(i),
  [DLQ_HEADERS.group]: group,
});

describe(
  'taskflow dlq on a long dead-letter topic',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    it('shows and replays a letter past the first 1,000; list --limit reports what it left out', async () => {
      const { db, url, drop } = await postgresBackend!.fresh();
      const bus = createEmbeddedBus(db, { log: silentLogger });
      const group = 'taskflow-audit';
      const letters = Array.from({ length: 1_005 }, (_, i) => taskCreated('u-dlq', `letter ${i}`));
      const headers = (i: number) => letterHeaders(group, i);
      const cli = (...args: string[]) => taskflow(url, 'dlq', ...args);
      try {
        await bus.publisher.publish(
          letters.map((event, i) => ({ topic: dlqTopic(group), key: 'u-dlq', event, headers: headers(i) })),
        );
        await bus.publisher.publish([
          {
            topic: dlqTopic('taskflow-gateway-pod-7'),
            key: 'u-gw\u001b[31m',
            event: taskCreated('u-gw', 'gw'),
            headers: headers(0),
          },
        ]);
        const last = letters.at(-1)!;

        const shown = JSON.parse((await cli('show', '--id', last.id)).stdout) as { error: string }[];
        assert.equal(shown[0]?.error, 'boom 1004');

        const listed = await cli('list', '--group', group, '--limit', '2', '--json');
        assert.equal((JSON.parse(listed.stdout) as unknown[]).length, 2);
        assert.match(listed.stderr, /showing the first 2 of 1005 dead letters/);
        // A key from an event reaches the table as text, not as an escape sequence for the terminal.
        const gateway = (await cli('list', '--group', 'taskflow-gateway-pod-7')).stdout;
        assert.ok(gateway.includes('u-gw\\u001b[31m') && !gateway.includes('\u001b'), gateway);
        const all = JSON.parse((await cli('list', '--limit', '1', '--json')).stdout) as { group: string }[];
        assert.ok(
          all.some((d) => d.group === 'taskflow-gateway-pod-7'),
          'gateway instance groups are listed',
        );
        await assert.rejects(cli('list', '--limit', 'lots'), /--limit must be a whole number/);
        await assert.rejects(
          cli('list', '--limit', '99999999999999999999'),
          /--limit must be a whole number from 1 to 20000/,
        );
        // One id of several unknown: nothing is replayed (a partial replay under an error was run twice).
        const before = (await bus.admin.read('task-events', { limit: Infinity })).length;
        await assert.rejects(
          cli('replay', '--group', group, '--id', letters[0]!.id, '--id', 'no-such-id'),
          /not found in taskflow-audit\.dlq: no-such-id \(nothing was replayed\)/,
        );
        assert.equal((await bus.admin.read('task-events', { limit: Infinity })).length, before);

        const replay = await cli('replay', '--group', group, '--id', last.id);
        assert.match(replay.stdout, /replayed 1 event/);
        const republished = (await bus.admin.read('task-events', { limit: Infinity })).filter(
          (m) => m.event.id === last.id,
        );
        assert.equal(republished.length, 1);

        // A letter that does not name its source topic is kept, and said so.
        const sourceless = taskCreated('u-dlq', 'no source');
        const { [DLQ_HEADERS.sourceTopic]: _topic, ...noTopic } = headers(18);
        await bus.publisher.publish([
          { topic: dlqTopic(group), key: 'u-dlq', event: sourceless, headers: noTopic },
        ]);
        const unsourced = await cli('replay', '--group', group, '--id', sourceless.id).then(
          () => assert.fail('replaying only a letter without a source topic succeeded'),
          (err: { code: number; stdout: string }) => err,
        );
        assert.equal(unsourced.code, 1);
        assert.match(unsourced.stdout, /kept 1 that do not name their source topic/);

        // A letter whose bytes were not an event (its stand-in, as the Kafka codec makes it) is not replayed:
        // it went to the source topic as if it were an event, and came back.
        const undecodable = {
          ...taskCreated('u-dlq', 'x'),
          id: 'undecodable-task-events-0-17',
          type: UNDECODABLE_EVENT_TYPE,
          data: { raw: 'this is not json', error: 'Unexpected token' },
        };
        await bus.publisher.publish([
          { topic: dlqTopic(group), key: 'u-dlq', event: undecodable as never, headers: headers(17) },
        ]);
        const refused = await cli('replay', '--group', group, '--id', undecodable.id).then(
          () => assert.fail('replaying only a letter that is not an event succeeded'),
          (err: { code: number; stdout: string }) => err,
        );
        assert.equal(refused.code, 1);
        assert.match(refused.stdout, /replayed 0 event\(s\)[\s\S]*kept 1 whose bytes are not an event/);
        assert.deepEqual(
          (await bus.admin.read('task-events', { limit: Infinity })).filter(
            (m) => m.event.id === undecodable.id,
          ),
          [],
        );
      } finally {
        await bus.close();
        await drop();
      }
    });

    it('lists what was not replayed yet: a replay moves the group past what it sent, a replay of all sends only the rest', async () => {
      const { db, url, drop } = await postgresBackend!.fresh();
      const bus = createEmbeddedBus(db, { log: silentLogger });
      const group = 'taskflow-recurrence';
      const letter = (event: { id: string }, i: number) => ({
        topic: dlqTopic(group),
        key: 'u-cursor',
        event: event as never,
        headers: {
          [DLQ_HEADERS.error]: `boom ${i}`,
          [DLQ_HEADERS.sourceTopic]: 'task-events',
          [DLQ_HEADERS.sourcePartition]: '0',
          [DLQ_HEADERS.sourceOffset]: String(i),
        },
      });
      const first = taskCreated('u-cursor', 'first');
      const undecodable = {
        ...taskCreated('u-cursor', 'x'),
        id: 'undecodable-task-events-0-1',
        type: UNDECODABLE_EVENT_TYPE,
        data: { raw: 'not json', error: 'Unexpected token' },
      };
      const third = taskCreated('u-cursor', 'third');
      const cli = (...args: string[]) => taskflow(url, 'dlq', ...args);
      const listed = async (...args: string[]) =>
        (
          JSON.parse((await cli('list', '--group', group, '--json', ...args)).stdout) as {
            event: { id: string };
            replayed: boolean;
          }[]
        ).map((d) => `${d.event.id}${d.replayed ? ' (replayed)' : ''}`);
      const sentBack = async (id: string) =>
        (await bus.admin.read('task-events', { limit: Infinity })).filter((m) => m.event.id === id).length;
      try {
        await bus.publisher.publish([letter(first, 0), letter(undecodable, 1), letter(third, 2)]);
        assert.deepEqual(await listed(), [first.id, undecodable.id, third.id]);

        // Out of order, by id: sent; still listed, behind a letter not replayed.
        assert.match((await cli('replay', '--group', group, '--id', third.id)).stdout, /replayed 1 event/);
        assert.deepEqual(await listed(), [first.id, undecodable.id, third.id]);

        // All: what is listed (the letter that is not an event kept, and said so); then nothing is listed.
        const all = await cli('replay', '--group', group);
        assert.match(all.stdout, /replayed 2 event\(s\)[\s\S]*kept 1 whose bytes are not an event/);
        assert.equal(await sentBack(first.id), 1);
        const after = await cli('list', '--group', group);
        assert.equal(after.stdout.trim(), '(none)');
        assert.match(after.stderr, /3 replayed dead letter\(s\) not shown \(--all shows them\)/);
        assert.deepEqual(await listed('--all'), [
          `${first.id} (replayed)`,
          `${undecodable.id} (replayed)`,
          `${third.id} (replayed)`,
        ]);
        assert.match((await cli('list', '--group', group, '--all')).stdout, /replayed/);

        // A replay of all again sends nothing; one by id sends it again.
        assert.match((await cli('replay', '--group', group)).stdout, /replayed 0 event/);
        assert.equal(await sentBack(first.id), 1);
        assert.match((await cli('replay', '--group', group, '--id', first.id)).stdout, /replayed 1 event/);
        assert.equal(await sentBack(first.id), 2);

        // A letter that fails again comes back as a new one, listed alone.
        await bus.publisher.publish([letter(first, 3)]);
        assert.deepEqual(await listed(), [first.id]);
        // The replay position is not a consumer group of `taskflow lag`.
        const lag = await taskflow(url, 'lag');
        assert.doesNotMatch(lag.stdout, /dlq-replayed/);
      } finally {
        await bus.close();
        await drop();
      }
    });

    it('replays a long dead-letter topic a page at a time, saying how far it got', async () => {
      const { db, url, drop } = await postgresBackend!.fresh();
      const bus = createEmbeddedBus(db, { log: silentLogger });
      const group = 'taskflow-notifications';
      const letters = Array.from({ length: 2_100 }, (_, i) => taskCreated(`u-page-${i % 7}`, `letter ${i}`));
      const published: number[] = [];
      const publish = bus.publisher.publish.bind(bus.publisher);
      try {
        await bus.admin.ensureTopics([{ name: dlqTopic(group), partitions: 3, retentionMs: 86_400_000 }]);
        await bus.publisher.publish(
          letters.map((event, i) => ({
            topic: dlqTopic(group),
            key: event.partitionkey!,
            event,
            headers: {
              [DLQ_HEADERS.error]: 'boom',
              [DLQ_HEADERS.sourceTopic]: 'task-events',
              [DLQ_HEADERS.sourcePartition]: '0',
              [DLQ_HEADERS.sourceOffset]: String(i),
            },
          })),
        );
        const replay = await taskflow(url, 'dlq', 'replay', '--group', group);
        assert.match(replay.stdout, /^replayed 2100 event\(s\) of taskflow-notifications$/m);
        assert.match(replay.stderr, /replayed 1000 event\(s\) so far[\s\S]*replayed 2000 event\(s\) so far/);
        const sent = (await bus.admin.read('task-events', { limit: Infinity })).map((m) => m.event.id);
        assert.equal(sent.length, letters.length);
        assert.deepEqual(new Set(sent), new Set(letters.map((e) => e.id)));
        assert.equal((await taskflow(url, 'dlq', 'list', '--group', group)).stdout.trim(), '(none)');

        // In the library: each page is published on its own, in pages of the size asked; an event dead-lettered
        // twice (its second letter pages after the first) is sent once.
        const more = Array.from({ length: 25 }, (_, i) => taskCreated(`u-page-${i % 5}`, `more ${i}`));
        const letter = (event: (typeof more)[number]) => ({
          topic: dlqTopic(group),
          key: event.partitionkey!,
          event,
          headers: { [DLQ_HEADERS.sourceTopic]: 'task-events' },
        });
        await bus.publisher.publish([...more.map(letter), letter(more[0]!)]);
        bus.publisher.publish = (messages) => (published.push(messages.length), publish(messages));
        const progress: number[] = [];
        const { replayed } = await replayDeadLetters(bus, group, {
          pageSize: 3,
          onPage: (n) => progress.push(n),
        });
        assert.equal(replayed.length, 25);
        assert.equal(
          published.reduce((a, b) => a + b, 0),
          25,
          `pages published: ${published.join(', ')}`,
        );
        assert.ok(published.length >= 9 && published.every((n) => n <= 3), published.join(', '));
        assert.equal(progress.length, 8);
        const twice = (await bus.admin.read('task-events', { limit: Infinity })).filter(
          (m) => m.event.id === more[0]!.id,
        );
        assert.equal(twice.length, 1);
      } finally {
        bus.publisher.publish = publish;
        await bus.close();
        await drop();
      }
    });

    it('replay of all over more than a page leaves a failure written while it runs listed, and replays it next time', async () => {
      const { db, url, drop } = await postgresBackend!.fresh();
      const bus = createEmbeddedBus(db, { log: silentLogger });
      const group = 'taskflow-audit';
      const headers = (i: number) => letterHeaders(group, i);
      try {
        const letters = Array.from({ length: 1_001 }, (_, i) => taskCreated(`u-${i % 7}`, `letter ${i}`));
        const x = letters[0]!;
        await bus.publisher.publish(
          letters.map((event, i) => ({
            topic: dlqTopic(group),
            key: event.partitionkey!,
            event,
            headers: headers(i),
          })),
        );
        // Stands in for the group refusing the replayed x at once: as the replay's x is written to task-events, a
        // new letter of x (error "boom again") is appended to the dead-letter topic, past the replay's first page.
        await db.exec(`
          CREATE FUNCTION refail() RETURNS trigger LANGUAGE plpgsql AS $$
          DECLARE o bigint;
          BEGIN
            UPDATE bus_partitions SET next_offset = next_offset + 1
             WHERE topic = '${dlqTopic(group)}' AND partition = 0 RETURNING next_offset - 1 INTO o;
            INSERT INTO bus_messages (topic, partition, "offset", key, headers, value)
            VALUES ('${dlqTopic(group)}', 0, o, NEW.key,
                    jsonb_build_object('${DLQ_HEADERS.error}', 'boom again', '${DLQ_HEADERS.sourceTopic}', 'task-events',
                                       '${DLQ_HEADERS.sourcePartition}', NEW.partition::text,
                                       '${DLQ_HEADERS.sourceOffset}', NEW."offset"::text, '${DLQ_HEADERS.group}', '${group}'),
                    NEW.value);
            RETURN NULL;
          END $$;
          CREATE TRIGGER refail AFTER INSERT ON bus_messages FOR EACH ROW
            WHEN (NEW.topic = 'task-events' AND NEW.value->>'id' = '${x.id}') EXECUTE FUNCTION refail();`);
        const sentX = async () =>
          (await bus.admin.read('task-events', { limit: Infinity })).filter((m) => m.event.id === x.id)
            .length;
        const listed = async () =>
          (
            JSON.parse((await taskflow(url, 'dlq', 'list', '--group', group, '--json')).stdout) as {
              event: { id: string };
              error: string;
            }[]
          ).map((d) => `${d.event.id} ${d.error}`);

        const replay = await taskflow(url, 'dlq', 'replay', '--group', group);
        assert.match(replay.stdout, /^replayed 1001 event\(s\)/m);
        const dlq = (await bus.admin.read(dlqTopic(group), { limit: Infinity })).filter(
          (m) => m.event.id === x.id,
        );
        assert.equal(dlq.length, 2, 'x was dead-lettered again during the replay');
        assert.equal(await sentX(), 1);
        assert.deepEqual(await listed(), [`${x.id} boom again`]);

        await db.exec('DROP TRIGGER refail ON bus_messages');
        assert.match(
          (await taskflow(url, 'dlq', 'replay', '--group', group)).stdout,
          /^replayed 1 event\(s\)/m,
        );
        assert.equal(await sentX(), 2);
        assert.deepEqual(await listed(), []);
      } finally {
        await bus.close();
        await drop();
      }
    });

    it('refuses what it cannot do, naming why: unknown topics and groups, bad limits, tokens the server refuses', async () => {
      const { db, url, drop } = await postgresBackend!.fresh();
      const cli = (...args: string[]) => taskflow(url, ...args);
      try {
        assert.match(
          (await cli('topics', 'ensure')).stdout,
          /: \d+ created \(task-events, reminders, task-updates/,
        );
        // An existing topic grown to the settings is said so (the embedded bus does; Kafka says it did not).
        const resized = await run(process.execPath, ['bin/taskflow.js', 'topics', 'ensure'], {
          env: {
            ...process.env,
            BUS: 'embedded',
            DATABASE_URL: url,
            KAFKA_TOPIC_PARTITIONS: '6',
            LOG_LEVEL: 'warn',
          },
          timeout: 120_000,
        });
        assert.match(resized.stdout, /: 0 created, \d+ existed\n/);
        assert.match(
          resized.stdout,
          /^ {2}task-events updated: 3 partitions, retention \d+ ms -> 6 partitions/m,
        );
        assert.doesNotMatch(resized.stdout, /not changed/);
        // The operations commands verify and sign no token: no JWT_SECRET needed (PostgreSQL has no dev secret).
        const noSecret = (...args: string[]) =>
          run(process.execPath, ['bin/taskflow.js', ...args], {
            env: { ...process.env, BUS: 'embedded', DATABASE_URL: url, JWT_SECRET: '', LOG_LEVEL: 'warn' },
            timeout: 120_000,
          });
        for (const args of [
          ['migrate'],
          ['topics', 'describe'],
          ['lag'],
          ['dlq', 'list'],
          ['audit', 'verify'],
        ])
          await noSecret(...args);
        await assert.rejects(noSecret('token', '--user', 'ann'), /set JWT_SECRET/);
        await assert.rejects(
          cli('tail', 'task-event', '--limit', '1'),
          /no topic "task-event"; the topics are .*task-events/,
        );
        const topics = await cli('topics', 'describe', '--json');
        assert.doesNotMatch(topics.stdout, /"task-event"/, 'a misspelt topic is not made');
        await assert.rejects(cli('tail', 'task-events', '--limit', 'abc'), /--limit must be a whole number/);
        await assert.rejects(
          cli('dlq', 'replay', '--group', 'taskflow-audti'),
          /no dead-letter topic for group taskflow-audti; the groups are .*taskflow-audit/,
        );
        // Listed or shown, a misspelt group read as one without dead letters; its lag as one without lag.
        await assert.rejects(
          cli('dlq', 'list', '--group', 'taskflow-audti'),
          /no dead-letter topic for group taskflow-audti; the groups are .*taskflow-audit/,
        );
        await assert.rejects(
          cli('dlq', 'show', '--id', 'x', '--group', 'taskflow-audti'),
          /no dead-letter topic for group taskflow-audti/,
        );
        assert.equal((await cli('dlq', 'list', '--group', 'taskflow-audit')).stdout.trim(), '(none)');
        await assert.rejects(
          cli('lag', '--group', 'taskflow-audti'),
          /no consumer group taskflow-audti; the groups are .*taskflow-audit/,
        );
        await assert.rejects(cli('token', '--user', ''), /--user must be 1 to 200 characters/);
        await assert.rejects(cli('token', '--user', 'x'.repeat(201)), /--user must be 1 to 200 characters/);
        await assert.rejects(
          cli('token', '--user', 'ann', '--expires', '-5m'),
          /--expires must be a positive span/,
        );
        await assert.rejects(cli('token', '--user', 'ann', '--expires', 'soon'), /--expires/);
        // Commands that read migrate nothing: an older version may still use the database.
        const [last] = (
          await db.query<{ version: number; name: string }>(
            'DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations) RETURNING version, name',
          )
        ).rows;
        for (const args of [['audit', 'verify'], ['dlq', 'list'], ['lag']])
          await assert.rejects(
            cli(...args),
            new RegExp(
              `schema is older than this version of taskflow \\(1 migration\\(s\\) pending: ${last!.name}\\)`,
            ),
            args.join(' '),
          );
        assert.equal(
          (await db.query('SELECT 1 FROM schema_migrations WHERE version = $1', [last!.version])).rows.length,
          0,
          'not migrated',
        );
        await db.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [
          last!.version,
          last!.name,
        ]);
        // migrate says each step on stderr (a wait for a table's lock too: a Job's log showed nothing for minutes).
        const empty = await createPgDatabase(process.env.TEST_DATABASE_URL!, 'tf_cli_migrate');
        try {
          const migrated = await taskflow(empty.url, 'migrate');
          assert.match(migrated.stderr, /applying migration 001_/);
          assert.match(migrated.stdout, /applied: 001_/);
        } finally {
          await empty.drop();
        }
        // Commands that write (topics ensure, dlq replay) migrate a new database, as before.
        const blank = await createPgDatabase(process.env.TEST_DATABASE_URL!, 'tf_cli_ensure');
        try {
          assert.match((await taskflow(blank.url, 'topics', 'ensure')).stdout, /: \d+ created/);
        } finally {
          await blank.drop();
        }
        // A misspelt data directory is not made into a new, empty database that verifies "ok".
        const typo = join(tmpdir(), `taskflow-no-such-dir-${process.pid}`);
        for (const args of [
          ['audit', 'verify'],
          ['dlq', 'list'],
        ])
          await assert.rejects(
            taskflow(typo, ...args),
            /no database at .*taskflow-no-such-dir.* \(DATABASE_URL\)/,
          );
        assert.equal(existsSync(typo), false, 'no directory made');
        // An unreachable dependency is named.
        for (const command of [['migrate'], ['serve', 'relay']])
          await assert.rejects(
            taskflow('postgres://postgres@127.0.0.1:1/x', ...command),
            /cannot reach the database \(DATABASE_URL\): connect ECONNREFUSED/,
            command.join(' '),
          );
        await assert.rejects(
          run(process.execPath, ['bin/taskflow.js', 'serve', 'api'], {
            env: {
              ...process.env,
              HOST: '999.1.1.1',
              PORT: '0',
              DATABASE_URL: 'memory://',
              JWT_SECRET: TEST_SECRET,
            },
            timeout: 60_000,
          }),
          /cannot listen on 999\.1\.1\.1:0 \(HOST, PORT\): getaddrinfo ENOTFOUND/,
        );
        await assert.rejects(
          run(process.execPath, ['bin/taskflow.js', 'lag'], {
            env: { ...process.env, BUS: 'kafka', KAFKA_BROKERS: '127.0.0.1:1', DATABASE_URL: 'memory://' },
            timeout: 60_000,
          }),
          /cannot reach Kafka \(KAFKA_BROKERS=127\.0\.0\.1:1\)/,
        );
        // A lifetime of nothing: a token expired as it is printed.
        await assert.rejects(
          cli('token', '--user', 'ann', '--expires', '0s'),
          /--expires must be a positive span/,
        );
        assert.match((await cli('token', '--user', 'ann', '--expires', '2h')).stdout, /^ey/);
        await assert.rejects(cli('audit', 'verify', '--user', ''), /--user must name a user/);
        assert.match(
          (await cli('audit', 'verify', '--user', 'nobody')).stdout,
          /ok: no audit records for user "nobody"/,
        );
        // A user whose records are all gone while the chain's head remains is broken, and only that is said.
        await db.query(
          `INSERT INTO audit_chain_heads (user_id, last_seq, last_hash) VALUES ('ghost', 3, 'x')`,
        );
        const ghost = await cli('audit', 'verify', '--user', 'ghost').then(
          () => assert.fail('a broken chain verified'),
          (err: { code: number; stdout: string }) => err,
        );
        assert.equal(ghost.code, 1);
        assert.match(ghost.stdout, /^BROKEN user=ghost/m);
        assert.doesNotMatch(ghost.stdout, /^ok/m);
      } finally {
        await drop();
      }
    });
  },
);
