// DOM rendering (all but the dialogs): messages, pending sends, lists, members, typing, composer, banner, drawers.

import { el, h } from './dom.js';
import { auth, dmState, isActive, online, roomState, state } from './state.js';

const GROUP_WINDOW = 5 * 60 * 1000; // consecutive messages of one sender within this share a header

/**
 * What the buttons drawn here do. They act through modules that render.js sits below, so main.js
 * fills these in: openConversation({kind, name}), loadOlder(roomState), retry(ref).
 */
export const actions = { openConversation: null, loadOlder: null, retry: null };

// ---- connection state, banner, who we are ------------------------------------------------------

export function setConn(conn) {
  state.conn = conn;
  el.conn.dataset.state = conn;
  el.connText.textContent = conn === 'signed-out' ? 'signed out' : conn;
  el.app.dataset.conn = conn;
  if (conn === 'reconnecting') showBanner('Connection lost. Reconnecting…');
  else if (conn === 'online') hideBanner();
  renderComposer();
}

export function showBanner(text) {
  el.banner.textContent = text;
  el.banner.hidden = false;
}

function hideBanner() {
  el.banner.hidden = true;
  el.banner.textContent = '';
}

export function renderMe() {
  el.meName.textContent = state.me || state.name || '';
  el.meGuest.hidden = auth.mode !== 'guest';
  el.changeName.hidden = auth.mode !== 'guest';
  el.newRoomPrivateLabel.hidden = auth.mode !== 'account';
  if (auth.mode !== 'account') el.newRoomPrivate.checked = false;
}

// ---- messages ----------------------------------------------------------------------------------

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

function shortTime(ts) {
  const d = new Date(ts);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay ? timeFmt.format(d) : `${dateFmt.format(d)}, ${timeFmt.format(d)}`;
}

function hue(name) {
  let x = 0;
  for (const c of name) x = (x * 31 + c.codePointAt(0)) % 360;
  return x;
}

function avatar(name) {
  const node = h('span', { class: 'avatar', 'aria-hidden': 'true' }, (name[0] || '?').toUpperCase());
  node.style.setProperty('--hue', String(hue(name)));
  return node;
}

/** The small "guest" mark next to a name that is not a registered account. */
const guestBadge = () => h('span', { class: 'guest-badge', title: 'Guest: not a registered account' }, 'guest');

export function messageEl(msg) {
  const mine = msg.from === state.me;
  const li = h('li', {
    class: mine ? 'msg mine' : 'msg',
    dataset: { id: String(msg.id), from: msg.from, ts: String(msg.ts), guest: msg.guest ? 'true' : null },
  },
  avatar(msg.from),
  h('div', { class: 'meta' },
    h('span', { class: 'from' }, msg.from),
    msg.guest ? guestBadge() : null,
    h('time', { datetime: new Date(msg.ts).toISOString(), title: fullFmt.format(new Date(msg.ts)) }, shortTime(msg.ts))),
  h('div', { class: msg.deleted ? 'body deleted' : 'body' }, msg.deleted ? '' : msg.body));
  if (msg.state) li.dataset.state = msg.state;
  if (msg.deleted) li.dataset.deleted = 'true';
  return li;
}

export function pendingEl(p) {
  const li = h('li', { class: 'msg mine pending', dataset: { ref: p.ref, state: p.state, from: state.me } },
    avatar(state.me),
    h('div', { class: 'meta' }, h('span', { class: 'from' }, state.me), auth.mode === 'guest' ? guestBadge() : null,
      h('span', { class: 'status' }, p.state === 'unconfirmed' ? 'not confirmed' : 'sending…'),
      p.state === 'unconfirmed'
        ? h('button', { type: 'button', class: 'link-btn', onclick: () => actions.retry(p.ref) }, 'Send again')
        : null),
    h('div', { class: 'body' }, p.body));
  return li;
}

/** Inserts a room message element in id order (almost always at the end). */
export function insertMessage(li, id) {
  let next = null;
  for (let node = el.list.lastElementChild; node; node = node.previousElementSibling) {
    if (Number(node.dataset.id) < id) break;
    next = node;
  }
  el.list.insertBefore(li, next);
  decorate(li);
  if (next) decorate(next);
}

/** Appends a message element at the end of the conversation (DMs). */
export function appendMessage(li) {
  el.list.append(li);
  decorate(el.list.lastElementChild);
}

/** A message continues the previous one (no header) when the sender is the same and close in time. */
export function decorate(li) {
  const prev = li.previousElementSibling;
  const cont = prev && prev.dataset.from === li.dataset.from &&
    Number(li.dataset.ts) - Number(prev.dataset.ts) < GROUP_WINDOW;
  li.classList.toggle('cont', Boolean(cont));
}

// ---- the whole page ----------------------------------------------------------------------------

export function renderAll() {
  renderTitle();
  renderRooms();
  renderDms();
  renderMessages();
  renderMembers();
  renderTyping();
  renderComposer();
}

function renderTitle() {
  const conv = state.active;
  el.title.replaceChildren();
  if (!conv) return;
  el.title.append(h('span', { class: 'sigil', 'aria-hidden': 'true' }, conv.kind === 'dm' ? '@' : '#'), conv.name);
  document.title = `${conv.kind === 'dm' ? '@' : '#'}${conv.name} · Parley`;
}

function lockIcon() {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', '13');
  svg.setAttribute('height', '13');
  svg.setAttribute('class', 'lock');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'private');
  const title = document.createElementNS('http://www.w3.org/2000/svg', 'title');
  title.textContent = 'Private: members only';
  const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
  path.setAttribute('d', 'M7 11V8a5 5 0 0 1 10 0v3M5 11h14v10H5z');
  path.setAttribute('fill', 'none');
  path.setAttribute('stroke', 'currentColor');
  path.setAttribute('stroke-width', '2');
  path.setAttribute('stroke-linejoin', 'round');
  svg.append(title, path);
  return svg;
}

function convLink(kind, name, unread, active, isPrivate = false) {
  const href = kind === 'dm' ? `#@${name}` : `#${name}`;
  return h('li', null, h('a', {
    href, class: active ? 'conv active' : 'conv', 'aria-current': active ? 'page' : null,
    dataset: { kind, name, private: isPrivate ? 'true' : null },
  }, h('span', { class: 'sigil', 'aria-hidden': 'true' }, kind === 'dm' ? '@' : '#'),
  h('span', { class: 'conv-name' }, name),
  isPrivate ? lockIcon() : null,
  unread ? h('span', { class: 'badge', 'aria-label': `${unread} unread` }, unread > 99 ? '99+' : unread) : null));
}

export function renderRooms() {
  const names = new Set(state.rooms.map((r) => r.name));
  if (state.joined) names.add(state.joined);
  const sorted = [...names].sort((a, b) => a.localeCompare(b));
  el.roomList.replaceChildren(...sorted.map((name) => {
    const rs = state.roomStates.get(name);
    const isPrivate = state.rooms.some((r) => r.name === name && r.private === true);
    return convLink('room', name, rs ? rs.unread : 0, isActive('room', name), isPrivate);
  }));
  el.moreRooms.hidden = !state.roomsNext;
}

export function renderDms() {
  const dms = [...state.dms.values()].sort((a, b) => b.last - a.last);
  el.dmList.replaceChildren(...dms.map((dm) => convLink('dm', dm.name, dm.unread, isActive('dm', dm.name))));
  el.dmHint.hidden = dms.length > 0;
}

export function renderMessages() {
  el.list.replaceChildren();
  el.pendingList.replaceChildren();
  el.jump.hidden = true;
  const conv = state.active;
  if (!conv) return;
  if (conv.kind === 'room') {
    const rs = roomState(conv.name);
    const msgs = [...rs.msgs.values()].sort((a, b) => a.id - b.id);
    el.list.append(...msgs.map(messageEl));
    for (const p of state.pending.values()) if (p.room === conv.name) el.pendingList.append(pendingEl(p));
  } else {
    el.list.append(...dmState(conv.name).msgs.map(messageEl));
  }
  for (const li of el.list.children) decorate(li);
  renderHistoryStatus();
}

export function renderHistoryStatus() {
  const conv = state.active;
  const box = el.historyStatus;
  box.replaceChildren();
  if (!conv) return;
  if (conv.kind === 'dm') {
    box.append(h('p', null, `Your conversation with ${conv.name}. Direct messages are not kept: they are gone when you leave the page.`));
    return;
  }
  const rs = roomState(conv.name);
  if (!rs.loaded) box.append(h('p', null, 'Loading messages…'));
  else if (rs.atStart) box.append(h('p', null, rs.msgs.size ? `This is the beginning of #${rs.name}.` : `No messages in #${rs.name} yet. Say hello!`));
  else if (rs.loadingOlder) box.append(h('p', null, 'Loading older messages…'));
  else box.append(h('button', { type: 'button', class: 'link-btn', onclick: () => actions.loadOlder(rs) }, 'Load older messages'));
  box.dataset.state = !rs.loaded ? 'loading' : rs.atStart ? 'start' : rs.loadingOlder ? 'loading-older' : 'more';
}

export function renderMembers() {
  const rs = state.joined ? roomState(state.joined) : null;
  const members = rs ? [...rs.members].sort((a, b) => a.localeCompare(b)) : [];
  el.membersCount.textContent = String(members.length);
  el.membersTitle.textContent = rs ? `Here in #${rs.name}` : 'Here now';
  if (!members.length) {
    el.memberList.replaceChildren(h('li', { class: 'member empty' }, online() ? 'Nobody here.' : 'Not connected.'));
    return;
  }
  el.memberList.replaceChildren(...members.map((name) => {
    const me = name === state.me;
    return h('li', { class: 'member', dataset: { name } },
      avatar(name),
      h('span', { class: 'member-name' }, name),
      (me ? auth.mode === 'guest' : state.guests.has(name)) ? guestBadge() : null,
      me ? h('span', { class: 'you' }, 'you')
        : h('button', {
          type: 'button', class: 'dm-btn', 'aria-label': `Message ${name}`,
          onclick: () => actions.openConversation({ kind: 'dm', name }),
        }, 'Message'));
  }));
}

export function renderTyping() {
  const conv = state.active;
  const rs = conv && conv.kind === 'room' ? state.roomStates.get(conv.name) : null;
  const users = rs ? [...rs.typing.keys()].sort() : [];
  let text = '';
  if (users.length === 1) text = `${users[0]} is typing…`;
  else if (users.length === 2) text = `${users[0]} and ${users[1]} are typing…`;
  else if (users.length > 2) text = 'Several people are typing…';
  el.typing.textContent = text;
}

function renderComposer() {
  const conv = state.active;
  el.input.placeholder = !conv ? 'Message' : conv.kind === 'dm' ? `Message @${conv.name}` : `Message #${conv.name}`;
  el.send.disabled = !online() || !conv;
  el.composer.dataset.offline = String(!online());
}

// ---- scrolling and the composer's height -------------------------------------------------------

export function nearBottom() {
  const box = el.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

export function scrollToBottom() {
  el.messages.scrollTop = el.messages.scrollHeight;
  el.jump.hidden = true;
}

export function autosize() {
  el.input.style.height = 'auto';
  el.input.style.height = `${Math.min(el.input.scrollHeight, 160)}px`;
}

// ---- drawers (narrow screens) ------------------------------------------------------------------

export function toggleDrawer(drawer, button, open) {
  closeDrawers();
  if (!open) return;
  drawer.classList.add('open');
  button.setAttribute('aria-expanded', 'true');
  el.scrim.hidden = false;
}

export function closeDrawers() {
  for (const [drawer, button] of [[el.sidebar, el.roomsToggle], [el.members, el.membersToggle]]) {
    drawer.classList.remove('open');
    button.setAttribute('aria-expanded', 'false');
  }
  el.scrim.hidden = true;
}
