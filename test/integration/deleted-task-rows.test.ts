/**
 * What a deleted task leaves in the reminders and recurrence targets' tables is forgotten once no copy of its
 * events can arrive any more (LEDGER_RETENTION_MS): the reminders target's marker of the deletion with the task's
 * reminders, and the recurrence target's series whose tasks are all gone with its occurrence ledger, each by an
 * hourly prune of its own (and one a second after start). They were kept for good: these tables grew with every
 * task ever created (a soak: a quarter of reminder_tasks were markers of deleted tasks). A deleted task's title
 * does not stay in the reminder schedule meanwhile. What is younger than the retention, or a series with a task
 * left, stays; and a completion of a forgotten series' task replayed afterwards makes nothing.
 * PGlite and PostgreSQL, the embedded bus.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TOPICS } from '../../src/contracts/topics.ts';
import { uuidv7 } from '../../src/ids.ts';
import { GROUPS } from '../../src/services/index.ts';
import { pruneForgottenSeries } from '../../src/services/recurrence/series.ts';
import { pruneDeletedTasks } from '../../src/services/reminders/store.ts';
import type { Db } from '../../src/store/db.ts';
import { startApp, waitCaughtUp, waitFor, writtenEvents } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';

const TARGETS = ['api', 'relay', 'reminders', 'recurrence'];
const DAY = 86_400_000;
const WAIT = 20_000;

const count = async (db: Db, sql: string, params: unknown[] = []) =>
  Number((await db.query<{ n: string }>(sql, params)).rows[0]!.n);

/** The task's rows in the two targets' tables. */
async function rowsOf(db: Db, taskIds: string[]) {
  return {
    markers: await count(
      db,
      'SELECT count(*)::text AS n FROM reminder_tasks WHERE task_id = ANY($1::uuid[])',
      [taskIds],
    ),
    reminders: await count(
      db,
      'SELECT count(*)::text AS n FROM reminder_schedule WHERE task_id = ANY($1::uuid[])',
      [taskIds],
    ),
    occurrences: await count(
      db,
      'SELECT count(*)::text AS n FROM recurrence_occurrences WHERE task_id = ANY($1::uuid[])',
      [taskIds],
    ),
  };
}

for (const backend of backends) {
  describe(`what a deleted task leaves is forgotten past the ledger retention (${backend.name})`, () => {
    it('prunes the markers, reminders and series of tasks deleted long ago; keeps the rest', async () => {
      const { db, drop } = await backend.fresh();
      try {
        const due = new Date(Date.parse('2026-03-01T12:00:00Z') + 3 * DAY).toISOString();
        let app = await startApp(db, { targets: TARGETS });
        // gone: a recurring task with reminders, completed (its next occurrence made), both deleted.
        // kept: a recurring task completed (its series has tasks left). recent: a task deleted within the retention.
        let gone: string[] = [];
        let kept: string[] = [];
        let recent = '';
        let completion: any;
        try {
          const create = async (title: string, fields: object = {}) => {
            const r = await app.call('alice', 'POST', '/api/tasks', {
              title,
              due_date: due,
              reminders: ['P1D', 'PT1H'],
              ...fields,
            });
            assert.equal(r.status, 201, JSON.stringify(r.body));
            return r.body.id as string;
          };
          const completeAndFollow = async (id: string) => {
            assert.equal((await app.call('alice', 'POST', `/api/tasks/${id}/complete`)).status, 200);
            const next = await waitFor(
              async () =>
                (
                  await db.query<{ id: string }>(
                    `SELECT id::text AS id FROM tasks WHERE series_id = (SELECT series_id FROM tasks WHERE id = $1)
                        AND id <> $1`,
                    [id],
                  )
                ).rows[0]?.id,
              WAIT,
              'the next occurrence',
            );
            return [id, next];
          };
          gone = await completeAndFollow(await create('secret plan', { recurrence: 'daily' }));
          kept = await completeAndFollow(await create('water the plants', { recurrence: 'weekly' }));
          recent = await create('deleted lately');
          for (const id of [...gone, recent])
            assert.equal((await app.call('alice', 'DELETE', `/api/tasks/${id}`)).status, 204);
          await waitFor(
            async () =>
              (await count(db, 'SELECT count(*)::text AS n FROM reminder_tasks WHERE deleted')) === 3 &&
              (await count(db, 'SELECT count(*)::text AS n FROM recurrence_occurrences')) === 3, // gone[1] left
            WAIT,
            'the deletions handled',
          );
          // The deleted tasks' titles are not kept with their reminders (they were, for good).
          assert.deepEqual(
            (
              await db.query<{ title: string }>(
                'SELECT DISTINCT title FROM reminder_schedule WHERE task_id = ANY($1::uuid[])',
                [[...gone, recent]],
              )
            ).rows.map((r) => r.title),
            [''],
          );
          completion = (await writtenEvents(db)).find(
            (e) => e.event_type === 'task.completed' && e.event.subject === gone[0],
          )?.event;
          assert.ok(completion, 'the completion of the deleted task was written');
        } finally {
          await app.stop();
        }
        // 400 days later, far past every topic's retention and LEDGER_RETENTION_MS (31 days), but for the task
        // deleted lately.
        for (const [table, column] of [
          ['reminder_schedule', 'updated_at'],
          ['reminder_schedule', 'created_at'],
          ['recurrence_series', 'updated_at'],
          ['recurrence_series', 'created_at'],
          ['recurrence_occurrences', 'created_at'],
          ['processed_events', 'processed_at'],
          ['bus_messages', 'created_at'],
        ])
          await db.query(`UPDATE ${table} SET ${column} = ${column} - interval '400 days'`);
        await db.query(
          `UPDATE reminder_tasks SET updated_at = updated_at - interval '400 days' WHERE task_id <> $1`,
          [recent],
        );
        const before = { series: await count(db, 'SELECT count(*)::text AS n FROM recurrence_series') };
        assert.equal(before.series, 2);

        app = await startApp(db, { targets: TARGETS });
        try {
          await waitFor(
            async () => {
              const left = await rowsOf(db, gone);
              return left.markers + left.reminders + left.occurrences === 0 &&
                (await count(db, 'SELECT count(*)::text AS n FROM recurrence_series')) === 1
                ? true
                : undefined;
            },
            WAIT,
            'the rows of the tasks deleted 400 days ago to be forgotten',
          ).catch(async (err: Error) => {
            const left = {
              ...(await rowsOf(db, gone)),
              series: await count(db, 'SELECT count(*)::text AS n FROM recurrence_series'),
            };
            throw new Error(`${err.message}: left ${JSON.stringify(left)}`);
          });
          // The rest stays: a task deleted within the retention (its marker guards against a late copy of its
          // events), and the tasks that exist, with their reminders and their series (with its ledger).
          assert.deepEqual(await rowsOf(db, [recent]), { markers: 1, reminders: 2, occurrences: 0 });
          assert.deepEqual(await rowsOf(db, kept), { markers: 2, reminders: 4, occurrences: 2 });
          const series = await db.query<{ series_id: string }>(
            'SELECT series_id::text AS series_id FROM recurrence_series',
          );
          assert.deepEqual(
            series.rows.map((r) => r.series_id),
            [kept[0]],
          );

          // A copy of the forgotten task's completion handled now (a dead letter replayed: an id the ledger
          // never had) finds neither the task nor how it was deleted: it waits for a deletion handled long
          // ago, and makes nothing (no next occurrence, no series again).
          const tasksBefore = await count(db, 'SELECT count(*)::text AS n FROM tasks');
          await app.proc.runtime.bus.publisher.publish([
            { topic: TOPICS.taskEvents, key: 'alice', event: { ...completion, id: uuidv7() } },
          ]);
          await waitCaughtUp(app, GROUPS.recurrence, WAIT);
          await waitCaughtUp(app, GROUPS.reminders, WAIT);
          assert.equal(await count(db, 'SELECT count(*)::text AS n FROM tasks'), tasksBefore);
          assert.equal(await count(db, 'SELECT count(*)::text AS n FROM recurrence_series'), 1);
          assert.equal(
            await count(
              db,
              'SELECT count(*)::text AS n FROM processed_events WHERE consumer = $1 AND event_id = $2',
              ['taskflow-recurrence/completion-of-a-deleted-task', gone[0]],
            ),
            1,
            'the completion was handled, and waits for the deletion',
          );
        } finally {
          await app.stop();
        }
      } finally {
        await drop();
      }
    });

    it('prunes in batches, each going on from the last, and stops between two when told', async () => {
      const { db, drop } = await backend.fresh();
      try {
        // Seven markers of tasks deleted 40 days ago (one reminder each), one deleted lately, one task not deleted.
        const markers = Array.from({ length: 9 }, () => uuidv7());
        await db.query(
          `INSERT INTO reminder_tasks (task_id, user_id, version, deleted, updated_at)
           SELECT id, 'ann', 2, i < 9, now() - CASE WHEN i = 8 THEN interval '1 day' ELSE interval '40 days' END
                                              + i * interval '1 second'
             FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, i)`,
          [markers],
        );
        await db.query(
          `INSERT INTO reminder_schedule (id, task_id, user_id, title, specs, planned_at, remind_at, status)
           SELECT gen_random_uuid(), id, 'ann', '', '[]', now(), now(), 'dismissed' FROM unnest($1::uuid[]) AS t(id)`,
          [markers],
        );
        const retention = 31 * DAY;
        let batches = 0;
        assert.deepEqual(
          await pruneDeletedTasks(db, retention, 3, () => ++batches < 2),
          { tasks: 6, reminders: 6 },
          'two batches of three, then told to stop',
        );
        assert.deepEqual(await pruneDeletedTasks(db, retention, 3), { tasks: 1, reminders: 1 });
        assert.deepEqual(
          (
            await db.query<{ task_id: string }>(
              'SELECT task_id::text AS task_id FROM reminder_tasks ORDER BY 1',
            )
          ).rows.map((r) => r.task_id),
          markers.slice(7),
        );
        assert.equal(await count(db, 'SELECT count(*)::text AS n FROM reminder_schedule'), 2);

        // Five series whose tasks are gone (two with a ledger), untouched for 40 days, and one touched lately.
        const series = Array.from({ length: 6 }, () => uuidv7());
        await db.query(
          `INSERT INTO recurrence_series (series_id, user_id, rule, anchor, updated_at)
           SELECT id, 'ann', '{}', now(), now() - CASE WHEN i = 6 THEN interval '1 day' ELSE interval '40 days' END
                                        + i * interval '1 second'
             FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, i)`,
          [series],
        );
        await db.query(
          `INSERT INTO recurrence_occurrences (series_id, occurrence_index, task_id, source_task_id)
           VALUES ($1, 1, $1, NULL), ($1, 2, gen_random_uuid(), $1), ($2, 1, $2, NULL)`,
          [series[1], series[3]],
        );
        batches = 0;
        assert.deepEqual(await pruneForgottenSeries(db, retention, 2, () => ++batches < 2), {
          series: 4,
          occurrences: 3,
        });
        assert.deepEqual(await pruneForgottenSeries(db, retention, 2), { series: 1, occurrences: 0 });
        assert.deepEqual(
          (
            await db.query<{ series_id: string }>(
              'SELECT series_id::text AS series_id FROM recurrence_series',
            )
          ).rows.map((r) => r.series_id),
          [series[5]],
        );
      } finally {
        await drop();
      }
    });
  });
}
