// Entry point of the Parley web client: wires the modules to each other and to the page's events, then boots.
//
// Plain ES modules over STOMP (@stomp/stompjs: the global StompJs, loaded as a classic script
// before this one) and the REST API; no build step. User data only ever reaches the page as text.

import { setTokenRefresher } from './api.js';
import { start, stopClient } from './connection.js';
import { askName, nameProblem, showSignIn } from './dialogs.js';
import { loadOlderDm } from './dms.js';
import { el } from './dom.js';
import { cancelReply, editLast } from './edits.js'; // also wires the message actions (msgparts.js)
import { closeMentions, mentionKey, updateMentions } from './mentions.js';
import { send, sendTyping } from './messages.js';
import { openConversation, parseHash } from './navigation.js';
import { renderNotify, toggleNotify } from './notify.js';
import { wirePeople } from './people.js';
import { offerSignup, signupRequested, wireProviders } from './providers.js';
import { wireTokens } from './tokens.js';
import { retry } from './outbox.js';
import {
  actions, autosize, closeDrawers, nearBottom, renderAll, renderComposer, renderMe, scrollToBottom, toggleDrawer,
} from './render.js';
import { createRoom, filterRooms, loadMoreRooms, loadOlder, refreshRooms } from './rooms.js';
import { checkToken, refreshToken, setConnectionStopper } from './session.js';
import { changeName, forgetUser, loadInfo, signOut, startGuest, submitAuth } from './signin.js';
import { NAME_KEY, NAME_RE, auth, dmState, info, isActive, online, roomState, state } from './state.js';

const ROOMS_REFRESH = 30000; // ms between room list refreshes of a visible page (counts; new rooms come as events)

// ---- lower modules reach up through these -------------------------------------------------------

setTokenRefresher(refreshToken); // api.js: a Bearer call's 401
setConnectionStopper(() => { // session.js: the session ended; someone else may sign in next
  stopClient();
  forgetUser();
});
// render.js: buttons it draws ("Load older messages" of a room or a DM conversation)
Object.assign(actions, { openConversation, loadOlder: (s) => (s.kind === 'dm' ? loadOlderDm(s) : loadOlder(s)), retry });

// ---- the composer and the conversation ----------------------------------------------------------

function wireChat() {
  el.composer.addEventListener('submit', (e) => {
    e.preventDefault();
    send();
  });
  el.input.addEventListener('keydown', (e) => {
    if (mentionKey(e)) return;
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    } else if (e.key === 'ArrowUp' && !e.isComposing && editLast()) {
      e.preventDefault();
    } else if (e.key === 'Escape' && state.replyTo) {
      e.stopPropagation();
      cancelReply();
    }
  });
  el.input.addEventListener('input', () => {
    autosize();
    renderComposer(); // too long?
    updateMentions();
    sendTyping();
  });
  el.input.addEventListener('click', updateMentions); // the caret moved
  el.input.addEventListener('blur', closeMentions);
  el.messages.addEventListener('scroll', () => {
    if (nearBottom()) el.jump.hidden = true;
    const conv = state.active;
    if (!conv || el.messages.scrollTop >= 120) return;
    if (conv.kind === 'room') loadOlder(roomState(conv.name));
    else loadOlderDm(dmState(conv.name));
  }, { passive: true });
  el.jump.addEventListener('click', scrollToBottom);
}

// ---- rooms, navigation, drawers -----------------------------------------------------------------

function wireNavigation() {
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
  el.moreRooms.addEventListener('click', loadMoreRooms);
  let filterTimer = null;
  el.roomFilter.addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => filterRooms(el.roomFilter.value), 200);
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
  setInterval(() => {
    if (online() && document.visibilityState === 'visible') refreshRooms();
  }, ROOMS_REFRESH);
  window.addEventListener('focus', () => {
    if (online()) refreshRooms();
  });
}

// ---- signing in, guests, signing out ------------------------------------------------------------

function wireSignIn() {
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
  el.notify.addEventListener('click', toggleNotify);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') checkToken();
  });
}

// ---- start -------------------------------------------------------------------------------------

/**
 * On load: resume the session from the cookie, else finish a sign-in with another site that
 * needs a name (`?signup`), else a remembered guest name, else sign in.
 */
async function boot() {
  renderAll();
  renderMe();
  renderNotify();
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
  if (signupRequested() && !unreachable) {
    if (await offerSignup()) return;
    showSignIn('That sign-in has expired. Please sign in again.');
    return;
  }
  const saved = localStorage.getItem(NAME_KEY);
  if (info.guests && saved && NAME_RE.test(saved)) {
    startGuest(saved);
    return;
  }
  showSignIn(unreachable ? 'Could not reach the server. Please try again.' : '');
}

wireChat();
wireNavigation();
wirePeople(openConversation);
wireSignIn();
wireProviders();
wireTokens();
boot();
