// What a room message shows besides its text: the reply quote, "(edited)", reaction chips, its action bar, the in-place editor; and the reply bar above the composer.
//
// render.js builds a message's element and calls addParts on it; the buttons drawn here act
// through `partActions` (edits.js fills them in), so this module sits below edits.js and
// render.js alike. User text reaches the DOM only as text.

import { el, h } from './dom.js';
import { auth, info, isActive, roomState, state } from './state.js';

/** The reactions the picker offers. */
export const EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢'];

const QUOTE_CHARS = 90; // at most this much of the quoted message's first line

/**
 * What the buttons drawn here do: reply(msg), react(msg, emoji), startEdit(msg),
 * saveEdit(msg, text), cancelEdit(), remove(msg), showQuoted(room, id), cancelReply().
 */
export const partActions = {
  reply: null, react: null, startEdit: null, saveEdit: null, cancelEdit: null, remove: null,
  showQuoted: null, cancelReply: null,
};

/** Whether we wrote `msg` (a guest and an account of one name are two people). */
export const isMine = (msg) => msg.from === state.me && Boolean(msg.guest) === (auth.mode === 'guest');

/**
 * Whether we may edit or delete `msg`: our own, within the server's edit window. Room admins
 * may delete any message, but the page cannot learn its role cheaply, so it offers deletion of
 * one's own messages only (a refused change would be a needless error).
 */
export function mayChange(msg) {
  if (!isMine(msg) || msg.deleted) return false;
  return info.editWindowS === 0 || Date.now() - msg.ts <= info.editWindowS * 1000;
}

/** The first line of a message, shortened, for quotes. */
export function firstLine(msg) {
  if (msg.deleted) return 'message deleted';
  const line = msg.body.split('\n').find((l) => l.trim()) || '';
  return line.length > QUOTE_CHARS ? `${line.slice(0, QUOTE_CHARS - 1)}…` : line;
}

/** Adds the extras of a room message (`msg.room` set) to `li`, its element from render.js. */
export function addParts(li, msg) {
  if (!msg.room) return;
  // A tap focuses it, which shows its actions on touch screens. Its buttons are out of the tab
  // order until it has the focus (edits.js: the list is one tab stop, arrows move between messages).
  li.tabIndex = -1;
  const body = li.querySelector(':scope > .body');
  if (msg.replyTo) body.before(quoteEl(msg));
  if (msg.deleted) return;
  const editing = state.editing && state.editing.room === msg.room && state.editing.id === msg.id;
  if (editing) {
    body.hidden = true;
    body.after(editorEl(msg));
  }
  const chips = reactionChips(msg);
  if (chips.length || msg.edited) {
    li.append(h('div', { class: 'msg-foot' },
      chips.length ? h('div', { class: 'reactions', role: 'group', 'aria-label': 'Reactions' }, chips) : null,
      msg.edited ? h('span', { class: 'edited', title: 'This message was edited' }, '(edited)') : null));
  }
  if (!editing) li.append(actionsEl(msg));
}

/** "↪ alice: first line" above a reply; a click shows the original when it is loaded. */
function quoteEl(msg) {
  const original = roomState(msg.room).msgs.get(msg.replyTo);
  const label = original ? `Reply to ${original.from}: ${firstLine(original)}` : 'Reply to a message';
  return h('button', {
    type: 'button', class: 'reply-quote', tabindex: '-1', title: original ? 'Show the original message' : 'The original is not loaded',
    'aria-label': label, dataset: { replyTo: String(msg.replyTo), key: 'quote', unloaded: original ? null : 'true' },
    onclick: () => partActions.showQuoted(msg.room, msg.replyTo),
  },
  h('span', { class: 'quote-mark', 'aria-hidden': 'true' }, '↪'),
  original ? [h('span', { class: 'quote-from' }, original.from), h('span', { class: 'quote-text' }, firstLine(original))]
    : h('span', { class: 'quote-text' }, 'reply to a message'));
}

function reactionChips(msg) {
  const chips = [];
  for (const [emoji, users] of msg.reactions || []) {
    if (!users.size) continue;
    const mine = users.has(state.me);
    const names = [...users].sort();
    chips.push(h('button', {
      type: 'button', class: mine ? 'chip mine' : 'chip', tabindex: '-1', 'aria-pressed': String(mine),
      title: `${names.join(', ')} reacted with ${emoji}`,
      'aria-label': `${emoji} ${users.size}: ${names.join(', ')}${mine ? ' (you; click to take back)' : ''}`,
      dataset: { emoji, count: String(users.size), key: `chip:${emoji}` },
      onclick: () => partActions.react(msg, emoji),
    }, h('span', { class: 'chip-emoji' }, emoji), h('span', { class: 'chip-count' }, String(users.size))));
  }
  return chips;
}

/** Reply, react, and (our own, in time) edit and delete: shown on hover or keyboard focus. */
function actionsEl(msg) {
  const button = (cls, label, text, onclick) => h('button', {
    type: 'button', class: `act ${cls}`, tabindex: '-1', title: label, 'aria-label': label, dataset: { key: cls }, onclick,
  }, text);
  const bar = h('div', { class: 'msg-actions', role: 'toolbar', 'aria-label': `Actions on ${msg.from}'s message` },
    button('act-reply', 'Reply', '↩', () => partActions.reply(msg)),
    button('act-react', 'Add a reaction', '☺+', (e) => togglePicker(bar, msg, e.currentTarget)));
  if (mayChange(msg)) {
    bar.append(button('act-edit', 'Edit', '✎', () => partActions.startEdit(msg)));
    const del = button('act-delete', 'Delete', '⌫', () => {
      // Two steps, in the page (a native confirm() would block it): arm, then delete.
      if (del.dataset.armed === 'true') {
        partActions.remove(msg);
        return;
      }
      del.dataset.armed = 'true';
      del.textContent = 'Delete?';
      del.setAttribute('aria-label', 'Really delete this message?');
    });
    del.addEventListener('blur', () => {
      delete del.dataset.armed;
      del.textContent = '⌫';
      del.setAttribute('aria-label', 'Delete');
    });
    bar.append(del);
  }
  return bar;
}

/** The emoji picker of one message, under its action bar; Esc closes it. */
function togglePicker(bar, msg, opener) {
  const open = bar.querySelector('.picker');
  if (open) {
    open.remove();
    opener.setAttribute('aria-expanded', 'false');
    return;
  }
  const close = () => {
    picker.remove();
    opener.setAttribute('aria-expanded', 'false');
    opener.focus();
  };
  const picker = h('div', { class: 'picker', role: 'group', 'aria-label': 'Pick a reaction' },
    EMOJI.map((emoji) => h('button', {
      type: 'button', class: 'pick', 'aria-label': `React with ${emoji}`, dataset: { emoji },
      onclick: () => {
        close();
        partActions.react(msg, emoji);
      },
    }, emoji)));
  picker.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    e.stopPropagation();
    close();
  });
  bar.append(picker);
  opener.setAttribute('aria-expanded', 'true');
  picker.querySelector('button').focus();
}

/** The in-place editor: Enter saves, Shift+Enter a new line, Esc cancels. */
function editorEl(msg) {
  const input = h('textarea', { class: 'edit-input', rows: '2', 'aria-label': 'Edit your message', dataset: { key: 'edit-input' } });
  input.value = state.editing.draft;
  input.addEventListener('input', () => {
    if (state.editing) state.editing.draft = input.value;
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      partActions.saveEdit(msg, input.value);
    } else if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      partActions.cancelEdit();
    }
  });
  return h('form', {
    class: 'edit-form',
    onsubmit: (e) => {
      e.preventDefault();
      partActions.saveEdit(msg, input.value);
    },
  }, input, h('div', { class: 'edit-buttons' },
    h('span', { class: 'hint' }, 'Enter to save, Esc to cancel'),
    h('button', { type: 'button', class: 'link-btn', onclick: () => partActions.cancelEdit() }, 'Cancel'),
    h('button', { type: 'submit', class: 'save-edit' }, 'Save')));
}

// ---- the reply bar ------------------------------------------------------------------------------

let bar = null;

/** "Replying to alice: …" above the composer while a reply target is set in the open room. */
export function renderReplyBar() {
  const target = state.replyTo;
  const shown = target && isActive('room', target.room) ? roomState(target.room).msgs.get(target.id) : null;
  if (!shown) {
    if (bar) bar.hidden = true;
    return;
  }
  if (!bar) {
    bar = h('div', { class: 'reply-bar', id: 'reply-bar', role: 'status' });
    el.composer.before(bar);
  }
  bar.replaceChildren(
    h('span', { class: 'reply-bar-text' }, 'Replying to ', h('strong', null, shown.from), `: ${firstLine(shown)}`),
    h('button', {
      type: 'button', class: 'icon-btn reply-cancel', 'aria-label': 'Cancel the reply (Esc)', title: 'Cancel the reply (Esc)',
      onclick: () => partActions.cancelReply(),
    }, '×'));
  bar.hidden = false;
}
