// socket.io-client 4.8 against Parley's Socket.IO endpoint (`/socket.io/`, namespace `/` = the
// chat), beside raw JSON WebSocket (`/ws`, ws 8) and STOMP (@stomp/stompjs 7 over `/stomp`)
// clients in the same rooms. The contract is docs/socketio.md; the events map one to one onto
// docs/protocol.md.
//
//   PARLEY_BIN=target/release/parley node --test --test-concurrency=1 socketio-chat.test.mjs
//
// Parley runs as `serve --allow-guests` on a free port with a scratch `--data` directory (and a
// registration limit high enough for the accounts made here); users are accounts registered and
// logged in over REST (docs/auth.md), except where a guest is the point.
//
// Checklist:
// - on the wire: CONNECT answered `40{"sid","pid"}`, acks `43<id>[…]`, `message` events with the
//   offset string as their last argument;
// - each transport alone (`['polling']`, `['websocket']`) and the default upgrade (the engine's
//   transport becomes `websocket`): join answered via ack with {type:'joined', room, members,
//   last_id}; send's ack {type:'ack', id} with the durable id; the own `message` event with that
//   id and an offset string as the last argument; the positional forms `(room)`, `(room, body)`;
// - the same message reaches a raw /ws client and a STOMP subscriber with the same id (STOMP
//   `message-id`), sender (`from` / `sender`) and time (`ts` / `timestamp`), and raw and STOMP
//   sends arrive as Socket.IO `message` events the same way; `last_id` of a later join;
// - the other commands: answers as events named by their type when no ack is asked (`joined`,
//   `ack`), `ping`, `auth` (`authed`), `edit`/`reaction`/`delete` events with their offset,
//   `history` showing the edit and the reaction, direct messages both ways with `/ws`;
// - who you are: `auth.token`, `auth.access_token`, `Authorization: Bearer` on the opening
//   request, `?access_token=`; no credentials: a guest (`guest: true`); a bad or forged token:
//   `connect_error` with `err.data.code === 'unauthorized'` (and not a transport error);
// - `presence` (join, leave) and `typing` events, `leave`/`typing` acks {type:'ok'};
// - Origin: another site's is 403 `{"code":4,"message":"Forbidden"}` (polling) and refused
//   (WebSocket, 403); the server's own is welcome;
// - errors: an invalid room name ({type:'error', code:'invalid_room'} as the ack, and as an
//   `error` event without one), `not_joined`, a binary attachment in `send` (`invalid_field`),
//   the `/custom` namespace (`connect_error` "Invalid namespace");
// - connection-state recovery (the client's own, socket.io-client ≥ 4.6): after
//   `socket.io.engine.close()` (polling, websocket, upgraded), and after the server is SIGKILLed
//   and started again on the same port and data directory — others send meanwhile, the client
//   reconnects by itself with `socket.recovered === true`, and receives exactly the missed
//   messages (by id: no gap, no duplicate), then live ones; a private room the user was removed
//   from while away is refused with an `error` event (`forbidden`, with `room`) and the others
//   are recovered. Reconnection delays are fixed (3 s / 1 s, no randomisation) so
//   the others' sends land before the client comes back; the test checks that they did.
//
// Every wait is bounded (WAIT); to show nothing more arrives, a test waits QUIET ms.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import { io } from 'socket.io-client';
import { Client } from '@stomp/stompjs';
import { withTimeout } from './timeout.mjs';
import { WAIT, deferred, freePort, newDataDir, rawSocket, sleep, startParley, tail } from './socketio-helpers.mjs';

const IS_RABBIT = (process.env.INTEROP_TARGET ?? 'parley') === 'rabbitmq';
const QUIET = 300;
const RUN = randomBytes(3).toString('hex');
let counter = 0;
const uniq = (p) => `${p}-${RUN}-${counter++}`;

let parley;
let port;
let dataDir;
const PARLEY_ARGS = ['--allow-guests', '--registrations-per-ip', '1000'];
const start = () => startParley({ httpPort: port, dataDir, args: PARLEY_ARGS });

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/** What an emitter delivered, with waits for an item that matches. */
class Inbox {
  items = [];
  #waiters = [];
  push(item) {
    this.items.push(item);
    for (const w of [...this.#waiters]) {
      if (w.pred(item)) { this.#waiters.splice(this.#waiters.indexOf(w), 1); w.resolve(item); }
    }
  }
  /** The first item so far or to come that matches. */
  waitFor(pred, what, ms = WAIT) {
    const found = this.items.find(pred);
    if (found !== undefined) return Promise.resolve(found);
    const d = deferred();
    const w = { pred, resolve: d.resolve };
    this.#waiters.push(w);
    return withTimeout(d.promise, ms, what)
      .catch((e) => { throw new Error(`${e.message}; got ${JSON.stringify(this.items).slice(-1500)}`); })
      .finally(() => { const i = this.#waiters.indexOf(w); if (i >= 0) this.#waiters.splice(i, 1); });
  }
}

async function postJson(path, body) {
  const res = await fetch(`${parley.url}${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** A REST call with an access token; { status, body }. */
async function api(method, path, token, body) {
  const res = await fetch(`${parley.url}${path}`, {
    method, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(WAIT),
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
  });
  const text = await res.text();
  return { status: res.status, body: text };
}

/** A new account (POST /api/register) and an access token for it (POST /api/login). */
async function account(prefix = 'sio') {
  const user = uniq(prefix).slice(0, 32);
  const password = `pw-${user}-correct-horse`;
  const reg = await postJson('/api/register', { username: user, password });
  assert.equal(reg.status, 201, `register ${user}: ${JSON.stringify(reg)}`);
  const login = await postJson('/api/login', { username: user, password });
  assert.equal(login.status, 200, `login ${user}: ${JSON.stringify(login)}`);
  return { user, token: login.body.access_token };
}

const cleanups = [];
async function cleanup() {
  for (const fn of cleanups.splice(0).reverse()) {
    try { await fn(); } catch { /* best effort */ }
  }
}

/** A socket.io-client socket (not yet awaited); every event it gets is in `inbox` as
 *  {event, args}. No reconnection unless asked. */
function sioSocket({ token, nsp = '/', ...options } = {}) {
  const socket = io(`${parley.url}${nsp === '/' ? '' : nsp}`, {
    forceNew: true, reconnection: false, timeout: WAIT,
    ...(token ? { auth: { token } } : {}),
    ...options,
  });
  const inbox = new Inbox();
  socket.onAny((event, ...args) => inbox.push({ event, args }));
  cleanups.push(() => socket.disconnect());
  return { socket, inbox };
}

/** Resolves on `connect`, rejects with the `connect_error`. */
function connected(socket, what = 'connect') {
  const d = deferred();
  const onConnect = () => { socket.off('connect_error', onError); d.resolve(); };
  const onError = (err) => { socket.off('connect', onConnect); d.reject(err); };
  socket.once('connect', onConnect);
  socket.once('connect_error', onError);
  return withTimeout(d.promise, WAIT, what);
}

/** A connected socket.io client. */
async function sio(options) {
  const client = sioSocket(options);
  await connected(client.socket);
  return client;
}

/** The `message` events of `room` in an inbox: [{message, offset}]. */
const roomMessages = (inbox, room) => inbox.items
  .filter((e) => e.event === 'message' && e.args[0]?.room === room)
  .map((e) => ({ message: e.args[0], offset: e.args.at(-1) }));

const waitMessage = (inbox, pred, what) => inbox.waitFor((e) => e.event === 'message' && pred(e.args[0]), what)
  .then((e) => e.args[0]);

/** A raw /ws client with an access token; `inbox` holds the parsed JSON it receives. */
async function raw(token) {
  const ws = new WebSocket(`${parley.url.replace(/^http/, 'ws')}/ws?access_token=${encodeURIComponent(token)}`);
  const inbox = new Inbox();
  ws.on('message', (data) => inbox.push(JSON.parse(data.toString())));
  ws.on('error', () => {});
  await withTimeout(new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('unexpected-response', (_, res) => reject(new Error(`/ws: HTTP ${res.statusCode}`)));
    ws.once('close', () => reject(new Error('/ws closed')));
  }), WAIT, '/ws to open');
  cleanups.push(() => ws.terminate());
  const send = (obj) => ws.send(JSON.stringify(obj));
  return {
    ws, inbox, send,
    async join(room) {
      send({ type: 'join', room });
      return inbox.waitFor((m) => m.type === 'joined' && m.room === room, `raw joined ${room}`);
    },
    async say(room, body) {
      const ref = `r${counter++}`;
      send({ type: 'send', room, body, ref });
      return inbox.waitFor((m) => m.type === 'ack' && m.ref === ref, `raw ack of ${body}`);
    },
  };
}

/** A STOMP client (access token as passcode) subscribed to /topic/<room>, the SUBSCRIBE's
 *  receipt awaited; `inbox` holds its MESSAGE frames. */
async function stomp(token, room) {
  const inbox = new Inbox();
  const ready = deferred();
  const client = new Client({
    webSocketFactory: () => new WebSocket(`${parley.url.replace(/^http/, 'ws')}/stomp`, ['v12.stomp']),
    connectHeaders: { host: '/', passcode: token },
    reconnectDelay: 0, heartbeatIncoming: 0, heartbeatOutgoing: 0, debug: () => {},
    onConnect: () => ready.resolve(),
    onStompError: (f) => ready.reject(new Error(`STOMP ERROR ${f.headers.message}`)),
    onWebSocketClose: () => ready.reject(new Error('STOMP WebSocket closed')),
  });
  client.activate();
  cleanups.push(() => client.deactivate());
  await withTimeout(ready.promise, WAIT, 'STOMP CONNECTED');
  const receipt = `sub-${counter++}`;
  const subscribed = deferred();
  client.watchForReceipt(receipt, () => subscribed.resolve());
  client.subscribe(`/topic/${room}`, (m) => inbox.push(m), { receipt });
  await withTimeout(subscribed.promise, WAIT, `receipt of SUBSCRIBE /topic/${room}`);
  return {
    client, inbox,
    async publish(body) {
      const r = `pub-${counter++}`;
      const got = deferred();
      client.watchForReceipt(r, () => got.resolve());
      client.publish({ destination: `/topic/${room}`, body, headers: { receipt: r } });
      await withTimeout(got.promise, WAIT, `receipt of SEND ${body}`);
    },
  };
}

const isId = (v) => typeof v === 'string' && /^[1-9]\d*$/.test(v);

/** Joins `room` (object form) and checks the ack. */
async function join(socket, room) {
  const ack = await withTimeout(socket.emitWithAck('join', { room }), WAIT, `join ${room} ack`);
  assert.equal(ack.type, 'joined', JSON.stringify(ack));
  assert.equal(ack.room, room);
  assert.ok(Array.isArray(ack.members), JSON.stringify(ack));
  assert.match(String(ack.last_id), /^\d+$/, `last_id in ${JSON.stringify(ack)}`);
  return ack;
}

/** Sends to `room` (object form); the ack's id. */
async function say(socket, room, body) {
  const ack = await withTimeout(socket.emitWithAck('send', { room, body }), WAIT, `send ack of ${body}`);
  assert.equal(ack.type, 'ack', JSON.stringify(ack));
  assert.ok(isId(ack.id), `ack id ${JSON.stringify(ack)}`);
  return ack.id;
}

before(async () => {
  if (IS_RABBIT) return;
  port = await freePort();
  dataDir = newDataDir();
  parley = await start();
});

after(async () => {
  await cleanup();
  if (parley) {
    const { code, signal } = await parley.stop();
    if (code !== 0) console.error(`parley exited with ${code ?? signal}; log:\n${tail(parley.logPath)}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

describe('socket.io-client 4 against Parley\'s chat', { skip: IS_RABBIT && 'parley-only' }, () => {
  for (const [name, transports, final] of [
    ['polling only', ['polling'], 'polling'],
    ['websocket only', ['websocket'], 'websocket'],
    ['default (polling, upgraded to websocket)', undefined, 'websocket'],
  ]) {
    test(`${name}: join and send with acks, own message with an offset`, async (t) => {
      t.after(cleanup);
      const alice = await account();
      const { socket, inbox } = sioSocket({ token: alice.token, ...(transports ? { transports } : {}) });
      const upgradedTo = transports ? null : new Promise((resolve) => socket.io.on('open', () => socket.io.engine.once('upgrade', (tr) => resolve(tr.name))));
      await connected(socket);
      if (upgradedTo) assert.equal(await withTimeout(upgradedTo, WAIT, 'the upgrade'), 'websocket');
      assert.equal(socket.io.engine.transport.name, final);
      const room = uniq('room');
      const joined = await join(socket, room);
      assert.deepEqual(joined.members, [alice.user]);
      assert.equal(joined.last_id, '0', 'a new room has no messages');
      const id = await say(socket, room, `hello over ${name}`);
      const m = await waitMessage(inbox, (x) => x.id === id, 'the own message');
      assert.equal(m.room, room);
      assert.equal(m.from, alice.user);
      assert.equal(m.body, `hello over ${name}`);
      assert.equal(typeof m.ts, 'number');
      assert.ok(Math.abs(m.ts - Date.now()) < 60_000, `ts ${m.ts}`);
      assert.notEqual(m.guest, true);
      const [entry] = roomMessages(inbox, room);
      assert.equal(typeof entry.offset, 'string', 'the recovery offset comes last');
      // Positional forms: (room, body) and (room).
      const ack2 = await withTimeout(socket.emitWithAck('send', room, 'positional'), WAIT, 'positional send ack');
      assert.equal(ack2.type, 'ack');
      assert.equal(Number(ack2.id), Number(id) + 1, 'room ids are consecutive');
      await waitMessage(inbox, (x) => x.id === ack2.id && x.body === 'positional', 'the positional message');
      const left = await withTimeout(socket.emitWithAck('leave', room), WAIT, 'leave ack');
      assert.deepEqual(left, { type: 'ok' });
      const again = await withTimeout(socket.emitWithAck('join', room), WAIT, 'positional join ack');
      assert.equal(again.type, 'joined');
      assert.equal(again.last_id, ack2.id, 'last_id is the newest id');
      assert.equal(socket.io.engine.transport.name, final, 'the transport did not change');
    });
  }

  test('on the wire: CONNECT answered with sid and pid, acks as 43<id>, message events end with an offset', async (t) => {
    t.after(cleanup);
    const alice = await account('wire');
    const s = rawSocket(`${parley.url.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`);
    cleanups.push(() => s.close());
    const open = JSON.parse((await s.next()).slice(1));
    assert.deepEqual({ ...open, sid: typeof open.sid },
      { sid: 'string', upgrades: [], pingInterval: 25000, pingTimeout: 20000, maxPayload: 1000000 });
    s.send(`40${JSON.stringify({ token: alice.token })}`);
    const answer = await s.next({ skipPings: true });
    assert.ok(answer.startsWith('40{'), answer);
    const handshake = JSON.parse(answer.slice(2));
    assert.equal(typeof handshake.sid, 'string');
    assert.equal(typeof handshake.pid, 'string', 'the server offers connection-state recovery');
    const room = uniq('wire');
    s.send(`421${JSON.stringify(['join', { room }])}`);
    const got = [];
    const until = async (pred, what) => {
      for (;;) {
        const packet = await s.next({ skipPings: true }).catch((e) => { throw new Error(`${what}: ${e.message}; got ${got}`); });
        got.push(packet);
        if (pred(packet)) return packet;
      }
    };
    const joined = await until((p) => p.startsWith('431['), 'the join ack');
    const [joinAck] = JSON.parse(joined.slice(3));
    assert.equal(joinAck.type, 'joined');
    assert.equal(joinAck.room, room);
    s.send(`422${JSON.stringify(['send', { room, body: 'on the wire' }])}`);
    const acked = await until((p) => p.startsWith('432['), 'the send ack');
    const [sendAck] = JSON.parse(acked.slice(3));
    assert.equal(sendAck.type, 'ack');
    assert.ok(isId(sendAck.id));
    const event = got.find((p) => p.startsWith('42["message"')) ?? await until((p) => p.startsWith('42["message"'), 'the message event');
    const [name, message, offset, ...rest] = JSON.parse(event.slice(2));
    assert.equal(name, 'message');
    assert.equal(message.id, sendAck.id);
    assert.equal(message.room, room);
    assert.equal(message.from, alice.user);
    assert.equal(typeof offset, 'string', `offset in ${event}`);
    assert.deepEqual(rest, []);
  });

  test('a message has one id, sender and time on Socket.IO, raw /ws and STOMP, both ways', async (t) => {
    t.after(cleanup);
    const [alice, bob, carol] = [await account('a'), await account('b'), await account('c')];
    const room = uniq('mix');
    const a = await sio({ token: alice.token });
    await join(a.socket, room);
    const b = await raw(bob.token);
    await b.join(room);
    const c = await stomp(carol.token, room);

    // Socket.IO → raw, STOMP
    const id = await say(a.socket, room, 'from socket.io ✓');
    const own = await waitMessage(a.inbox, (m) => m.id === id, 'socket.io own message');
    const atRaw = await b.inbox.waitFor((m) => m.type === 'message' && m.id === id, 'the message at /ws');
    const atStomp = await c.inbox.waitFor((f) => f.headers['message-id'] === id, 'the message at STOMP');
    assert.equal(atRaw.from, alice.user);
    assert.equal(atRaw.ts, own.ts);
    assert.equal(atRaw.body, 'from socket.io ✓');
    assert.equal(atStomp.headers.sender, alice.user);
    assert.equal(atStomp.headers.timestamp, String(own.ts));
    assert.equal(atStomp.body, 'from socket.io ✓');
    assert.equal(own.from, alice.user);

    // raw → Socket.IO
    const rawAck = await b.say(room, 'from raw');
    const rawOwn = await b.inbox.waitFor((m) => m.type === 'message' && m.id === rawAck.id, 'raw own message');
    const fromRaw = await waitMessage(a.inbox, (m) => m.id === rawAck.id, 'the raw message at socket.io');
    assert.equal(fromRaw.from, bob.user);
    assert.equal(fromRaw.ts, rawOwn.ts);
    assert.equal(fromRaw.body, 'from raw');
    assert.equal(fromRaw.room, room);

    // STOMP → Socket.IO
    await c.publish('from stomp');
    const stompOwn = await c.inbox.waitFor((f) => f.body === 'from stomp', 'STOMP own message');
    const fromStomp = await waitMessage(a.inbox, (m) => m.body === 'from stomp', 'the STOMP message at socket.io');
    assert.equal(fromStomp.id, stompOwn.headers['message-id']);
    assert.equal(fromStomp.from, carol.user);
    assert.equal(String(fromStomp.ts), stompOwn.headers.timestamp);

    // The ids are the room's sequence; a later join's last_id is the newest.
    assert.deepEqual([id, rawAck.id, fromStomp.id].map(Number), [1, 2, 3].map((n) => Number(id) + n - 1));
    const d = await sio({ token: (await account('d')).token });
    const joined = await join(d.socket, room);
    assert.equal(joined.last_id, fromStomp.id);
    for (const user of [alice.user, bob.user, carol.user]) assert.ok(joined.members.includes(user), `${user} in ${joined.members}`);
  });

  test('the other commands: answers as events without an ack, ping, auth, edit/react/delete events, history, DMs', async (t) => {
    t.after(cleanup);
    const [alice, bob] = [await account('oa'), await account('ob')];
    const room = uniq('cmd');
    const a = await sio({ token: alice.token });
    const b = await raw(bob.token);
    // No ack asked: the answer comes as an event named by its type.
    a.socket.emit('join', { room });
    const joinedEvent = await a.inbox.waitFor((e) => e.event === 'joined', 'the joined event');
    assert.equal(joinedEvent.args[0].room, room);
    await b.join(room);
    a.socket.emit('send', { room, body: 'no ack asked' });
    const ackEvent = await a.inbox.waitFor((e) => e.event === 'ack', 'the ack event');
    assert.ok(isId(ackEvent.args[0].id), JSON.stringify(ackEvent.args));
    assert.deepEqual(await withTimeout(a.socket.emitWithAck('ping'), WAIT, 'pong'), { type: 'pong' });
    const fresh = await postJson('/api/login', { username: alice.user, password: `pw-${alice.user}-correct-horse` });
    const authed = await withTimeout(a.socket.emitWithAck('auth', { access_token: fresh.body.access_token }), WAIT, 'authed');
    assert.equal(authed.type, 'authed');
    assert.equal(typeof authed.expires_in, 'number');

    // Room events: edit (own message), reaction (by bob over /ws), delete; each with an offset.
    const id = await say(a.socket, room, 'first draft');
    const edit = await withTimeout(a.socket.emitWithAck('edit', { room, id, body: 'final' }), WAIT, 'edit ack');
    assert.equal(edit.type, 'ack');
    assert.equal(Number(edit.id), Number(id) + 1, 'an edit takes the room\'s next id');
    const edited = await a.inbox.waitFor((e) => e.event === 'edit', 'the edit event');
    assert.equal(edited.args.length, 2);
    assert.deepEqual({ ...edited.args[0], ts: 0 }, { type: 'edit', room, id: edit.id, target: id, from: alice.user, ts: 0, body: 'final' });
    assert.equal(typeof edited.args[1], 'string', 'the offset');
    b.send({ type: 'react', room, id, emoji: '👍', ref: 'r' });
    const reacted = await a.inbox.waitFor((e) => e.event === 'reaction', 'the reaction event');
    assert.equal(reacted.args[0].target, id);
    assert.equal(reacted.args[0].from, bob.user);
    assert.equal(reacted.args[0].emoji, '👍');
    assert.equal(reacted.args[0].op, 'add');
    assert.equal(typeof reacted.args[1], 'string', 'the offset');
    // The event may come before the reaction is stored; history reads storage.
    await b.inbox.waitFor((m) => m.type === 'ack' && m.ref === 'r', 'the reaction\'s ack');
    const history = await withTimeout(a.socket.emitWithAck('history', { room }), WAIT, 'history');
    assert.equal(history.type, 'history');
    const shown = history.messages.find((m) => m.id === id);
    assert.equal(shown.body, 'final');
    assert.equal(shown.edited, true);
    assert.deepEqual(shown.reactions, [{ emoji: '👍', users: [bob.user] }]);
    const del = await withTimeout(a.socket.emitWithAck('delete', { room, id }), WAIT, 'delete ack');
    assert.equal(del.type, 'ack');
    const deleted = await a.inbox.waitFor((e) => e.event === 'delete', 'the delete event');
    assert.equal(deleted.args[0].target, id);
    assert.equal(deleted.args[0].id, del.id);
    assert.equal(typeof deleted.args[1], 'string', 'the offset');

    // Direct messages both ways.
    const dm = await withTimeout(a.socket.emitWithAck('send', { to: bob.user, body: 'psst' }), WAIT, 'DM ack');
    assert.equal(dm.type, 'ack');
    const atBob = await b.inbox.waitFor((m) => m.type === 'message' && m.body === 'psst', 'the DM at /ws');
    assert.equal(atBob.to, bob.user);
    assert.equal(atBob.from, alice.user);
    assert.equal(atBob.id, dm.id);
    b.send({ type: 'send', to: alice.user, body: 'psst back' });
    const back = await a.inbox.waitFor((e) => e.event === 'message' && e.args[0].body === 'psst back', 'the DM at socket.io');
    assert.equal(back.args[0].to, alice.user);
    assert.equal(back.args[0].from, bob.user);
    assert.equal(typeof back.args.at(-1), 'string', 'the offset');
  });

  test('who you are: auth.token, auth.access_token, Authorization header, ?access_token=', async (t) => {
    t.after(cleanup);
    const owner = await account('owner');
    const room = uniq('who');
    const o = await sio({ token: owner.token });
    await join(o.socket, room);
    const ways = {
      'auth.token': (token) => ({ auth: { token } }),
      'auth.access_token': (token) => ({ auth: { access_token: token } }),
      'Authorization: Bearer (polling)': (token) => ({ transports: ['polling'], extraHeaders: { authorization: `Bearer ${token}` } }),
      'Authorization: Bearer (websocket)': (token) => ({ transports: ['websocket'], extraHeaders: { authorization: `Bearer ${token}` } }),
      '?access_token=': (token) => ({ query: { access_token: token } }),
    };
    for (const [way, options] of Object.entries(ways)) {
      const me = await account('who');
      const { socket, inbox } = await sio(options(me.token));
      await join(socket, room);
      const id = await say(socket, room, way);
      const m = await waitMessage(inbox, (x) => x.id === id, `own message (${way})`);
      assert.equal(m.from, me.user, way);
      assert.notEqual(m.guest, true, way);
      socket.disconnect();
    }
    // No credentials, guests allowed: a guest.
    const { socket, inbox } = await sio({});
    await join(socket, room);
    const id = await say(socket, room, 'a guest');
    const m = await waitMessage(inbox, (x) => x.id === id, 'the guest\'s message');
    assert.equal(m.guest, true);
    assert.match(m.from, /^guest-/);
  });

  test('a bad or forged token: connect_error with data.code unauthorized', async (t) => {
    t.after(cleanup);
    const { token } = await account('bad');
    const forged = `${token.slice(0, -4)}${token.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`;
    for (const [what, auth] of [['garbage', { token: 'not-a-jwt' }], ['forged', { token: forged }], ['forged access_token', { access_token: forged }]]) {
      for (const transports of [['polling'], ['websocket']]) {
        const { socket } = sioSocket({ auth, transports });
        const err = await connected(socket, `connect_error (${what})`).then(
          () => assert.fail(`${what} over ${transports}: connected`), (e) => e);
        assert.equal(err.message, 'unauthorized', `${what} over ${transports}: ${err.message}`);
        assert.equal(err.data?.code, 'unauthorized', `${what} over ${transports}: data ${JSON.stringify(err.data)}`);
        assert.equal(typeof err.data.message, 'string');
        socket.disconnect();
      }
    }
  });

  test('presence and typing events', async (t) => {
    t.after(cleanup);
    const [alice, bob] = [await account('pa'), await account('pb')];
    const room = uniq('pt');
    const a = await sio({ token: alice.token });
    await join(a.socket, room);
    const b = await sio({ token: bob.token, transports: ['websocket'] });
    const joined = await join(b.socket, room);
    assert.deepEqual([...joined.members].sort(), [alice.user, bob.user].sort());
    const presence = await a.inbox.waitFor((e) => e.event === 'presence' && e.args[0].user === bob.user, 'presence join');
    assert.deepEqual(presence.args, [{ type: 'presence', room, user: bob.user, event: 'join' }]);
    const typingAck = await withTimeout(b.socket.emitWithAck('typing', { room }), WAIT, 'typing ack');
    assert.deepEqual(typingAck, { type: 'ok' });
    const typing = await a.inbox.waitFor((e) => e.event === 'typing', 'typing');
    assert.deepEqual(typing.args, [{ type: 'typing', room, user: bob.user }]);
    b.socket.emit('typing', room); // positional, no ack
    await a.inbox.waitFor((e) => e.event === 'typing' && e !== typing, 'the second typing');
    assert.ok(!b.inbox.items.some((e) => e.event === 'typing'), 'no typing about yourself');
    const left = await withTimeout(b.socket.emitWithAck('leave', { room }), WAIT, 'leave ack');
    assert.deepEqual(left, { type: 'ok' });
    const gone = await a.inbox.waitFor((e) => e.event === 'presence' && e.args[0].event === 'leave', 'presence leave');
    assert.deepEqual(gone.args, [{ type: 'presence', room, user: bob.user, event: 'leave' }]);
  });

  test('refusals: invalid room (ack and error event), not joined, binary attachment', async (t) => {
    t.after(cleanup);
    const alice = await account('err');
    const { socket, inbox } = await sio({ token: alice.token });
    const bad = 'no spaces allowed!';
    const ack = await withTimeout(socket.emitWithAck('join', { room: bad }), WAIT, 'join ack');
    assert.equal(ack.type, 'error');
    assert.equal(ack.code, 'invalid_room');
    assert.equal(typeof ack.message, 'string');
    socket.emit('join', { room: bad });
    const ev = await inbox.waitFor((e) => e.event === 'error', 'the error event');
    assert.equal(ev.args[0].type, 'error');
    assert.equal(ev.args[0].code, 'invalid_room');
    const room = uniq('err');
    const notJoined = await withTimeout(socket.emitWithAck('send', { room, body: 'x' }), WAIT, 'send ack');
    assert.equal(notJoined.type, 'error');
    assert.equal(notJoined.code, 'not_joined');
    await join(socket, room);
    const binary = await withTimeout(socket.emitWithAck('send', { room, body: Buffer.from('binary') }), WAIT, 'binary send ack');
    assert.equal(binary.type, 'error', JSON.stringify(binary));
    assert.equal(binary.code, 'invalid_field');
    // Nothing was sent: the next message is the room's first.
    const id = await say(socket, room, 'text');
    assert.equal(id, '1');
    assert.deepEqual(roomMessages(inbox, room).map((e) => e.message.body), ['text']);
  });

  test('Origin: another site is 403 {code:4,"Forbidden"}, the server\'s own is welcome', async () => {
    const handshake = `${parley.url}/socket.io/?EIO=4&transport=polling`;
    const evil = await fetch(handshake, { headers: { origin: 'http://evil.example' }, signal: AbortSignal.timeout(WAIT) });
    assert.equal(evil.status, 403);
    assert.equal(evil.headers.get('content-type'), 'application/json');
    assert.deepEqual(await evil.json(), { code: 4, message: 'Forbidden' });
    const own = await fetch(handshake, { headers: { origin: parley.url }, signal: AbortSignal.timeout(WAIT) });
    assert.equal(own.status, 200);
    assert.ok((await own.text()).startsWith('0{'));
    const ws = rawSocket(handshake.replace(/^http/, 'ws').replace('polling', 'websocket'), { headers: { origin: 'http://evil.example' } });
    await assert.rejects(ws.open(), 'a WebSocket from another site opened');
    assert.equal(ws.refusedStatus, 403);
  });

  test('the /custom namespace is refused: connect_error "Invalid namespace"', async (t) => {
    t.after(cleanup);
    const alice = await account('nsp');
    for (const transports of [['polling'], ['websocket']]) {
      const { socket } = sioSocket({ token: alice.token, nsp: '/custom', transports });
      const err = await connected(socket, 'connect_error').then(() => assert.fail('connected to /custom'), (e) => e);
      assert.equal(err.message, 'Invalid namespace');
      socket.disconnect();
    }
  });

  describe('connection-state recovery', () => {
    /** The room's message ids at the client, in arrival order, as numbers. */
    const idsAt = (inbox, room) => roomMessages(inbox, room).map((e) => Number(e.message.id));

    async function recoverable(token, delay, transports) {
      const client = await sio({
        token, reconnection: true, reconnectionDelay: delay, reconnectionDelayMax: delay, randomizationFactor: 0,
        ...(transports ? { transports } : {}),
      });
      return client;
    }

    for (const [name, transports] of [['polling', ['polling']], ['websocket', ['websocket']], ['default', undefined]]) {
      test(`after the transport drops (socket.io.engine.close()), ${name}`, async (t) => {
        t.after(cleanup);
        const [alice, bob] = [await account('ra'), await account('rb')];
        const room = uniq('rec');
        const a = await recoverable(alice.token, 1000, transports);
        await join(a.socket, room);
        await a.inbox.waitFor((e) => e.event === 'offset' && typeof e.args[0] === 'string', 'the offset event after join');
        const b = await raw(bob.token);
        await b.join(room);
        const first = Number((await b.say(room, 'before')).id);
        await a.inbox.waitFor((e) => e.event === 'message' && Number(e.args[0].id) === first, 'the first message');
        const disconnected = new Promise((resolve) => a.socket.once('disconnect', resolve));
        const reconnected = new Promise((resolve) => a.socket.once('connect', resolve));
        a.socket.io.engine.close();
        await withTimeout(disconnected, WAIT, 'disconnect');
        const missed = [];
        for (const body of ['missed 1', 'missed 2', 'missed 3']) missed.push(Number((await b.say(room, body)).id));
        assert.equal(a.socket.connected, false, 'the client came back before the others sent (test timing)');
        await withTimeout(reconnected, WAIT, 'the reconnect');
        assert.equal(a.socket.recovered, true, 'socket.recovered');
        await a.inbox.waitFor((e) => e.event === 'message' && Number(e.args[0].id) === missed.at(-1), 'the last missed message');
        const live = Number((await b.say(room, 'live')).id);
        await a.inbox.waitFor((e) => e.event === 'message' && Number(e.args[0].id) === live, 'the live message');
        await sleep(QUIET);
        assert.deepEqual(idsAt(a.inbox, room), [first, ...missed, live]);
        assert.deepEqual(missed, [first + 1, first + 2, first + 3]);
        assert.equal(live, first + 4);
      });
    }

    test('rejoining checks access again: removed from a private room while away, an error event for it', async (t) => {
      t.after(cleanup);
      const [owner, alice, bob] = [await account('ro'), await account('rm'), await account('rp')];
      const priv = uniq('priv');
      const pub = uniq('pub');
      assert.equal((await api('POST', '/api/rooms', owner.token, { name: priv, private: true })).status, 201);
      assert.equal((await api('POST', `/api/rooms/${priv}/members`, owner.token, { user: alice.user })).status, 204);
      const a = await recoverable(alice.token, 1000);
      await join(a.socket, priv);
      await join(a.socket, pub);
      const b = await raw(bob.token);
      await b.join(pub);
      const first = Number((await b.say(pub, 'before')).id);
      await a.inbox.waitFor((e) => e.event === 'message' && Number(e.args[0].id) === first, 'the first message');
      const disconnected = new Promise((resolve) => a.socket.once('disconnect', resolve));
      const reconnected = new Promise((resolve) => a.socket.once('connect', resolve));
      a.socket.io.engine.close();
      await withTimeout(disconnected, WAIT, 'disconnect');
      const removed = await api('DELETE', `/api/rooms/${priv}/members/${alice.user}`, owner.token);
      assert.equal(removed.status, 204, removed.body);
      const missed = Number((await b.say(pub, 'missed')).id);
      assert.equal(a.socket.connected, false, 'the client came back before the others sent (test timing)');
      await withTimeout(reconnected, WAIT, 'the reconnect');
      assert.equal(a.socket.recovered, true, 'socket.recovered');
      const refused = await a.inbox.waitFor((e) => e.event === 'error' && e.args[0].code === 'forbidden', 'the error event for the private room');
      assert.equal(refused.args[0].type, 'error');
      await a.inbox.waitFor((e) => e.event === 'message' && Number(e.args[0].id) === missed, 'the missed message in the public room');
      assert.deepEqual(idsAt(a.inbox, pub), [first, missed]);
      const send = await withTimeout(a.socket.emitWithAck('send', { room: priv, body: 'still here?' }), WAIT, 'send ack');
      assert.equal(send.type, 'error', `a send to the private room after removal: ${JSON.stringify(send)}`);
      // Last, so the checks above report too: the refusal names its room (protocol.md: forbidden
      // "or you were removed from it (then with room)"); nothing else tells the app which it was.
      assert.equal(refused.args[0].room, priv, `the error event names the room: ${JSON.stringify(refused.args[0])}`);
    });

    test('after the server is SIGKILLed and restarted on the same port and data', async (t) => {
      t.after(cleanup);
      const [alice, bob] = [await account('ka'), await account('kb')];
      const room = uniq('kill');
      const a = await recoverable(alice.token, 3000);
      await join(a.socket, room);
      let b = await raw(bob.token);
      await b.join(room);
      const first = Number((await b.say(room, 'before the crash')).id);
      await a.inbox.waitFor((e) => e.event === 'message' && Number(e.args[0].id) === first, 'the first message');
      const disconnected = new Promise((resolve) => a.socket.once('disconnect', resolve));
      const reconnected = new Promise((resolve) => a.socket.once('connect', resolve));
      await parley.kill();
      await withTimeout(disconnected, WAIT, 'disconnect after SIGKILL');
      parley = await start();
      b = await raw(bob.token);
      const rejoined = await b.join(room);
      assert.equal(rejoined.type, 'joined');
      const missed = [];
      for (const body of ['missed 1', 'missed 2', 'missed 3']) missed.push(Number((await b.say(room, body)).id));
      assert.equal(a.socket.connected, false, 'the client came back before the others sent (test timing)');
      await withTimeout(reconnected, 2 * WAIT, 'the reconnect after the restart');
      assert.equal(a.socket.recovered, true, 'socket.recovered');
      await a.inbox.waitFor((e) => e.event === 'message' && Number(e.args[0].id) === missed.at(-1), 'the last missed message');
      const live = [];
      for (const body of ['live 1', 'live 2']) live.push(Number((await b.say(room, body)).id));
      await a.inbox.waitFor((e) => e.event === 'message' && Number(e.args[0].id) === live.at(-1), 'the live messages');
      await sleep(QUIET);
      assert.deepEqual(idsAt(a.inbox, room), [first, ...missed, ...live]);
      assert.deepEqual([...missed, ...live], [1, 2, 3, 4, 5].map((n) => first + n));
      // The recovered session still sends.
      const id = await say(a.socket, room, 'after recovery');
      assert.equal(Number(id), first + 6);
    });
  });
});
