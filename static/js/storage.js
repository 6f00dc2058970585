// What the page keeps across reloads. In localStorage, per user name
// ("roomcast.user.NAME"): the rooms joined, each with its newest messages, highest seq and
// unread count; the private threads and their messages; chats not sent yet. In
// sessionStorage (this tab only, kept across a reload): the name the tab is signed in as, so
// a reload signs in again while other tabs, signed in as others, are left alone; and a token
// given to the page (js/auth.js), so a reload keeps its session: tokens are never put in
// localStorage, and development tokens are not kept at all. And the name last used
// (localStorage), to prefill the field.

import { newRoom, newThread, state } from './state.js';

const NAME_KEY = 'roomcast.name';
const TAB_USER_KEY = 'roomcast.tab-user';
const TAB_TOKEN_KEY = 'roomcast.tab-token';
const userKey = (name) => `roomcast.user.${name}`;
const FORMAT = 1;
const KEEP_MESSAGES = 200;         // newest chats kept per room (older ones: "Load older")
const KEEP_PRIVATES = 500;         // newest private messages kept
const SAVE_DELAY_MS = 250;

let saveTimer = null;

export function loadName() {
  return localStorage.getItem(NAME_KEY) || '';
}

export function saveName(name) {
  localStorage.setItem(NAME_KEY, name);
}

/** The name this tab was signed in as before a reload, or null. */
export function tabUser() {
  return sessionStorage.getItem(TAB_USER_KEY);
}

/** Signing in: this tab is `name`'s until Sign out. */
export function setTabUser(name) {
  sessionStorage.setItem(TAB_USER_KEY, name);
}

/** The token given to this tab for `name` (sessionStorage only), or null. */
export function tabToken(name) {
  try {
    const kept = JSON.parse(sessionStorage.getItem(TAB_TOKEN_KEY) || 'null');
    return kept && kept.user === name && typeof kept.token === 'string' ? kept.token : null;
  } catch {
    return null;
  }
}

/** Keeps a token given to this tab, for a reload (never in localStorage). */
export function setTabToken(name, token) {
  sessionStorage.setItem(TAB_TOKEN_KEY, JSON.stringify({ user: name, token }));
}

/** Sign out: this tab signs in as nobody after a reload, and `name`'s data is forgotten. */
export function forgetUser(name) {
  clearTimeout(saveTimer);
  saveTimer = null;
  sessionStorage.removeItem(TAB_USER_KEY);
  sessionStorage.removeItem(TAB_TOKEN_KEY);
  if (name) localStorage.removeItem(userKey(name));
}

/** Saves soon; many changes in a row are saved once. */
export function scheduleSave() {
  if (saveTimer || !state.me || !state.wantOnline) return;
  saveTimer = setTimeout(saveNow, SAVE_DELAY_MS);
}

/** Saves the signed-in user's rooms and threads now (also when the page goes away). */
export function saveNow() {
  clearTimeout(saveTimer);
  saveTimer = null;
  if (!state.me || !state.wantOnline) return;
  for (const keep of [KEEP_MESSAGES, KEEP_MESSAGES / 8]) {
    try {
      localStorage.setItem(userKey(state.me), JSON.stringify(snapshot(keep)));
      return;
    } catch {
      // Over the quota: try again with fewer messages, then give up (it is only a cache).
    }
  }
}

function snapshot(keep) {
  const rooms = [...state.rooms.values()].map((room) => {
    const seqs = [...room.messages.keys()].sort((a, b) => a - b);
    const kept = seqs.slice(-keep);
    return {
      id: room.id,
      maxSeq: room.maxSeq,
      loadedOnce: room.loadedOnce,
      noOlder: room.noOlder && kept.length === seqs.length,
      unread: room.unread,
      firstUnread: room.firstUnread,
      messages: kept.map((seq) => room.messages.get(seq)).filter((m) => !m.placeholder),
      acked: kept.filter((seq) => room.acked.has(seq)),
    };
  });
  const threads = [...state.threads.values()].map(({ peer, unread, firstUnread }) => ({
    peer, unread, firstUnread }));
  // Chats never echoed are sent again after the rejoin (same client_msg_id, so at most once).
  const pending = [...state.pending].filter(([, p]) => p.seq === null)
    .map(([cid, p]) => ({ cid, room: p.room, text: p.text }));
  return { format: FORMAT, current: state.current, privateTo: state.privateTo, rooms, threads,
    privates: state.privates.slice(-KEEP_PRIVATES), pending };
}

/**
 * Puts `name`'s saved rooms, threads and unsent chats into the (empty) state, every room
 * 'idle' with `loadedOnce`, so the join that follows asks only for what came after its
 * highest seq (`since_seq`). Returns whether anything was restored.
 */
export function restoreUser(name) {
  let saved;
  try {
    saved = JSON.parse(localStorage.getItem(userKey(name)) || 'null');
  } catch {
    return false;
  }
  if (!saved || saved.format !== FORMAT) return false;
  for (const r of saved.rooms || []) {
    const room = newRoom(r.id);
    for (const m of r.messages || []) room.messages.set(m.seq, m);
    room.acked = new Set(r.acked || []);
    room.maxSeq = Number(r.maxSeq) || 0;
    room.loadedOnce = Boolean(r.loadedOnce);
    room.noOlder = Boolean(r.noOlder);
    room.unread = Number(r.unread) || 0;
    room.firstUnread = room.unread ? r.firstUnread : null;
    state.rooms.set(room.id, room);
  }
  state.privates = Array.isArray(saved.privates) ? saved.privates : [];
  for (const t of saved.threads || []) {
    const thread = newThread(t.peer);
    thread.unread = Number(t.unread) || 0;
    thread.firstUnread = thread.unread ? t.firstUnread : null;
    state.threads.set(t.peer, thread);
  }
  for (const p of saved.pending || []) {
    if (state.rooms.has(p.room)) {
      state.pending.set(p.cid, { room: p.room, text: p.text, status: 'pending', gen: 0,
        sentAt: Date.now(), seq: null });
    }
  }
  state.current = state.rooms.has(saved.current) ? saved.current : null;
  state.privateTo = state.threads.has(saved.privateTo) ? saved.privateTo : null;
  return true;
}
