// Unread counts and stored direct messages in the browser: badges on rooms and DMs (mentions
// highlighted), the total in the tab title, marks that clear the other tabs of the same user, a DM
// to an offline account delivered when they sign in, DM history across reloads, DM paging.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as e2e from './lib.mjs';

let browser;
let server;

e2e.serveFile({}, (b, s) => {
  browser = b;
  server = s;
});

/** Another tab of `user` (same context: same session cookie) at `hash`, errors collected. */
async function openTab(user, hash) {
  const page = await user.context.newPage();
  page.setDefaultTimeout(e2e.WAIT);
  const tab = { name: `${user.name} (tab 2)`, page, errors: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error') tab.errors.push(`console.error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => tab.errors.push(`pageerror: ${err.stack || err.message}`));
  await page.goto(`${server.url}/#${hash}`);
  await e2e.waitOnline(page);
  await page.locator('#conv-title', { hasText: `#${hash}` }).waitFor();
  return tab;
}

/**
 * Waits until the server holds a mark of `user` at `id` or later on `room` (GET /api/rooms), or
 * on the conversation with `dm` (GET /api/dms).
 */
async function waitMark(user, { room, dm }, id) {
  const token = await e2e.apiToken(server, user);
  const headers = { authorization: `Bearer ${token}` };
  for (let i = 0; i < 50; i++) {
    const body = await (await fetch(`${server.url}${room ? '/api/rooms' : '/api/dms'}`, { headers })).json();
    const entry = room ? body.rooms.find((x) => x.name === room) : body.conversations.find((x) => x.with === dm);
    if (entry && Number(entry.last_read) >= Number(id)) return;
    await e2e.pause(200);
  }
  assert.fail(`${user} never marked ${room ? `#${room}` : `@${dm}`} read up to ${id}`);
}

const badge = (page, kind, name) => page.locator(`#${kind}-list a[data-name="${name}"] .badge`);
const refresh = (page) => page.evaluate(() => window.dispatchEvent(new Event('focus')));
const waitTitle = (page, title) => page.waitForFunction((t) => document.title === t, title);
const setHidden = (page, hidden) => page.evaluate((value) => {
  Object.defineProperty(document, 'hidden', { get: () => value, configurable: true });
  Object.defineProperty(document, 'visibilityState', { get: () => (value ? 'hidden' : 'visible'), configurable: true });
  document.dispatchEvent(new Event('visibilitychange'));
}, hidden);

test('counts on a room and a DM when someone writes, the total in the title; reading clears them in every tab', async () => {
  const alice = await e2e.openUser(browser, server, 'alice', { hash: 'lobby' });
  await e2e.send(alice.page, 'welcome');
  // Bob reads #lobby (his mark: 1), then moves to #side, in two tabs.
  const bob = await e2e.openUser(browser, server, 'bob', { hash: 'lobby' });
  await e2e.waitForMessage(bob.page, 'welcome');
  await waitMark('bob', { room: 'lobby' }, '1'); // the page marked what it showed
  await bob.page.evaluate(() => {
    location.hash = '#side';
  });
  await bob.page.locator('#conv-title', { hasText: '#side' }).waitFor();
  const bob2 = await openTab(bob, 'side');
  for (const page of [bob.page, bob2.page]) assert.equal(await badge(page, 'room', 'lobby').count(), 0, 'lobby is read');

  // Alice writes twice in #lobby (once mentioning bob): a room bob's pages do not subscribe to,
  // so they learn it from the server when their counts refresh (here: on focus).
  await e2e.send(alice.page, 'one');
  await e2e.send(alice.page, '@bob two');
  for (const page of [bob.page, bob2.page]) {
    await refresh(page);
    await badge(page, 'room', 'lobby').filter({ hasText: /^2$/ }).waitFor();
    assert.equal(await badge(page, 'room', 'lobby').getAttribute('data-mentions'), '1');
    assert.match(await badge(page, 'room', 'lobby').getAttribute('class'), /\bmention\b/);
    await waitTitle(page, '(2) #side · Parley');
  }
  // A DM: live, in both tabs.
  await alice.page.evaluate(() => {
    location.hash = '#@bob';
  });
  await alice.page.locator('#conv-title', { hasText: '@bob' }).waitFor();
  await e2e.send(alice.page, 'a word in private');
  for (const page of [bob.page, bob2.page]) {
    await badge(page, 'dm', 'alice').filter({ hasText: /^1$/ }).waitFor();
    await waitTitle(page, '(3) #side · Parley');
  }
  await e2e.screenshot(bob.page, 'unread-counts');

  // Bob opens #lobby in tab 1: read there, and tab 2 hears the mark.
  await bob.page.locator('#room-list a[data-name="lobby"]').click();
  await e2e.waitForMessage(bob.page, '@bob two');
  await bob.page.waitForFunction(() => !document.querySelector('#room-list a[data-name="lobby"] .badge'));
  await waitTitle(bob.page, '(1) #lobby · Parley');
  await bob2.page.waitForFunction(() => !document.querySelector('#room-list a[data-name="lobby"] .badge'));
  await waitTitle(bob2.page, '(1) #side · Parley');
  // The DM too.
  await bob.page.locator('#dm-list a[data-name="alice"]').click();
  await e2e.waitForMessage(bob.page, 'a word in private', { from: 'alice' });
  await waitTitle(bob.page, '@alice · Parley');
  await bob2.page.waitForFunction(() => !document.querySelector('#dm-list a[data-name="alice"] .badge'));
  await waitTitle(bob2.page, '#side · Parley');

  // A hidden tab counts live messages of the conversation it shows, and reads them once visible.
  await bob.page.locator('#room-list a[data-name="lobby"]').click();
  await bob.page.locator('#conv-title', { hasText: '#lobby' }).waitFor();
  await alice.page.evaluate(() => {
    location.hash = '#lobby';
  });
  await alice.page.locator('#conv-title', { hasText: '#lobby' }).waitFor();
  await setHidden(bob.page, true);
  await e2e.send(alice.page, 'while you were away');
  await e2e.waitForMessage(bob.page, 'while you were away');
  await waitTitle(bob.page, '(1) #lobby · Parley');
  await badge(bob.page, 'room', 'lobby').filter({ hasText: /^1$/ }).waitFor();
  await setHidden(bob.page, false);
  await waitTitle(bob.page, '#lobby · Parley');
  await refresh(bob2.page);
  await e2e.pause(500);
  await waitTitle(bob2.page, '#side · Parley');
  e2e.assertNoErrors(alice, bob, bob2);
  await Promise.all([alice.context.close(), bob.context.close()]);
});

test('a DM to an offline account arrives when they sign in; DM history survives reloads on both sides', async () => {
  await e2e.register(server, 'dora'); // has never been online
  const carl = await e2e.openUser(browser, server, 'carl', { hash: '@dora' });
  await carl.page.locator('#history-status[data-state="start"]').waitFor();
  await e2e.send(carl.page, 'hi dora, for when you are back');
  await e2e.send(carl.page, 'and a second one');

  const dora = await e2e.openPage(browser, server, 'dora');
  await e2e.signIn(dora.page, 'dora');
  await e2e.waitOnline(dora.page);
  await badge(dora.page, 'dm', 'carl').filter({ hasText: /^2$/ }).waitFor();
  await dora.page.waitForFunction(() => /^\(2\) /.test(document.title));
  await dora.page.locator('#dm-list a[data-name="carl"]').click();
  await e2e.waitForMessage(dora.page, 'and a second one', { from: 'carl' });
  await e2e.send(dora.page, 'got both');
  await e2e.waitForMessage(carl.page, 'got both', { from: 'dora' });
  await dora.page.waitForFunction(() => !/^\(/.test(document.title));
  // The pages mark what they show (debounced): carl read dora's 3, dora carl's 2.
  await waitMark('carl', { dm: 'dora' }, '3');
  await waitMark('dora', { dm: 'carl' }, '2');

  const expected = [['1', 'carl', 'hi dora, for when you are back'], ['2', 'carl', 'and a second one'], ['3', 'dora', 'got both']];
  const shown = async (page) => (await e2e.shownMessages(page)).map((m) => [m.id, m.from, m.body]);
  for (const user of [carl, dora]) assert.deepEqual(await shown(user.page), expected);

  // Reload both: the conversation is listed and its history comes back from the server.
  for (const user of [carl, dora]) {
    await user.page.reload();
    await e2e.waitOnline(user.page);
    const peer = user === carl ? 'dora' : 'carl';
    await user.page.locator(`#dm-list a[data-name="${peer}"]`).waitFor();
    assert.equal(await badge(user.page, 'dm', peer).count(), 0, 'read before the reload');
    if (user === dora) await user.page.locator('#dm-list a[data-name="carl"]').click();
    await user.page.locator('#conv-title', { hasText: `@${peer}` }).waitFor();
    await e2e.waitForMessage(user.page, 'got both');
    assert.deepEqual(await shown(user.page), expected);
    assert.equal(await user.page.locator('#history-status').getAttribute('data-state'), 'start');
  }
  // A new message after the reload appends once, in order.
  await e2e.send(carl.page, 'welcome back');
  await e2e.waitForMessage(dora.page, 'welcome back', { from: 'carl' });
  assert.deepEqual(await shown(dora.page), [...expected, ['4', 'carl', 'welcome back']]);
  assert.equal(await dora.page.evaluate(() => window.parleyDebug.duplicates), 0);
  await e2e.screenshot(dora.page, 'dm-history');
  e2e.assertNoErrors(carl, dora);
  await Promise.all([carl.context.close(), dora.context.close()]);
});

test('a long DM conversation pages in on scroll-up, with no gap or duplicate', async () => {
  await e2e.register(server, 'gus');
  const token = await e2e.apiToken(server, 'gus');
  const hal = await e2e.openUser(browser, server, 'hal', { hash: 'lobby', viewport: { width: 1280, height: 700 } });
  // 70 DMs from gus, through a raw /ws client in hal's page (any client would do).
  const seeded = await hal.page.evaluate(async ([n, jwt]) => {
    const ws = new WebSocket(`${location.origin.replace('http', 'ws')}/ws?access_token=${jwt}`);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    });
    let acks = 0;
    const done = new Promise((resolve) => {
      ws.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.type === 'ack' && ++acks === n) resolve(acks);
      };
    });
    for (let i = 1; i <= n; i++) ws.send(JSON.stringify({ type: 'send', to: 'hal', body: `note ${i}`, ref: String(i) }));
    const count = await done;
    ws.close();
    return count;
  }, [70, token]);
  assert.equal(seeded, 70);
  await badge(hal.page, 'dm', 'gus').filter({ hasText: /^70$/ }).waitFor();
  await hal.page.locator('#dm-list a[data-name="gus"]').click();
  await e2e.waitForMessage(hal.page, 'note 70');
  const box = hal.page.locator('#messages');
  await box.evaluate((node) => {
    node.scrollTop = 0;
  });
  await hal.page.waitForFunction(() => document.querySelectorAll('#message-list > li').length === 70);
  await hal.page.locator('#history-status[data-state="start"]').waitFor();
  const msgs = await e2e.shownMessages(hal.page);
  e2e.assertConsecutive(msgs, 70);
  assert.deepEqual(msgs.map((m) => m.body), Array.from({ length: 70 }, (_, i) => `note ${i + 1}`));
  assert.equal(await hal.page.evaluate(() => window.parleyDebug.duplicates), 0);
  e2e.assertNoErrors(hal);
  await hal.context.close();
});

test('a DM lost on the way is fetched from REST when the next one shows the gap', async () => {
  const jack = await e2e.openUser(browser, server, 'jack', { hash: 'lobby' });
  const ivy = await e2e.openUser(browser, server, 'ivy', { hash: '@jack' });
  // From now on ivy's page does not get the MESSAGE frame of one DM.
  await ivy.page.routeWebSocket(/\/stomp$/, (ws) => {
    const upstream = ws.connectToServer();
    ws.onMessage((frame) => upstream.send(frame));
    upstream.onMessage((frame) => {
      if (typeof frame === 'string' && frame.includes('lost on the way')) return;
      ws.send(frame);
    });
  });
  await ivy.page.reload();
  await e2e.waitOnline(ivy.page);
  await ivy.page.locator('#conv-title', { hasText: '@jack' }).waitFor();
  await jack.page.evaluate(() => {
    location.hash = '#@ivy';
  });
  await jack.page.locator('#conv-title', { hasText: '@ivy' }).waitFor();
  for (const text of ['first', 'lost on the way', 'third']) await e2e.send(jack.page, text);
  await e2e.waitForMessage(ivy.page, 'third');
  await ivy.page.waitForFunction(() => document.querySelectorAll('#message-list > li').length === 3);
  const msgs = await e2e.shownMessages(ivy.page);
  e2e.assertConsecutive(msgs, 3);
  assert.deepEqual(msgs.map((m) => m.body), ['first', 'lost on the way', 'third']);
  const debug = await ivy.page.evaluate(() => ({ ...window.parleyDebug }));
  assert.equal(debug.gapFills, 1, JSON.stringify(debug));
  assert.equal(debug.duplicates, 0, JSON.stringify(debug));
  e2e.assertNoErrors(jack, ivy);
  await Promise.all([jack.context.close(), ivy.context.close()]);
});

test('a DM to a name that is no account: the page says so, the message is marked not sent, the page comes back', async () => {
  const kay = await e2e.openUser(browser, server, 'kay', { hash: 'lobby' });
  kay.expectHttp.push({ path: '/api/dms/nobody-here/messages', status: 404 });
  await kay.page.evaluate(() => {
    location.hash = '#@nobody-here';
  });
  await kay.page.locator('#history-status', { hasText: 'nobody-here has no account here' }).waitFor();
  await e2e.send(kay.page, 'anyone there?', { confirmed: false });
  await kay.page.locator('#message-list > li[data-state="failed"]', { hasText: 'anyone there?' }).waitFor();
  await e2e.waitOnline(kay.page); // the server closed the connection after its ERROR; it comes back
  await kay.page.locator('#room-list a[data-name="lobby"]').click();
  await e2e.send(kay.page, 'still here');
  e2e.assertNoErrors(kay);
  await kay.context.close();
});
