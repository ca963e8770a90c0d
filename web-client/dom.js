// The page's elements by id (`el`) and `h`, the element builder: user data only ever reaches the DOM as text.

const $ = (id) => document.getElementById(id);

export const el = {
  app: $('app'), title: $('conv-title'), conn: $('conn'), connText: $('conn-text'),
  connTransport: $('conn-transport'),
  roomsToggle: $('rooms-toggle'), membersToggle: $('members-toggle'), membersCount: $('members-count'),
  sidebar: $('sidebar'), roomList: $('room-list'), dmList: $('dm-list'), dmHint: $('dm-hint'),
  roomFilter: $('room-filter'), moreRooms: $('more-rooms'),
  newRoomForm: $('new-room-form'), newRoom: $('new-room'), newRoomError: $('new-room-error'),
  meName: $('me-name'), meGuest: $('me-guest'), changeName: $('change-name'), signOut: $('sign-out'),
  newRoomPrivate: $('new-room-private'), newRoomPrivateLabel: $('new-room-private-label'),
  authDialog: $('auth-dialog'), authForm: $('auth-form'), authUser: $('auth-username'), authPass: $('auth-password'),
  authError: $('auth-error'), authSignIn: $('auth-signin'), authRegister: $('auth-register'),
  authGuestRow: $('auth-guest-row'), authGuest: $('auth-guest'),
  authProviders: $('auth-providers'), providerList: $('provider-list'),
  signupDialog: $('signup-dialog'), signupForm: $('signup-form'), signupIntro: $('signup-intro'),
  signupName: $('signup-name'), signupError: $('signup-error'), signupSubmit: $('signup-submit'),
  signupCancel: $('signup-cancel'),
  identitiesBox: $('identities-box'), identities: $('identities'), identitiesError: $('identities-error'),
  banner: $('banner'), messages: $('messages'), historyStatus: $('history-status'),
  list: $('message-list'), pendingList: $('pending-list'), jump: $('jump'), typing: $('typing'),
  composer: $('composer'), input: $('input'), send: $('send'), tooLong: $('too-long'),
  mentionList: $('mention-list'), notify: $('notify'),
  members: $('members'), membersTitle: $('members-title'), memberList: $('member-list'), scrim: $('scrim'),
  nameDialog: $('name-dialog'), nameForm: $('name-form'), nameInput: $('name-input'),
  nameError: $('name-error'), nameCancel: $('name-cancel'),
};

/** Creates an element; string children become text nodes. */
export function h(tag, props, ...children) {
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
