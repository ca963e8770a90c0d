// Room events (MESSAGEs on /topic/<room> with a `kind` header): edits, deletions and reactions applied to the messages they target, and redrawing a changed message.
//
// An event has its own id, the room's next one: it moves the room's last id on (catch-up
// `since` and the gap check count it) but is never a chat line. Applying one is idempotent and
// they come in id order, so a catch-up that replays events history already reflected ends in
// the same state. An event for a message the page has not loaded is dropped: history shows
// that message as it is now when it is paged in.

import { el } from './dom.js';
import { decorate, messageEl } from './render.js';
import { debug, isActive, state } from './state.js';

/** Applies event `id` (headers `kind`, `target-id`, `sender`; body: new text or emoji); false if seen before. */
export function applyEvent(rs, id, frame) {
  if (id <= rs.lastId) {
    debug.duplicates++;
    return false;
  }
  rs.lastId = id;
  debug.events++;
  const msg = rs.msgs.get(Number(frame.headers['target-id']));
  if (!msg) return true;
  const sender = frame.headers.sender;
  switch (frame.headers.kind) {
    case 'edit':
      if (msg.deleted) return true;
      msg.body = frame.body;
      msg.edited = true;
      break;
    case 'delete':
      msg.deleted = true;
      msg.body = '';
      msg.reactions = new Map();
      if (state.editing && state.editing.room === rs.name && state.editing.id === msg.id) state.editing = null;
      break;
    case 'react':
    case 'unreact': {
      if (!sender || !frame.body) return true;
      const users = msg.reactions.get(frame.body) || new Set();
      if (frame.headers.kind === 'react') users.add(sender);
      else users.delete(sender);
      if (users.size) msg.reactions.set(frame.body, users);
      else msg.reactions.delete(frame.body);
      break;
    }
    default:
      return true; // a kind this page does not know: nothing to show
  }
  refreshMessage(rs, msg);
  return true;
}

/**
 * Draws `msg` again where it is shown, and the quotes of the replies to it. Keeps the keyboard
 * focus on the same control (a chip, a button) when it was inside the message.
 */
export function refreshMessage(rs, msg) {
  if (!isActive('room', rs.name)) return;
  redraw(msg);
  const quoting = el.list.querySelectorAll(`[data-reply-to="${CSS.escape(String(msg.id))}"]`);
  for (const quote of quoting) {
    const reply = rs.msgs.get(Number(quote.closest('li')?.dataset.id));
    if (reply) redraw(reply);
  }
}

function redraw(msg) {
  const node = el.list.querySelector(`:scope > [data-id="${CSS.escape(String(msg.id))}"]`);
  if (!node) return;
  const focused = node.contains(document.activeElement) ? document.activeElement : null;
  const key = focused && focused.dataset ? focused.dataset.key : null;
  const fresh = messageEl(msg);
  node.replaceWith(fresh);
  decorate(fresh);
  if (!focused) return;
  const again = key && [...fresh.querySelectorAll('[data-key]')].find((n) => n.dataset.key === key);
  (again || fresh).focus({ preventScroll: true });
}

/** Redraws the replies whose quoted message was just loaded (older history paged in). */
export function refreshQuotes(rs) {
  if (!isActive('room', rs.name)) return;
  for (const quote of el.list.querySelectorAll('.reply-quote[data-unloaded]')) {
    const reply = rs.msgs.get(Number(quote.closest('li')?.dataset.id));
    if (reply && rs.msgs.has(reply.replyTo)) redraw(reply);
  }
}
