// What people expect of a conversation, in the page: formatted bodies and safe links, @mentions
// (highlight, autocomplete, notifications while the tab is hidden), date separators, natural room
// order, focus that list refreshes never take, full member names, the message-length limit, and a
// sign-out that leaves nothing of the last user on the screen. The server is strict (accounts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as e2e from './lib.mjs';

let browser;
let server;
let builder; // an account's token for creating rooms through the API

e2e.serveFile({}, async (b, s) => {
  browser = b;
  server = s;
  await e2e.register(server, 'builder');
  builder = await e2e.apiToken(server, 'builder');
});

async function createRoom(name, isPrivate = false) {
  const r = await e2e.postJson(server, '/api/rooms', { name, private: isPrivate }, { authorization: `Bearer ${builder}` });
  assert.equal(r.status, 201, `${name}: ${JSON.stringify(r.body)}`);
}

/** The last message's `.body` element in the page, as a locator. */
const lastBody = (page) => page.locator('#message-list > li:last-child .body');

test('bodies: links, bold, italics, code, code blocks and quotes; HTML and javascript: stay text', async () => {
  const alice = await e2e.openUser(browser, server, 'fmt-alice', { hash: 'formatting' });
  const bob = await e2e.openUser(browser, server, 'fmt-bob', { hash: 'formatting' });
  const text = [
    '**bold** and _italic_ and *also italic* and `code **not bold** https://in.code`',
    'see https://example.com/a_b_c?q=1). [click](javascript:alert(1)) javascript:alert(2)',
    '<img src=x onerror="window.pwned=1"> snake_case_name stays',
    '> a quoted line',
    '> and another',
    'after the quote',
  ].join('\n');
  await e2e.send(bob.page, text, { confirmed: false });
  const block = '```\n**not bold** https://not.a.link _x_ @fmt-alice\n```';
  await e2e.send(bob.page, block, { confirmed: false });
  await alice.page.locator('#message-list > li .body pre').waitFor();
  for (const { page } of [alice, bob]) {
    const first = page.locator('#message-list > li .body').first();
    assert.deepEqual(await first.locator('strong').allTextContents(), ['bold']);
    assert.deepEqual(await first.locator('em').allTextContents(), ['italic', 'also italic']);
    assert.deepEqual(await first.locator('code').allTextContents(), ['code **not bold** https://in.code']);
    const links = await first.locator('a').evaluateAll((as) => as.map((a) => ({
      href: a.getAttribute('href'), text: a.textContent, target: a.target, rel: a.rel,
    })));
    assert.deepEqual(links, [{
      href: 'https://example.com/a_b_c?q=1', text: 'https://example.com/a_b_c?q=1', target: '_blank', rel: 'noopener noreferrer',
    }], 'one link: the http(s) URL, without the sentence punctuation; nothing else');
    assert.equal(await page.locator('#message-list img, #message-list a[href^="javascript"], #message-list script').count(), 0);
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    assert.match(await first.textContent(), /\[click\]\(javascript:alert\(1\)\) javascript:alert\(2\)/);
    assert.match(await first.textContent(), /<img src=x onerror="window.pwned=1"> snake_case_name stays/);
    assert.equal(await first.locator('blockquote').textContent(), 'a quoted line\nand another');
    // Line breaks are kept (as text in a pre-wrap body; a quote is a block of its own).
    assert.ok((await first.textContent()).includes('https://in.code\nsee https://'));
    assert.match(await first.innerText(), /\nsee https:[^\n]*\n<img[^\n]*stays\na quoted line\nand another\nafter the quote$/);
    const pre = lastBody(page).locator('pre');
    assert.equal(await pre.textContent(), '**not bold** https://not.a.link _x_ @fmt-alice');
    assert.equal(await pre.locator('a, strong, em, .mention').count(), 0, 'nothing inside code is formatted');
  }
  await e2e.screenshot(alice.page, 'formatting');
  e2e.assertNoErrors(alice, bob);
  await Promise.all([alice.context.close(), bob.context.close()]);
});

test('mentions: highlighted (more for you), autocompleted from the room members', async () => {
  const alice = await e2e.openUser(browser, server, 'alice', { hash: 'team' });
  const bob = await e2e.openUser(browser, server, 'bob', { hash: 'team' });
  const bobby = await e2e.openUser(browser, server, 'bobby', { hash: 'team' });
  const { page } = alice;
  await page.locator('#member-list [data-name="bobby"]').waitFor();
  const options = () => page.locator('#mention-list li').evaluateAll((lis) => lis.map((li) => li.dataset.name));
  await page.click('#input');
  await page.keyboard.type('hi @Bo');
  await page.locator('#mention-list').waitFor();
  assert.deepEqual(await options(), ['bob', 'bobby'], 'members starting with "bo", any case');
  await page.keyboard.press('ArrowDown');
  assert.equal(await page.locator('#mention-list li.active').getAttribute('data-name'), 'bobby');
  await e2e.screenshot(page, 'mention-autocomplete');
  await page.keyboard.press('Enter'); // picks; does not send
  assert.equal(await page.inputValue('#input'), 'hi @bobby ');
  await page.locator('#mention-list').waitFor({ state: 'hidden' });
  await page.keyboard.type('and @b');
  await page.locator('#mention-list').waitFor();
  await page.keyboard.press('Escape');
  await page.locator('#mention-list').waitFor({ state: 'hidden' });
  assert.equal(await page.inputValue('#input'), 'hi @bobby and @b');
  await page.keyboard.press('Backspace');
  await page.keyboard.type('b');
  await page.locator('#mention-list').waitFor();
  assert.deepEqual(await options(), ['bob', 'bobby']);
  await page.keyboard.press('Tab');
  assert.equal(await page.inputValue('#input'), 'hi @bobby and @bob ');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'input', 'Tab picked, focus stayed');
  assert.equal(await page.locator('#message-list > li').count(), 0, 'nothing sent while picking');
  await page.keyboard.type('look');
  await page.keyboard.press('Enter');
  const body = 'hi @bobby and @bob look';
  await e2e.waitForMessage(bobby.page, body);
  await e2e.waitForMessage(bob.page, body);
  // Each sees both mentions; the one of yourself is marked, and so is the message.
  for (const [user, me] of [[bobby, 'bobby'], [bob, 'bob']]) {
    const last = user.page.locator('#message-list > li:last-child');
    assert.deepEqual(await last.locator('.mention').allTextContents(), ['@bobby', '@bob']);
    assert.deepEqual(await last.locator('.mention.me').allTextContents(), [`@${me}`]);
    assert.match(await last.getAttribute('class'), /\bmentions-me\b/);
  }
  const mine = page.locator('#message-list > li:last-child');
  assert.equal(await mine.locator('.mention.me').count(), 0);
  assert.doesNotMatch(await mine.getAttribute('class'), /mentions-me/);
  await e2e.screenshot(bob.page, 'mention-highlight');
  e2e.assertNoErrors(alice, bob, bobby);
  await Promise.all([alice, bob, bobby].map((u) => u.context.close()));
});

/** Replaces window.Notification with a spy recording what is shown and every permission request. */
function notificationSpy() {
  const Real = window.Notification;
  window.shownNotes = [];
  window.permissionAsks = 0;
  window.Notification = class {
    constructor(title, options = {}) {
      window.shownNotes.push({ title, body: options.body });
    }

    close() {}

    static get permission() {
      return Real.permission;
    }

    static requestPermission() {
      window.permissionAsks++;
      return Real.requestPermission();
    }
  };
}

test('notifications: asked for only by the button; a mention or a DM while the tab is hidden shows one', async () => {
  const carol = await e2e.openUser(browser, server, 'carol', { hash: 'alerts', permissions: ['notifications'], init: notificationSpy });
  const dave = await e2e.openUser(browser, server, 'dave', { hash: 'alerts', init: notificationSpy });
  const { page } = carol;
  await page.locator('#member-list [data-name="dave"]').waitFor();
  const notes = () => page.evaluate(() => window.shownNotes);
  for (const user of [carol, dave]) {
    assert.equal(await user.page.evaluate(() => window.permissionAsks), 0, 'no permission request on load');
    assert.equal(await user.page.locator('#notify').textContent(), 'Notifications');
  }
  assert.equal(await page.evaluate(() => Notification.permission), 'granted', 'the context granted it');
  await page.evaluate(() => Object.defineProperty(document, 'hidden', { get: () => true, configurable: true }));
  // Not switched on yet: a mention shows nothing.
  await e2e.send(dave.page, '@carol before the button');
  await e2e.waitForMessage(page, '@carol before the button');
  await page.click('#notify');
  await page.locator('#notify[data-state="on"]').waitFor();
  await e2e.send(dave.page, '@carol are you there?');
  await page.waitForFunction(() => window.shownNotes.length === 1);
  assert.deepEqual(await notes(), [{ title: 'dave in #alerts', body: '@carol are you there?' }]);
  // A message without a mention of carol (a mention inside code does not count) shows nothing;
  // a DM does.
  await e2e.send(dave.page, 'nothing for `@carol` here', { confirmed: false });
  await page.locator('#message-list > li:last-child .body code', { hasText: '@carol' }).waitFor();
  await dave.page.locator('#member-list [data-name="carol"] .dm-btn').click();
  await dave.page.locator('#conv-title', { hasText: '@carol' }).waitFor();
  await e2e.send(dave.page, 'a private word', { confirmed: false });
  await page.waitForFunction(() => window.shownNotes.length === 2);
  assert.deepEqual((await notes())[1], { title: 'dave (direct message)', body: 'a private word' });
  // Visible again: nothing is shown.
  await page.evaluate(() => Object.defineProperty(document, 'hidden', { get: () => false, configurable: true }));
  await e2e.send(dave.page, 'another word', { confirmed: false });
  await page.locator('#dm-list a[data-name="dave"] .badge', { hasText: '2' }).waitFor();
  await e2e.pause(300);
  assert.equal((await notes()).length, 2);
  // Without a grant, the click asks the browser (once), and only the click.
  assert.equal(await dave.page.evaluate(() => window.permissionAsks), 0);
  await dave.page.click('#notify');
  await dave.page.waitForFunction(() => window.permissionAsks === 1);
  assert.equal(await page.evaluate(() => window.permissionAsks), 0, 'granted already: carol was never asked');
  await e2e.screenshot(page, 'notifications-on');
  e2e.assertNoErrors(carol, dave);
  await Promise.all([carol.context.close(), dave.context.close()]);
});

test('rooms sort naturally; list refreshes never take the focus from the composer, the filter or a link', async () => {
  for (const name of ['churn-10', 'churn-2', 'Churn-3', 'churn-1']) await createRoom(name);
  const erin = await e2e.openUser(browser, server, 'erin', { hash: 'churn-1' });
  const { page } = erin;
  const listed = () => page.locator('#room-list a[data-kind="room"]').evaluateAll((as) => as.map((a) => a.dataset.name));
  await page.locator('#room-list a[data-name="churn-10"]').waitFor();
  assert.deepEqual((await listed()).filter((n) => /^churn/i.test(n)), ['churn-1', 'churn-2', 'Churn-3', 'churn-10']);
  const refresh = () => page.evaluate(() => window.dispatchEvent(new Event('focus')));
  const focused = () => page.evaluate(() => ({ id: document.activeElement.id, name: document.activeElement.dataset.name || null }));

  // Typing in the composer while another user creates rooms and the list is drawn again.
  await page.click('#input');
  await page.keyboard.type('hello ');
  await createRoom('churn-11');
  await refresh();
  await page.locator('#room-list a[data-name="churn-11"]').waitFor();
  await page.keyboard.type('world');
  assert.deepEqual(await focused(), { id: 'input', name: null });
  assert.equal(await page.inputValue('#input'), 'hello world');

  // Moving through the list with the keyboard: the link keeps the focus across a refresh.
  await page.locator('#room-list a[data-name="churn-2"]').focus();
  await createRoom('churn-12');
  await refresh();
  await page.locator('#room-list a[data-name="churn-12"]').waitFor();
  assert.deepEqual(await focused(), { id: '', name: 'churn-2' });

  // The filter: what is typed stays, the focus too, while the list answers.
  await page.click('#room-filter');
  await page.keyboard.type('churn-1', { delay: 60 });
  await createRoom('churn-13');
  await refresh();
  await page.locator('#room-list a[data-name="churn-13"]').waitFor();
  await page.waitForFunction(() => !document.querySelector('#room-list a[data-name="churn-2"]'));
  assert.deepEqual(await focused(), { id: 'room-filter', name: null });
  assert.equal(await page.inputValue('#room-filter'), 'churn-1');
  assert.deepEqual(await listed(), ['churn-1', 'churn-10', 'churn-11', 'churn-12', 'churn-13']);
  e2e.assertNoErrors(erin);
  await erin.context.close();
});

test('member names are shown in full; a message over the server limit is not sent and Send is disabled', async () => {
  const long = 'averylongmembername_0123456789ab'; // 32 characters, the longest name there is
  const frank = await e2e.openUser(browser, server, 'frank', { hash: 'limits' });
  const other = await e2e.openUser(browser, server, long, { hash: 'limits' });
  const { page } = frank;
  const member = page.locator(`#member-list [data-name="${long}"] .member-name`);
  await member.waitFor();
  assert.equal(await member.textContent(), long);
  assert.equal(await member.getAttribute('title'), long);
  const clipped = (loc) => loc.evaluate((n) => n.scrollWidth > n.clientWidth + 1 || getComputedStyle(n).textOverflow === 'ellipsis');
  assert.equal(await clipped(member), false, 'the member name is not cut off');
  await e2e.send(other.page, 'a word from a long name');
  await e2e.waitForMessage(page, 'a word from a long name');
  assert.equal(await clipped(page.locator('#message-list > li:last-child .from')), false, 'nor the sender name');
  await e2e.screenshot(page, 'long-member-name');

  // The server takes at most 64 KiB (--max-body's default) of UTF-8 in a room message.
  const max = 64 * 1024;
  await page.fill('#input', 'x'.repeat(max + 1));
  await page.locator('#too-long').waitFor();
  assert.match(await page.locator('#too-long').textContent(), /65,537 bytes of at most 65,536/);
  assert.equal(await page.locator('#send').isDisabled(), true);
  await page.press('#input', 'Enter');
  await e2e.pause(300);
  assert.equal(await page.locator('#pending-list > li').count(), 0, 'not sent');
  assert.equal((await page.inputValue('#input')).length, max + 1, 'not cut');
  await e2e.screenshot(page, 'too-long');
  // Bytes, not characters: 32,769 "é" are 65,538 bytes.
  await page.fill('#input', 'é'.repeat(max / 2 + 1));
  await page.locator('#too-long').waitFor();
  assert.equal(await page.locator('#send').isDisabled(), true);
  // Exactly the limit is fine, and the server takes it.
  await page.fill('#input', 'y'.repeat(max));
  await page.locator('#too-long').waitFor({ state: 'hidden' });
  assert.equal(await page.locator('#send').isDisabled(), false);
  await page.press('#input', 'Enter');
  await page.waitForFunction((n) => [...document.querySelectorAll('#message-list > li')]
    .some((li) => li.querySelector('.body').textContent.length === n && li.dataset.state === 'sent'), max);
  e2e.assertNoErrors(frank, other);
  await Promise.all([frank.context.close(), other.context.close()]);
});

test('the limit comes from GET /api/info (messages.max_body, the server\'s --max-body)', async () => {
  const small = await e2e.startServer({ args: ['--max-body', '100'] });
  const user = await e2e.openUser(browser, small, 'grace');
  await user.page.locator('#conv-title', { hasText: '#' }).waitFor();
  await user.page.fill('#input', 'z'.repeat(100));
  assert.equal(await user.page.locator('#too-long').isHidden(), true);
  await user.page.fill('#input', 'z'.repeat(101));
  await user.page.locator('#too-long', { hasText: 'at most 100 bytes' }).waitFor();
  assert.equal(await user.page.locator('#send').isDisabled(), true);
  e2e.assertNoErrors(user);
  await user.context.close();
  await small.stop();
});

test('date separators: Today, Yesterday, else the date; also above older history paged in', async () => {
  const hank = await e2e.openUser(browser, server, 'hank', { hash: 'days' });
  const { page } = hank;
  // The server stamps messages with its own time: a message now is under "Today", once.
  await e2e.send(page, 'first today');
  await e2e.send(page, 'second today');
  assert.deepEqual(await page.locator('#message-list .day-sep').allTextContents(), ['Today']);
  assert.equal(await page.locator('#message-list > li:first-child .day-sep').count(), 1);

  // Older days: this page's history of #old-days is served by the test (ids 1..60). Days are local
  // (node and Chromium share the time zone).
  const now = new Date();
  const at = (daysAgo, minute) => new Date(now.getFullYear(), now.getMonth(), now.getDate() - daysAgo, 9, minute).getTime();
  const startOfToday = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
  const ts = (id) => {
    if (id <= 10) return at(10, id);
    if (id <= 30) return at(3, id);
    if (id <= 45) return at(1, id);
    return startOfToday + Math.floor(((Date.now() - startOfToday) * (id - 45)) / 16);
  };
  const msg = (id) => ({ id, room: 'old-days', from: id % 3 ? 'hank' : 'ivy', ts: ts(id), body: `old ${id}`, guest: false });
  await page.route((url) => url.pathname === '/api/rooms/old-days/messages', (route) => {
    const before = Number(new URL(route.request().url()).searchParams.get('before')) || 61;
    const ids = Array.from({ length: 60 }, (_, i) => i + 1).filter((id) => id < before).slice(-50);
    return route.fulfill({ json: { room: 'old-days', messages: ids.map(msg) } });
  });
  // The page marks what it shows as read: the server, which holds none of these, refuses that.
  hank.expectHttp.push({ path: '/api/rooms/old-days/read', status: 400 });
  await page.evaluate(() => {
    location.hash = '#old-days';
  });
  await e2e.waitForMessage(page, 'old 60');
  // Scrolled up (or the view is not full yet): ids 1..10 come in above.
  await page.evaluate(() => {
    document.getElementById('messages').scrollTop = 0;
  });
  await e2e.waitForMessage(page, 'old 1');
  const seps = await page.locator('#message-list .day-sep').evaluateAll((nodes) => nodes.map((n) => ({
    id: n.closest('li').dataset.id, text: n.textContent, day: n.dataset.day,
  })));
  const key = (t) => {
    const d = new Date(t);
    return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
  };
  assert.deepEqual(seps.map((s) => [s.id, s.day]), [['1', key(ts(1))], ['11', key(ts(11))], ['31', key(ts(31))], ['46', key(ts(46))]]);
  assert.deepEqual(seps.slice(2).map((s) => s.text), ['Yesterday', 'Today']);
  for (const s of seps.slice(0, 2)) assert.ok(!/Today|Yesterday/.test(s.text) && /\d/.test(s.text), s.text);
  assert.equal(await page.locator('#message-list > li').count(), 60);
  await page.locator('#message-list > li[data-id="31"]').scrollIntoViewIfNeeded();
  await e2e.screenshot(page, 'date-separators');
  e2e.assertNoErrors(hank);
  await hank.context.close();
});

test('signing out leaves nothing of the last user on the screen for the next one', async () => {
  await createRoom('shared-space');
  const judy = await e2e.openUser(browser, server, 'judy', { hash: 'shared-space' });
  const kim = await e2e.openUser(browser, server, 'kim', { hash: 'shared-space' });
  const { page } = judy;
  await page.fill('#new-room', 'judys-secret-room');
  await page.check('#new-room-private');
  await page.click('#new-room-form button');
  await page.locator('#conv-title', { hasText: '#judys-secret-room' }).waitFor();
  await e2e.send(page, 'judy secret plans');
  await kim.page.evaluate(() => {
    location.hash = '#@judy';
  });
  await kim.page.locator('#conv-title', { hasText: '@judy' }).waitFor();
  await e2e.send(kim.page, 'kim whispers to judy', { confirmed: false });
  await page.locator('#dm-list a[data-name="kim"] .badge').waitFor();
  await page.fill('#room-filter', 'jud');
  await page.fill('#input', 'judy draft never sent');
  await page.click('#sign-out');
  await e2e.waitSignIn(page);

  const screen = await page.evaluate(() => ({
    messages: document.querySelectorAll('#message-list > li, #pending-list > li').length,
    rooms: document.querySelectorAll('#room-list li').length,
    dms: document.querySelectorAll('#dm-list li').length,
    members: document.querySelectorAll('#member-list [data-name]').length,
    typing: document.getElementById('typing').textContent,
    title: document.getElementById('conv-title').textContent,
    documentTitle: document.title,
    hash: location.hash,
    input: document.getElementById('input').value,
    filter: document.getElementById('room-filter').value,
    username: document.getElementById('auth-username').value,
    me: document.getElementById('me-name').textContent,
    remembered: localStorage.getItem('parley.room'),
  }));
  assert.deepEqual(screen, {
    messages: 0, rooms: 0, dms: 0, members: 0, typing: '', title: '', documentTitle: 'Parley', hash: '',
    input: '', filter: '', username: '', me: '', remembered: null,
  });
  await e2e.screenshot(page, 'signed-out');

  // The next user, on the same page.
  await e2e.signIn(page, 'leo', e2e.passwordOf('leo'), { create: true });
  await e2e.waitOnline(page);
  await page.locator('#conv-title', { hasText: '#' }).waitFor();
  assert.equal(await page.locator('#me-name').textContent(), 'leo');
  await page.locator('#room-list a[data-name="shared-space"]').waitFor();
  const text = await page.evaluate(() => document.body.innerText);
  for (const secret of ['judy', 'kim', 'secret', 'whispers', 'draft']) assert.ok(!text.includes(secret), `"${secret}" on leo's screen:\n${text}`);
  assert.notEqual(await page.locator('#conv-title').textContent(), '#judys-secret-room');
  assert.equal(await page.inputValue('#input'), '');
  await e2e.screenshot(page, 'next-user');
  e2e.assertNoErrors(judy, kim);
  await Promise.all([judy.context.close(), kim.context.close()]);
});
