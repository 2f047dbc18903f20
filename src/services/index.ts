/** Every target this binary can run (`taskflow up` runs them all, `taskflow serve <target...>` some). */
import type { TargetDefinition } from '../runtime.ts';
import { apiTarget } from './api/index.ts';
import { relayTarget } from './relay/index.ts';
import { auditTarget } from './audit/index.ts';
import { broadcasterTarget } from './broadcaster/index.ts';
import { gatewayTarget } from './gateway/index.ts';
import { recurrenceTarget } from './recurrence/index.ts';
import { remindersTarget } from './reminders/index.ts';
import { notificationsTarget } from './notifications/index.ts';

export const TARGETS: readonly TargetDefinition[] = [
  apiTarget,
  relayTarget,
  recurrenceTarget,
  auditTarget,
  broadcasterTarget,
  gatewayTarget,
  remindersTarget,
  notificationsTarget,
];

export function findTargets(names: readonly string[]): TargetDefinition[] {
  const unknown = names.filter((n) => !TARGETS.some((t) => t.name === n));
  if (unknown.length)
    throw new Error(
      `unknown target(s) ${unknown.join(', ')}; available: ${TARGETS.map((t) => t.name).join(', ')}`,
    );
  return TARGETS.filter((t) => names.includes(t.name));
}
