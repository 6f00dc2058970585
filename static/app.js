/*
 * roomcast browser chat. Wire protocol: docs/PROTOCOL.md (one multi-room socket on /ws).
 *
 * Hooks for automated browser tests (ids and data attributes are stable):
 *   #name-input, #connect-btn, #disconnect-btn   pick a name, connect / disconnect
 *   #conn-state    text is exactly "connected", "reconnecting" or "offline" (also data-state);
 *                  the detail ("attempt 3, next try in 2 s", "connecting…") is in #conn-detail
 *                  and in the title attribute of #conn-state
 *   #room-input, #join-btn                       join or create a room
 *   #room-list     li[data-room="ID"], classes: "current" on the selected one; "joined", or
 *                  "joining" (join sent) / "idle" (offline, join not sent yet); inside: button.room-select, button.room-leave and
 *                  span.unread (text = count, data-unread = count, hidden when 0)
 *                  (below 720 px the list becomes a horizontal strip of chips above the chat)
 *   #room-title, #leave-btn (leaves the current room), #load-older
 *   #messages      li.msg[data-seq][data-user] for chat ("own" added for your own messages);
 *                  your own messages sent from this page carry data-client-msg-id and the class
 *                  "pending" until the server's `ack` (stored durably), then "acked";
 *                  li.msg.own.pending without data-seq until the echo arrives ("failed" +
 *                  button.retry-btn when neither echo nor ack came in 10 s);
 *                  li.notice[data-user] for joined/left notices; .text holds the message
 *   #typing        "bob is typing…" (empty when nobody is)
 *   #message-input, #send-btn   Enter or the button sends; "/msg USER text" sends privately
 *   #members       li[data-user]; button.member-pm opens "private to USER" mode
 *   #private-mode (hidden unless in private mode), #private-target, #private-cancel (or Escape)
 *   #privates      li.private.in / li.private.out[data-from][data-to]; "failed" on user_offline
 *   #errors        div.error[data-code] with .error-code, .error-message, button.error-dismiss
 *   #toasts        div.toast[data-id] per notification (from /notifications/{name}), with
 *                  .toast-title, .toast-message and button.toast-dismiss; data-notify on <body>
 *                  is "connected" while the notification socket is open
 *
 * Everything from the network or the user is put in the page as text nodes (see `h`), never
 * as HTML.
 */

const NAME_RE = /^[A-Za-z0-9_\-.:]{1,64}$/;
const NAME_STORAGE_KEY = 'roomcast.name';
const TYPING_IDLE_MS = 3000;       // we send is_typing:false after this long without a key
const REMOTE_TYPING_MS = 6000;     // a remote "typing" expires without an update
const PENDING_FAIL_MS = 10000;     // a sent message with no echo by then is marked failed
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const POLICY_PAUSE_MS = 5000;      // after close 1008 (rate limit) wait at least this long
const PING_EVERY_MS = 20000;       // app-level ping, so a dead link is noticed
const SILENCE_LIMIT_MS = 45000;    // no frame at all for this long: drop the socket
const CONNECT_TIMEOUT_MS = 10000;  // a socket still opening after this long is given up
const MAX_ERRORS = 5;
const MAX_TOASTS = 5;
const TOAST_MS = 15000;            // a toast goes away by itself after this long

const $ = (sel) => document.querySelector(sel);
const ui = {
  loginForm: $('#login-form'), nameInput: $('#name-input'), disconnectBtn: $('#disconnect-btn'),
  connState: $('#conn-state'), connDetail: $('#conn-detail'), errors: $('#errors'),
  joinForm: $('#join-form'),
  roomInput: $('#room-input'), roomList: $('#room-list'), roomTitle: $('#room-title'),
  leaveBtn: $('#leave-btn'), loadOlder: $('#load-older'), emptyState: $('#empty-state'),
  messages: $('#messages'), typing: $('#typing'), composer: $('#composer'),
  privateMode: $('#private-mode'), privateTarget: $('#private-target'),
  privateCancel: $('#private-cancel'), messageInput: $('#message-input'),
  sendBtn: $('#send-btn'), members: $('#members'), privates: $('#privates'),
};

/* ---------- state ---------- */

const state = {
  me: null,              // user name of the session (set on Connect)
  wantOnline: false,     // false after the user pressed Disconnect
  conn: 'offline',       // 'offline' | 'connecting' | 'connected' | 'reconnecting'
  attempt: 0,            // reconnect attempts since the last welcome
  retryAt: 0,            // when the scheduled reconnect fires
  ws: null,
  socketGen: 0,          // increases with every socket; tags which socket sent a message
  lastRx: 0,             // when the socket last received a frame (or was opened)
  lastPing: 0,
  limits: { max_text_chars: 4000 },
  rooms: new Map(),      // room_id -> room (see newRoom), in the order they were joined
  current: null,         // selected room_id
  pending: new Map(),    // client_msg_id -> { room, text, status, gen, sentAt, seq }, until `ack`
  serverAcks: false,     // the server has sent an `ack`: resending a client_msg_id is idempotent
  privates: [],          // { dir: 'in'|'out', from, to, message, timestamp, failed }
  privateTo: null,       // target of "private to USER" mode
  errors: [],            // { id, code, message }
  typingOut: null,       // { room, timer } while we announce that we are typing
  notify: { ws: null, attempt: 0, timer: null, open: false },  // the notification socket
  toasts: [],            // { id, title, message, kind, timestamp, timer }
};

function newRoom(id) {
  return {
    id,
    status: 'idle',      // 'idle' (join not sent) | 'joining' | 'joined'
    messages: new Map(), // seq -> chat frame
    acked: new Set(),    // seqs of our own messages the server acknowledged
    maxSeq: 0,
    notices: [],         // { afterSeq, order, user, text, timestamp }
    noticeOrder: 0,
    members: new Set(),
    typing: new Map(),   // user -> expiry timer
    unread: 0,
    historyLeft: 0,      // history frames still expected after `joined`
    prevMax: 0,          // maxSeq before the latest join, to detect a gap
    countFrom: Infinity, // chat with a seq above this counts as unread (set on `joined`)
    loadedOnce: false,   // the first join's history has arrived
    noOlder: false,      // the server said there is nothing older
    nodes: new Map(),    // render cache: item key -> element
  };
}

let clientMsgCounter = 0;
let errorCounter = 0;
let reconnectTimer = null;

/* ---------- rendering: one function per region, batched per task ---------- */

const dirty = new Set();
let flushQueued = false;
let stickToBottom = false;  // next messages render scrolls to the end

function invalidate(...regions) {
  regions.forEach((r) => dirty.add(r));
  if (!flushQueued) {
    flushQueued = true;
    queueMicrotask(flush);
  }
}

function invalidateAll() {
  invalidate('conn', 'rooms', 'messages', 'members', 'typing', 'privates', 'errors', 'composer',
    'toasts');
}

function flush() {
  flushQueued = false;
  const regions = [...dirty];
  dirty.clear();
  regions.forEach((r) => renderers[r]());
}

const renderers = {
  conn: renderConn, rooms: renderRooms, messages: renderMessages, members: renderMembers,
  typing: renderTyping, privates: renderPrivates, errors: renderErrors, composer: renderComposer,
  toasts: renderToasts,
};

/** Create an element; text always goes in as a text node, never as HTML. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'onclick') node.addEventListener('click', value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Re-rendering replaces list items; give focus back to the same control in the new item. */
function keepFocus(container, render) {
  const active = document.activeElement;
  const item = active && container.contains(active) ? active.closest('li, .toast') : null;
  render();
  if (!item || item.isConnected) return;
  const key = JSON.stringify({ ...item.dataset });
  const twin = [...container.children].find((li) => JSON.stringify({ ...li.dataset }) === key);
  const control = twin && twin.querySelector(`.${active.classList[0]}`);
  if (control) control.focus();
}

function pad2(n) { return String(n).padStart(2, '0'); }

function timeNode(ts) {
  const d = ts ? new Date(ts) : new Date();
  if (Number.isNaN(d.getTime())) return h('time', { class: 'time' }, '');
  return h('time', { class: 'time', datetime: d.toISOString(), title: d.toLocaleString() },
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}`);
}

function renderConn() {
  const label = state.conn === 'connecting' ? 'offline' : state.conn;
  let detail = '';
  if (state.conn === 'connecting') detail = 'connecting…';
  else if (state.conn === 'reconnecting') {
    const wait = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    detail = reconnectTimer ? `attempt ${state.attempt}, next try in ${wait} s`
      : `attempt ${state.attempt}, connecting…`;
  } else if (state.conn === 'connected') detail = `as ${state.me}`;
  ui.connState.textContent = label;
  ui.connState.dataset.state = label;
  ui.connState.title = detail;
  ui.connDetail.textContent = detail;
  ui.disconnectBtn.hidden = !state.wantOnline;
  document.body.dataset.conn = label;
}

function roomItem(room) {
  const isCurrent = room.id === state.current;
  const badge = h('span', { class: 'unread', dataset: { unread: room.unread },
    hidden: room.unread === 0 }, room.unread);
  return h('li', { class: `room ${isCurrent ? 'current' : ''} ${room.status}`.trim(),
    dataset: { room: room.id } },
  h('button', { type: 'button', class: 'room-select', 'aria-current': isCurrent ? 'true' : null,
    'aria-label': room.unread ? `${room.id}, ${room.unread} unread` : room.id, onclick: () => selectRoom(room.id) }, h('span', { class: 'room-name' }, room.id), badge),
  h('button', { type: 'button', class: 'room-leave', 'aria-label': `Leave room ${room.id}`,
    title: 'Leave room', onclick: () => leaveRoom(room.id) }, '✕'));
}

function renderRooms() {
  const rooms = [...state.rooms.values()];
  keepFocus(ui.roomList, () => ui.roomList.replaceChildren(...rooms.map(roomItem)));
  ui.roomTitle.textContent = state.current ? `# ${state.current}` : 'No room selected';
  ui.leaveBtn.disabled = !state.current;
  const unread = rooms.reduce((sum, r) => sum + r.unread, 0);
  document.title = unread ? `(${unread}) roomcast` : 'roomcast';
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

function renderMessages() {
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

function renderMembers() {
  const room = state.rooms.get(state.current);
  const names = room ? [...room.members].sort() : [];
  keepFocus(ui.members, () => ui.members.replaceChildren(...names.map((name) => (name === state.me
    ? h('li', { dataset: { user: name }, class: 'self' }, h('span', { class: 'member-name' }, name), ' (you)')
    : h('li', { dataset: { user: name } },
      h('button', { type: 'button', class: 'member-pm', 'aria-label': `Send a private message to ${name}`,
        onclick: () => setPrivateTarget(name) }, name))))));
}

function renderTyping() {
  const room = state.rooms.get(state.current);
  const names = room ? [...room.typing.keys()].sort() : [];
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  ui.typing.textContent = text;
}

function renderPrivates() {
  ui.privates.replaceChildren(...state.privates.map((p) => h('li', {
    class: `private ${p.dir} ${p.failed ? 'failed' : ''}`.trim(), dataset: { from: p.from, to: p.to },
  },
  h('div', { class: 'meta' },
    h('span', { class: 'author' }, p.dir === 'in' ? p.from : `you → ${p.to}`), ' ', timeNode(p.timestamp),
    p.failed && h('span', { class: 'status' }, ' not delivered (user offline)'),
    p.dir === 'in' && h('button', { type: 'button', class: 'reply-btn subtle',
      'aria-label': `Reply privately to ${p.from}`, onclick: () => setPrivateTarget(p.from) }, 'Reply')),
  h('p', { class: 'text' }, p.message))));
  ui.privates.scrollTop = ui.privates.scrollHeight;
}

function renderErrors() {
  ui.errors.replaceChildren(...state.errors.map((e) => h('div', { class: 'error',
    dataset: { code: e.code } },
  h('strong', { class: 'error-code' }, e.code), ' ', h('span', { class: 'error-message' }, e.message),
  h('button', { type: 'button', class: 'error-dismiss', 'aria-label': 'Dismiss error',
    onclick: () => dismissError(e.id) }, '✕'))));
}

function renderToasts() {
  const box = $('#toasts');
  keepFocus(box, () => box.replaceChildren(...state.toasts.map((t) => h('div', {
    class: `toast ${t.kind}`.trim(), dataset: { id: t.id, kind: t.kind },
  },
  h('strong', { class: 'toast-title' }, t.title), ' ',
  h('p', { class: 'toast-message' }, t.message),
  h('button', { type: 'button', class: 'toast-dismiss subtle', 'aria-label': `Dismiss notification ${t.title}`,
    onclick: () => dismissToast(t.id) }, '✕')))));
  document.body.dataset.notify = state.notify.open ? 'connected' : 'offline';
}

function renderComposer() {
  const room = state.rooms.get(state.current);
  ui.privateMode.hidden = !state.privateTo;
  ui.privateTarget.textContent = state.privateTo || '';
  ui.messageInput.disabled = !state.me;
  ui.sendBtn.disabled = !state.me;
  if (state.privateTo) ui.messageInput.placeholder = `Private message to ${state.privateTo}`;
  else if (room) ui.messageInput.placeholder = `Message #${room.id} (or /msg USER text)`;
  else ui.messageInput.placeholder = 'Join a room, or /msg USER text';
}

/* ---------- socket ---------- */

function send(frame) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
  state.ws.send(JSON.stringify(frame));
  return true;
}

function isOnline() { return state.conn === 'connected'; }

function openSocket() {
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${scheme}//${location.host}/ws?user_id=${encodeURIComponent(state.me)}`);
  state.ws = ws;
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
  stopTyping(false);
  for (const room of state.rooms.values()) {
    room.status = 'idle';
    room.historyLeft = 0;
    clearRemoteTyping(room);
  }
  if (state.wantOnline) scheduleReconnect(code);
  else state.conn = 'offline';
  invalidateAll();
}

function scheduleReconnect(code) {
  state.attempt += 1;
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (state.attempt - 1));
  let delay = base / 2 + Math.random() * (base / 2);  // "equal jitter"
  if (code === 1008) delay = Math.max(delay, POLICY_PAUSE_MS);
  state.conn = 'reconnecting';
  state.retryAt = Date.now() + delay;
  clearTimeout(reconnectTimer);
  reconnectTimer = setTimeout(() => { reconnectTimer = null; openSocket(); }, delay);
}

/* ---------- notification socket and toasts ---------- */

function openNotifySocket() {
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
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (n.attempt - 1));
      n.timer = setTimeout(openNotifySocket, base / 2 + Math.random() * (base / 2));
    }
    invalidate('toasts');
  });
}

function closeNotifySocket() {
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

/** Heartbeat and timeouts; also keeps the reconnect countdown fresh. Runs every second. */
function tick() {
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
  for (const [cid, p] of state.pending) {
    if (p.status === 'pending' && p.seq === null && p.gen === state.socketGen && now - p.sentAt > PENDING_FAIL_MS) {
      state.pending.set(cid, { ...p, status: 'failed' });
      invalidate('messages');
    }
  }
  if (state.conn === 'reconnecting') invalidate('conn');
}

/* ---------- incoming frames ---------- */

function onFrameText(text) {
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
    state.attempt = 0;
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
    if (room.id === state.current) stickToBottom = true;
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

  private(f) {
    state.privates.push({ dir: 'in', from: f.from, to: f.to_user, message: f.message,
      timestamp: f.timestamp, failed: false });
    invalidate('privates');
  },

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

  error(f) {
    pushError(f.code || 'error', f.message || '');
    const room = f.room_id ? state.rooms.get(f.room_id) : null;
    // An error about one of our chats names it: that message failed (it offers Retry).
    const pending = f.client_msg_id && state.pending.get(f.client_msg_id);
    if (pending && pending.status === 'pending' && pending.seq === null) {
      state.pending.set(f.client_msg_id, { ...pending, status: 'failed', error: f.code, errorText: f.message });
      invalidate('messages');
    }
    if (f.code === 'user_offline') markPrivateFailed(f.to_user, f.message || '');
    else if (room && room.status === 'joining' && ['invalid_room', 'too_many_rooms'].includes(f.code)) {
      removeRoom(room.id);  // the join was refused
    } else if (room && f.code === 'already_joined') {
      room.status = 'joined';
      send({ type: 'get_users', room_id: room.id });
      invalidate('rooms', 'messages');
    }
  },
};

function minSeq(room) {
  let min = Infinity;
  for (const seq of room.messages.keys()) if (seq < min) min = seq;
  return min;
}

/** Store a chat frame unless its seq is known; settle our pending copy; count unread. */
function addChat(room, f) {
  if (typeof f.seq !== 'number') return;
  const pending = f.client_msg_id && state.pending.get(f.client_msg_id);
  if (pending && pending.room === room.id && f.user_id === state.me) {
    // Echoed: it is in the room at this seq; it stays pending until the `ack`.
    if (pending.seq === null) state.pending.set(f.client_msg_id, { ...pending, seq: f.seq });
    if (room.id === state.current) stickToBottom = true;
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
  if (f.seq > room.countFrom && room.id !== state.current && f.user_id !== state.me) {
    room.unread += 1;
    invalidate('rooms');
  }
  invalidate('messages');
}

/** The join's history is complete: fill a gap left by a long disconnect, resend pending. */
function finishJoin(room) {
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

function resetRoomHistory(room) {
  room.messages.clear();
  room.acked.clear();
  room.maxSeq = 0;
  room.prevMax = 0;
  room.noOlder = false;
  room.notices = [];
  room.nodes.clear();
  addNotice(room, { text: 'The server restarted; earlier messages are gone.' });
}

function presence(f, joined) {
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

function addNotice(room, { user, text, timestamp }) {
  room.noticeOrder += 1;
  room.notices.push({ afterSeq: room.maxSeq, order: room.noticeOrder, user, text, timestamp });
  invalidate('messages');
}

function setRemoteTyping(room, user, isTyping) {
  clearTimeout(room.typing.get(user));
  if (isTyping) {
    room.typing.set(user, setTimeout(() => setRemoteTyping(room, user, false), REMOTE_TYPING_MS));
  } else if (!room.typing.delete(user)) {
    return;
  }
  if (room.id === state.current) invalidate('typing');
}

function clearRemoteTyping(room) {
  room.typing.forEach((timer) => clearTimeout(timer));
  room.typing.clear();
  invalidate('typing');
}

/** user_offline: mark the latest sent private to the named user (or the latest one) failed. */
function markPrivateFailed(toUser, message) {
  const sent = state.privates.filter((p) => p.dir === 'out' && !p.failed);
  // The error names the addressee; older servers only said it in the message.
  const named = sent.filter((p) => (toUser ? p.to === toUser : message.includes(p.to)));
  const target = (named.length ? named : sent).at(-1);
  if (target) target.failed = true;
  invalidate('privates');
}

/* ---------- actions ---------- */

function connectAs(name) {
  if (!NAME_RE.test(name)) {
    pushError('invalid_user', 'A name is 1-64 characters of A-Z a-z 0-9 _ - . :');
    ui.nameInput.setAttribute('aria-invalid', 'true');
    ui.nameInput.focus();
    return;
  }
  ui.nameInput.removeAttribute('aria-invalid');
  localStorage.setItem(NAME_STORAGE_KEY, name);
  if (name === state.me && state.wantOnline) return;  // already connected (or trying) as this name
  closeSocket();
  stopTyping(false);
  state.me = name;
  state.wantOnline = true;
  state.attempt = 0;
  state.conn = 'connecting';
  for (const room of state.rooms.values()) room.status = 'idle';
  openSocket();
  closeNotifySocket();
  openNotifySocket();
  invalidateAll();
}

function disconnect() {
  state.wantOnline = false;
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  stopTyping(true);
  closeSocket();
  closeNotifySocket();
  onSocketLost(1000);
}

function sendJoin(room) {
  const frame = { type: 'join', room_id: room.id };
  // A rejoin asks for exactly what it missed; a server that cannot tell answers recovered:false
  // (or ignores the field) and sends its recent history, and finishJoin fills any gap.
  if (room.loadedOnce && room.maxSeq > 0) frame.since_seq = room.maxSeq;
  if (isOnline() && send(frame)) room.status = 'joining';
}

function joinRoom(id) {
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

function leaveRoom(id) {
  const room = state.rooms.get(id);
  if (!room) return;
  if (room.status !== 'idle') send({ type: 'leave', room_id: id });
  removeRoom(id);
}

function removeRoom(id) {
  const room = state.rooms.get(id);
  if (!room) return;
  if (state.typingOut && state.typingOut.room === id) stopTyping(false);
  clearRemoteTyping(room);
  for (const [cid, p] of state.pending) if (p.room === id) state.pending.delete(cid);
  state.rooms.delete(id);
  if (state.current === id) {
    const next = state.rooms.keys().next();
    state.current = next.done ? null : next.value;
    if (state.current) state.rooms.get(state.current).unread = 0;
    stickToBottom = true;
  }
  invalidateAll();
}

function selectRoom(id) {
  const room = state.rooms.get(id);
  if (!room) return;
  if (state.current !== id) stopTyping(true);
  state.current = id;
  room.unread = 0;
  if (room.status === 'joined') send({ type: 'get_users', room_id: id });  // refresh members
  stickToBottom = true;
  invalidate('rooms', 'messages', 'members', 'typing', 'composer');
}

function setPrivateTarget(user) {
  state.privateTo = user;
  invalidate('composer');
  ui.messageInput.focus();
}

function clearPrivateTarget() {
  state.privateTo = null;
  invalidate('composer');
}

function validText(text) {
  if (!text.trim()) return false;
  if (text.length > state.limits.max_text_chars) {
    pushError('text_too_long', `Messages are limited to ${state.limits.max_text_chars} characters.`);
    return false;
  }
  return true;
}

/** Enter / Send: a /msg command, a private message in private mode, or a room message. */
function submitMessage() {
  const text = ui.messageInput.value;
  let ok = false;
  const command = text.match(/^\/msg(?:\s+(\S+))?(?:\s+([\s\S]*))?$/);
  if (command) {
    const [, user, body] = command;
    if (!user) pushError('usage', 'Usage: /msg USER text');
    else if (!body || !body.trim()) { setPrivateTarget(user); ok = true; }  // "/msg bob" opens the mode
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
  stickToBottom = true;
  invalidate('messages');
  return true;
}

function transmitPending(cid) {
  const p = state.pending.get(cid);
  const room = p && state.rooms.get(p.room);
  if (!room || room.status === 'idle' || !isOnline()) return;
  if (send({ type: 'chat', room_id: p.room, text: p.text, client_msg_id: cid })) {
    state.pending.set(cid, { ...p, status: 'pending', gen: state.socketGen, sentAt: Date.now() });
    invalidate('messages');
  }
}

function retryPending(cid) {
  const p = state.pending.get(cid);
  if (!p) return;
  state.pending.set(cid, { ...p, status: 'pending', gen: 0, sentAt: Date.now(), error: undefined, errorText: undefined });
  transmitPending(cid);
  invalidate('messages');
}

function sendPrivate(to, content) {
  if (!NAME_RE.test(to)) {
    pushError('invalid_user', `"${to}" is not a valid user name.`);
    return false;
  }
  if (!validText(content)) return false;
  if (!isOnline() || !send({ type: 'private', to_user: to, content })) {
    pushError('offline', 'Not connected: the private message was not sent.');
    return false;
  }
  state.privates.push({ dir: 'out', from: state.me, to, message: content,
    timestamp: new Date().toISOString(), failed: false });
  invalidate('privates');
  return true;
}

/** Our own typing announcements: true on the first key, false after 3 s idle or on send. */
function noteTyping() {
  const room = state.rooms.get(state.current);
  const text = ui.messageInput.value;
  if (!room || room.status !== 'joined' || state.privateTo || !text || text.startsWith('/')) {
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

function stopTyping(announce) {
  if (!state.typingOut) return;
  clearTimeout(state.typingOut.timer);
  if (announce) send({ type: 'typing', room_id: state.typingOut.room, is_typing: false });
  state.typingOut = null;
}

function pushError(code, message) {
  errorCounter += 1;
  state.errors.push({ id: errorCounter, code: String(code), message: String(message) });
  if (state.errors.length > MAX_ERRORS) state.errors.shift();
  invalidate('errors');
}

function dismissError(id) {
  state.errors = state.errors.filter((e) => e.id !== id);
  invalidate('errors');
}

/* ---------- wiring ---------- */

function init() {
  ui.nameInput.value = localStorage.getItem(NAME_STORAGE_KEY) || '';
  ui.loginForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    connectAs(ui.nameInput.value.trim());
  });
  ui.disconnectBtn.addEventListener('click', disconnect);
  ui.joinForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (joinRoom(ui.roomInput.value.trim())) ui.roomInput.value = '';
  });
  ui.leaveBtn.addEventListener('click', () => state.current && leaveRoom(state.current));
  ui.loadOlder.addEventListener('click', () => {
    const room = state.rooms.get(state.current);
    if (room) send({ type: 'history', room_id: room.id, before_seq: minSeq(room), limit: 50 });
  });
  ui.composer.addEventListener('submit', (ev) => {
    ev.preventDefault();
    submitMessage();
  });
  ui.messageInput.addEventListener('input', noteTyping);
  ui.messageInput.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && state.privateTo) clearPrivateTarget();
  });
  ui.privateCancel.addEventListener('click', () => {
    clearPrivateTarget();
    ui.messageInput.focus();
  });
  // Back online: don't wait out the backoff.
  window.addEventListener('online', () => {
    if (state.conn === 'reconnecting' && reconnectTimer) openSocket();
  });
  setInterval(tick, 1000);
  invalidateAll();
}

init();
