// Accounts in the browser (docs/auth.md): signing up and in on the page, the session surviving a
// reload (HttpOnly refresh cookie, access token only in memory), signing out, the error messages
// of the sign-in screen, token renewal on the open connection, and guests: offered only when the
// server allows them, marked as guests for everyone.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as e2e from './lib.mjs';

let browser;
let strict; // the server's default: accounts only
let guesty; // --allow-guests
const users = [];

async function open(srv, name, options) {
  const user = await e2e.openUser(browser, srv, name, options);
  users.push(user);
  return user;
}

async function openPage(srv, name, options) {
  const user = await e2e.openPage(browser, srv, name, options);
  users.push(user);
  return user;
}

before(async () => {
  [strict, guesty, browser] = await Promise.all([
    e2e.startServer(),
    e2e.startServer({ guests: true }),
    e2e.launchBrowser(),
  ]);
});

after(async () => {
  await browser?.close();
  for (const srv of [strict, guesty]) {
    await srv?.stop();
    if (srv) e2e.removeDir(srv.dataDir);
  }
});

test('sign up on the page, sign in on another, and chat between the two', async () => {
  // Alice creates her account with the page's "Create account".
  const alice = await open(strict, 'alice', { hash: 'hall', as: 'create' });
  // Bob's account exists already (made through the API); he signs in with "Sign in".
  const bob = await open(strict, 'bob', { hash: 'hall', as: 'account' });
  for (const user of [alice, bob]) {
    assert.equal(await user.page.locator('#me-guest').isHidden(), true, 'accounts are not marked as guests');
    assert.equal(await user.page.locator('#sign-out').isVisible(), true);
  }
  await e2e.send(alice.page, 'hello bob, I just signed up');
  await e2e.waitForMessage(bob.page, 'hello bob, I just signed up', { from: 'alice' });
  await e2e.send(bob.page, 'welcome!');
  await e2e.waitForMessage(alice.page, 'welcome!', { from: 'bob' });
  await alice.page.locator('#member-list [data-name="bob"]').waitFor();
  assert.equal(await alice.page.locator('#message-list .guest-badge, #member-list .guest-badge').count(), 0);
  await e2e.screenshot(alice.page, 'auth-signed-in');
  e2e.assertNoErrors(alice, bob);
  await alice.context.close();
  await bob.context.close();
});

test('a reload keeps you signed in (cookie refresh); signing out ends the session', async () => {
  const carol = await open(strict, 'carol', { hash: 'hall' });
  await e2e.send(carol.page, 'before the reload');
  // The refresh token is an HttpOnly, SameSite=Strict cookie; the page keeps nothing in storage.
  const cookies = await carol.context.cookies();
  const session = cookies.find((c) => c.name === 'parley_session');
  assert.ok(session, `no parley_session cookie: ${JSON.stringify(cookies)}`);
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Strict');
  const stored = await carol.page.evaluate(() => ({
    cookie: document.cookie,
    local: JSON.stringify({ ...localStorage }),
    session: JSON.stringify({ ...sessionStorage }),
  }));
  assert.ok(!stored.cookie.includes('parley_session'), 'the page can read the session cookie');
  for (const value of [stored.local, stored.session]) assert.ok(!/eyJ[\w-]+\.[\w-]+\./.test(value), `a JWT in web storage: ${value}`);

  await carol.page.reload();
  await e2e.waitOnline(carol.page);
  assert.equal(await carol.page.locator('#auth-dialog[open]').count(), 0, 'asked to sign in again after a reload');
  assert.equal(await carol.page.locator('#me-name').textContent(), 'carol');
  await e2e.waitForMessage(carol.page, 'before the reload', { from: 'carol' });
  await e2e.send(carol.page, 'after the reload');

  await carol.page.click('#sign-out');
  await e2e.waitSignIn(carol.page);
  assert.equal(await e2e.connState(carol.page), 'signed-out');
  assert.equal(await carol.page.locator('#message-list > li').count(), 0, 'messages still shown after signing out');
  assert.equal((await carol.context.cookies()).filter((c) => c.name === 'parley_session' && c.value).length, 0,
    'the session cookie survived the sign-out');
  await carol.page.reload();
  await e2e.waitSignIn(carol.page);
  await e2e.pause(300);
  assert.equal(await carol.page.locator('#auth-dialog[open]').count(), 1);
  assert.notEqual(await e2e.connState(carol.page), 'online');
  await e2e.screenshot(carol.page, 'auth-sign-in');
  e2e.assertNoErrors(carol);
  await carol.context.close();
});

test('the sign-in screen says what went wrong: wrong password, name taken, too many attempts', async () => {
  await e2e.register(strict, 'dave');
  const page = (await openPage(strict, 'dave')).page;
  const user = users.at(-1);
  user.expectHttp.push({ path: '/api/login', status: 401 }, { path: '/api/login', status: 429 },
    { path: '/api/register', status: 409 });
  await e2e.signIn(page, 'dave', 'not-my-password');
  await page.locator('#auth-error', { hasText: /wrong username or password/i }).waitFor();
  assert.equal(await page.locator('#auth-dialog[open]').count(), 1);
  assert.notEqual(await e2e.connState(page), 'online');
  // An unknown user gets the very same answer.
  await e2e.signIn(page, 'nobody-here', 'whatever-password');
  await page.locator('#auth-error', { hasText: /wrong username or password/i }).waitFor();
  // Creating an account with a taken name.
  await e2e.signIn(page, 'dave', 'another-password', { create: true });
  await page.locator('#auth-error', { hasText: /name taken/i }).waitFor();
  // Checked in the page before any request: a short password, a bad name.
  await e2e.signIn(page, 'eve', 'short', { create: true });
  await page.locator('#auth-error', { hasText: /at least 8/ }).waitFor();
  await e2e.signIn(page, 'eve smith', 'long-enough-password', { create: true });
  await page.locator('#auth-error', { hasText: /not spaces/ }).waitFor();
  await e2e.screenshot(page, 'auth-error');
  // More than 5 failures a minute for one name: 429 with Retry-After, even for the right password.
  await e2e.register(strict, 'mallory');
  const answers = [];
  for (let i = 0; i < 7 && !answers.includes('429'); i++) {
    await e2e.signIn(page, 'mallory', `guess-number-${i}`);
    const error = page.locator('#auth-error');
    await error.filter({ hasText: /wrong username or password|too many attempts/i }).waitFor();
    answers.push(/too many/i.test(await error.textContent()) ? '429' : '401');
  }
  assert.deepEqual(answers.slice(0, 5), ['401', '401', '401', '401', '401'], answers.join());
  assert.ok(answers.includes('429'), `never throttled: ${answers.join()}`);
  await e2e.signIn(page, 'mallory', e2e.passwordOf('mallory'));
  await page.locator('#auth-error', { hasText: /too many attempts, retry in \d+ s/i }).waitFor();
  // The right password still works for another user.
  await e2e.signIn(page, 'dave', e2e.passwordOf('dave'));
  await e2e.waitOnline(page);
  assert.equal(await page.locator('#me-name').textContent(), 'dave');
  e2e.assertNoErrors(user);
  await user.context.close();
});

test('the access token is renewed in-band before it expires; without renewal the page reconnects', async (t) => {
  // Its own server, whose tokens live 4 s.
  const shortLived = await e2e.startServer({ args: ['--access-ttl', '4s'] });
  t.after(async () => {
    await shortLived.stop();
    e2e.removeDir(shortLived.dataDir);
  });
  const frank = await open(shortLived, 'frank', { hash: 'clock' });
  // expires_in is 4 s, so the page renews every 2 s: POST /api/token/refresh, then SEND /app/auth.
  await frank.page.waitForFunction(() => window.parleyDebug.renewals >= 2, null, { timeout: 8000 });
  await e2e.send(frank.page, 'still here');
  const debug = await frank.page.evaluate(() => ({ ...window.parleyDebug }));
  assert.equal(debug.connects, 1, `reconnected instead of renewing in-band: ${JSON.stringify(debug)}`);
  assert.ok(debug.refreshes >= 2, JSON.stringify(debug));

  // Gina's in-band renewals never reach the server (dropped from her WebSocket): at expiry the
  // server closes her connection (ERROR token expired); the page gets a new token and reconnects
  // into the same room (SUBSCRIBE `since`), without a duplicate or a trip to the sign-in screen.
  const gina = await open(shortLived, 'gina', { hash: 'clock' });
  await gina.page.routeWebSocket(/\/stomp$/, (ws) => {
    const upstream = ws.connectToServer();
    ws.onMessage((frame) => {
      if (typeof frame === 'string' && frame.includes('\ndestination:/app/auth\n')) return;
      upstream.send(frame);
    });
  });
  await gina.page.reload(); // the route applies to new connections; the cookie resumes the session
  await e2e.waitOnline(gina.page);
  await e2e.waitForMessage(gina.page, 'still here');
  await gina.page.waitForFunction(() => window.parleyDebug.connects >= 2, null, { timeout: 8000 });
  await e2e.waitOnline(gina.page);
  await e2e.send(frank.page, 'after her token expired');
  await e2e.waitForMessage(gina.page, 'after her token expired', { from: 'frank' });
  await e2e.send(gina.page, 'back with a new token');
  await e2e.waitForMessage(frank.page, 'back with a new token', { from: 'gina' });
  const ginaDebug = await gina.page.evaluate(() => ({ ...window.parleyDebug }));
  assert.equal(ginaDebug.renewals, 0, JSON.stringify(ginaDebug));
  assert.equal(ginaDebug.duplicates, 0, JSON.stringify(ginaDebug));
  assert.equal(ginaDebug.gapFills, 0, JSON.stringify(ginaDebug));
  assert.equal(await gina.page.locator('#auth-dialog[open]').count(), 0);
  const frankAfter = await frank.page.evaluate(() => window.parleyDebug.connects);
  assert.equal(frankAfter, 1, 'frank, renewing in-band, never had to reconnect');
  // The reconnects show as "reconnecting" briefly; Chromium logs nothing for them.
  e2e.assertNoErrors(frank, gina);
  await frank.context.close();
  await gina.context.close();
});

test('no guest button on a strict server', async () => {
  const { page } = await openPage(strict, 'nobody');
  await e2e.waitSignIn(page);
  assert.equal(await page.locator('#auth-guest').isVisible(), false);
  assert.equal(await page.locator('#auth-register').isVisible(), true);
  e2e.assertNoErrors(users.at(-1));
});

test('guests: offered when allowed, marked for everyone, name checked and remembered', async () => {
  const grace = await open(guesty, 'grace', { hash: 'lobby' }); // an account
  const guest = await openPage(guesty, 'erin');
  const { page } = guest;
  await e2e.waitSignIn(page);
  assert.equal(await page.locator('#auth-guest').isVisible(), true);
  await page.click('#auth-guest');
  // The name is checked before connecting.
  await page.locator('#name-dialog[open]').waitFor();
  await page.fill('#name-input', 'not a name!');
  await page.click('#name-submit');
  await page.locator('#name-error', { hasText: 'not spaces, “!”' }).waitFor();
  assert.equal(await page.locator('#name-dialog[open]').count(), 1);
  assert.notEqual(await e2e.connState(page), 'online');
  // A registered user's name is refused by the server.
  await page.fill('#name-input', 'grace');
  await page.click('#name-submit');
  await page.locator('#name-error', { hasText: 'belongs to a registered user' }).waitFor();
  await page.fill('#name-input', 'erin.b-2_x');
  await page.click('#name-submit');
  await e2e.waitOnline(page);
  assert.equal(await page.locator('#me-name').textContent(), 'erin.b-2_x');
  assert.equal(await page.locator('#me-guest').isVisible(), true);
  assert.equal(await page.locator('#new-room-private').isVisible(), false, 'guests cannot create private rooms');
  await page.evaluate(() => { location.hash = '#lobby'; });
  await page.locator('#conv-title', { hasText: '#lobby' }).waitFor();
  await e2e.send(page, 'hi, I am just visiting');
  // The account holder sees the guest marked, in the conversation and in the member list.
  await e2e.waitForMessage(grace.page, 'hi, I am just visiting', { from: 'erin.b-2_x' });
  await grace.page.locator('#message-list li[data-from="erin.b-2_x"] .guest-badge').waitFor();
  await grace.page.locator('#member-list [data-name="erin.b-2_x"] .guest-badge').waitFor();
  await e2e.send(grace.page, 'welcome, guest');
  await e2e.waitForMessage(page, 'welcome, guest', { from: 'grace' });
  assert.equal(await page.locator('#message-list li[data-from="grace"] .guest-badge').count(), 0);
  await e2e.screenshot(grace.page, 'guest-badge');
  // A guest's name is remembered: a reload goes straight in.
  await page.reload();
  await e2e.waitOnline(page);
  assert.equal(await page.locator('#auth-dialog[open], #name-dialog[open]').count(), 0);
  // Changing it reconnects under the new name, in the same room.
  await page.click('#change-name');
  await page.fill('#name-input', 'erin');
  await page.click('#name-submit');
  await page.locator('#me-name', { hasText: /^erin$/ }).waitFor();
  await e2e.waitOnline(page);
  await page.locator('#member-list [data-name="erin"]').waitFor();
  assert.equal(await page.locator('#member-list [data-name="erin.b-2_x"]').count(), 0);
  await page.locator('#conv-title', { hasText: '#lobby' }).waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem('parley.name')), 'erin');
  // Signing out forgets the guest name.
  await page.click('#sign-out');
  await e2e.waitSignIn(page);
  assert.equal(await page.evaluate(() => localStorage.getItem('parley.name')), null);
  e2e.assertNoErrors(grace, guest);
});
