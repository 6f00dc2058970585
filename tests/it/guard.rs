//! What guards the server's doors, over real sockets: the origin check and the per-IP
//! connection rate on WebSocket upgrades, forwarding headers believed only from
//! `--trusted-proxies`, and TLS.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use roomcast::http::guard::{OriginRule, ProxyNet};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::common::*;

/// What an upgrade attempt got.
enum Answer<S> {
    Upgraded(Box<WebSocketStream<S>>),
    Refused {
        status: u16,
        retry_after: Option<String>,
        body: Value,
    },
}

impl<S> Answer<S> {
    #[track_caller]
    fn upgraded(self, what: &str) -> WebSocketStream<S> {
        match self {
            Answer::Upgraded(ws) => *ws,
            Answer::Refused { status, body, .. } => panic!("{what}: refused {status} {body}"),
        }
    }

    /// The refusal's status and error code.
    #[track_caller]
    fn refusal(&self, what: &str) -> (u16, String) {
        match self {
            Answer::Upgraded(_) => panic!("{what}: upgraded, expected a refusal"),
            Answer::Refused { status, body, .. } => {
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()),
                    "{what}: {body}"
                );
                (*status, body["error"]["code"].as_str().unwrap_or("").into())
            }
        }
    }
}

/// A WebSocket handshake for `path` over `stream` (plain or TLS, to `authority`), with extra
/// `headers` (a `Host` given here replaces the URL's).
async fn handshake<S>(
    stream: S,
    scheme: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!("{scheme}://{authority}{path}")
        .into_client_request()
        .expect("a WebSocket request");
    for (name, value) in headers {
        let name: tungstenite::http::HeaderName = name.parse().expect("a header name");
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(value).expect("a header value"));
    }
    let answer = tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(request, stream))
        .await
        .unwrap_or_else(|_| panic!("{path}: no handshake answer within {TIMEOUT:?}"));
    match answer {
        Ok((ws, _)) => Answer::Upgraded(Box::new(ws)),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            Answer::Refused {
                status: response.status().as_u16(),
                retry_after: response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().expect("text").to_owned()),
                body: serde_json::from_slice(body)
                    .unwrap_or_else(|e| panic!("{path}: refusal is not JSON ({e}): {body:?}")),
            }
        }
        Err(e) => panic!("{path}: {e}"),
    }
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.1, 127.0.0.2, ...).
async fn tcp_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    let from: IpAddr = from.parse().expect("an address");
    socket
        .bind(SocketAddr::new(from, 0))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    tokio::time::timeout(TIMEOUT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// An upgrade of `path` on a server at `addr`, from 127.0.0.1.
async fn upgrade(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer<TcpStream> {
    upgrade_from("127.0.0.1", addr, path, headers).await
}

async fn upgrade_from(
    from: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer<TcpStream> {
    let tcp = tcp_from(from, addr).await;
    handshake(tcp, "ws", &addr.to_string(), path, headers).await
}

/// Reads the next text frame (pings skipped) as JSON.
async fn next_json<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Value {
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("no frame arrived in time")
            .expect("the connection ended")
            .expect("read failed");
        if let Message::Text(text) = msg {
            return serde_json::from_str(text.as_str()).expect("JSON");
        }
    }
}

const SOCKET_PATHS: [&str; 3] = [
    "/ws?user_id=alice",
    "/ws/lobby/alice",
    "/notifications/alice",
];

#[tokio::test]
async fn a_page_from_another_origin_is_refused_on_every_upgrade_route() {
    let srv = TestServer::start();
    for path in SOCKET_PATHS {
        for origin in [
            "https://evil.example",
            "http://localhost.evil.example:8080",
            "null",
            "file://",
        ] {
            let answer = upgrade(srv.addr, path, &[("Origin", origin)]).await;
            assert_eq!(
                answer.refusal(origin),
                (403, "origin_forbidden".into()),
                "{path} from {origin}"
            );
        }
    }
    // Nothing was admitted.
    srv.wait_health("connections", 0).await;
}

#[tokio::test]
async fn no_origin_same_origin_and_loopback_pages_are_upgraded_by_default() {
    let srv = TestServer::start();
    let own = format!("http://{}", srv.addr);
    let cases: [&[(&str, &str)]; 5] = [
        &[],
        &[("Origin", own.as_str())],
        &[("Origin", "http://localhost:3000")],
        &[("Origin", "http://[::1]:8000")],
        // Same origin under a name: the Origin's host and port are the request's Host.
        &[
            ("Host", "chat.internal:8443"),
            ("Origin", "http://chat.internal:8443"),
        ],
    ];
    for (n, headers) in cases.iter().enumerate() {
        let mut ws = upgrade(srv.addr, "/ws?user_id=alice", headers)
            .await
            .upgraded(&format!("{headers:?}"));
        assert_eq!(next_json(&mut ws).await["type"], "welcome", "{headers:?}");
        let _ = ws.close(None).await;
        // The same name under another port is another origin.
        if n == 4 {
            let answer = upgrade(
                srv.addr,
                "/ws?user_id=alice",
                &[
                    ("Host", "chat.internal:8443"),
                    ("Origin", "http://chat.internal:9443"),
                ],
            )
            .await;
            assert_eq!(answer.refusal("other port").0, 403);
        }
    }
}

#[tokio::test]
async fn listed_origins_replace_loopback_pages_and_null_needs_listing() {
    let srv = TestServer::with(|c| {
        c.allowed_origins = vec!["https://chat.example.com".parse().unwrap()];
    });
    let own = format!("http://{}", srv.addr);
    for origin in ["https://chat.example.com", own.as_str()] {
        let mut ws = upgrade(srv.addr, "/notifications/alice", &[("Origin", origin)])
            .await
            .upgraded(origin);
        let _ = ws.close(None).await;
    }
    for origin in [
        "http://localhost:3000",
        "null",
        "https://chat.example.com:8443",
    ] {
        let answer = upgrade(srv.addr, "/notifications/alice", &[("Origin", origin)]).await;
        assert_eq!(answer.refusal(origin), (403, "origin_forbidden".into()));
    }

    let srv = TestServer::with(|c| c.allowed_origins = vec![OriginRule::Null]);
    let mut ws = upgrade(srv.addr, "/ws/lobby/bob", &[("Origin", "null")])
        .await
        .upgraded("null, listed");
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
}

#[tokio::test]
async fn upgrades_past_the_burst_are_refused_429_per_client_address() {
    // A token every 100 s: nothing refills while the test runs.
    let srv = TestServer::with(|c| {
        c.conn_rate_per_ip = 0.01;
        c.conn_rate_burst = 3;
        c.conn_rate_loopback = true;
    });
    let mut open = Vec::new();
    for path in SOCKET_PATHS {
        open.push(upgrade(srv.addr, path, &[]).await.upgraded(path));
    }
    let refused = upgrade(srv.addr, "/ws?user_id=carol", &[]).await;
    assert_eq!(refused.refusal("4th"), (429, "rate_limited".into()));
    let Answer::Refused { retry_after, .. } = refused else {
        unreachable!()
    };
    assert_eq!(retry_after.as_deref(), Some("100"));
    // A bad origin is an attempt too.
    let answer = upgrade(srv.addr, "/ws?user_id=carol", &[("Origin", "null")]).await;
    assert_eq!(answer.refusal("5th").0, 429);
    // Another address has its own burst.
    for path in SOCKET_PATHS {
        open.push(
            upgrade_from("127.0.0.2", srv.addr, path, &[])
                .await
                .upgraded(path),
        );
    }
    let answer = upgrade_from("127.0.0.2", srv.addr, "/ws?user_id=dave", &[]).await;
    assert_eq!(answer.refusal("4th from .2").0, 429);
    // Plain requests are not counted.
    assert_eq!(srv.get_json("/health").await.0, 200);
}

#[tokio::test]
async fn loopback_clients_are_not_rate_limited_by_default() {
    let srv = TestServer::with(|c| {
        c.conn_rate_per_ip = 0.01;
        c.conn_rate_burst = 1;
    });
    for n in 0..5 {
        let mut ws = upgrade(srv.addr, "/ws?user_id=alice", &[])
            .await
            .upgraded(&format!("upgrade {n}"));
        let _ = ws.close(None).await;
    }
}

#[tokio::test]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let remote = [("X-Forwarded-For", "203.0.113.9")];

    // No --trusted-proxies: the header is the client's text, ignored; the peer is loopback.
    let srv = TestServer::start();
    let answer = api_raw(srv.addr, "GET", "/api/rooms", &remote, "").await;
    assert_eq!(answer.0, 200, "{}", answer.1);

    // Behind a proxy on this machine: the forwarded client is not local.
    let srv = TestServer::with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]);
    for headers in [
        &remote[..],
        // The client claimed loopback; the proxy appended its real address.
        &[("X-Forwarded-For", "127.0.0.1, 203.0.113.9")],
        &[("Forwarded", "for=203.0.113.9;proto=https")],
        &[("X-Forwarded-For", "unknown")],
    ] {
        let answer = api_raw(srv.addr, "GET", "/api/rooms", headers, "").await;
        assert_api_error(&answer, 403, "forbidden", &format!("{headers:?}"));
    }
    let (status, body) = http_get_raw_with(srv.addr, "/metrics", &remote).await;
    assert_eq!(status, 403, "{body}");
    // The proxy's own machine, and a client of this machine through the proxy.
    let answer = api_raw(srv.addr, "GET", "/api/rooms", &[], "").await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    let local = [("X-Forwarded-For", "127.0.0.1")];
    let answer = api_raw(srv.addr, "GET", "/api/rooms", &local, "").await;
    assert_eq!(answer.0, 200, "{}", answer.1);
}

async fn http_get_raw_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    http_request(addr, "GET", path, headers, "").await
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_rate_counts_each_forwarded_client() {
    let srv = TestServer::with(|c| {
        c.trusted_proxies = vec!["127.0.0.0/8".parse::<ProxyNet>().unwrap()];
        c.conn_rate_per_ip = 0.01;
        c.conn_rate_burst = 2;
    });
    let first = [("X-Forwarded-For", "198.51.100.1")];
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(
            upgrade(srv.addr, "/ws?user_id=a", &first)
                .await
                .upgraded("a"),
        );
    }
    let answer = upgrade(srv.addr, "/ws?user_id=a", &first).await;
    assert_eq!(answer.refusal("3rd from .1"), (429, "rate_limited".into()));
    // Another forwarded client, through the same proxy address.
    let second = [("X-Forwarded-For", "198.51.100.2")];
    open.push(
        upgrade(srv.addr, "/ws?user_id=b", &second)
            .await
            .upgraded("b"),
    );
    // The proxy's machine itself is loopback: exempt.
    for _ in 0..3 {
        open.push(upgrade(srv.addr, "/ws?user_id=c", &[]).await.upgraded("c"));
    }
}

/// The real binary over TLS, with the address it printed (`listening on https://ADDR`).
struct TlsChild {
    child: Child,
    addr: SocketAddr,
}

impl TlsChild {
    fn spawn(cert: &std::path::Path, key: &std::path::Path) -> TlsChild {
        let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ROOMCAST_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args([
                "--bind",
                "127.0.0.1:0",
                "--store",
                "memory",
                "--workers",
                "1",
            ])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn roomcast");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on https://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(TIMEOUT)
            .expect("the server printed `listening on https://ADDR`")
            .parse()
            .expect("a socket address");
        TlsChild { child, addr }
    }
}

impl Drop for TlsChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files into a
/// fresh folder; also returned as DER for the client to trust.
fn self_signed() -> (
    std::path::PathBuf,
    std::path::PathBuf,
    rustls::pki_types::CertificateDer<'static>,
) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("a certificate");
    let dir = temp_dir("tls");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write the key");
    (cert, key, certified.cert.der().clone())
}

/// A TLS connection to `addr` that trusts only `root`, for `localhost`.
async fn tls_connect(
    addr: SocketAddr,
    root: &rustls::pki_types::CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).expect("the test's certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tcp_from("127.0.0.1", addr).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake")
}

#[tokio::test]
async fn over_tls_websockets_and_http_work() {
    let (cert, key, root) = self_signed();
    let srv = TlsChild::spawn(&cert, &key);
    let authority = format!("localhost:{}", srv.addr.port());

    // A WebSocket over TLS, checked by its origin like any other (same origin here).
    let tls = tls_connect(srv.addr, &root).await;
    let origin = format!("https://{authority}");
    let mut ws = handshake(
        tls,
        "wss",
        &authority,
        "/ws?user_id=alice",
        &[("Origin", origin.as_str())],
    )
    .await
    .upgraded("wss");
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send");
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    let tls = tls_connect(srv.addr, &root).await;
    let answer = handshake(
        tls,
        "wss",
        &authority,
        "/ws?user_id=bob",
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(
        answer.refusal("wss, evil"),
        (403, "origin_forbidden".into())
    );

    // Plain HTTP over the same kind of connection: GET /health.
    let mut tls = tls_connect(srv.addr, &root).await;
    let request = format!("GET /health HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, tls.read_to_end(&mut response))
        .await
        .expect("the answer came in time")
        .expect("read");
    let response = String::from_utf8(response).expect("UTF-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let health: Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(health["connections"], 1, "{health}");
    let _ = ws.close(None).await;
}

#[test]
fn unusable_tls_files_stop_the_server_naming_them() {
    let missing = "/nonexistent/roomcast-cert.pem";
    let (code, stderr) = run_to_exit(&[
        "--store",
        "memory",
        "--tls-cert",
        missing,
        "--tls-key",
        "/nonexistent/roomcast-key.pem",
    ]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains(missing), "{stderr}");

    let (cert, _, _) = self_signed();
    let junk = temp_dir("tls-junk").join("key.pem");
    std::fs::write(&junk, "not a key\n").expect("write");
    let (cert, junk) = (cert.to_str().unwrap(), junk.to_str().unwrap());
    let (code, stderr) = run_to_exit(&["--store", "memory", "--tls-cert", cert, "--tls-key", junk]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains(junk), "{stderr}");

    let (code, stderr) = run_to_exit(&["--store", "memory", "--tls-cert", cert]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
}
