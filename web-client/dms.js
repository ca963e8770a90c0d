// Direct-message conversations: the list (GET /api/dms), history from REST with paging, live DMs in id order, gap filling.
//
// Between accounts a conversation is stored by the server and numbered 1, 2, 3, … (STOMP
// `message-id`); every DM reaches every session of both people on /user/queue/messages, ours from
// this tab too (matched to the copy shown while sending by its `client-ref`). A live id past the
// last one held (a reconnect, a lost frame) is filled from REST. Conversations with guests are not
// stored: they are live only, in arrival order. A DM to someone offline is simply sent: the
// server keeps it for them.

import { fetchDmMessages, listDms } from './api.js';
import { el } from './dom.js';
import { notifyMessage } from './notify.js';
import {
  insertMessage, messageEl, nearBottom, renderDms, renderHistoryStatus, renderMessages, scrollToBottom, showBanner,
} from './render.js';
import { noteGuest } from './rooms.js';
import { auth, debug, dmState, isActive, online, state } from './state.js';
import { applyDmCounts, noteMessage, setDmRefresher } from './unread.js';

const PAGE = 50; // messages per history page
const GAP_MAX = 500; // most messages fetched to fill one gap

/** A conversation's DmState with what this module keeps in it. */
export function conversation(peer) {
  const dm = dmState(peer);
  if (!dm.ids) {
    Object.assign(dm, {
      kind: 'dm', ids: new Set(), lastId: 0, oldestId: Infinity, loaded: false, loading: false, atStart: false,
      loadingOlder: false, stored: auth.mode === 'account' ? undefined : false, // undefined: not known yet
    });
  }
  return dm;
}

const isId = (id) => Number.isSafeInteger(id) && id > 0;

// ---- the list ----------------------------------------------------------------------------------

/** GET /api/dms: our conversations (and their counts); held ones get what they missed. */
export async function refreshDms() {
  if (auth.mode !== 'account' || !online()) return;
  const client = state.client; // this user's (not state.epoch: every room switch bumps it)
  const list = await listDms();
  if (!list || client !== state.client) return;
  for (const c of list) {
    const known = state.dms.has(c.with);
    const dm = conversation(c.with);
    dm.stored = true;
    const ts = Number(c.last_ts) || 0;
    dm.last = known ? Math.max(dm.last, ts) : ts;
    const lastId = Number(c.last_id);
    if (dm.loaded && isId(lastId) && lastId > dm.lastId) fillGap(dm, dm.lastId, lastId + 1);
  }
  applyDmCounts(list);
  renderDms();
}
setDmRefresher(refreshDms);

/** After CONNECTED: live DMs, and the list (which catches up held conversations). */
export function connectDms(client) {
  client.subscribe('/user/queue/messages', onDirectMessage);
  refreshDms().catch(() => { /* offline: the next connect refreshes */ });
  const conv = state.active;
  if (conv && conv.kind === 'dm') openDm(conv.name);
}

// ---- opening and history -----------------------------------------------------------------------

/** A conversation was opened: its latest history, the first time (accounts only: guests have none). */
export async function openDm(peer) {
  const dm = conversation(peer);
  if (dm.loaded || dm.loading) return;
  if (auth.mode !== 'account' || dm.stored === false) {
    dm.loaded = true;
    dm.atStart = true;
    renderHistoryStatus();
    return;
  }
  if (!online()) return; // connectDms opens it again
  dm.loading = true;
  const client = state.client; // this user's (not state.epoch: every room switch bumps it)
  try {
    const msgs = await fetchDmMessages(peer, null, PAGE);
    if (client !== state.client) return;
    if (msgs === null) {
      dm.stored = false; // no account by that name (a guest, maybe): live only
      dm.atStart = true;
    } else {
      dm.stored = true;
      addDmMessages(dm, msgs, { history: true });
      if (msgs.length < PAGE) dm.atStart = true;
    }
    dm.loaded = true;
  } catch {
    if (client === state.client) showBanner(`Could not load your conversation with ${peer}.`);
  } finally {
    dm.loading = false;
  }
  if (!isActive('dm', peer)) return;
  renderHistoryStatus();
  scrollToBottom();
  fillViewport(dm);
}

/** The next older page (scrolling up, "Load older messages"). */
export async function loadOlderDm(dm) {
  if (!dm.loaded || dm.atStart || dm.loadingOlder || !dm.stored || !online()) return;
  if (dm.oldestId <= 1) {
    dm.atStart = true;
    renderHistoryStatus();
    return;
  }
  dm.loadingOlder = true;
  renderHistoryStatus();
  try {
    const older = await fetchDmMessages(dm.name, dm.oldestId, PAGE);
    if (!older || older.length === 0) dm.atStart = true;
    const box = el.messages;
    const fromBottom = box.scrollHeight - box.scrollTop;
    addDmMessages(dm, older || [], { history: true });
    if (isActive('dm', dm.name)) box.scrollTop = box.scrollHeight - fromBottom; // keep the view still
    if (dm.oldestId <= 1) dm.atStart = true;
  } catch {
    /* try again on the next scroll */
  } finally {
    dm.loadingOlder = false;
    renderHistoryStatus();
  }
  fillViewport(dm);
}

function fillViewport(dm) {
  if (!isActive('dm', dm.name)) return;
  if (el.messages.scrollHeight <= el.messages.clientHeight + 40) loadOlderDm(dm);
}

/** Fetches the ids between `after` and `before` (both excluded). */
async function fillGap(dm, after, before) {
  debug.gapFills++;
  const wanted = before - after - 1;
  const limit = Math.min(wanted, GAP_MAX);
  try {
    const missing = await fetchDmMessages(dm.name, before, limit);
    if (!missing) return;
    if (wanted > limit) {
      // Too far behind for one go: keep what we hold contiguous; scrolling up pages the rest.
      dm.msgs = dm.msgs.filter((m) => !isId(m.id) || m.id >= before);
      dm.ids = new Set(dm.msgs.filter((m) => isId(m.id)).map((m) => m.id));
      dm.oldestId = before;
      dm.atStart = false;
      if (isActive('dm', dm.name)) renderMessages();
    }
    addDmMessages(dm, missing.filter((m) => m.id > after), { history: true });
  } catch {
    /* the next refresh of the list tries again */
  }
}

// ---- messages ----------------------------------------------------------------------------------

/** Where a message with `id` goes in `dm.msgs`: after the stored ones with smaller ids, before ours being sent. */
function slot(dm, id) {
  let i = dm.msgs.length;
  while (i > 0 && !(isId(dm.msgs[i - 1].id) && dm.msgs[i - 1].id < id)) i--;
  return i;
}

/** Adds stored messages in id order, dropping ones held already; true if any was new. */
function addDmMessages(dm, msgs, { history = false } = {}) {
  const active = isActive('dm', dm.name);
  const pinned = active && nearBottom();
  let added = false;
  for (const msg of msgs) {
    if (dm.ids.has(msg.id)) {
      if (!history) debug.duplicates++;
      continue;
    }
    // Ours, still shown as being sent (its echo has not come yet): that copy gets the id.
    const local = msg.from === state.me && dm.msgs.find((m) => !isId(m.id) && m.body === msg.body);
    if (local) {
      place(dm, local, msg.id);
      added = true;
      continue;
    }
    added = true;
    dm.ids.add(msg.id);
    dm.msgs.splice(slot(dm, msg.id), 0, msg);
    dm.lastId = Math.max(dm.lastId, msg.id);
    dm.oldestId = Math.min(dm.oldestId, msg.id);
    if (active) insertMessage(messageEl(msg), msg.id);
  }
  if (added && active) {
    renderHistoryStatus();
    if (pinned || (!history && msgs.some((m) => m.from === state.me))) scrollToBottom();
    else if (!history) el.jump.hidden = false;
  }
  return added;
}

/** Our message shown while sending has its stored id now: it moves to its place. */
function place(dm, local, id) {
  const oldKey = String(local.id);
  dm.msgs.splice(dm.msgs.indexOf(local), 1);
  local.id = id;
  dm.ids.add(id);
  dm.msgs.splice(slot(dm, id), 0, local);
  dm.lastId = Math.max(dm.lastId, id);
  dm.oldestId = Math.min(dm.oldestId, id);
  if (!isActive('dm', dm.name)) return;
  el.list.querySelector(`[data-id="${CSS.escape(oldKey)}"]`)?.remove();
  insertMessage(messageEl(local), id);
}

/** A MESSAGE on /user/queue/messages: to us, or from us (this tab or another). */
function onDirectMessage(frame) {
  const sender = frame.headers.sender;
  if (!sender) return;
  const mine = sender === state.me;
  const peer = mine ? frame.headers.recipient : sender;
  if (!peer || peer === state.me) return;
  const guest = frame.headers['sender-guest'] === 'true';
  noteGuest(sender, guest);
  const dm = conversation(peer);
  if (guest) dm.stored = false;
  const id = Number(frame.headers['message-id']);
  const msg = { id, from: sender, ts: Number(frame.headers.timestamp) || Date.now(), body: frame.body, guest };
  debug.messages++;
  const ref = frame.headers['client-ref'];
  const local = mine && ref && dm.msgs.find((m) => m.ref === ref && !isId(m.id));
  dm.last = Math.max(dm.last, msg.ts);
  if (!isId(id) || dm.stored === false) {
    if (!liveOnly(dm, msg, local)) return;
  } else if (local) {
    if (!dm.ids.has(id)) place(dm, local, id);
  } else {
    const previousLast = dm.lastId;
    if (!addDmMessages(dm, [msg])) return;
    if (dm.loaded && id > previousLast + 1) fillGap(dm, previousLast, id);
  }
  noteMessage('dm', peer, msg);
  notifyMessage({ kind: 'dm', name: peer }, msg);
  renderDms();
}

/** A conversation the server does not store (with a guest): arrival order, no history; true if new. */
function liveOnly(dm, msg, local) {
  if (local) return false; // ours, shown already
  const key = `${msg.id}:${msg.ts}:${msg.from}`;
  if (dm.keys.has(key)) {
    debug.duplicates++;
    return false;
  }
  dm.keys.add(key);
  msg.id = `dm-${key}`;
  dm.msgs.push(msg);
  if (!isActive('dm', dm.name)) return true;
  const pinned = nearBottom();
  el.list.append(messageEl(msg));
  if (pinned) scrollToBottom();
  else el.jump.hidden = false;
  return true;
}

/** ERROR no_such_user: our DM to that name is not delivered (the connection closes and comes back). */
export function noSuchUser(message) {
  for (const dm of state.dms.values()) {
    for (const m of dm.msgs) if (m.from === state.me && !isId(m.id) && m.state !== 'sent') m.state = 'failed';
  }
  if (state.active && state.active.kind === 'dm') renderMessages();
  showBanner(`Not sent: ${message.replace(/^no_such_user:\s*/i, '')}`);
}
