// The account session: the access token (in memory only), cookie refresh, renewal before expiry and in-band hand-over, its end.
//
// Accounts (docs/auth.md): the page signs in with POST /api/login {"cookie":true}. The refresh
// token is then an HttpOnly cookie the page never sees; the short-lived access token (a JWT) lives
// only in `auth.token` (state.js), never in localStorage. It goes to the server as STOMP CONNECT
// `passcode` and as `Authorization: Bearer` on REST calls, and is renewed (cookie refresh) about a
// minute before it expires and handed to the open connection in-band (SEND /app/auth).

import { fetchMe, postRefresh, withSessionLock } from './api.js';
import { showSignIn } from './dialogs.js';
import { renderMe } from './render.js';
import { NAME_RE, auth, debug, online, state } from './state.js';
import { publishWithReceipt } from './transport/stomp.js';

const RENEW_BEFORE = 60; // s: renew the access token this long before it expires
const MIN_TOKEN_LEFT = 30000; // ms: connect with a fresh token when less than this is left

/** How the end of a session closes the connection (connection.js's stopClient; main.js sets it). */
let stopConnection = () => {};
export function setConnectionStopper(fn) {
  stopConnection = fn;
}

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

/**
 * POST /api/token/refresh with the session cookie: true with a new access token, false when
 * there is no (longer a) session; throws when the server cannot be reached. One at a time, and
 * one tab at a time: a refresh token is single-use, and presenting a rotated one twice signs
 * everyone out (the server takes it for theft).
 */
export function refreshToken() {
  if (!auth.refreshing) {
    auth.refreshing = withSessionLock(async () => {
      debug.refreshes++;
      const { status, body } = await postRefresh();
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
export async function acceptToken(body) {
  const token = body.access_token;
  const user = tokenSubject(token) || await fetchMe(token);
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

/**
 * Before connecting an account: a fresh token if it was refused (expired on a long-lived
 * connection, server restarted with other keys, …) or runs out soon. False when the session is
 * over; true otherwise, also when the server cannot be reached (that attempt fails and the
 * backoff tries again).
 */
export async function ensureToken() {
  if (auth.token && !auth.stale && auth.expiresAt - Date.now() >= MIN_TOKEN_LEFT) return true;
  try {
    return await refreshToken();
  } catch {
    return true;
  }
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
  publishWithReceipt(client, { destination: '/app/auth', headers: { 'access-token': auth.token, receipt } }, () => {
    debug.renewals++;
  });
}

/** Checks a timer throttled in a background tab did not let the token run out. */
export function checkToken() {
  if (auth.mode === 'account' && auth.token && auth.expiresAt - Date.now() < RENEW_BEFORE * 1000) renewToken();
}

/** Forgets who we are (the token too), without telling the server. */
export function clearSession() {
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
export function sessionEnded(message) {
  if (!auth.mode) return;
  stopConnection();
  clearSession();
  showSignIn(message);
}
