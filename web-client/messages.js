// What we send (room messages through the outbox, DMs, typing). DMs we receive: dms.js.

import { el } from './dom.js';
import { closeMentions } from './mentions.js';
import { renderReplyBar } from './msgparts.js';
import { newClientId, onReceipt, submit } from './outbox.js';
import {
  appendMessage, autosize, messageEl, renderComposer, renderDms, scrollToBottom, tooLong,
} from './render.js';
import { auth, canCompose, dmState, online, state } from './state.js';
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
