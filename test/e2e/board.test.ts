/**
 * The task board in a real headless Chromium (Debian's `chromium`, driven by playwright-core): two pages of
 * the same user; a task created and then completed in one appears, then shows completed, in the other
 * without a reload (REST -> outbox -> relay -> gateway -> WebSocket). Saves
 * test-results/board.png. And a reminder that fires while the board is open shows at once (reminders ->
 * notifications -> notification.created -> gateway -> the page's toast and inbox).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import WebSocket from 'ws';
import { apiTarget } from '../../src/services/api/index.ts';
import { createGatewayTarget } from '../../src/services/gateway/index.ts';
import { createNotificationsTarget } from '../../src/services/notifications/index.ts';
import { relayTarget } from '../../src/services/relay/index.ts';
import { recurrenceTarget } from '../../src/services/recurrence/index.ts';
import { createRemindersTarget } from '../../src/services/reminders/index.ts';
import type { TestApp } from '../helpers/app.ts';
import { LIVE_MS, skipWithoutChromium, taskRow, useBoard, waitUntil } from '../helpers/board.ts';
import { startFakeModel, type FakeModel } from '../helpers/openai-server.ts';

/**
 * A page in its own browser context (own storage), signed in by pasting the token, with its socket live;
 * `frames`: what its WebSocket received, parsed.
 */
async function signedInPage(
  ctx: { app: TestApp; browser: Browser },
  user: string,
  viewport = { width: 1100, height: 700 },
  timezoneId?: string,
) {
  const context = await ctx.browser.newContext({ viewport, ...(timezoneId ? { timezoneId } : {}) });
  const page = await context.newPage();
  const errors: string[] = [];
  const frames: { type: string; sequence?: number; notification?: { task_id: string } }[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('websocket', (ws) => ws.on('framereceived', (f) => frames.push(JSON.parse(String(f.payload)))));
  await page.goto(ctx.app.url + '/');
  await page.fill('#token', await ctx.app.token(user));
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#ws-status.live', { timeout: LIVE_MS });
  return { page, errors, frames };
}

describe('real-time task board in Chromium', { skip: skipWithoutChromium }, () => {
  const ctx = useBoard(() => [apiTarget, relayTarget, createGatewayTarget({ instanceId: 'board' })]);

  it('shows a task written between the list load and the socket opening (its frame went to no socket)', async () => {
    const user = 'slow-socket';
    const context = await ctx.browser.newContext({ viewport: { width: 1100, height: 700 } });
    const page = await context.newPage();
    let open: () => void = () => undefined;
    const opened = new Promise<void>((resolve) => (open = resolve));
    // The socket reaches the server only when the test says so: after the list was read and the task written.
    await page.routeWebSocket(/\/ws/, async (ws) => {
      await opened;
      const server = ws.connectToServer();
      server.onMessage((m) => ws.send(m));
      ws.onMessage((m) => server.send(m));
    });
    await page.goto(ctx.app.url + '/');
    await page.fill('#token', await ctx.app.token(user));
    await page.click('#signin-form button[type=submit]');
    await page.locator('#empty').waitFor({ timeout: LIVE_MS });
    const created = await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Slipped in' });
    assert.equal(created.status, 201);
    // The gateway has the change (a socket opened now is told its sequence) before the board's socket opens.
    await waitUntil(async () => (await helloSequence(ctx.app, user)) === 1, 'the gateway to have the change');
    open();
    await page.waitForSelector('#ws-status.live', { timeout: LIVE_MS });
    await taskRow(page, 'Slipped in').waitFor({ timeout: LIVE_MS });
    await context.close();
  });

  // The board takes a task.changed's sequence before the reload it schedules has read the list. When that read
  // failed (a 502 from the ingress while the API rolls, the network dropping just then), the list was not read
  // again, and the socket's resume (`?since=` that sequence) replays nothing: "live", and the change not shown.
  it('shows a change whose reload failed once its socket resumes, though the resume replays nothing', async () => {
    const user = 'reload-failed';
    const { page, errors, frames } = await signedInPage(ctx, user);
    await page.locator('#empty').waitFor({ timeout: LIVE_MS });
    let failing = true; // the API behind the ingress is down for a moment; the gateway is not
    let failedReads = 0;
    await page.route(/\/api\/tasks(\?|\/counts)/, (route) => {
      if (!failing) return route.continue();
      if (route.request().url().includes('/api/tasks?')) failedReads++;
      return route.fulfill({ status: 502, headers: { 'content-type': 'text/plain' }, body: 'Bad Gateway' });
    });
    assert.equal(
      (await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Written elsewhere' })).status,
      201,
    );
    await waitUntil(async () => frames.some((f) => f.type === 'task.changed'), 'the frame on the page');
    await page.locator('#board-error').waitFor({ state: 'visible', timeout: LIVE_MS });
    assert.match((await page.locator('#board-error-text').textContent())!, /failed \(502\)/);
    // Four reads failed: the next try is 4 to 8 s away (backoff 1, 2, 4, 8 s, each less up to half), so the
    // list read within 3 s is the resumed socket's. (A board that never reads a failed list again reaches the
    // resume with one.)
    await waitUntil(async () => failedReads >= 4, 'four failed reads', 12_000).catch(() => undefined);

    failing = false;
    // The blip ends with the socket reopened: it resumes from the page's sequence, so no frame brings the change.
    const hellos = frames.filter((f) => f.type === 'hello').length;
    await page.evaluate('state.ws.close()');
    await waitUntil(
      async () => frames.filter((f) => f.type === 'hello').length > hellos,
      'the socket resumed',
    );
    await taskRow(page, 'Written elsewhere').waitFor({ timeout: 3_000 });
    assert.equal(failedReads, 4);
    assert.equal(
      frames.filter((f) => f.type === 'task.changed' || f.type === 'resync').length,
      1,
      'none replayed',
    );
    assert.deepEqual(errors, []);
    await page.context().close();
  });

  it('reads a list whose reload failed again with backoff while its socket stays open, saying so once', async () => {
    const user = 'reload-retried';
    const { page, errors, frames } = await signedInPage(ctx, user);
    await page.locator('#empty').waitFor({ timeout: LIVE_MS });
    // The network drops for the change's reload and the next read of the list (the socket, already open, stays);
    // the next read is tried only once the error of the first was dismissed.
    let failedReads = 0;
    let dismiss = () => {};
    const dismissed = new Promise<void>((resolve) => (dismiss = resolve));
    await page.route(/\/api\/tasks(\?|\/counts)/, async (route) => {
      if (failedReads >= 2) return route.continue();
      if (route.request().url().includes('/api/tasks?') && ++failedReads === 2) await dismissed;
      return route.abort('internetdisconnected');
    });
    assert.equal((await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Read again' })).status, 201);
    await page.locator('#board-error').waitFor({ state: 'visible', timeout: LIVE_MS });
    assert.match((await page.locator('#board-error-text').textContent())!, /cannot reach the server/);
    await page.click('#board-error-close');
    dismiss();
    const notice = page.locator('#board-busy');
    await notice.waitFor({ state: 'visible', timeout: LIVE_MS });
    assert.match(
      (await notice.textContent())!,
      /^The server cannot be reached; the list is read again in \d+ s\.$/,
    );
    await taskRow(page, 'Read again').waitFor({ timeout: LIVE_MS });
    assert.equal(failedReads, 2);
    await notice.waitFor({ state: 'hidden', timeout: LIVE_MS });
    // The second failure did not bring back the error that was dismissed; no reconnect read it (one hello).
    assert.equal(await page.locator('#board-error').isHidden(), true, 'the dismissed error stays dismissed');
    assert.equal(frames.filter((f) => f.type === 'hello').length, 1);
    assert.equal(await page.locator('#ws-status').textContent(), 'live');
    assert.deepEqual(errors, []);
    await page.context().close();
  });

  it('reads a list whose reloads keep failing at once when the browser is back online', async () => {
    const user = 'reload-online';
    const { page, errors } = await signedInPage(ctx, user);
    await page.locator('#empty').waitFor({ timeout: LIVE_MS });
    let offline = true;
    let failedReads = 0;
    await page.route(/\/api\/tasks(\?|\/counts)/, (route) => {
      if (!offline) return route.continue();
      if (route.request().url().includes('/api/tasks?')) failedReads++;
      return route.abort('internetdisconnected');
    });
    assert.equal((await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Back online' })).status, 201);
    // Four reads failed: the next is 4 to 8 s away (backoff 1, 2, 4, 8 s, each less up to half).
    await waitUntil(async () => failedReads >= 4, 'four failed reads', 15_000);
    offline = false;
    await page.evaluate("window.dispatchEvent(new Event('online'))");
    await taskRow(page, 'Back online').waitFor({ timeout: 3_000 });
    assert.equal(failedReads, 4);
    assert.deepEqual(errors, []);
    await page.context().close();
  });

  it('shows a task created and completed in one page in the other, without reload', async () => {
    const { page: a, errors: aErrors } = await signedInPage(ctx, 'board-user');
    const { page: b, errors: bErrors } = await signedInPage(ctx, 'board-user');
    assert.equal(await b.locator('#whoami').textContent(), 'board-user');
    await b.evaluate(() => ((globalThis as unknown as { __marker: number }).__marker = 42)); // survives only without reload

    await a.fill('#new-title', 'Buy oat milk');
    await a.selectOption('#new-priority', 'high');
    await a.fill('#new-tags', 'home, errands');
    await a.click('#create-form button[type=submit]');
    await taskRow(a, 'Buy oat milk').waitFor({ timeout: LIVE_MS });
    await taskRow(b, 'Buy oat milk').waitFor({ timeout: LIVE_MS });
    assert.equal(await taskRow(b, 'Buy oat milk').locator('.badge').textContent(), 'high');

    await taskRow(a, 'Buy oat milk').locator('input.toggle').check();
    await taskRow(b, 'Buy oat milk', '.completed').waitFor({ timeout: LIVE_MS });

    // An edit and a second task from the other direction.
    await b.fill('#new-title', 'Call the plumber');
    await b.click('#create-form button[type=submit]');
    await taskRow(a, 'Call the plumber').waitFor({ timeout: LIVE_MS });

    // Filters: pending only hides the completed task.
    await b.selectOption('#f-status', 'pending');
    await taskRow(b, 'Buy oat milk').waitFor({ state: 'detached', timeout: LIVE_MS });
    assert.equal(await taskRow(b, 'Call the plumber').count(), 1);
    await b.selectOption('#f-status', 'all');
    await taskRow(b, 'Buy oat milk').waitFor({ timeout: LIVE_MS });

    assert.equal(await b.evaluate(() => (globalThis as unknown as { __marker?: number }).__marker), 42);
    // No notifications service in this process: the panel stays hidden and nothing breaks.
    assert.equal(await b.locator('#notifications').isHidden(), true);
    assert.deepEqual([...aErrors, ...bErrors], []);
    mkdirSync('test-results', { recursive: true });
    await b.screenshot({ path: 'test-results/board.png', fullPage: true });
  });

  it('never shows the next user answers that were on their way to the one who signed out', async () => {
    assert.equal(
      (await ctx.app.call('leaver', 'POST', '/api/tasks', { title: "The leaver's secret" })).status,
      201,
    );
    const { page, errors } = await signedInPage(ctx, 'leaver');
    await taskRow(page, "The leaver's secret").waitFor({ timeout: LIVE_MS });
    // From now on the leaver's answers are late: the sign-out and the next sign-in come before them.
    const leaverToken = await ctx.app.token('leaver');
    await page.route('**/api/**', async (route) => {
      if (route.request().headers().authorization === `Bearer ${leaverToken}`)
        await new Promise((r) => setTimeout(r, 1_500));
      await route.continue().catch(() => undefined);
    });
    await page.click('#views button[data-view="all"]'); // a list request of the leaver's, answered late
    await page.click('#signout');
    await page.fill('#token', await ctx.app.token('next-user'));
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('#ws-status.live', { timeout: LIVE_MS });
    await new Promise((r) => setTimeout(r, 2_500)); // the late answers have arrived
    assert.equal(await page.locator('#whoami').textContent(), 'next-user');
    assert.deepEqual(await page.locator('#tasks li.task .title').allTextContents(), []);
    assert.equal(await page.locator('#views [data-count="total"]').textContent(), '0');
    assert.deepEqual(errors, []);
  });
});

describe('the reminder plan of a new task on the board in Chromium', { skip: skipWithoutChromium }, () => {
  const ctx = useBoard(() => [apiTarget, relayTarget, createGatewayTarget({ instanceId: 'board-plan' })]);

  it('says which default reminders are already past and that one at the due time replaces them', async () => {
    const { page, errors } = await signedInPage(ctx, 'plan-user');
    // Due in 40 minutes, in the browser's local time (datetime-local): a day and an hour before are past.
    const due = new Date(Date.now() + 40 * 60_000);
    const local = new Date(due.getTime() - due.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
    await page.fill('#new-title', 'Call back');
    await page.fill('#new-due', local);
    await page.click('#create-form button[type=submit]');
    const notice = page.locator('#board-notice');
    await notice.waitFor({ state: 'visible', timeout: LIVE_MS });
    assert.equal(
      await notice.textContent(),
      'Reminder not set, already past: 1 day before; 1 hour before. You will be reminded at the due time instead.',
    );
    // A task whose reminders are all ahead clears it.
    await page.fill('#new-title', 'Plan the trip');
    await page.fill('#new-due', new Date(Date.now() + 3 * 86_400_000).toISOString().slice(0, 16));
    await page.click('#create-form button[type=submit]');
    await notice.waitFor({ state: 'hidden', timeout: LIVE_MS });
    assert.deepEqual(errors, []);
  });
});

describe('in-app notifications on the board in Chromium', { skip: skipWithoutChromium }, () => {
  const ctx = useBoard(() => [
    apiTarget,
    relayTarget,
    createGatewayTarget({ instanceId: 'board-notify' }),
    createRemindersTarget({ tickMs: 100 }),
    createNotificationsTarget({ tickMs: 100 }),
  ]);

  it('shows a reminder that fires while the page is open at once (pushed, not polled)', async () => {
    const { page, errors, frames } = await signedInPage(ctx, 'notified-user');
    await page.waitForSelector('#notifications:not([hidden])', { timeout: LIVE_MS });

    // Due in an hour and three seconds with a one-hour reminder: it fires about three seconds from now.
    const due = new Date(Date.now() + 3_600_000 + 3_000).toISOString();
    // A long word in the title (a URL, say) wraps in the toast and the inbox instead of widening the page.
    const url = `https://example.com/${'garden/'.repeat(40)}plants?utm_source=newsletter`;
    const created = await ctx.app.call('notified-user', 'POST', '/api/tasks', {
      title: `Water the plants ${url}`,
      due_date: due,
      reminders: ['PT1H'],
    });
    assert.equal(created.status, 201);
    // Well within the board's 30 s fallback poll; and the page's socket received the gateway's frame for it
    // (the page loads the inbox on that frame): pushed, whatever the poll did.
    const toast = page.locator('#toasts .toast', { hasText: 'Reminder: Water the plants' });
    await toast.waitFor({ timeout: 15_000 });
    assert.ok(
      frames.some((f) => f.type === 'notification' && f.notification?.task_id === created.body.id),
      `the notification frame on the page's socket: ${JSON.stringify(frames.map((f) => f.type))}`,
    );
    const item = page.locator('#notif-list li', { hasText: 'Reminder: Water the plants' });
    assert.equal(await item.count(), 1);
    assert.ok(
      await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth'),
      'no sideways scroll with the long word shown',
    );

    // Acting on it: mark read, snooze the reminder 10 minutes, dismiss it; each through the API it names.
    const reminder = async () =>
      (await ctx.app.call('notified-user', 'GET', `/api/tasks/${created.body.id}/reminders`)).body
        .items[0] as {
        status: string;
        remind_at: string;
      };
    await item.locator('button.mark-read').click();
    await page
      .locator('#notif-list li.read', { hasText: 'Reminder: Water the plants' })
      .waitFor({ timeout: LIVE_MS });
    assert.equal(
      await item.locator('button.mark-read').count(),
      0,
      'a read notification offers no mark read',
    );
    const snoozedAt = Date.now();
    await item.locator('button.snooze').click();
    await page.locator('#toasts .toast', { hasText: 'Snoozed' }).waitFor({ timeout: LIVE_MS });
    const snoozed = await reminder();
    assert.equal(snoozed.status, 'scheduled');
    assert.ok(
      Math.abs(Date.parse(snoozed.remind_at) - (snoozedAt + 10 * 60_000)) < 30_000,
      snoozed.remind_at,
    );
    await item.locator('button.dismiss').click();
    await waitUntil(async () => (await reminder()).status === 'dismissed', 'the reminder dismissed');
    assert.deepEqual(errors, []);
  });
});

/** Polls `check` until it holds (browser-driven changes land through the API a moment later). */
/** The sequence a new socket of `user` is told in its hello: the latest change the gateway has of theirs. */
async function helloSequence(app: TestApp, user: string): Promise<number | null> {
  const ws = new WebSocket(`${app.url.replace(/^http/, 'ws')}/ws`, [
    'taskflow.v1',
    `bearer.${await app.token(user)}`,
  ]);
  try {
    return await new Promise<number | null>((resolve, reject) => {
      ws.on('error', reject);
      ws.on('message', (data) => {
        const frame = JSON.parse(String(data)) as { type: string; sequence: number | null };
        if (frame.type === 'hello') resolve(frame.sequence);
      });
    });
  } finally {
    ws.close();
  }
}

describe(
  'the board at phone (390 px) and desktop (1280 px) widths in Chromium',
  { skip: skipWithoutChromium },
  () => {
    const ctx = useBoard(() => [
      apiTarget,
      relayTarget,
      createGatewayTarget({ instanceId: 'board-views' }),
      recurrenceTarget,
    ]);
    const HOUR = 3_600_000;
    /** Strictly between now and the end of today (UTC, the users' zone here): due today, not overdue. */
    const laterToday = () => {
      const now = Date.now();
      const midnight = Date.UTC(
        new Date(now).getUTCFullYear(),
        new Date(now).getUTCMonth(),
        new Date(now).getUTCDate() + 1,
      );
      return new Date(now + (midnight - now) / 2).toISOString();
    };

    for (const width of [390, 1280]) {
      it(`at ${width} px: Today / Upcoming / Overdue / All with counts, words wrapped, no sideways scrolling`, async () => {
        const user = `views-${width}`;
        const long = 'Renew the passport before the summer holidays start';
        for (const body of [
          { title: long, due_date: laterToday(), description: 'photos, old passport, the form' },
          { title: 'Plan the trip', due_date: new Date(Date.now() + 3 * 24 * HOUR).toISOString() },
          {
            title: 'Pay the electricity bill',
            due_date: new Date(Date.now() - 30 * HOUR).toISOString(),
            priority: 'urgent',
          },
          { title: 'Someday: learn the cello', tags: ['music'] },
        ])
          assert.equal((await ctx.app.call(user, 'POST', '/api/tasks', body)).status, 201);
        const { page, errors } = await signedInPage(ctx, user, { width, height: 844 });
        await taskRow(page, long).waitFor({ timeout: LIVE_MS });
        const count = (view: string) => page.locator(`#views [data-count="${view}"]`).textContent();
        assert.deepEqual(
          [await count('today'), await count('upcoming'), await count('overdue'), await count('total')],
          ['1', '1', '1', '4'],
        );
        mkdirSync('test-results', { recursive: true });
        const views: [string, string[]][] = [
          ['today', [long]],
          ['upcoming', ['Plan the trip']],
          ['overdue', ['Pay the electricity bill']],
          ['all', [long, 'Plan the trip', 'Pay the electricity bill', 'Someday: learn the cello']],
        ];
        for (const [view, titles] of views) {
          await page.click(`#views button[data-view="${view}"]`);
          const shown = async () => (await page.locator('#tasks li.task .title').allTextContents()).sort();
          await waitUntil(
            async () => JSON.stringify(await shown()) === JSON.stringify([...titles].sort()),
            view,
          );
          assert.equal(
            await page.locator(`#views button[data-view="${view}"]`).getAttribute('aria-pressed'),
            'true',
          );
          await page.screenshot({ path: `test-results/board-${width}-${view}.png`, fullPage: true });
        }
        // Nothing wider than the screen, and a long title gets most of its width (words wrap, not letters).
        assert.ok(
          await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth'),
          'no sideways scroll',
        );
        const text = await taskRow(page, long).locator('.main').boundingBox();
        assert.ok(text && text.width > width * 0.5, `the task's text ${JSON.stringify(text)} at ${width} px`);
        const title = (await taskRow(page, long).locator('.title').boundingBox())!;
        const lineHeight = await taskRow(page, long)
          .locator('.title')
          .evaluate((e) => parseFloat((globalThis as any).getComputedStyle(e).lineHeight) || 20);
        assert.ok(title.height < lineHeight * 4, `the title wraps by words: ${title.height} px high`);
        // The view is remembered across a reload.
        await page.click('#views button[data-view="overdue"]');
        await page.reload();
        await page.waitForSelector('#views button[data-view="overdue"][aria-pressed="true"]', {
          timeout: LIVE_MS,
        });
        assert.deepEqual(errors, []);
      });
    }

    it('edits every field, previews the next dates, and keeps an error until it is dismissed', async () => {
      const user = 'editor';
      const created = await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Water the plants' });
      const { page, errors } = await signedInPage(ctx, user, { width: 390, height: 844 });
      await taskRow(page, 'Water the plants').locator('button.edit').click();
      const form = page.locator('form.edit-form');
      await form.locator('.edit-description').fill('the ferns need less');
      await form.locator('.edit-priority').selectOption('high');
      await form.locator('.edit-tags').fill('home, garden');
      await form.locator('.edit-due').fill('2030-05-06T09:00');
      await form.locator('.edit-reminders').fill('PT30M');
      await form.locator('.edit-recurrence').selectOption('weekly');
      // Before saving: the next dates of the chosen rule from the chosen due date, a week apart.
      const preview = form.locator('.edit-preview');
      await preview.filter({ hasText: 'Next:' }).waitFor({ timeout: LIVE_MS });
      const firstNext = await page.evaluate(() =>
        new Date('2030-05-13T09:00').toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' }),
      );
      assert.equal((await preview.textContent())!.split(' · ')[0], `Next: ${firstNext}`);
      await page.screenshot({ path: 'test-results/board-390-edit-form.png', fullPage: true });
      await form.locator('button[type=submit]').click();
      await waitUntil(
        async () => (await ctx.app.call(user, 'GET', `/api/tasks/${created.body.id}`)).body.version === 2,
        'the change saved',
      );
      const task = (await ctx.app.call(user, 'GET', `/api/tasks/${created.body.id}`)).body;
      const localDue = await page.evaluate(() => new Date('2030-05-06T09:00').toISOString());
      assert.deepEqual(
        [task.description, task.priority, task.tags, task.due_date, task.reminders, task.recurrence.preset],
        ['the ferns need less', 'high', ['home', 'garden'], localDue, ['PT30M'], 'weekly'],
      );
      // Open again: the next dates of the saved rule.
      await taskRow(page, 'Water the plants').locator('button.edit').click();
      const saved = page.locator('form.edit-form .edit-preview');
      await saved.filter({ hasText: 'Next:' }).waitFor({ timeout: LIVE_MS });
      assert.equal((await saved.textContent())!.split(' · ').length, 5);
      assert.equal((await saved.textContent())!.split(' · ')[0], `Next: ${firstNext}`);
      await page.keyboard.press('Escape');
      await page.locator('form.edit-form').waitFor({ state: 'detached', timeout: LIVE_MS });

      // A blank title is refused by the API; the error stays through a live reload until dismissed.
      await page.fill('#new-title', '   ');
      await page.click('#create-form button[type=submit]');
      const error = page.locator('#board-error');
      await error.waitFor({ state: 'visible', timeout: LIVE_MS });
      assert.match((await error.textContent())!, /title/);
      await ctx.app.call(user, 'POST', '/api/tasks', { title: 'A change from elsewhere' });
      await taskRow(page, 'A change from elsewhere').waitFor({ timeout: LIVE_MS });
      assert.equal(await error.isVisible(), true, 'still shown after the reload');
      await page.click('#board-error-close');
      await error.waitFor({ state: 'hidden', timeout: LIVE_MS });
      await page.screenshot({ path: 'test-results/board-390-edit.png', fullPage: true });
      assert.deepEqual(errors, []);
    });

    it('keeps the edit form and what was typed when a save is refused, or lost a race with another tab (412)', async () => {
      const user = 'careful-editor';
      const created = await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Write the report' });
      const { page, errors } = await signedInPage(ctx, user, { width: 1280, height: 900 });
      await taskRow(page, 'Write the report').locator('button.edit').click();
      const form = page.locator('form.edit-form');
      await form.locator('.edit-description').fill('the long notes I typed');
      await form.locator('.edit-reminders').fill('one hour before'); // words: REST takes ISO 8601 only
      await form.locator('button[type=submit]').click();
      await form.locator('.edit-error').filter({ hasText: 'reminders' }).waitFor({ timeout: LIVE_MS });
      assert.equal(await form.locator('.edit-description').inputValue(), 'the long notes I typed');
      // The rest of the list keeps following live updates around the open form, which keeps its text and focus.
      await form.locator('.edit-description').focus();
      await ctx.app.call(user, 'POST', '/api/tasks', { title: 'd arrived while editing' });
      await taskRow(page, 'd arrived while editing').waitFor({ timeout: LIVE_MS });
      assert.equal(await form.locator('.edit-description').inputValue(), 'the long notes I typed');
      assert.equal(await page.evaluate('document.activeElement?.className'), 'edit-description');
      assert.match(
        (await form.locator('.edit-error').textContent()) ?? '',
        /reminders/,
        'the refusal still shown',
      );
      // Another tab saves meanwhile: this save does not overwrite it, and says so.
      await form.locator('.edit-reminders').fill('PT1H');
      assert.equal(
        (
          await ctx.app.call(user, 'PATCH', `/api/tasks/${created.body.id}`, {
            description: 'from elsewhere',
          })
        ).status,
        200,
      );
      await form.locator('button[type=submit]').click();
      await form
        .locator('.edit-error')
        .filter({ hasText: 'changed elsewhere' })
        .waitFor({ timeout: LIVE_MS });
      assert.equal(await form.locator('.edit-description').inputValue(), 'the long notes I typed');
      const stored = (await ctx.app.call(user, 'GET', `/api/tasks/${created.body.id}`)).body;
      assert.equal(stored.description, 'from elsewhere', 'the other save stands');
      await page.keyboard.press('Escape');
      // Sorted by title, A to Z.
      for (const title of ['b second', 'a first', 'c third'])
        await ctx.app.call(user, 'POST', '/api/tasks', { title });
      await page.selectOption('#f-sort', 'title');
      await waitUntil(
        async () =>
          JSON.stringify(await page.locator('#tasks li.task .title').allTextContents()) ===
          JSON.stringify(['a first', 'b second', 'c third', 'd arrived while editing', 'Write the report']),
        'sorted by title A to Z',
      );
      assert.deepEqual(errors, []);
    });

    it('shows more than 200 tasks with "Show more", and a live update keeps them shown', async () => {
      const user = 'hoarder';
      for (let i = 0; i < 205; i++)
        assert.equal(
          (await ctx.app.call(user, 'POST', '/api/tasks', { title: `Item ${String(i).padStart(3, '0')}` }))
            .status,
          201,
        );
      const { page, errors } = await signedInPage(ctx, user);
      const rows = () => page.locator('#tasks li.task').count();
      await waitUntil(async () => (await rows()) === 200, 'the first page');
      await page.click('#more');
      await waitUntil(async () => (await rows()) === 205, 'the second page');
      assert.equal(await page.locator('#more').isVisible(), false, 'nothing more to show');
      await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Item 205' });
      await taskRow(page, 'Item 205').waitFor({ timeout: LIVE_MS });
      await waitUntil(async () => (await rows()) === 206, 'all 206 after the live update');
      assert.deepEqual(errors, []);
    });

    it("offers the browser's time zone when the settings have another, and Today follows it once taken", async () => {
      const user = 'traveller';
      // 06:00 tomorrow in Los Angeles: tomorrow there, though possibly still today in UTC.
      const now = new Date();
      const la = new Intl.DateTimeFormat('en-CA', { timeZone: 'America/Los_Angeles' }).format(now); // YYYY-MM-DD
      const tomorrow6 = new Date(`${la}T06:00:00-08:00`);
      tomorrow6.setUTCDate(tomorrow6.getUTCDate() + 1);
      await ctx.app.call(user, 'POST', '/api/tasks', {
        title: 'Early call',
        due_date: tomorrow6.toISOString(),
      });
      const { page, errors } = await signedInPage(
        ctx,
        user,
        { width: 1100, height: 700 },
        'America/Los_Angeles',
      );
      const offer = page.locator('#zone-offer');
      await offer.waitFor({ state: 'visible', timeout: LIVE_MS });
      assert.match((await offer.textContent())!, /read in UTC, and this browser is in America\/Los_Angeles/);
      await page.click('#zone-use');
      await offer.waitFor({ state: 'hidden', timeout: LIVE_MS });
      assert.equal(
        (await ctx.app.call(user, 'GET', '/api/me/settings')).body.timezone,
        'America/Los_Angeles',
      );
      await page.click('#views button[data-view="today"]');
      await waitUntil(
        async () => (await page.locator('#tasks li.task').count()) === 0,
        'not due today there',
      );
      await page.click('#views button[data-view="upcoming"]');
      await taskRow(page, 'Early call').waitFor({ timeout: LIVE_MS });
      assert.deepEqual(errors, []);
    });

    it('saves only what was changed: a multi-line title and a CRLF description stay as they are', async () => {
      const user = 'multi-line';
      const title = 'Groceries:\nmilk\neggs';
      const created = await ctx.app.call(user, 'POST', '/api/tasks', {
        title,
        description: 'first line\r\nsecond line',
      });
      assert.equal(created.status, 201);
      const { page, errors } = await signedInPage(ctx, user, { width: 1280, height: 844 });
      const row = page.locator('#tasks li.task').first();
      await row.waitFor({ timeout: LIVE_MS });
      await row.locator('button.edit').click();
      const form = page.locator('form.edit-form');
      await form.locator('.edit-priority').selectOption('high');
      await form.locator('button[type=submit]').click();
      await waitUntil(
        async () =>
          (await ctx.app.call(user, 'GET', `/api/tasks/${created.body.id}`)).body.priority === 'high',
        'the priority saved',
      );
      const task = (await ctx.app.call(user, 'GET', `/api/tasks/${created.body.id}`)).body;
      assert.equal(task.title, title);
      assert.equal(task.description, 'first line\r\nsecond line');
      assert.deepEqual(errors, []);
    });

    it('undoes a delete, and works from the keyboard: n, Enter, j/k, x, /', async () => {
      const user = 'keys';
      const { page, errors } = await signedInPage(ctx, user, { width: 1280, height: 800 });
      await page.keyboard.press('n');
      assert.equal(await page.evaluate('document.activeElement?.id'), 'new-title');
      await page.keyboard.type('Feed the cat');
      await page.keyboard.press('Enter');
      await taskRow(page, 'Feed the cat').waitFor({ timeout: LIVE_MS });
      await page.keyboard.press('Escape');
      await page.keyboard.press('j');
      await page
        .locator('#tasks li.task.selected', { hasText: 'Feed the cat' })
        .waitFor({ timeout: LIVE_MS });
      await page.keyboard.press('x');
      await page
        .locator('#tasks li.task.completed', { hasText: 'Feed the cat' })
        .waitFor({ timeout: LIVE_MS });
      await page.keyboard.press('/');
      assert.equal(await page.evaluate('document.activeElement?.id'), 'f-search');
      await page.keyboard.press('Escape');

      await ctx.app.call(user, 'POST', '/api/tasks', {
        title: 'Return the books',
        description: 'two of them',
        tags: ['library'],
      });
      await taskRow(page, 'Return the books').locator('button.delete').click();
      await taskRow(page, 'Return the books').waitFor({ state: 'detached', timeout: LIVE_MS });
      await page
        .locator('#toasts .toast', { hasText: 'Deleted' })
        .locator('button', { hasText: 'Undo' })
        .click();
      await taskRow(page, 'Return the books').waitFor({ timeout: LIVE_MS });
      const back = (await ctx.app.call(user, 'GET', '/api/tasks?q=books')).body.items;
      assert.deepEqual(
        back.map((t: { title: string; description: string; tags: string[] }) => [
          t.title,
          t.description,
          t.tags,
        ]),
        [['Return the books', 'two of them', ['library']]],
      );
      await page.screenshot({ path: 'test-results/board-1280-keys.png', fullPage: true });
      assert.deepEqual(errors, []);
    });
  },
);

describe('the assistant on the board in Chromium', { skip: skipWithoutChromium }, () => {
  let model: FakeModel;
  before(async () => {
    model = await startFakeModel();
  });
  after(() => model?.close());
  const ctx = useBoard(
    () => [apiTarget, relayTarget, createGatewayTarget({ instanceId: 'board-chat' })],
    () => ({ CHAT_BASE_URL: model.url, CHAT_MODEL: 'fake-model' }),
  );

  it('streams the reply and the tool calls, and the task it created appears in the list live', async () => {
    const { page, errors } = await signedInPage(ctx, 'chat-user');
    await page.waitForSelector('#chat:not([hidden])');
    model.script(
      { toolCalls: [{ name: 'add_task', arguments: { title: 'Call mom', due_date: 'in 30 minutes' } }] },
      { text: 'Added "Call mom", due in 30 minutes.' },
    );
    await page.fill('#chat-input', 'remind me to call mom in 30 minutes');
    await page.click('#chat-form button[type=submit]');
    await page
      .locator('#chat-log .chat-assistant', { hasText: 'Added "Call mom", due in 30 minutes.' })
      .waitFor({ timeout: LIVE_MS });
    assert.equal(await page.locator('#chat-log .chat-tool').textContent(), 'add task: Call mom');
    await page.locator('#tasks li.task .title', { hasText: 'Call mom' }).waitFor({ timeout: LIVE_MS });

    // The next message continues the conversation; a failing model shows its problem and keeps the page.
    model.script({ status: 500 });
    await page.fill('#chat-input', 'and buy milk');
    await page.click('#chat-form button[type=submit]');
    await page
      .locator('#chat-error', { hasText: 'the language model answered 500' })
      .waitFor({ timeout: LIVE_MS });
    assert.equal(model.requests.at(-1).messages.filter((m: { role: string }) => m.role === 'user').length, 2);
    assert.deepEqual(errors, []);
    mkdirSync('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/board-chat.png', fullPage: true });
    // A reload continues the conversation: its words are shown again, and the next message goes on with it.
    await page.reload();
    await page
      .locator('#chat-log .chat-assistant', { hasText: 'Added "Call mom", due in 30 minutes.' })
      .waitFor({ timeout: LIVE_MS });
    assert.equal(
      await page.locator('#chat-log .chat-user').first().textContent(),
      'remind me to call mom in 30 minutes',
    );
    model.script({ text: 'Done.' });
    await page.fill('#chat-input', 'thanks');
    await page.click('#chat-form button[type=submit]');
    await page.locator('#chat-log .chat-assistant', { hasText: 'Done.' }).waitFor({ timeout: LIVE_MS });
    assert.ok(
      model.requests
        .at(-1)
        .messages.some((m: { content?: string }) => m.content === 'remind me to call mom in 30 minutes'),
      'the reloaded page continued the conversation',
    );
    assert.deepEqual(errors, []);
  });

  it('sends a message whose answer was lost again with its Idempotency-Key: answered, its task added once', async () => {
    const { page, errors } = await signedInPage(ctx, 'chat-retry');
    await page.waitForSelector('#chat:not([hidden])');
    model.script(
      { toolCalls: [{ name: 'add_task', arguments: { title: 'Water the plants' } }] },
      { text: 'Added "Water the plants".' },
    );
    // The server answers the first send in full; the browser loses it (the connection reset on the way back).
    await page.route(
      '**/api/chat',
      async (route) => {
        await route.fetch();
        await route.abort('connectionreset');
      },
      { times: 1 },
    );
    await page.fill('#chat-input', 'add water the plants');
    await page.click('#chat-form button[type=submit]');
    await page.locator('#chat-error', { hasText: 'cannot be reached' }).waitFor({ timeout: LIVE_MS });
    assert.equal(
      await page.inputValue('#chat-input'),
      'add water the plants',
      'the message is back in the box',
    );
    const asked = model.requests.length;
    await page.click('#chat-form button[type=submit]');
    await page
      .locator('#chat-log .chat-assistant', { hasText: 'Added "Water the plants".' })
      .waitFor({ timeout: LIVE_MS });
    assert.equal(model.requests.length, asked, 'the model was not asked again');
    const tasks = (await ctx.app.call('chat-retry', 'GET', '/api/tasks?q=plants')).body.items;
    assert.equal(tasks.length, 1, JSON.stringify(tasks));
    assert.deepEqual(errors, []);
  });

  it('keeps a message answered whose stream then broke: not back in the box, its key let go', async () => {
    const { page, errors } = await signedInPage(ctx, 'chat-cut-after-done');
    await page.waitForSelector('#chat:not([hidden])');
    model.script(
      { toolCalls: [{ name: 'add_task', arguments: { title: 'Feed the cat' } }] },
      { text: 'Added "Feed the cat".' },
    );
    // The whole answer comes, `done` with it; the connection then fails before the stream's end (the network
    // error a browser reads when a response is cut).
    await page.evaluate(() => {
      const page = globalThis as unknown as { fetch: typeof fetch };
      const real = page.fetch;
      page.fetch = async (...args: Parameters<typeof fetch>) => {
        const res = await real(...args);
        if (!String(args[0]).endsWith('/api/chat')) return res;
        page.fetch = real;
        const reader = res.body!.getReader();
        const body = new ReadableStream<Uint8Array>({
          async pull(c) {
            const { value, done } = await reader.read();
            if (!done) return c.enqueue(value);
            await new Promise((r) => setTimeout(r, 300));
            c.error(new TypeError('network error'));
          },
        });
        return new Response(body, { status: res.status, headers: res.headers });
      };
    });
    await page.fill('#chat-input', 'add feed the cat');
    await page.click('#chat-form button[type=submit]');
    await page
      .locator('#chat-log .chat-assistant', { hasText: 'Added "Feed the cat".' })
      .waitFor({ timeout: LIVE_MS });
    await page.waitForSelector('#chat-form button[type=submit]:not([disabled])', { timeout: LIVE_MS });
    // Answered: sent again it would be a new message (now with the conversation's id: another key), its task
    // added twice.
    assert.equal(await page.inputValue('#chat-input'), '', 'an answered message is not put back in the box');
    assert.equal(await page.evaluate('document.querySelector("#chat-error").textContent'), '');
    const tasks = (await ctx.app.call('chat-cut-after-done', 'GET', '/api/tasks?q=cat')).body.items;
    assert.equal(tasks.length, 1, JSON.stringify(tasks));
    assert.deepEqual(errors, []);
  });

  it('draws the markdown of a reply (lists, bold, code) as it streams and after a reload, never its HTML', async () => {
    const { page, errors } = await signedInPage(ctx, 'chat-md');
    await page.waitForSelector('#chat:not([hidden])');
    const reply =
      'This week:\n\n- **Pay rent** on `Friday`\n- Call <b>mom</b> *soon*\n\n1. first\n2. second\n\n3. third\nsnake_case_name stays';
    model.script({ text: reply });
    await page.fill('#chat-input', 'what is due this week?');
    await page.click('#chat-form button[type=submit]');
    const answer = page.locator('#chat-log .chat-assistant').last();
    for (const pass of ['streamed', 'reloaded']) {
      await answer.locator('ol li').nth(2).waitFor({ timeout: LIVE_MS });
      const drawn = await answer.evaluate((li) => ({
        bullets: [...li.querySelectorAll('ul > li')].map((x) => x.textContent),
        strong: li.querySelector('ul strong')?.textContent,
        code: li.querySelector('ul code')?.textContent,
        em: li.querySelector('ul em')?.textContent,
        numbered: [...li.querySelectorAll('ol > li')].map((x) => x.textContent),
        starts: [...li.querySelectorAll('ol')].map((x) => Number(x.getAttribute('start') ?? 1)),
        html: li.querySelector('b') !== null,
        last: li.querySelector('p:last-child')?.textContent,
      }));
      assert.deepEqual(
        drawn,
        {
          bullets: ['Pay rent on Friday', 'Call <b>mom</b> soon'],
          strong: 'Pay rent',
          code: 'Friday',
          em: 'soon',
          numbered: ['first', 'second', 'third'],
          starts: [1, 3],
          html: false,
          last: 'snake_case_name stays',
        },
        pass,
      );
      if (pass === 'streamed') await page.reload();
    }
    assert.deepEqual(errors, []);
  });

  it('shows the last page of a long conversation after a reload, and the earlier messages on asking', async () => {
    // 60 turns, every tenth with a tool call: 132 messages, over a page (100). Before, all were loaded at once.
    const user = 'chat-long';
    let id: string | undefined;
    for (let n = 0; n < 60; n++) {
      model.script(...(n % 10 === 5 ? [{ toolCalls: [{ name: 'list_tasks', arguments: {} }] }] : []), {
        text: n === 0 ? 'First <img src=x onerror="window.hacked=1"> reply' : `Reply ${n}`,
      });
      const r = await ctx.app.call(user, 'POST', '/api/chat', {
        message: n === 0 ? 'first <b>note</b>' : `note ${n}`,
        ...(id ? { conversation_id: id } : {}),
      });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      id = r.body.conversation_id;
    }
    const { page, errors } = await signedInPage(ctx, user);
    await page.evaluate(
      `localStorage.setItem(${JSON.stringify(`taskflow.conversation.${user}`)}, ${JSON.stringify(id)})`,
    );
    await page.reload();
    await page.locator('#chat-log .chat-user', { hasText: 'note 59' }).waitFor({ timeout: LIVE_MS });
    const shown = () => page.locator('#chat-log .chat-user').allTextContents();
    const lastPage = await shown();
    assert.equal(lastPage.at(-1), 'note 59');
    assert.ok(!lastPage.includes('first <b>note</b>'), 'the first message is not on the last page');
    const earlier = page.locator('#chat-earlier', { hasText: 'Earlier messages' });
    await earlier.click({ timeout: LIVE_MS });
    await page
      .locator('#chat-log .chat-user', { hasText: 'first <b>note</b>' })
      .waitFor({ timeout: LIVE_MS });
    // The page before came above, each message once and in order; it was the first, so no button is left.
    assert.deepEqual(await shown(), [
      'first <b>note</b>',
      ...Array.from({ length: 59 }, (_, n) => `note ${n + 1}`),
    ]);
    assert.equal(
      await page.locator('#chat-log .chat-assistant').first().textContent(),
      'First <img src=x onerror="window.hacked=1"> reply',
    );
    await earlier.waitFor({ state: 'detached', timeout: LIVE_MS });
    // Text, never HTML.
    assert.equal(await page.locator('#chat-log b, #chat-log img').count(), 0);
    assert.equal(await page.evaluate('window.hacked'), undefined);
    // A new conversation has no earlier messages.
    await page.click('#chat-new');
    assert.equal(await page.locator('#chat-log li').count(), 0);
    assert.equal(await page.locator('#chat-earlier').count(), 0);
    assert.deepEqual(errors, []);
  });
});

describe('development sign-in on the board in Chromium', { skip: skipWithoutChromium }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'taskflow-board-dev-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  // The embedded default: no JWT_SECRET, a data directory, so the generated development secret.
  const ctx = useBoard(
    () => [apiTarget, relayTarget, createGatewayTarget({ instanceId: 'board-dev' })],
    () => ({ JWT_SECRET: '', DATABASE_URL: join(dir, 'db') }),
  );

  it('offers "continue as <name>" instead of a token, and the board works as that user', async () => {
    const context = await ctx.browser.newContext({ viewport: { width: 390, height: 844 } });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(ctx.app.url + '/');
    await page.waitForSelector('#dev-signin:not([hidden])', { timeout: LIVE_MS });
    await page.fill('#dev-user', 'grace');
    assert.equal(await page.locator('#dev-user-label').textContent(), 'grace');
    await page.screenshot({ path: 'test-results/board-390-dev-sign-in.png', fullPage: true });
    await page.click('#dev-signin button[type=submit]');
    await page.waitForSelector('#ws-status.live', { timeout: LIVE_MS });
    assert.equal(await page.locator('#whoami').textContent(), 'grace');
    await page.fill('#new-title', 'Signed in without a token');
    await page.click('#create-form button[type=submit]');
    await page
      .locator('#tasks li.task', { hasText: 'Signed in without a token' })
      .waitFor({ timeout: LIVE_MS });
    // A name that is not an id is refused with the rule.
    await page.click('#signout');
    await page.fill('#dev-user', '../admin');
    await page.click('#dev-signin button[type=submit]');
    await page.locator('#dev-signin-error', { hasText: 'letters, digits' }).waitFor({ timeout: LIVE_MS });
    assert.deepEqual(errors, []);
  });
});

describe('the API docs page in Chromium', { skip: skipWithoutChromium }, () => {
  const ctx = useBoard(() => [apiTarget]);

  it('renders under its content security policy, which no other site may frame', async () => {
    const res = await fetch(`${ctx.app.url}/docs/`);
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /upgrade-insecure-requests/, 'plain http (a development server) keeps working');
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    const page = await (await ctx.browser.newContext()).newPage();
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(m.text());
    });
    await page.goto(`${ctx.app.url}/docs/`);
    await page.locator('.opblock').first().waitFor({ timeout: LIVE_MS });
    // A link with a query string (a newsletter's utm_source) shows the document too.
    await page.goto(`${ctx.app.url}/docs?utm_source=mail`);
    await page.locator('.opblock').first().waitFor({ timeout: LIVE_MS });
    assert.deepEqual(problems, []);
  });
});
