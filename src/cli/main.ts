#!/usr/bin/env node
/** `taskflow`: one binary, many targets (the Loki/Mimir model), plus operations commands. */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseEnv } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ConfigError, databaseUrlOf, loadConfig, type Config } from '../config.ts';
import { perInstanceGroups, type Bus, type Subscribed } from '../bus/types.ts';
import type { Db } from '../store/db.ts';
import type { OutboxStats } from '../store/outbox.ts';
import { isPostgresUrl, pgliteLocation } from '../store/database-url.ts';
import { dlqTopic } from '../contracts/topics.ts';
import { deadLetterGroups, subscribedTopics } from '../runtime.ts';
import { MANIFESTS, TARGETS, findTargets, retiredTargets } from '../services/index.ts';
import { errorMessage, errorWithCause } from '../error-text.ts';
import { nameUnreachable } from '../retry.ts';
import { exitOnStopSignals, onStopSignal } from './signals.ts';

// A command loads only the modules it uses (`taskflow token` needs neither the database nor the bus): the
// heavy ones are imported inside the actions.
const openDatabase = async (url: string, opts: { existing?: boolean } = {}) => {
  const [{ openDb, exitWhenDatabaseStops }, { migrate, pendingMigrations }] = await Promise.all([
    import('../store/db.ts'),
    import('../store/migrate.ts'),
  ]);
  // A command that reads what a running system wrote (audit verify, dlq, lag, tail) does not make a database:
  // a misspelt directory, or the one above the database, was made one, new and empty, that reported "ok".
  const location = isPostgresUrl(url) ? null : pgliteLocation(url);
  if (opts.existing && location === 'memory://')
    throw new ConfigError(
      'DATABASE_URL is memory://, a new, empty database of this command: what a running taskflow wrote is in its own process (or in the directory or PostgreSQL database it was given); set DATABASE_URL to that',
    );
  if (opts.existing && location) {
    const { existingDatabaseProblem } = await import('../store/pglite-open.ts');
    const problem = existingDatabaseProblem(location);
    if (problem) throw new ConfigError(problem);
  }
  const named = nameUnreachable('the database (DATABASE_URL)');
  const db = await openDb(url, { existingOnly: opts.existing === true }).catch(named);
  exitWhenDatabaseStops(db);
  return {
    db,
    /** Applies what is pending, saying each step (and each wait for a table's lock) on stderr. */
    migrate: () =>
      migrate(db, {
        log: (m) => process.stderr.write(`${m}\n`),
        newerSchema: db.kind === 'pglite' ? 'refuse' : 'warn',
      }).catch(named),
    /** A command that reads what a running system wrote migrates nothing: an older version may still use it. */
    async requireCurrent() {
      const pending = await pendingMigrations(db).catch(named);
      if (pending.length)
        throw new Error(
          `the database's schema is older than this version of taskflow (${pending.length} migration(s) pending: ${pending.join(', ')}): run taskflow migrate (or start taskflow, which migrates) first`,
        );
    },
  };
};

// A `.env` in the working directory sets what the environment does not (the environment wins); every
// variable and its default is listed in .env.example. One that is there and cannot be read ends every command
// here, in one line: Node's loader failed outside the CLI's error handling with a stack trace (a directory:
// "Contents of '.env' should be a valid string"), or said ENOENT of a file this user may not read.
const envText = ((): string | undefined => {
  const file = resolve('.env');
  try {
    if (statSync(file).isDirectory()) {
      process.stderr.write(`taskflow: ${file} is a directory, not a file of NAME=value lines\n`);
      process.exit(2);
    }
    return readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // none (or a dangling link)
    // Node's text names the file again: "EACCES: permission denied, open '<file>'".
    const reason = errorMessage(err).replace(/, \w+ '[^']*'$/, '');
    process.stderr.write(`taskflow: cannot read ${file}: ${reason}\n`);
    process.exit(2);
  }
})();
if (envText !== undefined) {
  for (const [name, value] of Object.entries(parseEnv(envText)))
    if (process.env[name] === undefined) process.env[name] = value;
  // Node skips a line that is not NAME=value without a word ("PORT 3922" left PORT unset): say which. The
  // lines of a quoted value that spans several are its own.
  let quote: string | undefined;
  envText.split(/\r?\n/).forEach((line, i) => {
    const text = line.trim();
    if (quote) {
      if (text.endsWith(quote)) quote = undefined;
      return;
    }
    const assignment = /^(?:export\s+)?[A-Za-z_][A-Za-z0-9_.-]*\s*=\s*(.*)$/.exec(text);
    if (assignment) {
      const value = assignment[1]!;
      const open = /^["'`]/.exec(value)?.[0];
      if (open && (value.length === 1 || !value.slice(1).includes(open))) quote = open;
    } else if (text && !text.startsWith('#'))
      process.stderr.write(`taskflow: .env line ${i + 1} is not NAME=value; it is ignored\n`);
  });
}

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

/** Commands that keep running: PGlite's hot functions are worth V8's optimizing WebAssembly compiler. */
const LONG_RUNNING = new Set(['up', 'serve', 'mcp', 'tail']);

exitOnStopSignals();

/**
 * Aborted when stdout's reader went away (`taskflow tail ... | head -1`): a command that writes on ends there,
 * quietly. Unhandled, the write's EPIPE was Node's "Unhandled 'error' event" with a stack trace, exit 1.
 */
const stdoutGone = new AbortController();
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') process.stderr.write(`taskflow: cannot write to stdout: ${err.message}\n`);
  stdoutGone.abort();
});

/**
 * V8's baseline WebAssembly compiler (Liftoff) only. Set at run time, `--liftoff-only` alone works on Node 20
 * but not on Node 24 (PGlite's hot functions were still compiled with TurboFan); without dynamic and eager
 * tier-up nothing is, on both.
 */
const BASELINE_WASM_ONLY = '--liftoff-only --no-wasm-dynamic-tiering --no-wasm-tier-up';

/**
 * V8 13.6 (Node 24) and 14.1 (Node 25) compile one of PGlite's hot functions, PostgreSQL's SQL parser
 * (`raw_parser`, 105 KB of WebAssembly), with a 600 MB compiler zone for 0.3 s (V8 11.3 of Node 20: 8 MB,
 * V8 14.6 of Node 26: 27 MB): `taskflow up` peaked at 715 MB RSS on Node 24 against 223 MB on Node 20, more
 * than a 512 MiB pod allows. No V8 flag spares that one function, so there servers run PGlite in the
 * baseline compiler too: 200 MB peak, start no slower, about 10 % more server CPU per task create and a
 * fifth more per write with every target (ADR 0009 item 10).
 */
const [v8Major = 0, v8Minor = 0] = process.versions.v8.split('.').map(Number);
const OPTIMIZING_WASM_PEAKS = v8Major === 13 || (v8Major === 14 && v8Minor < 6);

const program = new Command();
program
  .hook('preAction', (_program, action) => {
    // A one-shot command runs a few statements: PGlite's WebAssembly in V8's baseline compiler only. The
    // optimizing tier-up otherwise starts at once and costs more than it saves: `taskflow lag` on PGlite
    // took 1.0-1.2 s, and 0.58-0.69 s with this (docs/benchmarks.md). Set before PGlite compiles its module.
    let command = action;
    while (command.parent && command.parent !== program) command = command.parent;
    if (!LONG_RUNNING.has(command.name()) || OPTIMIZING_WASM_PEAKS) setFlagsFromString(BASELINE_WASM_ONLY);
  })
  .name('taskflow')
  .version(version, '-V, --version')
  .description('Event-driven task platform: Task API, outbox relay and event consumers in one binary.')
  .showHelpAfterError()
  .addHelpText(
    'after',
    `\nTargets: ${TARGETS.map((t) => `\n  ${t.name.padEnd(14)} ${t.description}`).join('')}\n\nConfiguration is read from the environment; see the README.`,
  );

async function serve(names: readonly string[], banner: boolean) {
  const started = performance.now();
  // `serve ""` (an unset shell variable, quoted) was "unknown target(s) ;".
  if (names.some((n) => n.trim() === ''))
    throw new Error(
      `an empty target name among ${names.map((n) => JSON.stringify(n)).join(' ')}; name one or more of: ${TARGETS.map((t) => t.name).join(', ')}`,
    );
  const targets = findTargets(names);
  for (const why of retiredTargets(names)) process.stderr.write(`taskflow: ${why}\n`);
  if (targets.length === 0)
    throw new ConfigError(`no target to run; targets: ${TARGETS.map((t) => t.name).join(', ')}`);
  const config = loadConfig();
  const [{ initTracing, shutdownTracing }, { runTargets }, { signDevToken }] = await Promise.all([
    import('../observability/tracing.ts'),
    import('../process.ts'),
    import('../auth.ts'),
  ]);
  // OpenTelemetry traces when OTEL_EXPORTER_OTLP_ENDPOINT is set (otherwise a no-op, see tracing.ts).
  await initTracing({ serviceName: names.length === 1 ? `taskflow-${names[0]}` : 'taskflow' });
  const proc = await runTargets(config, targets, { catalog: MANIFESTS });
  const log = proc.runtime.log;
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      log.error('shutdown took too long; exiting');
      process.exit(1);
    }, 30_000);
    force.unref();
    proc
      .stop()
      .then(() => shutdownTracing())
      .then(
        () => process.exit(0),
        (err: unknown) => {
          log.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
  };
  // From here a signal stops the targets gracefully (the banner below awaits a token).
  onStopSignal(shutdown);
  log.info({ url: proc.url, targets: targets.map((t) => t.name), bus: config.bus }, 'taskflow running');
  if (banner && names.includes('api')) {
    const url = config.publicUrl ?? proc.url;
    // A token only with the development secret: one signed with a deployment's JWT_SECRET would be a
    // 30-day credential in its logs.
    const token =
      config.jwt.secret && config.jwt.devSecretFile !== undefined
        ? await signDevToken(config.jwt.secret, 'demo-user')
        : null;
    process.stderr.write(
      [
        `  Taskflow ${version} is running at ${url}  (bus: ${config.bus}, database: ${withoutPassword(config.databaseUrl)}; ready in ${((performance.now() - started) / 1000).toFixed(1)} s)`,
        `  Board:      ${url}/  (${boardSignIn(config, token !== null)})`,
        `  API docs:   ${url}/docs`,
        ...(token
          ? [
              `  Dev token for user "demo-user" (30 days):\n    export TOKEN=${token}`,
              `  Try:        curl -s -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \\`,
              `                -d '{"title":"Buy milk","priority":"high"}' ${url}/api/tasks`,
            ]
          : []),
        // The development secret's file is next to the data: `token` finds it with the same DATABASE_URL.
        ...(config.jwt.devSecretFile
          ? [
              `  More tokens: ${config.env.DATABASE_URL ? `DATABASE_URL=${shellWord(config.databaseUrl)} ` : ''}npm run -s taskflow -- token --user <id>`,
            ]
          : []),
      ].join('\n') + '\n',
    );
  }
}

/**
 * How to sign in to the board, as this deployment allows: "continue as" a name from this machine (the
 * development secret, dev-sign-in.ts), a token `taskflow token` signs with JWT_SECRET, or the identity
 * provider's (JWT_JWKS_URL).
 */
function boardSignIn(config: Config, devToken: boolean): string {
  if (devToken) return 'on this machine, "Continue as" any name, or sign in with the token below';
  if (config.jwt.secret)
    return 'sign in with a token: npm run -s taskflow -- token --user <id>, with the same JWT_SECRET';
  return 'sign in with a token of your identity provider';
}

program
  .command('up')
  .description('run every target in one process (embedded defaults: PGlite in .data/, embedded bus)')
  .action(() =>
    serve(
      TARGETS.map((t) => t.name),
      true,
    ),
  );

program
  .command('serve')
  .description('run some targets in this process')
  .argument('<targets...>', `targets: ${TARGETS.map((t) => t.name).join(', ')}`)
  .action((names: string[]) => serve(names, false));

program
  .command('mcp')
  .description(
    "MCP server on stdio for an AI assistant: the user from the JWT in TASKFLOW_TOKEN; writes go through the task store into DATABASE_URL (its outbox; on PostgreSQL the running system's relay publishes them). A PGlite directory is one process's: while the server runs on it, use its /mcp over HTTP instead",
  )
  .action(async () => {
    const config = loadConfig();
    const token = process.env.TASKFLOW_TOKEN;
    if (!token)
      throw new ConfigError(
        'set TASKFLOW_TOKEN to a JWT of the user (npm run -s taskflow -- token --user <id>)',
      );
    const [{ createLogger }, { initTracing, shutdownTracing }, { serveMcpStdio }] = await Promise.all([
      import('../observability/logger.ts'),
      import('../observability/tracing.ts'),
      import('./mcp-stdio.ts'),
    ]);
    const log = createLogger({
      level: process.env.LOG_LEVEL || 'warn',
      fd: 2,
      format: config.logFormat,
    });
    await initTracing({ serviceName: 'taskflow-mcp' });
    await serveMcpStdio({ config, token, log });
    await shutdownTracing();
    process.exit(0);
  });

program
  .command('migrate')
  .description('apply database migrations and exit')
  .action(async () => {
    // Only the database: a Job that migrates before an upgrade gets the targets' settings without their bus
    // (the chart's), and a bus setting checked against it (EVENT_ENCODING=avro without BUS=kafka) failed the
    // upgrade. The targets check the rest as they start.
    const config = { databaseUrl: databaseUrlOf(process.env) };
    // A directory with no database yet (not there, or without PostgreSQL's PG_VERSION) becomes a new one,
    // already current: say so, not "up to date" or "applied" (a misspelt DATABASE_URL looked like the real one).
    const location = isPostgresUrl(config.databaseUrl) ? null : pgliteLocation(config.databaseUrl);
    const made = location !== null && location !== 'memory://' && !existsSync(join(location, 'PG_VERSION'));
    const { db, migrate } = await openDatabase(config.databaseUrl);
    const applied = await migrate();
    console.log(
      made
        ? `made a new database at ${location} (DATABASE_URL), its schema current`
        : applied.length
          ? `applied: ${applied.join(', ')}`
          : 'database is up to date',
    );
    await db.close();
  });

program
  .command('token')
  .description('print a signed development JWT (HS256, the configured JWT_SECRET or the dev secret)')
  .requiredOption('--user <id>', 'the user id (token subject)')
  .option('--expires <span>', 'lifetime, e.g. 1h, 7d', '30d')
  .action(async (opts: { user: string; expires: string }) => {
    const config = loadConfig(process.env, { devSecret: 'existing' });
    if (!config.jwt.secret)
      throw new ConfigError('tokens can only be signed with JWT_SECRET (not with JWT_JWKS_URL)');
    if (config.jwt.devSecretFile === null)
      throw new ConfigError(
        'DATABASE_URL=memory:// keeps its development secret in the server process, whose own token only `taskflow up` (npm start) prints: use that one, or set the same JWT_SECRET for the server and this command',
      );
    const { signDevToken, subjectProblem } = await import('../auth.ts');
    // Not a token the server would refuse: a subject it cannot take, a lifetime that is over already.
    const subject = subjectProblem(opts.user);
    if (subject) throw new InvalidArgumentError(`--user ${subject}`);
    if (!/^\d+\s*[a-z]+$/i.test(opts.expires) || /^0+\s*[a-z]/i.test(opts.expires))
      throw new InvalidArgumentError(
        `--expires must be a positive span like 30m, 12h or 7d, got ${opts.expires}`,
      );
    const token = await signDevToken(config.jwt.secret, opts.user, {
      expiresIn: opts.expires,
      ...(config.jwt.issuer ? { issuer: config.jwt.issuer } : {}),
      ...(config.jwt.audience ? { audience: config.jwt.audience } : {}),
    }).catch((err: unknown) => {
      throw new InvalidArgumentError(`--expires: ${errorMessage(err)} (e.g. 30m, 12h, 7d)`);
    });
    console.log(token);
  });

program
  .command('tail')
  .description('print events of a topic as they arrive (one JSON line each)')
  .argument('<topic>', 'topic, e.g. task-events, reminders, task-updates, <group>.dlq')
  .option('--from-beginning', 'start with the oldest retained event')
  .addOption(new Option('--limit <n>', 'exit after n events').argParser((v) => positiveInt('--limit', v)))
  .action((topic: string, opts: { fromBeginning?: boolean; limit?: number }) =>
    withBus(async (bus) => {
      // A misspelt topic is named, not made (the embedded bus makes a topic it is asked to read) and waited on.
      const topics = (await bus.admin.describeTopics()).map((t) => t.name);
      if (!topics.includes(topic))
        throw new Error(
          `no topic ${JSON.stringify(topic)}; the topics are ${topics.join(', ') || '(none yet)'}`,
        );
      const stop = new AbortController();
      onStopSignal(() => stop.abort());
      const signal = AbortSignal.any([stop.signal, stdoutGone.signal]);
      let seen = 0;
      await bus.admin.tail(topic, { fromBeginning: !!opts.fromBeginning, signal }, (m) => {
        if (stdoutGone.signal.aborted) return;
        process.stdout.write(
          JSON.stringify({
            topic: m.topic,
            partition: m.partition,
            offset: m.offset,
            key: m.key,
            headers: m.headers,
            event: m.event,
          }) + '\n',
        );
        if (opts.limit && ++seen >= opts.limit) stop.abort();
      });
    }),
  );

/**
 * Opens the configured bus for an operations command (no consumers), runs `fn`, closes everything. Only the
 * embedded bus needs the database; Kafka commands talk to the brokers alone. There a command that only reads
 * (`writes` unset) migrates nothing and refuses an older schema; one that writes (topics ensure, dlq replay)
 * migrates first.
 */
async function withBus<T>(
  fn: (bus: Bus, config: Config, db: Db | undefined) => Promise<T>,
  opts: { writes?: boolean } = {},
): Promise<T> {
  const config = loadConfig(process.env, { auth: false });
  const [{ createLogger }, { Metrics }, { createBus }] = await Promise.all([
    import('../observability/logger.ts'),
    import('../observability/metrics.ts'),
    import('../bus/index.ts'),
  ]);
  // On stderr: stdout is the command's answer (--json, tail's lines), which a log line ahead of it broke.
  const log = createLogger({ level: 'warn', fd: 2, format: config.logFormat });
  const opened =
    config.bus === 'embedded' ? await openDatabase(config.databaseUrl, { existing: true }) : null;
  const db = opened?.db;
  try {
    if (opts.writes) await opened?.migrate();
    else await opened?.requireCurrent();
    const bus = await createBus(config, db as Db, log, new Metrics({ defaultMetrics: false }));
    try {
      return await fn(bus, config, db);
    } catch (err) {
      // Which dependency failed: "metadata failed 3 times." alone did not say.
      if (
        config.bus === 'kafka' &&
        /metadata failed|ECONNREFUSED|ENOTFOUND|ETIMEDOUT|timed out/i.test(errorWithCause(err))
      )
        throw new Error(
          `cannot reach Kafka (KAFKA_BROKERS=${config.kafka.brokers.join(',')}): ${errorWithCause(err)}`,
          {
            cause: err,
          },
        );
      throw err;
    } finally {
      await bus.close();
    }
  } finally {
    await db?.close();
  }
}

/**
 * Query parameters of a PostgreSQL URL that hold a secret: node-postgres takes `?password=` (and the key's
 * passphrase, `?sslpassword=`) as well as the URL's user-info, and the banner printed them as they were.
 */
const SECRET_PARAMETER = /pass(word|phrase)|secret|token/i;

/** A database URL as it may be shown: its password (PostgreSQL), in the user-info or a parameter, replaced. */
const withoutPassword = (url: string): string => {
  if (!isPostgresUrl(url)) return url;
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    for (const name of new Set(parsed.searchParams.keys()))
      if (SECRET_PARAMETER.test(name)) parsed.searchParams.set(name, '***');
    return parsed.toString();
  } catch {
    return 'PostgreSQL';
  }
};

/** `text` as one word of a POSIX shell command line (single-quoted unless it needs no quoting). */
const shellWord = (text: string) =>
  /^[\w./:@%+=,-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;

/**
 * A value as a terminal shows it: control characters (a user id or key from a token or an event: an ESC would
 * drive the operator's terminal) written as \u escapes.
 */
const printable = (v: unknown) =>
  String(v ?? '').replace(
    // eslint-disable-next-line no-control-regex -- control characters are what it looks for
    /[\u0000-\u001f\u007f-\u009f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );

const table = (rows: Record<string, unknown>[]) => {
  if (rows.length === 0) return '(none)';
  const cols = Object.keys(rows[0]!);
  const cells = rows.map((r) => cols.map((c) => printable(r[c])));
  // A loop: spread into Math.max, one argument per row overflowed the stack past about 125,000 rows.
  const width = cols.map((c, i) => cells.reduce((w, r) => Math.max(w, r[i]!.length), c.length));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => v.padEnd(width[i]!))
      .join('  ')
      .trimEnd();
  return [line(cols), ...cells.map(line)].join('\n');
};

const topics = program
  .command('topics')
  .description('create and inspect the topics of docs/architecture.md section 3 (and the DLQs)');
topics
  .command('ensure')
  .description(
    'create missing topics with their partitions and retention (KAFKA_TOPIC_PARTITIONS overrides); on the embedded bus, add the partitions asked for to a topic no group has a backlog on',
  )
  .action(() =>
    withBus(
      async (bus, config) => {
        const { allTopics, shortOfPartitions } = await import('../bus/index.ts');
        const wanted = allTopics(config, deadLetterGroups(MANIFESTS));
        const before = new Map((await bus.admin.describeTopics()).map((t) => [t.name, t]));
        // The embedded bus adds partitions itself, only to a topic no group has a backlog on: a key may hash
        // to another partition, and a user's events not consumed yet would be overtaken by newer ones.
        const backlogs = new Map<string, string>();
        const growing = shortOfPartitions(wanted, (name) => before.get(name)?.partitions);
        if (bus.kind === 'embedded' && growing.length) {
          const lag = await bus.admin.lag(undefined, lagSubscriptions());
          for (const t of growing) {
            // A stopped gateway instance's group is no backlog: its lag grows with every event, and it held the
            // topic at its size for good.
            const behind = lag.filter((l) => l.topic === t.name && l.lag > 0 && l.running !== false);
            if (behind.length)
              backlogs.set(
                t.name,
                `${behind.reduce((n, l) => n + l.lag, 0)} event(s) not consumed yet by ${[...new Set(behind.map((l) => l.group))].join(', ')}`,
              );
          }
        }
        await bus.admin.ensureTopics(
          wanted.map((t) =>
            backlogs.has(t.name) ? { ...t, partitions: before.get(t.name)!.partitions } : t,
          ),
          { grow: true },
        );
        const after = new Map((await bus.admin.describeTopics()).map((t) => [t.name, t]));
        const created = wanted.filter((t) => !before.has(t.name));
        const sizes = (t?: { partitions: number; retentionMs: number | null }) =>
          t ? `${t.partitions} partitions, retention ${t.retentionMs ?? '?'} ms` : 'none';
        // The embedded bus grows an existing topic to the settings (with no backlog); Kafka leaves it as it is.
        const updated = wanted.filter(
          (t) => before.has(t.name) && sizes(before.get(t.name)) !== sizes(after.get(t.name)),
        );
        const differing = wanted.flatMap((t) => {
          const has = after.get(t.name);
          if (!has || backlogs.has(t.name)) return [];
          const diffs = [
            has.partitions !== t.partitions ? `${has.partitions} partitions (asked ${t.partitions})` : '',
            has.retentionMs !== null && has.retentionMs !== t.retentionMs
              ? `retention ${has.retentionMs} ms (asked ${t.retentionMs})`
              : '',
          ].filter(Boolean);
          return diffs.length ? [`${t.name}: ${diffs.join(', ')}`] : [];
        });
        console.log(
          `ensured ${wanted.length} topics on ${config.bus}: ${created.length} created${created.length ? ` (${created.map((t) => t.name).join(', ')})` : ''}, ${wanted.length - created.length} existed`,
        );
        for (const t of updated)
          console.log(`  ${t.name} updated: ${sizes(before.get(t.name))} -> ${sizes(after.get(t.name))}`);
        if (updated.some((t) => before.get(t.name)!.partitions < after.get(t.name)!.partitions))
          console.log(
            "  restart every Taskflow process that runs on this database: each reads a topic's partitions at its start",
          );
        for (const [name, why] of backlogs)
          console.log(
            `  ${name} keeps ${before.get(name)!.partitions} partitions: ${why}; more now would let a user's newer events overtake them. Let the consumers catch up (taskflow lag), then run this again`,
          );
        if (differing.length)
          console.log(
            bus.kind === 'embedded'
              ? `these existing topics differ from the settings and were not changed (a topic's partitions are never fewer):\n  ${differing.join('\n  ')}`
              : `these existing topics differ from the settings and were not changed (change them with the broker's tools, e.g. kafka-topics --alter / kafka-configs):\n  ${differing.join('\n  ')}`,
          );
        if (backlogs.size) process.exitCode = 1;
      },
      { writes: true },
    ),
  );
topics
  .command('describe')
  .description('list topics with partitions and retention')
  .option('--json', 'print JSON')
  .action((opts: { json?: boolean }) =>
    withBus(async (bus) => {
      const list = await bus.admin.describeTopics();
      if (opts.json) return console.log(JSON.stringify(list, null, 2));
      const hours = (ms: number | null) =>
        ms === null ? '?' : ms >= 86_400_000 ? `${ms / 86_400_000}d` : `${ms / 3_600_000}h`;
      console.log(
        table(
          list.map((t) => ({ topic: t.name, partitions: t.partitions, retention: hours(t.retentionMs) })),
        ),
      );
    }),
  );

type OutboxView = OutboxStats | { error: string };

/**
 * The outbox as `lag` shows it: from the embedded bus's database, or (Kafka, Dapr) DATABASE_URL's, read only.
 * Never throws: the consumer lag is still worth showing when the database cannot be read.
 */
async function outboxView(config: Config, busDb: Db | undefined): Promise<OutboxView> {
  const { outboxStats } = await import('../store/outbox.ts');
  if (busDb) return outboxStats(busDb).catch((err: unknown) => ({ error: errorWithCause(err) }));
  if (config.databaseUrl === 'memory://')
    return { error: "DATABASE_URL is memory://: another process's outbox cannot be read from here" };
  try {
    const opened = await openDatabase(config.databaseUrl, { existing: true });
    try {
      await opened.requireCurrent();
      return await outboxStats(opened.db);
    } finally {
      await opened.db.close();
    }
  } catch (err) {
    return { error: errorWithCause(err) };
  }
}

/** A number of seconds as an operator reads it: 12.3 s, 4.5 min, 2.0 h. */
const duration = (seconds: number) =>
  seconds < 120
    ? `${seconds.toFixed(1)} s`
    : seconds < 7200
      ? `${(seconds / 60).toFixed(1)} min`
      : `${(seconds / 3600).toFixed(1)} h`;

/**
 * The outbox's lines of `lag`: what waits and, when the first row has failed sends, which event it is and the
 * last error. The relay retries it until the bus takes it, and per-key order keeps every row behind it waiting
 * (docs/adr/0010; on Dapr only its key's rows: the relay's holds): this is how an operator sees a relay stuck on
 * an event the broker refuses for good.
 */
function outboxLines(view: OutboxView): string[] {
  if ('error' in view) return [`outbox: not read (${printable(view.error)})`];
  if (view.pending === 0) return ['outbox: empty (every event is published)'];
  const lines = [
    `outbox: ${view.pending} ${view.pending === 1 ? 'event waits' : 'events wait'} to be published, the oldest for ${duration(view.oldestPendingAgeSeconds)}`,
  ];
  const head = view.head;
  // On Kafka a batch fails whole: the error may be any of its rows' (the head's alone when it is the only one
  // failing). A Dapr bulk publish names the events the broker refused: only they and their keys' later ones wait.
  if (head && head.attempts > 0)
    lines.push(
      `  the first, event ${printable(head.eventId)} (${printable(head.type)}, key ${printable(head.key)}, topic ${printable(head.topic)}), failed ${head.attempts} ${head.attempts === 1 ? 'time' : 'times'} to be sent${view.failing > 1 ? ` (as did ${view.failing - 1} more sent with it: the error may be any of theirs)` : ''}; the relay retries it, and the events behind it wait (on Dapr only its key's)`,
      `  last error: ${printable(head.lastError ?? '-')}`,
    );
  return lines;
}

/**
 * The topics each consumer group reads, as `lag` lists them: a target's groups of one per instance (the gateway's)
 * under perInstanceGroups.
 */
const lagSubscriptions = (): Subscribed =>
  new Map([
    ...subscribedTopics(MANIFESTS),
    ...MANIFESTS.flatMap((t) =>
      t.consumes?.perInstance ? [[perInstanceGroups(t.consumes.group), t.consumes.topics] as const] : [],
    ),
  ]);

program
  .command('lag')
  .description(
    'the outbox (events waiting for the relay) and consumer lag per group and partition; the group of a gateway instance that is not running is left out and named after the table (--group shows it)',
  )
  .option('--group <group>', 'only this consumer group')
  .option('--json', 'print JSON')
  .action((opts: { group?: string; json?: boolean }) =>
    withBus(async (bus, config, db) => {
      const outbox = outboxView(config, db);
      // Every partition of the topics each group reads: one it never committed on (a new or stuck consumer)
      // is listed with its whole lag, not left out.
      const all = await bus.admin.lag(opts.group, lagSubscriptions());
      if (opts.group !== undefined && all.length === 0) {
        // A misspelt group would read as one without lag: say which groups there are.
        const groups = [
          ...new Set([...deadLetterGroups(MANIFESTS), ...(await bus.admin.lag()).map((l) => l.group)]),
        ];
        if (!groups.includes(opts.group))
          throw new Error(`no consumer group ${opts.group}; the groups are ${groups.join(', ')}`);
      }
      // A stopped instance's group stays (it resumes there under the same id): its lag grows with every event
      // and is no consumer falling behind. Left out unless asked for by name, and named.
      const stoppedInstanceGroups = [...new Set(all.filter((l) => l.running === false).map((l) => l.group))];
      const lag = opts.group === undefined ? all.filter((l) => l.running !== false) : all;
      if (opts.json)
        return console.log(JSON.stringify({ outbox: await outbox, lag, stoppedInstanceGroups }, null, 2));
      console.log(outboxLines(await outbox).join('\n') + '\n');
      console.log(
        table(
          lag.map((l) => ({
            group: l.group,
            topic: l.topic,
            partition: l.partition,
            committed: l.committed ?? '-',
            end: l.end,
            lag: l.lag,
          })),
        ),
      );
      if (stoppedInstanceGroups.length)
        console.log(
          `\n${opts.group === undefined ? 'left out, ' : ''}not running (the group of a gateway instance that stopped; it resumes from its position when an instance with the same id starts${opts.group === undefined ? ': taskflow lag --group <group> shows it' : ''}): ${stoppedInstanceGroups.map(printable).join(', ')}`,
        );
    }),
  );

const schemas = program
  .command('schemas')
  .description('the published versions of the event schemas (schemas/events/<type>/v<N>.json)');
schemas
  .command('check')
  .description('check that every event schema is published and compatible with its last published version')
  .action(async () => {
    const { checkPublishedSchemas, PUBLISHED_DIR } = await import('../contracts/schema-versions.ts');
    const problems = checkPublishedSchemas();
    for (const p of problems) process.stderr.write(`${p}\n`);
    if (problems.length) process.exitCode = 1;
    else process.stdout.write(`every event schema is published and compatible (${PUBLISHED_DIR})\n`);
  });
schemas
  .command('publish')
  .description('write the schema file of each new version (after the check passes); never rewrites one')
  .action(async () => {
    const { publishSchemas } = await import('../contracts/schema-versions.ts');
    const { written, problems } = publishSchemas();
    for (const p of problems) process.stderr.write(`${p}\n`);
    if (problems.length) process.exitCode = 1;
    for (const f of written) process.stdout.write(`published ${f}\n`);
    if (!problems.length && !written.length) process.stdout.write('nothing to publish\n');
  });

const dlq = program.command('dlq').description('inspect and replay dead letters (per consumer group)');
const groupOption = () =>
  new Option(
    '--group <group>',
    `consumer group (${deadLetterGroups(MANIFESTS).join(', ')}; the gateway's keep no dead letters)`,
  );
const positiveInt = (name: string, v: string, max = Number.MAX_SAFE_INTEGER): number => {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > max)
    throw new InvalidArgumentError(`${name} must be a whole number from 1 to ${max}`);
  return Number(v);
};

/**
 * The most dead letters `dlq list` reads per group: each is held in memory, then printed, about 7 KB apiece (of
 * task events: 25,000 peaked at 350 MB, 100,000 at 950 MB). Beyond that no one reads the table either.
 */
const DLQ_LIST_MAX = 20_000;

/**
 * The group asked for, or every group that has a DLQ topic (the fixed ones, and any other with a `.dlq` topic on
 * the broker, one an older version left say). A group with none is refused, naming them: a misspelt group
 * would read as one without dead letters.
 */
async function dlqGroups(bus: Bus, group: string | undefined): Promise<string[]> {
  // Only "not supported" is passed over (Dapr without KAFKA_BROKERS): a broker that does not answer failed
  // the command after its second wait, twice as long, and the first failure said nothing.
  const withDlq = (
    await bus.admin.describeTopics().catch((err: unknown) => {
      if (/is not supported/.test(errorMessage(err))) return [];
      throw err;
    })
  )
    .map((t) => t.name)
    .filter((n) => n.endsWith('.dlq'))
    .map((n) => n.slice(0, -'.dlq'.length));
  const groups = [...new Set([...deadLetterGroups(MANIFESTS), ...withDlq])];
  if (group === undefined) return groups;
  if (!groups.includes(group))
    throw new Error(`no dead-letter topic for group ${group}; the groups are ${groups.join(', ')}`);
  return [group];
}

dlq
  .command('list')
  .description('dead letters of one group (or all groups) not replayed yet, oldest first')
  .addOption(groupOption())
  .option(
    '--limit <n>',
    `at most this many per group (up to ${DLQ_LIST_MAX})`,
    (v) => positiveInt('--limit', v, DLQ_LIST_MAX),
    1000,
  )
  .option('--all', 'also those replayed already (they stay in the topic for its retention)')
  .option('--json', 'print JSON')
  .action((opts: { group?: string; json?: boolean; limit: number; all?: boolean }) =>
    withBus(async (bus) => {
      const { listDeadLetters, unreplayedCount } = await import('../bus/dlq.ts');
      const groups = await dlqGroups(bus, opts.group);
      const perGroup = await Promise.all(
        groups.map((g) => listDeadLetters(bus.admin, g, { limit: opts.limit, all: opts.all === true })),
      );
      const letters = perGroup.flat();
      for (const [i, found] of perGroup.entries()) {
        const group = groups[i]!;
        if (!bus.admin.messageCount) break;
        const retained = await bus.admin.messageCount(dlqTopic(group));
        const shown = opts.all ? retained : await unreplayedCount(bus.admin, group);
        if (shown > found.length)
          console.error(`${group}: showing the first ${found.length} of ${shown} dead letters (--limit)`);
        if (!opts.all && retained > shown)
          console.error(`${group}: ${retained - shown} replayed dead letter(s) not shown (--all shows them)`);
      }
      if (opts.json) return console.log(JSON.stringify(letters, null, 2));
      console.log(
        table(
          letters.map((d) => ({
            group: d.group,
            id: d.event.id,
            type: d.event.type,
            key: d.key,
            attempts: d.attempts,
            failed_at: d.lastFailure ?? '',
            source: `${d.source.topic}/${d.source.partition}@${d.source.offset}`,
            ...(opts.all ? { replayed: d.replayed ? 'yes' : 'no' } : {}),
            error: d.error.slice(0, 80),
          })),
        ),
      );
    }),
  );
dlq
  .command('show')
  .description('one dead letter in full (event, failure headers)')
  .requiredOption('--id <eventId>', 'the event id')
  .addOption(groupOption())
  .action((opts: { id: string; group?: string }) =>
    withBus(async (bus) => {
      const { findDeadLetters } = await import('../bus/dlq.ts');
      const groups = await dlqGroups(bus, opts.group);
      // A page of each topic at a time, not the whole topic in memory.
      const found = (await Promise.all(groups.map((g) => findDeadLetters(bus.admin, g, [opts.id])))).flat();
      if (found.length === 0) throw new Error(`no dead letter with event id ${opts.id}`);
      console.log(JSON.stringify(found, null, 2));
    }),
  );
dlq
  .command('replay')
  .description(
    'publish dead letters back to their source topic (consumers are idempotent: only the failed group acts); replayed ones are no longer listed',
  )
  .requiredOption('--group <group>', 'consumer group')
  .option(
    '--id <eventId...>',
    'only these event ids, replayed before or not (default: all of the group not replayed yet)',
  )
  .action((opts: { group: string; id?: string[] }) =>
    withBus(
      async (bus) => {
        await dlqGroups(bus, opts.group);
        const { replayDeadLetters } = await import('../bus/dlq.ts');
        const { replayed, notEvents, noSource, missing } = await replayDeadLetters(
          bus,
          opts.group,
          opts.id
            ? { ids: opts.id }
            : { onPage: (n) => console.error(`${opts.group}: replayed ${n} event(s) so far ...`) },
        );
        if (missing.length)
          throw new Error(`not found in ${opts.group}.dlq: ${missing.join(', ')} (nothing was replayed)`);
        const kept = [...new Set(notEvents.map((d) => d.event.id))];
        const sourceless = [...new Set(noSource.map((d) => d.event.id))];
        console.log(`replayed ${replayed.length} event(s) of ${opts.group}`);
        if (kept.length)
          console.log(
            `kept ${kept.length} whose bytes are not an event (see them with taskflow dlq show --group ${opts.group} --id <id>; replayed, they would only come back): ${kept.join(', ')}`,
          );
        if (sourceless.length)
          console.log(
            `kept ${sourceless.length} that do not name their source topic (no x-dlq-source-topic header): ${sourceless.join(', ')}`,
          );
        if (opts.id && (kept.length || sourceless.length) && replayed.length === 0) process.exitCode = 1;
      },
      { writes: true },
    ),
  );

program
  .command('audit')
  .description('audit trail operations')
  .command('verify')
  .description('recompute the hash chains of the audit log; names the first broken record (exit code 1)')
  .option('--user <id>', 'verify only this user')
  .option(
    '--require-keyed',
    'every record must be keyed with AUDIT_CHAIN_KEY (or one of AUDIT_CHAIN_PREVIOUS_KEYS): a chain rewritten without the key fails',
  )
  .action(async (opts: { user?: string; requireKeyed?: boolean }) => {
    if (opts.user === '')
      throw new InvalidArgumentError('--user must name a user (leave it out for every user)');
    const { verifyChain } = await import('../services/audit/chain.ts');
    const { verifyProgressReporter } = await import('../services/audit/verify-progress.ts');
    const { auditManifest } = await import('../services/audit/manifest.ts');
    const { chainKey, previousChainKeys } = auditManifest.config(process.env);
    const keys = [...(chainKey ? [chainKey] : []), ...previousChainKeys];
    if (opts.requireKeyed && keys.length === 0)
      throw new InvalidArgumentError('--require-keyed needs the chain key: set AUDIT_CHAIN_KEY');
    const { db, requireCurrent } = await openDatabase(loadConfig(process.env, { auth: false }).databaseUrl, {
      existing: true,
    });
    await requireCurrent();
    // On stderr: stdout is the result alone.
    const progress = verifyProgressReporter(process.stderr);
    const result = await verifyChain(db, {
      ...(opts.user ? { userId: opts.user } : {}),
      keys,
      requireKeyed: opts.requireKeyed === true,
      onProgress: progress.onProgress,
    }).finally(progress.done);
    await db.close();
    for (const b of result.broken)
      console.log(
        `BROKEN user=${printable(b.user_id)} seq=${b.seq} id=${b.id ?? '-'} event_id=${printable(b.event_id ?? '-')}: ${printable(b.reason)}`,
      );
    if (opts.user !== undefined && result.records === 0 && result.ok)
      console.log(`ok: no audit records for user ${JSON.stringify(opts.user)} (nothing to verify)`);
    else
      console.log(
        `${result.ok ? 'ok' : 'FAILED'}: ${result.users} user chain(s), ${result.records} record(s) verified${
          result.unkeyed > 0
            ? ` (${result.unkeyed} not keyed: written without AUDIT_CHAIN_KEY${keys.length ? '; --require-keyed refuses them' : ''})`
            : ''
        }`,
      );
    if (!result.ok) process.exitCode = 1;
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  const message = errorMessage(err);
  process.stderr.write(`taskflow: ${message}\n`);
  process.exit(err instanceof ConfigError ? 2 : 1);
});
