// Getting in and out: what the server offers (GET /api/info), accounts (create, sign in, sign out) and guests (name, change).

import { getInfo, listProviders, login, logout, register } from './api.js';
import { start, stopClient } from './connection.js';
import { authErrorText, registerProblem, renderAuthChoices, setAuthBusy, showSignIn } from './dialogs.js';
import { el } from './dom.js';
import { closeMentions } from './mentions.js';
import { forgetPlace } from './navigation.js';
import { forgetOutbox } from './outbox.js';
import { forgetNotify } from './notify.js';
import { autosize, closeDrawers, hideBanner, renderAll } from './render.js';
import { learnRoomRule, resetRooms } from './rooms.js';
import { resetPeople } from './people.js';
import { forgetIdentities } from './providers.js';
import { acceptToken, clearSession } from './session.js';
import { NAME_KEY, auth, info, state } from './state.js';

/**
 * GET /api/info: are guests allowed, is registration open, what is a room name? And GET
 * /api/auth/providers: which other sites' accounts may sign in.
 */
export async function loadInfo() {
  const providers = listProviders().catch(() => []);
  try {
    const body = await getInfo();
    if (body) {
      info.guests = body.guests === true;
      info.registration = body.registration === 'closed' ? 'closed' : 'open';
      learnRoomRule(body.rooms);
      // Rooms and direct messages alike (both are stored conversations).
      const max = body.messages && body.messages.max_body;
      if (Number.isSafeInteger(max) && max > 0) info.maxBody = info.maxDmBody = max;
      const editWindow = body.messages && body.messages.edit_window_s;
      if (Number.isSafeInteger(editWindow) && editWindow >= 0) info.editWindowS = editWindow;
    }
  } catch {
    /* unknown: offer sign-in only, check no room names here */
  }
  info.providers = await providers;
  info.loaded = true;
  renderAuthChoices();
}

/** "Sign in" and "Create account" (which registers, then signs in). */
export async function submitAuth(registering) {
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
      const r = await register(username, password);
      if (r.status !== 201 && r.status !== 200) {
        el.authError.textContent = authErrorText(r.status, r.body, r.headers, { registering: true });
        return;
      }
    }
    const r = await login(username, password);
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

export function startGuest(name) {
  auth.mode = 'guest';
  auth.token = null;
  clearTimeout(auth.renewTimer);
  state.name = name;
  start();
}

/** A guest picked another name: reconnect under it. */
export async function changeName(name) {
  if (name === state.name) return;
  await stopClient();
  startGuest(name); // onConnected joins the room we are looking at again
}

export async function signOut() {
  const wasAccount = auth.mode === 'account';
  await stopClient();
  forgetUser();
  clearSession();
  if (wasAccount) {
    try {
      await logout(); // revokes the refresh token family and clears the cookie
    } catch {
      /* the server is unreachable; the cookie is still dropped when the family expires */
    }
  } else {
    localStorage.removeItem(NAME_KEY);
  }
  showSignIn();
}

/**
 * Clears the screen of everything of the user who was here (stopClient already dropped their
 * conversations, members, typing and badges): the room list, the open conversation and the
 * remembered one, what was typed anywhere, banners, the notification choice, the title. The next
 * user on this page sees nothing of them.
 */
export function forgetUser() {
  resetRooms();
  resetPeople();
  forgetPlace();
  state.sentRefs.clear();
  forgetOutbox();
  state.lastTypingSent = 0;
  for (const input of [el.input, el.roomFilter, el.newRoom, el.authUser, el.authPass, el.signupName]) input.value = '';
  forgetIdentities();
  el.newRoomPrivate.checked = false;
  el.newRoomError.textContent = '';
  closeMentions();
  closeDrawers();
  hideBanner();
  forgetNotify();
  autosize();
  renderAll();
}
