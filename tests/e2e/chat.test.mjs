// Chatting in the browser: two users in a room, a late joiner's history, presence, typing, a
// direct message that reaches only its recipient, rooms (public and private), scroll-up paging,
// and text-only rendering. The server is strict (accounts only): every user creates an account
// on the page's sign-in screen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as e2e from './lib.mjs';

let browser;
let server;
const users = [];

async function open(name, options) {
  const user = await e2e.openUser(browser, server, name, options);
  users.push(user);
  return user;
}

e2e.serveFile({}, (b, s) => {
  browser = b;
  server = s;
});

let alice;
let bob;
let carol;

test('two users chat in a room: both see both messages, in order, and each other', async () => {
  alice = await open('alice', { hash: 'lobby' });
  bob = await open('bob', { hash: 'lobby' });
  for (const user of [alice, bob]) {
    assert.equal(await user.page.locator('#conv-title').textContent(), '#lobby');
  }
  await e2e.send(alice.page, 'hi bob');
  await e2e.waitForMessage(bob.page, 'hi bob', { from: 'alice' });
  await e2e.send(bob.page, 'hi alice\nhow are you?');
  await e2e.waitForMessage(alice.page, 'hi alice\nhow are you?', { from: 'bob' });
  for (const user of [alice, bob]) {
    const msgs = await e2e.shownMessages(user.page);
    e2e.assertConsecutive(msgs, 2);
    assert.deepEqual(msgs.map((m) => [m.from, m.body]), [['alice', 'hi bob'], ['bob', 'hi alice\nhow are you?']]);
  }
  // Presence: each sees the other (members list, then join events).
  await alice.page.locator('#member-list [data-name="bob"]').waitFor();
  await bob.page.locator('#member-list [data-name="alice"]').waitFor();
  assert.equal(await alice.page.locator('#member-list [data-name="alice"] .you').count(), 1);
  // The room was created by opening it, and is listed.
  await bob.page.locator('#room-list a[data-name="lobby"].active').waitFor();
  e2e.assertNoErrors(alice, bob);
});

test('a third user joining later sees the history; the others see her arrive', async () => {
  carol = await open('carol', { hash: 'lobby' });
  await e2e.waitForMessage(carol.page, 'hi alice\nhow are you?');
  const msgs = await e2e.shownMessages(carol.page);
  e2e.assertConsecutive(msgs, 2);
  assert.deepEqual(msgs.map((m) => m.body), ['hi bob', 'hi alice\nhow are you?']);
  assert.equal(await carol.page.locator('#history-status').getAttribute('data-state'), 'start');
  await alice.page.locator('#member-list [data-name="carol"]').waitFor();
  await bob.page.locator('#member-list [data-name="carol"]').waitFor();
  for (const name of ['alice', 'bob', 'carol']) await carol.page.locator(`#member-list [data-name="${name}"]`).waitFor();
  await e2e.screenshot(alice.page, 'chat-desktop');
  e2e.assertNoErrors(alice, bob, carol);
});

test('the typing indicator shows for the others, not for the typist, and goes away', async () => {
  await bob.page.locator('#input').pressSequentially('let me think', { delay: 20 });
  await alice.page.locator('#typing', { hasText: 'bob is typing…' }).waitFor();
  await carol.page.locator('#typing', { hasText: 'bob is typing…' }).waitFor();
  assert.equal(await bob.page.locator('#typing').textContent(), '');
  // About 3 s after the last notice it disappears by itself.
  await alice.page.waitForFunction(() => document.getElementById('typing').textContent === '', null, { timeout: 6000 });
  // And at once when bob's message arrives.
  await bob.page.locator('#input').pressSequentially('!', { delay: 20 });
  await alice.page.locator('#typing', { hasText: 'bob is typing…' }).waitFor();
  await bob.page.press('#input', 'Enter');
  await e2e.waitForMessage(alice.page, 'let me think!');
  assert.equal(await alice.page.locator('#typing').textContent(), '');
  e2e.assertNoErrors(alice, bob, carol);
});

test('a direct message reaches only its recipient', async () => {
  await alice.page.click('#member-list [data-name="bob"] .dm-btn');
  await alice.page.locator('#conv-title', { hasText: '@bob' }).waitFor();
  await e2e.send(alice.page, 'psst, bob: the secret is 42');
  // Bob gets an unread badge for the conversation, opens it and reads it.
  const link = bob.page.locator('#dm-list a[data-name="alice"]');
  await link.locator('.badge', { hasText: '1' }).waitFor();
  await link.click();
  await bob.page.locator('#conv-title', { hasText: '@alice' }).waitFor();
  await e2e.waitForMessage(bob.page, 'psst, bob: the secret is 42', { from: 'alice' });
  await e2e.send(bob.page, 'got it');
  await e2e.waitForMessage(alice.page, 'got it', { from: 'bob' });
  // Still in the room meanwhile: presence is unchanged.
  await alice.page.locator('#member-list [data-name="carol"]').waitFor();
  // Carol sees none of it.
  await e2e.pause(300);
  assert.equal(await carol.page.locator('#dm-list li').count(), 0);
  const carolText = await carol.page.evaluate(() => document.body.innerText);
  assert.ok(!carolText.includes('secret') && !carolText.includes('got it'), carolText);
  const lobby = await e2e.shownMessages(carol.page);
  assert.deepEqual(lobby.map((m) => m.body), ['hi bob', 'hi alice\nhow are you?', 'let me think!']);
  await e2e.screenshot(bob.page, 'dm-desktop');
  e2e.assertNoErrors(alice, bob, carol);
});

test('rooms: create one, others find it in their list; bodies are text, never HTML', async () => {
  await alice.page.fill('#new-room', 'plans');
  await alice.page.click('#new-room-form button');
  await alice.page.locator('#conv-title', { hasText: '#plans' }).waitFor();
  await alice.page.locator('#room-list a[data-name="plans"].active').waitFor();
  // Moving rooms leaves the old one: the others see alice go.
  await bob.page.locator('#room-list a[data-name="lobby"]').click();
  await bob.page.locator('#member-list [data-name="carol"]').waitFor();
  await bob.page.waitForFunction(() => !document.querySelector('#member-list [data-name="alice"]'));
  // Bob's list picks the new room up at once: the server announces it (/topic/.rooms); the
  // 30 s refresh would come too late for this wait.
  await bob.page.locator('#room-list a[data-name="plans"]').waitFor({ timeout: 5000 });
  await bob.page.locator('#room-list a[data-name="plans"]').click();
  await bob.page.locator('#conv-title', { hasText: '#plans' }).waitFor();
  // A bad name is refused in the page, before any request.
  await bob.page.fill('#new-room', 'no spaces please');
  await bob.page.click('#new-room-form button');
  await bob.page.locator('#new-room-error', { hasText: 'letters, digits' }).waitFor();

  const evil = '<img src=x onerror="window.pwned=1"><b>bold?</b> & "quotes"';
  await e2e.send(bob.page, evil);
  await e2e.waitForMessage(alice.page, evil);
  for (const user of [alice, bob]) {
    assert.equal(await user.page.locator('#message-list img, #message-list b').count(), 0);
    assert.equal(await user.page.evaluate(() => window.pwned), undefined);
  }
  e2e.assertNoErrors(alice, bob, carol);
});

test('history pages in as you scroll up: 120 messages, 50 at a time, no gap, no duplicate', async () => {
  // Seed the room with a raw /ws client running in a page (any client will do), authenticated
  // with an access token in the query string.
  await e2e.register(server, 'seeder');
  const token = await e2e.apiToken(server, 'seeder');
  const seeded = await alice.page.evaluate(async ([n, token]) => {
    const ws = new WebSocket(`ws://${location.host}/ws?access_token=${encodeURIComponent(token)}`);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    });
    let acks = 0;
    const done = new Promise((resolve) => {
      ws.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.type === 'joined') {
          for (let i = 1; i <= n; i++) ws.send(JSON.stringify({ type: 'send', room: 'archive', body: `archived ${i}`, ref: String(i) }));
        } else if (m.type === 'ack' && ++acks === n) resolve(acks);
      };
    });
    ws.send(JSON.stringify({ type: 'join', room: 'archive' }));
    const count = await done;
    ws.close();
    return count;
  }, [120, token]);
  assert.equal(seeded, 120);

  const dave = await open('dave', { hash: 'archive', viewport: { width: 1280, height: 700 } });
  await e2e.waitForMessage(dave.page, 'archived 120');
  let msgs = await e2e.shownMessages(dave.page);
  assert.equal(msgs.length, 50);
  assert.equal(msgs[0].id, '71');
  const box = dave.page.locator('#messages');
  for (const expected of [100, 120]) {
    await box.evaluate((node) => {
      node.scrollTop = 0;
    });
    await dave.page.waitForFunction((n) => document.querySelectorAll('#message-list > li').length === n, expected);
  }
  await dave.page.locator('#history-status[data-state="start"]').waitFor();
  msgs = await e2e.shownMessages(dave.page);
  e2e.assertConsecutive(msgs, 120);
  assert.deepEqual(msgs.map((m) => m.body), Array.from({ length: 120 }, (_, i) => `archived ${i + 1}`));
  // The view stayed where the reader was: the top page came in above, not under the reader.
  assert.ok(await box.evaluate((node) => node.scrollTop > 0));
  await box.evaluate((node) => {
    node.scrollTop = 0;
  });
  await e2e.screenshot(dave.page, 'history-start');
  e2e.assertNoErrors(alice, bob, carol, dave);
});

test('private rooms: only members see them; the owner adds a member', async () => {
  // The "private" box creates the room with POST /api/rooms {"private":true} (Bearer token).
  await alice.page.fill('#new-room', 'hideout');
  await alice.page.check('#new-room-private');
  await alice.page.click('#new-room-form button');
  await alice.page.locator('#conv-title', { hasText: '#hideout' }).waitFor();
  await alice.page.locator('#room-list a[data-name="hideout"][data-private="true"] .lock').waitFor();
  assert.equal(await alice.page.isChecked('#new-room-private'), false, 'the box is cleared after use');
  await e2e.send(alice.page, 'members only');
  // Bob does not see it, even after a refresh of his list.
  await bob.page.evaluate(() => window.dispatchEvent(new Event('focus')));
  await bob.page.locator('#room-list a[data-name="plans"]').waitFor();
  await e2e.pause(300);
  assert.equal(await bob.page.locator('#room-list a[data-name="hideout"]').count(), 0);
  // Alice (the owner) adds him; now it is in his list and he can read and write.
  const token = await e2e.apiToken(server, 'alice');
  const resp = await fetch(`${server.url}/api/rooms/hideout/members`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ user: 'bob' }),
  });
  assert.equal(resp.status, 204, await resp.text());
  await bob.page.evaluate(() => window.dispatchEvent(new Event('focus')));
  await bob.page.locator('#room-list a[data-name="hideout"][data-private="true"]').click();
  await bob.page.locator('#conv-title', { hasText: '#hideout' }).waitFor();
  await e2e.waitForMessage(bob.page, 'members only', { from: 'alice' });
  await e2e.send(bob.page, 'thanks for the invite');
  await e2e.waitForMessage(alice.page, 'thanks for the invite', { from: 'bob' });
  await e2e.screenshot(alice.page, 'private-room');
  e2e.assertNoErrors(alice, bob, carol);
});
