// What each frame from the chat socket does to the state (docs/PROTOCOL.md): welcome,
// joined/left, chat and history, presence, typing, private, ack, ping, refreshed, error.
// Unknown types are ignored, as the protocol asks.

import { newerThan, onRefreshRefused, onRefreshed, welcomed } from './auth.js';
import { send } from './connection.js';
import { pushError } from './errors.js';
import { markPrivateFailed, receivePrivate } from './privates.js';
import {
  addChat, addNotice, finishJoin, minSeq, presence, removeRoom, resetRoomHistory, sendJoin,
  setRemoteTyping,
} from './rooms.js';
import { invalidate, invalidateAll } from './render.js';
import { state } from './state.js';
import { scrollToEndNext } from './timeline.js';

export function onFrameText(text) {
  state.lastRx = Date.now();
  let frame;
  try { frame = JSON.parse(text); } catch { return; }
  if (!frame || typeof frame !== 'object' || typeof frame.type !== 'string') return;
  const handler = handlers[frame.type];
  if (handler) handler(frame);  // unknown types are ignored, as the protocol asks
}

const handlers = {
  welcome(f) {
    state.conn = 'connected';
    state.welcomedAt = Date.now();  // the backoff starts over once this socket proves stable
    welcomed();
    // A fresh token came while this socket was opening: it lives on with that one.
    if (newerThan(state.wsToken)) send({ type: 'refresh', token: state.auth.token });
    if (f.limits) state.limits = { ...state.limits, ...f.limits };
    for (const room of state.rooms.values()) sendJoin(room);  // rejoin everything we had
    invalidateAll();
  },

  joined(f) {
    const room = state.rooms.get(f.room_id);
    if (!room) return;  // we left it before the answer came; `left` will follow
    if (f.last_seq < room.maxSeq) resetRoomHistory(room);  // server lost its history (restart)
    room.status = 'joined';
    room.members = new Set(f.users || []);
    room.prevMax = room.maxSeq;
    // First join: its history is old news. Rejoin: whatever is newer than what we had is unread.
    room.countFrom = room.loadedOnce ? room.maxSeq : Number(f.last_seq) || 0;
    room.historyLeft = Number(f.history) || 0;
    if (room.historyLeft === 0) finishJoin(room);
    if (room.id === state.current) scrollToEndNext();
    invalidate('rooms', 'messages', 'members');
  },

  left(f) {
    const room = state.rooms.get(f.room_id);
    // A room we left and joined again is 'joining' when the old `left` arrives: keep it.
    if (room && room.status !== 'joining') removeRoom(room.id);
  },

  chat(f) {
    const room = state.rooms.get(f.room_id);
    if (!room) return;
    const fromHistory = room.historyLeft > 0;
    addChat(room, f);
    if (fromHistory) {
      room.historyLeft -= 1;
      if (room.historyLeft === 0) finishJoin(room);
    } else {
      setRemoteTyping(room, f.user_id, false);
    }
  },

  user_joined(f) { presence(f, true); },
  user_left(f) { presence(f, false); },

  typing(f) {
    const room = state.rooms.get(f.room_id);
    if (room && f.user_id !== state.me) setRemoteTyping(room, f.user_id, Boolean(f.is_typing));
  },

  active_users(f) {
    const room = state.rooms.get(f.room_id);
    if (!room || !Array.isArray(f.users)) return;
    room.members = new Set(f.users);
    invalidate('members');
  },

  private(f) { receivePrivate(f); },

  history(f) {
    const room = state.rooms.get(f.room_id);
    if (!room || !Array.isArray(f.messages)) return;
    const lowest = minSeq(room);
    f.messages.forEach((m) => addChat(room, m));
    const oldest = f.messages.reduce((min, m) => Math.min(min, m.seq), Infinity);
    if (!f.has_more && (!f.messages.length || oldest <= lowest)) room.noOlder = true;
  },

  ack(f) {
    const room = state.rooms.get(f.room_id);
    const p = state.pending.get(f.client_msg_id);
    state.serverAcks = true;
    if (!room || !p || p.room !== room.id) return;
    state.pending.delete(f.client_msg_id);
    if (typeof f.seq !== 'number') return;
    room.acked.add(f.seq);
    if (!room.messages.has(f.seq)) {
      // The ack overtook the echo: show the message at its seq until the echo replaces it.
      room.messages.set(f.seq, { type: 'chat', placeholder: true, user_id: state.me, room_id: room.id,
        text: p.text, seq: f.seq, client_msg_id: f.client_msg_id, message_id: f.message_id,
        timestamp: new Date().toISOString() });
      room.maxSeq = Math.max(room.maxSeq, f.seq);
    }
    invalidate('messages');
  },

  ping() { send({ type: 'pong' }); },
  pong() {},

  refreshed(f) { onRefreshed(f); },

  error(f) {
    pushError(f.code || 'error', f.message || '');
    const room = f.room_id ? state.rooms.get(f.room_id) : null;
    // An error about one of our chats names it: that message failed (it offers Retry).
    const pending = f.client_msg_id && state.pending.get(f.client_msg_id);
    if (pending && pending.status === 'pending' && pending.seq === null) {
      state.pending.set(f.client_msg_id, { ...pending, status: 'failed', error: f.code, errorText: f.message });
      invalidate('messages');
    }
    if (f.code === 'user_offline' || f.code === 'cluster_unavailable') {
      markPrivateFailed(f.to_user, f.message || '');
    } else if (['token_invalid', 'token_expired', 'token_user_mismatch'].includes(f.code)) {
      onRefreshRefused();  // the socket goes on until its current token lapses
    } else if (room && room.status === 'joining'
      && ['invalid_room', 'too_many_rooms', 'forbidden'].includes(f.code)) {
      removeRoom(room.id);  // the join was refused
    } else if (room && f.code === 'forbidden') {
      // The token does not allow that here (a read-only room, say); the socket goes on. A
      // refused chat is marked failed above; anything else is said in the room, and the page
      // stops announcing its typing there (until a refresh, which may bring other grants).
      room.postDenied = true;
      if (!pending) addNotice(room, { text: f.message || 'Not allowed in this room.' });
    } else if (room && f.code === 'already_joined') {
      room.status = 'joined';
      send({ type: 'get_users', room_id: room.id });
      invalidate('rooms', 'messages');
    }
  },
};
