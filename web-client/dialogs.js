// The sign-in and guest-name dialogs: showing them, what they offer (/api/info), their checks and error texts.

import { el, h } from './dom.js';
import { setConn } from './render.js';
import { NAME_KEY, NAME_RE, info, state } from './state.js';

/**
 * The guest button and "Create account" as the server allows (GET /api/info), and a "Sign in
 * with …" link per site the server accepts accounts of (GET /api/auth/providers). The links are
 * plain navigations: the server sends the browser to the provider and, once back, sets the
 * session cookie the page resumes from.
 */
export function renderAuthChoices() {
  el.authGuestRow.hidden = !info.guests;
  el.authRegister.hidden = info.registration === 'closed';
  el.authProviders.hidden = info.providers.length === 0;
  el.providerList.replaceChildren(...info.providers.map((p) => h('li', null,
    h('a', { class: 'provider-login', href: `/auth/${p.name}/login`, dataset: { provider: p.name } },
      `Sign in with ${p.label}`))));
  el.authDialog.dataset.ready = String(info.loaded);
}

export function showSignIn(message = '') {
  if (el.nameDialog.open) el.nameDialog.close();
  if (el.signupDialog.open) el.signupDialog.close();
  setConn('signed-out');
  el.authError.textContent = message;
  el.authPass.value = '';
  renderAuthChoices();
  if (!el.authDialog.open) el.authDialog.showModal();
  (el.authUser.value ? el.authPass : el.authUser).focus();
}

export function setAuthBusy(busy) {
  for (const button of [el.authSignIn, el.authRegister, el.authGuest, el.signupSubmit]) button.disabled = busy;
  el.authForm.setAttribute('aria-busy', String(busy));
}

/** What the server said, in words for people. */
export function authErrorText(status, body, headers, { registering = false } = {}) {
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

export function registerProblem(username, password) {
  if (!NAME_RE.test(username)) return nameProblem(username);
  if (/^guest-/i.test(username)) return 'Names starting with “guest-” are for guests.';
  if (password.length < 8) return 'Passwords need at least 8 characters.';
  return null;
}

/** The guest-name dialog (also "Change" for a guest who is chatting). */
export function askName(error = '') {
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

export function nameProblem(name) {
  if (!name) return 'Please enter a name.';
  if (name.length > 32) return 'That is too long: at most 32 characters.';
  const bad = [...new Set(name.replace(/[A-Za-z0-9_.-]/g, ''))].map((c) => (c === ' ' ? 'spaces' : `“${c}”`));
  return `Names can only use letters, digits, _ - and . (not ${bad.join(', ')}).`;
}
