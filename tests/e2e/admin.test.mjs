// The operators' page (/admin, docs/operations.md): signing in, the live chart from the overview,
// the connection list showing who is connected, and a ban made from the page refusing the user.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as e2e from './lib.mjs';

let browser;
let server;

before(async () => {
  [server, browser] = await Promise.all([
    e2e.startServer({ args: ['--operator', 'root'] }),
    e2e.launchBrowser(),
  ]);
  await e2e.register(server, 'root');
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (server) e2e.removeDir(server.dataDir);
});

test('an operator signs in at /admin, sees who is connected, and bans from the page', async () => {
  const bob = await e2e.openUser(browser, server, 'bob', { hash: 'hall', as: 'account' });
  const admin = await e2e.openPage(browser, server, 'root', { query: 'admin' });
  const { page } = admin;
  await page.locator('#signin').waitFor();
  await page.fill('#signin input[name="username"]', 'root');
  await page.fill('#signin input[name="password"]', e2e.passwordOf('root'));
  await page.click('#signin button[type="submit"]');
  await page.locator('#main').waitFor();
  // Two polls draw the lines of both charts (attached: a flat line has no height to be visible).
  await page.locator('#chart-sessions polyline').waitFor({ state: 'attached' });
  await page.locator('#chart-rates polyline').first().waitFor({ state: 'attached' });
  await page.locator('#connections tbody tr', { hasText: 'bob' }).first().waitFor();
  await page.fill('#ban-form input[name="user"]', 'bob');
  await page.fill('#ban-form input[name="reason"]', 'testing bans');
  await page.click('#ban-form button[type="submit"]');
  await page.locator('#bans tbody tr', { hasText: 'testing bans' }).waitFor();
  await page.locator('#audit tbody tr', { hasText: 'POST bans' }).waitFor();
  const login = await e2e.postJson(server, '/api/login', { username: 'bob', password: e2e.passwordOf('bob') });
  assert.equal(login.status, 403);
  assert.equal(login.body.error, 'banned: testing bans');
  await e2e.screenshot(page, 'admin-page');
  e2e.assertNoErrors(admin);
  await admin.context.close();
  await bob.context.close();
});
