/**
 * The board's browser tests' common parts: a real headless Chromium (Debian's `chromium`, driven by
 * playwright-core) against targets started in this process on a fresh database.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { after, before } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { TargetDefinition } from '../../src/runtime.ts';
import type { Db } from '../../src/store/db.ts';
import { startApp, type TestApp } from './app.ts';
import { backends } from './db.ts';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
/** How long a page may take to show what a live update brings. */
export const LIVE_MS = 10_000;
// scripts/test (REQUIRE_POSTGRES=1) installs Chromium, so there a missing browser is a failure, not a skip.
export const skipWithoutChromium =
  !existsSync(CHROMIUM) && process.env.REQUIRE_POSTGRES !== '1' ? `no Chromium at ${CHROMIUM}` : false;

/** A fresh database, `targets` in this process and a Chromium, for the tests of one describe block. */
export function useBoard(
  targets: () => TargetDefinition[],
  env: () => Record<string, string> = () => ({}),
): { app: TestApp; browser: Browser } {
  const ctx = {} as { app: TestApp; browser: Browser };
  let drop: (() => Promise<void>) | undefined;
  before(async () => {
    let db: Db;
    ({ db, drop } = await backends[0]!.fresh());
    ctx.app = await startApp(db, { targets: targets(), clock: { now: () => new Date() }, env: env() });
    ctx.browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
    mkdirSync('test-results', { recursive: true }); // the screenshots, kept as CI artifacts
  });
  after(async () => {
    await ctx.browser?.close();
    await ctx.app?.stop();
    await drop?.();
  });
  return ctx;
}

export async function waitUntil(check: () => Promise<boolean>, what: string, ms = LIVE_MS): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The row of the task titled `title` (`extra`: more of the row's selector, e.g. `.completed`). */
export const taskRow = (page: Page, title: string, extra = '') =>
  page.locator(`#tasks li.task${extra}`, { has: page.locator('.title', { hasText: title }) });
