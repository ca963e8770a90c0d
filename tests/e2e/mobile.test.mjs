// At phone width (390 px) the page is usable: nothing overflows sideways, the conversation and
// the composer fill the screen, rooms and members open as drawers, long words wrap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as e2e from './lib.mjs';

let browser;
let server;

e2e.serveFile({}, (b, s) => {
  browser = b;
  server = s;
});

const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };

/** Fails when anything sticks out to the right of the viewport. */
async function assertNoSidewaysOverflow(page) {
  const { scrollWidth, innerWidth, wide } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    wide: [...document.querySelectorAll('.topbar *, .chat *')]
      .filter((n) => n.getBoundingClientRect().right > window.innerWidth + 1 && n.getClientRects().length)
      .map((n) => n.id || n.className || n.tagName),
  }));
  assert.equal(innerWidth, 390);
  assert.ok(scrollWidth <= innerWidth, `page is ${scrollWidth} px wide`);
  assert.deepEqual(wide, [], 'elements past the right edge');
}

async function inViewport(locator) {
  const box = await locator.boundingBox();
  assert.ok(box, 'element is shown');
  return box.x >= 0 && box.y >= 0 && box.x + box.width <= 390 + 0.5 && box.y + box.height <= 844 + 0.5;
}

test('at 390 px the page is usable', async () => {
  const desk = await e2e.openUser(browser, server, 'desk', { hash: 'general' });
  const phone = await e2e.openUser(browser, server, 'phone', { hash: 'general', ...PHONE });
  const { page } = phone;
  await page.locator('#member-list [data-name="desk"]').waitFor({ state: 'attached' });

  // The conversation gets the screen: sidebar and member list are hidden drawers.
  assert.equal(await page.locator('#sidebar').evaluate((n) => n.getBoundingClientRect().right <= 0), true);
  assert.equal(await page.locator('#members').evaluate((n) => n.getBoundingClientRect().left >= 390), true);
  for (const sel of ['#rooms-toggle', '#conv-title', '#conn', '#members-toggle', '#input', '#send']) {
    assert.ok(await inViewport(page.locator(sel)), `${sel} on screen`);
  }
  assert.equal(await page.locator('#members-count').textContent(), '2');

  // Chat both ways, with a long unbroken word that must wrap.
  const long = `https://example.com/${'a'.repeat(300)}`;
  await e2e.send(desk.page, long);
  await e2e.waitForMessage(page, long);
  await page.locator('#input').tap();
  await e2e.send(page, 'on my phone — ça marche');
  await e2e.waitForMessage(desk.page, 'on my phone — ça marche');
  await assertNoSidewaysOverflow(page);
  await e2e.screenshot(page, 'mobile-chat');

  // Rooms drawer: open it, create a room, land in it with the drawer closed.
  await page.locator('#rooms-toggle').tap();
  await page.locator('#sidebar.open').waitFor();
  await page.waitForFunction(() => document.getElementById('sidebar').getBoundingClientRect().left >= 0);
  assert.equal(await page.locator('#rooms-toggle').getAttribute('aria-expanded'), 'true');
  assert.ok(await inViewport(page.locator('#new-room')));
  await e2e.screenshot(page, 'mobile-rooms-drawer');
  await page.fill('#new-room', 'phone-room');
  await page.locator('#new-room-form button').tap();
  await page.locator('#conv-title', { hasText: '#phone-room' }).waitFor();
  await page.locator('#sidebar.open').waitFor({ state: 'detached' });
  await e2e.send(page, 'first!');

  // Back to #general through the drawer, then the members drawer to start a DM.
  await page.locator('#rooms-toggle').tap();
  await page.locator('#room-list a[data-name="general"]').tap();
  await page.locator('#conv-title', { hasText: '#general' }).waitFor();
  await e2e.waitForMessage(page, 'on my phone — ça marche');
  await page.locator('#members-toggle').tap();
  await page.locator('#members.open').waitFor();
  await page.waitForFunction(() => document.getElementById('members').getBoundingClientRect().right <= window.innerWidth + 1);
  await e2e.screenshot(page, 'mobile-members-drawer');
  await page.locator('#member-list [data-name="desk"] .dm-btn').tap();
  await page.locator('#conv-title', { hasText: '@desk' }).waitFor();
  await page.locator('#members.open').waitFor({ state: 'detached' });
  await e2e.send(page, 'hello from the phone');
  await desk.page.locator('#dm-list a[data-name="phone"] .badge').waitFor();
  await assertNoSidewaysOverflow(page);
  e2e.assertNoErrors(desk, phone);
});
