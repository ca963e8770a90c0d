// The web client without WebSockets: SockJS at /stomp when no WebSocket opens (none in the
// browser, or a proxy that strips Upgrade), `?transport=` forcing one SockJS transport, the
// transport shown next to the connection state. And beneath the page: the vendored
// sockjs-client + @stomp/stompjs bundles, and the raw JSON protocol over SockJS at /ws, in
// Chromium with WebSocket removed, one transport at a time.
import http from 'node:http';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as e2e from './lib.mjs';

const TRANSPORTS = ['xhr-streaming', 'xhr-polling', 'eventsource'];

// Run in the page before its own scripts: a browser without WebSockets (sockjs-client looks for
// the constructor when its bundle loads, the page when it connects).
const noWebSocket = () => {
  delete window.WebSocket;
};

let browser;
let server;
const contexts = [];

// Guests: the raw JSON clients at /ws?name=.
e2e.serveFile({ guests: true }, (b, s) => {
  browser = b;
  server = s;
});

async function open(name, options) {
  const user = await e2e.openUser(browser, server, name, options);
  contexts.push(user.context);
  return user;
}

/** Closes the pages of the test that just ran (two cores: keep few browsers busy). */
async function closeAll() {
  while (contexts.length) await contexts.pop().close();
}

const transportShown = (page) => page.locator('#conn-transport').textContent();

/** Each user sends one line in turn; every page shows all of them, ids 1..n, once each. */
async function chatAround(users, tag) {
  const lines = users.map((u) => `${tag}: hello from ${u.name}`);
  for (const [i, user] of users.entries()) {
    await e2e.send(user.page, lines[i]);
    for (const other of users) await e2e.waitForMessage(other.page, lines[i], { from: user.name });
  }
  for (const user of users) {
    const msgs = await e2e.shownMessages(user.page);
    e2e.assertConsecutive(msgs, lines.length);
    assert.deepEqual(msgs.map((m) => m.body), lines, `${user.name} shows every line once, in order`);
  }
}

for (const transport of TRANSPORTS) {
  test(`?transport=${transport}: two pages without WebSocket and one on a WebSocket chat in a room`, async () => {
    const room = `fb-${transport}`;
    const forced = { hash: room, query: `?transport=${transport}`, init: noWebSocket };
    const a = await open(`a-${transport}`, forced);
    const b = await open(`b-${transport}`, forced);
    const c = await open(`c-${transport}`, { hash: room });
    assert.equal(await a.page.evaluate(() => typeof window.WebSocket), 'undefined');
    for (const user of [a, b]) assert.equal(await transportShown(user.page), `SockJS ${transport}`);
    assert.equal(await transportShown(c.page), 'WebSocket');
    assert.equal(await a.page.locator('#conn').getAttribute('title'), `Connected over SockJS ${transport}`);
    await chatAround([a, c, b], transport);
    // Presence crosses transports too.
    await a.page.locator(`#member-list [data-name="${c.name}"]`).waitFor();
    await c.page.locator(`#member-list [data-name="${b.name}"]`).waitFor();
    await e2e.screenshot(a.page, `fallback-${transport}`);
    e2e.assertNoErrors(a, b, c);
    await closeAll();
  });
}

test('a person can chat from the web page with WebSocket disabled in the browser (no ?transport=)', async () => {
  const a = await open('no-ws', { hash: 'auto', init: noWebSocket });
  const c = await open('has-ws', { hash: 'auto' });
  // The first SockJS transport that works in Chromium, after its own websocket (unavailable).
  assert.equal(await transportShown(a.page), 'SockJS xhr-streaming');
  assert.equal(await transportShown(c.page), 'WebSocket');
  await chatAround([a, c], 'auto');
  assert.equal(await a.page.evaluate(() => window.parleyDebug.connects), 1);
  await e2e.screenshot(a.page, 'fallback-auto');
  e2e.assertNoErrors(a, c);
  await closeAll();
});

/**
 * An HTTP proxy in front of the server that forwards everything but WebSocket upgrades: those
 * go on as plain GETs without their Upgrade headers, like a proxy that does not know them.
 * Streaming answers are passed on as they come (xhr-streaming, eventsource).
 */
async function startUpgradeStripper(targetPort) {
  const forward = (req, headers, onResponse) => {
    const up = http.request({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers }, onResponse);
    up.on('error', () => req.socket.destroy());
    return up;
  };
  const srv = http.createServer((req, res) => {
    const up = forward(req, req.headers, (r) => {
      res.writeHead(r.statusCode, r.headers);
      res.flushHeaders();
      r.pipe(res);
    });
    req.pipe(up);
  });
  srv.on('upgrade', (req, socket) => {
    const headers = Object.fromEntries(Object.entries(req.headers)
      .filter(([k]) => !/^(upgrade|connection|sec-websocket-)/.test(k)));
    const up = forward(req, { ...headers, connection: 'close' }, (r) => {
      const lines = [`HTTP/1.1 ${r.statusCode} ${r.statusMessage}`];
      for (let i = 0; i < r.rawHeaders.length; i += 2) lines.push(`${r.rawHeaders[i]}: ${r.rawHeaders[i + 1]}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      r.pipe(socket);
    });
    socket.on('error', () => up.destroy());
    up.end();
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${srv.address().port}`,
    close: () => new Promise((resolve) => {
      srv.closeAllConnections();
      srv.close(resolve);
    }),
  };
}

test('behind a proxy that strips Upgrade the first WebSocket fails, and the page goes on over SockJS', async () => {
  const proxy = await startUpgradeStripper(server.port);
  try {
    const a = await open('behind-proxy', { hash: 'proxied', via: proxy.url });
    const c = await open('direct', { hash: 'proxied' });
    // sockjs-client's own websocket transport fails the same way; xhr-streaming gets through.
    assert.equal(await transportShown(a.page), 'SockJS xhr-streaming');
    await chatAround([a, c], 'proxied');
    assert.equal(await a.page.evaluate(() => window.parleyDebug.connects), 1);
    // Chromium logged the failed handshakes (ours at /stomp, SockJS's at /stomp/…/websocket): they
    // are the point of this test. Nothing else may have gone wrong.
    const failed = /^console\.error: WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/stomp(\/[\w.]+\/[\w.]+\/websocket)?' failed/;
    assert.ok(a.errors.some((e) => /\/stomp' failed/.test(e)), `the plain WebSocket was tried: ${a.errors}`);
    a.errors = a.errors.filter((e) => !failed.test(e));
    await e2e.screenshot(a.page, 'fallback-no-upgrade');
    e2e.assertNoErrors(a, c);
    await closeAll();
  } finally {
    await proxy.close();
  }
});

/**
 * A page served by Parley that runs none of the client (`/healthz`), with the vendored bundles
 * added: the libraries on their own. Console errors and page errors are collected.
 */
async function libraryPage({ webSocket = false } = {}) {
  const context = await browser.newContext();
  contexts.push(context);
  if (!webSocket) await context.addInitScript(noWebSocket);
  // `/healthz` is no HTML page with an icon of its own: Chromium would ask for /favicon.ico (404).
  await context.route('**/favicon.ico', (route) => route.fulfill({ status: 204 }));
  const page = await context.newPage();
  page.setDefaultTimeout(e2e.WAIT);
  const user = { name: 'library page', page, errors: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error') user.errors.push(`console.error: ${msg.text()} (${msg.location().url || '?'})`);
  });
  page.on('pageerror', (err) => user.errors.push(`pageerror: ${err.stack || err.message}`));
  await page.goto(`${server.url}/healthz`);
  await page.addScriptTag({ url: '/vendor/sockjs.min.js' });
  await page.addScriptTag({ url: '/vendor/stomp.umd.min.js' });
  return user;
}

/**
 * In the page: a @stomp/stompjs Client over `new SockJS('/stomp', …, {transports: [t]})`
 * connects with `token`, subscribes to the room (with a receipt), sends `body` there after the
 * receipt and waits for it to come back. Resolves with what it saw.
 */
function stompOverSockJs(page, args) {
  return page.evaluate(({ transport, token, room, body }) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no round trip over ${transport}`)), 8000);
    const client = new StompJs.Client({
      webSocketFactory: () => new SockJS('/stomp', null, { transports: [transport] }),
      connectHeaders: { passcode: token },
      reconnectDelay: 0,
      heartbeatIncoming: 10000,
      heartbeatOutgoing: 10000,
    });
    const fail = (why) => {
      clearTimeout(timer);
      client.deactivate();
      reject(new Error(why));
    };
    client.onStompError = (frame) => fail(`ERROR ${frame.headers.message}`);
    client.onConnect = (connected) => {
      const receipt = 'subscribed';
      client.watchForReceipt(receipt, () => client.publish({ destination: `/topic/${room}`, body }));
      client.subscribe(`/topic/${room}`, (msg) => {
        if (msg.body !== body) return;
        clearTimeout(timer);
        const seen = {
          transport: client.webSocket.transport,
          version: connected.headers.version,
          heartBeat: connected.headers['heart-beat'],
          user: connected.headers['user-name'],
          destination: msg.headers.destination,
          body: msg.body,
        };
        client.deactivate().then(() => resolve(seen));
      }, { receipt });
    };
    client.activate();
  }), args);
}

test('the vendored sockjs-client and @stomp/stompjs in Chromium: STOMP over each SockJS transport', async () => {
  await e2e.register(server, 'libuser');
  const token = await e2e.apiToken(server, 'libuser');
  const runs = [...TRANSPORTS.map((t) => [t, false]), ['websocket', true]]; // websocket needs one
  for (const [transport, webSocket] of runs) {
    const lib = await libraryPage({ webSocket });
    const body = `stompjs over ${transport}`;
    const seen = await stompOverSockJs(lib.page, { transport, token, room: 'libroom', body });
    assert.deepEqual(seen, {
      transport, version: '1.2', heartBeat: '10000,10000', user: 'libuser', destination: '/topic/libroom', body,
    });
    e2e.assertNoErrors(lib);
  }
  await closeAll();
});

/** In the page: a raw JSON client over SockJS at /ws (a guest by `?name=`), joined to `room`. */
function rawOverSockJs(page, { transport, name, room }) {
  return page.evaluate(({ transport, name, room }) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no join over ${transport}`)), 8000);
    const sock = new SockJS(`/ws?name=${encodeURIComponent(name)}`, null, { transports: [transport] });
    window.raw = { sock, got: [] };
    sock.onopen = () => sock.send(JSON.stringify({ type: 'join', room }));
    sock.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      window.raw.got.push(msg);
      if (msg.type === 'joined') {
        clearTimeout(timer);
        resolve({ transport: sock.transport, members: msg.members });
      }
    };
    sock.onclose = (e) => reject(new Error(`closed ${e.code} ${e.reason}`));
  }), { transport, name, room });
}

/** In the page: waits until the raw client got a message matching `want` (its fields). */
function rawReceived(page, want) {
  return page.waitForFunction((want) => window.raw.got.some((m) => Object.entries(want).every(([k, v]) => m[k] === v)), want);
}

test('the raw JSON protocol over SockJS at /ws: join, hear a web page, be heard by it', async () => {
  const dora = await open('dora', { hash: 'rawroom' }); // an account: its join creates the room
  for (const transport of TRANSPORTS) {
    const lib = await libraryPage();
    const name = `g-${transport}`;
    const joined = await rawOverSockJs(lib.page, { transport, name, room: 'rawroom' });
    assert.equal(joined.transport, transport);
    assert.ok(joined.members.includes('dora'), `members: ${joined.members}`);
    const fromDora = `dora to ${name}`;
    await e2e.send(dora.page, fromDora);
    await rawReceived(lib.page, { type: 'message', room: 'rawroom', from: 'dora', body: fromDora });
    const fromRaw = `${name} to dora`;
    await lib.page.evaluate((body) => window.raw.sock.send(JSON.stringify({ type: 'send', room: 'rawroom', body, ref: 'r1' })), fromRaw);
    await rawReceived(lib.page, { type: 'ack', ref: 'r1' });
    await e2e.waitForMessage(dora.page, fromRaw, { from: name });
    await e2e.screenshot(dora.page, `fallback-raw-${transport}`);
    await lib.page.evaluate(() => window.raw.sock.close());
    e2e.assertNoErrors(lib);
  }
  e2e.assertNoErrors(dora);
  await closeAll();
});
