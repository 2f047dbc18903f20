/**
 * The reminders consumer's run (applyTaskEvents): several events of one task in one run, as a batch brings them
 * when a client writes quickly. What the run's last event leaves is what is stored: a reminder scheduled and
 * dismissed within one run is stored dismissed, never scheduled (it fired for deleted and completed tasks, and
 * at a due date the task no longer had).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { newTask, type Task } from '../../src/domain/task.ts';
import { uuidv7 } from '../../src/ids.ts';
import { applyTaskEvents, type TaskEventInput } from '../../src/services/reminders/store.ts';
import { backends } from '../helpers/db.ts';
import { plainFields, taskEventInput } from '../helpers/events.ts';

const NOW = new Date('2026-03-01T12:00:00Z');
const HOUR = 3_600_000;
const at = (ms: number) => new Date(NOW.getTime() + ms).toISOString();

/** The input of a task event of `task` (a new version of it: the fields given, version + 1). */
const input = (type: string, task: Task, changes: string[] = []): TaskEventInput =>
  taskEventInput(type, task, NOW, changes);
const next = (task: Task, fields: Partial<Task>): Task => ({ ...task, ...fields, version: task.version + 1 });

for (const backend of backends) {
  describe(`a run of several events of one task (${backend.name})`, () => {
    const run = async (inputs: TaskEventInput[]) => {
      const { db, drop } = await backend.fresh();
      try {
        await db.transaction((tx) =>
          applyTaskEvents(tx, inputs, {
            dedupe: 'reminders',
            graceMs: 60_000,
            now: NOW,
            channels: ['in_app'],
          }),
        );
        return (
          await db.query<{ status: string; dismiss_reason: string | null; due_at: Date; remind_at: Date }>(
            `SELECT status, dismiss_reason, due_at, remind_at FROM reminder_schedule ORDER BY planned_at`,
          )
        ).rows;
      } finally {
        await drop();
      }
    };
    const created = newTask(
      uuidv7(),
      'ann',
      plainFields('Call mom', { due_date: at(3 * HOUR), reminders: ['PT1H'] }),
      NOW,
    );

    it('created then deleted: the reminder is stored dismissed', async () => {
      const rows = await run([input('task.created', created), input('task.deleted', next(created, {}))]);
      assert.deepEqual(
        rows.map((r) => [r.status, r.dismiss_reason]),
        [['dismissed', 'task_deleted']],
      );
    });

    it('created then completed: the reminder is stored dismissed', async () => {
      const done = next(created, { status: 'completed', completed_at: NOW.toISOString() });
      const rows = await run([input('task.created', created), input('task.completed', done)]);
      assert.deepEqual(
        rows.map((r) => [r.status, r.dismiss_reason]),
        [['dismissed', 'task_completed']],
      );
    });

    it('created, then its due date moved twice: only the last due date has a scheduled reminder', async () => {
      const moved = next(created, { due_date: at(5 * HOUR) });
      const movedAgain = next(moved, { due_date: at(7 * HOUR) });
      const rows = await run([
        input('task.created', created),
        input('task.updated', moved, ['due_date']),
        input('task.updated', movedAgain, ['due_date']),
      ]);
      assert.deepEqual(
        rows.filter((r) => r.status === 'scheduled').map((r) => new Date(r.due_at).toISOString()),
        [at(7 * HOUR)],
      );
      assert.equal(rows.length, 3);
    });

    it('an edit of the title handled before a due date change it follows (a late event): the due date still moves the reminder', async () => {
      const moved = next(created, { due_date: at(5 * HOUR) });
      const renamed = next(moved, { title: 'Call mom back' });
      const rows = await run([
        input('task.created', created),
        input('task.updated', renamed, ['title']),
        input('task.updated', moved, ['due_date']),
      ]);
      assert.deepEqual(
        rows
          .filter((r) => r.status === 'scheduled')
          .map((r) => [new Date(r.remind_at).toISOString(), new Date(r.due_at).toISOString()]),
        [[at(4 * HOUR), at(5 * HOUR)]],
        'an hour before the newest due date, which the title edit carried',
      );
    });
  });
}
