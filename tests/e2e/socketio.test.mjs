// Socket.IO in the browser (docs/socketio.md): socket.io-client 4.8.3's own browser bundle on a
// small chat page (socketio-chat.html) in Chromium, against Parley's /socket.io/ endpoint —
// long-polling, WebSocket and the upgrade — chatting in one room with a raw JSON WebSocket
// client (Node `ws`, /ws) and a STOMP client (Node @stomp/stompjs over /stomp). Then
// connection-state recovery across a SIGKILL and restart, and a same-origin page that the
// session cookie authenticates.
//
// The page is served by a small static server of this file's own (another origin than
// Parley's, allowed with --allowed-origin), so the page's Engine.IO requests are CORS requests;
// the cookie test serves it on Parley's own origin instead (Playwright answers the page's two
// paths, everything else reaches Parley).
import http from 'node:http';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { Client } from '@stomp/stompjs';
import * as e2e from './lib.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BUNDLE = path.join(HERE, 'node_modules/socket.io-client/dist/socket.io.min.js');
const FILES = {
  '/socketio-chat.html': ['text/html; charset=utf-8', path.join(HERE, 'socketio-chat.html')],
  '/socket.io.min.js': ['text/javascript; charset=utf-8', BUNDLE],
  '/socket.io.min.js.map': ['application/json', `${BUNDLE}.map`],
};
/** The page's three transport settings: socket.io-client's `transports`, null = its default. */
const MODES = [['polling', ['polling']], ['websocket', ['websocket']], ['upgrade', null]];
const TEST_TIMEOUT = 60_000;

// ---- the page's own origin ----------------------------------------------------------------------
const staticServer = http.createServer((req, res) => {
  const file = FILES[new URL(req.url, 'http://x').pathname];
  if (req.method !== 'GET' || !file) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': file[0], 'cache-control': 'no-store' });
  res.end(readFileSync(file[1]));
});
await new Promise((resolve) => staticServer.listen(0, '127.0.0.1', resolve));
const STATIC = `http://127.0.0.1:${staticServer.address().port}`;
after(() => new Promise((resolve) => {
  staticServer.closeAllConnections();
  staticServer.close(resolve);
}));

const ALLOW_STATIC = ['--allowed-origin', STATIC];

let browser;
let server;
const contexts = [];
e2e.serveFile({ args: ALLOW_STATIC }, (b, s) => {
  browser = b;
  server = s;
});

async function closeAll() {
  while (contexts.length) await contexts.pop().close();
}

/** A promise that rejects after `ms` with `what` in its message. */
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Registers `name` on `srv` and logs it in: its access token. */
async function account(srv, name) {
  await e2e.register(srv, name);
  return e2e.apiToken(srv, name);
}

// Chromium's own lines about connections that fail while Parley is down or the page's network
// is cut (the polling XHRs, the WebSocket handshakes).
const OUTAGE_NOISE = [
  /^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/socket\.io\/\?EIO=4&transport=websocket[^']*' failed/,
  /^Failed to load resource: net::ERR_(CONNECTION_REFUSED|CONNECTION_RESET|EMPTY_RESPONSE|CONNECTION_CLOSED|SOCKET_NOT_CONNECTED)/,
];

/**
 * The chat page in a browser context of its own: `?parley=&transports=&room=` plus `extra`,
 * the token in the hash. Console errors and page errors are collected into `user.errors`,
 * connection failures only while `user.outage` is false.
 */
async function openChat(name, { token, transports, room, parley = server.url, origin = STATIC, extra = {} }) {
  const context = await browser.newContext();
  contexts.push(context);
  const page = await context.newPage();
  page.setDefaultTimeout(e2e.WAIT);
  const user = { name, context, page, errors: [], outage: false };
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    if (user.outage && OUTAGE_NOISE.some((re) => re.test(text))) return;
    user.errors.push(`console.error: ${text} (${msg.location().url || '?'})`);
  });
  page.on('pageerror', (err) => user.errors.push(`pageerror: ${err.stack || err.message}`));
  const query = new URLSearchParams({ parley, ...(transports ? { transports: transports.join(',') } : {}), ...(room ? { room } : {}), ...extra });
  await page.goto(`${origin}/socketio-chat.html?${query}${token ? `#token=${token}` : ''}`);
  return user;
}

/** The page's messages in arrival order: [{id, from, ts, body}]. */
function shown(page) {
  return page.$$eval('#messages > li', (lis) => lis.map((li) => ({
    id: li.dataset.id, from: li.dataset.from, ts: Number(li.dataset.ts), body: li.querySelector('.body').textContent,
  })));
}

/** Waits until the page shows a message with `body`; returns it. */
async function waitShown(page, body, timeout = e2e.WAIT) {
  await page.waitForFunction((body) => [...document.querySelectorAll('#messages > li .body')]
    .some((b) => b.textContent === body), body, { timeout });
  return (await shown(page)).find((m) => m.body === body);
}

const transportOf = (page) => page.evaluate(() => window.chat.socket.io.engine.transport.name);

// ---- Node clients ------------------------------------------------------------------------------
/** A raw JSON client at /ws?access_token=: everything it got in `got`, `waitFor(pred)`. */
async function rawClient(srv, token) {
  const ws = new WebSocket(`${srv.url.replace('http', 'ws')}/ws?access_token=${encodeURIComponent(token)}`);
  const got = [];
  const waiters = new Set();
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    got.push(msg);
    for (const w of waiters) w();
  });
  await within(new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  }), e2e.WAIT, 'raw client open');
  let refs = 0;
  const client = {
    ws,
    got,
    send: (obj) => ws.send(JSON.stringify(obj)),
    /** The first message (already got or to come) for which `pred` holds. */
    waitFor(pred, what, timeout = e2e.WAIT) {
      let check;
      return within(new Promise((resolve) => {
        check = () => {
          const found = got.find(pred);
          if (found) resolve(found);
        };
        waiters.add(check);
        check();
      }), timeout, `raw client: ${what}; got ${JSON.stringify(got)}`).finally(() => waiters.delete(check));
    },
    /** Sends a command with a fresh `ref` and waits for its `ack`. */
    async request(obj) {
      const ref = `r${++refs}`;
      client.send({ ...obj, ref });
      const answer = await client.waitFor((m) => m.ref === ref, `answer to ${JSON.stringify(obj)}`);
      assert.equal(answer.type, 'ack', `answer to ${JSON.stringify(obj)}: ${JSON.stringify(answer)}`);
      return answer;
    },
    async join(room) {
      client.send({ type: 'join', room });
      return client.waitFor((m) => m.type === 'joined' && m.room === room, `joined ${room}`);
    },
    close: () => ws.close(),
  };
  return client;
}

/**
 * A STOMP 1.2 client (@stomp/stompjs over `ws` at /stomp, `passcode:<token>`) subscribed to
 * `/topic/<room>` and its `.typing` (the SUBSCRIBE's receipt awaited): frames in `got`.
 */
async function stompClient(srv, token, room) {
  const got = [];
  const waiters = new Set();
  const client = new Client({
    webSocketFactory: () => new WebSocket(`${srv.url.replace('http', 'ws')}/stomp`, ['v12.stomp']),
    connectHeaders: { passcode: token },
    reconnectDelay: 0,
    heartbeatIncoming: 10_000,
    heartbeatOutgoing: 10_000,
  });
  const record = (msg) => {
    got.push({ destination: msg.headers.destination, headers: msg.headers, body: msg.body });
    for (const w of waiters) w();
  };
  await within(new Promise((resolve, reject) => {
    client.onStompError = (frame) => reject(new Error(`STOMP ERROR ${frame.headers.message}`));
    client.onWebSocketError = () => reject(new Error('STOMP WebSocket error'));
    client.onConnect = () => {
      client.watchForReceipt('subscribed', resolve);
      client.subscribe(`/topic/${room}.typing`, record);
      client.subscribe(`/topic/${room}`, record, { receipt: 'subscribed' });
    };
    client.activate();
  }), e2e.WAIT, 'STOMP CONNECTED and SUBSCRIBE receipt');
  let receipts = 0;
  return {
    got,
    waitFor(pred, what, timeout = e2e.WAIT) {
      let check;
      return within(new Promise((resolve) => {
        check = () => {
          const found = got.find(pred);
          if (found) resolve(found);
        };
        waiters.add(check);
        check();
      }), timeout, `STOMP client: ${what}; got ${JSON.stringify(got)}`).finally(() => waiters.delete(check));
    },
    /** SEND to the room, waits for the RECEIPT (the message is durable). */
    async send(body) {
      const receipt = `send-${++receipts}`;
      const done = new Promise((resolve) => client.watchForReceipt(receipt, resolve));
      client.publish({ destination: `/topic/${room}`, body, headers: { receipt, 'content-type': 'text/plain' } });
      await within(done, e2e.WAIT, `RECEIPT ${receipt}`);
    },
    close: () => client.deactivate(),
  };
}

// ---- 1. a browser chats with raw and STOMP clients over each transport --------------------------
for (const [mode, transports] of MODES) {
  test(`socket.io-client over ${mode} in Chromium chats in a room with a raw /ws client and a STOMP client`, { timeout: TEST_TIMEOUT }, async () => {
    const room = `sio-${mode}`;
    const [pgName, rawName, stompName] = [`page-${mode}`, `raw-${mode}`, `stomp-${mode}`];
    const [pgToken, rawToken, stompToken] = await Promise.all([pgName, rawName, stompName].map((n) => account(server, n)));

    const raw = await rawClient(server, rawToken);
    await raw.join(room); // an account's join creates the room
    const user = await openChat(pgName, { token: pgToken, transports, room });
    const { page } = user;
    await page.locator('#status[data-state="joined"]').waitFor();
    assert.equal(await page.locator('#me').textContent(), pgName);
    // Presence: the page saw the raw client in `joined`, the raw client hears the page arrive,
    // the page hears the STOMP client arrive.
    await page.locator(`#members li[data-name="${rawName}"][data-online="true"]`).waitFor();
    await raw.waitFor((m) => m.type === 'presence' && m.user === pgName && m.event === 'join', 'presence of the page');
    const stomp = await stompClient(server, stompToken, room);
    await page.locator(`#members li[data-name="${stompName}"][data-online="true"]`).waitFor();

    // The page types: both others hear it (raw `typing`, STOMP `.typing` with the sender).
    await page.locator('#input').pressSequentially('hel');
    await raw.waitFor((m) => m.type === 'typing' && m.room === room && m.user === pgName, 'typing from the page');
    await stomp.waitFor((f) => f.destination === `/topic/${room}.typing` && f.headers.sender === pgName, 'typing from the page');
    // ... and sends: the acked id is shown, and both others get it with that id, sender and ts.
    const fromPage = `hello from the page over ${mode}`;
    await page.fill('#input', fromPage);
    await page.press('#input', 'Enter');
    await page.locator(`#last-ack[data-body="${fromPage}"]`).waitFor();
    const ackedId = await page.locator('#last-ack').getAttribute('data-id');
    const atRaw = await raw.waitFor((m) => m.type === 'message' && m.body === fromPage, 'the page\'s message');
    const atStomp = await stomp.waitFor((f) => f.destination === `/topic/${room}` && f.body === fromPage, 'the page\'s message');
    const inPage = await waitShown(page, fromPage);
    assert.deepEqual(
      { id: atRaw.id, from: atRaw.from, ts: atRaw.ts, room: atRaw.room },
      { id: ackedId, from: pgName, ts: inPage.ts, room },
      'raw client: same id, sender, timestamp as the page\'s ack and message event');
    assert.deepEqual(
      { id: atStomp.headers['message-id'], from: atStomp.headers.sender, ts: Number(atStomp.headers.timestamp) },
      { id: ackedId, from: pgName, ts: atRaw.ts },
      'STOMP client: same message-id, sender, timestamp');
    assert.deepEqual({ id: inPage.id, from: inPage.from }, { id: ackedId, from: pgName });

    // The raw client types (the page shows it) and sends: the page shows it with its acked id.
    raw.send({ type: 'typing', room });
    await page.locator(`#typing[data-users="${rawName}"]`).waitFor();
    const fromRaw = `hello from raw over ${mode}`;
    const rawAck = await raw.request({ type: 'send', room, body: fromRaw });
    const rawShown = await waitShown(page, fromRaw);
    assert.deepEqual({ id: rawShown.id, from: rawShown.from }, { id: rawAck.id, from: rawName });
    await page.locator('#typing[data-users=""]').waitFor(); // the message ends the typing

    // The STOMP client sends: the page shows it with the id STOMP subscribers got.
    const fromStomp = `hello from STOMP over ${mode}`;
    await stomp.send(fromStomp);
    const stompEcho = await stomp.waitFor((f) => f.destination === `/topic/${room}` && f.body === fromStomp, 'its own message');
    const stompShown = await waitShown(page, fromStomp);
    assert.deepEqual(
      { id: stompShown.id, from: stompShown.from, ts: stompShown.ts },
      { id: stompEcho.headers['message-id'], from: stompName, ts: Number(stompEcho.headers.timestamp) });
    const rawSawStomp = await raw.waitFor((m) => m.type === 'message' && m.body === fromStomp, 'the STOMP message');
    assert.equal(rawSawStomp.id, stompShown.id);

    // Everything once, in order, ids 1..3 of the new room.
    const all = await shown(page);
    assert.deepEqual(all.map((m) => [m.id, m.from, m.body]),
      [['1', pgName, fromPage], ['2', rawName, fromRaw], ['3', stompName, fromStomp]]);

    // The transport: polling stays polling, websocket is websocket from the start, the default
    // starts on polling and upgrades.
    if (mode === 'upgrade') {
      await page.waitForFunction(() => window.chat.socket.io.engine.transport.name === 'websocket');
      const names = await page.evaluate(() => window.chat.transportNames);
      assert.deepEqual(names, ['polling', 'websocket'], 'connected on polling, then upgraded');
    } else {
      assert.equal(await transportOf(page), mode);
      assert.deepEqual(await page.evaluate(() => window.chat.transportNames), [mode]);
    }
    assert.equal(await page.locator('#transport').textContent(), mode === 'upgrade' ? 'websocket' : mode);

    // The STOMP client leaves: the page hears it.
    await stomp.close();
    await page.locator(`#members li[data-name="${stompName}"][data-online="false"]`).waitFor();
    assert.equal(await page.evaluate(() => window.chat.connects), 1);
    assert.deepEqual(await page.evaluate(() => window.chat.errors), []);
    await e2e.screenshot(page, `socketio-${mode}`);
    e2e.assertNoErrors(user);
    raw.close();
    await closeAll();
  });
}

// ---- 2. connection-state recovery across a SIGKILL and restart ---------------------------------
for (const [mode, transports] of MODES) {
  test(`recovery over ${mode}: SIGKILL, restart on the same port and data, the page gets what it missed once, in order (socket.recovered)`, { timeout: TEST_TIMEOUT }, async () => {
    const dataDir = e2e.tempDir('sio-recovery');
    let srv = await e2e.startServer({ port: await e2e.freePort(), dataDir, args: ALLOW_STATIC });
    // The page reaches Parley through a TCP proxy, so its network can stay cut after the
    // restart until the other client has talked: what it missed must come by recovery.
    const proxy = await e2e.startProxy(srv.port);
    try {
      const room = `rec-${mode}`;
      const [pgName, otherName] = [`rec-page-${mode}`, `rec-other-${mode}`];
      const [pgToken, otherToken] = await Promise.all([account(srv, pgName), account(srv, otherName)]);
      let other = await rawClient(srv, otherToken);
      await other.join(room);
      const user = await openChat(pgName, { token: pgToken, transports, room, parley: proxy.url });
      const { page } = user;
      await page.locator('#status[data-state="joined"]').waitFor();
      const before = 'before the crash';
      assert.equal((await other.request({ type: 'send', room, body: before })).id, '1');
      await waitShown(page, before);
      if (mode === 'upgrade') await page.waitForFunction(() => window.chat.socket.io.engine.transport.name === 'websocket');

      user.outage = true;
      const exited = new Promise((resolve) => srv.proc.once('exit', (code, signal) => resolve({ code, signal })));
      srv.proc.kill('SIGKILL');
      assert.deepEqual(await within(exited, e2e.WAIT, 'parley to die'), { code: null, signal: 'SIGKILL' });
      proxy.block();
      await page.waitForFunction(() => !window.chat.socket.connected);
      other.close();

      srv = await e2e.startServer({ port: srv.port, dataDir, args: ALLOW_STATIC });
      other = await rawClient(srv, otherToken); // same token: the key is in the data directory
      await other.join(room);
      const missed = ['missed 1', 'missed 2', 'missed 3'];
      const ids = [];
      for (const body of missed) ids.push((await other.request({ type: 'send', room, body })).id);
      assert.deepEqual(ids, ['2', '3', '4']);
      assert.equal(await page.evaluate(() => window.chat.socket.connected), false, 'the page is still away');
      assert.equal((await shown(page)).length, 1);

      proxy.unblock(); // socket.io-client retries by itself (backoff of at most 5 s × 1.5)
      await page.waitForFunction(() => window.chat.socket.connected && window.chat.connects === 2, null, { timeout: 20_000 });
      assert.equal(await page.evaluate(() => window.chat.socket.recovered), true, 'socket.recovered');
      await page.locator('#recovered[data-recovered="true"]').waitFor();
      await waitShown(page, missed[2]);
      user.outage = false;
      // Live again: the recovered session is back in the room, both ways.
      const after = 'after the recovery';
      assert.equal((await other.request({ type: 'send', room, body: after })).id, '5');
      await waitShown(page, after);
      await page.fill('#input', 'the page is back');
      await page.press('#input', 'Enter');
      await page.locator('#last-ack[data-id="6"]').waitFor();
      await other.waitFor((m) => m.type === 'message' && m.id === '6' && m.from === pgName, 'the page\'s message after recovery');
      await waitShown(page, 'the page is back');
      await e2e.pause(300); // nothing may come twice, late
      const all = await shown(page);
      assert.deepEqual(all.map((m) => [m.id, m.body]),
        [['1', before], ['2', missed[0]], ['3', missed[1]], ['4', missed[2]], ['5', after], ['6', 'the page is back']],
        'every message once, in order');
      assert.equal(await page.evaluate(() => window.chat.recoveredConnects), 1);
      if (mode === 'upgrade') await page.waitForFunction(() => window.chat.socket.io.engine.transport.name === 'websocket');
      else assert.equal(await transportOf(page), mode);
      assert.deepEqual(await page.evaluate(() => window.chat.errors), []);
      await e2e.screenshot(page, `socketio-recovery-${mode}`);
      e2e.assertNoErrors(user);
      other.close();
      await closeAll();
    } finally {
      await proxy.close();
      await srv.stop();
      e2e.removeDir(dataDir);
    }
  });
}

// ---- 3. a same-origin page: the session cookie authenticates --------------------------------------
// Parley serves no arbitrary files, so the page's origin is a small reverse proxy in front of
// Parley, as a deployment's would be: it serves the page's own files and passes everything else,
// /api/login and /socket.io/ (WebSocket upgrades too) included, to Parley with the Host header
// unchanged. (Answering the page's paths on Parley's origin with Playwright's `route` does not
// do: Chromium then blocks the page's WebSocket to 127.0.0.1 as a local-network access from a
// public page, net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS.) The page signs in with
// `POST /api/login {"cookie":true}` and connects with no token at all.
async function startSameOriginProxy(targetPort) {
  const srv = http.createServer((req, res) => {
    const file = FILES[new URL(req.url, 'http://x').pathname];
    if (file) {
      res.writeHead(200, { 'content-type': file[0], 'cache-control': 'no-store' });
      res.end(readFileSync(file[1]));
      return;
    }
    const up = http.request({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.rawHeaders);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  srv.on('upgrade', (req, socket, head) => {
    const up = net.connect(targetPort, '127.0.0.1', () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      up.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head.length) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
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

let cookiePeer;
for (const [mode, transports] of MODES) {
  test(`a same-origin page signs in with the session cookie and chats over ${mode} without a token`, { timeout: TEST_TIMEOUT }, async () => {
    const front = await startSameOriginProxy(server.port);
    try {
      const room = `cookie-${mode}`;
      const name = `cookie-${mode}`;
      await e2e.register(server, name);
      cookiePeer ??= { name: 'cookie-peer', token: await account(server, 'cookie-peer') };
      const peer = await rawClient(server, cookiePeer.token);
      await peer.join(room);
      // `parley` is the page's own origin: Parley behind the proxy.
      const user = await openChat(name, { transports, room, origin: front.url, parley: front.url, extra: { auth: 'cookie' } });
      const { page } = user;
      await page.locator('#signin:not([hidden])').waitFor();
      await page.fill('#username', name);
      await page.fill('#password', e2e.passwordOf(name));
      await page.click('#signin-button');
      await page.locator('#status[data-state="joined"]').waitFor();
      const cookies = await user.context.cookies(front.url);
      const session = cookies.find((c) => c.name === 'parley_session');
      assert.ok(session, `cookies: ${JSON.stringify(cookies.map((c) => c.name))}`);
      assert.equal(session.httpOnly, true);
      assert.equal(session.sameSite, 'Strict');
      // No token anywhere in the page: the CONNECT packet had no auth.
      assert.equal(await page.evaluate(() => window.chat.socket.auth), undefined);
      await peer.waitFor((m) => m.type === 'presence' && m.user === name && m.event === 'join', 'presence of the cookie page');

      const body = `cookie page over ${mode}`;
      await page.fill('#input', body);
      await page.press('#input', 'Enter');
      await page.locator(`#last-ack[data-body="${body}"]`).waitFor();
      const id = await page.locator('#last-ack').getAttribute('data-id');
      const atPeer = await peer.waitFor((m) => m.type === 'message' && m.body === body, 'the cookie page\'s message');
      assert.deepEqual({ id: atPeer.id, from: atPeer.from }, { id, from: name }, 'the server knows the page by its cookie');
      const reply = `peer to the cookie page over ${mode}`;
      const replyAck = await peer.request({ type: 'send', room, body: reply });
      assert.equal((await waitShown(page, reply)).id, replyAck.id);
      if (mode === 'upgrade') {
        await page.waitForFunction(() => window.chat.socket.io.engine.transport.name === 'websocket');
        assert.deepEqual(await page.evaluate(() => window.chat.transportNames), ['polling', 'websocket']);
      } else {
        assert.equal(await transportOf(page), mode);
      }
      assert.deepEqual(await page.evaluate(() => window.chat.errors), []);
      await e2e.screenshot(page, `socketio-cookie-${mode}`);
      e2e.assertNoErrors(user);
      peer.close();
      await closeAll();
    } finally {
      await front.close();
    }
  });
}
