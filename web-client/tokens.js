// The "Access tokens" dialog: an account's personal access tokens for programs — make one (shown
// only once, with a copy button), list them, revoke them. Calls /api/tokens with the page's
// access token (a JWT), which may manage tokens; see docs/auth.md, "Tokens for programs".

import { api } from './api.js';
import { h } from './dom.js';
import { auth } from './state.js';

const $ = (id) => document.getElementById(id);

const ui = {
  open: $('tokens-open'), dialog: $('tokens-dialog'), form: $('tokens-form'),
  name: $('token-name'), scope: $('token-scope'), room: $('token-room'), roomLabel: $('token-room-label'),
  days: $('token-days'), error: $('tokens-error'), created: $('token-created'), value: $('token-value'),
  copy: $('token-copy'), list: $('token-list'), empty: $('tokens-empty'), close: $('tokens-close'),
};

const SCOPE_WORDS = { all: 'everything', read: 'read-only' };

/** Shows the "Access tokens" button to accounts only (guests have no tokens). */
export function renderTokensButton() {
  ui.open.hidden = auth.mode !== 'account';
}

export function wireTokens() {
  ui.open.addEventListener('click', openTokens);
  ui.close.addEventListener('click', () => ui.dialog.close());
  ui.scope.addEventListener('change', renderScope);
  ui.form.addEventListener('submit', (e) => {
    e.preventDefault();
    createToken();
  });
  ui.copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(ui.value.textContent);
      ui.copy.textContent = 'Copied';
    } catch {
      // No clipboard (plain http, permissions): select it for a manual copy.
      window.getSelection().selectAllChildren(ui.value);
      ui.copy.textContent = 'Press Ctrl+C';
    }
  });
  // The token is shown once: it goes when the dialog closes.
  ui.dialog.addEventListener('close', hideCreated);
  renderScope();
}

function renderScope() {
  ui.roomLabel.hidden = ui.scope.value !== 'room';
  ui.room.required = ui.scope.value === 'room';
}

function hideCreated() {
  ui.created.hidden = true;
  ui.value.textContent = '';
}

async function openTokens() {
  ui.error.textContent = '';
  hideCreated();
  ui.form.reset();
  renderScope();
  ui.dialog.showModal();
  ui.name.focus();
  await loadTokens();
}

async function loadTokens() {
  const { ok, status, body } = await api('/api/tokens');
  if (!ok) {
    ui.error.textContent = problem(status, body);
    return;
  }
  const tokens = Array.isArray(body && body.tokens) ? body.tokens : [];
  ui.list.replaceChildren(...tokens.map(tokenItem));
  ui.empty.hidden = tokens.length > 0;
}

function tokenItem(token) {
  const scope = String(token.scope || '');
  const what = SCOPE_WORDS[scope] || (scope.startsWith('room:') ? `room ${scope.slice(5)}` : scope);
  const expires = new Date(Number(token.expires_ms)).toLocaleDateString();
  const revoke = h('button', { type: 'button', class: 'link-btn token-revoke' }, 'Revoke');
  revoke.addEventListener('click', () => revokeToken(token, revoke));
  return h('li', { class: 'token-item', 'data-id': token.id },
    h('span', { class: 'token-name' }, String(token.name || '')),
    h('span', { class: 'token-meta' }, `${what} · expires ${expires}`),
    revoke);
}

async function createToken() {
  ui.error.textContent = '';
  const name = ui.name.value.trim();
  const scope = ui.scope.value === 'room' ? `room:${ui.room.value.trim()}` : ui.scope.value;
  const days = Number.parseInt(ui.days.value, 10);
  if (!name) {
    ui.error.textContent = 'Give the token a name, e.g. what will use it.';
    return;
  }
  if (!Number.isInteger(days) || days < 1 || days > 365) {
    ui.error.textContent = 'A token lasts 1–365 days.';
    return;
  }
  const { ok, status, body } = await api('/api/tokens', {
    method: 'POST', json: { name, scope, expires_in_days: days },
  });
  if (!ok || !body || typeof body.token !== 'string') {
    ui.error.textContent = problem(status, body);
    return;
  }
  ui.value.textContent = body.token;
  ui.copy.textContent = 'Copy';
  ui.created.hidden = false;
  ui.form.reset();
  renderScope();
  await loadTokens();
}

async function revokeToken(token, button) {
  button.disabled = true;
  const { ok, status, body } = await api(`/api/tokens/${encodeURIComponent(token.id)}`, { method: 'DELETE' });
  if (!ok && status !== 404) {
    button.disabled = false;
    ui.error.textContent = problem(status, body);
    return;
  }
  await loadTokens();
}

function problem(status, body) {
  const reason = body && typeof body.error === 'string' ? body.error : '';
  return reason || `Something went wrong (HTTP ${status}). Please try again.`;
}
