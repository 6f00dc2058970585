// Who the page is (docs/SECURITY.md): the token both sockets carry, a fresh one before it
// lapses, and asking for one when the page cannot get it by itself.
//
// - Development mode (the server has no JWT option): the page asks `POST /api/dev-token` for a
//   token for the name entered, and again before it lapses and before every reconnect (a
//   restarted server no longer accepts the old ones). `#ttl=SECS` in the URL fragment asks for
//   tokens that live SECS seconds (for tests); the default is the server's (1 h).
// - With tokens (the route answers 404) the page cannot mint one: the application's backend
//   hands it over, in the URL fragment (`#token=JWT`, removed from the address bar at once) or
//   pasted into #token, which is shown then.
// - The route refusing this page (401, 403: a server with --api-key, or a page from another
//   machine): the page tries once without a token, naming its user, as development mode
//   allows; if that socket never opens, it asks for a token.
//
// Sockets carry the token as WebSocket protocols (`roomcast.v1`, `roomcast.token.<JWT>`), never
// in the URL. At 80% of its lifetime the page gets a fresh token (development mode), or asks
// for one ("session expires in N min — paste a new token"), and sends it on both sockets as
// `refresh`; `refreshed` schedules the next. A socket closed with 4004 (its token lapsed) is
// reopened at once with a fresh token in development mode; otherwise the page says the
// session expired and waits for a token.
//
// A token given to the page is kept in sessionStorage (this tab, for a reload), never in
// localStorage; development tokens are not kept at all (a reload mints one).

import { connectAs, resumeAfterToken, send } from './connection.js';
import { ui } from './dom.js';
import { pushError } from './errors.js';
import { sendNotify } from './notify.js';
import { invalidate } from './render.js';
import { NAME_RE, newAuth, state } from './state.js';
import { setTabToken, tabToken } from './storage.js';

const REFRESH_AT = 0.8;            // get a fresh token at this fraction of its lifetime
const MAX_TIMER_S = 86400;         // longer waits are re-armed (setTimeout's range is ~24 days)
const JWT_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

let devTtl = null;                 // `#ttl=SECS`: the lifetime asked for development tokens
let fragmentToken = null;          // `#token=JWT`: { user, token }, until it is used

const nowSecs = () => Date.now() / 1000;

/** A JWT's claims (not verified: only to read `sub`, `exp`, `iat`), or null. */
export function decodeClaims(token) {
  if (typeof token !== 'string' || !JWT_RE.test(token)) return null;
  try {
    const b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/**
 * Reads `#ttl=` and `#token=` from the URL fragment; removes the token from the address bar
 * (and so from the history). Returns the user a given token is for, or null.
 */
export function readFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const ttl = Number(params.get('ttl'));
  if (Number.isInteger(ttl) && ttl >= 1 && ttl <= 86400) devTtl = ttl;
  if (!params.has('token')) return null;
  const token = params.get('token');
  params.delete('token');
  const rest = params.toString();
  history.replaceState(history.state, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
  const claims = decodeClaims(token);
  if (!claims || !NAME_RE.test(claims.sub)) {
    pushError('token_invalid', 'The token in the address is not a token for this chat.');
    return null;
  }
  fragmentToken = { user: claims.sub, token };
  return claims.sub;
}

/** Signing in as `name` (state.me): starts over, with a token given for it if there is one. */
export function beginSignIn(name) {
  stopTimers();
  state.auth = newAuth();
  let given = null;
  if (fragmentToken && fragmentToken.user === name) given = fragmentToken.token;
  else given = tabToken(name);
  fragmentToken = null;
  if (given) adopt('token', given);
  invalidate('auth');
}

/** Signing out: no token, no timers (storage.js forgets the tab's token). */
export function endSignIn() {
  stopTimers();
  state.auth = newAuth();
  invalidate('auth');
}

function stopTimers() {
  clearTimeout(state.auth.refreshTimer);
  clearTimeout(state.auth.retryTimer);
}

/** The protocols a socket offers: the token, and `roomcast.v1`, which the server selects. */
export function protocols() {
  return ['roomcast.v1', `roomcast.token.${state.auth.token}`];
}

/** Whether the sockets name their user in the URL instead of carrying a token. */
export function named() {
  return state.auth.mode === 'named';
}

function lapsed(a) {
  return Boolean(a.exp) && nowSecs() >= a.exp;
}

/**
 * Before a socket opens: 'go' (credentials ready), 'wait' (for a token from the user), or
 * 'retry' later (the server did not answer). A development token received before `since`
 * (ms; the socket was lost then, perhaps to a restart that voided it) is minted again.
 */
export async function credentials(since = 0) {
  const a = state.auth;
  if (a.mode === 'named') return 'go';
  if (a.mode === 'token') {
    if (!a.token) return 'wait';
    if (lapsed(a)) {
      ask('expired');
      return 'wait';
    }
    return 'go';
  }
  if (a.mode === 'dev' && a.token && a.receivedAt > since && !lapsed(a)) return 'go';
  const r = await mint();
  if (a !== state.auth) return 'wait';  // signed out (or in again) meanwhile
  if (r.token) return 'go';
  if (r.status === 404) {
    // Tokens are checked, and this server does not make them: the application's backend does.
    a.mode = 'token';
    ask('token');
    return 'wait';
  }
  if (r.status === 401 || r.status === 403) {
    // Development tokens are not for this page; a development server still lets a socket
    // name its user. Tried once: if that socket never opens, ask for a token.
    a.mode = 'named';
    a.probing = true;
    return 'go';
  }
  return 'retry';
}

/** `POST /api/dev-token` for state.me; one request at a time. Resolves to `{status, token?}`. */
function mint() {
  const a = state.auth;
  if (!a.minting) {
    const body = { user_id: state.me };
    if (devTtl) body.ttl_secs = devTtl;
    a.minting = fetch('/api/dev-token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      cache: 'no-store',
    }).then(async (res) => {
      if (!res.ok) return { status: res.status };
      const answer = await res.json();
      if (typeof answer.token !== 'string' || !decodeClaims(answer.token)) return { status: 502 };
      return { status: res.status, token: answer.token, exp: Number(answer.expires_at) };
    }).catch(() => ({ status: 0 })).then((r) => {
      a.minting = null;
      if (r.token && a === state.auth) adopt('dev', r.token, r.exp);
      return r;
    });
  }
  return a.minting;
}

/** Takes `token` as the sign-in's token and schedules its refresh. */
function adopt(mode, token, exp) {
  const a = state.auth;
  const claims = decodeClaims(token) || {};
  a.mode = mode;
  a.token = token;
  a.exp = Number(exp || claims.exp) || 0;
  a.iat = Number.isFinite(claims.iat) ? claims.iat : null;
  a.receivedAt = Date.now();
  a.need = null;
  a.probing = false;
  if (mode === 'token') setTabToken(state.me, token);
  scheduleRefresh();
  invalidate('auth', 'conn');
}

/**
 * The next refresh: at 80% of the token's lifetime, measured from when the page got it
 * (lifetime `exp - iat`, both the server's clock), and no later than 80% of the time left by
 * this clock (when the two clocks agree, what was lost in transit is not counted twice).
 */
function scheduleRefresh() {
  const a = state.auth;
  clearTimeout(a.refreshTimer);
  clearTimeout(a.retryTimer);
  a.refreshTimer = null;
  if (!a.token || !a.exp) return;
  const got = a.receivedAt / 1000;
  let delay = REFRESH_AT * (a.exp - (a.iat ?? got)) - (nowSecs() - got);
  const left = a.exp - nowSecs();
  if (left > 0) delay = Math.min(delay, REFRESH_AT * left);
  a.refreshAt = Date.now() + Math.max(1, delay) * 1000;
  armRefresh();
}

function armRefresh() {
  const a = state.auth;
  const wait = Math.min(MAX_TIMER_S * 1000, Math.max(0, a.refreshAt - Date.now()));
  a.refreshTimer = setTimeout(refreshDue, wait);
}

async function refreshDue() {
  const a = state.auth;
  a.refreshTimer = null;
  if (Date.now() < a.refreshAt - 1000) {
    armRefresh();  // a long lifetime, waited in steps
    return;
  }
  if (a.mode === 'token') {
    ask('expiring');
    return;
  }
  if (a.mode !== 'dev') return;
  const r = await mint();  // adopt() schedules the one after
  if (a !== state.auth) return;
  if (r.token) sendRefresh();
  else if (r.status === 404) {
    a.mode = 'token';  // the server now checks real tokens (it restarted with a JWT option)
    ask('expiring');
  } else {
    // Not answered: try again soon, while the token still lasts.
    const left = Math.max(0, a.exp - nowSecs());
    a.retryTimer = setTimeout(refreshDue, Math.min(5000, Math.max(1000, (left * 1000) / 4)));
  }
}

/** Sends the current token as `refresh` on both sockets (those that are open). */
function sendRefresh() {
  const frame = { type: 'refresh', token: state.auth.token };
  send(frame);
  sendNotify(frame);
}

/** `refreshed` on the chat socket: the socket lives on; schedule the next refresh. */
export function onRefreshed(f) {
  const a = state.auth;
  if (!a.exp && Number(f.expires_at)) a.exp = Number(f.expires_at);
  if (a.need === 'expiring') a.need = null;
  for (const room of state.rooms.values()) room.postDenied = false;  // grants may have changed
  scheduleRefresh();
  invalidate('auth');
}

/** A refused `refresh` (`token_invalid`, `token_expired`, `token_user_mismatch`). */
export function onRefreshRefused() {
  if (state.auth.mode === 'token' && !state.auth.need) ask('expiring');
}

/** A socket was opened with `used`: whether the page has a newer token it should be sent. */
export function newerThan(used) {
  const a = state.auth;
  return a.mode !== 'named' && Boolean(a.token) && a.token !== used && !lapsed(a);
}

/** The chat socket is welcomed: a socket that names its user works here. */
export function welcomed() {
  state.auth.probing = false;
}

/**
 * What to do after the chat socket closed with `code`, having been opened with the token
 * `used`: 'backoff' (reconnect later), 'now' (reconnect at once), or 'wait' (for a token).
 */
export function afterClose(code, used) {
  const a = state.auth;
  if (a.mode === 'named' && a.probing) {
    // Never opened without a token: this server wants one.
    a.mode = 'token';
    a.probing = false;
    ask('token');
    return 'wait';
  }
  if (code !== 4004) return 'backoff';
  if (a.mode === 'dev') return 'now';  // credentials() mints a fresh one
  if (newerThan(used)) return 'now';
  ask('expired');
  return 'wait';
}

/** Asks for a token: 'token' (none yet), 'expiring' or 'expired'. */
function ask(need) {
  const a = state.auth;
  a.need = need;
  if (need === 'expired') {
    clearTimeout(a.refreshTimer);
    a.refreshTimer = null;
  }
  invalidate('auth', 'conn');
}

/** The #token form: a token pasted for this user. Returns whether it was taken. */
export function useToken(raw) {
  const token = String(raw).trim();
  const claims = decodeClaims(token);
  if (!claims || !NAME_RE.test(claims.sub) || !Number.isFinite(claims.exp)) {
    pushError('token_invalid', 'That is not a token for this chat (a JWT with sub and exp).');
    return false;
  }
  if (claims.exp <= nowSecs()) {
    pushError('token_expired', 'That token has expired already: get a new one.');
    return false;
  }
  if (!state.wantOnline) {
    fragmentToken = { user: claims.sub, token };
    connectAs(claims.sub);
    return true;
  }
  if (claims.sub !== state.me) {
    pushError('token_user_mismatch', `That token is for ${claims.sub}, not ${state.me}.`);
    return false;
  }
  adopt('token', token);
  sendRefresh();       // open sockets live on with it
  resumeAfterToken();  // closed ones open now
  return true;
}

function minutesLeft() {
  const left = Math.max(0, Math.round(state.auth.exp - nowSecs()));
  return left >= 60 ? `${Math.ceil(left / 60)} min` : `${left} s`;
}

/** #token-form, shown while the page needs a token, and #session-note, which says why. */
export function renderAuth() {
  const { need } = state.auth;
  ui.tokenForm.hidden = !need || !state.wantOnline;
  let note = '';
  if (need === 'token') note = 'this server needs a token — paste the one your application gave you';
  else if (need === 'expiring') note = `session expires in ${minutesLeft()} — paste a new token`;
  else if (need === 'expired') note = 'session expired — paste a new token';
  ui.sessionNote.textContent = note;
  if (need) ui.sessionNote.dataset.state = need;
  else delete ui.sessionNote.dataset.state;
}
