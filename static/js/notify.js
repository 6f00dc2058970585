// Notifications: the user's notification socket (/notifications/{name}, with the same token as
// the chat socket, reconnected with backoff while the chat wants to be online) and the toasts
// it shows (#toasts), each dismissable, gone by themselves after a while.

import { credentials, named, newerThan, protocols } from './auth.js';
import { backoff } from './connection.js';
import { h, keepFocus, ui } from './dom.js';
import { invalidate } from './render.js';
import { state } from './state.js';

const MAX_TOASTS = 5;
const TOAST_MS = 15000;            // a toast goes away by itself after this long

export function openNotifySocket() {
  const n = state.notify;
  clearTimeout(n.timer);
  n.timer = null;
  if (n.ws) return;
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${scheme}//${location.host}/notifications/${encodeURIComponent(state.me)}`;
  const ws = named() ? new WebSocket(url) : new WebSocket(url, protocols());
  const used = state.auth.token;
  n.ws = ws;
  ws.addEventListener('open', () => {
    if (n.ws !== ws) return;
    n.open = true;
    n.attempt = 0;
    // A fresh token came while this socket was opening: this socket lives on with it too.
    if (newerThan(used)) sendNotify({ type: 'refresh', token: state.auth.token });
    invalidate('toasts');
  });
  ws.addEventListener('message', (ev) => {
    if (n.ws !== ws) return;
    let frame;
    try { frame = JSON.parse(ev.data); } catch { return; }
    // `refreshed` and refused refreshes are the chat socket's to show.
    if (frame && frame.type === 'notification') showToast(frame);
  });
  ws.addEventListener('close', (ev) => {
    if (n.ws !== ws) return;
    n.ws = null;
    n.open = false;
    n.lostAt = Date.now();
    // Its token lapsed: a newer one (or, in development mode, a fresh one) reopens it at
    // once; otherwise it waits, like the chat socket, for a token (auth.js asks for it).
    const lapsed = ev.code === 4004;
    const now = lapsed && (state.auth.mode === 'dev' || newerThan(used));
    const waiting = ['token', 'expired'].includes(state.auth.need);
    if (state.wantOnline && !waiting && (now || !lapsed)) {
      n.attempt = now ? 0 : n.attempt + 1;
      n.timer = setTimeout(reopenNotifySocket, now ? 0 : backoff(n.attempt));
    }
    invalidate('toasts');
  });
}

/** Reopens the notification socket once its token is ready (a fresh one after a loss). */
async function reopenNotifySocket() {
  const n = state.notify;
  n.timer = null;
  const next = await credentials(n.lostAt);
  if (!state.wantOnline || n.ws || n.timer) return;
  if (next === 'go') openNotifySocket();
  else if (next === 'retry') {
    n.attempt += 1;
    n.timer = setTimeout(reopenNotifySocket, backoff(n.attempt));
  }
  // 'wait': the page asks for a token; resumeAfterToken() opens it once given.
}

/** Sends `frame` on the notification socket if it is open (a `refresh`). */
export function sendNotify(frame) {
  const ws = state.notify.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(frame));
  return true;
}

export function closeNotifySocket() {
  const n = state.notify;
  clearTimeout(n.timer);
  n.timer = null;
  const ws = n.ws;
  n.ws = null;  // detach first: its close event must not schedule a reconnect
  n.open = false;
  n.attempt = 0;
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'bye');
  invalidate('toasts');
}

function showToast(f) {
  const id = String(f.id || `local-${Date.now()}`);
  if (state.toasts.some((t) => t.id === id)) return;
  const toast = { id, title: String(f.title ?? ''), message: String(f.message ?? ''),
    kind: String(f.notification_type || 'info'), timestamp: f.timestamp };
  toast.timer = setTimeout(() => dismissToast(id), TOAST_MS);
  state.toasts.push(toast);
  while (state.toasts.length > MAX_TOASTS) clearTimeout(state.toasts.shift().timer);
  invalidate('toasts');
}

function dismissToast(id) {
  const toast = state.toasts.find((t) => t.id === id);
  if (toast) clearTimeout(toast.timer);
  state.toasts = state.toasts.filter((t) => t.id !== id);
  invalidate('toasts');
}

export function renderToasts() {
  const box = ui.toasts;
  keepFocus(box, () => box.replaceChildren(...state.toasts.map((t) => h('div', {
    class: `toast ${t.kind}`.trim(), dataset: { id: t.id, kind: t.kind },
  },
  h('strong', { class: 'toast-title' }, t.title), ' ',
  h('p', { class: 'toast-message' }, t.message),
  h('button', { type: 'button', class: 'toast-dismiss subtle', 'aria-label': `Dismiss notification ${t.title}`,
    onclick: () => dismissToast(t.id) }, '✕')))));
  document.body.dataset.notify = state.notify.open ? 'connected' : 'offline';
}
