// The message list (#messages): the current room's timeline (chat by seq, notices after the
// seq they followed, then our messages not echoed yet) or, in private mode, the thread with
// one person; a divider above each day's first item and above the first unread one; one
// element per item reused across renders by key; and where the list scrolls to.

import { h, timeNode, ui } from './dom.js';
import { retryPending } from './composer.js';
import { privateNode } from './privates.js';
import { minSeq } from './rooms.js';
import { state } from './state.js';

const DAY_FORMAT = new Intl.DateTimeFormat(undefined,
  { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });

let stickToBottom = false;  // the next render scrolls to the end

/** The next render of the message list scrolls to its end. */
export function scrollToEndNext() {
  stickToBottom = true;
}

/** The room's timeline: chat by seq, notices after the seq they followed, then pending. */
function timeline(room) {
  const items = [];
  const seqs = [...room.messages.keys()].sort((a, b) => a - b);
  const notices = [...room.notices].sort((a, b) => a.afterSeq - b.afterSeq || a.order - b.order);
  let n = 0;
  const noticesUpTo = (seq) => {
    while (n < notices.length && notices[n].afterSeq <= seq) {
      const notice = notices[n++];
      items.push({ key: `n:${notice.order}`, kind: 'notice', data: notice, ts: notice.timestamp });
    }
  };
  noticesUpTo(0);
  for (const seq of seqs) {
    const msg = room.messages.get(seq);
    const ack = ackState(room, msg);
    items.push({ key: `s:${seq}:${msg.user_id === state.me}:${ack}`, kind: 'chat', data: msg, ack,
      ts: msg.timestamp, unread: seq === room.divider });
    noticesUpTo(seq);
  }
  noticesUpTo(Infinity);
  for (const [cid, p] of state.pending) {
    // Not echoed yet: shown after everything, in the order they were written.
    if (p.room === room.id && p.seq === null) {
      items.push({ key: `p:${cid}:${p.status}`, kind: 'pending', data: { cid, ...p }, ts: p.sentAt });
    }
  }
  return items;
}

/** The private messages with `thread.peer`, oldest first. */
function threadTimeline(thread) {
  return state.privates.filter((p) => p.peer === thread.peer).map((p) => ({
    key: `pv:${p.id}:${p.failed}`, kind: 'private', data: p, ts: p.timestamp,
    unread: p.id === thread.divider }));
}

function pad2(n) { return String(n).padStart(2, '0'); }

/** "Today", "Yesterday" or the date in full, and the local day as YYYY-MM-DD. */
function day(ts) {
  const d = new Date(ts ?? Date.now());
  if (Number.isNaN(d.getTime())) return null;
  const key = `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
  const midnight = (x) => new Date(x.getFullYear(), x.getMonth(), x.getDate()).getTime();
  const daysAgo = Math.round((midnight(new Date()) - midnight(d)) / 86400000);
  let label = DAY_FORMAT.format(d);
  if (daysAgo === 0) label = 'Today';
  else if (daysAgo === 1) label = 'Yesterday';
  return { key, label };
}

/** Inserts a date divider above each day's first item and "New messages" above the first unread. */
function withDividers(items) {
  const out = [];
  let lastDay = null;
  for (const item of items) {
    const d = day(item.ts);
    if (d && d.key !== lastDay) {
      out.push({ key: `d:${d.key}:${d.label}`, kind: 'date', data: d });
      lastDay = d.key;
    }
    if (item.unread) out.push({ key: `u:${item.key}`, kind: 'unread' });
    out.push(item);
  }
  return out;
}

/** '' (not ours, or not sent from this page), 'pending' (no ack yet) or 'acked'. */
function ackState(room, msg) {
  if (msg.user_id !== state.me || !msg.client_msg_id) return '';
  if (room.acked.has(msg.seq)) return 'acked';
  const p = state.pending.get(msg.client_msg_id);
  return p && p.room === room.id ? 'pending' : '';
}

function messageNode(item) {
  const { kind, data, ack } = item;
  if (kind === 'date') {
    return h('li', { class: 'date-divider', role: 'separator', dataset: { date: data.key } },
      h('span', {}, data.label));
  }
  if (kind === 'unread') {
    return h('li', { class: 'unread-divider', role: 'separator' }, h('span', {}, 'New messages'));
  }
  if (kind === 'private') return privateNode(data);
  if (kind === 'notice') {
    return h('li', { class: 'notice', dataset: data.user ? { user: data.user } : {} },
      timeNode(data.timestamp), ' ', h('span', { class: 'text' }, data.text));
  }
  if (kind === 'pending') {
    const failed = data.status === 'failed';
    const dataset = { clientMsgId: data.cid, user: state.me };
    if (failed && data.error) dataset.errorCode = data.error;  // the server said why
    return h('li', { class: `msg own pending ${failed ? 'failed' : ''}`.trim(), dataset },
    h('div', { class: 'meta' }, h('span', { class: 'author' }, state.me), ' ',
      h('span', { class: 'status', title: (failed && data.errorText) || '' },
        failed ? (data.error ? `not delivered (${data.error})` : 'not delivered') : 'sending…'),
      failed && h('button', { type: 'button', class: 'retry-btn subtle',
        'aria-label': 'Retry sending this message', onclick: () => retryPending(data.cid) }, 'Retry')),
    h('p', { class: 'text' }, data.text),
    failed && data.errorText && h('p', { class: 'reason' }, data.errorText));
  }
  const own = data.user_id === state.me;
  const dataset = { seq: data.seq, user: data.user_id };
  if (ack) dataset.clientMsgId = data.client_msg_id;
  return h('li', { class: `msg ${own ? 'own' : ''} ${ack}`.replace(/ +/g, ' ').trim(), dataset },
    h('div', { class: 'meta' }, h('span', { class: 'author' }, data.user_id), ' ', timeNode(data.timestamp),
      ack && h('span', { class: 'status', title: ack === 'acked' ? 'Saved by the server' : 'Waiting for the server to save it' },
        ack === 'acked' ? '✓ saved' : 'sent')),
    h('p', { class: 'text' }, data.text));
}

export function renderMessages() {
  const thread = state.privateTo !== null ? state.threads.get(state.privateTo) : null;
  const room = thread ? null : state.rooms.get(state.current);
  const list = ui.messages;
  if (!state.me) ui.emptyState.textContent = 'Pick a name, connect, then join a room.';
  else if (thread) ui.emptyState.textContent = `No private messages with ${thread.peer} yet.`;
  else ui.emptyState.textContent = 'Join or create a room to start chatting.';
  if (!room && !thread) {
    ui.emptyState.hidden = false;
    list.replaceChildren();
    ui.loadOlder.hidden = true;
    return;
  }
  const view = thread || room;
  const items = withDividers(thread ? threadTimeline(thread) : timeline(room));
  ui.emptyState.hidden = !thread || items.length > 0;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
  const prevHeight = list.scrollHeight;
  const prevTop = list.scrollTop;
  const oldFirst = list.firstElementChild;

  // Reuse elements by key so a new message only appends (keeps text selection intact).
  const used = new Map();
  const nodes = items.map((item) => {
    const node = view.nodes.get(item.key) || messageNode(item);
    used.set(item.key, node);
    return node;
  });
  view.nodes = used;
  const current = [...list.children];
  const isPrefix = current.length <= nodes.length && current.every((c, i) => c === nodes[i]);
  if (isPrefix) list.append(...nodes.slice(current.length));
  else list.replaceChildren(...nodes);

  if (stickToBottom || atBottom) list.scrollTop = list.scrollHeight;
  else if (oldFirst && oldFirst.isConnected && list.firstElementChild !== oldFirst) {
    list.scrollTop = prevTop + (list.scrollHeight - prevHeight);  // older page was prepended
  }
  stickToBottom = false;
  const lowest = room ? minSeq(room) : Infinity;  // Infinity for an empty room
  ui.loadOlder.hidden = !room || room.status !== 'joined' || room.noOlder || lowest <= 1
    || lowest === Infinity;
}
