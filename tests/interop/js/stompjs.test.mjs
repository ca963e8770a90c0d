// @stomp/stompjs 7 (with `ws`) against Parley's STOMP-over-WebSocket endpoint.
//
//   PARLEY_BIN=target/release/parley node --test --test-concurrency=1 stompjs.test.mjs
//   INTEROP_TARGET=rabbitmq node --test stompjs.test.mjs   (checks expectations against RabbitMQ Web-STOMP)
//
// Every wait has its own timeout; clients use reconnectDelay 0 unless the test is about reconnecting.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { openSync, closeSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import { Client, Versions } from '@stomp/stompjs';
import { deferred, freePort, withTimeout } from './timeout.mjs';

// Node 20 has no global WebSocket; stompjs' brokerURL needs one.
Object.assign(globalThis, { WebSocket });

const TARGET = process.env.INTEROP_TARGET ?? 'parley';
const IS_RABBIT = TARGET === 'rabbitmq';
const WAIT = 10_000;
const STARTUP = 10_000;
const PARLEY_ONLY = IS_RABBIT ? 'parley-only' : false; // skip reason on RabbitMQ
const RUN = randomBytes(4).toString('hex');
let counter = 0;
const uniq = (p) => `interop-${p}-${RUN}-${counter++}`;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------




// No orphaned servers if this process dies or is interrupted.
const spawned = new Set();
process.on('exit', () => { for (const p of spawned) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL'); });

const logDir = mkdtempSync(join(tmpdir(), 'parley-interop-js-'));

/** Spawns `parley serve`; resolves with { proc, httpPort, stompPort, stop(), logPath } once both
 *  listening lines are on stdout. */
// One data directory for the whole file, so a restarted server keeps its messages.
const dataDir = mkdtempSync(join(tmpdir(), 'parley-js-data-'));

// Guests are allowed (--allow-guests), create rooms by subscribing (--guests-create-rooms) and may
// use queues (--guest-queues): the protocol tests connect with a login name only. The account
// tests register their users first.
async function startParley({ httpPort = 0 } = {}) {
  const bin = process.env.PARLEY_BIN;
  assert.ok(bin, 'PARLEY_BIN is not set');
  const logPath = join(logDir, `parley-${counter++}.log`);
  const logFd = openSync(logPath, 'a');
  const args = ['serve', '--http', `127.0.0.1:${httpPort}`, '--stomp-tcp', '127.0.0.1:0', '--data', dataDir,
    '--allow-guests', '--guests-create-rooms', '--guest-queues'];
  const proc = spawn(bin, args, {
    stdio: ['ignore', 'pipe', logFd],
    env: { RUST_LOG: 'info', ...process.env },
  });
  closeSync(logFd);
  spawned.add(proc);
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const lines = createInterface({ input: proc.stdout });
  const got = [];
  const ready = deferred();
  lines.on('line', (line) => {
    got.push(line);
    if (got.length === 2) ready.resolve();
  });
  exited.then((e) => ready.reject(new Error(`parley exited during startup: ${JSON.stringify(e)}`)));
  try {
    await withTimeout(ready.promise, STARTUP, 'parley listening lines');
  } catch (e) {
    proc.kill('SIGKILL');
    throw new Error(`${e.message}; stdout so far ${JSON.stringify(got)}; log:\n${tail(logPath)}`);
  }
  const http = /^parley listening on http:\/\/127\.0\.0\.1:(\d+)$/.exec(got[0]);
  const stomp = /^parley stomp listening on tcp:\/\/127\.0\.0\.1:(\d+)$/.exec(got[1]);
  assert.ok(http && stomp, `unexpected stdout lines ${JSON.stringify(got)}`);
  return {
    proc,
    logPath,
    httpUrl: `http://127.0.0.1:${http[1]}`,
    httpPort: Number(http[1]),
    stompPort: Number(stomp[1]),
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill('SIGTERM');
      try {
        // Parley gives WebSockets up to 10 s (--shutdown-grace) to answer its 1001 close.
        return await withTimeout(exited, 20_000, 'parley to exit after SIGTERM');
      } catch (e) {
        proc.kill('SIGKILL');
        throw e;
      }
    },
  };
}

function tail(path, n = 30) {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

let server; // the suite's Parley (not used on RabbitMQ)
let wsUrl;

function credentials(user) {
  return IS_RABBIT ? { login: 'guest', passcode: 'guest' } : user ? { login: user } : {};
}

const open = new Set();

/** A connected stompjs Client. opts: user, versions (['1.2']...), protocols (subprotocols offered),
 *  any Client config. Resolves with { client, connected (CONNECTED frame), messages... }. */
async function connectClient({ user = 'alice', versions, protocols, url, ...config } = {}) {
  const target = url ?? wsUrl;
  const connected = deferred();
  const debugLog = [];
  const client = new Client({
    connectHeaders: { host: '/', ...credentials(user) },
    reconnectDelay: 0,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    debug: (s) => { debugLog.push(s); if (debugLog.length > 200) debugLog.shift(); },
    ...(protocols
      ? { webSocketFactory: () => new WebSocket(target, protocols) }
      : { brokerURL: target }),
    ...(versions ? { stompVersions: new Versions(versions) } : {}),
    ...config,
  });
  const userOnConnect = config.onConnect;
  client.onConnect = (frame) => { connected.resolve(frame); userOnConnect?.(frame); };
  client.onStompError = (frame) => connected.reject(new Error(`STOMP ERROR: ${frame.headers.message} ${frame.body}`));
  client.onWebSocketClose = (evt) => connected.reject(new Error(`WebSocket closed before CONNECTED (${evt?.code})`));
  open.add(client);
  client.activate();
  const frame = await withTimeout(connected.promise, WAIT, `CONNECTED from ${target}`)
    .catch((e) => { throw new Error(`${e.message}\n${debugLog.slice(-20).join('\n')}`); });
  return { client, connectedFrame: frame, debugLog };
}

/** Subscribes and waits for the SUBSCRIBE's receipt. Returns { sub, messages, next(n) }. */
async function subscribe(client, destination, headers = {}, onMessage) {
  const messages = [];
  const waiters = [];
  const receipt = `sub-${counter++}`;
  const gotReceipt = deferred();
  client.watchForReceipt(receipt, () => gotReceipt.resolve());
  const sub = client.subscribe(destination, (m) => {
    messages.push(m);
    onMessage?.(m);
    for (const w of [...waiters]) if (messages.length >= w.n) { waiters.splice(waiters.indexOf(w), 1); w.d.resolve(); }
  }, { ...headers, receipt });
  await withTimeout(gotReceipt.promise, WAIT, `receipt of SUBSCRIBE ${destination}`);
  return {
    sub,
    messages,
    async waitFor(n, what = `${n} message(s) on ${destination}`, ms = WAIT) {
      if (messages.length >= n) return messages;
      const d = deferred();
      waiters.push({ n, d });
      await withTimeout(d.promise, ms, what);
      return messages;
    },
  };
}

/** Publishes and waits for the SEND's receipt. */
async function publish(client, params, ms = WAIT) {
  const receipt = `pub-${counter++}`;
  const got = deferred();
  client.watchForReceipt(receipt, () => got.resolve());
  client.publish({ ...params, headers: { ...(params.headers ?? {}), receipt } });
  await withTimeout(got.promise, ms, `receipt of SEND to ${params.destination}`);
}

/** A test RabbitMQ is known to fail, for the reason given: there it must fail (else the marker is
 *  stale); on Parley it must pass. fn(t, wait) gets the timeout to use for the step that differs. */
function rabbitmqDiffers(reason, fn) {
  return async (t) => {
    if (!IS_RABBIT) return fn(t, WAIT);
    await assert.rejects(() => fn(t, 3000), `RabbitMQ now passes; drop rabbitmqDiffers (${reason})`);
    t.diagnostic(`expected failure: RabbitMQ differs: ${reason}`);
  };
}

async function closeAll() {
  for (const c of open) {
    try { await withTimeout(c.deactivate(), 3000, 'deactivate'); } catch { /* best effort */ }
  }
  open.clear();
}

before(async () => {
  if (IS_RABBIT) {
    wsUrl = process.env.RABBITMQ_WS_URL ?? 'ws://127.0.0.1:15674/ws';
  } else {
    server = await startParley();
    wsUrl = `ws://127.0.0.1:${server.httpPort}/stomp`;
  }
});

after(async () => {
  await closeAll();
  if (server) {
    const { code, signal } = await server.stop();
    if (code !== 0) console.error(`parley exited with ${code ?? signal}; log:\n${tail(server.logPath)}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

describe('connect / subscribe / publish / receive', () => {
  for (const [version, proto] of [['1.2', 'v12.stomp'], ['1.1', 'v11.stomp'], ['1.0', 'v10.stomp']]) {
    test(`STOMP ${version} (subprotocol ${proto})`, async (t) => {
      t.after(closeAll);
      const { client: sender } = await connectClient({ user: 'alice', versions: [version], protocols: [proto] });
      const { client: receiver, connectedFrame } = await connectClient({
        user: 'bob', versions: [version], protocols: [proto],
      });
      assert.equal(connectedFrame.headers.version, version);
      assert.ok(connectedFrame.headers.session, 'CONNECTED has no session header');
      assert.ok(connectedFrame.headers.server, 'CONNECTED has no server header');
      const dest = `/topic/${uniq('js')}`;
      const s = await subscribe(receiver, dest);
      await publish(sender, {
        destination: dest,
        body: 'hello from stompjs ✓',
        headers: { 'content-type': 'text/plain', 'x-custom': 'value-1' },
      });
      const [m] = await s.waitFor(1);
      assert.equal(m.body, 'hello from stompjs ✓');
      assert.equal(m.headers.destination, dest);
      assert.equal(m.headers['x-custom'], 'value-1');
      assert.match(m.headers['content-type'], /^text\/plain/);
      assert.equal(Number(m.headers['content-length']), Buffer.byteLength('hello from stompjs ✓'));
      assert.ok(m.headers['message-id']);
      assert.equal(m.headers.subscription, s.sub.id);
    });
  }

  test('brokerURL offering v10/v11/v12.stomp negotiates 1.2', async (t) => {
    t.after(closeAll);
    const { client, connectedFrame } = await connectClient({});
    assert.equal(connectedFrame.headers.version, '1.2');
    assert.equal(client.webSocket.protocol, 'v12.stomp');
  });

  test('header values with : \\n \\\\ round-trip (1.2 escaping)', async (t) => {
    t.after(closeAll);
    const { client } = await connectClient({ versions: ['1.2'], protocols: ['v12.stomp'] });
    const dest = `/topic/${uniq('esc')}`;
    const s = await subscribe(client, dest);
    const tricky = { 'x-colon': 'a:b', 'x-newline': 'one\ntwo', 'x-backslash': 'C:\\dir', 'x-cr': 'a\rb' };
    await publish(client, { destination: dest, body: 'esc', headers: tricky });
    const [m] = await s.waitFor(1);
    for (const [k, v] of Object.entries(tricky)) assert.equal(m.headers[k], v, k);
  });
});

describe('heart-beats', () => {
  test('10000,10000 offered: CONNECTED heart-beat is 10000,10000', async (t) => {
    t.after(closeAll);
    const { client, connectedFrame } = await connectClient({ heartbeatIncoming: 10000, heartbeatOutgoing: 10000 });
    assert.equal(connectedFrame.headers['heart-beat'].replace(/\s/g, ''), '10000,10000');
    // Both directions are armed: stompjs pings and watches for server activity.
    assert.ok(client._stompHandler._pinger, 'stompjs did not schedule outgoing heart-beats');
    assert.ok(client._stompHandler._ponger, 'stompjs does not expect incoming heart-beats');
  });

  test('client offering none still hears the server\'s 10000,10000', { skip: PARLEY_ONLY }, async (t) => {
    t.after(closeAll);
    const { connectedFrame } = await connectClient({});
    assert.equal(connectedFrame.headers['heart-beat'].replace(/\s/g, ''), '10000,10000');
  });
});

describe('1 MiB bodies', () => {
  const MiB = 1024 * 1024;
  const text = 'abcdefghijklmnopqrstuvwxyz0123456789-+'.repeat(Math.ceil(MiB / 38)).slice(0, MiB);

  test('text body, one WebSocket message per frame', async (t) => {
    t.after(closeAll);
    const { client } = await connectClient({});
    const dest = `/queue/${uniq('big')}`;
    const s = await subscribe(client, dest);
    await publish(client, { destination: dest, body: text });
    const [m] = await s.waitFor(1, '1 MiB message', 20_000);
    assert.equal(m.body.length, MiB);
    assert.ok(m.body === text, 'body differs');
  });

  test('text body, frame split into 8 KiB WebSocket messages (splitLargeFrames)', async (t) => {
    t.after(closeAll);
    const { client } = await connectClient({ splitLargeFrames: true, maxWebSocketChunkSize: 8 * 1024 });
    const dest = `/queue/${uniq('bigsplit')}`;
    const s = await subscribe(client, dest);
    await publish(client, { destination: dest, body: text });
    const [m] = await s.waitFor(1, '1 MiB message', 20_000);
    assert.equal(m.body.length, MiB);
    assert.ok(m.body === text, 'body differs');
  });

  test('binary body (not UTF-8: must come back in a binary WebSocket message)', rabbitmqDiffers(
    'Web-STOMP sends the MESSAGE in a text WebSocket message although the body is not UTF-8; ' +
    'ws rejects it ("invalid UTF-8 sequence", closes 1007) and the connection dies',
    async (t, wait) => {
      t.after(closeAll);
      const { client } = await connectClient({});
      const dest = `/queue/${uniq('bigbin')}`;
      const s = await subscribe(client, dest);
      const bytes = randomBytes(MiB);
      await publish(client, {
        destination: dest, binaryBody: new Uint8Array(bytes), headers: { 'content-type': 'application/octet-stream' },
      }, wait);
      const [m] = await s.waitFor(1, '1 MiB binary message', wait);
      assert.equal(m.binaryBody.length, MiB);
      assert.ok(Buffer.from(m.binaryBody).equals(bytes), 'binary body differs');
    }));
});

describe('acknowledgement and transactions', () => {
  test('client-individual: nack() redelivers to the other consumer, ack() settles', async (t) => {
    t.after(closeAll);
    const { client: a } = await connectClient({ user: 'bob' });
    const { client: b } = await connectClient({ user: 'carol' });
    const { client: p } = await connectClient({ user: 'alice' });
    const dest = `/queue/${uniq('nack')}`;
    let nacks = 0;
    let seenByA = 0;
    const sa = await subscribe(a, dest, { ack: 'client-individual' }, (m) => {
      // The first delivery is NACKed below, after B has subscribed; any redelivery back to A is NACKed at once.
      if (++seenByA > 1) { nacks++; m.nack(); }
    });
    await publish(p, { destination: dest, body: 'potato' });
    const [first] = await sa.waitFor(1);
    const sb = await subscribe(b, dest, { ack: 'client-individual' });
    first.nack();
    const [got] = await sb.waitFor(1, 'the NACKed message at the second consumer');
    assert.equal(got.body, 'potato');
    assert.ok(nacks <= 10);
    got.ack();
  });

  test('transaction: published only on commit, never on abort', async (t) => {
    t.after(closeAll);
    const { client: r } = await connectClient({ user: 'bob' });
    const { client: p } = await connectClient({ user: 'alice' });
    const dest = `/topic/${uniq('tx')}`;
    const s = await subscribe(r, dest);
    const tx = p.begin();
    p.publish({ destination: dest, body: 'in-tx', headers: { transaction: tx.id } });
    await publish(p, { destination: dest, body: 'outside' });
    await s.waitFor(1);
    assert.deepEqual(s.messages.map((m) => m.body), ['outside']);
    tx.commit();
    await s.waitFor(2);
    const tx2 = p.begin();
    p.publish({ destination: dest, body: 'aborted', headers: { transaction: tx2.id } });
    tx2.abort();
    await publish(p, { destination: dest, body: 'after-abort' });
    await s.waitFor(3);
    assert.deepEqual(s.messages.map((m) => m.body), ['outside', 'in-tx', 'after-abort']);
  });
});

describe('parley only', { skip: PARLEY_ONLY }, () => {
  test('user destination and sender/user-name headers', async (t) => {
    t.after(closeAll);
    const alice = uniq('alice');
    const carol = uniq('carol');
    const { client: a, connectedFrame } = await connectClient({ user: alice });
    assert.equal(connectedFrame.headers['user-name'], alice);
    const { client: c } = await connectClient({ user: carol });
    const s = await subscribe(a, '/user/queue/inbox');
    await publish(c, { destination: `/user/${alice}/queue/inbox`, body: 'psst' });
    const [m] = await s.waitFor(1);
    assert.equal(m.body, 'psst');
    assert.equal(m.headers.destination, '/user/queue/inbox');
    assert.equal(m.headers.sender, carol);
    assert.ok(Math.abs(Number(m.headers.timestamp) - Date.now()) < 60_000, `timestamp ${m.headers.timestamp}`);
  });

  test('reconnects after the server restarts on the same port', async (t) => {
    const port = await freePort();
    let srv = await startParley({ httpPort: port });
    t.after(async () => { await closeAll(); await srv.stop(); });
    const url = `ws://127.0.0.1:${port}/stomp`;
    let connects = 0;
    const connectedAgain = deferred();
    const closed = deferred();
    const { client } = await connectClient({
      url,
      reconnectDelay: 200,
      onConnect: () => { connects++; if (connects === 2) connectedAgain.resolve(); },
      onWebSocketClose: () => closed.resolve(),
    });
    // connectClient replaced the hooks it needed for the first connect; restore ours for the rest.
    client.onWebSocketClose = () => closed.resolve();
    client.onStompError = () => {};
    assert.equal(connects, 1);
    const { code } = await srv.stop();
    assert.equal(code, 0, 'parley did not exit cleanly on SIGTERM');
    await withTimeout(closed.promise, WAIT, 'the WebSocket to close when the server stops');
    srv = await startParley({ httpPort: port });
    await withTimeout(connectedAgain.promise, WAIT, 'onConnect after the restart');
    const dest = `/topic/${uniq('again')}`;
    const s = await subscribe(client, dest);
    await publish(client, { destination: dest, body: 'back' });
    const [m] = await s.waitFor(1);
    assert.equal(m.body, 'back');
  });
});

describe('accounts (parley only)', { skip: PARLEY_ONLY }, () => {
  const passwordOf = (user) => `pw-${user}-correct-horse`;

  async function postJson(path, body) {
    const resp = await fetch(`${server.httpUrl}${path}`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    const text = await resp.text();
    return { status: resp.status, body: text ? JSON.parse(text) : null };
  }

  /** A new account (POST /api/register) and its access token (POST /api/login). */
  async function account(prefix) {
    const user = uniq(prefix).slice(0, 32);
    const reg = await postJson('/api/register', { username: user, password: passwordOf(user) });
    assert.equal(reg.status, 201, `register: ${JSON.stringify(reg)}`);
    const login = await postJson('/api/login', { username: user, password: passwordOf(user) });
    assert.equal(login.status, 200, `login: ${JSON.stringify(login)}`);
    assert.equal(typeof login.body.access_token, 'string');
    return { user, token: login.body.access_token };
  }

  test('CONNECT with passcode:<jwt>: the session is the token\'s user', async (t) => {
    t.after(closeAll);
    const { user, token } = await account('jwt');
    const { client, connectedFrame } = await connectClient({ connectHeaders: { host: '/', passcode: token } });
    assert.equal(connectedFrame.headers['user-name'], user);
    const dest = `/topic/${uniq('jwt')}`;
    const s = await subscribe(client, dest);
    await publish(client, { destination: dest, body: 'signed by a token' });
    const [m] = await s.waitFor(1);
    assert.equal(m.headers.sender, user);
    assert.notEqual(m.headers['sender-guest'], 'true');
    // Renewal on the open connection: SEND /app/auth with a fresh token, answered by a RECEIPT.
    const fresh = await postJson('/api/login', { username: user, password: passwordOf(user) });
    await publish(client, { destination: '/app/auth', headers: { 'access-token': fresh.body.access_token } });
    await publish(client, { destination: dest, body: 'still me' });
    const [, m2] = await s.waitFor(2);
    assert.equal(m2.headers.sender, user);
  });

  test('CONNECT with login and password', async (t) => {
    t.after(closeAll);
    const { user } = await account('pw');
    const { connectedFrame } = await connectClient({ connectHeaders: { host: '/', login: user, passcode: passwordOf(user) } });
    assert.equal(connectedFrame.headers['user-name'], user);
  });

  test('a wrong password or a bad token gets an ERROR, not a session', async (t) => {
    t.after(closeAll);
    const { user, token } = await account('wrong');
    for (const headers of [
      { login: user, passcode: 'not-the-password' },
      { passcode: `${token.slice(0, -4)}${token.endsWith('AAAA') ? 'BBBB' : 'AAAA'}` },
    ]) {
      await assert.rejects(() => connectClient({ connectHeaders: { host: '/', ...headers } }),
        /STOMP ERROR: authentication failed/);
    }
  });

  test('a guest\'s messages are marked sender-guest:true', async (t) => {
    t.after(closeAll);
    const { user, token } = await account('member');
    const { client: member } = await connectClient({ connectHeaders: { host: '/', passcode: token } });
    const { client: guest } = await connectClient({ user: uniq('visitor') });
    const dest = `/topic/${uniq('mixed')}`;
    const s = await subscribe(member, dest);
    await publish(guest, { destination: dest, body: 'from a guest' });
    await publish(member, { destination: dest, body: 'from an account' });
    const [g, a] = await s.waitFor(2);
    assert.equal(g.headers['sender-guest'], 'true');
    assert.equal(a.headers.sender, user);
    assert.notEqual(a.headers['sender-guest'], 'true');
  });
});
