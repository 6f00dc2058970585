// Private messages: sending one (`private` frame), receiving one, marking a sent one failed
// when the server says the addressee is offline, and the list of them (#privates).

import { setPrivateTarget, validText } from './composer.js';
import { isOnline, send } from './connection.js';
import { h, timeNode, ui } from './dom.js';
import { pushError } from './errors.js';
import { invalidate } from './render.js';
import { NAME_RE, state } from './state.js';

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
  state.privates.push({ dir: 'out', from: state.me, to, message: content,
    timestamp: new Date().toISOString(), failed: false });
  invalidate('privates');
  return true;
}

export function receivePrivate(f) {
  state.privates.push({ dir: 'in', from: f.from, to: f.to_user, message: f.message,
    timestamp: f.timestamp, failed: false });
  invalidate('privates');
}

/** user_offline: mark the latest sent private to the named user (or the latest one) failed. */
export function markPrivateFailed(toUser, message) {
  const sent = state.privates.filter((p) => p.dir === 'out' && !p.failed);
  // The error names the addressee; older servers only said it in the message.
  const named = sent.filter((p) => (toUser ? p.to === toUser : message.includes(p.to)));
  const target = (named.length ? named : sent).at(-1);
  if (target) target.failed = true;
  invalidate('privates');
}

export function renderPrivates() {
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
