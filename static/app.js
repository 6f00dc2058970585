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
 *   #members       li[data-user]; button.member-pm opens "private to USER" mode;
 *                  class "stale" (and #members-stale shown) from a lost connection until the
 *                  room is joined again, when the list is refreshed
 *   #private-mode (hidden unless in private mode), #private-target, #private-cancel (or Escape)
 *   #privates      li.private.in / li.private.out[data-from][data-to]; "failed" on user_offline
 *   #errors        div.error[data-code] with .error-code, .error-message, button.error-dismiss
 *   #toasts        div.toast[data-id] per notification (from /notifications/{name}), with
 *                  .toast-title, .toast-message and button.toast-dismiss; data-notify on <body>
 *                  is "connected" while the notification socket is open; toasts never cover
 *                  the composer
 *
 * Everything from the network or the user is put in the page as text nodes (see `h` in
 * js/dom.js), never as HTML.
 *
 * This is the entry module: it lists the hooks above and wires the page's controls to the
 * modules in js/, which own one concern each:
 *   dom.js         elements (`ui`), `h`, focus keeping, <time> nodes
 *   state.js       the one state object and the shape of a room
 *   render.js      the render schedule (`invalidate`) and the connection, rooms, members
 *                  and typing regions
 *   timeline.js    the message list of the current room
 *   connection.js  the chat socket: connect, heartbeat, reconnect with backoff
 *   frames.js      what each server frame does to the state
 *   rooms.js       rooms and their messages: join, rejoin, leave, select, unread, presence
 *   composer.js    sending: chats until acked, /msg, private mode, our typing
 *   privates.js    private messages
 *   notify.js      the notification socket and its toasts
 *   errors.js      the error banner
 *   storage.js     localStorage
 */

import { clearPrivateTarget, noteTyping, submitMessage } from './js/composer.js';
import { connectAs, disconnect, retryNow, tick } from './js/connection.js';
import { ui } from './js/dom.js';
import { invalidateAll } from './js/render.js';
import { joinRoom, leaveRoom, loadOlder } from './js/rooms.js';
import { state } from './js/state.js';
import { loadName } from './js/storage.js';

function init() {
  ui.nameInput.value = loadName();
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
  ui.loadOlder.addEventListener('click', loadOlder);
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
  window.addEventListener('online', retryNow);
  setInterval(tick, 1000);
  invalidateAll();
}

init();
