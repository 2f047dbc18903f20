/**
 * Every target this binary can run (`taskflow up` runs them all, `taskflow serve <target>` some). A target's
 * modules, and the libraries only it uses (MCP SDK, Swagger UI, web-push, nodemailer...), are loaded when the
 * target starts: `taskflow serve relay` or `taskflow token` never load the API's.
 */
import { lazyTarget, type TargetManifest } from '../runtime.ts';
import { apiManifest } from './api/manifest.ts';
import { auditManifest } from './audit/manifest.ts';
import { gatewayManifest } from './gateway/manifest.ts';
import { notificationsManifest } from './notifications/manifest.ts';
import { recurrenceManifest } from './recurrence/manifest.ts';
import { relayManifest } from './relay/manifest.ts';
import { remindersManifest } from './reminders/manifest.ts';

/** The one list of targets: a manifest (its folder's `manifest.ts`) and how its modules load. */
export const TARGETS = [
  lazyTarget(apiManifest, async () => (await import('./api/index.ts')).apiTarget),
  lazyTarget(relayManifest, async () => (await import('./relay/index.ts')).relayTarget),
  lazyTarget(recurrenceManifest, async () => (await import('./recurrence/index.ts')).recurrenceTarget),
  lazyTarget(auditManifest, async () => (await import('./audit/index.ts')).auditTarget),
  lazyTarget(gatewayManifest, async () => (await import('./gateway/index.ts')).gatewayTarget),
  lazyTarget(remindersManifest, async () => (await import('./reminders/index.ts')).remindersTarget),
  lazyTarget(
    notificationsManifest,
    async () => (await import('./notifications/index.ts')).notificationsTarget,
  ),
] as const;

export type TargetEntry = (typeof TARGETS)[number];

type Consuming = Extract<TargetEntry, { consumes: object }>;

/** The consumer group of each consuming target, by target name (the gateway's is the prefix of its instances'). */
export const GROUPS = Object.fromEntries(
  TARGETS.flatMap((t) => ('consumes' in t ? [[t.name, t.consumes.group]] : [])),
) as { readonly [T in Consuming as T['name']]: T['consumes']['group'] };

/** The manifests, as the runtime sees them (AsyncAPI, dead-letter topics). */
export const MANIFESTS: readonly TargetManifest[] = TARGETS;

const code = (s: string) => `\`${s}\``;

/** The table of targets in the README and docs/architecture.md (between `targets` markers), from the manifests. */
export function targetTable(manifests: readonly TargetManifest[] = MANIFESTS): string {
  const rows = manifests.map((t) => {
    const group =
      t.consumes && (t.consumes.perInstance ? `${t.consumes.group}-<instance>` : t.consumes.group);
    const consumes = [t.serves, t.consumes && `${t.consumes.topics.map(code).join(', ')} as ${code(group!)}`];
    const produces = [t.produces.length ? t.produces.map(code).join(', ') : undefined, t.effects];
    const cell = (parts: readonly (string | undefined)[]) => parts.filter(Boolean).join('; ') || '—';
    return `| ${code(t.name)} | ${cell(consumes)} | ${cell(produces)} | ${t.owns.join(', ') || '—'} |`;
  });
  return ['| target | consumes | produces | owns |', '|---|---|---|---|', ...rows].join('\n');
}

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
