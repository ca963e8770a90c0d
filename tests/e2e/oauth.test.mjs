// Signing in with another site (docs/auth.md): the whole redirect dance in Chromium, from
// Parley's sign-in screen through a real OpenID Connect provider's login and consent pages
// (oidc-provider, tests/oidc/provider.mjs) and back: new accounts named after the provider's
// preferred_username, the "Choose a name" dialog when that name is taken, the same account on
// the next sign-in, linking and unlinking on a password account, the plain OAuth 2.0 (userinfo)
// variant, a declined consent, and a provider that is down or never answers while others chat on.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import * as e2e from './lib.mjs';
import { startProvider } from '../oidc/provider.mjs';

const SECRET = 'e2e-client-secret-not-a-real-one';
const PROVIDER_TIMEOUT_S = 2;

let browser;
let server;
let op;
let secretDir;
const users = [];

// The provider's people: sub (what Parley links) differs from preferred_username (the name).
const PEOPLE = {
  olivia: { sub: 'op-1001', preferred_username: 'olivia' },
  bob: { sub: 'op-1002', preferred_username: 'bob' }, // a Parley account "bob" exists already
  carolExt: { sub: 'op-1003', preferred_username: 'carol-ext' },
  dora: { sub: 'op-1004', preferred_username: 'dora' },
  erin: { sub: 'op-1005', preferred_username: 'erin' },
  harry: { sub: 'op-1006', preferred_username: 'harry' },
  ivan: { sub: 'op-1007', preferred_username: 'ivan' },
};

before(async () => {
  const port = await e2e.freePort();
  const base = `http://127.0.0.1:${port}`;
  op = await startProvider({
    clients: [{
      client_id: 'parley', client_secret: SECRET,
      redirect_uris: [`${base}/auth/test/callback`, `${base}/auth/test-oauth/callback`],
    }],
    users: Object.values(PEOPLE),
    anyLogin: false,
  });
  secretDir = e2e.tempDir('oidc-secret');
  const secretFile = path.join(secretDir, 'client-secret');
  writeFileSync(secretFile, SECRET, { mode: 0o600 });
  [server, browser] = await Promise.all([
    // No --public-url: the redirect URI comes from the Host header (127.0.0.1:<port>).
    e2e.startServer({
      port,
      args: [
        '--auth-provider', `name=test,label=Test ID,issuer=${op.issuer},client-id=parley,client-secret-file=${secretFile}`,
        '--auth-provider', [
          'name=test-oauth', 'label=Test OAuth', `authorize-url=${op.issuer}/auth`, `token-url=${op.issuer}/token`,
          `userinfo-url=${op.issuer}/me`, 'id-field=sub', 'name-field=preferred_username', 'client-id=parley',
          // oidc-provider's userinfo endpoint wants the openid scope on the access token.
          `client-secret-file=${secretFile}`, 'scopes=openid profile',
        ].join(','),
        '--provider-timeout', `${PROVIDER_TIMEOUT_S}s`,
        '--registrations-per-ip', '1000', // every sign-in here makes an account from 127.0.0.1
        '--sign-ins-per-ip', '1000',
      ],
    }),
    e2e.launchBrowser(),
  ]);
  await e2e.register(server, 'watcher'); // reads the directory
  await e2e.register(server, 'bob'); // takes the provider's name for PEOPLE.bob
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await op?.close();
  if (server) e2e.removeDir(server.dataDir);
  if (secretDir) e2e.removeDir(secretDir);
});

async function openPage(name, options) {
  const user = await e2e.openPage(browser, server, name, options);
  users.push(user);
  return user;
}

const onParley = (url) => new URL(url).origin === server.url;

/** Runs `act` (a click) and waits for the next document the page commits, redirects followed. */
async function navigation(page, act) {
  await Promise.all([page.waitForEvent('framenavigated', { predicate: (f) => f === page.mainFrame() }), act()]);
  await page.waitForLoadState();
}

/**
 * Presses "Sign in with <label>" (or follows `link`, an element on the page) and goes through the
 * provider's pages as `person`: its "Sign-in" page (any password) when it does not know the
 * browser yet, then its "Authorize" page — "Continue", or "[ Cancel ]" with `consent: false` —
 * until the browser is back on Parley. A provider that knows the browser and the grant sends it
 * straight back.
 */
async function throughProvider(page, person, { provider = 'test', consent = true, link = null } = {}) {
  const start = link ?? page.locator(`a.provider-login[data-provider="${provider}"]`);
  await navigation(page, () => start.click());
  for (let step = 0; step < 4 && !onParley(page.url()); step++) {
    const heading = page.locator('.login-card h1, #op-error').first();
    await heading.waitFor();
    if (await page.locator('#op-error').count()) throw new Error(`the provider failed: ${await page.locator('#op-error').textContent()}`);
    const title = await heading.textContent();
    if (title === 'Sign-in') {
      await page.fill('input[name="login"]', person.sub);
      await page.fill('input[name="password"]', 'any password will do');
      await navigation(page, () => page.click('button.login-submit'));
    } else if (title === 'Authorize') {
      await navigation(page, () => (consent ? page.click('button.login-submit') : page.click('a:text("[ Cancel ]")')));
    } else {
      throw new Error(`unexpected provider page "${title}" at ${page.url()}`);
    }
  }
  assert.ok(onParley(page.url()), `still at the provider: ${page.url()}`);
}

/** Back from the provider signed in as `name`: online, the name shown, no dialog open. */
async function landedAs(page, name) {
  await e2e.waitOnline(page);
  assert.equal(await page.locator('#me-name').textContent(), name);
  assert.equal(await page.locator('#auth-dialog[open], #signup-dialog[open]').count(), 0);
  assert.equal(new URL(page.url()).pathname, '/');
}

async function signOut(page) {
  await page.click('#sign-out');
  await e2e.waitSignIn(page);
}

async function openIdentities(page) {
  const box = page.locator('#identities-box');
  await box.waitFor();
  if (!(await box.evaluate((d) => d.open))) await page.click('#identities-box > summary');
  await page.locator('#identities[data-loaded="true"]').waitFor();
}

async function accounts() {
  const token = await e2e.apiToken(server, 'watcher');
  const r = await fetch(`${server.url}/api/users?limit=200`, { headers: { authorization: `Bearer ${token}` } });
  return (await r.json()).users.map((u) => u.name);
}

test('the sign-in screen offers one link per provider, from GET /api/auth/providers', async () => {
  const user = await openPage('anyone');
  await e2e.waitSignIn(user.page);
  const links = await user.page.$$eval('a.provider-login', (as) => as.map((a) => ({
    provider: a.dataset.provider, text: a.textContent, href: a.getAttribute('href'), visible: a.offsetParent !== null,
  })));
  assert.deepEqual(links, [
    { provider: 'test', text: 'Sign in with Test ID', href: '/auth/test/login', visible: true },
    { provider: 'test-oauth', text: 'Sign in with Test OAuth', href: '/auth/test-oauth/login', visible: true },
  ]);
  const listed = await (await fetch(`${server.url}/api/auth/providers`)).json();
  assert.deepEqual(listed, { providers: [
    { name: 'test', label: 'Test ID', kind: 'oidc' },
    { name: 'test-oauth', label: 'Test OAuth', kind: 'oauth2' },
  ] });
  await e2e.screenshot(user.page, 'oauth-sign-in');
  e2e.assertNoErrors(user);
  await user.context.close();
});

test('first sign-in with a free name makes that account; the next one lands on it again', async () => {
  const user = await openPage('olivia', { hash: 'hall' });
  const { page } = user;
  await e2e.waitSignIn(page);
  await throughProvider(page, PEOPLE.olivia);
  await landedAs(page, 'olivia');
  // Signed in as any account: the HttpOnly session cookie, nothing readable by the page.
  const session = (await user.context.cookies()).find((c) => c.name === 'parley_session');
  assert.ok(session?.httpOnly, 'no HttpOnly parley_session cookie');
  assert.ok(!(await page.evaluate(() => document.cookie)).includes('parley_session'));
  await page.evaluate(() => { location.hash = '#hall'; });
  await page.locator('#conv-title', { hasText: '#hall' }).waitFor();
  await e2e.send(page, 'olivia here, through the provider');
  await e2e.screenshot(page, 'oauth-signed-in');

  // Again after signing out: the provider remembers the browser (no pages, or only consent) and
  // Parley finds the linked identity: the same account, with its message.
  await signOut(page);
  await throughProvider(page, PEOPLE.olivia);
  await landedAs(page, 'olivia');
  await page.evaluate(() => { location.hash = '#hall'; });
  await e2e.waitForMessage(page, 'olivia here, through the provider', { from: 'olivia' });
  const names = await accounts();
  assert.equal(names.filter((n) => n.startsWith('olivia')).length, 1, `accounts: ${names}`);

  // Her only way in is the provider: unlinking it is refused, in words.
  await openIdentities(page);
  assert.equal(await page.locator('#identities [data-kind="password"]').count(), 0);
  user.expectHttp.push({ path: '/api/account/identities/test', status: 409 });
  await page.click('button.provider-unlink[data-provider="test"]');
  const error = page.locator('#identities-error');
  await error.filter({ hasText: /\w/ }).waitFor();
  assert.ok((await error.textContent()).length > 5, 'no words for the refusal');
  assert.equal(await page.locator('button.provider-unlink[data-provider="test"]').count(), 1, 'the identity went away');
  await e2e.screenshot(page, 'oauth-unlink-refused');
  e2e.assertNoErrors(user);
  await user.context.close();
});

test('first sign-in with a taken name: "Choose a name", then signed in under the chosen one', async () => {
  const user = await openPage('bob-ext');
  const { page } = user;
  user.expectHttp.push({ path: '/api/auth/signup', status: 409 }, { path: '/api/auth/signup', status: 400 });
  await e2e.waitSignIn(page);
  await throughProvider(page, PEOPLE.bob);
  assert.equal(new URL(page.url()).search, '?signup');
  await page.locator('#signup-dialog[open]').waitFor();
  assert.equal(await page.inputValue('#signup-name'), 'bob', 'the suggested name');
  assert.match(await page.locator('#signup-intro').textContent(), /Test ID/);
  const cookie = (await user.context.cookies()).find((c) => c.name === 'parley_signup');
  assert.ok(cookie?.httpOnly, 'the pending sign-up is an HttpOnly cookie');
  await e2e.screenshot(page, 'oauth-choose-name');
  // Taken: 409, said so.
  await page.click('#signup-submit');
  await page.locator('#signup-error', { hasText: /taken/i }).waitFor();
  // Not a name: the server's rule, in its words.
  await page.fill('#signup-name', 'bob smith!');
  await page.click('#signup-submit');
  await page.waitForFunction(() => {
    const words = document.getElementById('signup-error').textContent;
    return words && !/taken/i.test(words);
  });
  assert.equal(await page.locator('#signup-dialog[open]').count(), 1);
  await page.fill('#signup-name', 'bob-the-builder');
  await page.click('#signup-submit');
  await landedAs(page, 'bob-the-builder');
  assert.equal(new URL(page.url()).search, '', '?signup stays in the address');
  // Next time: straight in as bob-the-builder.
  await signOut(page);
  await throughProvider(page, PEOPLE.bob);
  await landedAs(page, 'bob-the-builder');
  e2e.assertNoErrors(user);
  await user.context.close();
});

test('a password account links the provider, signs in through it, then unlinks it', async () => {
  const user = await e2e.openUser(browser, server, 'carol', { hash: 'hall' });
  users.push(user);
  const { page } = user;
  await openIdentities(page);
  assert.equal(await page.locator('#identities [data-kind="password"]').count(), 1);
  const link = page.locator('a.provider-link[data-provider="test"]');
  assert.equal(await link.textContent(), 'Link Test ID');
  assert.equal(await link.getAttribute('href'), '/auth/test/login?link=1&return_to=/');
  assert.equal(await page.locator('a.provider-link[data-provider="test-oauth"]').count(), 1);
  await throughProvider(page, PEOPLE.carolExt, { link });
  await landedAs(page, 'carol');
  await openIdentities(page);
  await page.locator('button.provider-unlink[data-provider="test"]').waitFor();
  assert.equal(await page.locator('a.provider-link[data-provider="test"]').count(), 0);
  await e2e.screenshot(page, 'oauth-linked');

  // Signing in through the provider is now signing in as carol (no account "carol-ext").
  await signOut(page);
  await throughProvider(page, PEOPLE.carolExt);
  await landedAs(page, 'carol');
  assert.ok(!(await accounts()).includes('carol-ext'));

  // Unlinked (she still has her password): the same provider person is a stranger again.
  await openIdentities(page);
  await page.click('button.provider-unlink[data-provider="test"]');
  await page.locator('a.provider-link[data-provider="test"]').waitFor();
  assert.equal(await page.locator('#identities-error').textContent(), '');
  await signOut(page);
  await throughProvider(page, PEOPLE.carolExt);
  await landedAs(page, 'carol-ext');
  e2e.assertNoErrors(user);
  await user.context.close();
});

test('plain OAuth 2.0: the user comes from the userinfo endpoint', async () => {
  const user = await openPage('dora');
  const { page } = user;
  await e2e.waitSignIn(page);
  const before = op.requests.length;
  await throughProvider(page, PEOPLE.dora, { provider: 'test-oauth' });
  await landedAs(page, 'dora');
  const asked = op.requests.slice(before).map((r) => `${r.method} ${r.path}`);
  assert.ok(asked.includes('POST /token'), `provider requests: ${asked}`);
  assert.ok(asked.includes('GET /me'), `the userinfo endpoint was not asked: ${asked}`);
  e2e.assertNoErrors(user);
  await user.context.close();
});

test('declining consent brings the person back to a page that says so', async () => {
  const user = await openPage('erin');
  const { page } = user;
  // The error page's status: 400 or 502 (Chromium logs either).
  user.expectHttp.push({ path: '/auth/test/callback', status: 400 }, { path: '/auth/test/callback', status: 502 });
  await e2e.waitSignIn(page);
  await throughProvider(page, PEOPLE.erin, { consent: false });
  await page.locator('#auth-error', { hasText: /declined/i }).waitFor();
  assert.equal(new URL(page.url()).pathname, '/auth/test/callback');
  await e2e.screenshot(page, 'oauth-declined');
  await page.click('a:text("Back to Parley")');
  await e2e.waitSignIn(page);
  assert.ok(!(await accounts()).includes('erin'), 'an account was made without consent');
  e2e.assertNoErrors(user);
  await user.context.close();
});

test('a provider that never answers, or is down: words within the timeout, while others chat on', async () => {
  const frank = await e2e.openUser(browser, server, 'frank', { hash: 'lounge' });
  const gina = await e2e.openUser(browser, server, 'gina', { hash: 'lounge' });
  users.push(frank, gina);
  const limit = (PROVIDER_TIMEOUT_S + 3) * 1000;

  for (const [how, words] of [['hang', /did not answer|could not be reached/i], ['down', /could not be reached|did not answer/i]]) {
    const person = how === 'hang' ? PEOPLE.harry : PEOPLE.ivan;
    const user = await openPage(person.preferred_username);
    const { page } = user;
    user.expectHttp.push({ path: '/auth/test/callback', status: 502 }, { path: '/auth/test/callback', status: 400 });
    await e2e.waitSignIn(page);
    // The provider fails just as it sends the browser back with the code: Parley's token request
    // (and anything after it) finds nobody answering, or nobody there.
    op.failAfterRedirect(how);
    let cameBack = 0;
    page.on('request', (req) => {
      if (!cameBack && req.url().startsWith(`${server.url}/auth/test/callback?`)) cameBack = Date.now();
    });
    const chat = (async () => {
      await e2e.send(frank.page, `still chatting while the provider is ${how}`);
      await e2e.waitForMessage(gina.page, `still chatting while the provider is ${how}`, { from: 'frank' });
      await e2e.send(gina.page, `me too (${how})`);
      await e2e.waitForMessage(frank.page, `me too (${how})`, { from: 'gina' });
    })();
    chat.catch(() => {}); // awaited below; not unhandled if the sign-in fails first
    try {
      await throughProvider(page, person);
      await page.locator('#auth-error').filter({ hasText: words }).waitFor({ timeout: limit });
      assert.ok(cameBack, 'the browser never came back to the callback');
      const took = Date.now() - cameBack;
      assert.ok(took <= limit, `the error page took ${took} ms`);
      if (how === 'hang') assert.ok(took >= PROVIDER_TIMEOUT_S * 1000 - 300, `gave up after ${took} ms, before the timeout`);
      await chat;
      await e2e.screenshot(page, `oauth-provider-${how}`);
    } finally {
      op.setHang(false);
      await op.setDown(false);
    }
    // Back up: the same person gets in.
    await page.click('a:text("Back to Parley")');
    await e2e.waitSignIn(page);
    await throughProvider(page, person);
    await landedAs(page, person.preferred_username);
    e2e.assertNoErrors(user);
    await user.context.close();
  }
  assert.equal(await e2e.connState(frank.page), 'online');
  assert.equal(await frank.page.evaluate(() => window.parleyDebug.connects), 1, 'frank reconnected');
  e2e.assertNoErrors(frank, gina);
  await frank.context.close();
  await gina.context.close();
});
