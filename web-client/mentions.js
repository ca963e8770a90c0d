// The composer's @-autocomplete: `@` + a prefix offers the open room's members (arrows, Enter/Tab to pick, Esc to close).

import { el, h } from './dom.js';
import { naturalOrder } from './render.js';
import { state } from './state.js';

const MAX_SHOWN = 8; // suggestions listed at once

/** The open suggestion list: names, the highlighted one, and the `@prefix` it replaces. */
const ac = { items: [], index: 0, start: 0, end: 0 };

/** After each edit (and caret move): the `@prefix` just before the caret, or none. */
export function updateMentions() {
  const q = query();
  const items = q ? candidates(q.prefix) : [];
  if (!items.length) {
    closeMentions();
    return;
  }
  const keep = ac.items[ac.index];
  ac.items = items;
  ac.index = Math.max(items.indexOf(keep), 0);
  ac.start = q.start;
  ac.end = q.end;
  renderList();
}

export function closeMentions() {
  ac.items = [];
  el.mentionList.hidden = true;
  el.mentionList.replaceChildren();
  el.input.setAttribute('aria-expanded', 'false');
  el.input.removeAttribute('aria-activedescendant');
}

/** The composer's keydown while suggestions are open; true when the key was theirs. */
export function mentionKey(e) {
  if (!ac.items.length || e.isComposing) return false;
  const n = ac.items.length;
  if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
    ac.index = (ac.index + (e.key === 'ArrowDown' ? 1 : n - 1)) % n;
    renderList();
  } else if ((e.key === 'Enter' && !e.shiftKey) || (e.key === 'Tab' && !e.shiftKey)) {
    pick(ac.index);
  } else if (e.key === 'Escape') {
    e.stopPropagation();
    closeMentions();
  } else {
    return false;
  }
  e.preventDefault();
  return true;
}

function query() {
  const input = el.input;
  if (input.selectionStart !== input.selectionEnd) return null;
  const caret = input.selectionStart;
  const m = /(?:^|[^\w.@/-])@([A-Za-z0-9_.-]{0,32})$/.exec(input.value.slice(0, caret));
  return m ? { prefix: m[1], start: caret - m[1].length - 1, end: caret } : null;
}

/** Who may be mentioned here: the room's members and whoever wrote what we hold (not us). */
function candidates(prefix) {
  const conv = state.active;
  const rs = conv && conv.kind === 'room' ? state.roomStates.get(conv.name) : null;
  const names = new Set(conv && conv.kind === 'dm' ? [conv.name] : []);
  if (rs) {
    for (const name of rs.members) names.add(name);
    for (const msg of rs.msgs.values()) names.add(msg.from);
  }
  names.delete(state.me);
  const lower = prefix.toLowerCase();
  return [...names].filter((n) => n.toLowerCase().startsWith(lower)).sort(naturalOrder).slice(0, MAX_SHOWN);
}

function renderList() {
  el.mentionList.replaceChildren(...ac.items.map((name, i) => h('li', {
    id: `mention-${i}`, role: 'option', class: i === ac.index ? 'active' : null,
    'aria-selected': String(i === ac.index), dataset: { name },
    onmousedown: (e) => {
      e.preventDefault(); // keep the focus in the composer
      pick(i);
    },
  }, h('span', { class: 'sigil', 'aria-hidden': 'true' }, '@'), name)));
  el.mentionList.hidden = false;
  el.input.setAttribute('aria-expanded', 'true');
  el.input.setAttribute('aria-activedescendant', `mention-${ac.index}`);
}

/** Replaces the `@prefix` with the picked name and a space. */
function pick(i) {
  const name = ac.items[i];
  if (!name) return;
  const input = el.input;
  const text = `@${name} `;
  input.value = input.value.slice(0, ac.start) + text + input.value.slice(ac.end);
  const caret = ac.start + text.length;
  input.setSelectionRange(caret, caret);
  closeMentions();
  input.dispatchEvent(new Event('input', { bubbles: true }));
}
