// The chat connection's lifecycle: connecting as whoever we are, handling CONNECTED, closes and ERRORs, stopping.

import { askName, showSignIn } from './dialogs.js';
import { connectDms, noSuchUser } from './dms.js';
import { initialConversation, openConversation } from './navigation.js';
import { loadOutbox, markUnconfirmed } from './outbox.js';
import { renderAll, renderMe, setConn, setTransport, showBanner } from './render.js';
import { joinRoom, leaveRoom, refreshRooms } from './rooms.js';
import { ensureToken, sessionEnded } from './session.js';
import { auth, debug, info, state } from './state.js';
import { describeSocket } from './transport/socket.js';
import { createStomp } from './transport/stomp.js';
import { connectUnread } from './unread.js';

/** Connects as whoever we are now (auth.mode and state.name are set). */
export function start() {
  renderMe();
  setConn('connecting');
  const client = createStomp({
    isCurrent: (c) => c === state.client,
    credentials,
    onConnect: onConnected,
    onClose: (evt) => {
      // 4401: the token expired on the raw protocol (STOMP says it with an ERROR first).
      if (evt && evt.code === 4401) auth.stale = true;
      onDisconnected();
    },
    onError: onServerError,
  });
  state.client = client;
  client.activate();
}

/** The CONNECT headers of each attempt: a guest's name as login, an account's access token as passcode. */
async function credentials(client) {
  if (auth.mode === 'guest') return { login: state.name };
  const ok = await ensureToken();
  if (client !== state.client) return null;
  if (!ok) {
    sessionEnded('Your session has ended. Please sign in again.');
    return null;
  }
  return { passcode: auth.token || '' };
}

let roomsChanged = null; // the pending refresh after a room-list event (onConnected)

/** Closes the connection and forgets everything learnt under the current identity. */
export async function stopClient() {
  const old = state.client;
  state.client = null;
  clearTimeout(roomsChanged); // a room-list event's refresh, due after we are gone
  roomsChanged = null;
  state.epoch++;
  leaveRoom();
  state.roomStates.clear();
  state.dms.clear();
  state.pending.clear();
  state.refMsgs.clear();
  state.guests.clear();
  state.refused.clear();
  state.replyTo = null;
  state.editing = null;
  state.everOnline = false;
  renderAll();
  if (old) await old.deactivate();
}

/** An ERROR frame: the server closes the connection after it; stompjs reconnects unless stopped. */
function onServerError(message) {
  if (auth.mode === 'guest' && /belongs to a registered user/i.test(message)) {
    // Someone has an account with that name: pick another.
    stopClient();
    askName(message);
    return;
  }
  if (/token expired|authentication failed|unauthori[sz]ed|unauthenticated/i.test(message)) {
    if (auth.mode === 'account') {
      // Get a new token before the next attempt; give up (sign in again) if that keeps failing.
      auth.stale = true;
      if (++auth.failures >= 3) sessionEnded('The server did not accept your session. Please sign in again.');
      return;
    }
    if (auth.mode === 'guest') {
      stopClient();
      showSignIn(info.guests ? `Could not join as a guest: ${message}` : 'This server does not allow guests: please sign in.');
      return;
    }
  }
  if (/^no_such_user/i.test(message)) {
    noSuchUser(message); // a DM to nobody: the connection comes back by itself
    return;
  }
  if (/^forbidden/i.test(message)) {
    // Not allowed in the room we were in (a private room, or removed from it): do not try again.
    if (state.joined) state.refused.add(state.joined);
    const notMember = state.joined && /private and you are not a member/i.test(message);
    showBanner(notMember ? `You are not a member of #${state.joined}.` : message);
    return;
  }
  // A restart is not worth a message: the connection state says it all.
  if (!/shutting down/i.test(message)) showBanner(`Server error: ${message}`);
}

function onConnected(frame) {
  state.epoch++;
  debug.connects++;
  auth.failures = 0;
  auth.stale = false;
  state.me = frame.headers['user-name'] || state.name;
  state.everOnline = true;
  renderMe();
  setConn('online');
  setTransport(describeSocket(state.client.webSocket));
  loadOutbox(); // what this tab had not sent before a reload; joining its room sends it
  connectDms(state.client);
  connectUnread(state.client);
  // New public rooms are announced at once (several close together make one refresh).
  const client = state.client;
  client.subscribe('/topic/.rooms', () => {
    clearTimeout(roomsChanged);
    roomsChanged = setTimeout(() => {
      roomsChanged = null;
      if (client === state.client) refreshRooms(); // not after signing out (or a new name)
    }, 200);
  });
  // Back after a reconnect (or a new name): the room we were in, continuing from what we have.
  let room = state.joined || (state.active && state.active.kind === 'room' ? state.active.name : null);
  if (room && state.refused.has(room)) {
    // The server refused that room (and closed the connection over it): do not ask again.
    leaveRoom();
    state.roomStates.delete(room);
    if (state.active && state.active.kind === 'room') state.active = null;
    room = null;
  }
  refreshRooms().then(() => {
    if (!state.active) openConversation(initialConversation());
  });
  if (room) joinRoom(room, { force: true });
}

function onDisconnected() {
  if (!state.everOnline) return; // still trying to connect the first time
  state.epoch++;
  state.subs = [];
  for (const rs of state.roomStates.values()) {
    rs.members.clear();
    for (const timer of rs.typing.values()) clearTimeout(timer);
    rs.typing.clear();
  }
  // Our messages without an answer may or may not have been stored: say so (joining the room
  // again sends them once more with their client ids, which the server does not store twice).
  markUnconfirmed();
  for (const dm of state.dms.values()) {
    for (const m of dm.msgs) if (m.state === 'sending') m.state = 'unconfirmed';
  }
  setConn('reconnecting');
  renderAll();
}
