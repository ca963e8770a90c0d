// Changing messages in the browser: edits ("(edited)"), deletions ("message deleted"), reactions
// and replies, live for everyone and from history after a reload; edit/delete offered on one's
// own messages only. Accounts change messages through REST, the guest Carol over STOMP. Then the
// outbox: what Bob writes while his network is cut waits as pending and arrives once, even when
// every SEND reaches the server twice, a RECEIPT is lost, or the page reloads before sending.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as e2e from './lib.mjs';

let browser;
let server;
let proxy;
let alice;
let bob;
let carol;

before(async () => {
  server = await e2e.startServer({ guests: true });
  proxy = await e2e.startProxy(server.port);
  browser = await e2e.launchBrowser();
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await server?.stop();
  if (server) e2e.removeDir(server.dataDir);
});

/** The element of the message whose body is `body`. */
const msgLi = (page, body) => page.locator('#message-list > li').filter({
  has: page.locator(':scope > .body', { hasText: new RegExp(`^${body.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) }),
});

/** Shows a message's action bar (as a pointer hovering it does) and clicks one of its buttons. */
async function act(page, body, action) {
  const li = msgLi(page, body);
  await li.hover();
  await li.locator(`.msg-actions .${action}`).click();
}

/** Waits until every page shows `body` with the "(edited)" marker. */
async function waitEdited(pages, body) {
  for (const page of pages) await msgLi(page, body).locator('.edited').waitFor();
}

/** [emoji, count, pressed] of a message's chips. */
const chips = (page, body) => msgLi(page, body).locator('.chip').evaluateAll((nodes) =>
  nodes.map((n) => [n.dataset.emoji, Number(n.dataset.count), n.getAttribute('aria-pressed') === 'true']));

async function waitChips(page, body, want) {
  await page.waitForFunction(([body, want]) => {
    const li = [...document.querySelectorAll('#message-list > li')].find((n) => n.querySelector(':scope > .body').textContent === body);
    if (!li) return false;
    const got = [...li.querySelectorAll('.chip')].map((n) => [n.dataset.emoji, Number(n.dataset.count), n.getAttribute('aria-pressed') === 'true']);
    return JSON.stringify(got) === JSON.stringify(want);
  }, [body, want]);
}

/** How many times each body is shown in the conversation. */
const counts = (page) => page.$$eval('#message-list > li > .body', (nodes) => {
  const out = {};
  for (const n of nodes) out[n.textContent] = (out[n.textContent] || 0) + 1;
  return out;
});

test('edit: "(edited)" for both, live and from history; edit and delete only on your own messages', async () => {
  alice = await e2e.openUser(browser, server, 'alice', { hash: 'events' });
  bob = await e2e.openUser(browser, server, 'bob', { hash: 'events', via: proxy.url });
  await e2e.send(alice.page, 'first draft');
  await e2e.waitForMessage(bob.page, 'first draft');

  // Bob is offered reply and react on Alice's message, never edit or delete.
  await msgLi(bob.page, 'first draft').hover();
  assert.equal(await msgLi(bob.page, 'first draft').locator('.act-reply').count(), 1);
  assert.equal(await msgLi(bob.page, 'first draft').locator('.act-react').count(), 1);
  assert.equal(await msgLi(bob.page, 'first draft').locator('.act-edit, .act-delete').count(), 0);
  assert.equal(await msgLi(alice.page, 'first draft').locator('.act-edit').count(), 1);
  assert.equal(await msgLi(alice.page, 'first draft').locator('.act-delete').count(), 1);

  await act(alice.page, 'first draft', 'act-edit');
  const editor = alice.page.locator('#message-list .edit-input');
  assert.equal(await editor.inputValue(), 'first draft');
  await editor.fill('final text');
  await editor.press('Enter');
  await waitEdited([alice.page, bob.page], 'final text');
  assert.equal(await msgLi(bob.page, 'first draft').count(), 0);

  // Up in the empty composer edits your last message.
  await e2e.send(alice.page, 'tpyo here');
  await e2e.waitForMessage(bob.page, 'tpyo here');
  await alice.page.focus('#input');
  await alice.page.keyboard.press('ArrowUp');
  await editor.waitFor();
  assert.equal(await editor.inputValue(), 'tpyo here');
  await editor.fill('typo here');
  await editor.press('Enter');
  await waitEdited([alice.page, bob.page], 'typo here');
  // Esc leaves the editor without a change.
  await alice.page.keyboard.press('ArrowUp');
  await editor.fill('never sent');
  await editor.press('Escape');
  await editor.waitFor({ state: 'detached' });
  assert.equal(await alice.page.evaluate(() => document.activeElement.id), 'input', 'back in the composer');
  await e2e.screenshot(bob.page, 'edits-edited');

  // Events are not chat lines: two messages, the same ids on both pages.
  const shown = await e2e.shownMessages(bob.page);
  assert.deepEqual(shown.map((m) => m.body), ['final text', 'typo here']);
  assert.deepEqual((await e2e.shownMessages(alice.page)).map((m) => m.id), shown.map((m) => m.id));

  // From history after a reload.
  await bob.page.reload();
  await e2e.waitOnline(bob.page);
  await waitEdited([bob.page], 'final text');
  await waitEdited([bob.page], 'typo here');
  assert.deepEqual((await e2e.shownMessages(bob.page)).map((m) => m.body), ['final text', 'typo here']);
  e2e.assertNoErrors(alice, bob);
});

test('delete: the placeholder for both, live and from history', async () => {
  await e2e.send(alice.page, 'oops, wrong room');
  await e2e.waitForMessage(bob.page, 'oops, wrong room');
  await act(alice.page, 'oops, wrong room', 'act-delete');
  // One click arms the button; the second deletes.
  const armed = alice.page.locator('#message-list .act-delete[data-armed="true"]');
  await armed.waitFor();
  await armed.click();
  for (const page of [alice.page, bob.page]) {
    await page.locator('#message-list > li[data-deleted="true"] .placeholder', { hasText: 'message deleted' }).waitFor();
    assert.equal(await msgLi(page, 'oops, wrong room').count(), 0);
  }
  await alice.page.reload();
  await e2e.waitOnline(alice.page);
  await alice.page.locator('#message-list > li[data-deleted="true"] .placeholder').waitFor();
  await e2e.waitForMessage(alice.page, 'typo here');
  assert.equal(await alice.page.locator('#message-list > li').count(), 3);
  // Nothing to do on a deleted message.
  assert.equal(await alice.page.locator('#message-list > li[data-deleted="true"] .msg-actions').count(), 0);
  e2e.assertNoErrors(alice, bob);
});

test('reactions: chips with counts for everyone, yours highlighted, a click toggles; a guest reacts over STOMP', async () => {
  await act(bob.page, 'final text', 'act-react');
  await bob.page.locator('#message-list .picker .pick[data-emoji="👍"]').click();
  await waitChips(bob.page, 'final text', [['👍', 1, true]]);
  await waitChips(alice.page, 'final text', [['👍', 1, false]]);
  // Alice adds hers with a click on the chip.
  await msgLi(alice.page, 'final text').locator('.chip[data-emoji="👍"]').click();
  await waitChips(alice.page, 'final text', [['👍', 2, true]]);
  await waitChips(bob.page, 'final text', [['👍', 2, true]]);
  assert.equal(await msgLi(bob.page, 'final text').locator('.chip').getAttribute('title'), 'alice, bob reacted with 👍');
  // Bob takes his back.
  await msgLi(bob.page, 'final text').locator('.chip[data-emoji="👍"]').click();
  await waitChips(bob.page, 'final text', [['👍', 1, false]]);
  await waitChips(alice.page, 'final text', [['👍', 1, true]]);
  assert.equal(await msgLi(bob.page, 'final text').locator('.chip').getAttribute('title'), 'alice reacted with 👍');

  // A guest (no REST for guests: the page sends the change over STOMP).
  carol = await e2e.openUser(browser, server, 'carol', { as: 'guest', hash: 'events' });
  await e2e.waitForMessage(carol.page, 'final text');
  await waitChips(carol.page, 'final text', [['👍', 1, false]]);
  await act(carol.page, 'final text', 'act-react');
  await carol.page.locator('#message-list .picker .pick[data-emoji="🎉"]').click();
  for (const [page, mine] of [[alice.page, false], [bob.page, false], [carol.page, true]]) {
    await waitChips(page, 'final text', [['👍', 1, page === alice.page], ['🎉', 1, mine]]);
  }
  await e2e.screenshot(alice.page, 'edits-reactions');
  // From history.
  await bob.page.reload();
  await e2e.waitOnline(bob.page);
  await waitChips(bob.page, 'final text', [['👍', 1, false], ['🎉', 1, false]]);
  assert.equal(await carol.page.locator('#conn').getAttribute('data-state'), 'online', 'no ERROR closed the guest');
  e2e.assertNoErrors(alice, bob, carol);
});

test('replies: the reply target above the composer, the quote for the other user, a click shows the original', async () => {
  await act(bob.page, 'final text', 'act-reply');
  const bar = bob.page.locator('#reply-bar');
  await bar.waitFor();
  assert.match(await bar.textContent(), /Replying to alice: final text/);
  await bob.page.press('#input', 'Escape');
  await bar.waitFor({ state: 'hidden' });
  await act(bob.page, 'final text', 'act-reply');
  await bar.waitFor();
  await e2e.send(bob.page, 'agreed');
  await bar.waitFor({ state: 'hidden' });
  for (const page of [alice.page, bob.page, carol.page]) {
    const quote = msgLi(page, 'agreed').locator('.reply-quote');
    await quote.waitFor();
    assert.equal(await quote.locator('.quote-from').textContent(), 'alice');
    assert.equal(await quote.locator('.quote-text').textContent(), 'final text');
  }
  await msgLi(alice.page, 'agreed').locator('.reply-quote').click();
  await alice.page.waitForFunction(() => document.activeElement?.querySelector?.(':scope > .body')?.textContent === 'final text');
  // Edited originals change their quotes; a reply whose original is deleted says so.
  await act(alice.page, 'final text', 'act-edit');
  await alice.page.locator('#message-list .edit-input').fill('final text, v2');
  await alice.page.press('#message-list .edit-input', 'Enter');
  await bob.page.waitForFunction(() => [...document.querySelectorAll('.reply-quote .quote-text')].some((n) => n.textContent === 'final text, v2'));
  await e2e.screenshot(bob.page, 'edits-reply');
  // From history: the quote is there after a reload too.
  await carol.page.reload();
  await e2e.waitOnline(carol.page);
  await msgLi(carol.page, 'agreed').locator('.reply-quote .quote-text', { hasText: 'final text, v2' }).waitFor();
  e2e.assertNoErrors(alice, bob, carol);
});

test('outbox: sent while offline shows pending and arrives once; duplicated SENDs and a lost RECEIPT do not double it; kept across a reload', async () => {
  // Every later connection of Bob's page goes through this route: each chat SEND to the room
  // reaches the server twice (and is noted: connection, client id, body); server-to-page frames
  // can be dropped (a link that died silently); and the WebSocket can be refused.
  const sends = [];
  let connections = 0;
  let dropIncoming = false;
  let refuse = false;
  await bob.page.routeWebSocket(/\/stomp$/, (ws) => {
    if (refuse) {
      ws.close();
      return;
    }
    const conn = ++connections;
    const upstream = ws.connectToServer();
    ws.onMessage((frame) => {
      upstream.send(frame);
      if (typeof frame !== 'string' || !frame.startsWith('SEND\n')) return;
      const [head, body = ''] = frame.split('\n\n');
      const headers = Object.fromEntries(head.split('\n').slice(1).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]));
      if (headers.destination !== '/topic/events' || headers.kind) return;
      upstream.send(frame);
      sends.push({ conn, clientId: headers['client-id'], body: body.replace(/\0\n*$/, '') });
    });
    upstream.onMessage((frame) => {
      if (!dropIncoming) ws.send(frame);
    });
  });

  bob.outage = true;
  proxy.block();
  await bob.page.locator('#conn[data-state="reconnecting"]').waitFor();
  assert.equal(await bob.page.locator('#send').isDisabled(), false, 'a room message can be written while away');
  for (const text of ['offline one', 'offline two']) {
    await bob.page.fill('#input', text);
    await bob.page.press('#input', 'Enter');
  }
  await bob.page.locator('#pending-list > li[data-state="queued"]').nth(1).waitFor();
  assert.deepEqual(await bob.page.$$eval('#pending-list > li .body', (n) => n.map((x) => x.textContent)), ['offline one', 'offline two']);
  await e2e.screenshot(bob.page, 'edits-outbox-pending');
  await e2e.pause(300);
  assert.equal(await msgLi(alice.page, 'offline one').count(), 0);

  proxy.unblock();
  await e2e.waitOnline(bob.page, 15_000);
  bob.outage = false;
  for (const page of [alice.page, bob.page]) {
    await e2e.waitForMessage(page, 'offline two', { from: 'bob' });
  }
  await bob.page.locator('#pending-list > li').first().waitFor({ state: 'detached' });
  assert.deepEqual(sends.map((x) => x.body), ['offline one', 'offline two'], 'each sent (twice) once back');

  // A live message, its SEND duplicated too.
  await e2e.send(bob.page, 'online three');
  await e2e.waitForMessage(alice.page, 'online three');

  // A SEND whose RECEIPT (and MESSAGE) never come back: sent again on reconnect, same client id.
  dropIncoming = true;
  await bob.page.fill('#input', 'lost receipt');
  await bob.page.press('#input', 'Enter');
  await e2e.waitForMessage(alice.page, 'lost receipt');
  assert.equal(await bob.page.locator('#pending-list > li[data-state="sending"]').count(), 1);
  bob.outage = true;
  proxy.block();
  await bob.page.locator('#conn[data-state="reconnecting"]').waitFor();
  dropIncoming = false;
  proxy.unblock();
  await e2e.waitOnline(bob.page, 15_000);
  bob.outage = false;
  await e2e.waitForMessage(bob.page, 'lost receipt');
  await bob.page.locator('#pending-list > li').first().waitFor({ state: 'detached' });
  // Sent again on the new connection, with the same client id.
  const lost = sends.filter((x) => x.body === 'lost receipt');
  assert.equal(new Set(lost.map((x) => x.conn)).size, 2, JSON.stringify(lost));
  assert.equal(new Set(lost.map((x) => x.clientId)).size, 1, JSON.stringify(lost));

  // Written while away, then the page reloads before it could send: sessionStorage keeps it.
  bob.outage = true;
  proxy.block();
  await bob.page.locator('#conn[data-state="reconnecting"]').waitFor();
  await bob.page.fill('#input', 'kept over a reload');
  await bob.page.press('#input', 'Enter');
  await bob.page.locator('#pending-list > li[data-state="queued"]').waitFor();
  refuse = true; // the page loads, but its WebSocket stays down a moment
  proxy.unblock();
  await bob.page.reload();
  await e2e.pause(500);
  assert.equal(await msgLi(alice.page, 'kept over a reload').count(), 0);
  refuse = false;
  await e2e.waitOnline(bob.page, 20_000);
  bob.outage = false;
  await e2e.waitForMessage(alice.page, 'kept over a reload', { from: 'bob' });
  await e2e.waitForMessage(bob.page, 'kept over a reload', { from: 'bob' });
  await bob.page.locator('#pending-list > li').first().waitFor({ state: 'detached' });

  await e2e.pause(500); // a second copy, if any, would be here by now
  const want = ['offline one', 'offline two', 'online three', 'lost receipt', 'kept over a reload'];
  for (const page of [alice.page, bob.page, carol.page]) {
    const shown = await counts(page);
    for (const body of want) assert.equal(shown[body], 1, `${body} shown ${shown[body]} times: ${JSON.stringify(shown)}`);
  }
  // In the order they were written, ids increasing.
  const msgs = await e2e.shownMessages(alice.page);
  assert.deepEqual(msgs.filter((m) => want.includes(m.body)).map((m) => m.body), want);
  const ids = msgs.map((m) => Number(m.id));
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
  assert.ok(sends.every((x) => /^[\x21-\x7e]{1,64}$/.test(x.clientId || '')), `client ids: ${JSON.stringify(sends)}`);
  const debug = await alice.page.evaluate(() => ({ ...window.parleyDebug }));
  assert.equal(debug.duplicates, 0, JSON.stringify(debug));
  assert.equal(await bob.page.evaluate(() => sessionStorage.length), 0, 'nothing left in the outbox');
  await e2e.screenshot(alice.page, 'edits-outbox-arrived');
  e2e.assertNoErrors(alice, bob, carol);
});

test('keyboard: the message list is one tab stop, arrows move between messages, Tab reaches the actions of one', async () => {
  const page = alice.page;
  const focused = () => page.evaluate(() => {
    const a = document.activeElement;
    const li = a.closest('#message-list > li');
    return { li: li ? li.querySelector(':scope > .body').textContent : null, self: a === li, cls: a.className, list: a.id === 'message-list' };
  });
  await page.focus('#input');
  await page.keyboard.press('Shift+Tab');
  const first = await focused();
  assert.equal(first.li, 'kept over a reload');
  assert.equal(first.self, true);
  await page.keyboard.press('ArrowUp');
  assert.equal((await focused()).li, 'lost receipt');
  await page.keyboard.press('Tab');
  const onReply = await focused();
  assert.equal(onReply.li, 'lost receipt');
  assert.match(onReply.cls, /act-reply/);
  await page.keyboard.press('Enter');
  await page.locator('#reply-bar', { hasText: 'Replying to bob: lost receipt' }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), 'input');
  await page.keyboard.press('Escape');
  await page.locator('#reply-bar').waitFor({ state: 'hidden' });
  // Backwards out of the list: no stop on any other message's buttons.
  await page.keyboard.press('Shift+Tab');
  await page.keyboard.press('Shift+Tab');
  await page.keyboard.press('Shift+Tab');
  assert.equal(await page.evaluate(() => document.getElementById('message-list').contains(document.activeElement)), false);
  e2e.assertNoErrors(alice);
});

test('past the edit window (messages.edit_window_s) the page does not try: it says so, and a guest stays connected', async () => {
  const short = await e2e.startServer({ guests: true, args: ['--edit-window', '2s', '--guests-create-rooms'] });
  const dora = await e2e.openUser(browser, short, 'dora', { as: 'guest', hash: 'quick' });
  await e2e.send(dora.page, 'hasty');
  await msgLi(dora.page, 'hasty').hover();
  assert.equal(await msgLi(dora.page, 'hasty').locator('.act-edit').count(), 1);
  await e2e.pause(2_300);
  await act(dora.page, 'hasty', 'act-delete');
  await dora.page.locator('#message-list .act-delete[data-armed="true"]').click();
  await dora.page.locator('#banner', { hasText: 'Too late to delete that message' }).waitFor();
  await msgLi(dora.page, 'hasty').hover();
  assert.equal(await msgLi(dora.page, 'hasty').locator('.act-edit, .act-delete').count(), 0, 'no longer offered');
  await dora.page.focus('#input');
  await dora.page.keyboard.press('ArrowUp');
  assert.equal(await dora.page.locator('#message-list .edit-input').count(), 0);
  await e2e.pause(300);
  assert.equal(await e2e.connState(dora.page), 'online');
  assert.equal(await dora.page.evaluate(() => window.parleyDebug.connects), 1, 'no ERROR closed the connection');
  assert.equal(await dora.page.locator('#message-list > li[data-deleted="true"]').count(), 0);
  e2e.assertNoErrors(dora);
  await dora.context.close();
  await short.stop();
  e2e.removeDir(short.dataDir);
});
