// Helpers for the browser end-to-end tests: a real `parley` server per test file, Debian's
// Chromium driven by playwright-core (never a downloaded browser), one browser context per user.
import { after, before } from 'node:test';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '../..');
export const PARLEY_BIN = process.env.PARLEY_BIN || path.join(ROOT, 'target/release/parley');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const SCREENSHOTS = path.join(HERE, 'screenshots');
/** Bounded wait for anything the page should show. */
export const WAIT = 10_000;

/** A free TCP port on 127.0.0.1 (for restarting a server on the same port). */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function tempDir(prefix) {
  return mkdtempSync(path.join(os.tmpdir(), `parley-e2e-${prefix}-`));
}

/**
 * Starts `parley serve` on `port` (0: any) with `dataDir`; resolves once it printed
 * `parley listening on http://127.0.0.1:PORT` (or `https://` with `--tls-cert` in `args`). Strict (accounts only, the server's default)
 * unless `guests` (--allow-guests); `args` are added as they are.
 */
export async function startServer({ port = 0, dataDir = tempDir('data'), guests = false, args: extra = [] } = {}) {
  const args = ['serve', '--http', `127.0.0.1:${port}`, '--stomp-tcp', 'off', '--data', dataDir,
    ...(guests ? ['--allow-guests'] : []), ...extra];
  const proc = spawn(PARLEY_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } });
  let stderr = '';
  proc.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-20_000);
  });
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const url = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`parley did not start within 10 s:\n${out}\n${stderr}`)), 10_000);
    const fail = (err) => {
      clearTimeout(timer);
      proc.kill('SIGKILL');
      reject(err);
    };
    proc.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/parley listening on (https?:\/\/127\.0\.0\.1:\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.once('exit', (code, signal) => fail(new Error(`parley exited (${code ?? signal}) before listening:\n${out}\n${stderr}`)));
    proc.once('error', fail);
  });
  return {
    url,
    port: Number(new URL(url).port),
    dataDir,
    guests,
    proc,
    stderr: () => stderr,
    /** SIGTERM (graceful: WebSockets get a 1001 close) and wait for the exit. */
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

/**
 * A TCP proxy in front of the server, so one user's network can be cut (block: drop every
 * connection and refuse new ones) while the others keep theirs.
 */
export async function startProxy(targetPort) {
  const sockets = new Set();
  let blocked = false;
  const srv = net.createServer((client) => {
    if (blocked) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address();
  return {
    url: `http://127.0.0.1:${port}`,
    block() {
      blocked = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    unblock() {
      blocked = false;
    },
    close() {
      this.block();
      return new Promise((resolve) => srv.close(resolve));
    },
  };
}

/**
 * One server (started with `options`, as `startServer` takes them) and one browser for a test
 * file: started before its tests, closed, stopped and removed after. `started(browser, server)`
 * hands them over (it may also prepare what the tests share).
 */
export function serveFile(options, started) {
  let browser;
  let server;
  before(async () => {
    server = await startServer(options);
    browser = await launchBrowser();
    await started(browser, server);
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    if (server) removeDir(server.dataDir);
  });
}

/** Debian's Chromium, headless; `args` are added to its command line. */
export async function launchBrowser({ args = [] } = {}) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', ...args],
  });
}

// Chromium itself logs refused or offline connections as console errors; they are expected only
// while a test has the server down or the page offline (user.outage = true).
const OUTAGE_NOISE = [
  /^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/stomp' failed/,
  /^Failed to load resource: net::ERR_(CONNECTION_REFUSED|CONNECTION_RESET|EMPTY_RESPONSE)/,
];

/** The password the helpers give `name` (at least 8 characters, as the server wants). */
export const passwordOf = (name) => `pw-${name}-correct-horse`;

/** POST a JSON body to the server from node (no Origin, no cookies): { status, body, headers }. */
export async function postJson(server, path, body, headers = {}) {
  const resp = await fetch(`${server.url}${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body),
  });
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON */
  }
  return { status: resp.status, body: json, headers: resp.headers };
}

/** Registers `name` (password passwordOf(name) unless given) through the API; asserts 201. */
export async function register(server, name, password = passwordOf(name)) {
  const r = await postJson(server, '/api/register', { username: name, password });
  assert.equal(r.status, 201, `register ${name}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
}

/** Logs `name` in through the API (body token, no cookie) and returns the access token. */
export async function apiToken(server, name, password = passwordOf(name)) {
  const r = await postJson(server, '/api/login', { username: name, password });
  assert.equal(r.status, 200, `login ${name}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  assert.equal(typeof r.body.access_token, 'string');
  return r.body.access_token;
}

/**
 * A page in its own browser context (own cookies and localStorage) at `hash`, with console
 * errors collected. Chromium logs every HTTP error answer of a fetch as a console error: the
 * 401 of the silent session resume (POST /api/token/refresh) on a page without a session is
 * expected; tests that provoke others list them in `user.expectHttp` ([{ path, status }]).
 * `init` is a script run in every page of the context before the page's own (spies, stubs);
 * `query` is the page URL's query string (`?transport=xhr-polling`).
 */
export async function openPage(browser, server, name, { hash = '', query = '', via = server.url, viewport = { width: 1280, height: 800 }, init = null, ...ctxOptions } = {}) {
  const context = await browser.newContext({ viewport, ...ctxOptions });
  if (init) await context.addInitScript(init); // runs in the page before its own scripts
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const user = { name, context, page, errors: [], outage: false, via, expectHttp: [{ path: '/api/token/refresh', status: 401 }] };
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    if (user.outage && OUTAGE_NOISE.some((re) => re.test(text))) return;
    const http = /^Failed to load resource: the server responded with a status of (\d+)/.exec(text);
    if (http) {
      const { pathname } = new URL(msg.location().url || 'about:blank', 'http://x');
      if (user.expectHttp.some((e) => e.path === pathname && e.status === Number(http[1]))) return;
    }
    user.errors.push(`console.error: ${text} (${msg.location().url || '?'})`);
  });
  page.on('pageerror', (err) => user.errors.push(`pageerror: ${err.stack || err.message}`));
  await page.goto(`${via}/${query}${hash ? `#${hash}` : ''}`);
  return user;
}

/** Waits for the sign-in screen, with GET /api/info answered (so the guest button is settled). */
export async function waitSignIn(page) {
  await page.locator('#auth-dialog[open][data-ready="true"]').waitFor();
}

/** Fills the sign-in screen and presses "Sign in" (or "Create account" with `create`). */
export async function signIn(page, name, password = passwordOf(name), { create = false } = {}) {
  await waitSignIn(page);
  await page.fill('#auth-username', name);
  await page.fill('#auth-password', password);
  await page.click(create ? '#auth-register' : '#auth-signin');
}

/**
 * Opens the client as a new user at `hash` and waits until the page is online and showing the
 * conversation. How the user gets in:
 *   as: 'create' (default)  "Create account" on the sign-in screen (registers, then signs in)
 *   as: 'account'           registered through the API first, then "Sign in" on the page
 *   as: 'guest'             "Continue as guest" (the server must allow guests) and the name dialog
 */
export async function openUser(browser, server, name, { as = 'create', ...options } = {}) {
  const user = await openPage(browser, server, name, options);
  const { page } = user;
  if (as === 'guest') {
    await waitSignIn(page);
    await page.click('#auth-guest');
    await page.locator('#name-dialog[open]').waitFor();
    await page.fill('#name-input', name);
    await page.click('#name-submit');
  } else {
    if (as === 'account') await register(server, name);
    await signIn(page, name, passwordOf(name), { create: as === 'create' });
  }
  await waitOnline(page);
  await page.locator('#auth-dialog').waitFor({ state: 'hidden' });
  await page.locator('#name-dialog').waitFor({ state: 'hidden' });
  assert.equal(await page.locator('#me-name').textContent(), name);
  // The conversation is open (the room list is fetched and the room joined after CONNECTED).
  const hash = options.hash || '';
  await page.waitForFunction((want) => {
    const title = document.getElementById('conv-title').textContent;
    return want ? title === want : title !== '';
  }, hash ? (hash.startsWith('@') ? hash : `#${hash}`) : '');
  return user;
}

export async function waitOnline(page, timeout = WAIT) {
  await page.locator('#conn[data-state="online"]').waitFor({ timeout });
}

export async function connState(page) {
  return page.locator('#conn').getAttribute('data-state');
}

/** The conversation shown: [{id, from, body, state}] in page order. */
export async function shownMessages(page) {
  return page.$$eval('#message-list > li', (lis) => lis.map((li) => ({
    id: li.dataset.id,
    from: li.dataset.from,
    body: li.querySelector('.body').textContent,
    state: li.dataset.state || '',
  })));
}

/** Waits until the conversation shows a message with `body` (by `from` when given). */
export async function waitForMessage(page, body, { from, timeout = WAIT } = {}) {
  await page.waitForFunction(([body, from]) => [...document.querySelectorAll('#message-list > li')]
    .some((li) => li.querySelector('.body').textContent === body && (!from || li.dataset.from === from)),
  [body, from], { timeout });
}

/** Types `text` into the composer and presses Enter; waits until the server stored it (RECEIPT). */
export async function send(page, text, { confirmed = true } = {}) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
  if (confirmed) {
    await page.waitForFunction((body) => [...document.querySelectorAll('#message-list > li')]
      .some((li) => li.querySelector('.body').textContent === body && li.dataset.state === 'sent'), text);
  }
}

/** Room message ids must be 1..n, consecutive, each once, in order. */
export function assertConsecutive(msgs, n) {
  const ids = msgs.map((m) => Number(m.id));
  assert.deepEqual(ids, Array.from({ length: n }, (_, i) => i + 1), `ids shown: ${ids.join(',')}`);
}

export function assertNoErrors(...users) {
  const errors = users.flatMap((u) => u.errors.map((e) => `${u.name}: ${e}`));
  assert.deepEqual(errors, [], 'console errors / page errors');
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
}

export function removeDir(dir) {
  rmSync(dir, { recursive: true, force: true });
}

/** A short pause, only to show that something does NOT happen. */
export const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
