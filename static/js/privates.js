// Private messages, read as one thread per person: sending one (`private` frame) and
// receiving one, each filed under the other person's thread with an unread count while that
// thread is not shown; opening a thread (private mode: the view and the composer go to that
// person until ✕ / Escape / a room is selected) and closing it; marking a sent one failed on
// `user_offline`; the thread list in the sidebar (#thread-list) and the list of recent
// private messages beside the chat (#privates).

import { stopTyping, validText } from './composer.js';
import { isOnline, send } from './connection.js';
import { h, keepFocus, timeNode, ui } from './dom.js';
import { pushError } from './errors.js';
import { invalidate, invalidateAll } from './render.js';
import { NAME_RE, clearDividers, newThread, state } from './state.js';
import { scrollToEndNext } from './timeline.js';

function thread(peer) {
  if (!state.threads.has(peer)) state.threads.set(peer, newThread(peer));
  return state.threads.get(peer);
}

function addPrivate(entry) {
  const id = (state.privates.at(-1)?.id ?? 0) + 1;
  const p = { id, ...entry, peer: entry.dir === 'in' ? entry.from : entry.to, failed: false };
  state.privates.push(p);
  const t = thread(p.peer);
  if (p.dir === 'in' && state.privateTo !== p.peer) {
    if (t.unread === 0) t.firstUnread = p.id;
    t.unread += 1;
  }
  if (state.privateTo === p.peer) {
    scrollToEndNext();
    invalidate('messages');
  }
  invalidate('privates', 'rooms');
}

export function sendPrivate(to, content) {
  if (!NAME_RE.test(to)) {
    pushError('invalid_user', `"${to}" is not a valid user name.`);
    return false;
  }
  if (!validText(content)) return false;
  if (!isOnline() || !send({ type: 'private', to_user: to, content })) {
    pushError('offline', 'Not connected: the private message was not sent.');
    return false;
  }
  addPrivate({ dir: 'out', from: state.me, to, message: content,
    timestamp: new Date().toISOString() });
  return true;
}

export function receivePrivate(f) {
  addPrivate({ dir: 'in', from: f.from, to: f.to_user, message: f.message,
    timestamp: f.timestamp });
}

/** user_offline, cluster_unavailable: mark the latest sent private to the named user (or the latest one) failed. */
export function markPrivateFailed(toUser, message) {
  const sent = state.privates.filter((p) => p.dir === 'out' && !p.failed);
  // The error names the addressee; older servers only said it in the message.
  const named = sent.filter((p) => (toUser ? p.to === toUser : message.includes(p.to)));
  const target = (named.length ? named : sent).at(-1);
  if (target) target.failed = true;
  invalidate('privates', 'messages');
}

/** Shows `peer`'s thread; what is typed now goes to them (private mode). */
export function openThread(peer) {
  const t = thread(peer);
  if (state.privateTo !== peer) {
    stopTyping(true);
    clearDividers();
    t.divider = t.unread > 0 ? t.firstUnread : null;
  }
  state.privateTo = peer;
  t.unread = 0;
  t.firstUnread = null;
  scrollToEndNext();
  invalidateAll();
  ui.messageInput.focus();
}

/** Back to the current room (✕, Escape). */
export function closeThread() {
  if (state.privateTo === null) return;
  clearDividers();
  state.privateTo = null;
  scrollToEndNext();
  invalidateAll();
}

/** Removes `peer`'s thread and its messages from the page. */
function removeThread(peer) {
  if (state.privateTo === peer) closeThread();
  state.threads.delete(peer);
  state.privates = state.privates.filter((p) => p.peer !== peer);
  invalidateAll();
}

/** One private message, as shown in a thread and in the recent list. */
export function privateNode(p, { reply = false } = {}) {
  return h('li', {
    class: `private ${p.dir} ${p.failed ? 'failed' : ''}`.trim(),
    dataset: { from: p.from, to: p.to, id: p.id },
  },
  h('div', { class: 'meta' },
    h('span', { class: 'author' }, p.dir === 'in' ? p.from : `you → ${p.to}`), ' ', timeNode(p.timestamp),
    p.failed && h('span', { class: 'status' }, ' not delivered (user offline)'),
    reply && p.dir === 'in' && h('button', { type: 'button', class: 'reply-btn subtle',
      'aria-label': `Reply privately to ${p.from}`, onclick: () => openThread(p.from) }, 'Reply')),
  h('p', { class: 'text' }, p.message));
}

function threadItem(t) {
  const isCurrent = state.privateTo === t.peer;
  const badge = h('span', { class: 'unread', dataset: { unread: t.unread }, hidden: t.unread === 0 },
    t.unread);
  return h('li', { class: `room thread ${isCurrent ? 'current' : ''}`.trim(), dataset: { peer: t.peer } },
    h('button', { type: 'button', class: 'thread-select', 'aria-current': isCurrent ? 'true' : null,
      'aria-label': t.unread ? `Private with ${t.peer}, ${t.unread} unread` : `Private with ${t.peer}`,
      onclick: () => openThread(t.peer) }, h('span', { class: 'thread-name' }, t.peer), badge),
    h('button', { type: 'button', class: 'thread-close', 'aria-label': `Close the conversation with ${t.peer}`,
      title: 'Close conversation', onclick: () => removeThread(t.peer) }, '✕'));
}

export function renderPrivates() {
  const threads = [...state.threads.values()];
  keepFocus(ui.threadList, () => ui.threadList.replaceChildren(...threads.map(threadItem)));
  ui.threadsHeading.hidden = threads.length === 0;
  keepFocus(ui.privates, () => ui.privates.replaceChildren(
    ...state.privates.map((p) => privateNode(p, { reply: true }))));
  ui.privates.scrollTop = ui.privates.scrollHeight;
}
