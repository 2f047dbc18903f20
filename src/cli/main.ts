#!/usr/bin/env node
/** `taskflow`: one binary, many targets (the Loki/Mimir model), plus operations commands. */
import { Command, Option } from 'commander';
import { signDevToken } from '../auth.ts';
import { ConfigError, loadConfig } from '../config.ts';
import { createBus } from '../bus/index.ts';
import { createLogger } from '../observability/logger.ts';
import { Metrics } from '../observability/metrics.ts';
import { runTargets } from '../process.ts';
import { TARGETS, findTargets } from '../services/index.ts';
import { openDb } from '../store/db.ts';
import { migrate } from '../store/migrate.ts';

const program = new Command();
program
  .name('taskflow')
  .description('Event-driven task platform: Task API, outbox relay and event consumers in one binary.')
  .showHelpAfterError()
  .addHelpText(
    'after',
    `\nTargets: ${TARGETS.map((t) => `\n  ${t.name.padEnd(14)} ${t.description}`).join('')}\n\nConfiguration is read from the environment; see the README.`,
  );

async function serve(names: readonly string[], banner: boolean) {
  const config = loadConfig();
  const targets = findTargets(names);
  const proc = await runTargets(config, targets);
  const log = proc.runtime.log;
  log.info({ url: proc.url, targets: targets.map((t) => t.name), bus: config.bus }, 'taskflow running');
  if (banner && names.includes('api')) {
    const token = config.jwt.secret ? await signDevToken(config.jwt.secret, 'demo-user') : null;
    process.stderr.write(
      [
        '',
        `  Taskflow is running at ${proc.url}  (bus: ${config.bus}, database: ${config.databaseUrl})`,
        `  API docs:   ${proc.url}/docs`,
        token ? `  Dev token for user "demo-user" (30 days):\n    export TOKEN=${token}` : '',
        `  Try:        curl -s -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \\`,
        `                -d '{"title":"Buy milk","priority":"high"}' ${proc.url}/api/tasks`,
        `  More tokens: npm run taskflow -- token --user <id>`,
        '',
      ]
        .filter(Boolean)
        .join('\n') + '\n',
    );
  }
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
    proc.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
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
  .command('migrate')
  .description('apply database migrations and exit')
  .action(async () => {
    const config = loadConfig();
    const db = await openDb(config.databaseUrl);
    const applied = await migrate(db);
    console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
    await db.close();
  });

program
  .command('token')
  .description('print a signed development JWT (HS256, the configured JWT_SECRET or the dev secret)')
  .requiredOption('--user <id>', 'the user id (token subject)')
  .option('--expires <span>', 'lifetime, e.g. 1h, 7d', '30d')
  .action(async (opts: { user: string; expires: string }) => {
    const config = loadConfig();
    if (!config.jwt.secret)
      throw new ConfigError('tokens can only be signed with JWT_SECRET (not with JWT_JWKS_URL)');
    console.log(
      await signDevToken(config.jwt.secret, opts.user, {
        expiresIn: opts.expires,
        ...(config.jwt.issuer ? { issuer: config.jwt.issuer } : {}),
        ...(config.jwt.audience ? { audience: config.jwt.audience } : {}),
      }),
    );
  });

program
  .command('tail')
  .description('print events of a topic as they arrive (one JSON line each)')
  .argument('<topic>', 'topic, e.g. task-events, reminders, task-updates, <group>.dlq')
  .option('--from-beginning', 'start with the oldest retained event')
  .addOption(new Option('--limit <n>', 'exit after n events').argParser((v) => Number.parseInt(v, 10)))
  .action(async (topic: string, opts: { fromBeginning?: boolean; limit?: number }) => {
    const config = loadConfig();
    const log = createLogger({ level: 'warn' });
    const db = await openDb(config.databaseUrl);
    await migrate(db);
    const bus = await createBus(config, db, log, new Metrics({ defaultMetrics: false }));
    const stop = new AbortController();
    process.on('SIGINT', () => stop.abort());
    process.on('SIGTERM', () => stop.abort());
    let seen = 0;
    await bus.admin.tail(topic, { fromBeginning: !!opts.fromBeginning, signal: stop.signal }, (m) => {
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
    await bus.close();
    await db.close();
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`taskflow: ${message}\n`);
  process.exit(err instanceof ConfigError ? 2 : 1);
});
