/**
 * Every target this binary can run (`taskflow up` runs them all, `taskflow serve <target>` some). A target's
 * modules, and the libraries only it uses (MCP SDK, Swagger UI, web-push, nodemailer...), are loaded when the
 * target starts: `taskflow serve relay` or `taskflow token` never load the API's.
 */
import type { TargetDefinition } from '../runtime.ts';

export interface TargetEntry extends TargetDefinition {
  description: string;
}

function lazyTarget(name: string, description: string, load: () => Promise<TargetDefinition>): TargetEntry {
  let loading: Promise<TargetDefinition> | undefined;
  const preload = () => (loading ??= load());
  return { name, description, preload, start: async (rt) => (await preload()).start(rt) };
}

export const TARGETS: readonly TargetEntry[] = [
  lazyTarget(
    'api',
    'Task API: REST under /api, MCP at /mcp, OpenAPI at /openapi.json, docs at /docs',
    async () => (await import('./api/index.ts')).apiTarget,
  ),
  lazyTarget(
    'relay',
    'publishes outbox rows to the bus (transactional outbox relay)',
    async () => (await import('./relay/index.ts')).relayTarget,
  ),
  lazyTarget(
    'recurrence',
    'creates the next occurrence of a completed recurring task; serves /api/tasks/:id/skip and /occurrences',
    async () => (await import('./recurrence/index.ts')).recurrenceTarget,
  ),
  lazyTarget(
    'audit',
    'audit trail: hash-chained records of every event; /api/audit query and export',
    async () => (await import('./audit/index.ts')).auditTarget,
  ),
  lazyTarget(
    'gateway',
    'WebSocket /ws: pushes task.changed to the user, with resume (?since=) and heartbeats',
    async () => (await import('./gateway/index.ts')).gatewayTarget,
  ),
  lazyTarget(
    'reminders',
    'reminder scheduler: task-events -> reminder schedule -> reminders topic; snooze/dismiss API',
    async () => (await import('./reminders/index.ts')).remindersTarget,
  ),
  lazyTarget(
    'notifications',
    'notifications: reminder.triggered -> email / web push / in-app / webhook deliveries',
    async () => (await import('./notifications/index.ts')).notificationsTarget,
  ),
];

/**
 * Targets of earlier versions whose work moved elsewhere: naming one is not an error (a deployment written
 * for an earlier version keeps starting), it runs nothing and `retiredTargets` says why.
 */
export const RETIRED_TARGETS: Readonly<Record<string, string>> = {
  broadcaster:
    'the broadcaster target was retired: the task.changed of every task change is written with the change itself (docs/adr/0011-task-changed-with-its-write.md); remove it from the targets you run',
};

/** Why each retired target among `names` runs nothing. */
export const retiredTargets = (names: readonly string[]): string[] =>
  names.filter((n) => Object.hasOwn(RETIRED_TARGETS, n)).map((n) => RETIRED_TARGETS[n]!);

export function findTargets(names: readonly string[]): TargetEntry[] {
  const unknown = names.filter(
    (n) => !TARGETS.some((t) => t.name === n) && !Object.hasOwn(RETIRED_TARGETS, n),
  );
  if (unknown.length)
    throw new Error(
      `unknown target(s) ${unknown.join(', ')}; available: ${TARGETS.map((t) => t.name).join(', ')}`,
    );
  return TARGETS.filter((t) => names.includes(t.name));
}
