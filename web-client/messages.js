// What we send (room messages, DMs, typing; pending entries, receipts, retries). DMs we receive: dms.js.

import { el } from './dom.js';
import { closeMentions } from './mentions.js';
import {
  appendMessage, autosize, messageEl, pendingEl, renderComposer, renderDms, scrollToBottom, tooLong,
} from './render.js';
import { auth, dmState, online, state } from './state.js';
import { publishWithReceipt } from './transport/stomp.js';

const TYPING_SEND_EVERY = 2000; // ms between our typing notices

/**
 * Sends what the composer holds to the open conversation; a RECEIPT confirms it. A body over the
 * server's limit stays in the composer (which says so): it is neither cut nor sent.
 */
export function send() {
  const text = el.input.value;
  if (!text.trim() || !online() || !state.active || tooLong()) return;
  const ref = `${state.me}-${Date.now().toString(36)}-${++state.refSeq}`;
  state.sentRefs.add(ref);
  const { kind, name } = state.active;
  let destination;
  if (kind === 'room') {
    destination = `/topic/${name}`;
    const pending = { ref, room: name, body: text, state: 'sending', stored: false };
    state.pending.set(ref, pending);
    el.pendingList.append(pendingEl(pending));
  } else {
    destination = `/user/${name}/queue/messages`;
    const dm = dmState(name);
    const msg = { id: `local-${ref}`, ref, from: state.me, ts: Date.now(), body: text, state: 'sending', guest: auth.mode === 'guest' };
    dm.msgs.push(msg);
    dm.last = Date.now();
    state.refMsgs.set(ref, msg);
    appendMessage(messageEl(msg));
    renderDms();
  }
  publishWithReceipt(state.client, {
    destination,
    body: text,
    headers: { 'content-type': 'text/plain', receipt: ref, 'client-ref': ref },
  }, () => onReceipt(ref));
  el.input.value = '';
  autosize();
  closeMentions();
  renderComposer();
  state.lastTypingSent = 0;
  scrollToBottom();
}

/** A RECEIPT: a room message is durably stored; a DM was accepted. */
function onReceipt(ref) {
  const pending = state.pending.get(ref);
  if (pending) {
    pending.stored = true; // its MESSAGE has not come back yet
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

/** "Send again" on a room message the server never confirmed. */
export function retry(ref) {
  const pending = state.pending.get(ref);
  if (!pending || !online()) return;
  state.pending.delete(ref);
  el.pendingList.querySelector(`[data-ref="${CSS.escape(ref)}"]`)?.remove();
  const saved = el.input.value;
  el.input.value = pending.body;
  send();
  el.input.value = saved;
}

export function sendTyping() {
  if (!state.active || state.active.kind !== 'room' || !online() || !el.input.value.trim()) return;
  if (state.joined !== state.active.name) return;
  const now = Date.now();
  if (now - state.lastTypingSent < TYPING_SEND_EVERY) return;
  state.lastTypingSent = now;
  state.client.publish({ destination: `/topic/${state.active.name}.typing`, body: '' });
}
