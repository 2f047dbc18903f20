/**
 * The task board in a real headless Chromium (Debian's `chromium`, driven by playwright-core): two pages of
 * the same user; a task created and then completed in one appears, then shows completed, in the other
 * without a reload (REST -> outbox -> relay -> broadcaster -> gateway -> WebSocket). Saves
 * test-results/board.png.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { apiTarget } from '../../src/services/api/index.ts';
import { broadcasterTarget } from '../../src/services/broadcaster/index.ts';
import { createGatewayTarget } from '../../src/services/gateway/index.ts';
import { relayTarget } from '../../src/services/relay/index.ts';
import type { Db } from '../../src/store/db.ts';
import { backends } from '../helpers/db.ts';
import { startApp, type TestApp } from '../helpers/app.ts';

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

describe('real-time task board in Chromium', { skip }, () => {
  let db: Db;
  let drop: () => Promise<void>;
  let app: TestApp;
  let browser: Browser;

  before(async () => {
    ({ db, drop } = await backends[0]!.fresh());
    app = await startApp(db, {
      targets: [apiTarget, relayTarget, broadcasterTarget, createGatewayTarget({ instanceId: 'board' })],
      clock: { now: () => new Date() },
    });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  });
  after(async () => {
    await browser?.close();
    await app?.stop();
    await drop?.();
  });

  /** A page in its own browser context (own storage), signed in by pasting the token. */
  async function signedInPage(token: string): Promise<Page> {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(app.url + '/');
    await page.fill('#token', token);
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('#ws-status.live', { timeout: LIVE_MS });
    assert.deepEqual(errors, []);
    return page;
  }

  const taskRow = (page: Page, title: string, extra = '') =>
    page.locator(`#tasks li.task${extra}`, { has: page.locator('.title', { hasText: title }) });

  it('shows a task created and completed in one page in the other, without reload', async () => {
    const token = await app.token('board-user');
    const a = await signedInPage(token);
    const b = await signedInPage(token);
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
    mkdirSync('test-results', { recursive: true });
    await b.screenshot({ path: 'test-results/board.png', fullPage: true });
  });
});
