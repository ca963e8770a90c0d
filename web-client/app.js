// Parley web client: plain JS over STOMP (@stomp/stompjs, global StompJs) and the REST API.
// User data only ever reaches the page as text (textContent / text nodes), never as HTML.
//
// Accounts (docs/auth.md): the page signs in with POST /api/login {"cookie":true}. The refresh
// token is then an HttpOnly cookie the page never sees; the short-lived access token (a JWT) lives
// only in a variable of this closure, never in localStorage. It goes to the server as STOMP
// CONNECT `passcode` and as `Authorization: Bearer` on REST calls, and is renewed (cookie refresh)
// about a minute before it expires and handed to the open connection in-band (SEND /app/auth).
'use strict';

(() => {
  const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
  const ROOM_RE = /^[A-Za-z0-9_-]{1,128}$/;
  const PAGE = 50; // messages per history page
  const TYPING_SEND_EVERY = 2000; // ms between our typing notices
  const TYPING_SHOW_FOR = 3000; // ms a typing notice is shown
  const GROUP_WINDOW = 5 * 60 * 1000; // consecutive messages of one sender within this share a header
  const ROOMS_REFRESH = 30000;
  const NAME_KEY = 'parley.name'; // a guest's remembered name (accounts need none: the cookie)
  const ROOM_KEY = 'parley.room';
  const RENEW_BEFORE = 60; // s: renew the access token this long before it expires
  const MIN_TOKEN_LEFT = 30000; // ms: connect with a fresh token when less than this is left

  const $ = (id) => document.getElementById(id);
  const el = {
    app: $('app'), title: $('conv-title'), conn: $('conn'), connText: $('conn-text'),
    roomsToggle: $('rooms-toggle'), membersToggle: $('members-toggle'), membersCount: $('members-count'),
    sidebar: $('sidebar'), roomList: $('room-list'), dmList: $('dm-list'), dmHint: $('dm-hint'),
    newRoomForm: $('new-room-form'), newRoom: $('new-room'), newRoomError: $('new-room-error'),
    meName: $('me-name'), meGuest: $('me-guest'), changeName: $('change-name'), signOut: $('sign-out'),
    newRoomPrivate: $('new-room-private'), newRoomPrivateLabel: $('new-room-private-label'),
    authDialog: $('auth-dialog'), authForm: $('auth-form'), authUser: $('auth-username'), authPass: $('auth-password'),
    authError: $('auth-error'), authSignIn: $('auth-signin'), authRegister: $('auth-register'),
    authGuestRow: $('auth-guest-row'), authGuest: $('auth-guest'),
    banner: $('banner'), messages: $('messages'), historyStatus: $('history-status'),
    list: $('message-list'), pendingList: $('pending-list'), jump: $('jump'), typing: $('typing'),
    composer: $('composer'), input: $('input'), send: $('send'),
    members: $('members'), membersTitle: $('members-title'), memberList: $('member-list'), scrim: $('scrim'),
    nameDialog: $('name-dialog'), nameForm: $('name-form'), nameInput: $('name-input'),
    nameError: $('name-error'), nameCancel: $('name-cancel'),
  };

  /** Creates an element; string children become text nodes. */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value == null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'dataset') {
        for (const [k, v] of Object.entries(value)) if (v != null) node.dataset[k] = v;
      }
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child == null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---- state -------------------------------------------------------------------------------------

  /** Who we are to the server. The access token is kept here and nowhere else. */
  const auth = {
    mode: null, // null (signed out) | 'account' | 'guest'
    token: null, // access token (JWT) of an account
    expiresAt: 0, // ms since the epoch, by our clock
    stale: false, // the server refused the token: get a new one before the next connect
    failures: 0, // authentication failures since the last successful connect
    renewTimer: null,
    refreshing: null, // the refresh in flight (one at a time: a refresh token is single-use)
  };
  /** GET /api/info: what the server offers. */
  const info = { guests: false, registration: 'open', loaded: false };

  const state = {
    name: null, // the name we log in with
    me: null, // the name the server knows us by (CONNECTED user-name)
    client: null,
    conn: 'connecting', // connecting | online | reconnecting
    everOnline: false,
    epoch: 0, // bumped on every (dis)connect and room switch; stale async work checks it
    rooms: [], // [{name, private}] from GET /api/rooms
    roomStates: new Map(), // name -> RoomState
    joined: null, // name of the room we are subscribed to (at most one)
    subs: [], // its subscriptions
    dms: new Map(), // peer -> DmState (in memory only: DMs are not stored by the server)
    active: null, // {kind: 'room'|'dm', name}
    pending: new Map(), // ref -> our room message not yet seen back from the server
    refMsgs: new Map(), // ref -> our shown message still waiting for its RECEIPT
    sentRefs: new Set(),
    lastTypingSent: 0,
    refSeq: 0,
    refused: new Set(), // rooms the server refused us (ERROR forbidden): not joined again by themselves
    guests: new Set(), // names we have seen marked as guests (sender-guest / guest:true)
  };
  // Counters for tests and curious people: gap fills and duplicates should stay 0 with `since`.
  const debug = { gapFills: 0, duplicates: 0, connects: 0, messages: 0, refreshes: 0, renewals: 0 };
  window.parleyDebug = debug;

  function roomState(name) {
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

  function dmState(peer) {
    let dm = state.dms.get(peer);
    if (!dm) {
      dm = { name: peer, msgs: [], keys: new Set(), unread: 0, last: Date.now() };
      state.dms.set(peer, dm);
    }
    return dm;
  }

  const isActive = (kind, name) => state.active && state.active.kind === kind && state.active.name === name;
  const online = () => state.conn === 'online' && state.client && state.client.connected;

  // ---- connection --------------------------------------------------------------------------------

  function setConn(conn) {
    state.conn = conn;
    el.conn.dataset.state = conn;
    el.connText.textContent = conn === 'signed-out' ? 'signed out' : conn;
    el.app.dataset.conn = conn;
    if (conn === 'reconnecting') showBanner('Connection lost. Reconnecting…');
    else if (conn === 'online') hideBanner();
    renderComposer();
  }

  function connect() {
    const url = new URL('/stomp', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let attempts = 0;
    const client = new StompJs.Client({
      brokerURL: url.href,
      connectHeaders: {},
      heartbeatIncoming: 10000,
      heartbeatOutgoing: 10000,
      // Backoff: 500 ms doubling to 10 s, back to 500 ms once connected. (stompjs copies
      // reconnectDelay into its next delay only on activate/connect, so changing reconnectDelay
      // between attempts has no effect; its EXPONENTIAL mode does exactly this.)
      reconnectDelay: 500,
      maxReconnectDelay: 10000,
      reconnectTimeMode: StompJs.ReconnectionTimeMode.EXPONENTIAL,
      connectionTimeout: 10000,
      // Heart-beats from a worker: timers of background tabs are throttled, which would make the
      // server drop us as silent.
      heartbeatStrategy: StompJs.TickerStrategy.Worker,
      // A little jitter so a restarted server is not hit by every client in the same instant.
      beforeConnect: async () => {
        if (attempts++ > 0) await sleep(Math.random() * 250);
        if (client !== state.client) return;
        if (auth.mode === 'guest') {
          client.connectHeaders = { login: state.name };
          return;
        }
        // An account connects with its access token as passcode; a fresh one if it was refused
        // (expired on a long-lived connection, server restarted with other keys, …) or runs out soon.
        if (!auth.token || auth.stale || auth.expiresAt - Date.now() < MIN_TOKEN_LEFT) {
          let ok = true;
          try {
            ok = await refreshToken();
          } catch {
            /* server unreachable: this attempt fails and the backoff tries again */
          }
          if (client !== state.client) return;
          if (!ok) {
            sessionEnded('Your session has ended. Please sign in again.');
            return;
          }
        }
        client.connectHeaders = { passcode: auth.token || '' };
      },
      onConnect: (frame) => {
        if (client === state.client) onConnected(frame);
      },
      onWebSocketClose: (evt) => {
        if (client !== state.client) return;
        // 4401: the token expired on the raw protocol (STOMP says it with an ERROR first).
        if (evt && evt.code === 4401) auth.stale = true;
        onDisconnected();
      },
      onStompError: (frame) => {
        if (client !== state.client) return;
        onServerError(frame.headers.message || 'error');
      },
    });
    state.client = client;
    client.activate();
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
    if (/^forbidden/i.test(message)) {
      // Not allowed in the room we were in (a private room, or removed from it): do not try again.
      if (state.joined) state.refused.add(state.joined);
      showBanner(message);
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
    state.client.subscribe('/user/queue/messages', onDirectMessage);
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
    // Our messages without an answer may or may not have been stored: say so (a catch-up after
    // the reconnect resolves those that were).
    for (const p of state.pending.values()) if (p.state === 'sending') p.state = 'unconfirmed';
    for (const dm of state.dms.values()) {
      for (const m of dm.msgs) if (m.state === 'sending') m.state = 'unconfirmed';
    }
    setConn('reconnecting');
    renderAll();
  }

  // ---- REST --------------------------------------------------------------------------------------

  /**
   * A JSON request. An account's calls carry `Authorization: Bearer <access token>` and no cookie
   * (credentials 'omit'): only the session endpoints (login, refresh, logout) use the cookie, with
   * `cookie: true`. A 401 on a Bearer call gets a fresh token and one retry.
   */
  async function api(path, { method = 'GET', json, cookie = false, bearer = true, retry = true } = {}) {
    const headers = { accept: 'application/json' };
    if (json !== undefined) headers['content-type'] = 'application/json';
    const withToken = bearer && auth.mode === 'account' && auth.token;
    if (withToken) headers.authorization = `Bearer ${auth.token}`;
    const resp = await fetch(path, {
      method,
      headers,
      credentials: cookie ? 'same-origin' : 'omit',
      body: json === undefined ? undefined : JSON.stringify(json),
    });
    if (resp.status === 401 && withToken && retry) {
      let renewed = false;
      try {
        renewed = await refreshToken();
      } catch {
        /* fall through with the 401 */
      }
      if (renewed) return api(path, { method, json, cookie, bearer, retry: false });
    }
    let body = null;
    try {
      body = await resp.json();
    } catch {
      /* not JSON (or no body: 204) */
    }
    return { status: resp.status, ok: resp.ok, body, headers: resp.headers };
  }

  // ---- session -----------------------------------------------------------------------------------

  /** The `sub` claim of a JWT (only to show who we are; the server verifies the token). */
  function tokenSubject(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const bytes = Uint8Array.from(atob(part.padEnd(Math.ceil(part.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
      const sub = JSON.parse(new TextDecoder().decode(bytes)).sub;
      return typeof sub === 'string' && NAME_RE.test(sub) ? sub : null;
    } catch {
      return null;
    }
  }

  /** Runs `fn` holding a lock shared by this site's tabs (when the browser has Web Locks). */
  function withSessionLock(fn) {
    if (navigator.locks && navigator.locks.request) return navigator.locks.request('parley-session', fn);
    return fn();
  }

  /**
   * POST /api/token/refresh with the session cookie: true with a new access token, false when
   * there is no (longer a) session; throws when the server cannot be reached. One at a time, and
   * one tab at a time: a refresh token is single-use, and presenting a rotated one twice signs
   * everyone out (the server takes it for theft).
   */
  function refreshToken() {
    if (!auth.refreshing) {
      auth.refreshing = withSessionLock(async () => {
        debug.refreshes++;
        const { status, body } = await api('/api/token/refresh', { method: 'POST', json: {}, cookie: true, bearer: false });
        if (status === 200 && body && typeof body.access_token === 'string') {
          await acceptToken(body);
          return true;
        }
        if (status === 401 || status === 403) return false;
        throw new Error(`token refresh: HTTP ${status}`);
      }).finally(() => {
        auth.refreshing = null;
      });
    }
    return auth.refreshing;
  }

  /** A new access token (login or refresh): keep it, hand it to the open connection, plan the next. */
  async function acceptToken(body) {
    const token = body.access_token;
    let user = tokenSubject(token);
    if (!user) {
      const me = await fetch('/api/me', { headers: { authorization: `Bearer ${token}`, accept: 'application/json' }, credentials: 'omit' })
        .then((r) => (r.ok ? r.json() : null)).catch(() => null);
      user = me && typeof me.username === 'string' ? me.username : null;
    }
    if (auth.mode === 'account' && state.name && user && user !== state.name) {
      // Another tab signed in as someone else: this page's session is over.
      sessionEnded('You signed in as another user in another tab.');
      return;
    }
    const ttl = Math.max(Number(body.expires_in) || 0, 1);
    auth.token = token;
    auth.expiresAt = Date.now() + ttl * 1000;
    auth.stale = false;
    if (user) state.name = user;
    scheduleRenewal(ttl);
    if (online()) sendTokenInBand();
  }

  /** About a minute before the token runs out (half-way for short-lived ones). */
  function scheduleRenewal(ttl) {
    clearTimeout(auth.renewTimer);
    const delay = ttl > 2 * RENEW_BEFORE ? ttl - RENEW_BEFORE : ttl / 2;
    auth.renewTimer = setTimeout(renewToken, Math.max(delay * 1000, 1000));
  }

  async function renewToken() {
    if (auth.mode !== 'account') return;
    try {
      if (!(await refreshToken())) sessionEnded('Your session has ended. Please sign in again.');
    } catch {
      // Server unreachable: try again soon. If the token runs out meanwhile the connection is
      // closed and the reconnect gets a new one.
      clearTimeout(auth.renewTimer);
      auth.renewTimer = setTimeout(renewToken, 5000);
    }
  }

  /** Gives the open connection the new token before the old one expires (SEND /app/auth). */
  function sendTokenInBand() {
    const client = state.client;
    if (!client || !client.connected || auth.mode !== 'account') return;
    const receipt = `auth-${Date.now().toString(36)}-${++state.refSeq}`;
    client.watchForReceipt(receipt, () => {
      debug.renewals++;
    });
    client.publish({ destination: '/app/auth', headers: { 'access-token': auth.token, receipt } });
  }

  /** Checks a timer throttled in a background tab did not let the token run out. */
  function checkToken() {
    if (auth.mode === 'account' && auth.token && auth.expiresAt - Date.now() < RENEW_BEFORE * 1000) renewToken();
  }

  const roomPath = (name) => `/api/rooms/${encodeURIComponent(name)}`;

  async function refreshRooms() {
    try {
      const { ok, body } = await api('/api/rooms');
      if (ok && Array.isArray(body)) {
        state.rooms = body.filter((r) => r && typeof r.name === 'string');
        renderRooms();
      }
    } catch {
      /* offline: the next connect refreshes */
    }
  }

  /**
   * Creates a room and returns an error message or null. A public room that exists already is
   * fine (we join it); a private one must be new. Guests cannot create rooms: for them a public
   * room is only joined (the server decides).
   */
  async function createRoom(name, { isPrivate = false } = {}) {
    if (!ROOM_RE.test(name)) return 'Room names are 1–128 letters, digits, _ or -.';
    const known = state.rooms.find((r) => r.name === name);
    if (known) return isPrivate ? `#${name} exists already.` : null;
    if (auth.mode !== 'account') return isPrivate ? 'Guests cannot create private rooms: sign in first.' : null;
    try {
      const { status, body } = await api('/api/rooms', { method: 'POST', json: { name, private: isPrivate } });
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

  async function fetchMessages(room, before, limit) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before != null) query.set('before', String(before));
    const { ok, body } = await api(`${roomPath(room)}/messages?${query}`);
    if (!ok || !body || !Array.isArray(body.messages)) throw new Error('history unavailable');
    return body.messages
      .map((m) => ({
        id: Number(m.id), from: String(m.from ?? '?'), ts: Number(m.ts) || Date.now(), body: String(m.body ?? ''),
        guest: m.guest === true, deleted: m.deleted === true,
      }))
      .filter((m) => Number.isSafeInteger(m.id) && m.id > 0);
  }

  // ---- rooms -------------------------------------------------------------------------------------

  /**
   * Subscribes to `name` (leaving the room we were in): history first if we have none, then the
   * room with `since` = the last id we have, so the server sends what we missed before live ones.
   */
  async function joinRoom(name, { force = false } = {}) {
    if (state.joined === name && !force) return;
    if (state.joined && state.joined !== name) leaveRoom();
    state.joined = name;
    const rs = roomState(name);
    if (!online()) return; // onConnected joins again
    const epoch = ++state.epoch;
    const stale = () => epoch !== state.epoch || !online();
    if (!rs.loaded) {
      renderHistoryStatus();
      try {
        addRoomMessages(rs, await fetchMessages(name, null, PAGE), { history: true });
        rs.loaded = true;
        if (rs.msgs.size < PAGE) rs.atStart = true;
      } catch {
        if (stale()) return;
        showBanner('Could not load the history of this room.');
      }
      if (stale()) return;
      renderHistoryStatus();
      fillViewport(rs);
    }
    const client = state.client;
    const onPresence = (frame) => {
      if (frame.headers.event === 'delete') {
        markDeleted(rs, Number(frame.headers['deleted-id'] || frame.headers['message-id']));
        return;
      }
      const user = frame.headers.user;
      if (!user) return;
      if (frame.headers.event === 'join') noteGuest(user, frame.headers.guest === 'true');
      if (frame.headers.event === 'join') rs.members.add(user);
      else if (frame.headers.event === 'leave' && user !== state.me) rs.members.delete(user);
      if (state.joined === name) renderMembers();
    };
    // Presence before the room itself so no join/leave is missed; events that arrive while the
    // member list is on its way are applied again on top of it.
    let early = [];
    state.subs = [
      client.subscribe(`/topic/${name}.presence`, (frame) => {
        if (early) early.push(frame);
        onPresence(frame);
      }),
      // Without history (it failed to load) there is nothing to continue from: live only.
      client.subscribe(`/topic/${name}`, (frame) => onRoomMessage(rs, frame), rs.loaded ? { since: String(rs.lastId) } : {}),
      client.subscribe(`/topic/${name}.typing`, (frame) => onTyping(rs, frame)),
    ];
    rs.members.add(state.me);
    renderMembers();
    try {
      const { ok, body } = await api(`${roomPath(name)}/members`);
      if (stale()) return;
      if (ok && Array.isArray(body)) {
        rs.members = new Set(body.filter((u) => typeof u === 'string'));
        rs.members.add(state.me);
        const replay = early;
        early = null;
        replay.forEach(onPresence);
      }
    } catch {
      /* keep what presence events told us */
    }
    early = null;
    renderMembers();
  }

  function leaveRoom() {
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

  /** Remembers whether `name` is a guest (for the badge in the member list). */
  function noteGuest(name, guest) {
    if (guest === state.guests.has(name)) return;
    if (guest) state.guests.add(name);
    else state.guests.delete(name);
    if (state.joined && roomState(state.joined).members.has(name)) renderMembers();
  }

  /** A moderator deleted a message: it stays as a tombstone. */
  function markDeleted(rs, id) {
    const msg = rs.msgs.get(id);
    if (!msg) return;
    msg.deleted = true;
    msg.body = '';
    const node = el.list.querySelector(`[data-id="${CSS.escape(String(id))}"]`);
    if (node && isActive('room', rs.name)) {
      const fresh = messageEl(msg);
      node.replaceWith(fresh);
      decorate(fresh);
    }
  }

  function onRoomMessage(rs, frame) {
    const msg = {
      id: Number(frame.headers['message-id']),
      from: frame.headers.sender || '?',
      ts: Number(frame.headers.timestamp) || Date.now(),
      body: frame.body,
      guest: frame.headers['sender-guest'] === 'true',
      deleted: frame.headers.deleted === 'true',
    };
    if (!Number.isSafeInteger(msg.id) || msg.id < 1) return;
    noteGuest(msg.from, msg.guest);
    debug.messages++;
    const previousLast = rs.lastId;
    if (!addRoomMessages(rs, [msg], { ref: frame.headers['client-ref'] })) return;
    const timer = rs.typing.get(msg.from);
    if (timer) {
      clearTimeout(timer);
      rs.typing.delete(msg.from);
      if (isActive('room', rs.name)) renderTyping();
    }
    if (!isActive('room', rs.name) && msg.from !== state.me) {
      rs.unread++;
      renderRooms();
    }
    // Ids are consecutive per room: a jump means we missed some; fetch them. With `since` on
    // SUBSCRIBE this does not happen; it is a safety net.
    if (rs.loaded && msg.id > previousLast + 1) fillGap(rs, previousLast, msg.id);
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
  function addRoomMessages(rs, msgs, { history = false, ref } = {}) {
    let added = false;
    const active = isActive('room', rs.name);
    const pinned = active && nearBottom();
    for (const msg of msgs) {
      if (rs.msgs.has(msg.id)) {
        if (!history) debug.duplicates++;
        continue;
      }
      added = true;
      if (msg.from === state.me) resolvePending(rs.name, msg, ref);
      rs.msgs.set(msg.id, msg);
      rs.lastId = Math.max(rs.lastId, msg.id);
      rs.oldestId = Math.min(rs.oldestId, msg.id);
      if (active) insertMessage(messageEl(msg), msg.id);
    }
    if (added && active) {
      renderHistoryStatus();
      if (pinned || (!history && msgs.some((m) => m.from === state.me))) scrollToBottom();
      else if (!history) el.jump.hidden = false;
    }
    return added;
  }

  async function loadOlder(rs) {
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

  // ---- direct messages ---------------------------------------------------------------------------

  function onDirectMessage(frame) {
    const from = frame.headers.sender;
    if (!from) return;
    const ref = frame.headers['client-ref'];
    if (ref && state.sentRefs.has(ref)) return; // our own, to ourselves: already shown
    const dm = dmState(from);
    const key = `${frame.headers['message-id']}:${frame.headers.timestamp}`;
    if (dm.keys.has(key)) {
      debug.duplicates++;
      return;
    }
    dm.keys.add(key);
    const guest = frame.headers['sender-guest'] === 'true';
    noteGuest(from, guest);
    const msg = { id: `dm-${key}`, from, ts: Number(frame.headers.timestamp) || Date.now(), body: frame.body, guest };
    dm.msgs.push(msg);
    dm.last = Date.now();
    if (isActive('dm', from)) {
      const pinned = nearBottom();
      el.list.append(messageEl(msg));
      decorate(el.list.lastElementChild);
      if (pinned) scrollToBottom();
      else el.jump.hidden = false;
    } else {
      dm.unread++;
    }
    renderDms();
  }

  // ---- sending -----------------------------------------------------------------------------------

  function send() {
    const text = el.input.value;
    if (!text.trim() || !online() || !state.active) return;
    const ref = `${state.me}-${Date.now().toString(36)}-${++state.refSeq}`;
    state.sentRefs.add(ref);
    const { kind, name } = state.active;
    let destination;
    if (kind === 'room') {
      destination = `/topic/${name}`;
      const pending = { ref, room: name, body: text, state: 'sending', stored: false };
      state.pending.set(ref, pending);
      el.pendingList.append(pendingEl(pending));
    } else {
      destination = `/user/${name}/queue/messages`;
      const dm = dmState(name);
      const msg = { id: `local-${ref}`, ref, from: state.me, ts: Date.now(), body: text, state: 'sending', guest: auth.mode === 'guest' };
      dm.msgs.push(msg);
      dm.last = Date.now();
      state.refMsgs.set(ref, msg);
      el.list.append(messageEl(msg));
      decorate(el.list.lastElementChild);
      renderDms();
    }
    state.client.watchForReceipt(ref, () => onReceipt(ref));
    state.client.publish({
      destination,
      body: text,
      headers: { 'content-type': 'text/plain', receipt: ref, 'client-ref': ref },
    });
    el.input.value = '';
    autosize();
    state.lastTypingSent = 0;
    scrollToBottom();
  }

  /** A RECEIPT: a room message is durably stored; a DM was accepted. */
  function onReceipt(ref) {
    const pending = state.pending.get(ref);
    if (pending) {
      pending.stored = true; // its MESSAGE has not come back yet
      return;
    }
    const msg = state.refMsgs.get(ref);
    if (msg) {
      state.refMsgs.delete(ref);
      setMessageState(msg, 'sent');
    }
  }

  /** Our message came back from the server: it replaces the pending entry. */
  function resolvePending(room, msg, ref) {
    let pending = ref && state.pending.get(ref);
    if (!pending && !ref) {
      // From a catch-up (no client-ref there): the oldest unconfirmed one with the same text.
      pending = [...state.pending.values()].find((p) => p.room === room && p.state === 'unconfirmed' && p.body === msg.body);
    }
    if (!pending) return;
    state.pending.delete(pending.ref);
    msg.ref = pending.ref;
    state.refMsgs.set(pending.ref, msg);
    msg.state = pending.stored || pending.state === 'unconfirmed' ? 'sent' : 'sending';
    const node = el.pendingList.querySelector(`[data-ref="${CSS.escape(pending.ref)}"]`);
    if (node) node.remove();
  }

  function setMessageState(msg, value) {
    msg.state = value;
    const node = el.list.querySelector(`[data-id="${CSS.escape(String(msg.id))}"]`);
    if (node) node.dataset.state = value;
  }

  function retry(ref) {
    const pending = state.pending.get(ref);
    if (!pending || !online()) return;
    state.pending.delete(ref);
    el.pendingList.querySelector(`[data-ref="${CSS.escape(ref)}"]`)?.remove();
    const saved = el.input.value;
    el.input.value = pending.body;
    send();
    el.input.value = saved;
  }

  function sendTyping() {
    if (!state.active || state.active.kind !== 'room' || !online() || !el.input.value.trim()) return;
    if (state.joined !== state.active.name) return;
    const now = Date.now();
    if (now - state.lastTypingSent < TYPING_SEND_EVERY) return;
    state.lastTypingSent = now;
    state.client.publish({ destination: `/topic/${state.active.name}.typing`, body: '' });
  }

  // ---- navigation --------------------------------------------------------------------------------

  function parseHash() {
    let raw;
    try {
      raw = decodeURIComponent(location.hash.slice(1));
    } catch {
      return null; // not even valid percent-encoding
    }
    if (raw.startsWith('@') && NAME_RE.test(raw.slice(1))) return { kind: 'dm', name: raw.slice(1) };
    if (ROOM_RE.test(raw)) return { kind: 'room', name: raw };
    return null;
  }

  function initialConversation() {
    const fromHash = parseHash();
    if (fromHash && !(fromHash.kind === 'room' && state.refused.has(fromHash.name))) return fromHash;
    const names = state.rooms.map((r) => r.name).filter((n) => !state.refused.has(n));
    const last = localStorage.getItem(ROOM_KEY);
    const name = names.includes(last) ? last : names.includes('general') ? 'general' : names[0] || 'general';
    return { kind: 'room', name };
  }

  async function openConversation(conv) {
    if (!conv || !state.client) return;
    if (conv.kind === 'dm' && conv.name === state.me) return;
    if (conv.kind === 'room') {
      state.refused.delete(conv.name); // asked for explicitly: try again
      if (!state.rooms.some((r) => r.name === conv.name)) {
        await createRoom(conv.name); // make it visible in everyone's list
      }
      localStorage.setItem(ROOM_KEY, conv.name);
      roomState(conv.name).unread = 0;
    } else {
      dmState(conv.name).unread = 0;
    }
    state.active = conv;
    const hash = conv.kind === 'dm' ? `#@${conv.name}` : `#${conv.name}`;
    if (location.hash !== hash) history.replaceState(null, '', hash);
    closeDrawers();
    renderAll();
    scrollToBottom();
    if (conv.kind === 'room') joinRoom(conv.name);
    if (matchMedia('(pointer: fine)').matches) el.input.focus();
  }

  // ---- rendering ---------------------------------------------------------------------------------

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

  function messageEl(msg) {
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

  function pendingEl(p) {
    const li = h('li', { class: 'msg mine pending', dataset: { ref: p.ref, state: p.state, from: state.me } },
      avatar(state.me),
      h('div', { class: 'meta' }, h('span', { class: 'from' }, state.me), auth.mode === 'guest' ? guestBadge() : null,
        h('span', { class: 'status' }, p.state === 'unconfirmed' ? 'not confirmed' : 'sending…'),
        p.state === 'unconfirmed'
          ? h('button', { type: 'button', class: 'link-btn', onclick: () => retry(p.ref) }, 'Send again')
          : null),
      h('div', { class: 'body' }, p.body));
    return li;
  }

  /** Inserts a room message element in id order (almost always at the end). */
  function insertMessage(li, id) {
    let next = null;
    for (let node = el.list.lastElementChild; node; node = node.previousElementSibling) {
      if (Number(node.dataset.id) < id) break;
      next = node;
    }
    el.list.insertBefore(li, next);
    decorate(li);
    if (next) decorate(next);
  }

  /** A message continues the previous one (no header) when the sender is the same and close in time. */
  function decorate(li) {
    const prev = li.previousElementSibling;
    const cont = prev && prev.dataset.from === li.dataset.from &&
      Number(li.dataset.ts) - Number(prev.dataset.ts) < GROUP_WINDOW;
    li.classList.toggle('cont', Boolean(cont));
  }

  function renderAll() {
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

  function renderRooms() {
    const names = new Set(state.rooms.map((r) => r.name));
    if (state.joined) names.add(state.joined);
    const sorted = [...names].sort((a, b) => a.localeCompare(b));
    el.roomList.replaceChildren(...sorted.map((name) => {
      const rs = state.roomStates.get(name);
      const isPrivate = state.rooms.some((r) => r.name === name && r.private === true);
      return convLink('room', name, rs ? rs.unread : 0, isActive('room', name), isPrivate);
    }));
  }

  function renderDms() {
    const dms = [...state.dms.values()].sort((a, b) => b.last - a.last);
    el.dmList.replaceChildren(...dms.map((dm) => convLink('dm', dm.name, dm.unread, isActive('dm', dm.name))));
    el.dmHint.hidden = dms.length > 0;
  }

  function renderMessages() {
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

  function renderHistoryStatus() {
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
    else box.append(h('button', { type: 'button', class: 'link-btn', onclick: () => loadOlder(rs) }, 'Load older messages'));
    box.dataset.state = !rs.loaded ? 'loading' : rs.atStart ? 'start' : rs.loadingOlder ? 'loading-older' : 'more';
  }

  function renderMembers() {
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
            onclick: () => openConversation({ kind: 'dm', name }),
          }, 'Message'));
    }));
  }

  function renderTyping() {
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

  function showBanner(text) {
    el.banner.textContent = text;
    el.banner.hidden = false;
  }

  function hideBanner() {
    el.banner.hidden = true;
    el.banner.textContent = '';
  }

  function nearBottom() {
    const box = el.messages;
    return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  }

  function scrollToBottom() {
    el.messages.scrollTop = el.messages.scrollHeight;
    el.jump.hidden = true;
  }

  function autosize() {
    el.input.style.height = 'auto';
    el.input.style.height = `${Math.min(el.input.scrollHeight, 160)}px`;
  }

  // ---- drawers (narrow screens) ------------------------------------------------------------------

  function toggleDrawer(drawer, button, open) {
    closeDrawers();
    if (!open) return;
    drawer.classList.add('open');
    button.setAttribute('aria-expanded', 'true');
    el.scrim.hidden = false;
  }

  function closeDrawers() {
    for (const [drawer, button] of [[el.sidebar, el.roomsToggle], [el.members, el.membersToggle]]) {
      drawer.classList.remove('open');
      button.setAttribute('aria-expanded', 'false');
    }
    el.scrim.hidden = true;
  }

  // ---- signing in ------------------------------------------------------------------------------

  /** GET /api/info: are guests allowed, is registration open? */
  async function loadInfo() {
    try {
      const { ok, body } = await api('/api/info', { bearer: false });
      if (ok && body) {
        info.guests = body.guests === true;
        info.registration = body.registration === 'closed' ? 'closed' : 'open';
      }
    } catch {
      /* unknown: offer sign-in only */
    }
    info.loaded = true;
    renderAuthChoices();
  }

  function renderAuthChoices() {
    el.authGuestRow.hidden = !info.guests;
    el.authRegister.hidden = info.registration === 'closed';
    el.authDialog.dataset.ready = String(info.loaded);
  }

  function showSignIn(message = '') {
    if (el.nameDialog.open) el.nameDialog.close();
    setConn('signed-out');
    el.authError.textContent = message;
    el.authPass.value = '';
    renderAuthChoices();
    if (!el.authDialog.open) el.authDialog.showModal();
    (el.authUser.value ? el.authPass : el.authUser).focus();
  }

  function setAuthBusy(busy) {
    for (const button of [el.authSignIn, el.authRegister, el.authGuest]) button.disabled = busy;
    el.authForm.setAttribute('aria-busy', String(busy));
  }

  /** What the server said, in words for people. */
  function authErrorText(status, body, headers, { registering = false } = {}) {
    const reason = body && typeof body.error === 'string' ? body.error : '';
    if (status === 401) return 'Wrong username or password.';
    if (status === 429) {
      const wait = Number.parseInt(headers && headers.get('retry-after'), 10);
      return Number.isFinite(wait) && wait >= 0
        ? `Too many attempts, retry in ${wait} s.`
        : 'Too many attempts, retry in a minute.';
    }
    if (registering && status === 409) return 'Name taken: pick another one.';
    if (registering && status === 403) return reason || 'Registration is closed on this server.';
    if (status === 400) return reason || 'The server refused that request.';
    return reason || `Something went wrong (HTTP ${status}). Please try again.`;
  }

  function registerProblem(username, password) {
    if (!NAME_RE.test(username)) return nameProblem(username);
    if (/^guest-/i.test(username)) return 'Names starting with “guest-” are for guests.';
    if (password.length < 8) return 'Passwords need at least 8 characters.';
    return null;
  }

  /** "Sign in" and "Create account" (which registers, then signs in). */
  async function submitAuth(registering) {
    const username = el.authUser.value.trim();
    const password = el.authPass.value;
    el.authError.textContent = '';
    const problem = registering ? registerProblem(username, password)
      : !username || !password ? 'Enter your username and password.' : null;
    if (problem) {
      el.authError.textContent = problem;
      (username && !problem.startsWith('Passwords') ? el.authPass : el.authUser).focus();
      return;
    }
    setAuthBusy(true);
    try {
      if (registering) {
        const r = await api('/api/register', { method: 'POST', json: { username, password }, bearer: false });
        if (r.status !== 201 && r.status !== 200) {
          el.authError.textContent = authErrorText(r.status, r.body, r.headers, { registering: true });
          return;
        }
      }
      const r = await withSessionLock(() => api('/api/login', {
        method: 'POST', json: { username, password, cookie: true }, cookie: true, bearer: false,
      }));
      if (r.status !== 200 || !r.body || typeof r.body.access_token !== 'string') {
        el.authError.textContent = authErrorText(r.status, r.body, r.headers);
        if (r.status === 401) {
          el.authPass.select();
          el.authPass.focus();
        }
        return;
      }
      el.authPass.value = '';
      auth.mode = 'account';
      state.name = null;
      await acceptToken(r.body);
      state.name = state.name || username;
      el.authDialog.close();
      start();
    } catch {
      el.authError.textContent = 'Could not reach the server. Please try again.';
    } finally {
      setAuthBusy(false);
    }
  }

  // ---- guests -----------------------------------------------------------------------------------

  function askName(error = '') {
    if (el.authDialog.open) el.authDialog.close();
    el.nameInput.value = state.name || localStorage.getItem(NAME_KEY) || '';
    el.nameError.textContent = error;
    const running = Boolean(state.client);
    // Before connecting the way out is back to the sign-in screen; once chatting, cancel.
    el.nameCancel.hidden = false;
    el.nameCancel.textContent = running ? 'Cancel' : 'Back';
    el.nameDialog.dataset.first = String(!running);
    el.nameDialog.showModal();
    el.nameInput.focus();
  }

  function nameProblem(name) {
    if (!name) return 'Please enter a name.';
    if (name.length > 32) return 'That is too long: at most 32 characters.';
    const bad = [...new Set(name.replace(/[A-Za-z0-9_.-]/g, ''))].map((c) => (c === ' ' ? 'spaces' : `“${c}”`));
    return `Names can only use letters, digits, _ - and . (not ${bad.join(', ')}).`;
  }

  function startGuest(name) {
    auth.mode = 'guest';
    auth.token = null;
    clearTimeout(auth.renewTimer);
    state.name = name;
    start();
  }

  async function changeName(name) {
    if (name === state.name) return;
    await stopClient();
    startGuest(name); // onConnected joins the room we are looking at again
  }

  // ---- session -----------------------------------------------------------------------------------

  function start() {
    renderMe();
    setConn('connecting');
    connect();
  }

  /** Closes the connection and forgets everything learnt under the current identity. */
  async function stopClient() {
    const old = state.client;
    state.client = null;
    state.epoch++;
    leaveRoom();
    state.roomStates.clear();
    state.dms.clear();
    state.pending.clear();
    state.refMsgs.clear();
    state.guests.clear();
    state.refused.clear();
    state.everOnline = false;
    renderAll();
    if (old) await old.deactivate();
  }

  function clearSession() {
    clearTimeout(auth.renewTimer);
    auth.mode = null;
    auth.token = null;
    auth.expiresAt = 0;
    auth.stale = false;
    auth.failures = 0;
    state.name = null;
    state.me = null;
    renderMe();
  }

  /** The server no longer knows our session (revoked, expired, signed out elsewhere). */
  function sessionEnded(message) {
    if (!auth.mode) return;
    stopClient();
    clearSession();
    showSignIn(message);
  }

  async function signOut() {
    const wasAccount = auth.mode === 'account';
    await stopClient();
    clearSession();
    if (wasAccount) {
      try {
        // Revokes the refresh token family and clears the cookie.
        await withSessionLock(() => api('/api/logout', { method: 'POST', json: {}, cookie: true, bearer: false }));
      } catch {
        /* the server is unreachable; the cookie is still dropped when the family expires */
      }
    } else {
      localStorage.removeItem(NAME_KEY);
    }
    showSignIn();
  }

  function renderMe() {
    el.meName.textContent = state.me || state.name || '';
    el.meGuest.hidden = auth.mode !== 'guest';
    el.changeName.hidden = auth.mode !== 'guest';
    el.newRoomPrivateLabel.hidden = auth.mode !== 'account';
    if (auth.mode !== 'account') el.newRoomPrivate.checked = false;
  }

  /** On load: resume the session from the cookie, else a remembered guest name, else sign in. */
  async function boot() {
    renderAll();
    renderMe();
    const infoLoaded = loadInfo();
    let resumed = false;
    let unreachable = false;
    try {
      resumed = await refreshToken();
    } catch {
      unreachable = true;
    }
    await infoLoaded;
    if (resumed && auth.token) {
      auth.mode = 'account';
      start();
      return;
    }
    const saved = localStorage.getItem(NAME_KEY);
    if (info.guests && saved && NAME_RE.test(saved)) {
      startGuest(saved);
      return;
    }
    showSignIn(unreachable ? 'Could not reach the server. Please try again.' : '');
  }

  // ---- events ------------------------------------------------------------------------------------

  el.composer.addEventListener('submit', (e) => {
    e.preventDefault();
    send();
  });
  el.input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  el.input.addEventListener('input', () => {
    autosize();
    sendTyping();
  });

  el.messages.addEventListener('scroll', () => {
    if (nearBottom()) el.jump.hidden = true;
    const conv = state.active;
    if (conv && conv.kind === 'room' && el.messages.scrollTop < 120) loadOlder(roomState(conv.name));
  }, { passive: true });
  el.jump.addEventListener('click', scrollToBottom);

  el.newRoomForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = el.newRoom.value.trim().replace(/^#/, '');
    const isPrivate = el.newRoomPrivate.checked && auth.mode === 'account';
    const error = await createRoom(name, { isPrivate });
    el.newRoomError.textContent = error || '';
    if (error) return;
    el.newRoom.value = '';
    el.newRoomPrivate.checked = false;
    openConversation({ kind: 'room', name });
  });

  window.addEventListener('hashchange', () => {
    const conv = parseHash();
    if (conv && !isActive(conv.kind, conv.name)) openConversation(conv);
  });

  el.roomsToggle.addEventListener('click', () => toggleDrawer(el.sidebar, el.roomsToggle, !el.sidebar.classList.contains('open')));
  el.membersToggle.addEventListener('click', () => toggleDrawer(el.members, el.membersToggle, !el.members.classList.contains('open')));
  el.scrim.addEventListener('click', closeDrawers);
  for (const button of document.querySelectorAll('.drawer-close')) button.addEventListener('click', closeDrawers);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') closeDrawers();
  });

  el.changeName.addEventListener('click', () => askName());
  const nameBack = () => {
    el.nameDialog.close();
    if (!state.client) showSignIn(); // not chatting yet: back to the sign-in screen
  };
  el.nameCancel.addEventListener('click', nameBack);
  el.nameDialog.addEventListener('cancel', (e) => {
    e.preventDefault();
    nameBack();
  });
  el.nameForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = el.nameInput.value.trim();
    if (!NAME_RE.test(name)) {
      el.nameError.textContent = nameProblem(name);
      el.nameInput.focus();
      return;
    }
    localStorage.setItem(NAME_KEY, name);
    el.nameDialog.close();
    if (!state.client) startGuest(name);
    else changeName(name);
  });

  el.authForm.addEventListener('submit', (e) => {
    e.preventDefault();
    submitAuth(false);
  });
  el.authRegister.addEventListener('click', () => submitAuth(true));
  el.authGuest.addEventListener('click', () => askName());
  el.authDialog.addEventListener('cancel', (e) => e.preventDefault()); // nothing to go back to
  el.signOut.addEventListener('click', signOut);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') checkToken();
  });

  setInterval(() => {
    if (online() && document.visibilityState === 'visible') refreshRooms();
  }, ROOMS_REFRESH);
  window.addEventListener('focus', () => {
    if (online()) refreshRooms();
  });

  // ---- start -------------------------------------------------------------------------------------

  boot();
})();
