// Which conversation is open: the URL hash (#room, #@user), the last room, switching between rooms and DMs.

import { openDm } from './dms.js';
import { el } from './dom.js';
import { closeDrawers, renderAll, scrollToBottom, showBanner } from './render.js';
import { mayOpen } from './people.js';
import { createRoom, joinRoom, roomNameProblem } from './rooms.js';
import { NAME_RE, state } from './state.js';
import { conversationOpened } from './unread.js';

const ROOM_KEY = 'parley.room';

/** The conversation the URL hash names, or null. */
export function parseHash() {
  let raw;
  try {
    raw = decodeURIComponent(location.hash.slice(1));
  } catch {
    return null; // not even valid percent-encoding
  }
  if (raw.startsWith('@') && NAME_RE.test(raw.slice(1))) return { kind: 'dm', name: raw.slice(1) };
  if (!roomNameProblem(raw)) return { kind: 'room', name: raw };
  return null;
}

/** Where to go once connected: the hash, else the last room, else #general (or the first room). */
export function initialConversation() {
  const fromHash = parseHash();
  if (fromHash && !(fromHash.kind === 'room' && state.refused.has(fromHash.name))) return fromHash;
  const names = state.rooms.map((r) => r.name).filter((n) => !state.refused.has(n));
  const last = localStorage.getItem(ROOM_KEY);
  const name = names.includes(last) ? last : names.includes('general') ? 'general' : names[0] || 'general';
  return { kind: 'room', name };
}

/** Signing out: no conversation open, none remembered, none in the address. */
export function forgetPlace() {
  state.active = null;
  localStorage.removeItem(ROOM_KEY);
  if (location.hash) history.replaceState(null, '', location.pathname + location.search);
}

export async function openConversation(conv) {
  const client = state.client;
  if (!conv || !client) return;
  if (conv.kind === 'dm' && conv.name === state.me) return;
  if (conv.kind === 'room') {
    state.refused.delete(conv.name); // asked for explicitly: try again
    if (!state.rooms.some((r) => r.name === conv.name)) {
      // A private room we are not in: say so instead of joining and being thrown out.
      const allowed = await mayOpen(conv.name);
      if (client !== state.client) return; // signed out (or renamed) meanwhile
      if (!allowed) {
        state.refused.add(conv.name);
        return;
      }
      // Make it visible in everyone's list; a room we may not create is not joined.
      const problem = await createRoom(conv.name);
      if (client !== state.client) return;
      if (problem) {
        state.refused.add(conv.name);
        showBanner(problem);
        return;
      }
    }
    localStorage.setItem(ROOM_KEY, conv.name);
  }
  state.active = conv;
  conversationOpened(conv);
  const hash = conv.kind === 'dm' ? `#@${conv.name}` : `#${conv.name}`;
  if (location.hash !== hash) history.replaceState(null, '', hash);
  closeDrawers();
  renderAll();
  scrollToBottom();
  if (conv.kind === 'room') joinRoom(conv.name);
  else openDm(conv.name);
  if (matchMedia('(pointer: fine)').matches) el.input.focus();
}
