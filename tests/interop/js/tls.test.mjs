// @stomp/stompjs (with `ws`) over wss:// against a Parley serving TLS with a test CA's
// certificate; the session stays connected across a certificate swap and SIGHUP while new
// handshakes get the new certificate.
//
//   PARLEY_BIN=target/release/parley node --test tls.test.mjs

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { closeSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { Client } from '@stomp/stompjs';
import { deferred, withTimeout } from './timeout.mjs';
import { fingerprint, parseTlsLines, testCa } from './testca.mjs';

const WAIT = 10_000;
const SKIP = process.env.INTEROP_TARGET === 'rabbitmq' ? 'parley-only' : false;

let ca;
let served;
let server;
const clients = new Set();

async function startParley() {
  const logPath = join(mkdtempSync(join(tmpdir(), 'parley-tls-js-')), 'parley.log');
  const logFd = openSync(logPath, 'a');
  const args = ['serve', '--http', '127.0.0.1:0', '--stomp-tcp', '127.0.0.1:0',
    '--data', mkdtempSync(join(tmpdir(), 'parley-tls-data-')), '--allow-guests', '--guests-create-rooms',
    '--tls-cert', served.cert, '--tls-key', served.key, '--stomp-tls', '127.0.0.1:0', '--tls-check-interval', '0s'];
  const proc = spawn(process.env.PARLEY_BIN, args, { stdio: ['ignore', 'pipe', logFd], env: { RUST_LOG: 'info', ...process.env } });
  closeSync(logFd);
  const got = [];
  const ready = deferred();
  createInterface({ input: proc.stdout }).on('line', (line) => {
    got.push(line);
    if (got.length === 3) ready.resolve();
  });
  proc.once('exit', (code) => ready.reject(new Error(`parley exited during startup (${code})`)));
  await withTimeout(ready.promise, WAIT, 'the three listening lines').catch((e) => {
    proc.kill('SIGKILL');
    throw new Error(`${e.message}: ${JSON.stringify(got)}\n${readFileSync(logPath, 'utf8')}`);
  });
  const ports = parseTlsLines(got);
  assert.ok(ports, `unexpected stdout ${JSON.stringify(got)}`);
  return { proc, logPath, ...ports };
}

/** A connected stompjs client over wss:// trusting only the test CA. */
async function connectClient(user) {
  const connected = deferred();
  const client = new Client({
    connectHeaders: { host: '/', login: user },
    reconnectDelay: 0,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    webSocketFactory: () => new WebSocket(`wss://127.0.0.1:${server.https}/stomp`, ['v12.stomp'], { ca: ca.caBytes }),
  });
  client.onConnect = (frame) => connected.resolve(frame);
  client.onStompError = (frame) => connected.reject(new Error(`STOMP ERROR ${frame.headers.message}`));
  client.onWebSocketClose = (evt) => connected.reject(new Error(`closed before CONNECTED (${evt?.code})`));
  clients.add(client);
  client.activate();
  await withTimeout(connected.promise, WAIT, 'CONNECTED over wss://');
  return client;
}

/** Subscribes; resolves once the receipt came. next(body) waits for a message with that body. */
async function subscribe(client, destination) {
  const bodies = [];
  const waiters = [];
  const receipt = `sub-${destination}`;
  const got = deferred();
  client.watchForReceipt(receipt, () => got.resolve());
  client.subscribe(destination, (m) => {
    bodies.push(m.body);
    for (const w of [...waiters]) if (bodies.includes(w.body)) w.d.resolve();
  }, { receipt });
  await withTimeout(got.promise, WAIT, `receipt of SUBSCRIBE ${destination}`);
  return {
    async next(body) {
      if (bodies.includes(body)) return;
      const d = deferred();
      waiters.push({ body, d });
      await withTimeout(d.promise, WAIT, `message ${body}`);
    },
  };
}

/** The SHA-256 fingerprint of the certificate a new handshake with `port` gets. */
function servedFingerprint(port) {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: ca.caBytes }, () => {
      const fp = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fp);
    });
    socket.once('error', reject);
  });
}

before(async () => {
  if (SKIP) return;
  ca = testCa();
  served = ca.served('first');
  server = await startParley();
});

after(async () => {
  for (const c of clients) await withTimeout(c.deactivate(), 3000, 'deactivate').catch(() => {});
  if (server) {
    server.proc.kill('SIGTERM');
    await withTimeout(new Promise((r) => server.proc.once('exit', r)), 20_000, 'parley to exit').catch(() => server.proc.kill('SIGKILL'));
  }
});

test('@stomp/stompjs over wss:// trusting the test CA', { skip: SKIP }, async () => {
  const alice = await connectClient('alice');
  const bob = await connectClient('bob');
  const sub = await subscribe(bob, '/topic/tls-js');
  alice.publish({ destination: '/topic/tls-js', body: 'hello over wss' });
  await sub.next('hello over wss');
});

test('a client that does not trust the CA is refused', { skip: SKIP }, async () => {
  const ws = new WebSocket(`wss://127.0.0.1:${server.https}/stomp`, ['v12.stomp']);
  const err = await withTimeout(new Promise((resolve) => {
    ws.once('error', resolve);
    ws.once('open', () => resolve(null));
  }), WAIT, 'the handshake to fail');
  assert.ok(err, 'an untrusted certificate was accepted');
  assert.match(String(err.code ?? err.message), /CERT|certificate|UNABLE/i);
});

test('a wss:// session stays connected across a certificate swap and SIGHUP', { skip: SKIP }, async () => {
  const carol = await connectClient('carol');
  const sub = await subscribe(carol, '/topic/tls-swap');
  carol.publish({ destination: '/topic/tls-swap', body: 'before' });
  await sub.next('before');

  const next = ca.issue('second');
  ca.install(next, served);
  server.proc.kill('SIGHUP');
  const want = fingerprint(next.cert);
  const deadline = Date.now() + WAIT;
  while ((await servedFingerprint(server.https)) !== want) {
    assert.ok(Date.now() < deadline, 'the new certificate is not served after SIGHUP');
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(await servedFingerprint(server.stompTls), want, 'STOMP over TLS serves it too');

  carol.publish({ destination: '/topic/tls-swap', body: 'after' });
  await sub.next('after');
  assert.ok(carol.connected, 'the session made before the swap is still connected');
  // A new client handshakes with the new certificate.
  const dave = await connectClient('dave');
  const dsub = await subscribe(dave, '/topic/tls-swap');
  carol.publish({ destination: '/topic/tls-swap', body: 'to both' });
  await Promise.all([sub.next('to both'), dsub.next('to both')]);
});
