/** The `recurrence` target: what it is (the list of targets: services/index.ts). */
import { TOPICS } from '../../contracts/topics.ts';
import type { TargetManifest } from '../../runtime.ts';

export const recurrenceManifest = {
  name: 'recurrence',
  routes: ['/api/tasks/:id/occurrences', '/api/tasks/:id/skip'],
  description:
    'creates the next occurrence of a completed recurring task; serves /api/tasks/:id/skip and /occurrences',
  serves: 'skip and occurrences under `/api/tasks/:id`',
  consumes: { group: 'taskflow-recurrence', topics: [TOPICS.taskEvents], deadLetters: true },
  // The next occurrence with its task.changed (TaskStore.create); a skip moves a task as an update does.
  produces: ['task.created', 'task.updated', 'task.changed'],
  sources: ['/taskflow/recurrence'],
  owns: ['series', 'occurrence ledger'],
} as const satisfies TargetManifest;
