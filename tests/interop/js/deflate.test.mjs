// permessage-deflate with real clients: `ws` (perMessageDeflate) on /ws, and @stomp/stompjs over
// a `ws` WebSocket with perMessageDeflate on /stomp. Parley answers without context takeover either
// way; `ws` must accept that, inflate what Parley compresses and compress what it sends.
//
//   PARLEY_BIN=target/debug/parley node --test --test-concurrency=1 deflate.test.mjs
//
// Parley only (RabbitMQ Web-STOMP has its own deflate story): skipped with INTEROP_TARGET=rabbitmq.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { Client } from '@stomp/stompjs';
import { deferred, withTimeout } from './timeout.mjs';

const WAIT = 10_000;
const SKIP = process.env.INTEROP_TARGET === 'rabbitmq' ? 'parley-only' : false;

// No orphaned server if this process dies.
let proc;
process.on('exit', () => { if (proc && proc.exitCode === null) proc.kill('SIGKILL'); });

let httpPort;

/** `parley serve` on free ports; resolves once its two listening lines are out. */
async function startParley() {
  const bin = process.env.PARLEY_BIN;
  assert.ok(bin, 'PARLEY_BIN is not set');
  const data = mkdtempSync(join(tmpdir(), 'parley-deflate-'));
  proc = spawn(bin, ['serve', '--http', '127.0.0.1:0', '--stomp-tcp', '127.0.0.1:0', '--data', data,
    '--allow-guests', '--guests-create-rooms'], { stdio: ['ignore', 'pipe', 'inherit'], env: { RUST_LOG: 'warn', ...process.env } });
  const lines = [];
  const ready = deferred();
  createInterface({ input: proc.stdout }).on('line', (line) => {
    lines.push(line);
    if (lines.length === 2) ready.resolve();
  });
  proc.once('exit', (code) => ready.reject(new Error(`parley exited during startup (${code})`)));
  await withTimeout(ready.promise, WAIT, 'parley listening lines');
  const http = /^parley listening on http:\/\/127\.0\.0\.1:(\d+)$/.exec(lines[0]);
  assert.ok(http, `unexpected stdout ${JSON.stringify(lines)}`);
  return Number(http[1]);
}

/** A chat line longer than Parley's 128-byte threshold, so it travels compressed. */
const line = (i) => `Message ${i}: the deploy of the search service went out at 9:40 and the error rate looks ` +
  'flat so far; I will keep an eye on the dashboards until lunch and report back here.';

/** Opens `url` with permessage-deflate offered; resolves once open with the socket and the
 *  `Sec-WebSocket-Extensions` answer. */
async function openDeflate(url, protocols) {
  const ws = new WebSocket(url, protocols, { perMessageDeflate: true });
  let answer;
  ws.once('upgrade', (res) => { answer = res.headers['sec-websocket-extensions']; });
  await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }), WAIT, `open ${url}`);
  return { ws, answer };
}

/** The next JSON message on `ws` whose type is `type`. */
function nextOf(ws, type) {
  return withTimeout(new Promise((resolve) => {
    const on = (data) => {
      const msg = JSON.parse(data.toString());
      if (msg.type === type) { ws.off('message', on); resolve(msg); }
    };
    ws.on('message', on);
  }), WAIT, `a ${type} message`);
}

describe('permessage-deflate', { skip: SKIP }, () => {
  before(async () => { httpPort = await startParley(); });
  after(async () => {
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    await withTimeout(exited, 20_000, 'parley to exit').catch(() => proc.kill('SIGKILL'));
  });

  test('ws on /ws negotiates it, round-trips messages and reads fewer bytes than the JSON', async () => {
    const { ws, answer } = await openDeflate(`ws://127.0.0.1:${httpPort}/ws?name=nodeclient`);
    assert.equal(ws.extensions, 'permessage-deflate');
    assert.equal(answer, 'permessage-deflate; server_no_context_takeover; client_no_context_takeover');
    ws.send(JSON.stringify({ type: 'join', room: 'node-deflate' }));
    await nextOf(ws, 'joined');
    const before = ws._socket.bytesRead;
    let json = 0;
    for (let i = 0; i < 20; i++) {
      const body = line(i);
      const echo = nextOf(ws, 'message');
      // `ws` compresses what it sends (its threshold is 1 KiB, so make one large enough).
      ws.send(JSON.stringify({ type: 'send', room: 'node-deflate', body: i === 0 ? body.repeat(8) : body }));
      const got = await echo;
      assert.equal(got.body, i === 0 ? body.repeat(8) : body);
      json += Buffer.byteLength(JSON.stringify(got));
    }
    const read = ws._socket.bytesRead - before;
    console.log(`ws read ${read} bytes for ${json} bytes of JSON messages (and their acks)`);
    assert.ok(read < json, `read ${read} bytes for ${json} bytes of JSON`);
    ws.close();
  });

  test('@stomp/stompjs over ws with perMessageDeflate on /stomp', async () => {
    let socket;
    const connected = deferred();
    const client = new Client({
      connectHeaders: { host: '/', login: 'stompdeflate' },
      reconnectDelay: 0,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
      webSocketFactory: () => {
        socket = new WebSocket(`ws://127.0.0.1:${httpPort}/stomp`, ['v12.stomp'], { perMessageDeflate: true });
        return socket;
      },
      onConnect: () => connected.resolve(),
      onStompError: (f) => connected.reject(new Error(`STOMP ERROR ${f.headers.message}`)),
    });
    client.activate();
    try {
      await withTimeout(connected.promise, WAIT, 'CONNECTED');
      assert.ok(socket.extensions.includes('permessage-deflate'), `extensions: ${socket.extensions}`);
      const got = [];
      const all = deferred();
      const subscribed = deferred();
      client.watchForReceipt('sub', () => subscribed.resolve());
      client.subscribe('/topic/node-deflate', (m) => { got.push(m.body); if (got.length === 5) all.resolve(); }, { receipt: 'sub' });
      await withTimeout(subscribed.promise, WAIT, 'SUBSCRIBE receipt');
      for (let i = 0; i < 5; i++) client.publish({ destination: '/topic/node-deflate', body: line(i).repeat(i === 0 ? 8 : 1) });
      await withTimeout(all.promise, WAIT, 'five MESSAGEs');
      assert.deepEqual(got, [0, 1, 2, 3, 4].map((i) => line(i).repeat(i === 0 ? 8 : 1)));
    } finally {
      await client.deactivate();
    }
  });
});
