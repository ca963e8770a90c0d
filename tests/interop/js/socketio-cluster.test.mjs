// Socket.IO behind the shipped balancers (deploy/nginx.conf, then deploy/haproxy.cfg) in front of
// three `parley serve` nodes sharing a Redis of this test's own and a fresh PostgreSQL database:
// the Socket.IO analogue of tests/tests/cluster_sockjs.rs, with the real socket.io-client 4.8.3.
//
//   PARLEY_BIN=target/release/parley node --test --test-concurrency=1 socketio-cluster.test.mjs
//
// Needs redis-server, nginx with its stream module (libnginx-mod-stream: the shipped file has a
// stream{} block), haproxy, and PostgreSQL at PARLEY_TEST_DATABASE (default
// postgres://postgres@127.0.0.1:5432/test, as the Rust cluster suites) with psql — the same as
// tests/run.sh prepares. Missing ones fail the test; nothing is skipped silently.
//
// A Socket.IO (Engine.IO) session lives in the memory of the node that answered its handshake;
// the balancers route its requests by a consistent hash of the sid's part before its `.` (the
// node puts the handshake's `t` there), else of `t`. What is checked, behind each balancer:
//  1. Long-polling clients (every request routed), clients that upgrade to WebSocket and
//     WebSocket-only ones, all in one room, send in rounds: every client gets every message
//     exactly once, in id order, with no `connect_error`, no disconnect, no reconnect; the
//     three nodes each hold sessions (GET /stats on each node, directly), and each node holds
//     exactly the sessions the test attributed to it (nothing re-handshook elsewhere).
//  2. The node holding the most long-polling sessions is SIGKILLed while clients on the other
//     nodes keep sending: its clients reconnect by themselves through the balancer, with
//     `socket.recovered === true`, get exactly the messages sent meanwhile (no gap, no
//     duplicate), then live ones; clients on live nodes never notice. (They reconnect after the
//     balancer has taken the node out: see 3.)
//  3. Raw Engine.IO handshakes whose `t` hashes to a node that has just been killed, made before
//     the balancer takes it out: each either opens a session where its later requests will go
//     (nginx: the next node on the ring, where the key goes once the node is out) or is refused
//     (haproxy: no redispatch, see deploy/haproxy.cfg) and tried again, as a client would; after
//     the node is out, every session opened is reached by its next request.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { connect as netConnect } from 'node:net';
import { request as httpRequest } from 'node:http';
import {
  closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { io } from 'socket.io-client';
import { freePort, withTimeout } from './timeout.mjs';

const IS_RABBIT = (process.env.INTEROP_TARGET ?? 'parley') === 'rabbitmq';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const ADMIN_DB = process.env.PARLEY_TEST_DATABASE ?? 'postgres://postgres@127.0.0.1:5432/test';
const NGINX_STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';
/** Every wait for one thing (a process, an answer, a reconnect, the messages of a round). */
const WAIT = 20_000;
const STARTUP = 10_000;
const RUN = `${process.pid}_${randomBytes(3).toString('hex')}`;

// ---------------------------------------------------------------------------------------------
// Processes, files and the database, all released at the end even on failure
// ---------------------------------------------------------------------------------------------

const spawned = new Set();
const databases = new Set();
const scratch = mkdtempSync(join(tmpdir(), 'parley-sio-cluster-'));

/** Last resort if the hooks never ran (a crash): nothing is left behind. Synchronous, so
 *  processes get their `lastSignal` without waiting (nginx SIGTERM: its master takes its
 *  workers down; SIGKILL would orphan them). */
function releaseEverything() {
  for (const p of spawned) if (alive(p)) p.kill(p.lastSignal ?? 'SIGKILL');
  for (const name of databases) dropDatabase(name);
  rmSync(scratch, { recursive: true, force: true });
}
process.on('exit', releaseEverything);
// Interrupted: at once (the test runner does not wait long for its child).
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => process.exit(130));

const alive = (p) => p.exitCode === null && p.signalCode === null;

function tail(path, n = 40) {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

/** `command args`, its stdout (unless `pipeStdout`) and stderr to `log`. */
function start(command, args, log, { pipeStdout = false, env, lastSignal } = {}) {
  const fd = openSync(log, 'a');
  const proc = spawn(command, args, { stdio: ['ignore', pipeStdout ? 'pipe' : fd, fd], env: env ?? process.env });
  closeSync(fd);
  proc.lastSignal = lastSignal;
  spawned.add(proc);
  proc.once('exit', () => spawned.delete(proc));
  proc.once('error', () => {}); // reported by waitListening (it exits)
  return proc;
}

/** Ends `proc`: `signal`, then SIGKILL if it has not exited within 5 s. */
async function stop(proc, signal = 'SIGTERM') {
  if (!proc || !alive(proc)) return;
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  proc.kill(signal);
  await withTimeout(exited, 5_000, `${proc.spawnfile} to exit`).catch(async () => {
    proc.kill('SIGKILL');
    await exited;
  });
}


const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Until something accepts on 127.0.0.1:`port`; fails if `proc` exits first or after STARTUP. */
async function waitListening(proc, port, what, log) {
  const deadline = Date.now() + STARTUP;
  for (;;) {
    if (!alive(proc)) throw new Error(`${what} exited (${proc.exitCode ?? proc.signalCode}); log:\n${tail(log)}`);
    const ok = await new Promise((resolve) => {
      const s = netConnect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${port}; log:\n${tail(log)}`);
    await sleep(50);
  }
}

function psql(sql) {
  return spawnSync('psql', [ADMIN_DB, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { encoding: 'utf8', timeout: 30_000 });
}

function createDatabase(name) {
  for (const sql of [`DROP DATABASE IF EXISTS ${name}`, `CREATE DATABASE ${name}`]) {
    const r = psql(sql);
    assert.equal(r.status, 0, `psql ${ADMIN_DB} -c '${sql}' (PostgreSQL for the cluster, PARLEY_TEST_DATABASE): ` +
      `${r.error?.message ?? ''}${r.stderr}`);
  }
  databases.add(name);
  const base = ADMIN_DB.slice(0, ADMIN_DB.lastIndexOf('/'));
  return `${base}/${name}`;
}

function dropDatabase(name) {
  psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  databases.delete(name);
}

/** One HTTP request; resolves with status and body. */
function http(port, path, { method = 'GET', body, ms = 5_000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method, agent: false, timeout: ms }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} :${port}${path}: no answer in ${ms} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

// ---------------------------------------------------------------------------------------------
// The cluster: Redis, a database, a JWT secret, three nodes, and one balancer
// ---------------------------------------------------------------------------------------------

class Cluster {
  constructor(tag) {
    this.tag = tag;
    this.dir = join(scratch, tag);
    mkdirSync(this.dir);
    this.nodes = [];
    this.redis = null;
    this.balancer = null;
    this.db = null;
  }

  /** `ping`: --socketio-ping-interval and --socketio-ping-timeout. */
  async start(balancer, { ping = '1s' } = {}) {
    // Redis of our own, without persistence.
    const redisPort = await freePort();
    const redisLog = join(this.dir, 'redis.log');
    this.redis = start('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1',
      '--save', '', '--appendonly', 'no', '--dir', this.dir], redisLog);
    await waitListening(this.redis, redisPort, 'redis-server', redisLog);

    this.db = `parley_js_sio_${this.tag}_${RUN}`;
    const dbUrl = createDatabase(this.db);
    // One JWT secret for all: a token from one node is good on every node.
    const secret = join(this.dir, 'jwt-secret');
    writeFileSync(secret, `sio-cluster-secret-${this.tag}-${RUN}-0123456789abcdef0123456789`);
    this.args = ['--allow-guests', '--guests-create-rooms', '--rate-limit', '0',
      '--cluster', `redis://127.0.0.1:${redisPort}`, '--database', dbUrl, '--jwt-secret-file', secret,
      // The balancers name clients with X-Forwarded-For, believed from their address only.
      '--trusted-proxy', '127.0.0.1',
      // GET /stats on each node directly tells where the sessions are.
      '--public-stats',
      // A long poll ends within a second; a dead peer is noticed within two.
      '--socketio-ping-interval', ping, '--socketio-ping-timeout', ping];
    // One after the other: the first node creates the schema.
    for (let i = 0; i < 3; i++) this.nodes.push(await this.startNode(i));

    if (balancer === 'nginx') await this.startNginx();
    else await this.startHaproxy();
    return this;
  }

  async startNode(i) {
    const bin = process.env.PARLEY_BIN;
    assert.ok(bin, 'PARLEY_BIN is not set');
    const data = join(this.dir, `node${i}`);
    mkdirSync(data);
    const log = join(this.dir, `node${i}.log`);
    const proc = start(bin, ['serve', '--http', '127.0.0.1:0', '--stomp-tcp', '127.0.0.1:0', '--data', data,
      ...this.args], log, { pipeStdout: true, env: { RUST_LOG: 'info', ...process.env } });
    const lines = createInterface({ input: proc.stdout });
    const found = {};
    const listening = new Promise((resolve, reject) => {
      lines.on('line', (line) => {
        let m = /^parley listening on http:\/\/(127\.0\.0\.1:(\d+))$/.exec(line);
        if (m) found.http = { addr: m[1], port: Number(m[2]) };
        m = /^parley stomp listening on tcp:\/\/(127\.0\.0\.1:\d+)$/.exec(line);
        if (m) found.stomp = m[1];
        if (found.http && found.stomp) resolve();
      });
      proc.once('exit', (code, signal) => reject(new Error(`node ${i} exited during startup: ${code ?? signal}`)));
    });
    await withTimeout(listening, STARTUP, `node ${i}'s listening lines`)
      .catch((e) => { proc.kill('SIGKILL'); throw new Error(`${e.message}; log:\n${tail(log)}`); });
    proc.stdout.resume();
    return { i, proc, log, http: found.http.addr, port: found.http.port, stomp: found.stomp };
  }

  /** The shipped balancer file with this cluster's node addresses for the example ones. */
  shipped(path) {
    let conf = readFileSync(join(ROOT, path), 'utf8');
    for (const [i, node] of this.nodes.entries()) {
      conf = conf.replaceAll(`127.0.0.1:808${i + 1}`, node.http)
        .replaceAll(`check port 808${i + 1}`, `check port ${node.port}`)
        .replaceAll(`127.0.0.1:6161${i + 1}`, node.stomp);
    }
    return conf;
  }

  async startNginx() {
    assert.ok(existsSync(NGINX_STREAM_MODULE),
      `${NGINX_STREAM_MODULE} is missing (apt-get install libnginx-mod-stream): deploy/nginx.conf has a stream block`);
    const [httpPort, stompPort] = [await freePort(), await freePort()];
    const prefix = join(this.dir, 'nginx');
    mkdirSync(prefix);
    const conf = this.shipped('deploy/nginx.conf');
    const ours = conf.replace('listen 8080;', `listen 127.0.0.1:${httpPort};`)
      .replace('listen 61610;', `listen 127.0.0.1:${stompPort};`)
      .replace('pid /tmp/parley-nginx.pid;', 'pid nginx.pid;');
    assert.notEqual(ours, conf);
    writeFileSync(join(prefix, 'nginx.conf'), `load_module ${NGINX_STREAM_MODULE};\n${ours}`);
    const log = join(this.dir, 'nginx.log');
    const bin = existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx';
    this.balancer = { name: 'nginx', log, port: httpPort,
      proc: start(bin, ['-p', prefix, '-c', join(prefix, 'nginx.conf'), '-g', 'daemon off;'], log, { lastSignal: 'SIGTERM' }) };
    await waitListening(this.balancer.proc, httpPort, 'nginx', log);
  }

  async startHaproxy() {
    const [httpPort, stompPort] = [await freePort(), await freePort()];
    const conf = this.shipped('deploy/haproxy.cfg')
      .replace('bind :8080', `bind 127.0.0.1:${httpPort}`)
      .replace('bind :61610', `bind 127.0.0.1:${stompPort}`)
      // The test process's file limit is lower than a production haproxy's.
      .replace('maxconn 100000', 'maxconn 2000');
    const path = join(this.dir, 'haproxy.cfg');
    writeFileSync(path, conf);
    const log = join(this.dir, 'haproxy.log');
    this.balancer = { name: 'haproxy', log, port: httpPort, proc: start('haproxy', ['-db', '-f', path], log) };
    await waitListening(this.balancer.proc, httpPort, 'haproxy', log);
    // Until its health checks have every node in (checked every second, in after two
    // successes): a node not yet in takes no requests, which would move sessions mid-test.
    await sleep(2_500);
    const ready = await http(httpPort, '/readyz');
    assert.equal(ready.status, 200, `GET /readyz through haproxy: ${ready.status} ${ready.body}`);
  }

  /** Until the balancer has taken node `i` out: haproxy says so when its checks fail (two, a
   *  second apart); nginx takes a node out at its first failed request and says nothing. */
  async nodeOut(i) {
    if (this.balancer.name !== 'haproxy') return;
    const line = `Server parley_socketio/n${i + 1} is DOWN`;
    await until(() => tail(this.balancer.log, 200).includes(line), `haproxy: "${line}"`, 10_000);
  }

  get url() {
    return `http://127.0.0.1:${this.balancer.port}`;
  }

  /** `socketio_sessions` of each node, asked directly (null for a dead node). */
  async sessions() {
    return Promise.all(this.nodes.map(async (node) => {
      if (!alive(node.proc)) return null;
      const res = await http(node.port, '/stats');
      assert.equal(res.status, 200, `GET /stats on node ${node.i}: ${res.body}`);
      const n = JSON.parse(res.body).socketio_sessions;
      assert.equal(typeof n, 'number', `node ${node.i}'s /stats has no socketio_sessions: ${res.body}`);
      return n;
    }));
  }

  logs() {
    const parts = this.nodes.map((n) => `--- node ${n.i} (${n.http}) ---\n${tail(n.log, 30)}`);
    if (this.balancer) parts.push(`--- ${this.balancer.name} ---\n${tail(this.balancer.log, 30)}`);
    return parts.join('\n');
  }

  async stop() {
    const errors = [];
    const attempt = async (f) => { try { await f(); } catch (e) { errors.push(e); } };
    if (this.balancer) await attempt(() => stop(this.balancer.proc));
    await Promise.all(this.nodes.map((n) => attempt(() => stop(n.proc))));
    await attempt(() => stop(this.redis, 'SIGKILL'));
    if (this.db) await attempt(() => dropDatabase(this.db));
    await attempt(() => rmSync(this.dir, { recursive: true, force: true }));
    if (errors.length) throw errors[0];
  }
}

// ---------------------------------------------------------------------------------------------
// Socket.IO clients
// ---------------------------------------------------------------------------------------------

/** Until `predicate()` holds (checked every 20 ms); fails naming `what` after `ms`. */
async function until(predicate, what, ms = WAIT) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** What an Engine.IO error or close reason says: message, cause, and the HTTP answer if any. */
function errText(e) {
  if (e === undefined || e === null) return '';
  const parts = [e.message ?? (typeof e === 'string' ? e : '')];
  const d = e.description;
  if (d !== undefined) parts.push(`(${typeof d === 'object' ? d.message ?? JSON.stringify(d) : d})`);
  if (e.context?.responseText) parts.push(`HTTP ${e.context.status ?? '?'} ${e.context.responseText}`);
  return parts.filter(Boolean).join(' ');
}

/** Every socket made, closed at the end whatever happened (a failing one keeps reconnecting). */
const sockets = new Set();

/**
 * A socket.io-client socket through the balancer, in `room`, with everything it lived through
 * recorded. `kind`: 'polling' (long-polling only), 'upgrade' (the default: polling, then
 * WebSocket), 'websocket' (WebSocket only).
 */
async function member(cluster, room, name, kind) {
  const options = {
    forceNew: true,
    // Reconnect quickly (the default waits up to 5 s).
    reconnectionDelay: 100,
    reconnectionDelayMax: 1_000,
    timeout: 5_000,
  };
  if (kind === 'polling') options.transports = ['polling'];
  if (kind === 'websocket') options.transports = ['websocket'];
  const socket = io(cluster.url, options);
  sockets.add(socket);
  const c = {
    name, kind, socket, node: null,
    connects: 0, connectErrors: [], disconnects: [], reconnectAttempts: 0, errors: [], got: [],
  };
  socket.on('connect', () => { c.connects++; });
  socket.on('connect_error', (e) => c.connectErrors.push(errText(e)));
  socket.on('disconnect', (reason, details) => c.disconnects.push(`${reason}${details ? ` ${errText(details)}` : ''}`));
  socket.io.on('reconnect_attempt', () => { c.reconnectAttempts++; });
  // A refused command without an acknowledgement.
  socket.on('error', (e) => c.errors.push(e));
  socket.on('message', (m, offset) => {
    if (m?.room === room) c.got.push({ id: Number(m.id), body: m.body, from: m.from, offset });
  });
  await until(() => c.connects > 0 || c.connectErrors.length > 0, `${name} to connect`, WAIT);
  assert.deepEqual(c.connectErrors, [], `${name}: connect_error`);
  if (kind === 'upgrade') {
    // The upgrade's WebSocket carries the sid: it must reach the node holding the session,
    // or the upgrade fails and the client silently stays on polling.
    await until(() => socket.io.engine?.transport?.name === 'websocket', `${name} to upgrade to WebSocket`, WAIT);
  }
  const joined = await socket.timeout(WAIT).emitWithAck('join', { room });
  assert.equal(joined?.type, 'joined', `${name}: join answered ${JSON.stringify(joined)}`);
  return c;
}

/** `c` sends `body` to `room`; resolves with the id of the acknowledged (durable) message. */
async function say(c, room, body) {
  const ack = await c.socket.timeout(WAIT).emitWithAck('send', { room, body });
  assert.equal(ack?.type, 'ack', `${c.name}: send answered ${JSON.stringify(ack)}`);
  const id = Number(ack.id);
  assert.ok(Number.isSafeInteger(id) && id > 0, `${c.name}: ack id ${JSON.stringify(ack.id)}`);
  return id;
}

/**
 * Clients through the balancer until the three nodes each hold sessions and at least one node
 * holds long-polling sessions of two clients: at least `min`, kinds by turns. Each client's node
 * is found by which node's `socketio_sessions` went up by one as it connected (clients connect
 * one at a time and nothing else opens sessions).
 */
async function spread(cluster, room, min = 10, max = 30) {
  const kinds = ['polling', 'upgrade', 'polling', 'websocket', 'polling', 'upgrade'];
  const clients = [];
  let before = await cluster.sessions();
  assert.deepEqual(before, [0, 0, 0], 'sessions before the first client');
  for (let n = 0; n < max; n++) {
    const perNode = [0, 1, 2].map((i) => clients.filter((c) => c.node === i));
    const pollingMost = Math.max(...perNode.map((cs) => cs.filter((c) => c.kind === 'polling').length));
    if (n >= min && perNode.every((cs) => cs.length > 0) && pollingMost >= 2) break;
    const kind = kinds[n % kinds.length];
    const c = await member(cluster, room, `${kind}${n}`, kind);
    const now = await cluster.sessions();
    const grew = now.map((v, i) => v - before[i]);
    const node = grew.indexOf(1);
    assert.ok(node >= 0 && grew.filter((d) => d !== 0).length === 1,
      `${c.name}: socketio_sessions went ${JSON.stringify(before)} -> ${JSON.stringify(now)}, not up by one on one node`);
    c.node = node;
    clients.push(c);
    before = now;
  }
  const counts = [0, 1, 2].map((i) => clients.filter((c) => c.node === i).length);
  assert.ok(counts.every((n) => n > 0), `${clients.length} sessions never reached every node: ${JSON.stringify(counts)}`);
  return clients;
}

/** Every client has every message in `sent` (id -> body), once, in id order, and nothing else. */
async function allReceived(clients, sent, what) {
  const ids = [...sent.keys()].sort((a, b) => a - b);
  await until(() => clients.every((c) => c.got.length >= ids.length),
    `${what}: ${ids.length} messages at every client (have ${clients.map((c) => `${c.name}:${c.got.length}`).join(' ')})`);
  await sleep(300); // a duplicate would come now
  for (const c of clients) {
    assert.deepEqual(c.got.map((m) => m.id), ids, `${what}: ${c.name} (${c.kind}, node ${c.node}): ids`);
    assert.deepEqual(c.got.map((m) => m.body), ids.map((id) => sent.get(id)), `${what}: ${c.name}: bodies`);
    for (const m of c.got) assert.equal(typeof m.offset, 'string', `${c.name}: message ${m.id} without a recovery offset`);
  }
}

/** Ids are consecutive: the room's sequence has no hole. */
function assertConsecutive(sent) {
  const ids = [...sent.keys()].sort((a, b) => a - b);
  assert.deepEqual(ids, ids.map((_, k) => ids[0] + k), `acknowledged ids ${ids}`);
}

function closeAll() {
  for (const socket of sockets) socket.disconnect();
  sockets.clear();
}

function report(clients) {
  return clients.map((c) => `${c.name} node ${c.node} ${c.kind} connects=${c.connects} ` +
    `connect_errors=${JSON.stringify(c.connectErrors)} disconnects=${JSON.stringify(c.disconnects)} ` +
    `got=${c.got.length} errors=${JSON.stringify(c.errors)}`).join('\n');
}

// ---------------------------------------------------------------------------------------------
// The tests, once per balancer
// ---------------------------------------------------------------------------------------------

for (const balancer of ['nginx', 'haproxy']) {
  describe(`Socket.IO behind ${balancer} (deploy/${balancer === 'nginx' ? 'nginx.conf' : 'haproxy.cfg'}), three nodes`,
    { skip: IS_RABBIT && 'Parley only', timeout: 80_000 }, () => {
      const room = `sio-${balancer}-${RUN.replace(/_/g, '-')}`;
      let cluster;
      let clients = [];
      const sent = new Map(); // id -> body, every message of the room
      let failed = false;

      before(async () => {
        cluster = new Cluster(balancer);
        await cluster.start(balancer);
      });

      after(async () => {
        closeAll();
        if (failed && cluster) console.error(`${report(clients)}\n${cluster.logs()}`);
        await cluster?.stop();
      });

      /** A test whose failure prints the clients' story and the processes' logs. */
      const step = (name, f) => test(name, async (t) => {
        try {
          await f(t);
        } catch (e) {
          failed = true;
          throw e;
        }
      });

      step('sessions spread over the nodes and stay home: every client gets every message once, in order', async (t) => {
        clients = await spread(cluster, room);
        t.diagnostic(`sessions per node: ${JSON.stringify(await cluster.sessions())}; clients: ` +
          clients.map((c) => `${c.name}@${c.node}`).join(' '));
        const rounds = 3;
        for (let round = 0; round < rounds; round++) {
          // All at once: POSTs of packets cross the long polls of every session.
          const acks = await Promise.all(clients.map(async (c) => {
            const body = `${c.name}:${round}`;
            return [await say(c, room, body), body];
          }));
          for (const [id, body] of acks) sent.set(id, body);
        }
        assertConsecutive(sent);
        await allReceived(clients, sent, 'all nodes up');
        for (const c of clients) {
          assert.deepEqual(c.connectErrors, [], `${c.name}: connect_error while every node is up`);
          assert.deepEqual(c.disconnects, [], `${c.name}: disconnected while every node is up`);
          assert.equal(c.connects, 1, `${c.name}: connected again`);
          assert.equal(c.reconnectAttempts, 0, `${c.name}: reconnect attempts`);
          assert.deepEqual(c.errors, [], `${c.name}: error events`);
          assert.equal(c.socket.io.engine.transport.name, c.kind === 'polling' ? 'polling' : 'websocket',
            `${c.name}: transport`);
        }
        // Each node still holds exactly the sessions that opened there: no request went to
        // another node and made it open one afresh.
        const expected = [0, 1, 2].map((i) => clients.filter((c) => c.node === i).length);
        assert.deepEqual(await cluster.sessions(), expected, 'socketio_sessions per node');
      });

      step('a killed node\'s clients recover through the balancer on live nodes: no gap, no duplicate', async (t) => {
        assert.ok(clients.length > 0, 'the first test made no clients');
        const polling = [0, 1, 2].map((i) => clients.filter((c) => c.node === i && c.kind === 'polling').length);
        const dead = polling.indexOf(Math.max(...polling));
        const victims = clients.filter((c) => c.node === dead);
        const survivors = clients.filter((c) => c.node !== dead);
        assert.ok(victims.some((c) => c.kind === 'polling'), `no long-polling session on node ${dead}`);
        assert.ok(survivors.length > 0, 'no client on a live node');
        const seenBefore = new Map(victims.map((c) => [c, c.got.length]));
        // The victims wait 3.5 s before reconnecting, so what follows is surely sent while they
        // are away and comes to them by recovery, not live; and haproxy's checks have taken the
        // node out before they reconnect (see the tests at the end for what happens otherwise).
        for (const c of victims) c.socket.io.reconnectionDelay(3_500).reconnectionDelayMax(3_500).randomizationFactor(0);

        cluster.nodes[dead].proc.kill('SIGKILL');
        // Sent meanwhile, by clients on live nodes, one after the other.
        for (let k = 0; k < 6; k++) {
          const c = survivors[k % survivors.length];
          const body = `${c.name}:meanwhile${k}`;
          sent.set(await say(c, room, body), body);
        }
        await cluster.nodeOut(dead);
        for (const c of victims) {
          assert.equal(c.connects, 1, `${c.name} reconnected before the messages meanwhile were sent and node ${dead} was out`);
        }
        await until(() => victims.every((c) => c.connects >= 2 && c.socket.connected),
          `the killed node's clients to reconnect:\n${report(victims)}`);
        for (const c of victims) {
          assert.equal(c.connects, 2, `${c.name}: connects`);
          assert.ok(c.disconnects.length >= 1, `${c.name}: no disconnect seen`);
          assert.equal(c.socket.recovered, true, `${c.name}: socket.recovered after reconnecting (disconnect: ${c.disconnects})`);
        }
        t.diagnostic(`killed node ${dead}; its clients:`);
        for (const line of report(victims).split('\n')) t.diagnostic(line);
        // Then live messages, from everyone, the recovered clients too.
        const acks = await Promise.all(clients.map(async (c) => {
          const body = `${c.name}:after`;
          return [await say(c, room, body), body];
        }));
        for (const [id, body] of acks) sent.set(id, body);
        assertConsecutive(sent);
        // Everything, once, in id order: the victims' replay of what they missed comes between
        // what they had and the live ones.
        await allReceived(clients, sent, 'after the kill');
        for (const c of victims) {
          const since = c.got.slice(seenBefore.get(c)).length;
          assert.equal(since, sent.size - seenBefore.get(c), `${c.name}: messages after the kill`);
          assert.ok(since >= 6 + clients.length, `${c.name}: ${since} messages after the kill`);
        }
        for (const c of survivors) {
          assert.deepEqual(c.disconnects, [], `${c.name} (on live node ${c.node}): disconnected by another node's death`);
          assert.equal(c.connects, 1, `${c.name}: connects`);
        }
        // The recovered sessions now live on the other nodes; the dead one is gone.
        const now = await cluster.sessions();
        t.diagnostic(`sessions per node after the kill: ${JSON.stringify(now)}`);
        assert.equal(now[dead], null);
        assert.equal(now.reduce((a, b) => a + (b ?? 0), 0), clients.length, `socketio_sessions on live nodes ${JSON.stringify(now)}`);
      });
    });
}

// ---------------------------------------------------------------------------------------------
// The window between a node's death and the balancer taking it out, request by request
// ---------------------------------------------------------------------------------------------

for (const balancer of ['nginx', 'haproxy']) {
  describe(`Socket.IO behind ${balancer}: sessions opened just after a node died`,
    { skip: IS_RABBIT && 'Parley only', timeout: 60_000 }, () => {
      let cluster;
      let failed = false;

      before(async () => {
        cluster = new Cluster(`${balancer}_window`);
        // Raw sessions with nobody polling: pings far apart, so they live through the test.
        await cluster.start(balancer, { ping: '25s' });
      });

      after(async () => {
        if (failed && cluster) console.error(cluster.logs());
        await cluster?.stop();
      });

      test('a session opened while the dead node is still in the ring is reached after it is taken out',
        async (t) => {
          try {
            await window(cluster, t);
          } catch (e) {
            failed = true;
            throw e;
          }
        });
    });
}

/** Engine.IO requests by hand through the balancer: handshakes with chosen `t` values. */
async function window(cluster, t) {
  const port = cluster.balancer.port;
  const path = (q) => `/socket.io/?EIO=4&transport=polling&${q}`;
  const handshake = async (key) => {
    const res = await http(port, path(`t=${key}`));
    assert.equal(res.status, 200, `handshake t=${key}: ${res.status} ${res.body}`);
    const m = /^0(\{.*\})$/.exec(res.body);
    assert.ok(m, `handshake t=${key}: ${res.body}`);
    const { sid } = JSON.parse(m[1]);
    assert.ok(sid.startsWith(`${key}.`), `sid ${sid} does not begin with t=${key}`);
    return sid;
  };
  const post = (p, sid, body) => http(p, path(`sid=${encodeURIComponent(sid)}`), { method: 'POST', body });

  // Keys the balancer sends to node 0: a close packet sent to node 0 directly is taken only by
  // the node holding the session (the others answer 400); sessions elsewhere are closed
  // through the balancer.
  const keys = [];
  for (let n = 0; keys.length < 24 && n < 400; n++) {
    const key = randomBytes(6).toString('base64url');
    const sid = await handshake(key);
    const direct = await post(cluster.nodes[0].port, sid, '1');
    if (direct.status === 200) {
      keys.push(key);
    } else {
      const res = await post(port, sid, '1');
      assert.equal(res.status, 200, `closing ${sid} through ${cluster.balancer.name}: ${res.status} ${res.body}`);
    }
  }
  assert.equal(keys.length, 24, 'keys hashing to node 0');

  cluster.nodes[0].proc.kill('SIGKILL');
  // At once, before haproxy's checks (two failures a second apart) take it out. A handshake
  // either opens a session (nginx: on the next node of the ring) or is refused (haproxy); a
  // refused one is tried again once the node is out, as socket.io-client would.
  const early = await Promise.all(keys.map(async (key) => [key, await http(port, path(`t=${key}`))]));
  await cluster.nodeOut(0);
  await sleep(500);
  const sids = [];
  let refused = 0;
  for (const [key, res] of early) {
    const m = res.status === 200 && /^0(\{.*\})$/.exec(res.body);
    if (m) {
      sids.push(JSON.parse(m[1]).sid);
    } else {
      refused += 1;
      sids.push(await handshake(key));
    }
  }
  t.diagnostic(`${refused} of ${keys.length} handshakes refused while node 0 was dead but not yet out`);
  // Every session's next request (a Socket.IO CONNECT), through the balancer.
  const answers = await Promise.all(sids.map(async (sid) => [sid, await post(port, sid, '40')]));
  const lost = answers.filter(([, res]) => res.status !== 200 || res.body !== 'ok');
  t.diagnostic(`${lost.length} of ${sids.length} sessions opened after node 0 died were not found by their next request`);
  for (const [sid, res] of lost.slice(0, 3)) t.diagnostic(`POST sid=${sid} "40": ${res.status} ${res.body}`);
  assert.equal(lost.length, 0, `${lost.length} of ${sids.length} sessions lost`);
}
