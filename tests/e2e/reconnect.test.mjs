// The server restarts under open pages: they show "reconnecting", come back "online" by
// themselves, and a page that was still away while others talked catches up (SUBSCRIBE `since`)
// without a gap or a duplicate. Alice reaches the server through a TCP proxy the test can cut.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as e2e from './lib.mjs';

let browser;
let server;
let proxy;
let dataDir;

before(async () => {
  dataDir = e2e.tempDir('restart');
  server = await e2e.startServer({ port: await e2e.freePort(), dataDir });
  proxy = await e2e.startProxy(server.port);
  browser = await e2e.launchBrowser();
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await server?.stop();
  if (dataDir) e2e.removeDir(dataDir);
});

test('server restart: reconnecting, then online, then catch-up without gap or duplicate', async () => {
  const alice = await e2e.openUser(browser, server, 'alice', { hash: 'ops', via: proxy.url });
  const bob = await e2e.openUser(browser, server, 'bob', { hash: 'ops' });
  await e2e.send(alice.page, 'before 1');
  await e2e.send(bob.page, 'before 2');
  await e2e.send(alice.page, 'before 3');
  await e2e.waitForMessage(bob.page, 'before 3');

  alice.outage = bob.outage = true;
  const stopped = await server.stop();
  assert.equal(stopped.code, 0, `parley exit on SIGTERM: ${JSON.stringify(stopped)}`);
  for (const user of [alice, bob]) {
    await user.page.locator('#conn[data-state="reconnecting"]').waitFor();
    await user.page.locator('#banner:not([hidden])').waitFor();
  }
  // Room messages written now wait in the outbox (edits.test.mjs): Send stays usable.
  assert.equal(await bob.page.locator('#send').isDisabled(), false, 'can write into the outbox while reconnecting');
  await e2e.screenshot(bob.page, 'restart-reconnecting');
  // Alice's network stays down after the server is back, while Bob talks.
  proxy.block();

  const t0 = Date.now();
  server = await e2e.startServer({ port: server.port, dataDir });
  await e2e.waitOnline(bob.page, 15_000);
  const bobBack = Date.now() - t0;
  await bob.page.locator('#banner').waitFor({ state: 'hidden' });
  bob.outage = false;
  for (const text of ['during 4', 'during 5', 'during 6']) await e2e.send(bob.page, text);
  await e2e.pause(300); // Alice, cut off, must still be away
  assert.equal(await e2e.connState(alice.page), 'reconnecting');

  const t1 = Date.now();
  proxy.unblock();
  await e2e.waitOnline(alice.page, 15_000);
  const aliceBack = Date.now() - t1;
  alice.outage = false;
  await e2e.waitForMessage(alice.page, 'during 6');
  await e2e.send(bob.page, 'after 7');
  await e2e.waitForMessage(alice.page, 'after 7');

  for (const user of [alice, bob]) {
    const msgs = await e2e.shownMessages(user.page);
    e2e.assertConsecutive(msgs, 7);
    assert.deepEqual(msgs.map((m) => m.body),
      ['before 1', 'before 2', 'before 3', 'during 4', 'during 5', 'during 6', 'after 7']);
  }
  // The catch-up came from `since` on the re-SUBSCRIBE: the client's REST gap filler never ran
  // and nothing arrived twice.
  const debug = await alice.page.evaluate(() => ({ ...window.parleyDebug }));
  assert.equal(debug.gapFills, 0, `gap fills: ${JSON.stringify(debug)}`);
  assert.equal(debug.duplicates, 0, `duplicates: ${JSON.stringify(debug)}`);
  assert.equal(debug.connects, 2);
  // Presence is rebuilt after the reconnect.
  await alice.page.locator('#member-list [data-name="bob"]').waitFor();
  await bob.page.locator('#member-list [data-name="alice"]').waitFor();
  await e2e.screenshot(alice.page, 'restart-caught-up');
  console.log(`bob online again ${bobBack} ms after the restart, alice ${aliceBack} ms after her network came back`);
  e2e.assertNoErrors(alice, bob);
  await alice.context.close();
  await bob.context.close();
});

test('against a server without `since`, the client still fills the gap (from REST) when it sees one', async () => {
  // Strip `since` from the page's SUBSCRIBE frames, as an older server would ignore it.
  const carol = await e2e.openUser(browser, server, 'carol', { hash: 'ops', via: proxy.url });
  await carol.page.routeWebSocket(/\/stomp$/, (ws) => {
    const upstream = ws.connectToServer();
    ws.onMessage((frame) => upstream.send(typeof frame === 'string' ? frame.replace(/\nsince:\d+\n/, '\n') : frame));
  });
  const dave = await e2e.openUser(browser, server, 'dave', { hash: 'ops' });
  await e2e.waitForMessage(carol.page, 'after 7');

  carol.outage = true;
  proxy.block();
  await carol.page.locator('#conn[data-state="reconnecting"]').waitFor();
  for (const text of ['gap 8', 'gap 9']) await e2e.send(dave.page, text);
  proxy.unblock();
  await e2e.waitOnline(carol.page, 15_000);
  carol.outage = false;
  await e2e.pause(300); // nothing to catch up with: the server was not asked to
  assert.equal(await carol.page.locator('#message-list > li').count(), 7);
  // The next live message shows the hole (ids are consecutive); the page fetches what is missing.
  await e2e.send(dave.page, 'live 10');
  await e2e.waitForMessage(carol.page, 'live 10');
  await carol.page.waitForFunction(() => document.querySelectorAll('#message-list > li').length === 10);
  const msgs = await e2e.shownMessages(carol.page);
  e2e.assertConsecutive(msgs, 10);
  assert.deepEqual(msgs.slice(7).map((m) => m.body), ['gap 8', 'gap 9', 'live 10']);
  const debug = await carol.page.evaluate(() => ({ ...window.parleyDebug }));
  assert.equal(debug.gapFills, 1, JSON.stringify(debug));
  assert.equal(debug.duplicates, 0, JSON.stringify(debug));
  e2e.assertNoErrors(carol, dave);
});
