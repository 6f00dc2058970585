// The message list (#messages) of the current room: its timeline (chat by seq, notices
// after the seq they followed, then our messages not echoed yet), one element per item
// reused across renders by key, and where the list scrolls to.

import { h, timeNode, ui } from './dom.js';
import { retryPending } from './composer.js';
import { minSeq } from './rooms.js';
import { state } from './state.js';

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
      items.push({ key: `n:${notices[n].order}`, kind: 'notice', data: notices[n++] });
    }
  };
  noticesUpTo(0);
  for (const seq of seqs) {
    const msg = room.messages.get(seq);
    const ack = ackState(room, msg);
    items.push({ key: `s:${seq}:${msg.user_id === state.me}:${ack}`, kind: 'chat', data: msg, ack });
    noticesUpTo(seq);
  }
  noticesUpTo(Infinity);
  for (const [cid, p] of state.pending) {
    // Not echoed yet: shown after everything, in the order they were written.
    if (p.room === room.id && p.seq === null) {
      items.push({ key: `p:${cid}:${p.status}`, kind: 'pending', data: { cid, ...p } });
    }
  }
  return items;
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
    h('p', { class: 'text' }, data.text));
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
  const room = state.rooms.get(state.current);
  const list = ui.messages;
  ui.emptyState.hidden = Boolean(room);
  if (!state.me) ui.emptyState.textContent = 'Pick a name, connect, then join a room.';
  else ui.emptyState.textContent = 'Join or create a room to start chatting.';
  if (!room) {
    list.replaceChildren();
    ui.loadOlder.hidden = true;
    return;
  }
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
  const prevHeight = list.scrollHeight;
  const prevTop = list.scrollTop;
  const oldFirst = list.firstElementChild;

  // Reuse elements by key so a new message only appends (keeps text selection intact).
  const used = new Map();
  const nodes = timeline(room).map((item) => {
    const node = room.nodes.get(item.key) || messageNode(item);
    used.set(item.key, node);
    return node;
  });
  room.nodes = used;
  const current = [...list.children];
  const isPrefix = current.length <= nodes.length && current.every((c, i) => c === nodes[i]);
  if (isPrefix) list.append(...nodes.slice(current.length));
  else list.replaceChildren(...nodes);

  if (stickToBottom || atBottom) list.scrollTop = list.scrollHeight;
  else if (oldFirst && oldFirst.isConnected && list.firstElementChild !== oldFirst) {
    list.scrollTop = prevTop + (list.scrollHeight - prevHeight);  // older page was prepended
  }
  stickToBottom = false;
  const lowest = minSeq(room);  // Infinity for an empty room
  ui.loadOlder.hidden = room.status !== 'joined' || room.noOlder || lowest <= 1 || lowest === Infinity;
}
