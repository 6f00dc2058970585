// The page's elements and how this page makes new ones: `ui` (every element the code
// touches, by id), `h` (the only way elements are created: text always goes in as a text
// node, never as HTML), `keepFocus` (re-rendered lists keep the focused control) and
// `timeNode` (a <time> showing the time, with the full date and time on hover).

export const $ = (sel) => document.querySelector(sel);

export const ui = {
  loginForm: $('#login-form'), nameInput: $('#name-input'), connectBtn: $('#connect-btn'),
  disconnectBtn: $('#disconnect-btn'),
  tokenForm: $('#token-form'), tokenInput: $('#token'), sessionNote: $('#session-note'),
  connState: $('#conn-state'), connDetail: $('#conn-detail'), errors: $('#errors'),
  joinForm: $('#join-form'),
  roomInput: $('#room-input'), roomList: $('#room-list'), roomTitle: $('#room-title'),
  threadList: $('#thread-list'), threadsHeading: $('#threads-heading'),
  leaveBtn: $('#leave-btn'), loadOlder: $('#load-older'), emptyState: $('#empty-state'),
  messages: $('#messages'), typing: $('#typing'), composer: $('#composer'),
  privateMode: $('#private-mode'), privateTarget: $('#private-target'),
  privateCancel: $('#private-cancel'), messageInput: $('#message-input'),
  sendBtn: $('#send-btn'), members: $('#members'), membersStale: $('#members-stale'),
  privates: $('#privates'),
  toasts: $('#toasts'),
};

/** Create an element; text always goes in as a text node, never as HTML. */
export function h(tag, attrs = {}, ...children) {
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
export function keepFocus(container, render) {
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

const FULL_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

/** "14:05", with the full date and time (to the second) as its title. */
export function timeNode(ts) {
  const d = ts ? new Date(ts) : new Date();
  if (Number.isNaN(d.getTime())) return h('time', { class: 'time' }, '');
  return h('time', { class: 'time', datetime: d.toISOString(), title: FULL_TIME.format(d) },
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}`);
}
