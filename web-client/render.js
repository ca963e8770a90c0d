// DOM rendering (all but the dialogs): messages, pending sends, lists, members, typing, composer, banner, drawers.

import { el, h } from './dom.js';
import { formatBody } from './format.js';
import { addParts, renderReplyBar } from './msgparts.js';
import { auth, canCompose, dmState, info, isActive, online, roomState, state } from './state.js';
import { renderTokensButton } from './tokens.js';

const GROUP_WINDOW = 5 * 60 * 1000; // consecutive messages of one sender within this share a header

/** Names in natural order: `churn-2` before `churn-10`, case-insensitive. */
export const naturalOrder = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' }).compare;

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
  if (conn !== 'online') setTransport(''); // it names the connection we are on, if any
  el.app.dataset.conn = conn;
  if (conn === 'reconnecting') showBanner('Connection lost. Reconnecting…');
  else if (conn === 'online') hideBanner();
  renderComposer();
}

/** Shows what the connection runs over ("WebSocket", "SockJS xhr-streaming") next to its state. */
export function setTransport(label) {
  el.connTransport.textContent = label;
  el.conn.title = label ? `Connected over ${label}` : '';
}

export function showBanner(text) {
  el.banner.textContent = text;
  el.banner.hidden = false;
}

export function hideBanner() {
  el.banner.hidden = true;
  el.banner.textContent = '';
}

export function renderMe() {
  renderTokensButton();
  el.meName.textContent = state.me || state.name || '';
  el.meGuest.hidden = auth.mode !== 'guest';
  el.changeName.hidden = auth.mode !== 'guest';
  el.newRoomPrivateLabel.hidden = auth.mode !== 'account';
  // Linking other sites' accounts: for accounts, on a server that accepts some.
  el.identitiesBox.hidden = auth.mode !== 'account' || info.providers.length === 0;
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

/** A message body as formatted nodes (format.js): links, emphasis, code, quotes, mentions. */
function bodyEl(text, deleted = false) {
  return h('div', { class: deleted ? 'body deleted' : 'body' },
    deleted ? h('em', { class: 'placeholder' }, 'message deleted') : formatBody(text, state.me));
}

export function messageEl(msg) {
  const mine = msg.from === state.me;
  const body = bodyEl(msg.body, msg.deleted);
  const mentioned = !mine && Boolean(body.querySelector('.mention.me'));
  const li = h('li', {
    class: `msg${mine ? ' mine' : ''}${mentioned ? ' mentions-me' : ''}`,
    dataset: { id: String(msg.id), from: msg.from, ts: String(msg.ts), guest: msg.guest ? 'true' : null },
  },
  avatar(msg.from),
  h('div', { class: 'meta' },
    h('span', { class: 'from' }, msg.from),
    msg.guest ? guestBadge() : null,
    h('time', { datetime: new Date(msg.ts).toISOString(), title: fullFmt.format(new Date(msg.ts)) }, shortTime(msg.ts))),
  body);
  if (msg.state) li.dataset.state = msg.state;
  if (msg.deleted) li.dataset.deleted = 'true';
  addParts(li, msg); // a room message's reply quote, reactions, "(edited)", actions
  return li;
}

const PENDING_STATUS = { queued: 'waiting for the connection', sending: 'sending…', unconfirmed: 'not confirmed' };

export function pendingEl(p) {
  const li = h('li', { class: 'msg mine pending', dataset: { ref: p.ref, state: p.state, from: state.me } },
    avatar(state.me),
    h('div', { class: 'meta' }, h('span', { class: 'from' }, state.me), auth.mode === 'guest' ? guestBadge() : null,
      h('span', { class: 'status' }, PENDING_STATUS[p.state] || 'sending…'),
      p.state === 'unconfirmed' && online()
        ? h('button', { type: 'button', class: 'link-btn', onclick: () => actions.retry(p.ref) }, 'Send again')
        : null),
    bodyEl(p.body));
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

/**
 * A message continues the previous one (no header) when the sender is the same and close in time
 * on the same day; the first message of a local day (in the list as it is now: older history
 * paged in above re-decorates the message below it) carries a date separator.
 */
export function decorate(li) {
  const prev = li.previousElementSibling;
  const ts = Number(li.dataset.ts);
  const day = dayKey(ts);
  const newDay = !prev || dayKey(Number(prev.dataset.ts)) !== day;
  const cont = !newDay && prev.dataset.from === li.dataset.from && ts - Number(prev.dataset.ts) < GROUP_WINDOW;
  li.classList.toggle('cont', cont);
  li.classList.toggle('new-day', newDay);
  const sep = li.querySelector(':scope > .day-sep');
  if (!newDay) {
    sep?.remove();
    return;
  }
  const label = dayLabel(ts);
  if (sep && sep.dataset.day === day && sep.textContent === label) return;
  const fresh = h('div', { class: 'day-sep', role: 'separator', dataset: { day } }, label);
  if (sep) sep.replaceWith(fresh);
  else li.prepend(fresh);
}

const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });
const yearDayFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'long' });

/** The local day of `ts` as YYYY-MM-DD. */
export function dayKey(ts) {
  const d = new Date(ts);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}

/** "Today", "Yesterday", else the date (with the year when it is not this year's). */
export function dayLabel(ts, now = Date.now()) {
  const day = dayKey(ts);
  const today = new Date(now);
  if (day === dayKey(now)) return 'Today';
  if (day === dayKey(new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1).getTime())) return 'Yesterday';
  const d = new Date(ts);
  return d.getFullYear() === today.getFullYear() ? dayFmt.format(d) : yearDayFmt.format(d);
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

/** The conversation's title, and the tab's with the unread total first: "(3) #general · Parley". */
export function renderTitle() {
  const conv = state.active;
  el.title.replaceChildren();
  const total = unreadTotal();
  const count = total ? `(${total > 999 ? '999+' : total}) ` : '';
  if (!conv) {
    document.title = `${count}Parley`;
    return;
  }
  el.title.append(h('span', { class: 'sigil', 'aria-hidden': 'true' }, conv.kind === 'dm' ? '@' : '#'), conv.name);
  document.title = `${count}${conv.kind === 'dm' ? '@' : '#'}${conv.name} · Parley`;
}

/** A room read before (or opened here) counts in the tab title; one never read shows a quiet badge only. */
const visitedRoom = (rs) => rs.lastRead > 0 || rs.visited === true;

/** Unread messages in DMs and in the rooms read before (unread.js keeps the counts). */
function unreadTotal() {
  let total = 0;
  for (const rs of state.roomStates.values()) if (visitedRoom(rs)) total += rs.unread || 0;
  for (const dm of state.dms.values()) total += dm.unread || 0;
  return total;
}

/** What a list entry's badge shows: {n, m (mentions), quiet}, or null. */
function badgeOf(conv, quiet = false) {
  return conv && conv.unread ? { n: conv.unread, m: conv.mentions || 0, quiet } : null;
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
    href, class: `conv${active ? ' active' : ''}${unread && !unread.quiet ? ' has-unread' : ''}`,
    'aria-current': active ? 'page' : null,
    dataset: { kind, name, private: isPrivate ? 'true' : null },
  }, h('span', { class: 'sigil', 'aria-hidden': 'true' }, kind === 'dm' ? '@' : '#'),
  h('span', { class: 'conv-name' }, name),
  isPrivate ? lockIcon() : null,
  unread ? countBadge(unread) : null));
}

function countBadge({ n, m, quiet }) {
  const text = n > 999 ? '999+' : String(n);
  return h('span', {
    class: `badge${m ? ' mention' : quiet ? ' quiet' : ''}`,
    'aria-label': m ? `${text} unread, ${m > 999 ? '999+' : m} mentioning you` : `${text} unread`,
    dataset: { mentions: m ? String(m) : null },
  }, text);
}

export function renderRooms() {
  const names = new Set(state.rooms.map((r) => r.name));
  if (state.joined) names.add(state.joined);
  const rows = [...names].sort(naturalOrder).map((name) => {
    const rs = state.roomStates.get(name);
    const isPrivate = state.rooms.some((r) => r.name === name && r.private === true);
    return [name, badgeOf(rs, rs && !visitedRoom(rs)), isActive('room', name), isPrivate];
  });
  replaceList(el.roomList, rows, (row) => convLink('room', ...row));
  el.moreRooms.hidden = !state.roomsNext;
}

export function renderDms() {
  const rows = [...state.dms.values()].sort((a, b) => b.last - a.last)
    .map((dm) => [dm.name, badgeOf(dm), isActive('dm', dm.name)]);
  replaceList(el.dmList, rows, (row) => convLink('dm', ...row));
  el.dmHint.hidden = rows.length > 0;
}

/**
 * Draws a conversation list again only when what it shows changed, and keeps the keyboard focus
 * on the link that had it (a refresh must never pull focus away from someone moving through it).
 */
function replaceList(list, rows, draw) {
  const shown = JSON.stringify(rows);
  if (list.dataset.shown === shown) return;
  list.dataset.shown = shown;
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.name : null;
  list.replaceChildren(...rows.map(draw));
  if (focused == null) return;
  const again = [...list.querySelectorAll('a.conv')].find((a) => a.dataset.name === focused);
  again?.focus({ preventScroll: true });
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
  const dm = conv.kind === 'dm';
  const rs = dm ? dmState(conv.name) : roomState(conv.name);
  const where = dm ? `your conversation with ${conv.name}` : `#${rs.name}`;
  const held = dm ? rs.msgs.length : rs.msgs.size;
  if (dm && rs.stored === false) {
    box.append(h('p', null, auth.mode === 'account'
      ? `${conv.name} has no account here: a message reaches them only while they are online as a guest, and is not kept.`
      : `Your conversation with ${conv.name}. Direct messages of guests are not kept: they reach whoever is online and are gone when you leave the page.`));
    box.dataset.state = 'live';
    return;
  }
  if (!rs.loaded) box.append(h('p', null, 'Loading messages…'));
  else if (rs.atStart) box.append(h('p', null, held ? `This is the beginning of ${where}.` : dm ? `No messages with ${conv.name} yet. Say hello!` : `No messages in #${rs.name} yet. Say hello!`));
  else if (rs.loadingOlder) box.append(h('p', null, 'Loading older messages…'));
  else box.append(h('button', { type: 'button', class: 'link-btn', onclick: () => actions.loadOlder(rs) }, 'Load older messages'));
  box.dataset.state = !rs.loaded ? 'loading' : rs.atStart ? 'start' : rs.loadingOlder ? 'loading-older' : 'more';
}

export function renderMembers() {
  const rs = state.joined ? roomState(state.joined) : null;
  const members = rs ? [...rs.members].sort(naturalOrder) : [];
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
      h('span', { class: 'member-name', title: name }, name),
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

export function renderComposer() {
  const conv = state.active;
  el.input.placeholder = !conv ? 'Message' : conv.kind === 'dm' ? `Message @${conv.name}` : `Message #${conv.name}`;
  const over = tooLong();
  el.send.disabled = !canCompose() || !conv || Boolean(over); // offline: into the outbox
  renderReplyBar();
  el.composer.dataset.offline = String(!online());
  el.composer.dataset.tooLong = String(Boolean(over));
  el.input.setAttribute('aria-invalid', String(Boolean(over)));
  el.tooLong.textContent = over
    ? `Too long to send: ${size(over.bytes)} of at most ${size(over.max)}. Shorten it or split it in parts.`
    : '';
  el.tooLong.hidden = !over;
}

/** {bytes, max} when the composer holds more than the server takes (in UTF-8 bytes), else null. */
export function tooLong() {
  const text = el.input.value;
  const max = state.active && state.active.kind === 'dm' ? info.maxDmBody : info.maxBody;
  if (text.length <= max / 3) return null; // at most 3 bytes per UTF-16 unit: surely fits
  const bytes = new TextEncoder().encode(text).length;
  return bytes > max ? { bytes, max } : null;
}

const size = (bytes) => `${bytes.toLocaleString('en')} bytes`;

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
