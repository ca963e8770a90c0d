// Read state and unread counts of rooms and DM conversations: live counting, marks sent (debounced) and heard, REST refreshes.
//
// Each room's RoomState and each conversation's DmState (state.js) carries its read state:
//   lastRead  the last id read, on any device (the server's mark, or ours on its way)
//   unread, mentions  what the list's badge shows
//   visited   opened in this page (a room never read before counts in the title only once visited)
//   seen      ids counted live since the last server snapshot (so none is counted twice)
//   snapLast  (DMs) the conversation's last id when the snapshot was taken: older ones are in it
// Where the page holds every message after `lastRead` (the joined room, an opened DM) the counts
// are recomputed from those messages; elsewhere they come from the server (GET /api/rooms,
// GET /api/unread, GET /api/dms) plus live messages since. Counts of rooms the page does not
// subscribe to are refreshed with the room list (30 s), every REFRESH_EVERY while the page is
// visible, on focus, and soon after another tab's mark the page cannot apply itself.
//
// The open conversation is marked read (POST /api/rooms/<room>/read, /api/dms/<user>/read) up to
// the last message shown, while the page is visible, at most once per MARK_DELAY; the server
// tells every session of the account (/user/queue/read), so other tabs clear their counts.

import { fetchUnread, postRead } from './api.js';
import { mentions } from './format.js';
import { renderDms, renderRooms, renderTitle } from './render.js';
import { auth, dmState, isActive, online, roomState, state } from './state.js';

const MARK_DELAY = 400; // ms: marks are debounced (a burst of messages is one mark)
const MARK_CHECK_EVERY = 1500; // ms: is there something shown and not marked yet?
const REFRESH_EVERY = 15000; // ms: counts of rooms the page does not subscribe to
const REFRESH_SOON = 300; // ms: after a mark we could not apply locally

/** How the DM list is fetched again (dms.js sets it: it sits above this module). */
let refreshDmList = async () => {};
export function setDmRefresher(fn) {
  refreshDmList = fn;
}

const pageVisible = () => document.visibilityState === 'visible' && !document.hidden;
const isAccount = () => auth.mode === 'account';

function record(kind, name) {
  const rec = kind === 'dm' ? dmState(name) : roomState(name);
  if (!rec.seen) Object.assign(rec, { lastRead: 0, mentions: 0, visited: false, seen: new Set(), snapLast: 0 });
  return rec;
}

/** Redraws what shows counts: both lists and the tab title. */
function renderCounts() {
  renderRooms();
  renderDms();
  renderTitle();
}

// ---- counting ----------------------------------------------------------------------------------

/**
 * The messages the page holds for a conversation, when they cover everything after `lastRead`
 * and stay up to date (a room we left holds a stale copy).
 */
function heldAfterMark(kind, rec) {
  if (!rec.loaded || (kind === 'room' && state.joined !== rec.name)) return null; // not live: stale
  if (!rec.atStart && !(rec.oldestId <= rec.lastRead + 1)) return null;
  return kind === 'dm' ? rec.msgs.filter((m) => Number.isSafeInteger(m.id)) : [...rec.msgs.values()];
}

/** Counts from the messages held, when they suffice; true if it could. */
function recount(kind, rec) {
  const msgs = heldAfterMark(kind, rec);
  if (!msgs) return false;
  const unread = msgs.filter((m) => m.id > rec.lastRead && m.from !== state.me && !m.deleted);
  rec.unread = unread.length;
  rec.mentions = unread.filter((m) => mentions(m.body, state.me)).length;
  rec.seen.clear();
  return true;
}

/** A live message (room or DM, from anyone): counted unless it is being read right now. */
export function noteMessage(kind, name, msg) {
  const rec = record(kind, name);
  if (msg.from === state.me) return;
  if (isActive(kind, name) && pageVisible()) {
    scheduleMark();
    return;
  }
  // Without a number (a guest's DM, not stored) the caller made sure it is new.
  if (Number.isSafeInteger(msg.id)) {
    if (msg.id <= rec.lastRead || rec.seen.has(msg.id) || (kind === 'dm' && msg.id <= rec.snapLast)) return;
    rec.seen.add(msg.id);
  }
  rec.unread++;
  if (mentions(msg.body, state.me)) rec.mentions++;
  renderCounts();
}

/**
 * A server snapshot of one conversation's read state. Ignored for the conversation being read
 * here, and where we know a newer mark than the snapshot's (counts from then on are ours).
 */
function applySnapshot(kind, name, { lastRead, unread, mentions: m, lastId = 0 }) {
  const rec = record(kind, name);
  if (kind === 'dm') rec.snapLast = Math.max(rec.snapLast, lastId);
  if (isActive(kind, name) && pageVisible()) return;
  if (lastRead < rec.lastRead) {
    recount(kind, rec);
    return;
  }
  rec.lastRead = lastRead;
  if (recount(kind, rec)) return;
  rec.unread = unread;
  rec.mentions = m;
  rec.seen.clear();
}

const idOf = (v) => {
  const n = Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : 0;
};
const countOf = (v) => (Number.isSafeInteger(v) && v >= 0 ? v : 0);

/** Room entries of GET /api/rooms or GET /api/unread (accounts' carry `last_read`, `unread`, `mentions`). */
export function applyRoomCounts(rooms) {
  if (!isAccount()) return;
  let any = false;
  for (const r of rooms) {
    if (typeof r.unread !== 'number') continue;
    applySnapshot('room', r.name, { lastRead: idOf(r.last_read), unread: countOf(r.unread), mentions: countOf(r.mentions) });
    any = true;
  }
  if (any) renderCounts();
}

/** Conversations of GET /api/dms (`with`, `last_id`, `last_read`, `unread`). */
export function applyDmCounts(conversations) {
  for (const c of conversations) {
    applySnapshot('dm', c.with, {
      lastRead: idOf(c.last_read), unread: countOf(c.unread), mentions: 0, lastId: idOf(c.last_id),
    });
  }
  renderCounts();
}

/** GET /api/unread and the DM list again (signed in with an account, online). */
export async function refreshCounts() {
  if (!isAccount() || !online()) return;
  const client = state.client; // this user's (not state.epoch: every room switch bumps it)
  try {
    const [rooms] = await Promise.all([fetchUnread(), refreshDmList()]);
    if (rooms && client === state.client) applyRoomCounts(rooms);
  } catch {
    /* offline: the next connect refreshes */
  }
}

let soonTimer = null;
function refreshSoon() {
  clearTimeout(soonTimer);
  soonTimer = setTimeout(refreshCounts, REFRESH_SOON);
}

// ---- marks -------------------------------------------------------------------------------------

/** The last message id the open conversation shows (0: none yet). */
function lastShown(conv) {
  return conv.kind === 'dm' ? record('dm', conv.name).lastId || 0 : roomState(conv.name).lastId || 0;
}

let markTimer = null;

/** Marks the open conversation read soon (debounced), if the page is visible. */
export function scheduleMark() {
  if (markTimer) return;
  markTimer = setTimeout(() => {
    markTimer = null;
    markOpen();
  }, MARK_DELAY);
}

/**
 * Reads the open conversation: its counts go to 0 and the server hears the last id shown. Only
 * while visible, unless `flush`: a mark still waiting when the page is hidden was for what was seen.
 */
function markOpen(flush = false) {
  const conv = state.active;
  if (!conv || !(flush || pageVisible())) return;
  const rec = record(conv.kind, conv.name);
  rec.visited = true;
  const last = lastShown(conv);
  const changed = rec.unread !== 0 || rec.mentions !== 0;
  rec.unread = 0;
  rec.mentions = 0;
  rec.seen.clear();
  if (last > rec.lastRead) {
    rec.lastRead = last;
    const stored = conv.kind === 'room' || rec.stored !== false;
    if (isAccount() && stored && online()) {
      postRead(conv.kind, conv.name, last).catch(() => { /* offline: marked again once back */ });
    }
  }
  if (changed) renderCounts();
}

/** Something is shown and not marked yet (checked now and then: history loads, focus, …). */
function needsMark() {
  const conv = state.active;
  if (!conv || !pageVisible()) return false;
  const rec = record(conv.kind, conv.name);
  return rec.unread !== 0 || lastShown(conv) > rec.lastRead || !rec.visited;
}

/** A conversation was opened: it is read from now on (while visible). */
export function conversationOpened(conv) {
  const rec = record(conv.kind, conv.name);
  if (pageVisible()) {
    rec.visited = true;
    rec.unread = 0;
    rec.mentions = 0;
    rec.seen.clear();
  }
  scheduleMark();
  renderTitle();
}

/** A mark on /user/queue/read (ours, or another tab's or device's). */
function onMark(frame) {
  const mark = idOf(frame.headers['last-read']);
  const kind = frame.headers.with ? 'dm' : 'room';
  const name = frame.headers.with || frame.headers.room;
  if (!name) return;
  const rec = record(kind, name);
  if (mark > rec.lastRead) rec.lastRead = mark;
  if (!recount(kind, rec)) {
    const known = kind === 'dm' ? Math.max(rec.lastId || 0, rec.snapLast) : rec.lastId || 0;
    if (known && mark >= known) {
      rec.unread = 0;
      rec.mentions = 0;
      rec.seen.clear();
    } else {
      refreshSoon();
    }
  }
  renderCounts();
}

// ---- lifecycle ---------------------------------------------------------------------------------

/** After CONNECTED: hear marks (accounts have read state), fetch counts. */
export function connectUnread(client) {
  if (!isAccount()) return;
  client.subscribe('/user/queue/read', onMark);
  refreshCounts();
}

setInterval(() => {
  if (needsMark()) scheduleMark();
}, MARK_CHECK_EVERY);
setInterval(() => {
  if (pageVisible()) refreshCounts();
}, REFRESH_EVERY);
document.addEventListener('visibilitychange', () => {
  if (!pageVisible()) {
    if (markTimer) {
      clearTimeout(markTimer);
      markTimer = null;
      markOpen(true);
    }
    return;
  }
  scheduleMark();
  refreshCounts();
});
window.addEventListener('focus', () => {
  scheduleMark();
  refreshCounts();
});
