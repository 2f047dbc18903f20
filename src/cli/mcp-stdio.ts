/**
 * `taskflow mcp`: the MCP tools over stdin/stdout for one user (TASKFLOW_TOKEN), a composition root of its
 * own beside runTargets: it opens the database and runs the api target's MCP server on it, without HTTP or
 * a bus consumer.
 */
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { createVerifier } from '../auth.ts';
import { EmbeddedLog } from '../bus/embedded/log.ts';
import type { Config } from '../config.ts';
import { systemClock } from '../domain/clock.ts';
import type { Logger } from '../observability/logger.ts';
import { createMcpServer } from '../services/api/mcp.ts';
import { restClient } from '../services/api/mcp-rest.ts';
import { TaskOperations } from '../services/api/task-operations.ts';
import { openDb } from '../store/db.ts';
import { migrate } from '../store/migrate.ts';
import { reminderPlanner } from '../store/reminder-plan.ts';
import { TaskStore } from '../store/tasks.ts';
import { UserSettingsStore } from '../store/user-settings.ts';

/**
 * Serves the tools over stdin/stdout until stdin closes. Writes go through TaskStore into the configured
 * database (DATABASE_URL), i.e. into its outbox: the relay of the running system publishes them. Use a
 * PostgreSQL DATABASE_URL shared with the running system. A PGlite directory belongs to one process at a time
 * (store/data-dir-lock.ts): while `taskflow up` runs on it this refuses, naming the server; use the server's
 * HTTP endpoint /mcp instead.
 */
export async function serveMcpStdio(opts: { config: Config; token: string; log: Logger }): Promise<void> {
  const { config, log } = opts;
  const { userId } = await createVerifier(config.jwt)(opts.token);
  const db = await openDb(config.databaseUrl);
  await migrate(db);
  // With the embedded bus, its log in this database is where the events go (as in the server).
  if (config.bus === 'embedded') EmbeddedLog.of(db);
  const settings = new UserSettingsStore(db, config.defaultTimezone);
  const server = createMcpServer(
    {
      tasks: new TaskOperations({
        store: new TaskStore(db, systemClock),
        settings,
        planReminders: reminderPlanner(settings, config.reminderGraceMs),
      }),
      settings,
      log,
    },
    { userId, rest: restClient({ authorization: `Bearer ${opts.token}`, apiUrl: config.apiUrl }) },
  );
  const transport = new StdioServerTransport();
  let closing: Promise<void> | undefined;
  // Once only, and never re-entered: server.close() closes the transport, whose onclose calls this again
  // (synchronously: before `closing` was set, that recursed until the stack overflowed).
  const close = () =>
    (closing ??= Promise.resolve().then(async () => {
      await server.close().catch(() => undefined);
      await db.close().catch(() => undefined);
    }));
  await new Promise<void>((resolve) => {
    transport.onclose = () => void close().then(resolve);
    process.stdin.once('end', () => void close().then(resolve));
    process.once('SIGTERM', () => void close().then(resolve));
    process.once('SIGINT', () => void close().then(resolve));
    void server.connect(transport).then(() => log.info({ user_id: userId }, 'MCP server on stdio'));
  });
}
