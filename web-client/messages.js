// What we send (room messages through the outbox, DMs, typing) and the direct messages we receive.

import { el } from './dom.js';
import { closeMentions } from './mentions.js';
import { renderReplyBar } from './msgparts.js';
import { notifyMessage } from './notify.js';
import { newClientId, onReceipt, submit } from './outbox.js';
import {
  appendMessage, autosize, messageEl, nearBottom, renderComposer, renderDms, scrollToBottom, tooLong,
} from './render.js';
import { noteGuest } from './rooms.js';
import { auth, canCompose, debug, dmState, isActive, online, state } from './state.js';
import { publishWithReceipt } from './transport/stomp.js';

const TYPING_SEND_EVERY = 2000; // ms between our typing notices

/**
 * Sends what the composer holds to the open conversation. A room message goes through the
 * outbox (queued while away, a RECEIPT confirms it, answering the reply target if one is set);
 * a DM needs the connection. A body over the server's limit stays in the composer (which says
 * so): it is neither cut nor sent.
 */
export function send() {
  const text = el.input.value;
  if (!text.trim() || !state.active || !canCompose() || tooLong()) return;
  const { kind, name } = state.active;
  if (kind === 'room') {
    const reply = state.replyTo && state.replyTo.room === name ? state.replyTo.id : null;
    submit(name, text, reply);
    state.replyTo = null;
    renderReplyBar();
  } else {
    if (!online()) return;
    const ref = newClientId();
    state.sentRefs.add(ref);
    const dm = dmState(name);
    const msg = { id: `local-${ref}`, ref, from: state.me, ts: Date.now(), body: text, state: 'sending', guest: auth.mode === 'guest' };
    dm.msgs.push(msg);
    dm.last = Date.now();
    state.refMsgs.set(ref, msg);
    appendMessage(messageEl(msg));
    renderDms();
    publishWithReceipt(state.client, {
      destination: `/user/${name}/queue/messages`,
      body: text,
      headers: { 'content-type': 'text/plain', receipt: ref, 'client-ref': ref, 'client-id': ref },
    }, () => onReceipt(ref));
  }
  el.input.value = '';
  autosize();
  closeMentions();
  renderComposer();
  state.lastTypingSent = 0;
  scrollToBottom();
}

export function sendTyping() {
  if (!state.active || state.active.kind !== 'room' || !online() || !el.input.value.trim()) return;
  if (state.joined !== state.active.name) return;
  const now = Date.now();
  if (now - state.lastTypingSent < TYPING_SEND_EVERY) return;
  state.lastTypingSent = now;
  state.client.publish({ destination: `/topic/${state.active.name}.typing`, body: '' });
}

/** A MESSAGE on /user/queue/messages. */
export function onDirectMessage(frame) {
  const from = frame.headers.sender;
  if (!from) return;
  const ref = frame.headers['client-ref'];
  if (ref && state.sentRefs.has(ref)) return; // our own, to ourselves: already shown
  const dm = dmState(from);
  const key = `${frame.headers['message-id']}:${frame.headers.timestamp}`;
  if (dm.keys.has(key)) {
    debug.duplicates++;
    return;
  }
  dm.keys.add(key);
  const guest = frame.headers['sender-guest'] === 'true';
  noteGuest(from, guest);
  const msg = { id: `dm-${key}`, from, ts: Number(frame.headers.timestamp) || Date.now(), body: frame.body, guest };
  dm.msgs.push(msg);
  dm.last = Date.now();
  notifyMessage({ kind: 'dm', name: from }, msg);
  if (isActive('dm', from)) {
    const pinned = nearBottom();
    appendMessage(messageEl(msg));
    if (pinned) scrollToBottom();
    else el.jump.hidden = false;
  } else {
    dm.unread++;
  }
  renderDms();
}
