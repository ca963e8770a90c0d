// Rooms: the name rule (from /api/info), the list, creating, joining (history, then `since`), members, typing, paging.

import { fetchMessages, listMembers, listRooms, postRoom } from './api.js';
import { el } from './dom.js';
import { applyEvent, refreshQuotes } from './events.js';
import { notifyMessage } from './notify.js';
import { flush, resolvePending } from './outbox.js';
import {
  insertMessage, messageEl, nearBottom, renderHistoryStatus, renderMembers, renderMessages, renderRooms,
  renderTyping, scrollToBottom, showBanner,
} from './render.js';
import { auth, debug, info, isActive, online, roomState, signedIn, state } from './state.js';
import { applyRoomCounts, noteMessage } from './unread.js';

const PAGE = 50; // messages per history page
const TYPING_SHOW_FOR = 3000; // ms a typing notice is shown

// ---- the name rule -----------------------------------------------------------------------------

/**
 * Takes the room-name rule from GET /api/info's `rooms` ({pattern, max_length, rule}), and
 * whether guests may create rooms (`guests_create`). Without
 * one (or with one this browser cannot use) `info.rooms` stays null and names are not checked here.
 */
export function learnRoomRule(rooms) {
  info.rooms = roomRule(rooms);
  info.guestsCreateRooms = Boolean(rooms && rooms.guests_create === true);
  const max = rooms && rooms.max_length;
  if (info.rooms && Number.isSafeInteger(max) && max > 0) el.newRoom.maxLength = max;
}

function roomRule(rooms) {
  if (!rooms || typeof rooms.pattern !== 'string') return null;
  let pattern;
  try {
    pattern = new RegExp(rooms.pattern, 'u');
  } catch {
    return null;
  }
  const words = typeof rooms.rule === 'string' ? rooms.rule.trim() : '';
  if (!words) return { pattern, rule: 'That is not a valid room name.' };
  const sentence = words[0].toUpperCase() + words.slice(1);
  return { pattern, rule: /[.!?]$/.test(sentence) ? sentence : `${sentence}.` };
}

/**
 * What is wrong with `name` as a room name by the server's rule, or null. Without a rule (GET
 * /api/info failed) only an empty name is refused here: the server refuses bad ones itself.
 */
export function roomNameProblem(name) {
  if (info.rooms) return info.rooms.pattern.test(name) ? null : info.rooms.rule;
  return name ? null : 'Enter a room name.';
}

// ---- the room list -----------------------------------------------------------------------------

let roomsSeq = 0; // bumped by every refresh: an answer to an older one is dropped

/**
 * Loads the room list again from its first page, as many pages as were shown (at least one),
 * under the current filter. Not when signed out: a timer or an answer that outlived the session
 * (signing out bumps `roomsSeq`) asks nothing more.
 */
export async function refreshRooms() {
  if (!signedIn()) return;
  const seq = ++roomsSeq;
  const want = Math.max(state.rooms.length, 1);
  let rooms = [];
  let after = null;
  try {
    do {
      const page = await listRooms({ prefix: state.roomFilter, after });
      if (!page || seq !== roomsSeq) return;
      rooms = rooms.concat(page.rooms);
      after = page.next;
    } while (after && rooms.length < want);
  } catch {
    return; /* offline: the next connect refreshes */
  }
  state.rooms = rooms;
  state.roomsNext = after;
  applyRoomCounts(rooms);
  renderRooms();
}

/** Forgets the list (signing out); an answer still on its way is dropped. */
export function resetRooms() {
  roomsSeq++;
  state.rooms = [];
  state.roomsNext = null;
  state.roomFilter = '';
}

/** The next page of the room list ("More rooms"). */
export async function loadMoreRooms() {
  if (!state.roomsNext || !signedIn()) return;
  const seq = roomsSeq;
  let page = null;
  try {
    page = await listRooms({ prefix: state.roomFilter, after: state.roomsNext });
  } catch {
    /* offline: the button stays */
  }
  if (!page || seq !== roomsSeq) return;
  const known = new Set(state.rooms.map((r) => r.name));
  state.rooms = state.rooms.concat(page.rooms.filter((r) => !known.has(r.name)));
  state.roomsNext = page.next;
  applyRoomCounts(page.rooms);
  renderRooms();
}

/** Lists only the rooms whose name starts with `prefix` (the filter box). */
export function filterRooms(prefix) {
  const clean = prefix.trim().replace(/^#/, '');
  if (clean === state.roomFilter) return;
  state.roomFilter = clean;
  state.rooms = [];
  state.roomsNext = null;
  refreshRooms();
}

/** Does room `name` exist (for us to see)? The list may not hold every page: ask the server. */
async function roomExists(name) {
  if (state.rooms.some((r) => r.name === name)) return true;
  const page = await listRooms({ prefix: name, limit: 1 });
  return Boolean(page && page.rooms.some((r) => r.name === name));
}

/**
 * Creates a room and returns an error message or null. A public room that exists already is
 * fine (we join it); a private one must be new. Guests create no rooms unless the server says
 * they may (GET /api/info): for them a public room must exist.
 */
export async function createRoom(name, { isPrivate = false } = {}) {
  const problem = roomNameProblem(name);
  if (problem) return problem;
  const known = state.rooms.find((r) => r.name === name);
  if (known) return isPrivate ? `#${name} exists already.` : null;
  if (auth.mode !== 'account') {
    if (isPrivate) return 'Guests cannot create private rooms: sign in first.';
    try {
      if (info.guestsCreateRooms || (await roomExists(name))) return null;
    } catch {
      return 'Could not reach the server.';
    }
    return `There is no room #${name}, and guests cannot create rooms: sign in first.`;
  }
  try {
    const { status, body } = await postRoom(name, isPrivate);
    if (status === 201 || (status === 409 && !isPrivate)) {
      await refreshRooms();
      return null;
    }
    if (status === 409) return `#${name} exists already.`;
    if (status === 401) return 'Your session has ended: sign in again to create rooms.';
    if (status === 403) return (body && body.error) || 'You may not create rooms.';
    return (body && body.error) || `Could not create the room (HTTP ${status}).`;
  } catch {
    return 'Could not reach the server.';
  }
}

// ---- joining and leaving -----------------------------------------------------------------------

/**
 * Subscribes to `name` (leaving the room we were in): history first if we have none, then the
 * room with `since` = the last id we have, so the server sends what we missed before live ones.
 */
export async function joinRoom(name, { force = false } = {}) {
  if (state.joined === name && !force) return;
  if (state.joined && state.joined !== name) leaveRoom();
  state.joined = name;
  const rs = roomState(name);
  if (!online()) return; // onConnected joins again
  const epoch = ++state.epoch;
  const stale = () => epoch !== state.epoch || !online();
  if (!rs.loaded && !(await loadLatest(rs, stale))) return;
  const presence = subscribeRoom(rs);
  flush(rs.name); // after the SUBSCRIBE: what catch-up shows to have arrived resolves first
  rs.members.add(state.me);
  renderMembers();
  await loadMembers(rs, presence, stale);
}

/** The latest page of a room's history, before subscribing; false if the join went stale meanwhile. */
async function loadLatest(rs, stale) {
  renderHistoryStatus();
  try {
    addRoomMessages(rs, await fetchMessages(rs.name, null, PAGE), { history: true });
    rs.loaded = true;
    if (rs.msgs.size < PAGE) rs.atStart = true;
  } catch {
    if (stale()) return false;
    showBanner('Could not load the history of this room.');
  }
  if (stale()) return false;
  renderHistoryStatus();
  fillViewport(rs);
  return true;
}

/**
 * The room's presence, messages and typing. Presence before the room itself so no join/leave is
 * missed; events that arrive while the member list is on its way are kept in `early` and applied
 * again on top of it (loadMembers).
 */
function subscribeRoom(rs) {
  const client = state.client;
  const presence = { early: [] };
  state.subs = [
    client.subscribe(`/topic/${rs.name}.presence`, (frame) => {
      if (presence.early) presence.early.push(frame);
      onPresence(rs, frame);
    }),
    // Without history (it failed to load) there is nothing to continue from: live only.
    client.subscribe(`/topic/${rs.name}`, (frame) => onRoomMessage(rs, frame), rs.loaded ? { since: String(rs.lastId) } : {}),
    client.subscribe(`/topic/${rs.name}.typing`, (frame) => onTyping(rs, frame)),
  ];
  return presence;
}

async function loadMembers(rs, presence, stale) {
  try {
    const members = await listMembers(rs.name);
    if (stale()) return;
    if (members) {
      rs.members = new Set(members);
      rs.members.add(state.me);
      const replay = presence.early;
      presence.early = null;
      replay.forEach((frame) => onPresence(rs, frame));
    }
  } catch {
    /* keep what presence events told us */
  }
  presence.early = null;
  renderMembers();
}

export function leaveRoom() {
  if (online()) {
    for (const sub of state.subs) {
      try {
        sub.unsubscribe();
      } catch {
        /* connection went away meanwhile */
      }
    }
  }
  state.subs = [];
  const rs = state.joined && state.roomStates.get(state.joined);
  if (rs) {
    rs.members.clear();
    for (const timer of rs.typing.values()) clearTimeout(timer);
    rs.typing.clear();
  }
  state.joined = null;
}

// ---- presence and members ----------------------------------------------------------------------

/** A frame on `/topic/<room>.presence`: join or leave (deletions are events on the room itself). */
function onPresence(rs, frame) {
  const user = frame.headers.user;
  if (!user) return;
  if (frame.headers.event === 'join') noteGuest(user, frame.headers.guest === 'true');
  if (frame.headers.event === 'join') rs.members.add(user);
  else if (frame.headers.event === 'leave' && user !== state.me) rs.members.delete(user);
  if (state.joined === rs.name) renderMembers();
}

/** Remembers whether `name` is a guest (for the badge in the member list). */
export function noteGuest(name, guest) {
  if (guest === state.guests.has(name)) return;
  if (guest) state.guests.add(name);
  else state.guests.delete(name);
  if (state.joined && roomState(state.joined).members.has(name)) renderMembers();
}

function onTyping(rs, frame) {
  const user = frame.headers.sender;
  if (!user || user === state.me) return;
  clearTimeout(rs.typing.get(user));
  rs.typing.set(user, setTimeout(() => {
    rs.typing.delete(user);
    if (isActive('room', rs.name)) renderTyping();
  }, TYPING_SHOW_FOR));
  if (isActive('room', rs.name)) renderTyping();
}

// ---- messages ----------------------------------------------------------------------------------

/** A MESSAGE on `/topic/<room>`: a chat message, or (with a `kind` header) an event changing one. */
function onRoomMessage(rs, frame) {
  const id = Number(frame.headers['message-id']);
  if (!Number.isSafeInteger(id) || id < 1) return;
  const previousLast = rs.lastId;
  if (frame.headers.kind) {
    if (applyEvent(rs, id, frame)) checkGap(rs, previousLast, id);
    return;
  }
  const msg = {
    id,
    room: rs.name,
    from: frame.headers.sender || '?',
    ts: Number(frame.headers.timestamp) || Date.now(),
    body: frame.body,
    guest: frame.headers['sender-guest'] === 'true',
    deleted: frame.headers.deleted === 'true',
    edited: frame.headers.edited === 'true',
    replyTo: Number(frame.headers['reply-to']) || null,
    clientId: frame.headers['client-id'] || null,
    reactions: new Map(), // a replayed message's reactions follow as events
  };
  noteGuest(msg.from, msg.guest);
  debug.messages++;
  if (!addRoomMessages(rs, [msg])) return;
  const timer = rs.typing.get(msg.from);
  if (timer) {
    clearTimeout(timer);
    rs.typing.delete(msg.from);
    if (isActive('room', rs.name)) renderTyping();
  }
  noteMessage('room', rs.name, msg);
  notifyMessage({ kind: 'room', name: rs.name }, msg);
  checkGap(rs, previousLast, id);
}

/**
 * Ids (messages and events alike) are consecutive per room: a jump means we missed some; fetch
 * the messages. With `since` on SUBSCRIBE this does not happen; it is a safety net.
 */
function checkGap(rs, previousLast, id) {
  if (rs.loaded && id > previousLast + 1) fillGap(rs, previousLast, id);
}

async function fillGap(rs, after, before) {
  debug.gapFills++;
  const wanted = before - after - 1;
  const limit = Math.min(wanted, 500);
  try {
    const missing = await fetchMessages(rs.name, before, limit);
    if (wanted > limit) {
      // Too far behind to fill in one go: keep what we hold contiguous by forgetting the older
      // part; scrolling up pages it in again.
      for (const id of rs.msgs.keys()) if (id < before - limit) rs.msgs.delete(id);
      rs.oldestId = Math.min(before, ...rs.msgs.keys());
      rs.atStart = false;
      if (isActive('room', rs.name)) renderMessages();
    }
    addRoomMessages(rs, missing.filter((m) => m.id > after), { history: true });
  } catch {
    /* the next reconnect's catch-up covers it */
  }
}

/** Adds messages to a room (dropping ones we have) and shows them; true if any was new. */
function addRoomMessages(rs, msgs, { history = false } = {}) {
  let added = false;
  const active = isActive('room', rs.name);
  const pinned = active && nearBottom();
  for (const msg of msgs) {
    if (rs.msgs.has(msg.id)) {
      if (!history) debug.duplicates++;
      continue;
    }
    added = true;
    if (msg.from === state.me) resolvePending(msg);
    rs.msgs.set(msg.id, msg);
    rs.lastId = Math.max(rs.lastId, msg.id);
    rs.oldestId = Math.min(rs.oldestId, msg.id);
    if (active) insertMessage(messageEl(msg), msg.id);
  }
  if (added && active) {
    if (history) refreshQuotes(rs);
    renderHistoryStatus();
    if (pinned || (!history && msgs.some((m) => m.from === state.me))) scrollToBottom();
    else if (!history) el.jump.hidden = false;
  }
  return added;
}

// ---- older history -----------------------------------------------------------------------------

export async function loadOlder(rs) {
  if (!rs.loaded || rs.atStart || rs.loadingOlder || !online()) return;
  if (rs.oldestId <= 1) {
    rs.atStart = true;
    renderHistoryStatus();
    return;
  }
  rs.loadingOlder = true;
  renderHistoryStatus();
  try {
    const older = await fetchMessages(rs.name, rs.oldestId, PAGE);
    if (older.length === 0) rs.atStart = true;
    const box = el.messages;
    const fromBottom = box.scrollHeight - box.scrollTop;
    addRoomMessages(rs, older, { history: true });
    if (isActive('room', rs.name)) box.scrollTop = box.scrollHeight - fromBottom; // keep the view still
    if (rs.oldestId <= 1) rs.atStart = true;
  } catch {
    /* try again on the next scroll */
  } finally {
    rs.loadingOlder = false;
    renderHistoryStatus();
  }
  fillViewport(rs);
}

/** Loads older pages until the list can scroll, so scrolling up can page further. */
function fillViewport(rs) {
  if (!isActive('room', rs.name)) return;
  if (el.messages.scrollHeight <= el.messages.clientHeight + 40) loadOlder(rs);
}
