// Other sites' accounts (docs/auth.md): the "Choose a name" form after a first sign-in whose name
// was taken, and the signed-in account's ways to sign in (link, unlink).
//
// The sign-in itself is plain navigation (the links of dialogs.js): the server sends the browser
// to the provider and back, then sets the session cookie this page resumes from on load. When the
// provider's name for the person is taken or invalid here, the server sends the browser to
// `/?signup` with an HttpOnly cookie that remembers the pending sign-up; the page asks for a name
// (GET/POST /api/auth/signup) and the server says what is wrong with one, in words.

import { listIdentities, pendingSignup, postSignup, unlinkIdentity } from './api.js';
import { start } from './connection.js';
import { authErrorText, setAuthBusy, showSignIn } from './dialogs.js';
import { el, h } from './dom.js';
import { acceptToken } from './session.js';
import { auth, info, state } from './state.js';

/** Whether the page was opened as `/?signup` (the server's answer to a sign-in that needs a name). */
export const signupRequested = () => new URLSearchParams(location.search).has('signup');

/** Drops `?signup` from the address, keeping the hash (the room), so a reload does not ask again. */
function forgetSignupUrl() {
  if (signupRequested()) history.replaceState(null, '', `/${location.hash}`);
}

/**
 * On load with `?signup`: the pending sign-up's provider and suggested name, in the "Choose a
 * name" dialog. False when there is none (expired, or already finished): the caller shows the
 * sign-in screen.
 */
export async function offerSignup() {
  let pending = null;
  try {
    pending = await pendingSignup();
  } catch {
    /* unreachable: the sign-in screen says so */
  }
  if (!pending) {
    forgetSignupUrl();
    return false;
  }
  const label = typeof pending.label === 'string' && pending.label ? pending.label : pending.provider;
  el.signupIntro.textContent = `You signed in with ${label}. Choose the name others will see here.`;
  el.signupName.value = typeof pending.suggested === 'string' ? pending.suggested : '';
  el.signupError.textContent = '';
  if (el.authDialog.open) el.authDialog.close();
  el.signupDialog.showModal();
  el.signupName.select();
  el.signupName.focus();
  return true;
}

/** "Continue": POST /api/auth/signup; on 200 the account exists and the page signs in with it. */
async function submitSignup() {
  const name = el.signupName.value.trim();
  el.signupError.textContent = '';
  if (!name) {
    el.signupError.textContent = 'Please enter a name.';
    el.signupName.focus();
    return;
  }
  setAuthBusy(true);
  try {
    const r = await postSignup(name);
    if (r.status === 200 && r.body && typeof r.body.access_token === 'string') {
      auth.mode = 'account';
      state.name = null;
      await acceptToken(r.body);
      state.name = state.name || name;
      el.signupDialog.close();
      forgetSignupUrl();
      start();
      return;
    }
    if (r.status === 404 || r.status === 410) { // the pending sign-up expired or was used in another tab
      el.signupDialog.close();
      forgetSignupUrl();
      showSignIn('That sign-in has expired. Please sign in again.');
      return;
    }
    el.signupError.textContent = r.status === 409 ? `The name “${name}” is taken: pick another one.`
      : authErrorText(r.status, r.body, r.headers);
    el.signupName.select();
    el.signupName.focus();
  } catch {
    el.signupError.textContent = 'Could not reach the server. Please try again.';
  } finally {
    setAuthBusy(false);
  }
}

function cancelSignup() {
  el.signupDialog.close();
  forgetSignupUrl();
  showSignIn();
}

// ---- the account's ways to sign in -------------------------------------------------------------

let loading = 0; // bumped per load: an older answer arriving late draws nothing

/** Lists the password (if any) and every provider: linked ones with "Unlink", others with "Link". */
export async function loadIdentities() {
  const seq = ++loading;
  const list = await listIdentities().catch(() => null);
  if (seq !== loading || auth.mode !== 'account') return;
  if (!list) {
    el.identitiesError.textContent = 'Could not load your ways to sign in.';
    return;
  }
  const linked = new Map(list.identities.map((i) => [i.provider, i]));
  const rows = [];
  if (list.password) rows.push(h('li', { class: 'identity', dataset: { kind: 'password' } }, h('span', null, 'Password')));
  const known = new Set();
  for (const p of info.providers) {
    known.add(p.name);
    rows.push(identityRow(p.name, p.label, linked.get(p.name)));
  }
  // Linked to a provider the server no longer offers: can still be unlinked.
  for (const i of list.identities) if (!known.has(i.provider)) rows.push(identityRow(i.provider, i.label || i.provider, i));
  el.identities.replaceChildren(...rows);
  el.identities.dataset.loaded = 'true';
}

function identityRow(name, label, identity) {
  if (!identity) {
    return h('li', { class: 'identity', dataset: { provider: name, linked: 'false' } },
      h('a', {
        class: 'provider-link', href: `/auth/${encodeURIComponent(name)}/login?link=1&return_to=/`, dataset: { provider: name },
      }, `Link ${label}`));
  }
  const since = Number(identity.linked_ms);
  return h('li', { class: 'identity', dataset: { provider: name, linked: 'true' } },
    h('span', { title: Number.isFinite(since) && since > 0 ? `Linked ${new Date(since).toLocaleString()}` : null }, label),
    h('button', {
      type: 'button', class: 'link-btn provider-unlink', dataset: { provider: name },
      'aria-label': `Unlink ${label}`, onclick: (e) => unlink(name, e.currentTarget),
    }, 'Unlink'));
}

async function unlink(name, button) {
  el.identitiesError.textContent = '';
  button.disabled = true;
  try {
    const r = await unlinkIdentity(name);
    if (r.status === 204 || r.status === 404) {
      await loadIdentities();
      return;
    }
    el.identitiesError.textContent = authErrorText(r.status, r.body, r.headers);
  } catch {
    el.identitiesError.textContent = 'Could not reach the server. Please try again.';
  } finally {
    button.disabled = false;
  }
}

/** Signing out: nothing of the last account's identities stays on the page. */
export function forgetIdentities() {
  loading++;
  el.identitiesBox.open = false;
  el.identities.replaceChildren();
  delete el.identities.dataset.loaded;
  el.identitiesError.textContent = '';
}

export function wireProviders() {
  el.signupForm.addEventListener('submit', (e) => {
    e.preventDefault();
    submitSignup();
  });
  el.signupCancel.addEventListener('click', cancelSignup);
  el.signupDialog.addEventListener('cancel', (e) => {
    e.preventDefault();
    cancelSignup();
  });
  el.identitiesBox.addEventListener('toggle', () => {
    el.identitiesError.textContent = '';
    if (el.identitiesBox.open) loadIdentities();
  });
}
