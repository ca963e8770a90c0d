// The web client over HTTPS and wss:// (docs/deploy.md, TLS at Parley): Chromium trusts the test
// certificate by its public key alone (--ignore-certificate-errors-spki-list; every other check
// stays on), two people sign up and chat, the page's WebSocket is wss://, the session cookie is
// Secure and the page gets HSTS.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as e2e from './lib.mjs';
import { spkiHash, testCa } from '../interop/js/testca.mjs';

let browser;
let server;
const users = [];

// Records every WebSocket URL the page opens.
const SPY = () => {
  const Native = window.WebSocket;
  window.__wsUrls = [];
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      window.__wsUrls.push(String(url));
    }
  };
};

before(async () => {
  const served = testCa().served('e2e');
  server = await e2e.startServer({ args: ['--tls-cert', served.cert, '--tls-key', served.key, '--stomp-tls', 'off'] });
  assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  browser = await e2e.launchBrowser({ args: [`--ignore-certificate-errors-spki-list=${spkiHash(served.cert)}`] });
});

after(async () => {
  for (const u of users) await u.context.close().catch(() => {});
  await browser?.close();
  await server?.stop();
  if (server) e2e.removeDir(server.dataDir);
});

test('sign up and chat over https and wss://, with a Secure session cookie and HSTS', async () => {
  const alice = await e2e.openUser(browser, server, 'alice', { hash: 'secure', init: SPY });
  const bob = await e2e.openUser(browser, server, 'bob', { hash: 'secure', init: SPY });
  users.push(alice, bob);
  await e2e.send(alice.page, 'hello over TLS');
  await e2e.waitForMessage(bob.page, 'hello over TLS', { from: 'alice' });
  await e2e.send(bob.page, 'encrypted both ways');
  await e2e.waitForMessage(alice.page, 'encrypted both ways', { from: 'bob' });

  for (const user of [alice, bob]) {
    const urls = await user.page.evaluate(() => window.__wsUrls);
    assert.ok(urls.length > 0 && urls.every((u) => u.startsWith('wss://')), `WebSocket URLs ${JSON.stringify(urls)}`);
    const session = (await user.context.cookies()).find((c) => c.name === 'parley_session');
    assert.ok(session, 'no session cookie');
    assert.equal(session.secure, true, 'the session cookie is Secure over TLS');
  }
  const hsts = await alice.page.evaluate(async () => (await fetch('/healthz')).headers.get('strict-transport-security'));
  assert.equal(hsts, 'max-age=31536000');
  await e2e.screenshot(alice.page, 'tls-chat');
  e2e.assertNoErrors(alice, bob);
});
