// People: the directory (search by name, online dots, start a DM) and a room's members with roles (invite, remove, leave).

import { api } from './api.js';
import { el, h } from './dom.js';
import { showBanner } from './render.js';
import { joinRoom, leaveRoom, refreshRooms } from './rooms.js';
import { auth, online, state } from './state.js';

const REFRESH = 20000; // ms between refreshes of online states while the page is visible
const DIRECTORY_PAGE = 20;
const userPath = (prefix, limit) => `/api/users?${new URLSearchParams({ prefix, limit: String(limit) })}`;
const membersPath = (room) => `/api/rooms/${encodeURIComponent(room)}/members`;

/** What people.js shows; the parts are built once by wirePeople. */
const ui = { search: null, list: null, panel: null, title: null, roster: null, invite: null, inviteInput: null,
  options: null, inviteError: null, leave: null };
const people = { query: '', seq: 0, room: null, roomSeq: 0 };

/** The people a directory page holds, or null when the server refused. */
async function directory(prefix, limit) {
  const { ok, body } = await api(userPath(prefix, limit));
  if (!ok || !body || !Array.isArray(body.users)) return null;
  return body.users.filter((u) => u && typeof u.name === 'string');
}

function dot(user) {
  const label = user.online ? (user.away ? 'away' : 'online') : 'offline';
  return h('span', { class: `presence-dot ${label}`, title: label, 'aria-label': label, dataset: { presence: label } });
}

// ---- the directory ------------------------------------------------------------------------------

/** Searches the directory for names starting with what is typed. */
export async function searchPeople() {
  const seq = ++people.seq;
  const prefix = ui.search.value.trim().replace(/^@/, '');
  people.query = prefix;
  if (!prefix) {
    // Nobody is listed until asked for: a page shows no names the user did not look for.
    ui.list.replaceChildren();
    return;
  }
  let users = null;
  try {
    users = await directory(prefix, DIRECTORY_PAGE);
  } catch {
    return; // offline: the next refresh tries again
  }
  if (seq !== people.seq || !users) return;
  ui.list.replaceChildren(...users.map((user) => {
    const me = user.name === state.me;
    return h('li', { class: 'person', dataset: { name: user.name, online: String(Boolean(user.online)) } },
      dot(user),
      h('span', { class: 'member-name', title: user.name }, user.name),
      me ? h('span', { class: 'you' }, 'you') : h('button', {
        type: 'button', class: 'dm-btn', 'aria-label': `Message ${user.name}`,
        onclick: () => openDm(user.name),
      }, 'Message'));
  }));
  if (!users.length) ui.list.append(h('li', { class: 'member empty' }, `Nobody named ${prefix}…`));
}

let openConversation = () => {};
function openDm(name) {
  openConversation({ kind: 'dm', name });
}

// ---- a room's members -----------------------------------------------------------------------------

/** Loads and shows the members of the joined room with roles and online dots. */
export async function refreshMembers() {
  const room = state.joined;
  const seq = ++people.roomSeq;
  people.room = room;
  if (!room || !online()) {
    ui.panel.hidden = true;
    if (room) people.room = null; // offline: load once we are back
    return;
  }
  let resp;
  try {
    resp = await api(`${membersPath(room)}?detail=1`);
  } catch {
    return;
  }
  if (seq !== people.roomSeq) return;
  const body = resp.body;
  if (!resp.ok || !body || !Array.isArray(body.members)) {
    ui.panel.hidden = true;
    return;
  }
  renderRoster(room, body);
}

function renderRoster(room, body) {
  const mine = body.members.find((m) => m.name === state.me);
  const myRole = mine ? mine.role : null;
  const listed = body.members.filter((m) => m.role);
  // Public rooms: who is here is the list above; roles matter in private rooms.
  ui.panel.hidden = !body.private;
  ui.title.textContent = `Members of #${room}`;
  ui.roster.replaceChildren(...listed.map((m) => {
    const removable = m.name !== state.me && (myRole === 'owner' ? m.role !== 'owner' : myRole === 'admin' && m.role === 'member');
    return h('li', { class: 'member', dataset: { name: m.name, role: m.role, online: String(Boolean(m.online)) } },
      dot(m),
      h('span', { class: 'member-name', title: m.name }, m.name),
      h('span', { class: 'role' }, m.role),
      removable ? h('button', {
        type: 'button', class: 'dm-btn remove-btn', 'aria-label': `Remove ${m.name}`,
        onclick: () => removeMember(room, m.name),
      }, 'Remove') : null);
  }));
  ui.invite.hidden = !(body.private && myRole === 'owner');
  ui.leave.hidden = !(myRole === 'member' || myRole === 'admin');
}

async function invite(e) {
  e.preventDefault();
  const room = state.joined;
  const user = ui.inviteInput.value.trim().replace(/^@/, '');
  if (!room || !user) return;
  const { status, body } = await api(membersPath(room), { method: 'POST', json: { user } });
  if (status === 204) {
    ui.inviteInput.value = '';
    ui.inviteError.textContent = '';
    refreshMembers();
    return;
  }
  ui.inviteError.textContent = status === 404 ? `There is no account named ${user}.` : (body && body.error) || `Could not invite ${user} (HTTP ${status}).`;
}

async function removeMember(room, user) {
  const { status, body } = await api(`${membersPath(room)}/${encodeURIComponent(user)}`, { method: 'DELETE' });
  if (status !== 204) showBanner((body && body.error) || `Could not remove ${user} (HTTP ${status}).`);
  refreshMembers();
}

async function leave() {
  const room = state.joined;
  if (!room || !state.me) return;
  // Unsubscribe first and wait for the server to say it did: a member who leaves is not told
  // (with an ERROR that ends the connection) that they were removed.
  await unsubscribeAll();
  leaveRoom();
  const { status, body } = await api(`${membersPath(room)}/${encodeURIComponent(state.me)}`, { method: 'DELETE' });
  if (status !== 204) {
    showBanner((body && body.error) || `Could not leave #${room} (HTTP ${status}).`);
    joinRoom(room, { force: true });
    return;
  }
  state.refused.add(room);
  await refreshRooms();
  const next = state.rooms.find((r) => r.name !== room && !state.refused.has(r.name));
  await openConversation({ kind: 'room', name: next ? next.name : 'general' });
  showBanner(`You left #${room}.`);
}

/** Ends the joined room's subscriptions, waiting (at most 3 s) for the server's receipt. */
function unsubscribeAll() {
  const subs = state.subs;
  state.subs = [];
  if (!online() || !subs.length) return Promise.resolve();
  const receipt = `leave-${Date.now()}`;
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 3000);
    state.client.watchForReceipt(receipt, () => {
      clearTimeout(timer);
      resolve();
    });
    subs.forEach((sub, i) => {
      try {
        sub.unsubscribe(i === subs.length - 1 ? { receipt } : {});
      } catch {
        /* the connection went away: nothing to wait for */
      }
    });
  });
}

/** Offers directory names for the invite box as it is typed. */
async function suggest() {
  const prefix = ui.inviteInput.value.trim().replace(/^@/, '');
  const users = prefix ? await directory(prefix, 10).catch(() => null) : [];
  if (!users) return;
  ui.options.replaceChildren(...users.filter((u) => u.name !== state.me).map((u) => h('option', { value: u.name })));
}

// ---- opening a room we may not read --------------------------------------------------------------

/** May we read `room`? False (after saying so) for a private room we are not a member of. */
export async function mayOpen(room) {
  if (auth.mode !== 'account' && auth.mode !== 'guest') return true;
  let status;
  try {
    ({ status } = await api(membersPath(room)));
  } catch {
    return true; // offline: joining will tell
  }
  if (status !== 403) return true;
  showBanner(`You are not a member of #${room}.`);
  return false;
}

// ---- wiring ---------------------------------------------------------------------------------------

/** Builds the people parts of the page; `open` opens a conversation (navigation.js). */
export function wirePeople(open) {
  openConversation = open;
  ui.search = h('input', { type: 'search', class: 'room-filter', id: 'people-search', placeholder: 'Find people',
    spellcheck: 'false', autocomplete: 'off', 'aria-label': 'Find people' });
  ui.list = h('ul', { class: 'conv-list people-list', id: 'people-list' });
  const section = h('section', { id: 'people' }, h('h2', null, 'People'), ui.search, ui.list);
  el.dmList.closest('section').before(section);
  let timer = null;
  ui.search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(searchPeople, 200);
  });

  ui.title = h('h2', { id: 'room-people-title' });
  ui.roster = h('ul', { class: 'member-list', id: 'room-roster' });
  ui.options = h('datalist', { id: 'invite-options' });
  ui.inviteInput = h('input', { id: 'invite-name', list: 'invite-options', placeholder: 'Invite by name', spellcheck: 'false',
    autocomplete: 'off', 'aria-label': 'Invite by name' });
  ui.inviteError = h('p', { class: 'form-error', id: 'invite-error', role: 'alert' });
  ui.invite = h('form', { class: 'new-room', id: 'invite-form', autocomplete: 'off', novalidate: true },
    h('div', { class: 'new-room-row' }, ui.inviteInput, h('button', { type: 'submit' }, 'Invite')), ui.options);
  ui.leave = h('button', { type: 'button', class: 'link-btn', id: 'leave-room' }, 'Leave room');
  ui.panel = h('section', { class: 'room-people', id: 'room-people', hidden: true },
    ui.title, ui.roster, ui.invite, ui.inviteError, ui.leave);
  el.memberList.after(ui.panel);
  ui.invite.addEventListener('submit', invite);
  ui.inviteInput.addEventListener('input', suggest);
  ui.leave.addEventListener('click', leave);

  setInterval(() => {
    if (state.joined !== people.room) refreshMembers(); // switched rooms
  }, 500);
  setInterval(() => {
    if (!online() || document.visibilityState !== 'visible') return;
    if (people.query) searchPeople();
    refreshMembers();
  }, REFRESH);
}

/** Signing out: nothing of the last user stays. */
export function resetPeople() {
  people.seq++;
  people.roomSeq++;
  people.room = null;
  people.query = '';
  if (!ui.list) return;
  ui.search.value = '';
  ui.list.replaceChildren();
  ui.roster.replaceChildren();
  ui.panel.hidden = true;
}
