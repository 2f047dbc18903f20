/**
 * The board's defects a review found, each proven in a real headless Chromium (failing on the board before
 * its fix): "no reminders" kept by an edit, an expired session said so (on the socket and on an action), a
 * create sent once, a failed complete not shown as done, a busy server said, a long tag wrapped, a task added
 * outside the view said where it went, zone aliases, the repeat in words, an undo with its preset (and of a
 * series' last occurrence), emoji
 * titles, focus after editing, one change announced as one row, controls named by state and task, RTL titles.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { signDevToken } from '../../src/auth.ts';
import { apiTarget } from '../../src/services/api/index.ts';
import { createGatewayTarget } from '../../src/services/gateway/index.ts';
import { relayTarget } from '../../src/services/relay/index.ts';
import { recurrenceTarget } from '../../src/services/recurrence/index.ts';
import { TEST_SECRET } from '../helpers/app.ts';
import { LIVE_MS, skipWithoutChromium, taskRow, useBoard, waitUntil } from '../helpers/board.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the board review: each defect fixed, in Chromium', { skip: skipWithoutChromium }, () => {
  const ctx = useBoard(() => [
    apiTarget,
    relayTarget,
    createGatewayTarget({ instanceId: 'review' }),
    recurrenceTarget,
  ]);
  const contexts: BrowserContext[] = [];

  /** A page in its own context, not signed in yet; closed with the last test's. */
  async function newPage(opts: { viewport?: { width: number; height: number }; timezoneId?: string } = {}) {
    for (const c of contexts.splice(0)) await c.close();
    const context = await ctx.browser.newContext({
      viewport: opts.viewport ?? { width: 1100, height: 700 },
      ...(opts.timezoneId ? { timezoneId: opts.timezoneId } : {}),
    });
    contexts.push(context);
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(ctx.app.url + '/');
    return { page, errors, context };
  }

  async function signIn(page: Page, token: string) {
    await page.fill('#token', token);
    await page.click('#signin-form button[type=submit]');
  }

  /** Signed in by pasting the token, its socket live. */
  async function signedInPage(
    user: string,
    opts: { viewport?: { width: number; height: number }; timezoneId?: string; token?: string } = {},
  ) {
    const shown = await newPage(opts);
    await signIn(shown.page, opts.token ?? (await ctx.app.token(user)));
    await shown.page.waitForSelector('#ws-status.live', { timeout: LIVE_MS });
    return shown;
  }

  const get = async (user: string, path: string) => (await ctx.app.call(user, 'GET', path)).body;

  it('1: an edit of another field keeps "no reminders" (reminders [] is not sent as null, the defaults)', async () => {
    const user = 'no-reminders';
    const created = await ctx.app.call(user, 'POST', '/api/tasks', {
      title: 'Quiet task',
      due_date: new Date(Date.now() + 3 * 86_400_000).toISOString(),
      reminders: [],
    });
    assert.deepEqual(created.body.reminders, []);
    const { page, errors } = await signedInPage(user);
    await taskRow(page, 'Quiet task').locator('button.edit').click();
    const form = page.locator('form.edit-form');
    await form.locator('.edit-priority').selectOption('high');
    await form.locator('button[type=submit]').click();
    await waitUntil(
      async () => (await get(user, `/api/tasks/${created.body.id}`)).priority === 'high',
      'the priority saved',
    );
    assert.deepEqual((await get(user, `/api/tasks/${created.body.id}`)).reminders, []);
    // The form shows none as "none" (empty is the defaults).
    await taskRow(page, 'Quiet task').locator('button.edit').click();
    assert.equal(await form.locator('.edit-reminders').inputValue(), 'none');
    assert.deepEqual(errors, []);
  });

  it('2: a token that expires on an idle board (the socket closed 1008) signs out and says the session expired', async () => {
    // Long enough for a busy CI machine to sign in and open the socket first (exp is in whole seconds: a token
    // of '3s' may live 2, and a sign-in that took longer never saw the socket live).
    const token = await signDevToken(TEST_SECRET, 'expiring', { expiresIn: '8s' });
    const { page, errors } = await signedInPage('expiring', { token });
    await page.locator('#signin').waitFor({ state: 'visible', timeout: LIVE_MS });
    assert.match((await page.locator('#signin-error').textContent())!, /session expired/);
    assert.deepEqual(errors, []);
  });

  it('3: after a 401 on an action the sign-in form says why, and nothing is sent without a token', async () => {
    const { page, errors } = await signedInPage('refused-rest');
    const sent: string[] = [];
    page.on('request', (r) => {
      if (r.url().includes('/api/tasks')) sent.push(`${r.method()} ${r.headers().authorization}`);
    });
    // The token expired just now: the socket has not been closed yet, the create is refused.
    await page.route('**/api/tasks', (route) =>
      route.request().method() === 'POST'
        ? route.fulfill({
            status: 401,
            contentType: 'application/problem+json',
            body: JSON.stringify({ title: 'Unauthorized', status: 401, detail: 'token expired' }),
          })
        : route.continue(),
    );
    await page.fill('#new-title', 'after expiry');
    await page.click('#create-form button[type=submit]');
    await page.locator('#signin').waitFor({ state: 'visible', timeout: LIVE_MS });
    await sleep(800); // what a reload after the refusal would have sent
    assert.match((await page.locator('#signin-error').textContent())!, /session expired/);
    assert.deepEqual(
      sent.filter((s) => !/^\w+ Bearer ey/.test(s)),
      [],
      'no request without a token',
    );
    assert.deepEqual(errors, []);
  });

  it('4: Add pressed again while the create is on its way, or after its answer was lost, makes one task', async () => {
    const user = 'impatient';
    const { page, errors } = await signedInPage(user);
    // A slow network: the second press comes while the first create is on its way.
    await page.route('**/api/tasks', async (route) => {
      if (route.request().method() === 'POST') await sleep(1_000);
      await route.continue();
    });
    await page.fill('#new-title', 'Pay rent');
    await page.click('#create-form button[type=submit]');
    await sleep(300);
    await page.press('#new-title', 'Enter');
    await taskRow(page, 'Pay rent').waitFor({ timeout: LIVE_MS });
    await page.unroute('**/api/tasks');
    // The answer is lost on the way back (the task was created): the same task sent again is not made twice.
    let lost = false;
    await page.route('**/api/tasks', async (route) => {
      if (route.request().method() !== 'POST' || lost) return route.continue();
      lost = true;
      await route.fetch();
      await route.abort('failed');
    });
    await page.fill('#new-title', 'Call the landlord');
    await page.click('#create-form button[type=submit]');
    await page.locator('#board-error').waitFor({ state: 'visible', timeout: LIVE_MS });
    assert.equal(await page.locator('#new-title').inputValue(), 'Call the landlord', 'kept, to send again');
    await page.click('#create-form button[type=submit]');
    await waitUntil(
      async () => (await page.locator('#new-title').inputValue()) === '',
      'the create answered',
    );
    await sleep(1_000);
    const titles = (await get(user, '/api/tasks')).items.map((t: { title: string }) => t.title);
    assert.deepEqual(titles.sort(), ['Call the landlord', 'Pay rent']);
    assert.deepEqual(errors, []);
  });

  it('5: offline, a complete that failed leaves the box unticked and says the server cannot be reached', async () => {
    const user = 'offline';
    await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Offline task' });
    const { page, context, errors } = await signedInPage(user);
    await taskRow(page, 'Offline task').waitFor({ timeout: LIVE_MS });
    await context.setOffline(true);
    await taskRow(page, 'Offline task').locator('input.toggle').click();
    await page.locator('#board-error').waitFor({ state: 'visible', timeout: LIVE_MS });
    assert.match((await page.locator('#board-error-text').textContent())!, /cannot reach the server/);
    assert.equal((await get(user, '/api/tasks')).items[0].status, 'pending');
    await waitUntil(
      async () => !(await taskRow(page, 'Offline task').locator('input.toggle').isChecked()),
      'the box unticked',
      2_000,
    );
    await context.setOffline(false);
    assert.deepEqual(errors, []);
  });

  it('6: a 503 with Retry-After on the list says the server is busy and when the list is read again', async () => {
    const user = 'busy';
    await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Something to see' });
    const { page, errors } = await newPage();
    let busy = true;
    await page.route(/\/api\/tasks\?/, (route) =>
      busy
        ? route.fulfill({
            status: 503,
            headers: { 'retry-after': '2', 'content-type': 'application/problem+json' },
            body: JSON.stringify({ title: 'Service Unavailable', status: 503, detail: 'busy' }),
          })
        : route.continue(),
    );
    await signIn(page, await ctx.app.token(user));
    const notice = page.locator('#board-busy');
    await notice.waitFor({ state: 'visible', timeout: LIVE_MS });
    assert.equal(await notice.textContent(), 'The server is busy; the list is read again in 2 s.');
    busy = false;
    await taskRow(page, 'Something to see').waitFor({ timeout: LIVE_MS });
    await notice.waitFor({ state: 'hidden', timeout: LIVE_MS });
    assert.deepEqual(errors, []);
  });

  it('7: a 50-character tag wraps at 390 px instead of widening the page', async () => {
    const user = 'tagger';
    await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Tagged', tags: ['W'.repeat(50)] });
    const { page, errors } = await signedInPage(user, { viewport: { width: 390, height: 844 } });
    await taskRow(page, 'Tagged').waitFor({ timeout: LIVE_MS });
    assert.ok(
      await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth'),
      'no sideways scroll',
    );
    const tag = (await page.locator('#tasks .tag').boundingBox())!;
    assert.ok(tag.x + tag.width <= 390, `the tag ends at ${tag.x + tag.width} px`);
    assert.deepEqual(errors, []);
  });

  it('8: a task added in Today without a due date says it went to All', async () => {
    const user = 'today-adder';
    const { page, errors } = await signedInPage(user);
    await page.click('#views button[data-view="today"]');
    await page.fill('#new-title', 'Call the bank');
    await page.click('#create-form button[type=submit]');
    const toast = page.locator('#toasts .toast', { hasText: 'Call the bank' });
    await toast.waitFor({ timeout: LIVE_MS });
    assert.match((await toast.textContent())!, /Added “Call the bank” to All: it has no due date/);
    await toast.locator('button', { hasText: 'Show All' }).click();
    await taskRow(page, 'Call the bank').waitFor({ timeout: LIVE_MS });
    assert.deepEqual(errors, []);
  });

  it('9: the zone of the settings under another name (Asia/Kolkata, Asia/Calcutta) is not offered', async () => {
    const user = 'mumbai';
    assert.equal(
      (await ctx.app.call(user, 'PUT', '/api/me/settings', { timezone: 'Asia/Kolkata' })).status,
      200,
    );
    const { page, errors } = await signedInPage(user, { timezoneId: 'Asia/Kolkata' });
    await sleep(1_000); // the settings read
    assert.equal(
      await page.locator('#zone-offer').isVisible(),
      false,
      `offered: ${await page.locator('#zone-offer').textContent()}`,
    );
    assert.deepEqual(errors, []);
  });

  it('10: the repeat reads as its rule: every 2 weeks, the last Friday of the month', async () => {
    const user = 'repeats';
    const due = new Date(Date.now() + 86_400_000).toISOString();
    for (const [title, recurrence] of [
      ['Bins', { preset: 'weekly', interval: 2 }],
      ['Payroll', { rrule: 'FREQ=MONTHLY;BYDAY=-1FR' }],
      ['Standup', 'weekdays'],
    ] as const)
      assert.equal(
        (await ctx.app.call(user, 'POST', '/api/tasks', { title, due_date: due, recurrence })).status,
        201,
      );
    const { page, errors } = await signedInPage(user);
    const repeat = (title: string) => taskRow(page, title).locator('.facts .meta:not(.due)').textContent();
    await taskRow(page, 'Standup').waitFor({ timeout: LIVE_MS });
    assert.deepEqual(
      [await repeat('Bins'), await repeat('Payroll'), await repeat('Standup')],
      ['repeats every 2 weeks', 'repeats monthly on the last Friday', 'repeats on weekdays'],
    );
    assert.deepEqual(errors, []);
  });

  it('11: the undo of a deleted repeating task brings its recurrence back as it was, preset included', async () => {
    const user = 'undoer';
    const due = new Date(Date.now() + 86_400_000).toISOString();
    const c = await ctx.app.call(user, 'POST', '/api/tasks', {
      title: 'Gym',
      due_date: due,
      recurrence: 'weekly',
    });
    assert.equal(c.status, 201);
    const { page, errors } = await signedInPage(user);
    await taskRow(page, 'Gym').locator('button.delete').click();
    await taskRow(page, 'Gym').waitFor({ state: 'detached', timeout: LIVE_MS });
    await page
      .locator('#toasts .toast', { hasText: 'Deleted' })
      .locator('button', { hasText: 'Undo' })
      .click();
    await taskRow(page, 'Gym').waitFor({ timeout: LIVE_MS });
    assert.deepEqual((await get(user, '/api/tasks')).items[0].recurrence, c.body.recurrence);
    assert.deepEqual(errors, []);
  });

  it('11b: the undo of the deleted last occurrence of a series ending at UNTIL brings it back (it was refused: 422)', async () => {
    const user = 'undo-last';
    const due = new Date(Math.ceil(Date.now() / 60_000) * 60_000 + 86_400_000);
    const c = await ctx.app.call(user, 'POST', '/api/tasks', {
      title: 'Course',
      due_date: due.toISOString(),
      recurrence: { preset: 'weekly', until: new Date(due.getTime() + 8 * 86_400_000).toISOString() },
    });
    assert.equal(c.status, 201, JSON.stringify(c.body));
    assert.equal((await ctx.app.call(user, 'POST', `/api/tasks/${c.body.id}/complete`)).status, 200);
    const pending = async () => (await get(user, '/api/tasks?status=pending')).items;
    await waitUntil(async () => (await pending()).length === 1, 'the last occurrence made');
    const [last] = await pending();
    const { page, errors } = await signedInPage(user);
    await taskRow(page, 'Course', '.pending').locator('button.delete').click();
    await taskRow(page, 'Course', '.pending').waitFor({ state: 'detached', timeout: LIVE_MS });
    await page
      .locator('#toasts .toast', { hasText: 'Deleted' })
      .locator('button', { hasText: 'Undo' })
      .click();
    await taskRow(page, 'Course', '.pending').waitFor({ timeout: LIVE_MS });
    // Back as it was, but for its rule, which could not repeat any more (created again, it is a new series).
    const [back] = await pending();
    assert.deepEqual(
      [back.title, back.due_date, back.reminders, back.recurrence],
      [last.title, last.due_date, last.reminders, null],
    );
    assert.equal(await page.locator('#board-error').isHidden(), true, 'no error shown');
    assert.deepEqual(errors, []);
  });

  it('12: a new title of 300 emoji (500 code points is the limit) is not cut', async () => {
    const user = 'emoji';
    const title = '🌱'.repeat(300); // 300 code points, 600 UTF-16 units
    const { page, errors } = await signedInPage(user);
    await page.focus('#new-title');
    await page.keyboard.insertText(title); // a paste
    await page.click('#create-form button[type=submit]');
    await waitUntil(async () => (await get(user, '/api/tasks')).items.length === 1, 'created');
    assert.equal([...(await get(user, '/api/tasks')).items[0].title].length, 300);
    assert.deepEqual(errors, []);
  });

  it('13: after Esc or Save in the edit form the focus is back on the task', async () => {
    const user = 'kbd';
    const c = await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Only task' });
    const { page, errors } = await signedInPage(user);
    await taskRow(page, 'Only task').waitFor({ timeout: LIVE_MS });
    const focused = () =>
      page.evaluate(
        "(() => { const a = document.activeElement; return `${a.tagName}|${a.closest('li.task')?.dataset.id ?? ''}`; })()",
      );
    await page.keyboard.press('j');
    await page.keyboard.press('e');
    await page.locator('form.edit-form').waitFor({ timeout: LIVE_MS });
    await page.keyboard.press('Escape');
    await page.locator('form.edit-form').waitFor({ state: 'detached', timeout: LIVE_MS });
    assert.equal(await focused(), `LI|${c.body.id}`, 'after Esc');
    await page.keyboard.press('e');
    await page.locator('form.edit-form .edit-title').fill('Only task, renamed');
    await page.keyboard.press('Enter');
    await page.locator('form.edit-form').waitFor({ state: 'detached', timeout: LIVE_MS });
    await taskRow(page, 'Only task, renamed').waitFor({ timeout: LIVE_MS });
    await sleep(500); // the live update of the save has been drawn too
    assert.equal(await focused(), `LI|${c.body.id}`, 'after Save');
    assert.deepEqual(errors, []);
  });

  it('14: one change from elsewhere adds one row to the live list, not all of them again', async () => {
    const user = 'reader';
    for (let i = 0; i < 10; i++) await ctx.app.call(user, 'POST', '/api/tasks', { title: `Task ${i}` });
    const { page, errors } = await signedInPage(user);
    await taskRow(page, 'Task 9').waitFor({ timeout: LIVE_MS });
    await sleep(500);
    await page.evaluate(`(() => {
      globalThis.__added = 0;
      new MutationObserver((ms) => { for (const m of ms) globalThis.__added += m.addedNodes.length; })
        .observe(document.querySelector('#tasks'), { childList: true });
    })()`);
    await ctx.app.call(user, 'POST', '/api/tasks', { title: 'New from elsewhere' });
    await taskRow(page, 'New from elsewhere').waitFor({ timeout: LIVE_MS });
    await sleep(500);
    assert.equal(await page.locator('#tasks').getAttribute('aria-live'), 'polite');
    assert.equal(await page.evaluate('globalThis.__added'), 1);
    assert.equal(await page.locator('#tasks li.task').count(), 11);
    assert.deepEqual(errors, []);
  });

  it('15: the checkbox is named by what it does (reopen, mark done), Edit and Delete by their task', async () => {
    const user = 'a11y';
    const a = await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Done thing' });
    await ctx.app.call(user, 'POST', `/api/tasks/${a.body.id}/complete`);
    await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Open thing' });
    const { page, errors } = await signedInPage(user);
    await taskRow(page, 'Done thing', '.completed').waitFor({ timeout: LIVE_MS });
    const names = async (title: string) => {
      const row = taskRow(page, title);
      return [
        await row.locator('.toggle').getAttribute('aria-label'),
        await row.locator('button.edit').getAttribute('aria-label'),
        await row.locator('button.delete').getAttribute('aria-label'),
      ];
    };
    assert.deepEqual(await names('Done thing'), [
      'reopen Done thing',
      'Edit Done thing',
      'Delete Done thing',
    ]);
    assert.deepEqual(await names('Open thing'), [
      'mark Open thing done',
      'Edit Open thing',
      'Delete Open thing',
    ]);
    assert.deepEqual(errors, []);
  });

  it('16: a Hebrew title reads right to left, its final "!" on the left', async () => {
    const user = 'rtl';
    await ctx.app.call(user, 'POST', '/api/tasks', { title: 'לקנות חלב!' });
    const { page, errors } = await signedInPage(user);
    await page.locator('#tasks li.task .title').first().waitFor({ timeout: LIVE_MS });
    const pos = (await page.evaluate(`(() => {
      const node = document.querySelector('#tasks li.task .title').firstChild;
      const at = (i) => { const r = document.createRange(); r.setStart(node, i); r.setEnd(node, i + 1); return r.getBoundingClientRect().left; };
      return { first: at(0), bang: at(node.textContent.length - 1) };
    })()`)) as { first: number; bang: number };
    assert.ok(pos.bang < pos.first, `first letter at x=${pos.first}, "!" at x=${pos.bang}`);
    assert.deepEqual(errors, []);
  });
});
