// Rendering: modules change `state` and mark regions dirty with `invalidate`; once per task
// `flush` calls each dirty region's renderer, then the state is saved (soon) for a reload.
// This module owns that schedule and the renderers of the connection state and the name
// field, the room list and title, the members (marked stale while not joined) and the
// typing line; the message list, composer, private threads, errors, toasts and the token
// form render in their own modules.

import { renderAuth } from './auth.js';
import { h, keepFocus, ui } from './dom.js';
import { renderComposer } from './composer.js';
import { renderErrors } from './errors.js';
import { renderToasts } from './notify.js';
import { openThread, renderPrivates } from './privates.js';
import { leaveRoom, selectRoom } from './rooms.js';
import { state } from './state.js';
import { scheduleSave } from './storage.js';
import { renderMessages } from './timeline.js';

const renderers = {
  conn: renderConn, rooms: renderRooms, messages: renderMessages, members: renderMembers,
  typing: renderTyping, privates: renderPrivates, errors: renderErrors, composer: renderComposer,
  toasts: renderToasts, auth: renderAuth,
};

const dirty = new Set();
let flushQueued = false;

export function invalidate(...regions) {
  regions.forEach((r) => dirty.add(r));
  if (!flushQueued) {
    flushQueued = true;
    queueMicrotask(flush);
  }
}

export function invalidateAll() {
  invalidate(...Object.keys(renderers));
}

function flush() {
  flushQueued = false;
  const regions = [...dirty];
  dirty.clear();
  regions.forEach((r) => renderers[r]());
  scheduleSave();
}

function renderConn() {
  const label = state.conn === 'connecting' ? 'offline' : state.conn;
  let detail = '';
  if (state.conn === 'connecting') detail = 'connecting…';
  else if (state.conn === 'reconnecting') {
    const wait = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    detail = state.reconnectTimer ? `attempt ${state.attempt}, next try in ${wait} s`
      : `attempt ${state.attempt}, connecting…`;
  } else if (state.conn === 'connected') detail = `as ${state.me}`;
  else if (state.wantOnline && state.auth.need === 'expired') detail = 'session expired';
  else if (state.wantOnline && state.auth.need === 'token') detail = 'waiting for a token';
  ui.connState.textContent = label;
  ui.connState.dataset.state = label;
  ui.connState.title = detail;
  ui.connDetail.textContent = detail;
  // Signed in: the name is fixed until Sign out (no switching identity by typing a new one).
  ui.disconnectBtn.hidden = !state.wantOnline;
  ui.nameInput.disabled = state.wantOnline;
  ui.connectBtn.disabled = state.wantOnline;
  if (state.wantOnline) ui.nameInput.value = state.me;
  document.body.dataset.conn = label;
}

function roomItem(room) {
  const isCurrent = room.id === state.current && state.privateTo === null;
  const badge = h('span', { class: 'unread', dataset: { unread: room.unread },
    hidden: room.unread === 0 }, room.unread);
  return h('li', { class: `room ${isCurrent ? 'current' : ''} ${room.status}`.trim(),
    dataset: { room: room.id } },
  h('button', { type: 'button', class: 'room-select', 'aria-current': isCurrent ? 'true' : null,
    'aria-label': room.unread ? `${room.id}, ${room.unread} unread` : room.id, onclick: () => selectRoom(room.id) }, h('span', { class: 'room-name' }, room.id), badge),
  h('button', { type: 'button', class: 'room-leave', 'aria-label': `Leave room ${room.id}`,
    title: 'Leave room', onclick: () => leaveRoom(room.id) }, '✕'));
}

function renderRooms() {
  const rooms = [...state.rooms.values()];
  keepFocus(ui.roomList, () => ui.roomList.replaceChildren(...rooms.map(roomItem)));
  if (state.privateTo !== null) ui.roomTitle.textContent = `Private with ${state.privateTo}`;
  else ui.roomTitle.textContent = state.current ? `# ${state.current}` : 'No room selected';
  ui.roomTitle.classList.toggle('private', state.privateTo !== null);
  ui.leaveBtn.disabled = !state.current;
  ui.leaveBtn.hidden = state.privateTo !== null;
  const unread = rooms.reduce((sum, r) => sum + r.unread, 0)
    + [...state.threads.values()].reduce((sum, t) => sum + t.unread, 0);
  document.title = unread ? `(${unread}) roomcast` : 'roomcast';
}

function renderMembers() {
  const room = state.rooms.get(state.current);
  const names = room ? [...room.members].sort() : [];
  // Until the room is joined again (reconnecting, rejoining) the list may be out of date.
  const stale = Boolean(room) && room.status !== 'joined' && room.loadedOnce;
  ui.members.classList.toggle('stale', stale);
  ui.members.setAttribute('aria-busy', String(stale));
  ui.membersStale.hidden = !stale;
  keepFocus(ui.members, () => ui.members.replaceChildren(...names.map((name) => (name === state.me
    ? h('li', { dataset: { user: name }, class: 'self' }, h('span', { class: 'member-name' }, name), ' (you)')
    : h('li', { dataset: { user: name } },
      h('button', { type: 'button', class: 'member-pm', 'aria-label': `Send a private message to ${name}`,
        onclick: () => openThread(name) }, name))))));
}

function renderTyping() {
  const room = state.privateTo === null ? state.rooms.get(state.current) : null;
  const names = room ? [...room.typing.keys()].sort() : [];
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  ui.typing.textContent = text;
}
