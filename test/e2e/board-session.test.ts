/**
 * The board across a sign-out and a lost network, in Chromium (a review of the board found each; each failed
 * before its fix):
 * - signed out and in as another user in the same tab, the next user was shown the last one's list, counts
 *   and open edit form, and an Undo toast of the last one, pressed, created the task in the next one's account;
 * - a late chat answer of the last user gave the next one that conversation (their next message refused), and
 *   a late failure put the last user's message in the next one's box;
 * - a socket given up on closed late (the browser's 60 s closing handshake) and stopped its successor's
 *   heartbeat: the next drop went unnoticed, the board said "live" and missed every change.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { BrowserContext, Page, WebSocketRoute } from 'playwright-core';
import { apiTarget } from '../../src/services/api/index.ts';
import { createGatewayTarget } from '../../src/services/gateway/index.ts';
import { relayTarget } from '../../src/services/relay/index.ts';
import { LIVE_MS, skipWithoutChromium, taskRow, useBoard, waitUntil } from '../helpers/board.ts';
import { startFakeModel, type FakeModel } from '../helpers/openai-server.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe(
  'review: sign-out then sign-in as another user in the same tab',
  { skip: skipWithoutChromium },
  () => {
    const ctx = useBoard(() => [apiTarget, relayTarget, createGatewayTarget({ instanceId: 'review-leaks' })]);
    const contexts: BrowserContext[] = [];

    async function signedInPage(user: string) {
      for (const c of contexts.splice(0)) await c.close();
      const context = await ctx.browser.newContext({ viewport: { width: 1100, height: 700 } });
      contexts.push(context);
      const page = await context.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(ctx.app.url + '/');
      await signIn(page, user);
      return { page, errors };
    }
    async function signIn(page: Page, user: string) {
      await page.fill('#token', await ctx.app.token(user));
      await page.click('#signin-form button[type=submit]');
      await page.waitForSelector('#ws-status.live', { timeout: LIVE_MS });
    }
    /** Every text the page shows, the values of its fields included. */
    const everything = (page: Page) =>
      page.evaluate<string>(`(() => {
        const values = [...document.querySelectorAll('input, textarea')]
          .filter((e) => e.offsetParent !== null)
          .map((e) => e.value);
        return [document.body.innerText, ...values].join('\\n');
      })()`);

    it("does not show the previous user's open edit form (title, description) to the next user", async () => {
      const made = await ctx.app.call('alice-a', 'POST', '/api/tasks', {
        title: 'Alice medical appointment',
        description: 'Oncology follow-up, room 4',
      });
      assert.equal(made.status, 201);
      const { page, errors } = await signedInPage('alice-a');
      await taskRow(page, 'Alice medical appointment').locator('button.edit').click();
      await page.locator('form.edit-form').waitFor();
      await page.click('#signout'); // Alice leaves the form open and signs out
      await signIn(page, 'bob-a');
      await sleep(1_500); // Bob's list has loaded (he has no tasks)
      assert.equal(await page.locator('#whoami').textContent(), 'bob-a');
      const shown = await everything(page);
      assert.ok(!shown.includes('Oncology follow-up'), `Bob's board shows Alice's task:\n${shown}`);
      assert.equal(await page.locator('form.edit-form').count(), 0, "Alice's edit form is on Bob's board");
      assert.deepEqual(errors, []);
    });

    it("does not write the previous user's Undo, pressed after the next user signed in, into the next user's account", async () => {
      const made = await ctx.app.call('alice-b', 'POST', '/api/tasks', {
        title: 'Alice bank PIN reminder',
        description: 'PIN 4321',
        tags: ['private'],
      });
      assert.equal(made.status, 201);
      const { page, errors } = await signedInPage('alice-b');
      await taskRow(page, 'Alice bank PIN reminder').locator('button.delete').click();
      const undo = page.locator('#toasts .toast button', { hasText: 'Undo' });
      await undo.waitFor({ timeout: LIVE_MS });
      await page.click('#signout');
      // Still on screen for the next person at the sign-in form: "Deleted “Alice bank PIN reminder”. Undo"
      const toastAfterSignOut = (await page.locator('#toasts').innerText()).trim();
      await signIn(page, 'bob-b');
      if (await undo.isVisible()) await undo.click(); // Bob presses the Undo he sees
      await sleep(1_000);
      const bobs = (await ctx.app.call('bob-b', 'GET', '/api/tasks')).body.items.map(
        (t: { title: string; description: string }) => `${t.title} / ${t.description}`,
      );
      assert.deepEqual(bobs, [], "Alice's deleted task was created in Bob's account");
      assert.equal(toastAfterSignOut, '', "Alice's toast is left on the signed-out page");
      assert.deepEqual(errors, []);
    });

    it("does not keep the previous user's tasks and counts when the next user's list cannot be read", async () => {
      assert.equal(
        (await ctx.app.call('alice-c', 'POST', '/api/tasks', { title: 'Alice divorce lawyer call' })).status,
        201,
      );
      const { page } = await signedInPage('alice-c');
      await taskRow(page, 'Alice divorce lawyer call').waitFor({ timeout: LIVE_MS });
      await page.click('#signout');
      // Bob's list read fails (a 500 from the server or a proxy): the board says so...
      const bobToken = await ctx.app.token('bob-c');
      await page.route(/\/api\/tasks\?/, (route) =>
        route.request().headers().authorization === `Bearer ${bobToken}`
          ? route.fulfill({
              status: 500,
              contentType: 'application/problem+json',
              body: JSON.stringify({ title: 'Internal Server Error', status: 500, detail: 'internal error' }),
            })
          : route.continue(),
      );
      await page.fill('#token', bobToken);
      await page.click('#signin-form button[type=submit]');
      await page.locator('#board-error').waitFor({ state: 'visible', timeout: LIVE_MS });
      await sleep(500);
      // ... but shows Alice's tasks as Bob's.
      assert.equal(await page.locator('#whoami').textContent(), 'bob-c');
      assert.deepEqual(await page.locator('#tasks li.task .title').allTextContents(), []);
      assert.equal(await page.locator('#views [data-count="total"]').textContent(), '');
    });

    it("does not show the previous user's tasks as the next user's before their list answers", async () => {
      assert.equal(
        (await ctx.app.call('alice-d', 'POST', '/api/tasks', { title: 'Alice job interview at Acme' }))
          .status,
        201,
      );
      const { page } = await signedInPage('alice-d');
      await taskRow(page, 'Alice job interview at Acme').waitFor({ timeout: LIVE_MS });
      await page.click('#signout');
      const bobToken = await ctx.app.token('bob-d');
      // A slow network: Bob's list takes 2 s.
      await page.route(/\/api\/tasks/, async (route) => {
        if (route.request().headers().authorization === `Bearer ${bobToken}`) await sleep(2_000);
        await route.continue().catch(() => undefined);
      });
      await page.fill('#token', bobToken);
      await page.click('#signin-form button[type=submit]');
      await sleep(300);
      assert.equal(await page.locator('#whoami').textContent(), 'bob-d');
      assert.deepEqual(await page.locator('#tasks li.task .title').allTextContents(), []);
      await waitUntil(async () => (await page.locator('#tasks li.task').count()) === 0, 'the list cleared');
    });
  },
);

describe('the board: the assistant across a sign-out', { skip: skipWithoutChromium }, () => {
  let model: FakeModel;
  before(async () => {
    model = await startFakeModel();
  });
  after(() => model?.close());
  const ctx = useBoard(
    () => [apiTarget, relayTarget, createGatewayTarget({ instanceId: 'review-chat' })],
    () => ({ CHAT_BASE_URL: model.url, CHAT_MODEL: 'fake-model' }),
  );
  const contexts: BrowserContext[] = [];

  async function signIn(page: Page, user: string) {
    await page.fill('#token', await ctx.app.token(user));
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('#ws-status.live', { timeout: LIVE_MS });
    await page.waitForSelector('#chat:not([hidden])');
  }
  async function pageOf(user: string) {
    for (const c of contexts.splice(0)) await c.close();
    const context = await ctx.browser.newContext({ viewport: { width: 1100, height: 700 } });
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(ctx.app.url + '/');
    await signIn(page, user);
    return page;
  }

  it("does not give the next user the previous user's conversation from a late answer (their message was refused)", async () => {
    const page = await pageOf('alice-chat');
    const aliceToken = await ctx.app.token('alice-chat');
    await page.route('**/api/chat', async (route) => {
      if (route.request().headers().authorization !== `Bearer ${aliceToken}`) return route.continue();
      const response = await route.fetch();
      await sleep(2_000); // a slow network: the answer reaches the page after the next sign-in
      await route.fulfill({ response }).catch(() => undefined);
    });
    model.script({ text: 'Noted, Alice.' });
    await page.fill('#chat-input', 'note my blood test results');
    await page.click('#chat-form button[type=submit]');
    await sleep(300);
    await page.click('#signout');
    await signIn(page, 'bob-chat');
    await sleep(2_500); // Alice's answer has arrived
    const stored = await page.evaluate<string | null>(
      "localStorage.getItem('taskflow.conversation.bob-chat')",
    );
    model.script({ text: 'Hello Bob.' });
    await page.fill('#chat-input', 'hello');
    await page.click('#chat-form button[type=submit]');
    await page.waitForSelector('#chat-form button[type=submit]:not([disabled])', { timeout: LIVE_MS });
    await sleep(300);
    const error = await page.locator('#chat-error').textContent();
    assert.deepEqual(
      { stored, error },
      { stored: null, error: '' },
      "Bob's page adopted Alice's conversation id, and Bob's first message was refused",
    );
  });

  it("does not put the previous user's failed message in the next user's chat box", async () => {
    const page = await pageOf('alice-chat2');
    const aliceToken = await ctx.app.token('alice-chat2');
    await page.route('**/api/chat', async (route) => {
      if (route.request().headers().authorization !== `Bearer ${aliceToken}`) return route.continue();
      await sleep(2_000);
      await route.abort('connectionreset').catch(() => undefined); // the network failed on the way
    });
    await page.fill('#chat-input', 'remind me to take my antidepressants at 9');
    await page.click('#chat-form button[type=submit]');
    await sleep(300);
    await page.click('#signout');
    await signIn(page, 'bob-chat2');
    await sleep(2_500);
    assert.equal(await page.inputValue('#chat-input'), '', "Alice's message is in Bob's chat box");
    assert.equal(await page.locator('#chat-error').textContent(), '');
  });
});

interface Conn {
  page: WebSocketRoute;
  server: WebSocketRoute;
  /** The network between this socket and the server is gone: nothing passes either way. */
  dead: boolean;
  pings: number;
  closeAsked: boolean;
}

describe('the board: the heartbeat after a socket was given up', { skip: skipWithoutChromium }, () => {
  const ctx = useBoard(() => [apiTarget, relayTarget, createGatewayTarget({ instanceId: 'review-hb' })]);

  it('notices a second network drop (a late close of the old socket does not stop the new one pinging)', async () => {
    const user = 'sleepy';
    const context = await ctx.browser.newContext({ viewport: { width: 1100, height: 700 } });
    const page = await context.newPage();
    const conns: Conn[] = [];
    await page.routeWebSocket(/\/ws/, (ws) => {
      const server = ws.connectToServer();
      const c: Conn = { page: ws, server, dead: false, pings: 0, closeAsked: false };
      conns.push(c);
      server.onMessage((m) => {
        if (!c.dead) ws.send(m);
      });
      ws.onMessage((m) => {
        if (String(m).includes('ping')) c.pings++;
        if (!c.dead) server.send(m);
      });
      ws.onClose((code, reason) => {
        c.closeAsked = true;
        if (c.dead) return; // the close handshake cannot reach the server: the page hears nothing yet
        void server.close({ code, reason });
        void ws.close({ code, reason });
      });
    });
    await page.goto(ctx.app.url + '/');
    await page.fill('#token', await ctx.app.token(user));
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('#ws-status.live', { timeout: LIVE_MS });
    assert.equal(conns.length, 1);

    // The network drops (a NAT entry lost over sleep); back "online", the board pings, hears nothing in 10 s,
    // gives the socket up and opens another, which goes through.
    conns[0]!.dead = true;
    await page.evaluate("window.dispatchEvent(new Event('online'))");
    await waitUntil(async () => conns.length === 2, 'a new socket', 20_000);
    await page.waitForSelector('#ws-status.live', { timeout: LIVE_MS });
    assert.equal(conns[0]!.closeAsked, true);

    // The old socket's close event arrives (Chromium: after its 60 s closing-handshake timeout).
    await conns[0]!.page.close({ code: 1006 });
    void conns[0]!.server.close();

    // The network drops again. A change is made meanwhile: a board with its heartbeat running gives the silent
    // socket up within PING_MS + PONG_WAIT_MS (25 + 10 s; at the second tick, 50 s) and resumes with ?since.
    conns[1]!.dead = true;
    const created = await ctx.app.call(user, 'POST', '/api/tasks', { title: 'Made while the board slept' });
    assert.equal(created.status, 201);
    let shown = true;
    try {
      await taskRow(page, 'Made while the board slept').waitFor({ timeout: 70_000 });
    } catch {
      shown = false;
    }
    const status = await page.locator('#ws-status').textContent();
    await context.close();
    assert.ok(
      shown,
      `the change never reached the board (70 s): sockets opened ${conns.length}, pings on the new socket ` +
        `${conns[1]!.pings}, status still "${status}"`,
    );
  });
});
