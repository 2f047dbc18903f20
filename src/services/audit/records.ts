/** From an event to the audit record that describes it (pure). */
import type { CloudEvent } from '../../contracts/cloudevent.ts';
import type { ReminderEventData, TaskEventData } from '../../contracts/events.ts';
import { traceIdOf } from '../../observability/trace.ts';
import { canonicalJson, type AuditChange, type AuditInput } from './chain.ts';

/** Bookkeeping fields that change with every write; they are not "the change". */
const IGNORED = new Set(['updated_at', 'version']);

const same = (a: unknown, b: unknown) => canonicalJson(a) === canonicalJson(b);

/** The before/after values of the fields that differ (plus those the event names as changed). */
export function diffFields(
  before: Record<string, unknown>,
  after: Record<string, unknown>,
  named: readonly string[] = [],
): AuditChange {
  const keys = new Set([...named, ...Object.keys(before), ...Object.keys(after)]);
  const b: Record<string, unknown> = {};
  const a: Record<string, unknown> = {};
  for (const k of [...keys].sort()) {
    if (IGNORED.has(k) || same(before[k], after[k])) continue;
    b[k] = before[k] ?? null;
    a[k] = after[k] ?? null;
  }
  return { before: b, after: a };
}

function changeOf(event: CloudEvent): { userId: string; taskId: string | null; change: AuditChange } {
  if (event.type.startsWith('task.')) {
    const d = event.data as TaskEventData;
    const task = d.task as unknown as Record<string, unknown>;
    const previous = d.previous as unknown as Record<string, unknown> | null;
    if (event.type === 'task.created' || !previous)
      return { userId: d.user_id, taskId: d.task.id, change: { before: null, after: task } };
    if (event.type === 'task.deleted')
      return { userId: d.user_id, taskId: d.task.id, change: { before: previous, after: null } };
    return { userId: d.user_id, taskId: d.task.id, change: diffFields(previous, task, d.changes ?? []) };
  }
  const d = event.data as ReminderEventData;
  const after: Record<string, unknown> = {
    reminder_id: d.reminder_id,
    title: d.title,
    due_at: d.due_at,
    remind_at: d.remind_at,
    channels: d.channels,
  };
  if (d.reason !== undefined) after.reason = d.reason;
  if (d.triggered_at !== undefined) after.triggered_at = d.triggered_at;
  return { userId: d.user_id, taskId: d.task_id, change: { before: null, after } };
}

const ext = (event: CloudEvent, name: string): string | null => {
  const v = (event as unknown as Record<string, unknown>)[name];
  return typeof v === 'string' && v.length > 0 ? v.slice(0, 512) : null;
};

export function auditInputOf(event: CloudEvent, recordedAt: Date): AuditInput {
  const { userId, taskId, change } = changeOf(event);
  return {
    event_id: event.id,
    user_id: userId,
    task_id: taskId,
    operation: event.type,
    occurred_at: new Date(event.time).toISOString(),
    recorded_at: recordedAt.toISOString(),
    change,
    trace_id: traceIdOf(event.traceparent) ?? null,
    client_ip: ext(event, 'clientip'),
    user_agent: ext(event, 'useragent'),
  };
}
