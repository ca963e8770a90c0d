// People and private rooms in the browser: the directory (search by name, online dots, a DM
// started from it), a private room's members with roles (invite with autocomplete, remove,
// leave), and "you are not a member of #x" for a room one may not read.
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

/** Types `prefix` in the People box and waits for `name`'s entry. */
async function findPerson(page, prefix, name) {
  await page.fill('#people-search', '');
  await page.fill('#people-search', prefix);
  const entry = page.locator(`#people-list li[data-name="${name}"]`);
  await entry.waitFor();
  return entry;
}

test('the directory finds people by name, shows who is online, and starts a DM', async () => {
  alice = await open('alice', { hash: 'lobby' });
  bob = await open('bob', { hash: 'lobby' });
  await e2e.register(server, 'carol');
  await e2e.register(server, 'bobby');
  const entry = await findPerson(alice.page, 'bo', 'bob');
  assert.deepEqual(await alice.page.locator('#people-list li').evaluateAll((lis) => lis.map((li) => li.dataset.name)), ['bob', 'bobby']);
  assert.equal(await entry.locator('.presence-dot').getAttribute('data-presence'), 'online');
  const bobby = alice.page.locator('#people-list li[data-name="bobby"] .presence-dot');
  assert.equal(await bobby.getAttribute('data-presence'), 'offline');
  // Case does not matter; carol is offline until she signs in.
  let dot = (await findPerson(alice.page, 'CA', 'carol')).locator('.presence-dot');
  assert.equal(await dot.getAttribute('data-presence'), 'offline');
  carol = await open('carol', { as: 'signin', hash: 'lobby' }); // registered above: sign in only
  dot = (await findPerson(alice.page, 'car', 'carol')).locator('.presence-dot[data-presence="online"]');
  await dot.waitFor();
  await e2e.screenshot(alice.page, 'people-directory');
  // A DM from the directory.
  await (await findPerson(alice.page, 'bob', 'bob')).locator('button.dm-btn').click();
  await alice.page.waitForFunction(() => document.getElementById('conv-title').textContent === '@bob');
  assert.equal(new URL(alice.page.url()).hash, '#@bob');
  await e2e.send(alice.page, 'hello from the directory');
  await bob.page.locator('#dm-list a[data-name="alice"]').waitFor();
  e2e.assertNoErrors(alice, bob, carol);
});

test('a private room: invite with autocomplete, roles and dots, remove, leave', async () => {
  await alice.page.fill('#new-room', 'den');
  await alice.page.check('#new-room-private');
  await alice.page.click('#new-room-form button[type="submit"]');
  await alice.page.waitForFunction(() => document.getElementById('conv-title').textContent === '#den');
  const panel = alice.page.locator('#room-people');
  await panel.waitFor();
  await alice.page.locator('#room-roster li[data-name="alice"][data-role="owner"]').waitFor();
  // Autocomplete from the directory.
  await alice.page.fill('#invite-name', 'bo');
  await alice.page.locator('#invite-options option[value="bobby"]').waitFor({ state: 'attached' });
  assert.equal(await alice.page.locator('#invite-options option[value="bob"]').count(), 1);
  await alice.page.fill('#invite-name', 'bob');
  await alice.page.click('#invite-form button[type="submit"]');
  await alice.page.locator('#room-roster li[data-name="bob"][data-role="member"]').waitFor();
  assert.equal(await alice.page.locator('#room-roster li[data-name="bob"] .presence-dot').getAttribute('data-presence'), 'online');
  await alice.page.fill('#invite-name', 'carol');
  await alice.page.click('#invite-form button[type="submit"]');
  await alice.page.locator('#room-roster li[data-name="carol"]').waitFor();
  // An unknown name is refused in words.
  alice.expectHttp.push({ path: '/api/rooms/den/members', status: 404 });
  await alice.page.fill('#invite-name', 'nobody');
  await alice.page.click('#invite-form button[type="submit"]');
  await alice.page.locator('#invite-error', { hasText: 'There is no account named nobody.' }).waitFor();
  await e2e.screenshot(alice.page, 'people-private-room');
  // Bob opens it by its link: he sees the members, no invite box, a Leave button. (A room
  // opened by link that is not in the page's list yet is created first: 409, it exists.)
  bob.expectHttp.push({ path: '/api/rooms', status: 409 });
  await bob.page.evaluate(() => { location.hash = '#den'; });
  await bob.page.waitForFunction(() => document.getElementById('conv-title').textContent === '#den');
  await bob.page.locator('#room-roster li[data-name="alice"][data-role="owner"]').waitFor();
  assert.equal(await bob.page.locator('#invite-form').isHidden(), true);
  assert.equal(await bob.page.locator('#room-roster .remove-btn').count(), 0);
  // The owner removes carol.
  await alice.page.locator('#room-roster li[data-name="carol"] .remove-btn').click();
  await alice.page.locator('#room-roster li[data-name="carol"]').waitFor({ state: 'detached' });
  // Bob leaves: he is taken elsewhere and told.
  await bob.page.click('#leave-room');
  await bob.page.locator('#banner', { hasText: 'You left #den.' }).waitFor();
  await bob.page.waitForFunction(() => document.getElementById('conv-title').textContent !== '#den');
  await alice.page.waitForFunction(() => !document.querySelector('#room-roster li[data-name="bob"]'), null, { timeout: 25_000 });
  e2e.assertNoErrors(alice, bob, carol);
});

test('opening a private room one is not a member of says so', async () => {
  carol.expectHttp.push({ path: '/api/rooms/den/members', status: 403 });
  await carol.page.evaluate(() => { location.hash = '#den'; });
  await carol.page.locator('#banner', { hasText: 'You are not a member of #den.' }).waitFor();
  assert.notEqual(await carol.page.locator('#conv-title').textContent(), '#den');
  await e2e.waitOnline(carol.page);
  await e2e.screenshot(carol.page, 'people-not-a-member');
  e2e.assertNoErrors(carol);
});
