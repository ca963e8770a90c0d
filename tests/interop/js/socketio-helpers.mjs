// Shared by socketio-protocol.test.mjs and socketio-chat.test.mjs: starting Parley and the
// reference servers, raw HTTP and WebSocket clients whose every wait is bounded.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createServer as createHttpServer } from 'node:http';
import { openSync, closeSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { Server as EngineServer } from 'engine.io';
import { Server as SocketIoServer } from 'socket.io';
import { deferred, freePort, withTimeout } from './timeout.mjs';

export { deferred, freePort };

export const WAIT = 5_000;
const STARTUP = 10_000;

/** The conformance services' timing (the suites' test servers, and Parley's `--echo` services). */
export const PING_INTERVAL = 300;
export const PING_TIMEOUT = 200;
export const CONNECT_TIMEOUT = 1000;
export const MAX_PAYLOAD = 1_000_000;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));



// ---------------------------------------------------------------------------------------------
// Parley
// ---------------------------------------------------------------------------------------------

// No orphaned servers if this process dies or is interrupted.
const spawned = new Set();
process.on('exit', () => { for (const p of spawned) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL'); });
const logDir = mkdtempSync(join(tmpdir(), 'parley-socketio-js-'));
let logCounter = 0;

export function tail(path, n = 40) {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

export const newDataDir = () => mkdtempSync(join(tmpdir(), 'parley-socketio-data-'));

/** `parley serve` on 127.0.0.1 (`httpPort` 0: any free port) with `args` added; resolves once it
 *  listens, with its URL and stop() (SIGTERM) / kill() (SIGKILL). */
export async function startParley({ httpPort = 0, dataDir = newDataDir(), args = [] } = {}) {
  const bin = process.env.PARLEY_BIN;
  assert.ok(bin, 'PARLEY_BIN is not set');
  const logPath = join(logDir, `parley-${logCounter++}.log`);
  const logFd = openSync(logPath, 'a');
  const argv = ['serve', '--http', `127.0.0.1:${httpPort}`, '--stomp-tcp', '127.0.0.1:0', '--data', dataDir, ...args];
  const proc = spawn(bin, argv, { stdio: ['ignore', 'pipe', logFd], env: { RUST_LOG: 'info', ...process.env } });
  closeSync(logFd);
  spawned.add(proc);
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const first = new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout }).once('line', resolve);
    exited.then((e) => reject(new Error(`parley exited during startup: ${JSON.stringify(e)}`)));
  });
  const line = await withTimeout(first, STARTUP, 'parley listening line')
    .catch((e) => { proc.kill('SIGKILL'); throw new Error(`${e.message}; log:\n${tail(logPath)}`); });
  const m = /^parley listening on (http:\/\/127\.0\.0\.1:(\d+))$/.exec(line);
  assert.ok(m, `unexpected stdout line ${line}`);
  const gone = () => proc.exitCode !== null || proc.signalCode !== null;
  return {
    name: 'parley',
    url: m[1],
    port: Number(m[2]),
    dataDir,
    logPath,
    async stop() {
      if (gone()) return exited;
      proc.kill('SIGTERM');
      return withTimeout(exited, 20_000, 'parley to exit after SIGTERM').catch((e) => { proc.kill('SIGKILL'); throw e; });
    },
    async kill() {
      if (gone()) return exited;
      proc.kill('SIGKILL');
      return withTimeout(exited, WAIT, 'parley to die after SIGKILL');
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The reference servers (npm engine.io / socket.io), configured as the suites' test servers and
// mounted at Parley's paths
// ---------------------------------------------------------------------------------------------

export async function startReference() {
  const http = createHttpServer();
  const timing = { pingInterval: PING_INTERVAL, pingTimeout: PING_TIMEOUT, maxHttpBufferSize: MAX_PAYLOAD };
  // Two servers on one HTTP server: neither may destroy the other's upgrades.
  const engine = new EngineServer({ ...timing, destroyUpgrade: false });
  engine.attach(http, { path: '/socketio-test/engine.io/', destroyUpgrade: false });
  engine.on('connection', (socket) => {
    socket.on('message', (data) => socket.send(data));
  });
  const io = new SocketIoServer(http, {
    ...timing, path: '/socketio-test/socket.io/', connectTimeout: CONNECT_TIMEOUT, destroyUpgrade: false, serveClient: false,
  });
  const onConnection = (socket) => {
    socket.emit('auth', socket.handshake.auth);
    socket.on('message', (...args) => socket.emit('message-back', ...args));
    socket.on('message-with-ack', (...args) => { const ack = args.pop(); ack(...args); });
  };
  io.of('/').on('connection', onConnection);
  io.of('/custom').on('connection', onConnection);
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve));
  return {
    name: 'reference',
    url: `http://127.0.0.1:${http.address().port}`,
    async stop() {
      io.close();
      engine.close();
      http.closeAllConnections();
      await new Promise((resolve) => http.close(resolve));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Raw clients
// ---------------------------------------------------------------------------------------------

/** One HTTP request with fetch; resolves { status, type, text, json() } or rejects after `ms`. */
export async function http(url, { method = 'GET', body, headers, ms = WAIT } = {}) {
  const res = await fetch(url, { method, body, headers, signal: AbortSignal.timeout(ms) });
  const text = await res.text();
  return {
    status: res.status,
    type: res.headers.get('content-type'),
    text,
    json: () => JSON.parse(text),
  };
}

/** A raw WebSocket that queues what it receives (text as strings, binary as Buffers).
 *  next(): the next message (`skipPings`: Engine.IO pings "2" left out); closed: the close
 *  ({code, reason}); refused: the HTTP status if the handshake was answered without an upgrade. */
export function rawSocket(url, { protocols, headers } = {}) {
  const ws = new WebSocket(url, protocols, { headers });
  const queue = [];
  const waiters = [];
  const closed = deferred();
  const opened = deferred();
  let refusedStatus;
  ws.on('message', (data, isBinary) => {
    queue.push(isBinary ? Buffer.from(data) : data.toString());
    while (waiters.length && queue.length) {
      const w = waiters[0];
      const i = w.skipPings ? queue.findIndex((m) => m !== '2') : 0;
      if (i < 0) { queue.length = 0; break; }
      waiters.shift();
      queue.splice(0, i);
      w.resolve(queue.shift());
    }
  });
  ws.on('open', () => opened.resolve());
  ws.on('unexpected-response', (_, res) => { refusedStatus = res.statusCode; res.resume(); ws.terminate(); });
  ws.on('error', (e) => opened.reject(e));
  ws.on('close', (code, reason) => { opened.reject(new Error(`closed before open (${refusedStatus ?? code})`)); closed.resolve({ code, reason: reason.toString() }); });
  opened.promise.catch(() => {});
  return {
    ws,
    url,
    send: (data) => ws.send(data),
    get refusedStatus() { return refusedStatus; },
    open: (ms = WAIT) => withTimeout(opened.promise, ms, `${url} to open`),
    next({ skipPings = false, ms = WAIT } = {}) {
      if (skipPings) while (queue.length && queue[0] === '2') queue.shift();
      if (queue.length) return Promise.resolve(queue.shift());
      const d = deferred();
      const w = { skipPings, resolve: d.resolve };
      waiters.push(w);
      return withTimeout(d.promise, ms, `a message on ${url}`)
        .finally(() => { const i = waiters.indexOf(w); if (i >= 0) waiters.splice(i, 1); });
    },
    closed: (ms = WAIT) => withTimeout(closed.promise, ms, `${url} to close`),
    close() { if (ws.readyState !== WebSocket.CLOSED) ws.terminate(); },
  };
}
