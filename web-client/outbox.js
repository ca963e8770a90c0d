// The outbox: our room messages from the composer until the server has them — client ids, queueing while away, sending again with the same id, RECEIPTs, the pending list.
//
// Every room message gets a client id (header `client-id`) when it is written. A SEND the
// server has seen before (same user, destination and client id) is not stored again: the retry
// only gets the first one's RECEIPT. So whatever may not have arrived — written while away,
// or sent without a RECEIPT before the connection dropped — is simply sent again with its id
// when the room is joined next, and shows once. What waits is kept in sessionStorage (this
// tab, this user) so a reload does not lose it.

import { el } from './dom.js';
import { pendingEl } from './render.js';
import { debug, isActive, online, state } from './state.js';
import { publishWithReceipt } from './transport/stomp.js';

const KEY = 'parley.outbox.'; // + user name: [{ref, room, body, replyTo}]
const AUTO_TRIES = 3; // sends of one message by flush; then only "Send again" (a refused SEND loops otherwise)

/** A fresh client id: 32 hex digits (crypto.randomUUID needs a secure context; this does not). */
export function newClientId() {
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Sends `body` to `room` (answering message `replyTo`, or null) — or, while away, queues it; it
 * shows as pending until it comes back from the server.
 */
export function submit(room, body, replyTo) {
  const p = { ref: newClientId(), room, body, replyTo, state: 'queued', stored: false };
  state.pending.set(p.ref, p);
  if (isActive('room', room)) el.pendingList.append(pendingEl(p));
  if (online()) transmit(p);
  else save();
}

/**
 * Sends what waits for `room` (queued, or sent without an answer), each with its own client id.
 * Only the room being joined: a SEND to a room we may no longer use is an ERROR that closes the
 * connection, and joining checks that first. A message that keeps getting no answer (the server
 * refusing it closes the connection every time) stops after AUTO_TRIES; "Send again" remains.
 */
export function flush(room) {
  if (!online()) return;
  for (const p of state.pending.values()) {
    if (p.room !== room || p.stored || p.state === 'sending') continue;
    if ((p.tries || 0) < AUTO_TRIES) transmit(p);
    else redraw(p); // with its "Send again" now that we are online
  }
}

/** "Send again" on a message the server never confirmed: the same client id, so at most once. */
export function retry(ref) {
  const p = state.pending.get(ref);
  if (!p || p.stored || !online()) return;
  p.tries = 0;
  transmit(p);
}

function transmit(p) {
  p.state = 'sending';
  p.tries = (p.tries || 0) + 1;
  debug.outboxSends++;
  const headers = { 'content-type': 'text/plain', receipt: p.ref, 'client-id': p.ref };
  if (p.replyTo) headers['reply-to'] = String(p.replyTo);
  publishWithReceipt(state.client, { destination: `/topic/${p.room}`, body: p.body, headers }, () => onReceipt(p.ref));
  redraw(p);
  save();
}

/** A RECEIPT: a room message is durably stored (a retry's too); a DM was accepted. */
export function onReceipt(ref) {
  const p = state.pending.get(ref);
  if (p) {
    p.stored = true; // its MESSAGE has not come back yet
    save();
    return;
  }
  const msg = state.refMsgs.get(ref);
  if (msg) {
    state.refMsgs.delete(ref);
    setMessageState(msg, 'sent');
  }
}

function setMessageState(msg, value) {
  msg.state = value;
  const node = el.list.querySelector(`[data-id="${CSS.escape(String(msg.id))}"]`);
  if (node) node.dataset.state = value;
}

/** Our message came back from the server (live, catch-up or history): it replaces its pending entry. */
export function resolvePending(msg) {
  const p = msg.clientId && state.pending.get(msg.clientId);
  if (!p || p.room !== msg.room) return;
  state.pending.delete(p.ref);
  msg.ref = p.ref;
  // Sent on this connection: its RECEIPT says "sent". Otherwise none is coming.
  if (p.stored || p.state !== 'sending') msg.state = 'sent';
  else {
    msg.state = 'sending';
    state.refMsgs.set(p.ref, msg);
  }
  el.pendingList.querySelector(`[data-ref="${CSS.escape(p.ref)}"]`)?.remove();
  save();
}

/** The connection dropped: what had no RECEIPT may or may not have arrived; joining again resends it. */
export function markUnconfirmed() {
  for (const p of state.pending.values()) if (p.state === 'sending' && !p.stored) p.state = 'unconfirmed';
}

function redraw(p) {
  const node = el.pendingList.querySelector(`[data-ref="${CSS.escape(p.ref)}"]`);
  if (node) node.replaceWith(pendingEl(p));
}

// ---- kept across reloads -------------------------------------------------------------------------

/** Writes what still waits (not yet stored by the server) to sessionStorage. */
function save() {
  if (!state.me) return;
  const waiting = [...state.pending.values()].filter((p) => !p.stored)
    .map(({ ref, room, body, replyTo }) => ({ ref, room, body, replyTo }));
  try {
    if (waiting.length) sessionStorage.setItem(KEY + state.me, JSON.stringify(waiting));
    else sessionStorage.removeItem(KEY + state.me);
  } catch {
    /* storage full or disabled: the outbox lives as long as the page */
  }
}

/** Once connected as `state.me`: takes back what a previous load of this tab left unsent. */
export function loadOutbox() {
  let saved = [];
  try {
    saved = JSON.parse(sessionStorage.getItem(KEY + state.me) || '[]');
  } catch {
    return;
  }
  if (!Array.isArray(saved)) return;
  for (const s of saved) {
    const ok = s && typeof s.ref === 'string' && typeof s.room === 'string' && typeof s.body === 'string';
    if (!ok || state.pending.has(s.ref)) continue;
    const p = { ref: s.ref, room: s.room, body: s.body, replyTo: Number(s.replyTo) || null, state: 'unconfirmed', stored: false };
    state.pending.set(p.ref, p);
    if (isActive('room', p.room)) el.pendingList.append(pendingEl(p));
  }
}

/** Signing out: nothing of this user waits in the tab. */
export function forgetOutbox() {
  try {
    for (let i = sessionStorage.length - 1; i >= 0; i--) {
      const key = sessionStorage.key(i);
      if (key && key.startsWith(KEY)) sessionStorage.removeItem(key);
    }
  } catch {
    /* storage disabled */
  }
}
