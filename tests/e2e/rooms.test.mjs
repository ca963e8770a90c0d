// The room list under load: the page shows one page of GET /api/rooms, "More rooms" loads the
// next, the filter box asks the server by name prefix; a guest is told, not looped, when the room
// it opens does not exist (guests cannot create rooms).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as e2e from './lib.mjs';

let browser;
let server;
const ROOMS = 130; // more than the server's page (100)

e2e.serveFile({ guests: true, args: ['--max-rooms-per-account', '200'] }, async (b, s) => {
  browser = b;
  server = s;
  await e2e.register(server, 'builder');
  const token = await e2e.apiToken(server, 'builder');
  for (let i = 0; i < ROOMS; i++) {
    const name = `r-${String(i).padStart(3, '0')}`;
    const r = await e2e.postJson(server, '/api/rooms', { name }, { authorization: `Bearer ${token}` });
    assert.equal(r.status, 201, `${name}: ${JSON.stringify(r.body)}`);
  }
});

const listed = (page) => page.locator('#room-list a[data-kind="room"]');

test('the room list pages ("More rooms") and filters by prefix', async () => {
  const user = await e2e.openUser(browser, server, 'reader', { hash: 'r-000' });
  const { page } = user;
  await page.locator('#room-list a[data-name="r-099"]').waitFor();
  assert.equal(await listed(page).count(), 100, 'one page of rooms');
  assert.equal(await page.locator('#room-list a[data-name="r-100"]').count(), 0);
  await page.click('#more-rooms');
  await page.locator(`#room-list a[data-name="r-${ROOMS - 1}"]`).waitFor();
  assert.equal(await listed(page).count(), ROOMS);
  await page.locator('#more-rooms').waitFor({ state: 'hidden' });
  await page.fill('#room-filter', 'r-12');
  await page.waitForFunction(() => !document.querySelector('#room-list a[data-name="r-050"]'));
  const names = await listed(page).evaluateAll((links) => links.map((a) => a.dataset.name));
  const matching = names.filter((n) => n.startsWith('r-12'));
  assert.equal(matching.length, 10, names.join(' '));
  assert.ok(names.every((n) => n.startsWith('r-12') || n === 'r-000'), `only the filter and the open room: ${names}`);
  e2e.assertNoErrors(user);
});

test('a guest opening a room that does not exist is told so and stays connected', async () => {
  const user = await e2e.openUser(browser, server, 'visitor', { as: 'guest', hash: 'r-001' });
  const { page } = user;
  await page.evaluate(() => {
    location.hash = '#nowhere';
  });
  await page.locator('#banner', { hasText: 'guests cannot create rooms' }).waitFor();
  assert.equal(await page.locator('#conv-title').textContent(), '#r-001', 'still in the room it was in');
  await e2e.pause(500);
  assert.equal(await e2e.connState(page), 'online');
  e2e.assertNoErrors(user);
});
