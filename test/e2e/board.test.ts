/**
 * The task board in a real headless Chromium (Debian's `chromium`, driven by playwright-core): two pages of
 * the same user; a task created and then completed in one appears, then shows completed, in the other
 * without a reload (REST -> outbox -> relay -> gateway -> WebSocket). Saves
 * test-results/board.png. And a reminder that fires while the board is open shows at once (reminders ->
 * notifications -> notification.created -> gateway -> the page's toast and inbox).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { apiTarget } from '../../src/services/api/index.ts';
import { createGatewayTarget } from '../../src/services/gateway/index.ts';
import { createNotificationsTarget } from '../../src/services/notifications/index.ts';
import { relayTarget } from '../../src/services/relay/index.ts';
import { createRemindersTarget } from '../../src/services/reminders/index.ts';
import type { TargetDefinition } from '../../src/runtime.ts';
import type { Db } from '../../src/store/db.ts';
import { backends } from '../helpers/db.ts';
import { startApp, type TestApp } from '../helpers/app.ts';
import { startFakeModel, type FakeModel } from '../helpers/openai-server.ts';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const LIVE_MS = 10_000;
// scripts/test (REQUIRE_POSTGRES=1) installs Chromium, so there a missing browser is a failure, not a skip.
const skip =
  !existsSync(CHROMIUM) && process.env.REQUIRE_POSTGRES !== '1' ? `no Chromium at ${CHROMIUM}` : false;

/** A fresh database, `targets` in this process and a Chromium, for the tests of one describe block. */
function useBoard(targets: () => TargetDefinition[], env: () => Record<string, string> = () => ({})) {
  const ctx = {} as { app: TestApp; browser: Browser };
  let drop: (() => Promise<void>) | undefined;
  before(async () => {
    let db: Db;
    ({ db, drop } = await backends[0]!.fresh());
    ctx.app = await startApp(db, { targets: targets(), clock: { now: () => new Date() }, env: env() });
    ctx.browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  });
  after(async () => {
    await ctx.browser?.close();
    await ctx.app?.stop();
    await drop?.();
  });
  return ctx;
}

/**
 * A page in its own browser context (own storage), signed in by pasting the token, with its socket live;
 * `frames`: what its WebSocket received, parsed.
 */
async function signedInPage(ctx: { app: TestApp; browser: Browser }, user: string) {
  const context = await ctx.browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  const errors: string[] = [];
  const frames: { type: string; notification?: { task_id: string } }[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('websocket', (ws) => ws.on('framereceived', (f) => frames.push(JSON.parse(String(f.payload)))));
  await page.goto(ctx.app.url + '/');
  await page.fill('#token', await ctx.app.token(user));
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#ws-status.live', { timeout: LIVE_MS });
  return { page, errors, frames };
}

describe('real-time task board in Chromium', { skip }, () => {
  const ctx = useBoard(() => [apiTarget, relayTarget, createGatewayTarget({ instanceId: 'board' })]);

  const taskRow = (page: Page, title: string, extra = '') =>
    page.locator(`#tasks li.task${extra}`, { has: page.locator('.title', { hasText: title }) });

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
});

describe('the reminder plan of a new task on the board in Chromium', { skip }, () => {
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

describe('in-app notifications on the board in Chromium', { skip }, () => {
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
    const created = await ctx.app.call('notified-user', 'POST', '/api/tasks', {
      title: 'Water the plants',
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
    assert.equal(await page.locator('#notif-list li', { hasText: 'Reminder: Water the plants' }).count(), 1);
    assert.deepEqual(errors, []);
  });
});

describe('the assistant on the board in Chromium', { skip }, () => {
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
  });
});
