// Browser notifications: the "Notifications" button (permission asked only when clicked) and what is shown while the tab is hidden.
//
// Shown for a mention of us in a room message and for a direct message, from someone else, that
// arrives while `document.hidden`. The choice is remembered in this browser until it is switched
// off or someone signs out.

import { el } from './dom.js';
import { mentions } from './format.js';
import { actions } from './render.js';
import { state } from './state.js';

const KEY = 'parley.notify';
const supported = () => typeof window.Notification === 'function';
const enabled = () => supported() && Notification.permission === 'granted' && localStorage.getItem(KEY) === 'on';

export function renderNotify() {
  el.notify.hidden = !supported();
  if (!supported()) return;
  const on = enabled();
  const blocked = Notification.permission === 'denied';
  el.notify.textContent = on ? 'Notifications on' : blocked ? 'Notifications blocked' : 'Notifications';
  el.notify.dataset.state = on ? 'on' : blocked ? 'blocked' : 'off';
  el.notify.setAttribute('aria-pressed', String(on));
  el.notify.title = blocked
    ? 'This browser blocks notifications from this site: allow them in its site settings'
    : on ? 'Click to stop notifications' : 'Show a notification for mentions of you and direct messages while this tab is hidden';
}

/** The button: switches notifications on (asking for permission the first time) or off. */
export async function toggleNotify() {
  if (!supported()) return;
  if (enabled()) {
    localStorage.removeItem(KEY);
  } else {
    let permission = Notification.permission;
    if (permission === 'default') {
      try {
        permission = await Notification.requestPermission();
      } catch {
        permission = 'default';
      }
    }
    if (permission === 'granted') localStorage.setItem(KEY, 'on');
  }
  renderNotify();
}

/** Signing out: the next user chooses for themselves. */
export function forgetNotify() {
  localStorage.removeItem(KEY);
  renderNotify();
}

/** A live message from someone else: notify when the tab is hidden and it is a DM or mentions us. */
export function notifyMessage(conv, msg) {
  if (!document.hidden || !enabled() || msg.from === state.me) return;
  if (conv.kind === 'room' && !mentions(msg.body, state.me)) return;
  const title = conv.kind === 'dm' ? `${msg.from} (direct message)` : `${msg.from} in #${conv.name}`;
  const body = msg.body.length > 200 ? `${msg.body.slice(0, 200)}…` : msg.body;
  try {
    const note = new Notification(title, { body, tag: `parley:${conv.kind}:${conv.name}` });
    note.onclick = () => {
      window.focus();
      actions.openConversation(conv);
      note.close();
    };
  } catch {
    /* some browsers only notify from a service worker: nothing to show then */
  }
}
