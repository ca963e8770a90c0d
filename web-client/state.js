// The client's shared state: who we are (auth), what the server offers (info), conversations, pending sends, debug counters.

/** Usernames (accounts and guests): 1-32 of letters, digits, `_ - .`. */
export const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
export const NAME_KEY = 'parley.name'; // a guest's remembered name (accounts need none: the cookie)

/** Who we are to the server. The access token is kept here and nowhere else. */
export const auth = {
  mode: null, // null (signed out) | 'account' | 'guest'
  token: null, // access token (JWT) of an account
  expiresAt: 0, // ms since the epoch, by our clock
  stale: false, // the server refused the token: get a new one before the next connect
  failures: 0, // authentication failures since the last successful connect
  renewTimer: null,
  refreshing: null, // the refresh in flight (one at a time: a refresh token is single-use)
};

/**
 * GET /api/info: what the server offers. `rooms` is the room-name rule ({pattern: RegExp, rule})
 * or null when the server did not say: then names are not checked in the page (the server does).
 * `maxBody` (room messages) and `maxDmBody` (direct messages), both the server's `--max-body`
 * (`messages.max_body` of /api/info), in UTF-8 bytes; the default until /api/info answers.
 */
export const info = {
  guests: false, registration: 'open', rooms: null, guestsCreateRooms: false, loaded: false,
  maxBody: 64 * 1024, maxDmBody: 64 * 1024,
  editWindowS: 24 * 60 * 60, // `messages.edit_window_s`: how long authors may edit or delete (0: forever)
  providers: [], // GET /api/auth/providers: [{name, label, kind}], the sites one may sign in with
};

export const state = {
  name: null, // the name we log in with
  me: null, // the name the server knows us by (CONNECTED user-name)
  client: null,
  conn: 'connecting', // connecting | online | reconnecting
  everOnline: false,
  epoch: 0, // bumped on every (dis)connect and room switch; stale async work checks it
  rooms: [], // [{name, private}] from GET /api/rooms: the pages loaded so far
  roomsNext: null, // the cursor of the next page of rooms, null when all are loaded
  roomFilter: '', // only rooms whose name starts with this are listed
  roomStates: new Map(), // name -> RoomState
  joined: null, // name of the room we are subscribed to (at most one)
  subs: [], // its subscriptions
  dms: new Map(), // peer -> DmState (dms.js: stored conversations with accounts, live ones with guests)
  active: null, // {kind: 'room'|'dm', name}
  pending: new Map(), // ref (= its client id) -> our room message not yet seen back (outbox.js)
  refMsgs: new Map(), // ref -> our shown message still waiting for its RECEIPT
  sentRefs: new Set(),
  lastTypingSent: 0,
  refSeq: 0,
  refused: new Set(), // rooms the server refused us (ERROR forbidden): not joined again by themselves
  guests: new Set(), // names we have seen marked as guests (sender-guest / guest:true)
  replyTo: null, // {room, id}: the message the next one in that room answers (edits.js)
  editing: null, // {room, id, draft}: the message being edited in place (edits.js)
};

// Counters for tests and curious people: gap fills and duplicates should stay 0 with `since`.
export const debug = { gapFills: 0, duplicates: 0, connects: 0, messages: 0, events: 0, refreshes: 0, renewals: 0, outboxSends: 0 };
window.parleyDebug = debug;

export function roomState(name) {
  let rs = state.roomStates.get(name);
  if (!rs) {
    rs = {
      name, msgs: new Map(), lastId: 0, oldestId: Infinity, loaded: false, atStart: false,
      loadingOlder: false, members: new Set(), typing: new Map(), unread: 0,
    };
    state.roomStates.set(name, rs);
  }
  return rs;
}

export function dmState(peer) {
  let dm = state.dms.get(peer);
  if (!dm) {
    dm = { name: peer, msgs: [], keys: new Set(), unread: 0, last: Date.now() };
    state.dms.set(peer, dm);
  }
  return dm;
}

export const isActive = (kind, name) => state.active && state.active.kind === kind && state.active.name === name;
export const online = () => state.conn === 'online' && state.client && state.client.connected;

/**
 * Whether we are anyone to the server: an account with its access token, or a guest. Signed out
 * (or between sessions) the REST API refuses the calls that need someone (401 without guests).
 */
export const signedIn = () => auth.mode === 'guest' || (auth.mode === 'account' && Boolean(auth.token));

/** Whether the composer may send: online, or (room messages only) into the outbox while away. */
export const canCompose = () => Boolean(online() || (state.everOnline && state.client && state.active && state.active.kind === 'room'));
