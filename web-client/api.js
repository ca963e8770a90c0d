// HTTP: the fetch wrapper (Bearer token; on a 401 one refresh and retry), the cross-tab session lock, the REST calls.

import { auth } from './state.js';

/** How a Bearer call that got a 401 gets a fresh token (session.js sets it): true when it did. */
let refreshAccess = async () => false;
export function setTokenRefresher(fn) {
  refreshAccess = fn;
}

/**
 * A JSON request. An account's calls carry `Authorization: Bearer <access token>` and no cookie
 * (credentials 'omit'): only the session endpoints (login, refresh, logout) use the cookie, with
 * `cookie: true`. A 401 on a Bearer call gets a fresh token and one retry.
 */
export async function api(path, { method = 'GET', json, cookie = false, bearer = true, retry = true } = {}) {
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
      renewed = await refreshAccess();
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

/** Runs `fn` holding a lock shared by this site's tabs (when the browser has Web Locks). */
export function withSessionLock(fn) {
  if (navigator.locks && navigator.locks.request) return navigator.locks.request('parley-session', fn);
  return fn();
}

// ---- server and session ------------------------------------------------------------------------

/** GET /api/info (no auth): the body, or null when the server answered with an error. */
export async function getInfo() {
  const { ok, body } = await api('/api/info', { bearer: false });
  return ok && body ? body : null;
}

export const register = (username, password) =>
  api('/api/register', { method: 'POST', json: { username, password }, bearer: false });

/** POST /api/login asking for the refresh token as an HttpOnly cookie (under the session lock). */
export const login = (username, password) => withSessionLock(() => api('/api/login', {
  method: 'POST', json: { username, password, cookie: true }, cookie: true, bearer: false,
}));

/** Revokes the refresh token family and clears the cookie (under the session lock). */
export const logout = () =>
  withSessionLock(() => api('/api/logout', { method: 'POST', json: {}, cookie: true, bearer: false }));

/** POST /api/token/refresh with the session cookie; the caller holds the session lock. */
export const postRefresh = () => api('/api/token/refresh', { method: 'POST', json: {}, cookie: true, bearer: false });

/** GET /api/me with `token` (not necessarily the one in use yet): the username, or null. */
export async function fetchMe(token) {
  const me = await fetch('/api/me', { headers: { authorization: `Bearer ${token}`, accept: 'application/json' }, credentials: 'omit' })
    .then((r) => (r.ok ? r.json() : null)).catch(() => null);
  return me && typeof me.username === 'string' ? me.username : null;
}

// ---- other sites' accounts (OAuth 2.0 / OpenID Connect) -----------------------------------------

const PROVIDER_NAME = /^[a-z0-9-]{1,32}$/;

/** GET /api/auth/providers: [{name, label, kind}] the server lets people sign in with ([] if none). */
export async function listProviders() {
  const { ok, body } = await api('/api/auth/providers', { bearer: false });
  if (!ok || !body || !Array.isArray(body.providers)) return [];
  return body.providers
    .filter((p) => p && typeof p.name === 'string' && PROVIDER_NAME.test(p.name))
    .map((p) => ({ name: p.name, label: typeof p.label === 'string' && p.label ? p.label : p.name, kind: p.kind }));
}

/** GET /api/auth/signup (the HttpOnly sign-up cookie): {provider, label, suggested}, or null (none pending). */
export async function pendingSignup() {
  const { ok, body } = await api('/api/auth/signup', { cookie: true, bearer: false });
  return ok && body && typeof body.provider === 'string' ? body : null;
}

/** POST /api/auth/signup {"name"}: the account is made and signed in (token JSON + session cookie). */
export const postSignup = (name) => withSessionLock(() => api('/api/auth/signup', {
  method: 'POST', json: { name }, cookie: true, bearer: false,
}));

/** GET /api/account/identities: {password, identities: [{provider, label, linked_ms}]}, or null. */
export async function listIdentities() {
  const { ok, body } = await api('/api/account/identities');
  if (!ok || !body || !Array.isArray(body.identities)) return null;
  return {
    password: body.password === true,
    identities: body.identities.filter((i) => i && typeof i.provider === 'string'),
  };
}

export const unlinkIdentity = (provider) =>
  api(`/api/account/identities/${encodeURIComponent(provider)}`, { method: 'DELETE' });

// ---- rooms -------------------------------------------------------------------------------------

const roomPath = (name) => `/api/rooms/${encodeURIComponent(name)}`;

/**
 * One page of GET /api/rooms: `{rooms: [{name, private}], next}` (`next`: the cursor of the next
 * page, null on the last), or null when the server answered with an error. Names start with
 * `prefix`, come after `after`; the server picks the page size unless `limit` is given.
 */
export async function listRooms({ prefix = '', after = null, limit = null } = {}) {
  const query = new URLSearchParams();
  if (prefix) query.set('prefix', prefix);
  if (after) query.set('after', after);
  if (limit) query.set('limit', String(limit));
  const qs = query.toString();
  const { ok, body } = await api(qs ? `/api/rooms?${qs}` : '/api/rooms');
  if (!ok || !body || !Array.isArray(body.rooms)) return null;
  const rooms = body.rooms.filter((r) => r && typeof r.name === 'string');
  return { rooms, next: typeof body.next === 'string' ? body.next : null };
}

export const postRoom = (name, isPrivate) => api('/api/rooms', { method: 'POST', json: { name, private: isPrivate } });

/** GET a room's members: their names, or null when the server answered with an error. */
export async function listMembers(room) {
  const { ok, body } = await api(`${roomPath(room)}/members`);
  return ok && Array.isArray(body) ? body.filter((u) => typeof u === 'string') : null;
}

/** Up to `limit` stored messages of `room` with ids below `before` (the latest when null); throws on errors. */
export async function fetchMessages(room, before, limit) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (before != null) query.set('before', String(before));
  const { ok, body } = await api(`${roomPath(room)}/messages?${query}`);
  if (!ok || !body || !Array.isArray(body.messages)) throw new Error('history unavailable');
  return body.messages
    .map((m) => ({
      id: Number(m.id), from: String(m.from ?? '?'), ts: Number(m.ts) || Date.now(), body: String(m.body ?? ''),
      guest: m.guest === true, deleted: m.deleted === true, edited: m.edited === true, room,
      replyTo: Number(m.reply_to) || null, clientId: typeof m.client_id === 'string' ? m.client_id : null,
      reactions: reactionsOf(m.reactions),
    }))
    .filter((m) => Number.isSafeInteger(m.id) && m.id > 0);
}

// ---- read state and direct-message conversations -------------------------------------------------

/** GET /api/unread: `[{name, last_read, unread, mentions}]` of the rooms we marked read, or null. */
export async function fetchUnread() {
  const { ok, body } = await api('/api/unread');
  return ok && body && Array.isArray(body.rooms) ? body.rooms.filter((r) => r && typeof r.name === 'string') : null;
}

/** Marks a room (`kind` 'room') or a conversation ('dm') read up to `id`: the answer, or null. */
export async function postRead(kind, name, id) {
  const base = kind === 'dm' ? '/api/dms' : '/api/rooms';
  const { ok, body } = await api(`${base}/${encodeURIComponent(name)}/read`, { method: 'POST', json: { id: String(id) } });
  return ok ? body : null;
}

/** GET /api/dms: `[{with, last_id, last_ts, last_read, unread}]`, the latest first, or null. */
export async function listDms() {
  const { ok, body } = await api('/api/dms');
  return ok && body && Array.isArray(body.conversations)
    ? body.conversations.filter((c) => c && typeof c.with === 'string') : null;
}

/**
 * Up to `limit` stored messages of our conversation with `peer`, ids below `before` (the latest
 * when null), oldest first; null when `peer` is no account (404); throws on other errors.
 */
export async function fetchDmMessages(peer, before, limit) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (before != null) query.set('before', String(before));
  const { ok, status, body } = await api(`/api/dms/${encodeURIComponent(peer)}/messages?${query}`);
  if (status === 404) return null;
  if (!ok || !body || !Array.isArray(body.messages)) throw new Error('history unavailable');
  return body.messages
    .map((m) => ({
      id: Number(m.id), from: String(m.from ?? '?'), ts: Number(m.ts) || Date.now(), body: String(m.body ?? ''),
      guest: m.guest === true, deleted: m.deleted === true,
    }))
    .filter((m) => Number.isSafeInteger(m.id) && m.id > 0);
}

/** History's `reactions: [{emoji, users}]` as the page keeps them: emoji -> Set of users, in order. */
function reactionsOf(list) {
  const map = new Map();
  if (!Array.isArray(list)) return map;
  for (const r of list) {
    if (!r || typeof r.emoji !== 'string' || !Array.isArray(r.users)) continue;
    const users = new Set(r.users.filter((u) => typeof u === 'string'));
    if (users.size) map.set(r.emoji, users);
  }
  return map;
}

// ---- changing messages -------------------------------------------------------------------------

/** PATCH, DELETE or a reaction of message `id` of `room`: {status, ok, body} (body.error when refused). */
export function changeMessage(room, id, change) {
  const path = `${roomPath(room)}/messages/${encodeURIComponent(String(id))}`;
  if (change.kind === 'edit') return api(path, { method: 'PATCH', json: { body: change.body } });
  if (change.kind === 'delete') return api(path, { method: 'DELETE' });
  return api(`${path}/reactions`, { method: 'POST', json: { emoji: change.body, on: change.kind === 'react' } });
}
