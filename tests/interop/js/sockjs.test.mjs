// Differential test: the same raw HTTP and WebSocket requests to the reference SockJS server
// (npm `sockjs` 0.3.24, in this process) and to Parley's SockJS, compared answer by answer. The
// checklist is the sections of sockjs-protocol's sockjs-protocol.py (protocol 0.3.3).
//
//   PARLEY_BIN=target/release/parley node --test --test-concurrency=1 sockjs.test.mjs
//
// Compared: status, body (entropy is random, so `info` is compared without it; everything else
// byte for byte) and the protocol's headers (PROTOCOL_HEADERS below; ETag and Expires by
// presence). Parley's other headers (security headers, x-accel-buffering, Retry-After) are not
// compared: the reference does not send them.
//
// Deliberate differences (asserted where they show, not compared):
// - A session's requests must come from the address that opened it (Parley answers 404 to
//   others); from one test process all requests share 127.0.0.1, so this does not show here.
// - A client aborting its receiving request: sockjs-node closes the session at once, Parley keeps
//   it for the disconnect delay so a flaky network (or a proxy timing out) does not lose it.
// - Errors sockjs-node answers without a body Parley explains in one line: a send to an unknown
//   session (404) — sockjs-node sends nothing, Parley "404 Error: Page not found\n".
// - A WebSocket sending broken JSON is closed (3000, "Broken framing.") at once by Parley; replies
//   its app had not yet sent to earlier messages are dropped, where sockjs-node, single-threaded,
//   had already sent them. The test waits for the echoes before sending the broken frame.
// - Batching: sockjs-node sends each message written while a WebSocket is open as its own
//   `a[…]` frame, Parley puts what is waiting into one; messages are compared one at a time.
// - `Allow` lists the same methods in another order; compared as sets.
// - A GET to `…/websocket` without an upgrade: 400 with the protocol's other allowed text.
// - Sessions: sockjs-node keys them by session id alone, Parley by prefix and session id (two
//   services never share a session). Both ignore the server id, which is what clients rely on.
// - Lone UTF-16 surrogates in a send (`"\ud800"`): JavaScript strings can hold them, Rust strings
//   cannot; Parley refuses the send as broken JSON. No sockjs-client sends them.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createServer, request as httpRequest } from 'node:http';
import { openSync, closeSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import sockjs from 'sockjs';
import { withTimeout } from './timeout.mjs';

const IS_RABBIT = (process.env.INTEROP_TARGET ?? 'parley') === 'rabbitmq';
const WAIT = 5_000;
const STARTUP = 10_000;
const RUN = randomBytes(4).toString('hex');
let counter = 0;
/** A session id both servers get: no `.`, unique per request sequence. */
const sid = () => `${RUN}-${counter++}`;

// The same timing and bounds on both servers (sockjs-node in ms, Parley as flags).
const HEARTBEAT_MS = 1000;
const DISCONNECT_MS = 1000;
const RESPONSE_LIMIT = 4096;

const PROTOCOL_HEADERS = [
  'content-type', 'cache-control', 'access-control-allow-origin', 'access-control-allow-credentials',
  'access-control-allow-methods', 'access-control-allow-headers', 'access-control-max-age', 'vary',
  'set-cookie', 'allow', 'x-content-type-options',
];
const PRESENCE_HEADERS = ['etag', 'expires'];

// ---------------------------------------------------------------------------------------------
// The two servers
// ---------------------------------------------------------------------------------------------


const spawned = new Set();
process.on('exit', () => { for (const p of spawned) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL'); });
const logDir = mkdtempSync(join(tmpdir(), 'parley-sockjs-js-'));

function tail(path, n = 30) {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

/** `parley serve` with the test services and the reference's timing; resolves with its base URL. */
async function startParley() {
  const bin = process.env.PARLEY_BIN;
  assert.ok(bin, 'PARLEY_BIN is not set');
  const logPath = join(logDir, 'parley.log');
  const logFd = openSync(logPath, 'a');
  const args = ['serve', '--http', '127.0.0.1:0', '--stomp-tcp', '127.0.0.1:0',
    '--data', mkdtempSync(join(tmpdir(), 'parley-sockjs-data-')), '--echo', '--allowed-origin', '*',
    '--sockjs-heartbeat', `${HEARTBEAT_MS}ms`, '--sockjs-disconnect-delay', `${DISCONNECT_MS}ms`,
    '--sockjs-response-limit', String(RESPONSE_LIMIT)];
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', logFd], env: { RUST_LOG: 'info', ...process.env } });
  closeSync(logFd);
  spawned.add(proc);
  const first = new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout }).once('line', resolve);
    proc.once('exit', (code, signal) => reject(new Error(`parley exited during startup: ${code ?? signal}`)));
  });
  const line = await withTimeout(first, STARTUP, 'parley listening line')
    .catch((e) => { proc.kill('SIGKILL'); throw new Error(`${e.message}; log:\n${tail(logPath)}`); });
  const m = /^parley listening on (http:\/\/127\.0\.0\.1:\d+)$/.exec(line);
  assert.ok(m, `unexpected stdout line ${line}`);
  return {
    url: m[1],
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGTERM');
      await withTimeout(exited, 20_000, 'parley to exit').catch(() => proc.kill('SIGKILL'));
    },
  };
}

/** sockjs-node with the protocol suite's four services at Parley's prefixes. */
async function startReference() {
  const server = createServer((req, res) => { res.writeHead(404); res.end(); });
  const common = {
    heartbeat_delay: HEARTBEAT_MS, disconnect_delay: DISCONNECT_MS, response_limit: RESPONSE_LIMIT,
    // Parley's iframe loads the client from here; the same URL makes the pages comparable.
    sockjs_url: '/vendor/sockjs.min.js', log: () => {},
  };
  const echo = (conn) => conn.on('data', (d) => conn.write(d));
  const services = [
    ['echo', {}, echo],
    ['close', {}, (conn) => conn.close(3000, 'Go away!')],
    ['disabled_websocket_echo', { websocket: false }, echo],
    ['cookie_needed_echo', { jsessionid: true }, echo],
  ];
  for (const [name, options, onConnection] of services) {
    const service = sockjs.createServer({ ...common, ...options, prefix: `/sockjs-test/${name}` });
    service.on('connection', onConnection);
    service.installHandlers(server);
  }
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    stop: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

let reference;
let parley;

// ---------------------------------------------------------------------------------------------
// Raw requests and comparison
// ---------------------------------------------------------------------------------------------

/** One request. Resolves once the response ended, or `until(body)` holds (then the request is
 *  aborted), or `ms` passed (ended: false). */
function send(base, method, path, { headers = {}, body, until, ms = WAIT } = {}) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let done = false;
    let res;
    const finish = (ended) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const buf = Buffer.concat(chunks);
      req.destroy();
      resolve({ status: res?.statusCode, headers: res?.headers ?? {}, body: buf.toString('utf8'), raw: buf, ended });
    };
    const timer = setTimeout(() => (res ? finish(false) : reject(new Error(`${method} ${path}: no answer`))), ms);
    const req = httpRequest(`${base}${path}`, { method, headers, agent: false }, (r) => {
      res = r;
      r.on('data', (c) => { chunks.push(c); if (until?.(Buffer.concat(chunks).toString('utf8'))) finish(false); });
      r.on('end', () => finish(true));
      r.on('error', () => finish(false));
    });
    req.on('error', (e) => (done ? undefined : res ? finish(false) : reject(e)));
    req.end(body);
  });
}

/** The same request to both servers, one after the other (reference first). */
async function both(method, path, options) {
  const ref = await send(reference.url, method, path, options);
  const ours = await send(parley.url, method, path, options);
  return { ref, ours };
}

function protocolHeaders(res) {
  const out = {};
  for (const name of PROTOCOL_HEADERS) if (res.headers[name] !== undefined) out[name] = res.headers[name];
  // Allow lists the same methods; sockjs-node in the order of its routing table.
  if (out.allow) out.allow = out.allow.split(', ').sort().join(', ');
  for (const name of PRESENCE_HEADERS) if (res.headers[name] !== undefined) out[name] = '(present)';
  return out;
}

/** Parley's headers with its deliberate additions removed where the reference has none. */
function withoutDeliberate(ours, ref) {
  const out = { ...ours };
  // A security header Parley sends on every answer.
  if (ref['x-content-type-options'] === undefined) delete out['x-content-type-options'];
  // sockjs-node sends its error texts (4xx, 5xx) unlabelled; Parley says what they are.
  if (ref['content-type'] === undefined && out['content-type'] === 'text/plain; charset=UTF-8') delete out['content-type'];
  return out;
}

/** Differences found in the current test; each test asserts there are none at its end, so one
 *  run lists every difference of a test rather than the first. */
let diffs = [];

function check(cond, what, ours, ref) {
  if (cond) return;
  let [a, b] = [JSON.stringify(ours), JSON.stringify(ref)];
  // Long bodies: from a little before where they part.
  let at = 0;
  while (at < a.length && a[at] === b[at]) at++;
  if (at > 60) [a, b] = [`…${a.slice(at - 40, at + 200)}`, `…${b.slice(at - 40, at + 200)}`];
  diffs.push(`${what}:\n  parley:    ${a.slice(0, 300)}\n  reference: ${b.slice(0, 300)}`);
}

/** Checks both answers agree: status, protocol headers and (unless `body: false`) the body,
 *  after `normalise`. Returns the pair for further checks. */
function same(what, { ref, ours }, { body = true, normalise = (b) => b } = {}) {
  check(ours.status === ref.status, `${what}: status`, [ours.status, ours.body], [ref.status, ref.body]);
  const refHeaders = protocolHeaders(ref);
  const ourHeaders = withoutDeliberate(protocolHeaders(ours), refHeaders);
  check(JSON.stringify(ourHeaders, Object.keys(ourHeaders).sort()) === JSON.stringify(refHeaders, Object.keys(refHeaders).sort()),
    `${what}: headers`, ourHeaders, refHeaders);
  if (body) check(normalise(ours.body) === normalise(ref.body), `${what}: body`, ours.body, ref.body);
  return { ref, ours };
}

/** A test whose differences are all reported at its end. */
function diffTest(name, fn) {
  test(name, async () => {
    diffs = [];
    await fn();
    assert.deepEqual(diffs, [], `${diffs.length} difference(s):\n${diffs.join('\n')}`);
  });
}

async function compare(what, method, path, options, how) {
  return same(`${what} (${method} ${path})`, await both(method, path, options), how);
}

const ECHO = '/sockjs-test/echo';
const CLOSE = '/sockjs-test/close';
const NO_WS = '/sockjs-test/disabled_websocket_echo';
const COOKIE = '/sockjs-test/cookie_needed_echo';
const url = (prefix, id, transport) => `${prefix}/000/${id}/${transport}`;
const lines = (n) => (b) => b.split('\n').length > n;

/** Opens one session on both servers by polling; returns its id. */
async function openPolled(prefix = ECHO) {
  const id = sid();
  await compare('open', 'POST', url(prefix, id, 'xhr'));
  return id;
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

describe('SockJS against the reference server (sockjs-node 0.3.24)', { skip: IS_RABBIT && 'parley-only' }, () => {
  before(async () => {
    reference = await startReference();
    parley = await startParley();
  });
  after(async () => {
    await parley?.stop();
    await reference?.stop();
  });

  diffTest('base URL: greeting, 404 and 405', async () => {
    for (const path of [ECHO, `${ECHO}/`]) await compare('welcome', 'GET', path);
    for (const path of [`${ECHO}/a`, `${ECHO}/a/`, `${ECHO}/a/b/c/d`]) await compare('unknown', 'GET', path);
    await compare('welcome', 'POST', ECHO, {}, { body: false });
  });

  diffTest('iframe page: cached, ETag, 304', async () => {
    for (const page of ['iframe.html', 'iframe-a.html', 'iframe-.html', 'iframe-0.1.2.html', 'iframe-0.1.2abc-dirty.2144.html']) {
      const { ref, ours } = await compare('iframe', 'GET', `${ECHO}/${page}`);
      const again = await both('GET', `${ECHO}/${page}`, { headers: {} });
      const refEtag = ref.headers.etag;
      const ourEtag = ours.headers.etag;
      assert.equal(again.ours.headers.etag, ourEtag, 'the ETag is stable');
      same('304', {
        ref: await send(reference.url, 'GET', `${ECHO}/${page}`, { headers: { 'if-none-match': refEtag } }),
        ours: await send(parley.url, 'GET', `${ECHO}/${page}`, { headers: { 'if-none-match': ourEtag } }),
      });
    }
    for (const page of ['iframe.htm', 'iframe', 'IFRAME.HTML', 'IFRAME', 'iframe.HTML', 'iframe.xml', 'iframe.htmlx']) {
      await compare('not an iframe', 'GET', `${ECHO}/${page}`);
    }
  });

  diffTest('info: GET and OPTIONS, CORS with and without Origin', async () => {
    const noEntropy = (b) => JSON.stringify({ ...JSON.parse(b), entropy: typeof JSON.parse(b).entropy });
    for (const prefix of [ECHO, NO_WS, COOKIE]) {
      await compare('info', 'GET', `${prefix}/info`, {}, { normalise: noEntropy });
      await compare('info', 'GET', `${prefix}/info`, { headers: { origin: 'http://example.com' } }, { normalise: noEntropy });
      await compare('info preflight', 'OPTIONS', `${prefix}/info`, {
        headers: { origin: 'http://example.com', 'access-control-request-headers': 'a, b, c' },
      });
      await compare('info preflight without Origin', 'OPTIONS', `${prefix}/info`);
      await compare('info', 'PUT', `${prefix}/info`, {}, { body: false });
    }
  });

  diffTest('session URLs: ids with dots, server id ignored, trailing slash', async () => {
    const id = sid();
    for (const path of [`${ECHO}/a.b/${id}/xhr`, `${ECHO}/000/a.b/xhr`, `${ECHO}//${id}/xhr`, `${ECHO}/000//xhr`]) {
      await compare('invalid id', 'POST', path, {}, { body: false });
    }
    await compare('open with a trailing slash', 'POST', `${url(ECHO, id, 'xhr')}/`);
    await compare('send through another server id', 'POST', `${ECHO}/999/${id}/xhr_send`, { body: '["a"]' });
    await compare('receive', 'POST', url(ECHO, id, 'xhr'));
  });

  diffTest('xhr polling: open, round trip, errors, content types, preflights', async () => {
    const id = await openPolled();
    await compare('send', 'POST', url(ECHO, id, 'xhr_send'), { body: '["x","y"]', headers: { origin: 'http://a.example' } });
    await compare('poll', 'POST', url(ECHO, id, 'xhr'));
    await compare('empty payload', 'POST', url(ECHO, id, 'xhr_send'));
    await compare('broken JSON', 'POST', url(ECHO, id, 'xhr_send'), { body: '["x' });
    await compare('not an array', 'POST', url(ECHO, id, 'xhr_send'), { body: '{"a":1}' });
    await compare('empty array', 'POST', url(ECHO, id, 'xhr_send'), { body: '[]' });
    await compare('unknown session', 'POST', url(ECHO, sid(), 'xhr_send'), { body: '["x"]' }, { body: false });
    const types = ['text/plain', 'T', 'application/json', 'application/xml', '', 'application/json; charset=utf-8',
      'text/xml; charset=utf-8', 'text/xml'];
    for (const type of types) {
      await compare(`content type ${type}`, 'POST', url(ECHO, id, 'xhr_send'), { body: '["t"]', headers: { 'content-type': type } });
    }
    const polled = await compare('poll', 'POST', url(ECHO, id, 'xhr'));
    assert.equal(polled.ours.body, `a[${types.map(() => '"t"').join(',')}]\n`);
    for (const transport of ['xhr', 'xhr_send', 'xhr_streaming']) {
      await compare('preflight', 'OPTIONS', url(ECHO, id, transport), {
        headers: { origin: 'http://a.example', 'access-control-request-headers': 'x-a, x-b' },
      });
      await compare('wrong method', 'GET', url(ECHO, id, transport), {}, { body: false });
    }
  });

  diffTest('xhr streaming: prelude, frames, closed after the response limit, next request continues', async () => {
    // Opened by a poll: a streaming request cut short would end the reference's session.
    const id = await openPolled();
    // Held open on both while messages go through; each gets one frame per message.
    const streams = {};
    for (const [name, base] of [['ref', reference.url], ['ours', parley.url]]) {
      streams[name] = send(base, 'POST', url(ECHO, id, 'xhr_streaming'), { ms: WAIT });
    }
    const msg = `"${'x'.repeat(128)}"`;
    await new Promise((r) => setTimeout(r, 100));
    for (let i = 0; i < 31; i++) {
      await compare(`send ${i}`, 'POST', url(ECHO, id, 'xhr_send'), { body: `[${msg}]` });
      await new Promise((r) => setTimeout(r, 5));
    }
    const after = { ref: await streams.ref, ours: await streams.ours };
    same('the stream after 31 messages', after);
    assert.ok(after.ref.ended && after.ours.ended, 'both closed the stream past the limit');
    await compare('send again', 'POST', url(ECHO, id, 'xhr_send'), { body: '["next"]' });
    const next = await compare('the next request', 'POST', url(ECHO, id, 'xhr_streaming'), { until: lines(2) });
    assert.equal(next.ours.body, `${'h'.repeat(2048)}\na["next"]\n`);
  });

  diffTest('eventsource: prelude, data lines, % escaping, Origin null', async () => {
    const id = sid();
    const stream = (headers) => both('GET', url(ECHO, id, 'eventsource'), { headers, until: (b) => b.includes('data: a'), ms: 1500 });
    const first = send(reference.url, 'GET', url(ECHO, id, 'eventsource'), { until: (b) => b.includes('data: a'), ms: WAIT });
    const firstOurs = send(parley.url, 'GET', url(ECHO, id, 'eventsource'), { until: (b) => b.includes('data: a'), ms: WAIT });
    await new Promise((r) => setTimeout(r, 200));
    await compare('send', 'POST', url(ECHO, id, 'xhr_send'), { body: '["%\\r\\n\\u0000 x"]' });
    same('stream', { ref: await first, ours: await firstOurs });
    same('Origin null', await stream({ origin: 'null' }), { body: false });
    same('Origin', await stream({ origin: 'http://a.example', 'access-control-request-headers': 'x' }), { body: false });
  });

  diffTest('htmlfile: callback required and valid, prelude, script frames', async () => {
    const id = sid();
    await compare('no callback', 'GET', url(ECHO, id, 'htmlfile'));
    await compare('invalid callback', 'GET', `${url(ECHO, id, 'htmlfile')}?c=%20`);
    const { ours } = await compare('open', 'GET', `${url(ECHO, sid(), 'htmlfile')}?c=%63allback`, { until: (b) => b.includes('p("o")') });
    assert.ok(ours.raw.length > 1024, 'the prelude is padded past 1 KiB');
    await compare('open by polling', 'POST', url(ECHO, id, 'xhr'));
    const first = send(reference.url, 'GET', `${url(ECHO, id, 'htmlfile')}?c=cb`, { until: (b) => b.includes('a['), ms: WAIT });
    const firstOurs = send(parley.url, 'GET', `${url(ECHO, id, 'htmlfile')}?c=cb`, { until: (b) => b.includes('a['), ms: WAIT });
    await new Promise((r) => setTimeout(r, 200));
    await compare('send', 'POST', url(ECHO, id, 'xhr_send'), { body: '["</script>\\"x"]' });
    same('frames', { ref: await first, ours: await firstOurs });
  });

  diffTest('jsonp and jsonp_send: callbacks, form and text payloads, errors', async () => {
    const id = sid();
    await compare('no callback', 'GET', url(ECHO, id, 'jsonp'));
    await compare('invalid callback', 'GET', `${url(ECHO, id, 'jsonp')}?c=a%20b`);
    await compare('too long a callback', 'GET', `${url(ECHO, id, 'jsonp')}?c=${'a'.repeat(33)}`);
    await compare('open', 'GET', `${url(ECHO, id, 'jsonp')}?c=%63allback`);
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    await compare('form send', 'POST', url(ECHO, id, 'jsonp_send'), { body: 'd=%5B%22abc%22%5D', headers: form });
    await compare('text send', 'POST', url(ECHO, id, 'jsonp_send'), { body: '["%61bc"]', headers: { 'content-type': 'text/plain' } });
    await compare('poll', 'GET', `${url(ECHO, id, 'jsonp')}?callback=cb`);
    await compare('no payload', 'POST', url(ECHO, id, 'jsonp_send'), { headers: form });
    await compare('empty form field', 'POST', url(ECHO, id, 'jsonp_send'), { body: 'd=', headers: form });
    await compare('broken form JSON', 'POST', url(ECHO, id, 'jsonp_send'), { body: 'd=%5B%22x', headers: form });
    await compare('broken text JSON', 'POST', url(ECHO, id, 'jsonp_send'), { body: '["x', headers: { 'content-type': 'text/plain' } });
    await compare('unknown session', 'POST', url(ECHO, sid(), 'jsonp_send'), { body: 'd=%5B%22x%22%5D', headers: form }, { body: false });
    await compare('wrong method', 'POST', `${url(ECHO, id, 'jsonp')}?c=x`, {}, { body: false });
    await compare('wrong method', 'GET', url(ECHO, id, 'jsonp_send'), {}, { body: false });
  });

  diffTest('close service: c[3000,"Go away!"] on every transport, and again', async () => {
    for (const transport of ['xhr', 'xhr_streaming']) {
      const id = sid();
      await compare(`${transport} open`, 'POST', url(CLOSE, id, transport), { until: lines(2) });
      await compare(`${transport} again`, 'POST', url(CLOSE, id, transport), { until: lines(1) });
    }
    await compare('eventsource', 'GET', url(CLOSE, sid(), 'eventsource'));
    await compare('jsonp', 'GET', `${url(CLOSE, sid(), 'jsonp')}?c=x`);
  });

  diffTest('a second receiving request gets c[2010,"Another connection still open"]', async () => {
    const id = sid();
    await compare('open', 'POST', url(ECHO, id, 'xhr'));
    const held = [send(reference.url, 'POST', url(ECHO, id, 'xhr')), send(parley.url, 'POST', url(ECHO, id, 'xhr'))];
    await new Promise((r) => setTimeout(r, 200));
    await compare('second', 'POST', url(ECHO, id, 'xhr'));
    await compare('second streaming', 'POST', url(ECHO, id, 'xhr_streaming'), { until: lines(2) });
    await compare('send', 'POST', url(ECHO, id, 'xhr_send'), { body: '["free"]' });
    const [ref, ours] = await Promise.all(held);
    same('the first poll still gets the message', { ref, ours });
  });

  diffTest('heartbeat h after the interval, on polling and streaming', async () => {
    const id = sid();
    await compare('open', 'POST', url(ECHO, id, 'xhr'));
    const [ref, ours] = await Promise.all([reference.url, parley.url]
      .map((base) => send(base, 'POST', url(ECHO, id, 'xhr'), { ms: HEARTBEAT_MS * 3 })));
    same('poll', { ref, ours });
    assert.equal(ours.body, 'h\n');
    const [sref, sours] = await Promise.all([reference.url, parley.url]
      .map((base) => send(base, 'POST', url(ECHO, id, 'xhr_streaming'), { until: lines(2), ms: HEARTBEAT_MS * 3 })));
    same('stream', { ref: sref, ours: sours });
  });

  diffTest('JSESSIONID on cookie_needed_echo: dummy, or the client\'s', async () => {
    for (const cookie of [undefined, 'JSESSIONID=abcdef']) {
      const headers = cookie ? { cookie } : {};
      const id = sid();
      await compare('xhr', 'POST', url(COOKIE, id, 'xhr'), { headers });
      await compare('xhr_send', 'POST', url(COOKIE, id, 'xhr_send'), { headers, body: '["c"]' });
      await compare('preflight', 'OPTIONS', url(COOKIE, id, 'xhr'), { headers });
      await compare('info preflight', 'OPTIONS', `${COOKIE}/info`, { headers });
      await compare('info', 'GET', `${COOKIE}/info`, { headers }, { body: false });
      await compare('eventsource', 'GET', url(COOKIE, id, 'eventsource'), { headers, until: (b) => b.includes('data: ') });
      await compare('jsonp', 'GET', `${url(COOKIE, sid(), 'jsonp')}?c=x`, { headers });
      await compare('iframe', 'GET', `${COOKIE}/iframe.html`, { headers });
      await compare('welcome', 'GET', COOKIE, { headers });
    }
  });

  diffTest('websocket disabled: 404 (cacheable)', async () => {
    const upgrade = { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'x3JJHMbDL1EzLkh9GBhXDw==' };
    await compare('plain', 'GET', `${NO_WS}/websocket`, { headers: upgrade });
    await compare('session', 'GET', url(NO_WS, sid(), 'websocket'), { headers: upgrade });
    // The protocol allows either text for a GET that is no WebSocket handshake.
    const texts = (b) => b.replace('Not a valid websocket request', 'Can "Upgrade" only to "WebSocket".');
    await compare('no upgrade', 'GET', url(ECHO, sid(), 'websocket'), {}, { normalise: texts });
    await compare('wrong method', 'POST', url(ECHO, sid(), 'websocket'), {}, { body: false });
  });

  diffTest('unicode: both servers quote every string the same', async () => {
    const strings = ['\u2028\u2029', '\ufff0\uffff\ufffd', '😀 \u{1F600}', '\u0000\u0001\u001f\u007f\u0080\u009f', '\u200c\u200f\u2060\u206f',
      'tab\tnl\ncr\r "q" \\ / </script>', 'é ü ☃ 中文', '\ufeff\u00ad'];
    const id = await openPolled();
    await compare('send', 'POST', url(ECHO, id, 'xhr_send'), { body: JSON.stringify(strings) });
    const { ours } = await compare('poll', 'POST', url(ECHO, id, 'xhr'));
    assert.deepEqual(JSON.parse(ours.body.slice(1)), strings);
    const ws = await Promise.all([reference.url, parley.url].map(async (base) => {
      const socket = await wsOpen(base, url(ECHO, sid(), 'websocket'));
      // One at a time: sockjs-node sends one frame per message, Parley batches what is waiting.
      for (const [i, string] of strings.entries()) {
        socket.ws.send(JSON.stringify([string]));
        await socket.waitFor(i + 2);
      }
      socket.ws.close();
      return socket.got.slice(1).join('\n');
    }));
    assert.equal(ws[1], ws[0], 'websocket frame');
  });

  diffTest('websocket transport: o, a[…], arrays and single strings, broken framing', async () => {
    const results = await Promise.all([reference.url, parley.url].map(async (base) => {
      const s = await wsOpen(base, url(ECHO, sid(), 'websocket'));
      s.ws.send('["a","b"]');
      await s.waitFor(2);
      s.ws.send('"single"');
      s.ws.send('');
      await s.waitFor(3);
      s.ws.send('["x"');
      const closed = await s.closed;
      return { got: unbatched(s.got), closed };
    }));
    assert.deepEqual(results[1], results[0]);
    const close = await Promise.all([reference.url, parley.url].map(async (base) => {
      const s = await wsOpen(base, url(CLOSE, sid(), 'websocket'));
      return { got: s.got, closed: await s.closed };
    }));
    assert.deepEqual(close[1], close[0]);
  });

  diffTest('raw websocket: one message per WebSocket message; close service closes 3000', async () => {
    const results = await Promise.all([reference.url, parley.url].map(async (base) => {
      const s = await wsOpen(base, `${ECHO}/websocket`, 0);
      s.ws.send('Hello world!\uffff');
      s.ws.send('["not", "parsed"]');
      await s.waitFor(2);
      s.ws.close(1000);
      return { got: s.got, closed: await s.closed };
    }));
    assert.deepEqual(results[1], results[0]);
    const close = await Promise.all([reference.url, parley.url].map(async (base) => {
      const s = await wsOpen(base, `${CLOSE}/websocket`, 0);
      return { got: s.got, closed: await s.closed };
    }));
    assert.deepEqual(close[1], close[0]);
  });
});

/** SockJS frames with each `a[…]` split into one frame per message (see Batching above). */
function unbatched(frames) {
  return frames.flatMap((f) => (f.startsWith('a[') ? JSON.parse(f.slice(1)).map((m) => `a${JSON.stringify([m])}`) : [f]));
}

/** A WebSocket to `path` that collects its messages; resolves once `first` have come. */
async function wsOpen(base, path, first = 1) {
  const ws = new WebSocket(`${base.replace('http', 'ws')}${path}`);
  const got = [];
  const waiters = [];
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('message', (data) => {
    got.push(data.toString());
    for (const w of [...waiters]) if (got.length >= w.n) w.resolve();
  });
  ws.on('error', () => {});
  const waitFor = (n) => (got.length >= n ? Promise.resolve()
    : withTimeout(new Promise((resolve) => waiters.push({ n, resolve })), WAIT, `${n} message(s) on ${path}`));
  await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('unexpected-response', (_, r) => reject(new Error(`${path}: ${r.statusCode}`))); }), WAIT, `${path} to open`);
  if (first) await waitFor(first);
  return { ws, got, get closed() { return withTimeout(closed, WAIT, `${path} to close`); }, waitFor };
}
