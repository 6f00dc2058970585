// The chat socket (/ws): signing in as a name (with what was saved for it) and signing out
// (forgetting it), sending frames, the heartbeat and timeouts that notice a dead link, and
// reconnecting with backoff. Before a socket opens, `auth.js` gets its token (the socket
// carries it as a WebSocket protocol), or says to wait for one. Frames received go to
// `frames.js`; a lost socket leaves every room 'idle' until the rejoin.

import { afterClose, beginSignIn, credentials, endSignIn, named, protocols } from './auth.js';
import { stopTyping, failOverduePending } from './composer.js';
import { ui } from './dom.js';
import { pushError } from './errors.js';
import { onFrameText } from './frames.js';
import { closeNotifySocket, openNotifySocket } from './notify.js';
import { clearRemoteTyping } from './rooms.js';
import { invalidate, invalidateAll } from './render.js';
import { NAME_RE, resetSession, state } from './state.js';
import { forgetUser, restoreUser, saveName, setTabUser } from './storage.js';

const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 5000;       // the longest wait: with a restart's 1-3 s of downtime, all back within 10 s
const STABLE_AFTER_MS = 10000;     // a socket welcomed this long ago was stable: backoff starts over
const POLICY_PAUSE_MS = 5000;      // after close 1008 (rate limit) wait at least this long
const PING_EVERY_MS = 20000;       // app-level ping, so a dead link is noticed
const SILENCE_LIMIT_MS = 45000;    // no frame at all for this long: drop the socket
const CONNECT_TIMEOUT_MS = 10000;  // a socket still opening after this long is given up

/**
 * The delay before reconnect attempt `attempt` (1, 2, ...): exponential with "full jitter",
 * uniformly random in [0, min(5 s, 250 ms × 2^(attempt-1))). After a server restart every
 * page comes back at a different moment instead of all at once.
 */
export function backoff(attempt) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, attempt - 1));
  return Math.random() * ceiling;
}

/**
 * The reconnect attempts to count from when a socket is lost at `now`: 0 when it had been
 * welcomed at `welcomedAt` at least 10 s before (a stable connection), else `attempt`, so a
 * server that accepts and drops sockets at once is retried ever more slowly.
 */
export function attemptsAfterLoss(attempt, welcomedAt, now) {
  return welcomedAt && now - welcomedAt >= STABLE_AFTER_MS ? 0 : attempt;
}

export function send(frame) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
  state.ws.send(JSON.stringify(frame));
  return true;
}

export function isOnline() { return state.conn === 'connected'; }

/** Signs in as `name`, with the rooms and threads saved for it; rejoins them once welcomed. */
export function connectAs(name) {
  if (!NAME_RE.test(name)) {
    pushError('invalid_user', 'A name is 1-64 characters of A-Z a-z 0-9 _ - . :');
    ui.nameInput.setAttribute('aria-invalid', 'true');
    ui.nameInput.focus();
    return;
  }
  ui.nameInput.removeAttribute('aria-invalid');
  if (state.wantOnline) return;  // signed in already: Sign out first
  saveName(name);
  state.me = name;
  resetSession();
  restoreUser(name);
  setTabUser(name);
  state.wantOnline = true;
  state.attempt = 0;
  state.conn = 'connecting';
  state.lostAt = 0;
  closeNotifySocket();
  beginSignIn(name);
  connectNow();
  invalidateAll();
}

/** Sign out: disconnects, and forgets this user's rooms, threads and unsent chats. */
export function signOut() {
  state.wantOnline = false;
  state.connectGen += 1;  // a connect still getting its token gives up
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  stopTyping(true);
  closeSocket();
  closeNotifySocket();
  endSignIn();
  forgetUser(state.me);
  resetSession();
  state.me = null;
  onSocketLost(1000);
}

/**
 * Gets the token (auth.js), then opens the chat socket, and the notification socket if it is
 * closed; or waits for a token from the user; or tries again later.
 */
export async function connectNow() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  state.connectGen += 1;
  const gen = state.connectGen;
  if (state.conn !== 'reconnecting') state.conn = 'connecting';
  invalidate('conn');
  const next = await credentials(state.lostAt);
  if (gen !== state.connectGen || !state.wantOnline || state.ws) return;
  if (next === 'go') {
    openSocket();
    if (!state.notify.ws) openNotifySocket();
  } else if (next === 'retry') {
    scheduleReconnect(0);
  } else {
    state.conn = 'offline';  // until a token is given (auth.js asks for it)
  }
  invalidateAll();
}

/** A token was given while a socket was closed for want of one: open it now. */
export function resumeAfterToken() {
  if (!state.wantOnline) return;
  if (!state.ws && state.conn !== 'connecting') {
    state.attempt = 0;
    connectNow();
  } else if (!state.notify.ws) {
    openNotifySocket();
  }
}

function openSocket() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // With a token, the socket carries it as a protocol, never in the URL (URLs end up in logs).
  const ws = named()
    ? new WebSocket(`${scheme}//${location.host}/ws?user_id=${encodeURIComponent(state.me)}`)
    : new WebSocket(`${scheme}//${location.host}/ws`, protocols());
  state.ws = ws;
  state.wsToken = state.auth.token;
  state.socketGen += 1;
  state.lastRx = Date.now();
  state.lastPing = Date.now();
  if (state.conn !== 'reconnecting') state.conn = 'connecting';
  // Events of a socket that is no longer state.ws are ignored.
  ws.addEventListener('message', (ev) => { if (state.ws === ws) onFrameText(ev.data); });
  ws.addEventListener('close', (ev) => { if (state.ws === ws) onSocketLost(ev.code); });
  invalidate('conn');
}

function closeSocket() {
  const ws = state.ws;
  state.ws = null;  // detach first: its close event must not trigger a reconnect
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'bye');
}

function onSocketLost(code) {
  state.ws = null;
  state.lostAt = Date.now();
  state.attempt = attemptsAfterLoss(state.attempt, state.welcomedAt, state.lostAt);
  state.welcomedAt = 0;
  stopTyping(false);
  for (const room of state.rooms.values()) {
    room.status = 'idle';
    room.historyLeft = 0;
    clearRemoteTyping(room);
  }
  if (!state.wantOnline) state.conn = 'offline';
  else {
    const next = afterClose(code, state.wsToken);
    if (next === 'backoff') scheduleReconnect(code);
    else if (next === 'now') {
      state.attempt = 0;
      state.conn = 'reconnecting';
      connectNow();
    } else {
      state.conn = 'offline';  // the session expired, or this server wants a token
    }
  }
  invalidateAll();
}

function scheduleReconnect(code) {
  state.attempt += 1;
  let delay = backoff(state.attempt);
  if (code === 1008) delay = Math.max(delay, POLICY_PAUSE_MS);
  state.conn = 'reconnecting';
  state.retryAt = Date.now() + delay;
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = setTimeout(() => { state.reconnectTimer = null; connectNow(); }, delay);
}

/** Back online (the browser says so): don't wait out the backoff. */
export function retryNow() {
  if (state.conn === 'reconnecting' && state.reconnectTimer) connectNow();
}

/** Heartbeat and timeouts; also keeps the reconnect countdown fresh. Runs every second. */
export function tick() {
  const now = Date.now();
  const ws = state.ws;
  const stuckOpening = ws && ws.readyState === WebSocket.CONNECTING && now - state.lastRx > CONNECT_TIMEOUT_MS;
  const silent = ws && ws.readyState === WebSocket.OPEN && now - state.lastRx > SILENCE_LIMIT_MS;
  if (stuckOpening || silent) {
    closeSocket();  // the link is dead; don't wait for TCP to notice
    onSocketLost(4002);
    return;
  }
  if (ws && ws.readyState === WebSocket.OPEN) {
    if (now - state.lastPing > PING_EVERY_MS) {
      state.lastPing = now;
      send({ type: 'ping' });
    }
  }
  failOverduePending(now);
  if (state.conn === 'reconnecting') invalidate('conn');
  if (state.auth.need === 'expiring') invalidate('auth');  // the countdown
}
