// Changing messages from the page: replying, reacting, editing in place, deleting, sending those changes to the server; and the keyboard in the message list.
//
// A change is answered by its event on /topic/<room> (events.js), like everyone else's: the
// page shows nothing until the server has it. Accounts change messages through REST (PATCH,
// DELETE, POST …/reactions): a refusal (too late, rate limited) is then an HTTP answer shown in
// the banner, while the same refusal over STOMP is an ERROR that closes the connection — a
// reconnect and catch-up for nothing. Guests have no REST access, so theirs go over STOMP
// (`kind` + `target-id` on a SEND to the room); the page only offers what the server accepts.

import { changeMessage } from './api.js';
import { el } from './dom.js';
import { refreshMessage } from './events.js';
import { mayChange, partActions, renderReplyBar } from './msgparts.js';
import { showBanner, tooLong } from './render.js';
import { auth, info, online, roomState, state } from './state.js';

const VERBS = { edit: 'edit', delete: 'delete', react: 'react to', unreact: 'take back the reaction to' };

Object.assign(partActions, { reply, react, startEdit, saveEdit, cancelEdit, remove, showQuoted, cancelReply });

// ---- the keyboard in the message list --------------------------------------------------------------

/**
 * The message list is one tab stop (not four buttons per message): Tab lands on the last
 * message, Up and Down move between messages, and within the focused message Tab reaches its
 * quote, chips and actions (tabindex -1 elsewhere, msgparts.js).
 */
const CONTROLS = '.reply-quote, .chip, .act';
let current = null; // the message whose controls are in the tab order

el.list.tabIndex = 0;
el.list.addEventListener('focusin', (e) => {
  if (e.target === el.list) {
    // Arriving from outside: on to the last message. Leaving backwards (Shift+Tab from inside)
    // stops here once, then goes on.
    if (!el.list.contains(e.relatedTarget)) el.list.lastElementChild?.focus();
    return;
  }
  const li = e.target.closest('#message-list > li');
  if (!li || li === current) return;
  if (current) for (const c of current.querySelectorAll(CONTROLS)) c.tabIndex = -1;
  current = li;
  for (const c of li.querySelectorAll(CONTROLS)) c.tabIndex = 0;
});
el.list.addEventListener('focusout', (e) => {
  if (el.list.contains(e.relatedTarget) || !current) return;
  for (const c of current.querySelectorAll(CONTROLS)) c.tabIndex = -1; // left the list: one stop again
  current = null;
});
el.list.addEventListener('keydown', (e) => {
  if ((e.key !== 'ArrowUp' && e.key !== 'ArrowDown') || e.target.parentElement !== el.list) return;
  const next = e.key === 'ArrowUp' ? e.target.previousElementSibling : e.target.nextElementSibling;
  if (!next) return;
  e.preventDefault();
  next.focus();
});

// ---- replies -------------------------------------------------------------------------------------

/** "Reply": the next message sent in this room answers `msg` (shown above the composer). */
export function reply(msg) {
  state.replyTo = { room: msg.room, id: msg.id };
  renderReplyBar();
  el.input.focus();
}

export function cancelReply() {
  state.replyTo = null;
  renderReplyBar();
}

/** A click on a reply's quote: brings the original into view when it is loaded. */
export function showQuoted(room, id) {
  const node = el.list.querySelector(`:scope > [data-id="${CSS.escape(String(id))}"]`);
  if (!node) {
    showBanner('The original message is further up: scroll up to load it.');
    return;
  }
  node.scrollIntoView({ block: 'center', behavior: 'smooth' });
  node.classList.add('flash');
  setTimeout(() => node.classList.remove('flash'), 1600);
  node.focus({ preventScroll: true });
}

// ---- reactions -----------------------------------------------------------------------------------

/** Adds our `emoji` to `msg`, or takes it back when it is there already. */
export function react(msg, emoji) {
  const mine = Boolean(msg.reactions.get(emoji)?.has(state.me));
  change(msg, { kind: mine ? 'unreact' : 'react', body: emoji });
}

// ---- editing and deleting -------------------------------------------------------------------------

export function startEdit(msg, { fromComposer = false } = {}) {
  if (!mayChange(msg)) {
    tooLate(msg, 'edit');
    return;
  }
  const old = state.editing;
  state.editing = { room: msg.room, id: msg.id, draft: msg.body, fromComposer };
  if (old) redrawById(old.room, old.id);
  refreshMessage(roomState(msg.room), msg);
  const input = el.list.querySelector(`:scope > [data-id="${CSS.escape(String(msg.id))}"] .edit-input`);
  if (input) {
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }
}

export function cancelEdit() {
  const old = state.editing;
  state.editing = null;
  if (!old) return;
  redrawById(old.room, old.id);
  // Back where the edit began: the composer (Up) or the message (its Edit button).
  if (old.fromComposer) el.input.focus();
  else el.list.querySelector(`:scope > [data-id="${CSS.escape(String(old.id))}"]`)?.focus({ preventScroll: true });
}

/** Saves an edit: nothing when unchanged; an empty text offers to delete instead. */
export function saveEdit(msg, text) {
  if (text === msg.body) {
    cancelEdit();
    return;
  }
  if (!text.trim()) {
    showBanner('A message cannot be empty: use Delete to remove it.');
    return;
  }
  if (new TextEncoder().encode(text).length > info.maxBody) {
    showBanner(`Too long to save: at most ${info.maxBody.toLocaleString('en')} bytes.`);
    return;
  }
  cancelEdit();
  change(msg, { kind: 'edit', body: text });
}

export function remove(msg) {
  change(msg, { kind: 'delete', body: '' });
}

/** Up in an empty composer: edits our last message in the open room, if we still may. */
export function editLast() {
  const conv = state.active;
  if (!conv || conv.kind !== 'room' || el.input.value !== '' || tooLong()) return false;
  const msgs = [...roomState(conv.name).msgs.values()].sort((a, b) => b.id - a.id);
  const last = msgs.find((m) => m.from === state.me && !m.deleted);
  if (!last || !mayChange(last)) return false;
  startEdit(last, { fromComposer: true });
  return true;
}

/**
 * The edit window passed while the message was on screen: say so here rather than provoke the
 * server's refusal (over STOMP an ERROR that would close the connection); its buttons go.
 */
function tooLate(msg, verb) {
  showBanner(`Too late to ${verb} that message: messages can be changed for ${windowText()} after sending.`);
  redrawById(msg.room, msg.id);
}

function windowText() {
  const s = info.editWindowS;
  if (s % 3600 === 0) return `${s / 3600} h`;
  if (s % 60 === 0) return `${s / 60} min`;
  return `${s} s`;
}

function redrawById(room, id) {
  const msg = roomState(room).msgs.get(id);
  if (msg) refreshMessage(roomState(room), msg);
}

// ---- to the server ---------------------------------------------------------------------------------

/** Sends one change of `msg` ({kind: edit|delete|react|unreact, body}); its event shows it. */
async function change(msg, { kind, body }) {
  if ((kind === 'edit' || kind === 'delete') && !mayChange(msg)) {
    tooLate(msg, kind);
    return;
  }
  if (auth.mode !== 'account') {
    if (!online()) {
      showBanner('You are offline: try again once connected.');
      return;
    }
    state.client.publish({
      destination: `/topic/${msg.room}`,
      body,
      headers: { 'content-type': 'text/plain', kind, 'target-id': String(msg.id) },
    });
    return;
  }
  let answer;
  try {
    answer = await changeMessage(msg.room, msg.id, { kind, body });
  } catch {
    showBanner(`Could not ${VERBS[kind]} the message: the server is unreachable.`);
    return;
  }
  if (!answer.ok) {
    const why = (answer.body && answer.body.error) || `HTTP ${answer.status}`;
    showBanner(`Could not ${VERBS[kind]} the message: ${why}`);
  }
}
