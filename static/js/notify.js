// Notifications: the user's notification socket (/notifications/{name}, reconnected with
// backoff while the chat wants to be online) and the toasts it shows (#toasts), each
// dismissable, gone by themselves after a while.

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
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${scheme}//${location.host}/notifications/${encodeURIComponent(state.me)}`);
  n.ws = ws;
  ws.addEventListener('open', () => {
    if (n.ws !== ws) return;
    n.open = true;
    n.attempt = 0;
    invalidate('toasts');
  });
  ws.addEventListener('message', (ev) => {
    if (n.ws !== ws) return;
    let frame;
    try { frame = JSON.parse(ev.data); } catch { return; }
    if (frame && frame.type === 'notification') showToast(frame);
  });
  ws.addEventListener('close', () => {
    if (n.ws !== ws) return;
    n.ws = null;
    n.open = false;
    if (state.wantOnline) {
      n.attempt += 1;
      n.timer = setTimeout(openNotifySocket, backoff(n.attempt));
    }
    invalidate('toasts');
  });
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
