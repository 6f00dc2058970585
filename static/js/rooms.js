// Rooms and their messages: joining (and rejoining with `since_seq`), leaving, selecting
// (with a "new messages" divider where the unread ones begin), storing chat by seq
// (deduplicated, unread counted), notices, presence and who is typing.

import { stopTyping, transmitPending } from './composer.js';
import { isOnline, send } from './connection.js';
import { pushError } from './errors.js';
import { invalidate, invalidateAll } from './render.js';
import { NAME_RE, clearDividers, newRoom, state } from './state.js';
import { scrollToEndNext } from './timeline.js';

const REMOTE_TYPING_MS = 6000;     // a remote "typing" expires without an update

/** Whether `room` is what the page shows now (not another room, nor a private thread). */
function isShown(room) {
  return room.id === state.current && state.privateTo === null;
}

export function minSeq(room) {
  let min = Infinity;
  for (const seq of room.messages.keys()) if (seq < min) min = seq;
  return min;
}

/** Store a chat frame unless its seq is known; settle our pending copy; count unread. */
export function addChat(room, f) {
  if (typeof f.seq !== 'number') return;
  const pending = f.client_msg_id && state.pending.get(f.client_msg_id);
  if (pending && pending.room === room.id && f.user_id === state.me) {
    // Echoed: it is in the room at this seq; it stays pending until the `ack`.
    if (pending.seq === null) state.pending.set(f.client_msg_id, { ...pending, seq: f.seq });
    if (room.id === state.current) scrollToEndNext();
  }
  let known = room.messages.get(f.seq);
  if (known && known.placeholder) known = null;  // stood in for it since the ack: replace
  if (known && known.message_id && f.message_id && known.message_id !== f.message_id) {
    resetRoomHistory(room);  // same seq, different message: the server started over
  } else if (known) {
    invalidate('messages');
    return;
  }
  room.messages.set(f.seq, f);
  room.maxSeq = Math.max(room.maxSeq, f.seq);
  if (f.seq > room.countFrom && !isShown(room) && f.user_id !== state.me) {
    if (room.unread === 0 || f.seq < room.firstUnread) room.firstUnread = f.seq;
    room.unread += 1;
    invalidate('rooms');
  }
  invalidate('messages');
}

/** The join's history is complete: fill a gap left by a long disconnect, resend pending. */
export function finishJoin(room) {
  room.loadedOnce = true;
  if (room.prevMax > 0 && !room.messages.has(room.prevMax + 1) && room.maxSeq > room.prevMax) {
    let firstNew = Infinity;
    for (const seq of room.messages.keys()) if (seq > room.prevMax && seq < firstNew) firstNew = seq;
    const missing = firstNew - room.prevMax - 1;
    send({ type: 'history', room_id: room.id, before_seq: firstNew, limit: Math.min(100, missing) });
  }
  // Unacknowledged messages of this room not sent on this socket: those never echoed, and,
  // when the server acknowledges (so resending a client_msg_id is idempotent), every one.
  for (const [cid, p] of state.pending) {
    if (p.room === room.id && p.gen !== state.socketGen && (p.seq === null || state.serverAcks)) {
      transmitPending(cid);
    }
  }
}

export function resetRoomHistory(room) {
  room.messages.clear();
  room.acked.clear();
  room.maxSeq = 0;
  room.prevMax = 0;
  room.noOlder = false;
  room.notices = [];
  room.nodes.clear();
  addNotice(room, { text: 'The server restarted; earlier messages are gone.' });
}

export function presence(f, joined) {
  const room = state.rooms.get(f.room_id);
  if (!room) return;
  if (joined) room.members.add(f.user_id);
  else {
    room.members.delete(f.user_id);
    setRemoteTyping(room, f.user_id, false);
  }
  addNotice(room, { user: f.user_id, timestamp: f.timestamp,
    text: f.message || `${f.user_id} ${joined ? 'joined' : 'left'} the room` });
  invalidate('members');
}

export function addNotice(room, { user, text, timestamp }) {
  room.noticeOrder += 1;
  room.notices.push({ afterSeq: room.maxSeq, order: room.noticeOrder, user, text,
    timestamp: timestamp || new Date().toISOString() });
  invalidate('messages');
}

export function setRemoteTyping(room, user, isTyping) {
  clearTimeout(room.typing.get(user));
  if (isTyping) {
    room.typing.set(user, setTimeout(() => setRemoteTyping(room, user, false), REMOTE_TYPING_MS));
  } else if (!room.typing.delete(user)) {
    return;
  }
  if (room.id === state.current) invalidate('typing');
}

export function clearRemoteTyping(room) {
  room.typing.forEach((timer) => clearTimeout(timer));
  room.typing.clear();
  invalidate('typing');
}

export function sendJoin(room) {
  const frame = { type: 'join', room_id: room.id };
  // A rejoin asks for exactly what it missed; a server that cannot tell answers recovered:false
  // (or ignores the field) and sends its recent history, and finishJoin fills any gap.
  if (room.loadedOnce && room.maxSeq > 0) frame.since_seq = room.maxSeq;
  if (isOnline() && send(frame)) room.status = 'joining';
}

export function joinRoom(id) {
  if (!NAME_RE.test(id)) {
    pushError('invalid_room', 'A room name is 1-64 characters of A-Z a-z 0-9 _ - . :');
    return false;
  }
  if (!state.rooms.has(id)) {
    state.rooms.set(id, newRoom(id));
    sendJoin(state.rooms.get(id));
  }
  selectRoom(id);
  return true;
}

export function leaveRoom(id) {
  const room = state.rooms.get(id);
  if (!room) return;
  if (room.status !== 'idle') send({ type: 'leave', room_id: id });
  removeRoom(id);
}

export function removeRoom(id) {
  const room = state.rooms.get(id);
  if (!room) return;
  if (state.typingOut && state.typingOut.room === id) stopTyping(false);
  clearRemoteTyping(room);
  for (const [cid, p] of state.pending) if (p.room === id) state.pending.delete(cid);
  state.rooms.delete(id);
  if (state.current === id) {
    const next = state.rooms.keys().next();
    state.current = next.done ? null : next.value;
    if (state.current && state.privateTo === null) markRead(state.rooms.get(state.current));
    scrollToEndNext();
  }
  invalidateAll();
}

/** Shows room `id` (leaving private mode); its unread messages get a divider above them. */
export function selectRoom(id) {
  const room = state.rooms.get(id);
  if (!room) return;
  if (!isShown(room)) stopTyping(true);
  state.current = id;
  state.privateTo = null;
  markRead(room);
  if (room.status === 'joined') send({ type: 'get_users', room_id: id });  // refresh members
  scrollToEndNext();
  invalidateAll();
}

/** The room is shown: its unread count goes, the divider marks where they began. */
function markRead(room) {
  if (room.unread > 0) {
    clearDividers();
    room.divider = room.firstUnread;
  } else if (room.divider === null) {
    clearDividers();
  }
  room.unread = 0;
  room.firstUnread = null;
}

/** "Load older messages": a page of history before the oldest message shown. */
export function loadOlder() {
  const room = state.rooms.get(state.current);
  if (room) send({ type: 'history', room_id: room.id, before_seq: minSeq(room), limit: 50 });
}
