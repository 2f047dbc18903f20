/**
 * The recurrence target end to end on the embedded bus (api + relay + recurrence in one process, PGlite;
 * PostgreSQL too when TEST_DATABASE_URL is set): next occurrences, idempotency against redelivery and
 * complete -> reopen -> complete, COUNT/UNTIL, rule edits, skipping, previews and per-user isolation.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { listDeadLetters, replayDeadLetters } from '../../src/bus/dlq.ts';
import { TOPICS } from '../../src/contracts/topics.ts';
import { GROUPS } from '../../src/services/index.ts';
import { eventProblems } from '../../src/contracts/schemas.ts';
import { ManualClock } from '../../src/domain/clock.ts';
import type { Db } from '../../src/store/db.ts';
import { backends } from '../helpers/db.ts';
import { writtenEvents, startApp, waitFor, type TestApp } from '../helpers/app.ts';

/**
 * Waits until every outbox row is on the bus and the recurrence group has consumed all of task-events. A
 * consumer commits its effect (and the effect's outbox rows) before its position, so "outbox empty, no lag,
 * outbox still empty" means every completion so far has been fully handled.
 */
async function settled(db: Db): Promise<void> {
  const count = async (sql: string, params: unknown[] = []) =>
    Number((await db.query<{ n: string }>(sql, params)).rows[0]!.n);
  const pending = 'SELECT count(*)::text AS n FROM outbox WHERE published_at IS NULL';
  await waitFor(
    async () => {
      if ((await count(pending)) !== 0) return false;
      const lag = await count(
        `SELECT coalesce(sum(p.next_offset - coalesce(o."offset", 0)), 0)::text AS n
           FROM bus_partitions p
           LEFT JOIN bus_group_offsets o
             ON o.topic = p.topic AND o.partition = p.partition AND o.group_id = $1
          WHERE p.topic = $2`,
        [GROUPS.recurrence, TOPICS.taskEvents],
      );
      return lag === 0 && (await count(pending)) === 0;
    },
    15_000,
    'outbox relayed and task-events consumed by the recurrence group',
  );
}

for (const backend of backends) {
  describe(`recurrence target on ${backend.name}`, () => {
    let app: TestApp;
    const clock = new ManualClock('2026-03-01T12:00:00Z');
    let db: Db;
    let drop: () => Promise<void>;
    before(async () => {
      ({ db, drop } = await backend.fresh());
      app = await startApp(db, {
        targets: ['api', 'relay', 'recurrence'],
        clock,
      });
    });
    after(async () => {
      await app?.stop();
      await drop?.();
    });

    const settle = () => settled(db);

    const seriesTasks = async (user: string, seriesId: string) => {
      const r = await app.call(user, 'GET', '/api/tasks?status=all&sort=due&order=asc&limit=200');
      assert.equal(r.status, 200);
      return (r.body.items as any[]).filter((t) => t.series_id === seriesId);
    };
    const waitForSeries = (user: string, seriesId: string, n: number) =>
      waitFor(
        async () => {
          const tasks = await seriesTasks(user, seriesId);
          return tasks.length >= n ? tasks : undefined;
        },
        15_000,
        `${n} tasks in series ${seriesId}`,
      );
    const create = async (user: string, body: Record<string, unknown>) => {
      const r = await app.call(user, 'POST', '/api/tasks', body);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body;
    };
    const complete = async (user: string, id: string) => {
      const r = await app.call(user, 'POST', `/api/tasks/${id}/complete`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body;
    };
    const series = async (seriesId: string) =>
      (
        await db.query<{ anchor: Date; occurrences: number; skipped: Date[]; ended_at: Date | null }>(
          'SELECT anchor, occurrences, skipped, ended_at FROM recurrence_series WHERE series_id = $1',
          [seriesId],
        )
      ).rows[0];
    const ledger = async (seriesId: string) =>
      (
        await db.query<{ i: number; task_id: string }>(
          `SELECT occurrence_index AS i, task_id::text AS task_id FROM recurrence_occurrences
            WHERE series_id = $1 ORDER BY occurrence_index`,
          [seriesId],
        )
      ).rows;

    it('creates the next occurrence through the task store when a recurring task is completed', async () => {
      const root = await create('rita', {
        title: 'Water plants',
        description: 'balcony + kitchen',
        priority: 'high',
        tags: ['Home', 'garden'],
        due_date: '2026-03-02T09:00:00Z',
        reminders: ['PT1H', '2026-03-02T07:00:00Z'],
        recurrence: 'daily',
      });
      assert.equal(root.series_id, root.id);
      const done = await complete('rita', root.id);
      const [first, next] = await waitForSeries('rita', root.id, 2);
      assert.equal(first.id, root.id);
      assert.equal(first.status, 'completed');
      assert.equal(next.status, 'pending');
      assert.equal(next.due_date, '2026-03-03T09:00:00.000Z');
      assert.equal(next.series_id, root.id);
      assert.equal(next.title, 'Water plants');
      assert.equal(next.description, 'balcony + kitchen');
      assert.equal(next.priority, 'high');
      assert.deepEqual(next.tags, ['Home', 'garden']);
      assert.deepEqual(next.reminders, ['PT1H', '2026-03-03T07:00:00.000Z'], 'absolute reminders move along');
      assert.deepEqual(next.recurrence, root.recurrence);
      assert.equal(next.completed_at, null);
      assert.equal(next.version, 1);

      // Its own task.created event, valid, continuing the completion's trace.
      const events = await writtenEvents(db);
      const completion = events.find(
        (e) => e.event_type === 'task.completed' && e.event.subject === root.id,
      )!.event;
      const createdEvent = events.find(
        (e) => e.event_type === 'task.created' && e.event.subject === next.id,
      )!;
      assert.ok(createdEvent, 'the next occurrence has its task.created event');
      assert.deepEqual(eventProblems(createdEvent.event), []);
      assert.equal(createdEvent.key, 'rita');
      assert.equal(createdEvent.event.source, '/taskflow/recurrence');
      assert.equal(createdEvent.event.traceparent.split('-')[1], completion.traceparent.split('-')[1]);
      assert.equal(done.completed_at, '2026-03-01T12:00:00.000Z');

      const s = await series(root.id);
      assert.equal(new Date(s!.anchor).toISOString(), '2026-03-02T09:00:00.000Z');
      assert.equal(s!.occurrences, 2);
      assert.deepEqual(
        (await ledger(root.id)).map((r) => [r.i, r.task_id]),
        [
          [1, root.id],
          [2, next.id],
        ],
      );
    });

    it('anchors a series without a due date on the completion time, to the minute', async () => {
      const root = await create('nadia', { title: 'Stretch', recurrence: 'daily' });
      const at = clock.now();
      clock.set(new Date(at.getTime() + 16_123)); // completed at 12:00:16.123
      try {
        await complete('nadia', root.id);
      } finally {
        clock.set(at);
      }
      const tasks = await waitForSeries('nadia', root.id, 2);
      const next = tasks.find((t) => t.id !== root.id); // a task without due date sorts last
      assert.equal(next.due_date, '2026-03-02T12:00:00.000Z');
    });

    it('creates the next occurrence of a recurring task created completed', async () => {
      const root = await create('olga', {
        title: 'Water plants',
        status: 'completed',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: 'daily',
      });
      const tasks = await waitForSeries('olga', root.id, 2);
      const next = tasks.find((t) => t.id !== root.id);
      assert.equal(next.status, 'pending');
      assert.equal(next.due_date, '2026-03-03T09:00:00.000Z');
    });

    it('creates one next occurrence when the same completion event is delivered twice', async () => {
      const root = await create('dora', {
        title: 'Standup notes',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: 'weekly',
      });
      await complete('dora', root.id);
      await waitForSeries('dora', root.id, 2);
      await settle();
      const completion = (await writtenEvents(db)).find(
        (e) => e.event_type === 'task.completed' && e.event.subject === root.id,
      )!.event;
      await app.proc.runtime.bus.publisher.publish([
        { topic: TOPICS.taskEvents, key: 'dora', event: completion },
        { topic: TOPICS.taskEvents, key: 'dora', event: completion },
      ]);
      await settle();
      const tasks = await seriesTasks('dora', root.id);
      assert.equal(tasks.length, 2, 'still one next occurrence');
      assert.equal(tasks[1].due_date, '2026-03-09T09:00:00.000Z');
      assert.equal((await ledger(root.id)).length, 2);
    });

    it('creates one next occurrence for complete -> reopen -> complete of the same occurrence', async () => {
      // Back to back, before the consumer catches up...
      const a = await create('olga', { title: 'A', due_date: '2026-03-02T09:00:00Z', recurrence: 'daily' });
      await complete('olga', a.id);
      assert.equal((await app.call('olga', 'POST', `/api/tasks/${a.id}/reopen`)).status, 200);
      await complete('olga', a.id);
      // ...and after it created the next occurrence.
      const b = await create('olga', { title: 'B', due_date: '2026-03-02T10:00:00Z', recurrence: 'daily' });
      await complete('olga', b.id);
      await waitForSeries('olga', b.id, 2);
      assert.equal((await app.call('olga', 'POST', `/api/tasks/${b.id}/reopen`)).status, 200);
      await complete('olga', b.id);
      await settle();
      for (const root of [a, b]) {
        const tasks = await seriesTasks('olga', root.id);
        assert.equal(tasks.length, 2, `${root.title}: one next occurrence`);
        assert.equal(tasks.filter((t) => t.status === 'pending').length, 1);
      }
    });

    it('reopening an occurrence takes its completion back: a series never has two pending occurrences', async () => {
      // The next occurrence, untouched since created, goes with the reopen (its task.deleted in the same
      // transaction) and leaves the count; completed again, the occurrence gets a new one, due as before.
      const c = await create('paul', { title: 'C', due_date: '2026-03-02T09:00:00Z', recurrence: 'daily' });
      await complete('paul', c.id);
      const [, next] = await waitForSeries('paul', c.id, 2);
      assert.equal((await app.call('paul', 'POST', `/api/tasks/${c.id}/reopen`)).status, 200);
      await settle();
      assert.deepEqual(
        (await seriesTasks('paul', c.id)).map((t) => [t.id, t.status]),
        [[c.id, 'pending']],
      );
      assert.equal((await app.call('paul', 'GET', `/api/tasks/${next.id}`)).status, 404);
      assert.equal((await series(c.id))!.occurrences, 1);
      await complete('paul', c.id);
      const again = await waitForSeries('paul', c.id, 2);
      await settle();
      assert.equal((await seriesTasks('paul', c.id)).length, 2);
      assert.equal(again.filter((t) => t.status === 'pending').length, 1);
      assert.equal(again.find((t) => t.id !== c.id).due_date, next.due_date);

      // Reopened before the recurrence service handled the completion: the completion creates nothing.
      const d = await create('paul', { title: 'D', due_date: '2026-03-02T10:00:00Z', recurrence: 'daily' });
      await complete('paul', d.id);
      assert.equal((await app.call('paul', 'POST', `/api/tasks/${d.id}/reopen`)).status, 200);
      await settle();
      assert.deepEqual(
        (await seriesTasks('paul', d.id)).map((t) => [t.id, t.status]),
        [[d.id, 'pending']],
      );

      // A next occurrence changed since it was created: the reopen is refused (409 naming it), nothing moves.
      const e = await create('paul', { title: 'E', due_date: '2026-03-02T11:00:00Z', recurrence: 'daily' });
      await complete('paul', e.id);
      const [, eNext] = await waitForSeries('paul', e.id, 2);
      assert.equal(
        (await app.call('paul', 'PATCH', `/api/tasks/${eNext.id}`, { title: 'E, moved' })).status,
        200,
      );
      const refused = await app.call('paul', 'POST', `/api/tasks/${e.id}/reopen`);
      assert.equal(refused.status, 409);
      assert.match(refused.body.detail, new RegExp(eNext.id));
      assert.equal((await app.call('paul', 'GET', `/api/tasks/${e.id}`)).body.status, 'completed');
      assert.equal((await app.call('paul', 'GET', `/api/tasks/${eNext.id}`)).body.title, 'E, moved');
    });

    /** Runs `sql` in a transaction left open, holding its locks, until the function it answers is called. */
    const heldOpen = async (sql: string, params: unknown[]) => {
      let release!: () => void;
      const holding = new Promise<void>((resolve) => (release = resolve));
      let held!: () => void;
      const ready = new Promise<void>((resolve) => (held = resolve));
      const holder = db
        .transaction(async (tx) => {
          await tx.query(sql, params);
          held();
          await holding;
          throw new Error('rolled back');
        })
        .catch(() => undefined);
      await ready;
      return async () => {
        release();
        await holder;
      };
    };
    /** Whether another session waits for a lock in a statement `LIKE` (or, `unlike`, not like) `pattern`. */
    const lockWait = async (pattern: string, unlike = false) =>
      Number(
        (
          await db.query<{ n: string }>(
            `SELECT count(*)::text AS n FROM pg_stat_activity
              WHERE wait_event_type = 'Lock' AND query ${unlike ? 'NOT LIKE' : 'LIKE'} $1 AND pid <> pg_backend_pid()`,
            [pattern],
          )
        ).rows[0]!.n,
      ) > 0;
    const reopenRaces = {
      skip: backend.name === 'pglite' && 'PGlite has one connection: nothing interleaves',
    };

    it(
      'a reopen committed while the service waits for the series: the completion it took back makes nothing',
      reopenRaces,
      async () => {
        const f = await create('quinn', {
          title: 'F',
          due_date: '2026-03-02T09:00:00Z',
          recurrence: 'daily',
        });
        await complete('quinn', f.id);
        const [, second] = await waitForSeries('quinn', f.id, 2);
        await settle();
        // The service reads the completed task, then waits here for the series (held by this test) while the
        // reopen commits; then it goes on.
        const release = await heldOpen('SELECT 1 FROM recurrence_series WHERE series_id = $1 FOR UPDATE', [
          f.id,
        ]);
        try {
          await complete('quinn', second.id);
          await waitFor(
            () => lockWait('%FROM recurrence_series%FOR UPDATE%'),
            15_000,
            'the recurrence service waiting for the series',
          );
          assert.equal((await app.call('quinn', 'POST', `/api/tasks/${second.id}/reopen`)).status, 200);
        } finally {
          await release();
        }
        await settle();
        assert.deepEqual(
          (await seriesTasks('quinn', f.id)).map((t) => [t.id, t.status]),
          [
            [f.id, 'completed'],
            [second.id, 'pending'],
          ],
          'the completion taken back by the reopen made nothing',
        );
      },
    );

    it(
      'a reopen that comes while the service makes the next occurrence waits for it, then takes it back',
      reopenRaces,
      async () => {
        const g = await create('rhea', { title: 'G', due_date: '2026-03-02T09:00:00Z', recurrence: 'daily' });
        await complete('rhea', g.id);
        const [, second] = await waitForSeries('rhea', g.id, 2);
        await settle();
        // The service's ledger row for the occurrence after `second` waits for this test's (same source task,
        // unique), with `second` read under its lock by then; the reopen comes meanwhile.
        const ledgerInsert = '%INSERT INTO recurrence_occurrences%';
        const release = await heldOpen(
          `INSERT INTO recurrence_occurrences (series_id, occurrence_index, task_id, source_task_id)
           VALUES ($1, 1000, gen_random_uuid(), $2)`,
          [g.id, second.id],
        );
        let reopened: Promise<{ status: number }> | undefined;
        try {
          await complete('rhea', second.id);
          await waitFor(() => lockWait(ledgerInsert), 15_000, 'the service making the next occurrence');
          let answered = false;
          reopened = app
            .call('rhea', 'POST', `/api/tasks/${second.id}/reopen`)
            .finally(() => (answered = true));
          // The reopen waits for the task's row (were it not locked, for the user's event stream, after its
          // take-back found nothing), or answers.
          await waitFor(
            async () => answered || (await lockWait(ledgerInsert, true)),
            15_000,
            'the reopen waiting or answered',
          );
        } finally {
          await release();
        }
        assert.equal((await reopened!).status, 200);
        await settle();
        assert.deepEqual(
          (await seriesTasks('rhea', g.id)).map((t) => [t.id, t.status]),
          [
            [g.id, 'completed'],
            [second.id, 'pending'],
          ],
          'the next occurrence made meanwhile was taken back by the reopen',
        );
      },
    );

    it('ends a series when COUNT is exhausted, and records the end', async () => {
      const root = await create('cora', {
        title: 'Three times',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: { preset: 'daily', count: 3 },
      });
      let current = root;
      for (let n = 2; n <= 3; n++) {
        await complete('cora', current.id);
        const tasks = await waitForSeries('cora', root.id, n);
        current = tasks[n - 1];
      }
      assert.equal(current.due_date, '2026-03-04T09:00:00.000Z');
      assert.equal((await series(root.id))!.ended_at, null);
      await complete('cora', current.id);
      await settle();
      const tasks = await seriesTasks('cora', root.id);
      assert.equal(tasks.length, 3);
      assert.ok(tasks.every((t) => t.status === 'completed'));
      assert.ok((await series(root.id))!.ended_at, 'series recorded as ended');
    });

    it('ends a series at UNTIL', async () => {
      const root = await create('uma', {
        title: 'Until',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: { preset: 'weekly', until: '2026-03-10T23:59:59Z' },
      });
      await complete('uma', root.id);
      const [, second] = await waitForSeries('uma', root.id, 2);
      assert.equal(second.due_date, '2026-03-09T09:00:00.000Z');
      // The last occurrence sent back whole (a client's PUT, its rule unchanged) is no rule that never
      // repeats: only a rule being set is checked against its due date.
      const whole = await app.call('uma', 'PUT', `/api/uma/tasks/${second.id}`, {
        title: 'Until (last)',
        due_date: second.due_date,
        recurrence: second.recurrence,
      });
      assert.equal(whole.status, 200, JSON.stringify(whole.body));
      await complete('uma', second.id);
      await settle();
      assert.equal((await seriesTasks('uma', root.id)).length, 2);
      assert.ok((await series(root.id))!.ended_at);
    });

    it('applies an edited rule to future occurrences only', async () => {
      const root = await create('edda', {
        title: 'Review',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: 'daily',
      });
      await complete('edda', root.id);
      const [, second] = await waitForSeries('edda', root.id, 2);
      assert.equal(second.due_date, '2026-03-03T09:00:00.000Z');
      const edited = await app.call('edda', 'PATCH', `/api/tasks/${second.id}`, {
        recurrence: { rrule: 'FREQ=WEEKLY;BYDAY=FR' },
      });
      assert.equal(edited.status, 200);
      await complete('edda', second.id);
      const tasks = await waitForSeries('edda', root.id, 3);
      assert.equal(tasks[2].due_date, '2026-03-06T09:00:00.000Z', 'the next Friday, 09:00');
      assert.equal(tasks[2].recurrence.rrule, 'FREQ=WEEKLY;BYDAY=FR');
      assert.equal(tasks[0].recurrence.rrule, 'FREQ=DAILY', 'the completed occurrence keeps its rule');
      const edited_ = await series(root.id);
      assert.equal(new Date(edited_!.anchor).toISOString(), '2026-03-03T09:00:00.000Z', 're-anchored');

      // The old occurrence cannot be reopened (a later one is completed: the series has moved on), and the
      // series stays as it is.
      const reopen = await app.call('edda', 'POST', `/api/tasks/${root.id}/reopen`);
      assert.equal(reopen.status, 409);
      assert.match(
        reopen.body.detail,
        new RegExp(`later occurrence of this series \\(${second.id}\\) is completed`),
      );
      await settle();
      assert.equal((await seriesTasks('edda', root.id)).length, 3);
      const after_ = await series(root.id);
      assert.equal(new Date(after_!.anchor).toISOString(), '2026-03-03T09:00:00.000Z');
      assert.equal(after_!.occurrences, 2);
    });

    it('skips an occurrence: the due date moves to the next one and the skipped date is recorded', async () => {
      const root = await create('sam', {
        title: 'Gym',
        due_date: '2026-03-02T09:00:00Z',
        reminders: ['PT1H'],
        recurrence: 'weekly',
      });
      const eventsBefore = (await writtenEvents(db)).length;
      const skipped = await app.call('sam', 'POST', `/api/tasks/${root.id}/skip`);
      assert.equal(skipped.status, 200, JSON.stringify(skipped.body));
      assert.equal(skipped.body.id, root.id);
      assert.equal(skipped.body.status, 'pending');
      assert.equal(skipped.body.due_date, '2026-03-09T09:00:00.000Z');
      assert.equal(skipped.body.version, 2);
      assert.equal(skipped.headers.get('etag'), '"2"');
      // The due date moved, so the reminders did: the answer says where, as a PATCH's does.
      assert.deepEqual(skipped.body.reminder_plan, {
        scheduled: [{ remind_at: '2026-03-09T08:00:00.000Z', specs: ['PT1H'], why: 'asked' }],
        skipped: [],
      });
      const events = (await writtenEvents(db))
        .slice(eventsBefore)
        .filter((e) => e.event_type !== 'task.changed');
      assert.deepEqual(
        events.map((e) => e.event_type),
        ['task.updated'],
      );
      assert.deepEqual(events[0]!.event.data.changes, ['due_date']);
      assert.equal(events[0]!.event.source, '/taskflow/recurrence');

      const again = await app.call('sam', 'POST', `/api/tasks/${root.id}/skip`, undefined, {
        'if-match': '"2"',
      });
      assert.equal(again.body.due_date, '2026-03-16T09:00:00.000Z');
      const stale = await app.call('sam', 'POST', `/api/tasks/${root.id}/skip`, undefined, {
        'if-match': '"2"',
      });
      assert.equal(stale.status, 412);

      const s = await series(root.id);
      assert.deepEqual(
        s!.skipped.map((d) => new Date(d).toISOString()),
        ['2026-03-02T09:00:00.000Z', '2026-03-09T09:00:00.000Z'],
      );
      assert.equal(s!.occurrences, 3);
      assert.equal(new Date(s!.anchor).toISOString(), '2026-03-02T09:00:00.000Z');

      // Completing after skips continues from the moved due date.
      await complete('sam', root.id);
      const [, next] = await waitForSeries('sam', root.id, 2);
      assert.equal(next.due_date, '2026-03-23T09:00:00.000Z');

      // Not skippable: completed, not recurring, the last occurrence.
      const done = await app.call('sam', 'POST', `/api/tasks/${root.id}/skip`);
      assert.equal(done.status, 409);
      assert.match(done.headers.get('content-type') ?? '', /^application\/problem\+json/);
      const plain = await create('sam', { title: 'once', due_date: '2026-03-02T09:00:00Z' });
      assert.equal((await app.call('sam', 'POST', `/api/tasks/${plain.id}/skip`)).status, 409);
      const once = await create('sam', {
        title: 'one-off series',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: { preset: 'daily', count: 1 },
      });
      const last = await app.call('sam', 'POST', `/api/tasks/${once.id}/skip`);
      assert.equal(last.status, 409);
      assert.equal((await app.call('sam', 'GET', `/api/tasks/${once.id}`)).body.version, 1);
    });

    it('previews the next occurrences', async () => {
      const t = await create('pia', {
        title: 'Weekly',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: 'weekly',
      });
      const r = await app.call('pia', 'GET', `/api/tasks/${t.id}/occurrences`);
      assert.equal(r.status, 200);
      assert.equal(r.body.series_id, t.id);
      assert.deepEqual(r.body.occurrences, [
        '2026-03-09T09:00:00.000Z',
        '2026-03-16T09:00:00.000Z',
        '2026-03-23T09:00:00.000Z',
        '2026-03-30T09:00:00.000Z',
        '2026-04-06T09:00:00.000Z',
      ]);
      const three = await app.call('pia', 'GET', `/api/tasks/${t.id}/occurrences?count=3`);
      assert.equal(three.body.occurrences.length, 3);
      const hundred = await app.call('pia', 'GET', `/api/tasks/${t.id}/occurrences?count=100`);
      assert.equal(hundred.body.occurrences.length, 100);
      for (const bad of ['0', '101', 'abc', '2.5', '-1']) {
        const b = await app.call('pia', 'GET', `/api/tasks/${t.id}/occurrences?count=${bad}`);
        assert.equal(b.status, 400, bad);
        assert.ok(
          b.body.errors.some((e: { field: string }) => e.field === 'count'),
          bad,
        );
      }
      // A query it does not understand is refused, not answered as if it had applied (the task's own dates): an
      // unknown parameter (the task field's name, a typo), one given twice.
      for (const [query, field] of [
        ['due_date=2026-05-01T09:00:00Z', 'due_date'],
        ['recurence=weekly', 'recurence'],
        ['count=3&count=100', 'count'],
        ['due=2026-05-01T09:00:00Z&due=2026-06-01T09:00:00Z', 'due'],
      ]) {
        const b = await app.call('pia', 'GET', `/api/tasks/${t.id}/occurrences?${query}`);
        assert.equal(b.status, 400, query);
        assert.deepEqual(
          b.body.errors.map((e: { field: string }) => e.field),
          [field],
          query,
        );
      }
      const counted = await create('pia', {
        title: 'Counted',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: { preset: 'daily', count: 3 },
      });
      const c = await app.call('pia', 'GET', `/api/tasks/${counted.id}/occurrences?count=10`);
      assert.deepEqual(c.body.occurrences, ['2026-03-03T09:00:00.000Z', '2026-03-04T09:00:00.000Z']);
      const plain = await create('pia', { title: 'plain' });
      const p = await app.call('pia', 'GET', `/api/tasks/${plain.id}/occurrences`);
      assert.equal(p.status, 200);
      assert.deepEqual(p.body.occurrences, []);
    });

    it('previews what completing and skipping create: an overdue task skips its missed dates; after_completion restarts now', async () => {
      // The clock reads 2026-03-01T12:00Z.
      const preview = async (id: string, n = 2) =>
        (await app.call('pia', 'GET', `/api/tasks/${id}/occurrences?count=${n}`)).body;
      const overdue = await create('pia', {
        title: 'Overdue daily',
        due_date: '2026-02-25T09:00:00Z',
        recurrence: 'daily',
      });
      const shown = await preview(overdue.id);
      assert.deepEqual(shown.occurrences, ['2026-03-02T09:00:00.000Z', '2026-03-03T09:00:00.000Z']);
      assert.equal(shown.after, '2026-03-01T12:00:00.000Z');
      await complete('pia', overdue.id);
      const [, created] = await waitForSeries('pia', overdue.id, 2);
      assert.equal(created.due_date, shown.occurrences[0], 'completion creates the first date shown');

      const weekly = await create('pia', {
        title: 'Overdue weekly',
        due_date: '2026-02-10T09:00:00Z',
        recurrence: 'weekly',
      });
      const weeklyShown = await preview(weekly.id, 1);
      const skipped = await app.call('pia', 'POST', `/api/tasks/${weekly.id}/skip`);
      assert.equal(skipped.status, 200, JSON.stringify(skipped.body));
      assert.deepEqual(
        [skipped.body.due_date],
        weeklyShown.occurrences,
        'skip moves to the first date shown',
      );

      const later = await create('pia', {
        title: 'Every 3 days after done',
        due_date: '2026-03-20T09:00:00Z',
        recurrence: { preset: 'daily', interval: 3, mode: 'after_completion' },
      });
      const laterShown = await preview(later.id, 3);
      assert.deepEqual(laterShown.occurrences, [
        '2026-03-04T09:00:00.000Z',
        '2026-03-07T09:00:00.000Z',
        '2026-03-10T09:00:00.000Z',
      ]);
      await complete('pia', later.id);
      const next = (await waitForSeries('pia', later.id, 2)).find((t) => t.status === 'pending');
      assert.equal(next.due_date, laterShown.occurrences[0], 'before the due date it was completed ahead of');
    });

    it('previews a rule and due date the task does not have yet (the editor), changing nothing', async () => {
      const t = await create('pia', { title: 'Not yet repeating', due_date: '2026-03-02T09:00:00Z' });
      const preview = (q: string) => app.call('pia', 'GET', `/api/tasks/${t.id}/occurrences?${q}`);
      const weekly = await preview('recurrence=weekly&count=3');
      assert.equal(weekly.status, 200, JSON.stringify(weekly.body));
      assert.equal(weekly.body.proposed, true);
      assert.deepEqual(weekly.body.occurrences, [
        '2026-03-09T09:00:00.000Z',
        '2026-03-16T09:00:00.000Z',
        '2026-03-23T09:00:00.000Z',
      ]);
      const moved = await preview(
        `recurrence=daily&due=${encodeURIComponent('2026-03-04T09:00:00Z')}&count=2`,
      );
      assert.deepEqual(moved.body.occurrences, ['2026-03-05T09:00:00.000Z', '2026-03-06T09:00:00.000Z']);
      const bad = await preview('recurrence=fortnightly');
      assert.equal(bad.status, 400);
      assert.match(JSON.stringify(bad.body.errors), /unknown preset/);
      assert.equal((await preview('recurrence=weekly&due=tomorrow')).body.errors[0].field, 'due');
      const undated = await create('pia', { title: 'no due date' });
      const noDue = await app.call('pia', 'GET', `/api/tasks/${undated.id}/occurrences?recurrence=daily`);
      assert.equal(noDue.status, 409, 'the request is well-formed; the task has no due date');
      assert.match(noDue.body.detail, /due date/);
      const unchanged = (await app.call('pia', 'GET', `/api/tasks/${t.id}`)).body;
      assert.deepEqual([unchanged.version, unchanged.recurrence], [1, null]);
    });

    it('skips an after_completion occurrence not yet due: it moves one interval past its due date', async () => {
      // The clock reads 2026-03-01T12:00Z. Counted from now, the next one was its own due date: the skip answered
      // 200 without moving it, and recorded a skip that counted against COUNT.
      const t = await create('ac', {
        title: 'Water cactus',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: { preset: 'daily', mode: 'after_completion', timezone: 'UTC' },
      });
      const s = await app.call('ac', 'POST', `/api/tasks/${t.id}/skip`);
      assert.equal(s.status, 200, JSON.stringify(s.body));
      assert.equal(s.body.due_date, '2026-03-03T09:00:00.000Z');
      assert.equal(s.body.version, 2);
      const row = await series(t.id);
      assert.deepEqual(
        row!.skipped.map((d) => new Date(d).toISOString()),
        ['2026-03-02T09:00:00.000Z'],
      );
      assert.equal(row!.occurrences, 2);
    });

    it('a skip is one transaction: one that fails moves nothing, and its retry skips one occurrence', async () => {
      const t = await create('atomic', {
        title: 'Gym',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: { preset: 'weekly', timezone: 'UTC' },
      });
      // The write of the series fails (a lost connection, a crash there): the task was moved all the same.
      await db.query(`CREATE FUNCTION fail_skip() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.skipped IS DISTINCT FROM OLD.skipped THEN RAISE EXCEPTION 'injected failure'; END IF;
        RETURN NEW; END $$`);
      await db.query(
        'CREATE TRIGGER fail_skip BEFORE UPDATE ON recurrence_series FOR EACH ROW EXECUTE FUNCTION fail_skip()',
      );
      let failed;
      try {
        failed = await app.call('atomic', 'POST', `/api/tasks/${t.id}/skip`);
      } finally {
        await db.query('DROP TRIGGER fail_skip ON recurrence_series');
        await db.query('DROP FUNCTION fail_skip()');
      }
      assert.equal(failed.status, 500);
      const untouched = (await app.call('atomic', 'GET', `/api/tasks/${t.id}`)).body;
      assert.deepEqual([untouched.due_date, untouched.version], ['2026-03-02T09:00:00.000Z', 1]);
      const retry = await app.call('atomic', 'POST', `/api/tasks/${t.id}/skip`, undefined, {
        'if-match': '"1"',
      });
      assert.equal(retry.status, 200, JSON.stringify(retry.body));
      assert.equal(retry.body.due_date, '2026-03-09T09:00:00.000Z');
      const row = await series(t.id);
      assert.deepEqual(
        row!.skipped.map((d) => new Date(d).toISOString()),
        ['2026-03-02T09:00:00.000Z'],
      );
      assert.equal(row!.occurrences, 2);
    });

    it('a due date moved by the user re-anchors the series on any occurrence; previews and completion agree', async () => {
      // Occurrence #1 moved from Monday 09:00 to Wednesday 10:00 went on on Wednesdays; occurrence #2 went back
      // to Mondays, while the editor's preview had shown Wednesdays.
      const a = await create('ed', {
        title: 'A',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: { preset: 'weekly', timezone: 'UTC' },
      });
      assert.equal(
        (await app.call('ed', 'PATCH', `/api/tasks/${a.id}`, { due_date: '2026-03-04T10:00:00Z' })).status,
        200,
      );
      await complete('ed', a.id);
      const [, aNext] = await waitForSeries('ed', a.id, 2);
      assert.equal(aNext.due_date, '2026-03-11T10:00:00.000Z');

      const b = await create('ed', {
        title: 'B',
        due_date: '2026-02-23T09:00:00Z',
        recurrence: { preset: 'weekly', timezone: 'UTC' },
      });
      await complete('ed', b.id);
      const [, b2] = await waitForSeries('ed', b.id, 2);
      assert.equal(b2.due_date, '2026-03-02T09:00:00.000Z');
      const newDue = '2026-03-04T10:00:00.000Z';
      const editor = await app.call(
        'ed',
        'GET',
        `/api/tasks/${b2.id}/occurrences?due=${encodeURIComponent(newDue)}&count=2`,
      );
      assert.equal(editor.status, 200, JSON.stringify(editor.body));
      assert.equal((await app.call('ed', 'PATCH', `/api/tasks/${b2.id}`, { due_date: newDue })).status, 200);
      const own = await app.call('ed', 'GET', `/api/tasks/${b2.id}/occurrences?count=2`);
      const wednesdays = ['2026-03-11T10:00:00.000Z', '2026-03-18T10:00:00.000Z'];
      assert.deepEqual(
        { editor: editor.body.occurrences, own: own.body.occurrences },
        { editor: wednesdays, own: wednesdays },
      );
      await complete('ed', b2.id);
      const b3 = (await waitForSeries('ed', b.id, 3)).find((t) => t.status === 'pending');
      assert.equal(b3.due_date, wednesdays[0], 'completion creates the first date both previews showed');
      assert.equal(new Date((await series(b.id))!.anchor).toISOString(), newDue);
      // Skipping it goes on on Wednesdays too, and its skip is no move of the user's (the anchor stays).
      const skipped = await app.call('ed', 'POST', `/api/tasks/${b3.id}/skip`);
      assert.equal(skipped.body.due_date, wednesdays[1]);
      await complete('ed', b3.id);
      const b4 = (await waitForSeries('ed', b.id, 4)).find((t) => t.status === 'pending');
      assert.equal(b4.due_date, '2026-03-25T10:00:00.000Z');
      assert.equal(new Date((await series(b.id))!.anchor).toISOString(), newDue);

      // Occurrence #1 skipped (its series made then), then moved: the move is the user's, the skip's is not.
      const c = await create('ed', {
        title: 'C',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: { preset: 'weekly', timezone: 'UTC' },
      });
      assert.equal(
        (await app.call('ed', 'POST', `/api/tasks/${c.id}/skip`)).body.due_date,
        '2026-03-09T09:00:00.000Z',
      );
      await app.call('ed', 'PATCH', `/api/tasks/${c.id}`, { due_date: '2026-03-11T10:00:00Z' });
      await complete('ed', c.id);
      const [, cNext] = await waitForSeries('ed', c.id, 2);
      assert.equal(cNext.due_date, '2026-03-18T10:00:00.000Z');
    });

    it('a moved due date does not restart COUNT (an edited rule does)', async () => {
      const root = await create('counted', {
        title: 'Three sessions',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: { preset: 'weekly', count: 3, timezone: 'UTC' },
      });
      await complete('counted', root.id);
      const [, second] = await waitForSeries('counted', root.id, 2);
      await app.call('counted', 'PATCH', `/api/tasks/${second.id}`, { due_date: '2026-03-11T10:00:00Z' });
      const preview = await app.call('counted', 'GET', `/api/tasks/${second.id}/occurrences?count=5`);
      assert.deepEqual(preview.body.occurrences, ['2026-03-18T10:00:00.000Z'], 'one left of three');
      await complete('counted', second.id);
      const third = (await waitForSeries('counted', root.id, 3)).find((t) => t.status === 'pending');
      assert.equal(third.due_date, '2026-03-18T10:00:00.000Z');
      await complete('counted', third.id);
      await settle();
      assert.equal((await seriesTasks('counted', root.id)).length, 3);
      assert.ok((await series(root.id))!.ended_at, 'ended after three');
    });

    it('refuses a rule that can never repeat, in after_completion mode and without a due date too', async () => {
      // The clock reads 2026-03-01T12:00Z. after_completion and undated rules were taken (201) and never repeated.
      const answers: Record<string, number> = {};
      for (const [name, body] of [
        [
          'until past, schedule',
          {
            due_date: '2026-03-02T09:00:00Z',
            recurrence: { preset: 'daily', until: '2026-02-01T00:00:00Z' },
          },
        ],
        [
          'until past, after_completion',
          {
            due_date: '2026-03-02T09:00:00Z',
            recurrence: { preset: 'daily', until: '2026-02-01T00:00:00Z', mode: 'after_completion' },
          },
        ],
        [
          '999999999 days, schedule',
          { due_date: '2026-03-02T09:00:00Z', recurrence: { preset: 'daily', interval: 999_999_999 } },
        ],
        [
          '999999999 days, after_completion',
          {
            due_date: '2026-03-02T09:00:00Z',
            recurrence: { preset: 'daily', interval: 999_999_999, mode: 'after_completion' },
          },
        ],
        ['until past, no due date', { recurrence: { preset: 'daily', until: '2026-02-01T00:00:00Z' } }],
      ] as const) {
        const r = await app.call('never', 'POST', '/api/tasks', { title: name, ...body });
        answers[name] = r.status;
      }
      assert.deepEqual(answers, {
        'until past, schedule': 422,
        'until past, after_completion': 422,
        '999999999 days, schedule': 422,
        '999999999 days, after_completion': 422,
        'until past, no due date': 422,
      });
      // Set by a change, the same.
      const t = await create('never', { title: 'later', due_date: '2026-03-02T09:00:00Z' });
      const patched = await app.call('never', 'PATCH', `/api/tasks/${t.id}`, {
        recurrence: { preset: 'daily', until: '2026-02-01T00:00:00Z', mode: 'after_completion' },
      });
      assert.equal(patched.status, 422);
      assert.equal(patched.body.errors[0].field, 'recurrence.until');
    });

    it('refuses an UNTIL past 9999-12-31T23:59:59Z in UTC, as read in a zone west of UTC (a 500, or a rule stored unreadable)', async () => {
      const dated = await app.call('y10k', 'POST', '/api/tasks', {
        title: 'forever',
        due_date: '2026-03-02T14:00:00Z',
        recurrence: { rrule: 'FREQ=DAILY;UNTIL=99991231', timezone: 'America/New_York' },
      });
      const undated = await app.call('y10k', 'POST', '/api/tasks', {
        title: 'forever, undated',
        recurrence: { rrule: 'FREQ=DAILY;UNTIL=99991231T235959', timezone: 'America/Los_Angeles' },
      });
      for (const r of [dated, undated]) {
        assert.equal(r.status, 400, JSON.stringify(r.body));
        assert.equal(r.body.errors[0].field, 'recurrence.rrule');
        assert.match(r.body.errors[0].message, /UNTIL .* is after 9999-12-31T23:59:59Z/);
      }
      // An until a fraction of a second before year 10000 is rounded up to the whole second (UNTIL has no
      // fraction) into 10000-01-01: it was checked before rounding, stored as UNTIL=100000101T000000Z (a 500).
      const fraction = await app.call('y10k', 'POST', '/api/tasks', {
        title: 'forever and a half second',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: { preset: 'daily', until: '9999-12-31T23:59:59.5Z' },
      });
      assert.equal(fraction.status, 400, JSON.stringify(fraction.body));
      assert.equal(fraction.body.errors[0].field, 'recurrence.until');
      assert.deepEqual((await app.call('y10k', 'GET', '/api/tasks')).body.items, []);
    });

    it("answers 404 for another user's task and 401 without a token", async () => {
      const t = await create('owner', {
        title: 'mine',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: 'daily',
      });
      assert.equal((await app.call('intruder', 'POST', `/api/tasks/${t.id}/skip`)).status, 404);
      assert.equal((await app.call('intruder', 'GET', `/api/tasks/${t.id}/occurrences`)).status, 404);
      assert.equal((await app.call('intruder', 'POST', '/api/tasks/not-a-uuid/skip')).status, 404);
      const anon = await app.call(null, 'POST', `/api/tasks/${t.id}/skip`);
      assert.equal(anon.status, 401);
      assert.equal((await app.call(null, 'GET', `/api/tasks/${t.id}/occurrences`)).status, 401);
      const still = await app.call('owner', 'GET', `/api/tasks/${t.id}`);
      assert.equal(still.body.version, 1);
      assert.equal(still.body.due_date, '2026-03-02T09:00:00.000Z');
    });
  });

  describe(`recurrence target on ${backend.name}: reopen of an after_completion series completed early`, () => {
    // Completed early, an after_completion occurrence makes a next one due BEFORE its own due date, so the due
    // order of a series is not the order of its completions: reopen goes by the completions (the ledger).
    const clock = new ManualClock('2026-03-01T12:00:00Z');
    let db: Db;
    let drop: () => Promise<void>;
    let app: TestApp;
    before(async () => {
      ({ db, drop } = await backend.fresh());
      app = await startApp(db, { targets: ['api', 'relay', 'recurrence'], clock });
    });
    after(async () => {
      await app?.stop();
      await drop?.();
    });
    const settle = () => settled(db);
    const call = (method: string, path: string, body?: unknown) => app.call('early', method, path, body);
    const tasks = async (seriesId: string) =>
      ((await call('GET', '/api/tasks?status=all&sort=due&order=asc&limit=200')).body.items as any[]).filter(
        (t) => t.series_id === seriesId,
      );

    /** #1 due Mar 10, done early on Mar 1 -> #2 due Mar 2; #2 done on Mar 2 -> #3 due Mar 3. */
    const twoCompleted = async (title: string) => {
      clock.set('2026-03-01T12:00:00Z');
      const first = (
        await call('POST', '/api/tasks', {
          title,
          due_date: '2026-03-10T09:00:00Z',
          recurrence: { preset: 'daily', mode: 'after_completion', timezone: 'UTC' },
        })
      ).body;
      assert.equal((await call('POST', `/api/tasks/${first.id}/complete`)).status, 200);
      await settle();
      const second = (await tasks(first.series_id)).find((t) => t.status === 'pending');
      assert.equal(second.due_date, '2026-03-02T09:00:00.000Z');
      clock.set('2026-03-02T10:00:00Z');
      assert.equal((await call('POST', `/api/tasks/${second.id}/complete`)).status, 200);
      await settle();
      const third = (await tasks(first.series_id)).find((t) => t.status === 'pending');
      assert.equal(third.due_date, '2026-03-03T09:00:00.000Z');
      return { first, second, third };
    };

    it('the latest completion can be reopened: the next occurrence it made is taken back', async () => {
      const { first, second, third } = await twoCompleted('latest');
      const r = await call('POST', `/api/tasks/${second.id}/reopen`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      await settle();
      assert.deepEqual(
        (await tasks(first.series_id)).map((t) => [t.id, t.status]),
        [
          [second.id, 'pending'],
          [first.id, 'completed'],
        ],
      );
      assert.equal((await call('GET', `/api/tasks/${third.id}`)).status, 404);
      // Completed again, it makes its next occurrence again.
      assert.equal((await call('POST', `/api/tasks/${second.id}/complete`)).status, 200);
      await settle();
      assert.deepEqual(
        (await tasks(first.series_id)).filter((t) => t.status === 'pending').map((t) => t.due_date),
        ['2026-03-03T09:00:00.000Z'],
      );
    });

    it('an older completion cannot be reopened (409 naming the later one), and the series keeps its pending occurrence', async () => {
      const { first, second, third } = await twoCompleted('older');
      const r = await call('POST', `/api/tasks/${first.id}/reopen`);
      assert.equal(r.status, 409, JSON.stringify(r.body));
      assert.match(
        r.body.detail,
        new RegExp(`later occurrence of this series \\(${second.id}\\) is completed`),
      );
      await settle();
      const pending = (await tasks(first.series_id)).filter((t) => t.status === 'pending');
      assert.deepEqual(
        pending.map((t) => t.id),
        [third.id],
        `the series has ${pending.length} pending occurrences`,
      );
    });
  });

  describe(`recurrence target on ${backend.name}: completions handled late`, () => {
    const clock = new ManualClock('2026-03-01T12:00:00Z');
    let db: Db;
    let drop: () => Promise<void>;
    let api: TestApp | undefined;
    let rec: TestApp | undefined;
    before(async () => {
      ({ db, drop } = await backend.fresh());
      // The recurrence consumer is behind (a restart, a lagging partition): not started until asked.
      api = await startApp(db, { targets: ['api', 'relay'], clock });
    });
    after(async () => {
      await rec?.stop();
      await api?.stop();
      await drop?.();
    });
    const call = (...args: Parameters<TestApp['call']>) => api!.call(...args);
    const settle = () => settled(db);
    const ok = async (method: string, path: string, body?: unknown) => {
      const r = await call('lag', method, path, body);
      assert.equal(r.status, method === 'POST' && path === '/api/tasks' ? 201 : 200, JSON.stringify(r.body));
      return r.body;
    };
    const seriesOf = async (id: string) =>
      ((await call('lag', 'GET', '/api/tasks?status=all&sort=due&order=asc&limit=200')).body.items as any[])
        .filter((t) => t.series_id === id)
        .map((t) => ({ status: t.status, due: t.due_date, rrule: t.recurrence?.rrule, title: t.title }));

    it('the next occurrence is made from the last completion, of the task as it is', async () => {
      // Completed, reopened, made weekly on Fridays, completed again: the first (taken back) completion made the
      // next one daily, and the later one found it there and made nothing.
      const t = await ok('POST', '/api/tasks', {
        title: 'Report',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: { preset: 'daily', timezone: 'UTC' },
      });
      await ok('POST', `/api/tasks/${t.id}/complete`);
      await ok('POST', `/api/tasks/${t.id}/reopen`);
      await ok('PATCH', `/api/tasks/${t.id}`, {
        recurrence: { rrule: 'FREQ=WEEKLY;BYDAY=FR', timezone: 'UTC' },
      });
      await ok('POST', `/api/tasks/${t.id}/complete`);
      // Completed and then edited: its completion (of an older version) makes it from the task as it is.
      const u = await ok('POST', '/api/tasks', {
        title: 'Invoice',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: { preset: 'daily', timezone: 'UTC' },
      });
      await ok('POST', `/api/tasks/${u.id}/complete`);
      await ok('PATCH', `/api/tasks/${u.id}`, { title: 'Invoice (sent)' });
      // Once only (COUNT=1), completed and then edited twice: its series ends, and nothing is made.
      const v = await ok('POST', '/api/tasks', {
        title: 'Once',
        due_date: '2026-03-02T09:00:00Z',
        recurrence: { preset: 'daily', count: 1, timezone: 'UTC' },
      });
      await ok('POST', `/api/tasks/${v.id}/complete`);
      await ok('PATCH', `/api/tasks/${v.id}`, { title: 'Once (done)' });
      await ok('PATCH', `/api/tasks/${v.id}`, { priority: 'low' });

      rec = await startApp(db, { targets: ['recurrence'], clock });
      const made = async (id: string) =>
        waitFor(
          async () => {
            const all = await seriesOf(id);
            return all.length >= 2 ? all : undefined;
          },
          15_000,
          `the next occurrence of ${id}`,
        );
      assert.deepEqual(await made(t.id), [
        {
          status: 'completed',
          due: '2026-03-02T09:00:00.000Z',
          rrule: 'FREQ=WEEKLY;BYDAY=FR',
          title: 'Report',
        },
        {
          status: 'pending',
          due: '2026-03-06T09:00:00.000Z',
          rrule: 'FREQ=WEEKLY;BYDAY=FR',
          title: 'Report',
        },
      ]);
      assert.deepEqual(await made(u.id), [
        {
          status: 'completed',
          due: '2026-03-02T09:00:00.000Z',
          rrule: 'FREQ=DAILY',
          title: 'Invoice (sent)',
        },
        { status: 'pending', due: '2026-03-03T09:00:00.000Z', rrule: 'FREQ=DAILY', title: 'Invoice (sent)' },
      ]);
      // Edited again once handled: still one next occurrence each.
      await ok('PATCH', `/api/tasks/${u.id}`, { priority: 'high' });
      await ok('PATCH', `/api/tasks/${t.id}`, { priority: 'high' });
      await settle();
      assert.equal((await seriesOf(v.id)).length, 1);
      const ended = await db.query<{ ended_by: string }>(
        'SELECT ended_by::text AS ended_by FROM recurrence_series WHERE series_id = $1 AND ended_at IS NOT NULL',
        [v.id],
      );
      assert.deepEqual(ended.rows, [{ ended_by: v.id }]);
      assert.equal((await seriesOf(t.id)).length, 2);
      assert.equal((await seriesOf(u.id)).length, 2);
    });

    it('a completion taken back (reopen) before its task was deleted makes nothing; one that stood goes on', async () => {
      // The consumer behind: it finds each task gone, and only the task.deleted after it says how it ended.
      await rec?.stop();
      rec = undefined;
      const daily = (title: string) =>
        ok('POST', '/api/tasks', {
          title,
          due_date: '2026-03-02T09:00:00Z',
          recurrence: { preset: 'daily', timezone: 'UTC' },
        });
      const del = async (id: string) =>
        assert.equal((await call('lag', 'DELETE', `/api/tasks/${id}`)).status, 204);
      const rows = async (seriesId: string) =>
        (
          await db.query<{ id: string; status: string; due: Date }>(
            'SELECT id::text AS id, status, due_date AS due FROM tasks WHERE series_id = $1 ORDER BY due_date',
            [seriesId],
          )
        ).rows.map((r) => `${r.status} ${new Date(r.due).toISOString()}`);
      // Ticked, unticked, deleted: the series is gone, and stays gone.
      const t = await daily('Water plants');
      await ok('POST', `/api/tasks/${t.id}/complete`);
      await ok('POST', `/api/tasks/${t.id}/reopen`);
      await del(t.id);
      // Ticked, then the done task deleted: the series goes on.
      const u = await daily('Stretch');
      await ok('POST', `/api/tasks/${u.id}/complete`);
      await del(u.id);
      // Ticked, unticked, ticked again, deleted: the last completion stood, the series goes on once.
      const w = await daily('Read');
      await ok('POST', `/api/tasks/${w.id}/complete`);
      await ok('POST', `/api/tasks/${w.id}/reopen`);
      await ok('POST', `/api/tasks/${w.id}/complete`);
      await del(w.id);

      rec = await startApp(db, { targets: ['recurrence'], clock });
      await settle();
      const expected = {
        [t.id]: [],
        [u.id]: ['pending 2026-03-03T09:00:00.000Z'],
        [w.id]: ['pending 2026-03-03T09:00:00.000Z'],
      };
      const state = async () =>
        Object.fromEntries(await Promise.all([t, u, w].map(async (x) => [x.id, await rows(x.id)])));
      assert.deepEqual(await state(), expected, 'a next occurrence was made of a completion taken back');

      // Delivered again, the completions and deletions change nothing.
      const again = (await writtenEvents(db)).filter(
        (e) =>
          (e.event_type === 'task.completed' || e.event_type === 'task.deleted') &&
          [t.id, u.id, w.id].includes(e.event.subject),
      );
      assert.equal(again.length, 7);
      await api!.proc.runtime.bus.publisher.publish(
        again.map((e) => ({ topic: TOPICS.taskEvents, key: 'lag', event: e.event })),
      );
      await settle();
      assert.deepEqual(await state(), expected);

      // The consumer keeping up: the next occurrence deleted, then the done task: nothing comes back.
      const x = await daily('Call mom');
      await ok('POST', `/api/tasks/${x.id}/complete`);
      await settle();
      assert.deepEqual(await rows(x.id), [
        'completed 2026-03-02T09:00:00.000Z',
        'pending 2026-03-03T09:00:00.000Z',
      ]);
      const nextId = (
        await db.query<{ id: string }>(
          "SELECT id::text AS id FROM tasks WHERE series_id = $1 AND status = 'pending'",
          [x.id],
        )
      ).rows[0]!.id;
      await del(nextId);
      await settle();
      await del(x.id);
      await settle();
      assert.deepEqual(await rows(x.id), []);
    });

    it('goes on with the series of a task deleted completed when its dead letter is replayed', async () => {
      await rec?.stop();
      rec = undefined;
      const call = (m: string, p: string, b?: unknown) => api!.call('dl', m, p, b);
      const t = (
        await call('POST', '/api/tasks', {
          title: 'Stretch',
          due_date: '2026-03-02T09:00:00Z',
          recurrence: { preset: 'daily', timezone: 'UTC' },
        })
      ).body;
      assert.equal((await call('POST', `/api/tasks/${t.id}/complete`)).status, 200);
      assert.equal((await call('DELETE', `/api/tasks/${t.id}`)).status, 204);
      // The completion's handling fails once (a fault injected where it waits for the deletion) and is
      // dead-lettered; the deletion after it is handled.
      await db.query(`CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'injected transient failure'; END $$`);
      await db.query(`CREATE TRIGGER fail_once BEFORE INSERT ON processed_events FOR EACH ROW
        WHEN (NEW.consumer = 'taskflow-recurrence/completion-of-a-deleted-task') EXECUTE FUNCTION fail_once()`);
      rec = await startApp(db, { targets: ['recurrence'], clock, env: { CONSUMER_MAX_ATTEMPTS: '1' } });
      await settled(db);
      const letters = await listDeadLetters(rec.proc.runtime.bus.admin, GROUPS.recurrence);
      assert.deepEqual(
        letters.map((l) => l.event.type),
        ['task.completed'],
      );
      // The fault gone, the operator replays the letter: the deletion was handled before it, and said the task
      // ended completed (it waited for that deletion for good, and the series ended without a word).
      await db.query('DROP TRIGGER fail_once ON processed_events');
      await replayDeadLetters(rec.proc.runtime.bus, GROUPS.recurrence);
      await settled(db);
      const pending = await db.query(
        `SELECT due_date FROM tasks WHERE series_id = $1 AND status = 'pending'`,
        [t.series_id],
      );
      assert.equal(pending.rows.length, 1, 'one next occurrence: the completion stood');
    });
  });
}
