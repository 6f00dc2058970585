// The page's state: the one `state` object that the other modules change and the renderers
// show, and the shape of a room (`newRoom`). Nothing here touches the DOM or the network.

export const NAME_RE = /^[A-Za-z0-9_\-.:]{1,64}$/;

export const state = {
  me: null,              // user name of the session (set on Connect)
  wantOnline: false,     // true from Connect until Sign out
  conn: 'offline',       // 'offline' | 'connecting' | 'connected' | 'reconnecting'
  attempt: 0,            // reconnect attempts since the last stable connection
  welcomedAt: 0,         // when the chat socket got its welcome (0: not welcomed)
  retryAt: 0,            // when the scheduled reconnect fires
  reconnectTimer: null,  // the scheduled reconnect, if any
  ws: null,
  wsToken: null,         // the token the chat socket was opened with
  socketGen: 0,          // increases with every socket; tags which socket sent a message
  lastRx: 0,             // when the socket last received a frame (or was opened)
  lastPing: 0,
  limits: { max_text_chars: 4000 },
  rooms: new Map(),      // room_id -> room (see newRoom), in the order they were joined
  current: null,         // selected room_id
  pending: new Map(),    // client_msg_id -> { room, text, status, gen, sentAt, seq }, until `ack`
  serverAcks: false,     // the server has sent an `ack`: resending a client_msg_id is idempotent
  privates: [],          // { id, dir: 'in'|'out', peer, from, to, message, timestamp, failed }
  threads: new Map(),    // peer -> thread (see newThread), in the order they were opened
  privateTo: null,       // the peer whose thread is shown (private mode), or null: the room
  errors: [],            // { id, code, message }
  typingOut: null,       // { room, timer } while we announce that we are typing
  lostAt: 0,             // when the chat socket was last lost (a dev token older than that is re-minted)
  connectGen: 0,         // increases with every connect attempt; an attempt still getting its token
                         // when a newer one starts (or Sign out) gives up
  notify: { ws: null, attempt: 0, timer: null, open: false, lostAt: 0 },  // the notification socket
  auth: newAuth(),       // how this sign-in proves who it is (js/auth.js)
  toasts: [],            // { id, title, message, kind, timestamp, timer }
};

/** The sign-in's credentials: a token and when it lapses, and what the page waits for. */
export function newAuth() {
  return {
    mode: null,          // null (not known yet) | 'dev' (development tokens from the server) |
                         // 'token' (a token given to the page) | 'named' (no token: the socket
                         // names its user, development mode when this page may not mint)
    token: null,         // the JWT the sockets use
    exp: 0,              // its expiry (Unix seconds, the server's clock)
    iat: null,           // when it was issued (Unix seconds), if it says
    receivedAt: 0,       // when the page got it (ms, this clock)
    refreshAt: 0,        // when to get the next one (ms: 80% of its lifetime)
    refreshTimer: null,
    retryTimer: null,    // a failed development-token refresh, tried again
    need: null,          // null | 'token' (none yet) | 'expiring' | 'expired': asking for a token
    minting: null,       // the development-token request in flight (a promise)
    probing: false,      // 'named' is being tried once: if the socket never opens, ask for a token
  };
}

export function newRoom(id) {
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
    firstUnread: null,   // seq of the oldest unread message (while unread > 0)
    divider: null,       // seq the "new messages" divider is shown above, while selected
    historyLeft: 0,      // history frames still expected after `joined`
    prevMax: 0,          // maxSeq before the latest join, to detect a gap
    countFrom: Infinity, // chat with a seq above this counts as unread (set on `joined`)
    loadedOnce: false,   // the first join's history has arrived
    noOlder: false,      // the server said there is nothing older
    postDenied: false,   // the token let us read here but refused a post (`forbidden`)
    nodes: new Map(),    // render cache: item key -> element
  };
}

/** A private conversation with one person, shown like a room. */
export function newThread(peer) {
  return {
    peer,
    unread: 0,
    firstUnread: null,   // id of the oldest unread private message (while unread > 0)
    divider: null,       // id the "new messages" divider is shown above, while selected
    nodes: new Map(),    // render cache: item key -> element
  };
}

/** Forget everything of the signed-in user (Sign out); the connection is already closed. */
export function resetSession() {
  state.rooms.clear();
  state.current = null;
  state.pending.clear();
  state.serverAcks = false;
  state.privates = [];
  state.threads.clear();
  state.privateTo = null;
  state.typingOut = null;
}

/** Switching what is shown: no "new messages" divider stays behind in what was shown. */
export function clearDividers() {
  for (const room of state.rooms.values()) room.divider = null;
  for (const thread of state.threads.values()) thread.divider = null;
}
