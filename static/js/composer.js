// The composer: what Enter / Send does (a /msg command, a private message in private mode,
// or a chat to the current room), our chats until the server acknowledges them (pending,
// failed, Retry, resent after a reconnect), our own typing announcements, and the composer's
// look, which says where a message goes: placeholder, colour and the Send button's label
// ("Message #lobby" / "Send to #lobby", or "Private to bob" / "Send to bob").

import { isOnline, send } from './connection.js';
import { ui } from './dom.js';
import { pushError } from './errors.js';
import { openThread, sendPrivate } from './privates.js';
import { invalidate } from './render.js';
import { state } from './state.js';
import { scrollToEndNext } from './timeline.js';

const TYPING_IDLE_MS = 3000;       // we send is_typing:false after this long without a key
const PENDING_FAIL_MS = 10000;     // a sent message with no echo by then is marked failed

let clientMsgCounter = 0;

export function validText(text) {
  if (!text.trim()) return false;
  if (text.length > state.limits.max_text_chars) {
    pushError('text_too_long', `Messages are limited to ${state.limits.max_text_chars} characters.`);
    return false;
  }
  return true;
}

/** Enter / Send: a /msg command, a private message in private mode, or a room message. */
export function submitMessage() {
  const text = ui.messageInput.value;
  let ok = false;
  const command = text.match(/^\/msg(?:\s+(\S+))?(?:\s+([\s\S]*))?$/);
  if (command) {
    const [, user, body] = command;
    if (!user) pushError('usage', 'Usage: /msg USER text');
    else if (!body || !body.trim()) { openThread(user); ok = true; }  // "/msg bob" opens the thread
    else ok = sendPrivate(user, body);
  } else if (state.privateTo) {
    ok = sendPrivate(state.privateTo, text);
  } else if (state.current) {
    ok = sendChat(state.current, text);
  } else if (text.trim()) {
    pushError('no_room', 'Join a room first, or use /msg USER text.');
  }
  if (ok) ui.messageInput.value = '';
  stopTyping(true);
}

function sendChat(roomId, text) {
  if (!validText(text)) return false;
  clientMsgCounter += 1;
  const cid = `c-${clientMsgCounter}-${Math.random().toString(36).slice(2, 8)}`;
  state.pending.set(cid, { room: roomId, text, status: 'pending', gen: 0, sentAt: Date.now(), seq: null });
  transmitPending(cid);  // if offline it stays queued and goes out after the rejoin
  scrollToEndNext();
  invalidate('messages');
  return true;
}

export function transmitPending(cid) {
  const p = state.pending.get(cid);
  const room = p && state.rooms.get(p.room);
  if (!room || room.status === 'idle' || !isOnline()) return;
  if (send({ type: 'chat', room_id: p.room, text: p.text, client_msg_id: cid })) {
    state.pending.set(cid, { ...p, status: 'pending', gen: state.socketGen, sentAt: Date.now() });
    invalidate('messages');
  }
}

export function retryPending(cid) {
  const p = state.pending.get(cid);
  if (!p) return;
  state.pending.set(cid, { ...p, status: 'pending', gen: 0, sentAt: Date.now(), error: undefined, errorText: undefined });
  transmitPending(cid);
  invalidate('messages');
}

/** Chats sent on this socket with no echo after PENDING_FAIL_MS are marked failed. */
export function failOverduePending(now) {
  for (const [cid, p] of state.pending) {
    if (p.status === 'pending' && p.seq === null && p.gen === state.socketGen && now - p.sentAt > PENDING_FAIL_MS) {
      state.pending.set(cid, { ...p, status: 'failed' });
      invalidate('messages');
    }
  }
}

/** Our own typing announcements: true on the first key, false after 3 s idle or on send. */
export function noteTyping() {
  const room = state.rooms.get(state.current);
  const text = ui.messageInput.value;
  if (!room || room.status !== 'joined' || room.postDenied || state.privateTo || !text
    || text.startsWith('/')) {
    stopTyping(true);
    return;
  }
  if (!state.typingOut) {
    send({ type: 'typing', room_id: room.id, is_typing: true });
    state.typingOut = { room: room.id, timer: null };
  }
  clearTimeout(state.typingOut.timer);
  state.typingOut.timer = setTimeout(() => stopTyping(true), TYPING_IDLE_MS);
}

export function stopTyping(announce) {
  if (!state.typingOut) return;
  clearTimeout(state.typingOut.timer);
  if (announce) send({ type: 'typing', room_id: state.typingOut.room, is_typing: false });
  state.typingOut = null;
}

export function renderComposer() {
  const room = state.rooms.get(state.current);
  const to = state.privateTo;
  ui.privateMode.hidden = !to;
  ui.privateTarget.textContent = to || '';
  ui.messageInput.disabled = !state.me;
  ui.sendBtn.disabled = !state.me;
  ui.composer.classList.toggle('private', Boolean(to));
  ui.composer.dataset.target = to ? `@${to}` : room ? `#${room.id}` : '';
  let placeholder = 'Join a room, or /msg USER text';
  let label = 'Send';
  if (to) {
    placeholder = `Private to ${to}`;
    label = `Send to ${to}`;
  } else if (room) {
    placeholder = `Message #${room.id}`;
    label = `Send to #${room.id}`;
  }
  ui.messageInput.placeholder = placeholder;
  ui.messageInput.title = to ? `Private to ${to}; Escape goes back to the room`
    : 'Enter sends; /msg USER text sends privately';
  ui.sendBtn.textContent = label;
  ui.sendBtn.title = label;
}
