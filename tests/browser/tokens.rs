//! Identity in the page: both sockets carry a token as WebSocket protocols (a development
//! token from `POST /api/dev-token`, or one handed over in `#token=` or pasted), a fresh one
//! goes out as `refresh` before the first lapses, and a lapsed session (close 4004) waits for
//! a new token. The servers here check what the page sends: with `--jwt-secret` a socket
//! without a good token is never admitted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use roomcast::Config;
use serde_json::{Value, json};

use crate::common::Client;
use crate::harness::{ENTER, Page, Server, browser_test};

const SECRET: &str = "the browser tests' HS256 secret, 32+ bytes";

const EXPIRED_CLOSES: &str = r#"roomcast_sockets_closed_total{code="4004",reason="token_expired"}"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A token for `sub` that lives `secs` seconds from now, with `extra` claims (grants).
fn token(sub: &str, secs: u64, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "iat": now(), "exp": now() + secs});
    if let Value::Object(extra) = extra {
        claims.as_object_mut().unwrap().extend(extra);
    }
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("an HMAC key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("signed")
}

/// A server that checks HS256 tokens signed with [`SECRET`], with `leeway` seconds of skew.
fn jwt_server(leeway: u64) -> Server {
    let mut config = Config::for_tests();
    config.jwt_secret = Some(SECRET.into());
    config.jwt_leeway_secs = leeway;
    Server::with_config(config)
}

/// Records every WebSocket the page makes, from before it starts (`window.__wsOpened`): its
/// URL, the protocols it offered, the types of the frames it sent and received, and the codes
/// it closed with.
const WS_SPY: &str = r#"
(() => {
  const Real = window.WebSocket;
  window.__wsOpened = [];
  window.WebSocket = class extends Real {
    constructor(url, protocols) {
      super(url, protocols);
      const entry = { url: String(url), protocols: protocols === undefined ? [] : [].concat(protocols),
        sent: [], received: [], closes: [] };
      this.__entry = entry;
      window.__wsOpened.push(entry);
      this.addEventListener('message', (ev) => {
        try { entry.received.push(JSON.parse(ev.data).type); } catch {}
      });
      this.addEventListener('close', (ev) => entry.closes.push(ev.code));
    }
    send(data) {
      try { this.__entry.sent.push(JSON.parse(data).type); } catch {}
      super.send(data);
    }
  };
})();
"#;

/// How many sockets the page has made.
async fn sockets_made(page: &Page) -> Value {
    page.js("return window.__wsOpened.length;", vec![]).await
}

/// [#token-form shown, #session-note's data-state, its text].
const SESSION_NOTE: &str = "const n = document.getElementById('session-note');
return [!document.getElementById('token-form').hidden, n.dataset.state || null, n.textContent];";

/// Waits until `/health` counts `want` WebSockets.
async fn wait_connections(server: &Server, want: u64) {
    let deadline = tokio::time::Instant::now() + crate::common::TIMEOUT;
    loop {
        let got = server.health().await["connections"].clone();
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health connections stayed {got} (want {want})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn with_tokens_the_page_signs_in_with_the_one_it_is_given_and_carries_it_as_a_protocol() {
    browser_test(
        "with_tokens_the_page_signs_in_with_the_one_it_is_given_and_carries_it_as_a_protocol",
        |b| async move {
            let server = jwt_server(30);
            let t = token("alice", 600, json!({"read_only": ["news"]}));
            // A backend hands the page its token in the fragment: it signs in as its `sub`.
            let alice = b
                .page_with_init_script("alice", WS_SPY, &server.url(&format!("/#token={t}")))
                .await;
            alice.wait_conn("connected").await;
            assert_eq!(alice.text("#conn-detail").await, "as alice");
            // The token left the address bar (and the history) at once.
            assert_eq!(
                alice.js("return location.href;", vec![]).await,
                json!(server.url("/"))
            );
            alice
                .wait_eq(
                    "the notification socket",
                    "return document.body.dataset.notify;",
                    vec![],
                    json!("connected"),
                )
                .await;
            alice.join("lobby").await;
            alice.say("signed in with a token").await;
            alice
                .wait_messages(&[("alice", "signed in with a token")])
                .await;

            // Both sockets offered the token as a protocol; no URL names a token or a user.
            let protocols = json!(["roomcast.v1", format!("roomcast.token.{t}")]);
            assert_eq!(
                alice
                    .js(
                        "return window.__wsOpened.map((s) => [s.url, s.protocols]);",
                        vec![]
                    )
                    .await,
                json!([
                    [server.ws_url("/ws"), protocols],
                    [server.ws_url("/notifications/alice"), protocols],
                ])
            );
            // The server took it as alice's: another user finds her message in the room.
            let rusty_token = token("rusty", 600, json!({}));
            let mut rusty =
                Client::connect(&server.ws_url(&format!("/ws?token={rusty_token}"))).await;
            rusty.expect("welcome").await;
            let joined = rusty.join("lobby").await;
            let seen: Vec<(&Value, &Value)> = joined
                .history
                .iter()
                .map(|m| (&m["user_id"], &m["text"]))
                .collect();
            assert_eq!(seen, [(&json!("alice"), &json!("signed in with a token"))]);

            // A room the token opens read-only: joined, but a chat there is refused, marked
            // failed with the server's reason, and the socket goes on.
            alice.join("news").await;
            alice.say("may I?").await;
            alice
                .wait_eq(
                    "the chat refused as forbidden",
                    "const li = document.querySelector(arguments[0]);
                     return li && [li.querySelector('.text').textContent,
                                   li.querySelector('.reason').textContent];",
                    vec![json!(
                        "#messages li.msg.pending.failed[data-error-code='forbidden']"
                    )],
                    json!(["may I?", "room 'news' is read-only for you"]),
                )
                .await;
            alice
                .click("#room-list li[data-room=\"lobby\"] button.room-select")
                .await;
            alice.say("still here").await;
            alice
                .wait_messages(&[("alice", "signed in with a token"), ("alice", "still here")])
                .await;
            alice.wait_conn("connected").await;
            assert_eq!(
                sockets_made(&alice).await,
                json!(2),
                "no socket was replaced"
            );

            // A page without a token cannot connect: it asks for one and opens no socket.
            wait_connections(&server, 3).await; // alice's two, rusty's one
            let mallory = b
                .page_with_init_script("mallory", WS_SPY, &server.url("/"))
                .await;
            mallory.clear("#name-input").await;
            mallory
                .type_into("#name-input", &format!("mallory{ENTER}"))
                .await;
            mallory
                .wait_eq(
                    "a token asked for",
                    SESSION_NOTE,
                    vec![],
                    json!([
                        true,
                        "token",
                        "this server needs a token — paste the one your application gave you"
                    ]),
                )
                .await;
            mallory.wait_conn("offline").await;
            assert_eq!(mallory.text("#conn-detail").await, "waiting for a token");
            assert_eq!(sockets_made(&mallory).await, json!(0));
            wait_connections(&server, 3).await;

            // Pasted, it connects.
            let m = token("mallory", 600, json!({}));
            mallory.type_into("#token", &format!("{m}{ENTER}")).await;
            mallory.wait_conn("connected").await;
            assert_eq!(mallory.text("#conn-detail").await, "as mallory");
            assert_eq!(
                mallory.js(SESSION_NOTE, vec![]).await,
                json!([false, null, ""])
            );
            wait_connections(&server, 5).await;
        },
    );
}

/// The `exp` of the token the page's first socket offered.
const FIRST_EXP: &str =
    "const jwt = window.__wsOpened[0].protocols[1].slice('roomcast.token.'.length);
const p = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
return JSON.parse(atob(p + '='.repeat((4 - (p.length % 4)) % 4))).exp;";

#[test]
fn a_development_token_is_refreshed_before_it_lapses_and_the_sockets_stay_open() {
    browser_test(
        "a_development_token_is_refreshed_before_it_lapses_and_the_sockets_stay_open",
        |b| async move {
            // Development mode; tokens of 6 s (`#ttl=6`), closed 1 s after their `exp`.
            let mut config = Config::for_tests();
            config.jwt_leeway_secs = 1;
            let server = Server::with_config(config);
            let alice = b
                .page_with_init_script("alice", WS_SPY, &server.url("/#ttl=6"))
                .await;
            alice.connect_as("alice").await;
            alice.join("lobby").await;
            alice.say("before").await;
            alice.wait_messages(&[("alice", "before")]).await;
            let first = alice
                .js("return window.__wsOpened.map((s) => s.url);", vec![])
                .await;
            assert_eq!(
                first,
                json!([server.ws_url("/ws"), server.ws_url("/notifications/alice")])
            );
            let exp = alice.js(FIRST_EXP, vec![]).await.as_u64().expect("exp");
            assert!(exp <= now() + 6, "a 6 s token: exp {exp}, now {}", now());

            // Past the first token's exp and the leeway, with a margin.
            let past = exp + 1 + 2;
            tokio::time::sleep(Duration::from_secs(past.saturating_sub(now()))).await;
            alice.say("after").await;
            alice
                .wait_messages(&[("alice", "before"), ("alice", "after")])
                .await;

            // The same two sockets, never closed: each sent `refresh` and got `refreshed`.
            let sockets = alice
                .js(
                    "return window.__wsOpened.map((s) => [s.closes,
                       s.sent.filter((t) => t === 'refresh').length > 0,
                       s.received.filter((t) => t === 'refreshed').length > 0]);",
                    vec![],
                )
                .await;
            assert_eq!(sockets, json!([[[], true, true], [[], true, true]]));
            assert_eq!(alice.text("#conn-state").await, "connected");
            assert_eq!(
                alice
                    .js("return document.body.dataset.notify;", vec![])
                    .await,
                json!("connected")
            );
            // The server closed nothing for a lapsed token.
            assert_eq!(server.metric(EXPIRED_CLOSES).await, 0.0);
            // Nothing to ask the user in development mode.
            assert_eq!(
                alice.js(SESSION_NOTE, vec![]).await,
                json!([false, null, ""])
            );
        },
    );
}

#[test]
fn a_given_token_that_lapses_unrefreshed_shows_the_session_expired_until_a_new_one_is_pasted() {
    browser_test(
        "a_given_token_that_lapses_unrefreshed_shows_the_session_expired_until_a_new_one_is_pasted",
        |b| async move {
            let server = jwt_server(0);
            let t = token("alice", 10, json!({}));
            let alice = b
                .page_with_init_script("alice", WS_SPY, &server.url(&format!("/#token={t}")))
                .await;
            alice.wait_conn("connected").await;
            alice.join("lobby").await;

            // At 80% of its lifetime the page cannot mint one: it asks, counting down.
            let note = alice
                .wait_for(
                    "the session said to expire soon",
                    SESSION_NOTE,
                    vec![],
                    |v| v[1] == "expiring",
                )
                .await;
            let text = note[2].as_str().unwrap();
            assert_eq!(note[0], true, "{note}");
            assert!(
                text.starts_with("session expires in ") && text.ends_with(" — paste a new token"),
                "{text}"
            );

            // Nobody pastes one: the server closes both sockets with 4004, and the page says so.
            alice
                .wait_eq(
                    "the session expired",
                    SESSION_NOTE,
                    vec![],
                    json!([true, "expired", "session expired — paste a new token"]),
                )
                .await;
            alice.wait_conn("offline").await;
            assert_eq!(alice.text("#conn-detail").await, "session expired");
            alice
                .wait_eq(
                    "both sockets closed with 4004",
                    "return window.__wsOpened.map((s) => s.closes);",
                    vec![],
                    json!([[4004], [4004]]),
                )
                .await;
            assert_eq!(server.metric(EXPIRED_CLOSES).await, 2.0);
            // And it does not try again without a token.
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert_eq!(sockets_made(&alice).await, json!(2));
            assert_eq!(alice.text("#conn-state").await, "offline");

            // A new token: connected again at once, in the same room.
            let fresh = token("alice", 600, json!({}));
            alice.type_into("#token", &format!("{fresh}{ENTER}")).await;
            alice.wait_conn("connected").await;
            alice.wait_room_joined("lobby").await;
            alice.say("back").await;
            alice.wait_messages(&[("alice", "back")]).await;
            assert_eq!(
                alice.js(SESSION_NOTE, vec![]).await,
                json!([false, null, ""])
            );
            assert_eq!(sockets_made(&alice).await, json!(4));
        },
    );
}

#[test]
fn a_page_the_server_will_not_mint_for_tries_by_name_once_then_asks_for_a_token() {
    browser_test(
        "a_page_the_server_will_not_mint_for_tries_by_name_once_then_asks_for_a_token",
        |b| async move {
            // Development mode with an API key: `POST /api/dev-token` answers this page 401,
            // but a socket may still name its user, so the page signs in by name.
            let mut config = Config::for_tests();
            config.api_key = Some("the operators' key".into());
            let dev = Server::with_config(config);
            let alice = b
                .page_with_init_script("alice", WS_SPY, &dev.url("/"))
                .await;
            alice.connect_as("alice").await;
            alice.join("lobby").await;
            alice.say("by name").await;
            alice.wait_messages(&[("alice", "by name")]).await;
            assert_eq!(
                alice
                    .js(
                        "return window.__wsOpened.map((s) => [s.url, s.protocols]);",
                        vec![]
                    )
                    .await,
                json!([
                    [dev.ws_url("/ws?user_id=alice"), []],
                    [dev.ws_url("/notifications/alice"), []],
                ])
            );

            // With tokens and an API key (a page from another machine sees the same 403 or
            // 401): the socket by name is refused, so the page asks for a token and waits.
            let mut config = Config::for_tests();
            config.api_key = Some("the operators' key".into());
            config.jwt_secret = Some(SECRET.into());
            let jwt = Server::with_config(config);
            let bob = b.page_with_init_script("bob", WS_SPY, &jwt.url("/")).await;
            bob.clear("#name-input").await;
            bob.type_into("#name-input", &format!("bob{ENTER}")).await;
            bob.wait_eq(
                "a token asked for",
                SESSION_NOTE,
                vec![],
                json!([
                    true,
                    "token",
                    "this server needs a token — paste the one your application gave you"
                ]),
            )
            .await;
            bob.wait_conn("offline").await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(
                sockets_made(&bob).await,
                json!(2),
                "one try for each socket"
            );
            assert_eq!(jwt.health().await["connections"], 0);

            let t = token("bob", 600, json!({}));
            bob.type_into("#token", &format!("{t}{ENTER}")).await;
            bob.wait_conn("connected").await;
            bob.wait_eq(
                "the notification socket",
                "return document.body.dataset.notify;",
                vec![],
                json!("connected"),
            )
            .await;
            let last = bob
                .js(
                    "return window.__wsOpened.slice(2).map((s) => [s.url, s.protocols]);",
                    vec![],
                )
                .await;
            let protocols = json!(["roomcast.v1", format!("roomcast.token.{t}")]);
            assert_eq!(
                last,
                json!([
                    [jwt.ws_url("/ws"), protocols],
                    [jwt.ws_url("/notifications/bob"), protocols],
                ])
            );
        },
    );
}
