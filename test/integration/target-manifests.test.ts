/**
 * The manifests say what the targets do (src/runtime.ts TargetManifest): every event a target writes is among
 * its `produces`, as a workload through every target shows (`taskflow up` on the embedded bus: REST writes,
 * a recurring completion, a skip, a reminder that fires and is delivered in-app); and the tables of targets
 * in the README and docs/architecture.md are the ones the manifests give.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { ManualClock } from '../../src/domain/clock.ts';
import { MANIFESTS, TARGETS, targetTable } from '../../src/services/index.ts';
import type { Db } from '../../src/store/db.ts';
import { startApp, waitFor, writtenEvents, type TestApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';

const ROOT = new URL('../../', import.meta.url);
const BEGIN = '<!-- targets: generated from the manifests (targetTable in src/services/index.ts) -->';
const END = '<!-- /targets -->';

describe('target manifests', () => {
  for (const doc of ['README.md', 'docs/architecture.md'])
    it(`${doc} shows the table of targets the manifests give`, () => {
      const text = readFileSync(new URL(doc, ROOT), 'utf8');
      const from = text.indexOf(BEGIN);
      const to = text.indexOf(END);
      assert.ok(from >= 0 && to > from, `${doc} has the markers ${BEGIN} ... ${END}`);
      const shown = text.slice(from + BEGIN.length, to).trim();
      assert.equal(shown, targetTable(), `${doc}: put this table between the markers:\n${targetTable()}\n`);
    });

  it('every event source belongs to one target, and every consumer group to one', () => {
    const sources = MANIFESTS.flatMap((m) => m.sources ?? []);
    assert.equal(new Set(sources).size, sources.length);
    const groups = MANIFESTS.flatMap((m) => (m.consumes ? [m.consumes.group] : []));
    assert.equal(new Set(groups).size, groups.length);
  });

  describe('every event a target writes is in its `produces`', () => {
    const HOUR = 3_600_000;
    const START = '2026-03-01T12:00:00.000Z';
    let db: Db;
    let drop: () => Promise<void>;
    let app: TestApp;
    const clock = new ManualClock(START);

    before(async () => {
      ({ db, drop } = await backends[0]!.fresh());
      app = await startApp(db, {
        clock,
        targets: TARGETS.map((t) => t.name),
        env: { REMINDER_TICK_MS: '20', NOTIFY_TICK_MS: '20' },
      });
    });
    after(async () => {
      await app?.stop();
      await drop?.();
    });

    it('over a workload through every target', async () => {
      const due = new Date(Date.parse(START) + 2 * HOUR).toISOString();
      const created = await app.call('ada', 'POST', '/api/tasks', {
        title: 'Water the plants',
        due_date: due,
        reminders: ['PT1H'],
        recurrence: 'daily',
      });
      assert.equal(created.status, 201);
      const id = created.body.id as string;
      assert.equal((await app.call('ada', 'PATCH', `/api/tasks/${id}`, { priority: 'high' })).status, 200);
      assert.equal((await app.call('ada', 'POST', `/api/tasks/${id}/complete`)).status, 200);
      // The recurrence target creates the next occurrence; skipping it moves it (an update by that target).
      const next = await waitFor(
        async () =>
          ((await app.call('ada', 'GET', '/api/tasks?status=pending')).body.items as { id: string }[]).find(
            (t) => t.id !== id,
          ),
        10_000,
        'the next occurrence',
      );
      assert.equal((await app.call('ada', 'POST', `/api/tasks/${next.id}/skip`)).status, 200);
      const other = (await app.call('ada', 'POST', '/api/tasks', { title: 'Call Bob' })).body.id as string;
      assert.equal((await app.call('ada', 'POST', `/api/tasks/${other}/complete`)).status, 200);
      assert.equal((await app.call('ada', 'POST', `/api/tasks/${other}/reopen`)).status, 200);
      assert.equal((await app.call('ada', 'DELETE', `/api/tasks/${other}`)).status, 204);
      // A reminder due now: it fires (reminders), and is delivered in-app (notifications).
      const soon = new Date(Date.parse(START) + HOUR + 60_000).toISOString();
      assert.equal(
        (
          await app.call('ada', 'POST', '/api/tasks', {
            title: 'Stand-up',
            due_date: soon,
            reminders: ['PT1H'],
          })
        ).status,
        201,
      );
      clock.advance(2 * 60_000);
      await waitFor(
        async () => ((await app.call('ada', 'GET', '/api/notifications')).body.items as unknown[]).length > 0,
        15_000,
        'the in-app notification',
      );

      const bySource = new Map(MANIFESTS.flatMap((m) => (m.sources ?? []).map((s) => [s, m] as const)));
      const seen = new Map<string, Set<string>>();
      for (const { event } of await writtenEvents(db)) {
        const target = bySource.get(event.source);
        assert.ok(target, `event ${event.type} from ${event.source}: no target names that source`);
        assert.ok(
          (target.produces as readonly string[]).includes(event.type),
          `${target.name} wrote ${event.type}, which its manifest does not list in produces`,
        );
        seen.set(target.name, (seen.get(target.name) ?? new Set()).add(event.type));
      }
      // The workload reached every target that writes events: the check above was not vacuous.
      for (const m of MANIFESTS.filter((t) => t.produces.length))
        assert.ok(seen.has(m.name), `no event of ${m.name} was written: ${JSON.stringify([...seen.keys()])}`);
    });
  });
});
