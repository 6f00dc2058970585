/*
 * roomcast browser chat. Wire protocol: docs/PROTOCOL.md (one multi-room socket on /ws).
 *
 * Hooks for automated browser tests (ids and data attributes are stable):
 *   #name-input, #connect-btn    pick a name and connect; both disabled while signed in
 *   #disconnect-btn               "Sign out": disconnects and forgets the user's rooms,
 *                                 threads and unsent chats (shown while signed in)
 *   #token-form    shown while the page needs a token it cannot get by itself (js/auth.js):
 *                  #token (a password field) and #token-btn use a pasted one; #session-note
 *                  says why (data-state "token": none yet, "expiring": "session expires in
 *                  N min — paste a new token", "expired": "session expired — paste a new
 *                  token"; #conn-detail then reads "waiting for a token" / "session expired")
 *   URL fragment   #token=JWT signs in as the token's user (removed from the address bar at
 *                  once); #ttl=SECS asks development tokens to live SECS seconds (tests)
 *   #conn-state    text is exactly "connected", "reconnecting" or "offline" (also data-state);
 *                  the detail ("attempt 3, next try in 2 s", "connecting…") is in #conn-detail
 *                  and in the title attribute of #conn-state
 *   #room-input, #join-btn                       join or create a room
 *   #room-list     li[data-room="ID"], classes: "current" on the selected one; "joined", or
 *                  "joining" (join sent) / "idle" (offline, join not sent yet); inside: button.room-select, button.room-leave and
 *                  span.unread (text = count, data-unread = count, hidden when 0)
 *                  (below 720 px the list becomes a horizontal strip of chips above the chat)
 *   #thread-list   li.thread[data-peer="NAME"], one private conversation per person, like a
 *                  room: "current" while shown; button.thread-select, button.thread-close,
 *                  span.unread (as in #room-list); #threads-heading hidden while empty
 *   #room-title    "# ROOM", or "Private with NAME" (class "private") while a thread is shown
 *   #leave-btn (leaves the current room; hidden in a thread), #load-older
 *   #messages      li.msg[data-seq][data-user] for chat ("own" added for your own messages);
 *                  your own messages sent from this page carry data-client-msg-id and the class
 *                  "pending" until the server's `ack` (stored durably), then "acked";
 *                  li.msg.own.pending without data-seq until the echo arrives ("failed" +
 *                  button.retry-btn when neither echo nor ack came in 10 s, or when an error
 *                  named it: then data-error-code, e.g. "forbidden", and p.reason);
 *                  li.notice[data-user] for joined/left notices; .text holds the message;
 *                  in a thread, li.private (as in #privates) instead; li.date-divider[data-date=
 *                  "YYYY-MM-DD"] (local day) above each day's first item, li.unread-divider
 *                  above the first message that was unread when the room/thread was opened;
 *                  every time.time has the full date and time as its title
 *   #typing        "bob is typing…" (empty when nobody is)
 *   #composer      class "private" in private mode; data-target "#ROOM" or "@NAME"
 *   #message-input, #send-btn   Enter or the button sends; "/msg USER text" sends privately;
 *                  the placeholder says where it goes ("Message #lobby" / "Private to bob")
 *                  and so does the button ("Send to #lobby" / "Send to bob")
 *   #members       li[data-user]; button.member-pm opens that person's thread (private mode);
 *                  class "stale" (and #members-stale shown) from a lost connection until the
 *                  room is joined again, when the list is refreshed
 *   #private-mode (hidden unless in private mode), #private-target, #private-cancel (or Escape)
 *                  go back to the room
 *   #privates      li.private.in / li.private.out[data-from][data-to]; "failed" on user_offline or cluster_unavailable
 *   #errors        div.error[data-code] with .error-code, .error-message, button.error-dismiss
 *   #toasts        div.toast[data-id] per notification (from /notifications/{name}), with
 *                  .toast-title, .toast-message and button.toast-dismiss; data-notify on <body>
 *                  is "connected" while the notification socket is open; toasts never cover
 *                  the composer
 *
 * A reload signs this tab in again as the same name and rejoins its rooms with `since_seq`,
 * with their messages, unread counts and the private threads as they were (js/storage.js).
 *
 * Both sockets carry a token as WebSocket protocols, never in the URL: a development token
 * from `POST /api/dev-token`, or, when the server checks real tokens, one handed to the page
 * (#token= in the URL, or pasted); fresh ones go out as `refresh` before they lapse
 * (js/auth.js).
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
 *   auth.js        the token: development tokens, a given one, refresh, expiry
 *   connection.js  the chat socket: connect, heartbeat, reconnect with backoff
 *   frames.js      what each server frame does to the state
 *   rooms.js       rooms and their messages: join, rejoin, leave, select, unread, presence
 *   composer.js    sending: chats until acked, /msg, private mode, our typing
 *   privates.js    private messages, one thread per person
 *   notify.js      the notification socket and its toasts
 *   errors.js      the error banner
 *   storage.js     what survives a reload (localStorage, sessionStorage)
 */

import { readFragment, useToken } from './js/auth.js';
import { noteTyping, submitMessage } from './js/composer.js';
import { connectAs, retryNow, signOut, tick } from './js/connection.js';
import { ui } from './js/dom.js';
import { closeThread } from './js/privates.js';
import { invalidateAll } from './js/render.js';
import { joinRoom, leaveRoom, loadOlder } from './js/rooms.js';
import { state } from './js/state.js';
import { loadName, saveNow, tabUser } from './js/storage.js';

function init() {
  ui.nameInput.value = loadName();
  ui.loginForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    connectAs(ui.nameInput.value.trim());
  });
  ui.tokenForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (useToken(ui.tokenInput.value)) ui.tokenInput.value = '';
  });
  ui.disconnectBtn.addEventListener('click', () => {
    signOut();
    ui.nameInput.focus();
  });
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
    if (ev.key === 'Escape' && state.privateTo !== null) closeThread();
  });
  ui.privateCancel.addEventListener('click', () => {
    closeThread();
    ui.messageInput.focus();
  });
  // Back online: don't wait out the backoff.
  window.addEventListener('online', retryNow);
  window.addEventListener('pagehide', saveNow);
  setInterval(tick, 1000);
  invalidateAll();
  // A token handed over in the URL signs in as its user; signed in before a reload: sign in
  // again, with the rooms and threads as they were.
  const user = readFragment() || tabUser();
  if (user) connectAs(user);
}

init();
