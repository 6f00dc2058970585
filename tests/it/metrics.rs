//! Metrics (`GET /metrics`), live stats (`GET /live/stats`) and the dashboard page: exact
//! values after real traffic over real sockets.

use std::sync::Arc;

use serde_json::json;

use crate::common::*;

const CHAT: &str = r#"roomcast_connections{kind="chat"}"#;
const NOTIFICATIONS: &str = r#"roomcast_connections{kind="notifications"}"#;

fn received(ty: &str) -> String {
    format!(r#"roomcast_frames_received_total{{type="{ty}"}}"#)
}

fn dropped(reason: &str) -> String {
    format!(r#"roomcast_frames_dropped_total{{reason="{reason}"}}"#)
}

fn closed(code: u16, reason: &str) -> String {
    format!(r#"roomcast_sockets_closed_total{{code="{code}",reason="{reason}"}}"#)
}

async fn notification_socket(srv: &TestServer, user: &str) -> Client {
    Client::connect(&srv.url(&format!("/notifications/{user}"))).await
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_known_labels_at_zero() {
    let srv = TestServer::start();
    let (status, head, body) = http_request_with_head(srv.addr, "GET", "/metrics", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    for series in [
        CHAT,
        NOTIFICATIONS,
        "roomcast_rooms",
        "roomcast_users",
        &received("chat"),
        &received("invalid"),
        &received("refresh"),
        "roomcast_frames_sent_total",
        "roomcast_deliveries_total",
        &dropped("rate_limited"),
        "roomcast_rate_limited_total",
        "roomcast_slow_consumers_closed_total",
        "roomcast_notifications_pushed_total",
        "roomcast_fanout_seconds_count",
        "roomcast_store_write_failures_total",
        "roomcast_store_reads_total",
        "roomcast_broker_reconnects_total",
        // Every close README lists, before any socket closed.
        &closed(1000, "peer"),
        &closed(1001, "shutdown"),
        &closed(1006, "dropped"),
        &closed(4001, "slow_consumer"),
        &closed(4005, "too_many_sockets"),
    ] {
        assert_eq!(
            metric_value(&body, series),
            Some(0.0),
            "{series} in\n{body}"
        );
    }
    assert!(
        body.contains("# TYPE roomcast_fanout_seconds histogram"),
        "{body}"
    );
}

#[tokio::test]
async fn connections_are_counted_by_kind_and_closes_by_code() {
    let srv = TestServer::start();
    let (a, _) = srv.room_client("m", "alice").await;
    let b = srv.client("bob").await;
    let n = notification_socket(&srv, "alice").await;
    srv.wait_metric(CHAT, 2.0).await;
    srv.wait_metric(NOTIFICATIONS, 1.0).await;

    // A polite close by the peer, then a dropped connection.
    a.close().await;
    srv.wait_metric(CHAT, 1.0).await;
    assert_eq!(srv.metric(&closed(1000, "peer")).await, 1.0);
    b.drop_abruptly();
    srv.wait_metric(CHAT, 0.0).await;
    assert_eq!(
        srv.metric(&closed(1006, "dropped")).await,
        1.0,
        "{}",
        srv.metrics().await
    );
    n.close().await;
    srv.wait_metric(NOTIFICATIONS, 0.0).await;
    assert_eq!(srv.metric(&closed(1000, "peer")).await, 2.0);
}

#[tokio::test]
async fn frames_are_counted_by_type_in_and_out() {
    let srv = TestServer::start();
    let (mut a, _) = srv.room_client("m", "alice").await; // welcome, joined: 2 frames out
    for n in 0..3 {
        a.chat("m", &format!("{n}")).await;
    }
    for _ in 0..3 {
        a.expect("chat").await;
    }
    a.send_raw("{not json").await;
    a.expect_error("invalid_json").await;
    a.send(json!({"type": "typing", "room_id": "m", "is_typing": true}))
        .await;
    a.ping().await;

    // Every answer was read, so every count is final.
    let text = srv.metrics().await;
    for (series, want) in [
        (received("chat"), 3.0),
        (received("invalid"), 1.0),
        (received("typing"), 1.0),
        (received("ping"), 1.0),
        (received("join"), 0.0),
        (dropped("invalid"), 1.0),
        (dropped("rate_limited"), 0.0),
        // welcome, joined, 3 chats, the error, the pong.
        ("roomcast_frames_sent_total".into(), 7.0),
    ] {
        assert_eq!(
            metric_value(&text, &series),
            Some(want),
            "{series} in\n{text}"
        );
    }

    // A notification socket: the text ping, a JSON ping, a request it does not take.
    let mut n = notification_socket(&srv, "alice").await;
    n.send_raw("ping").await;
    assert_eq!(n.recv_text().await, "pong");
    n.send(json!({"type": "ping"})).await;
    n.expect("pong").await;
    n.send(json!({"type": "join", "room_id": "x"})).await;
    n.expect_error("unknown_type").await;
    n.send_message(tokio_tungstenite::tungstenite::Message::binary(vec![
        1, 2, 3,
    ]))
    .await;
    n.expect_error("binary_unsupported").await;
    let text = srv.metrics().await;
    for (series, want) in [
        (received("text_ping"), 1.0),
        (received("ping"), 2.0),
        (received("join"), 1.0),
        (received("binary"), 1.0),
        (dropped("invalid"), 2.0),
        (dropped("binary"), 1.0),
        ("roomcast_frames_sent_total".into(), 11.0),
    ] {
        assert_eq!(
            metric_value(&text, &series),
            Some(want),
            "{series} in\n{text}"
        );
    }
}

#[tokio::test]
async fn a_flood_counts_its_refusals_and_its_close() {
    let srv = TestServer::with(|c| {
        c.rate_per_sec = 0.1;
        c.rate_burst = 2;
        c.rate_strikes = 3;
    });
    let (mut a, _) = srv.room_client("rl", "a").await;
    // Two pass; the next three are refused with an error; the fourth refusal closes.
    for n in 0..6 {
        a.chat("rl", &format!("{n}")).await;
    }
    let (frame, texts) = a.until_closed().await;
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1008));
    // Refusals in quick succession share an error frame that says how many it stands for.
    let refusals: usize = texts
        .iter()
        .filter(|t| t["code"] == "rate_limited")
        .map(crate::hostile::refusals_in)
        .sum();
    assert_eq!(refusals, 3, "{texts:?}");

    let text = srv.metrics().await;
    for (series, want) in [
        ("roomcast_rate_limited_total".to_owned(), 4.0),
        (dropped("rate_limited"), 4.0),
        (received("chat"), 2.0),
        (closed(1008, "rate_limited"), 1.0),
    ] {
        assert_eq!(
            metric_value(&text, &series),
            Some(want),
            "{series} in\n{text}"
        );
    }
    srv.wait_metric(CHAT, 0.0).await;
}

#[tokio::test]
async fn an_oversized_frame_is_counted_dropped_and_closed_1009() {
    let srv = TestServer::with(|c| c.max_frame_bytes = 1024);
    let (mut a, _) = srv.room_client("big", "a").await;
    a.chat("big", &"x".repeat(2000)).await;
    assert_eq!(a.expect_close().await, 1009);
    let text = srv.metrics().await;
    assert_eq!(
        metric_value(&text, &dropped("too_big")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric_value(&text, &closed(1009, "too_big")), Some(1.0));
    assert_eq!(metric_value(&text, &received("chat")), Some(0.0));
}

#[tokio::test]
async fn a_heartbeat_timeout_is_counted() {
    let srv = TestServer::with(|c| {
        c.heartbeat_interval = 0.1;
        c.client_timeout = 0.5;
    });
    // This client never reads, so it never answers the server's pings.
    let ghost = srv.client("ghost").await;
    srv.wait_metric(&closed(4002, "heartbeat_timeout"), 1.0)
        .await;
    srv.wait_metric(CHAT, 0.0).await;
    drop(ghost);
}

#[tokio::test]
async fn shutdown_closes_are_counted_1001() {
    // `Running` directly, to read its metrics after it has shut down.
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let mut config = roomcast::Config::for_tests();
            config.shutdown_timeout = 1;
            let running = roomcast::start(config).await.expect("server starts");
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            tx.send((running.addr, Arc::clone(&running.metrics), stop_tx))
                .expect("test is waiting");
            let _ = stop_rx.await;
            running.shutdown().await;
        })
    });
    let (addr, metrics, stop) = rx.recv_timeout(TIMEOUT).expect("server started");
    let mut c = Client::connect(&format!("ws://{addr}/ws?user_id=alice")).await;
    c.expect("welcome").await;
    stop.send(()).expect("server is running");
    assert_eq!(c.expect_close().await, 1001);
    tokio::task::spawn_blocking(move || server.join().expect("server thread"))
        .await
        .unwrap();
    let text = metrics.render();
    assert_eq!(
        metric_value(&text, &closed(1001, "shutdown")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric_value(&text, CHAT), Some(0.0), "{text}");
}

#[tokio::test]
async fn with_an_api_key_metrics_and_live_stats_need_it() {
    let srv = TestServer::with(|c| c.api_key = Some("s3cret".into()));
    for path in ["/metrics", "/live/stats"] {
        let (status, _, body) = http_request_with_head(srv.addr, "GET", path, &[]).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("unauthorized"), "{body}");
        let wrong = [("Authorization", "Bearer nope")];
        let (status, _, _) = http_request_with_head(srv.addr, "GET", path, &wrong).await;
        assert_eq!(status, 401, "{path}");
    }
    let key = [("Authorization", "Bearer s3cret")];
    let (status, head, body) = http_request_with_head(srv.addr, "GET", "/metrics", &key).await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert_eq!(metric_value(&body, CHAT), Some(0.0));
    let mut sse = SseClient::connect(srv.addr, "/live/stats", &key).await;
    assert_eq!(sse.status, 200, "{}", sse.head);
    assert_eq!(sse.next_event().await.expect("an event")["connections"], 0);
}

#[tokio::test]
async fn without_an_api_key_only_loopback_clients_may_read_them() {
    let srv = TestServer::with(|c| c.bind = "0.0.0.0:0".parse().unwrap());
    let port = srv.addr.port();
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (status, _, _) = http_request_with_head(local, "GET", "/metrics", &[]).await;
    assert_eq!(status, 200);
    let Some(ip) = non_loopback_ip() else {
        eprintln!("no non-loopback address on this machine: the 403 case is not exercised");
        return;
    };
    let remote = std::net::SocketAddr::new(ip, port);
    for path in ["/metrics", "/live/stats"] {
        let (status, _, body) = http_request_with_head(remote, "GET", path, &[]).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("forbidden"), "{body}");
    }
}

#[tokio::test]
async fn live_stats_follow_the_connections() {
    let srv = TestServer::start();
    let mut sse = SseClient::connect(srv.addr, "/live/stats", &[]).await;
    assert_eq!(sse.status, 200, "{}", sse.head);
    assert!(
        sse.head.contains("content-type: text/event-stream"),
        "{}",
        sse.head
    );

    // The first event comes at once, with every field.
    let first = sse.next_event().await.expect("a first event");
    let keys: std::collections::BTreeSet<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "chat_connections",
            "connections",
            "deliveries_per_sec",
            "fanout_p99_ms",
            "frames_in_per_sec",
            "frames_out_per_sec",
            "notification_connections",
            "rooms",
            "rss_bytes",
            "ts",
            "uptime_secs",
            "users",
        ]
        .into()
    );
    assert_eq!(first["connections"], 0);
    assert!(first["ts"].as_u64().is_some_and(|t| t > 0), "{first}");
    assert!(
        first["rss_bytes"].as_u64().is_some_and(|b| b > 0),
        "{first}"
    );

    let (mut a, _) = srv.room_client("live", "alice").await;
    let (b, _) = srv.room_client("live", "bob").await;
    let n = notification_socket(&srv, "alice").await;
    sse.until("3 connections", |e| {
        e["connections"] == 3 && e["chat_connections"] == 2 && e["notification_connections"] == 1
    })
    .await;

    // Frames in show as a rate in a later event.
    a.expect("user_joined").await; // bob
    a.ping().await;
    sse.until("frames in", |e| {
        e["frames_in_per_sec"].as_f64().is_some_and(|r| r > 0.0)
    })
    .await;

    a.close().await;
    b.close().await;
    n.close().await;
    sse.until("no connections", |e| e["connections"] == 0).await;
}

#[tokio::test]
async fn live_streams_end_when_the_server_shuts_down() {
    let srv = TestServer::start();
    let mut sse = SseClient::connect(srv.addr, "/live/stats", &[]).await;
    sse.next_event().await.expect("a first event");
    drop(srv);
    // Events may still arrive until the shutdown reaches the sampler; then the stream ends.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while sse.next_event().await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream outlived the server"
        );
    }
}

#[tokio::test]
async fn the_dashboard_is_served_with_its_script() {
    for static_dir in [
        None,
        Some(std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/static"
        ))),
    ] {
        let srv = TestServer::with(|c| c.static_dir = static_dir.clone());
        let (status, head, page) = http_request_with_head(srv.addr, "GET", "/dashboard", &[]).await;
        assert_eq!(status, 200, "{static_dir:?}: {page}");
        assert!(head.contains("content-type: text/html"), "{head}");
        for id in [
            "stat-connections",
            "stat-rooms",
            "stat-users",
            "stat-frames-in",
            "stat-frames-out",
            "stat-deliveries",
            "stat-fanout-p99",
            "stat-rss",
            "live-state",
        ] {
            assert!(page.contains(&format!("id=\"{id}\"")), "#{id} missing");
        }
        assert!(page.contains("/dashboard.js"));
        let (status, _, script) =
            http_request_with_head(srv.addr, "GET", "/dashboard.js", &[]).await;
        assert_eq!(status, 200);
        assert!(script.contains("new EventSource(\"/live/stats\")"));
        let (status, _, _) = http_request_with_head(srv.addr, "GET", "/dashboard.css", &[]).await;
        assert_eq!(status, 200);
    }
}

/// What `ChatServer` reports: rooms, users, deliveries, fan-out times, notifications.
#[tokio::test]
async fn chat_server_counts_rooms_users_deliveries_fan_outs_and_notifications() {
    let srv = TestServer::with(|c| c.rate_per_sec = 0.0);
    let (mut a, _) = srv.room_client("one", "alice").await;
    let (mut b, _) = srv.room_client("one", "bob").await;
    let (mut c, _) = srv.room_client("two", "carol").await;
    a.expect("user_joined").await; // bob
    srv.wait_metric("roomcast_rooms", 2.0).await;
    assert_eq!(srv.metric("roomcast_users").await, 3.0);
    // One user_joined (to alice) so far.
    assert_eq!(srv.metric("roomcast_deliveries_total").await, 1.0);

    // 4 chats in room one (2 members each) and 1 in room two (1 member): 9 deliveries and
    // 5 fan-outs timed.
    for n in 0..4 {
        a.chat("one", &format!("{n}")).await;
    }
    c.chat("two", "solo").await;
    for _ in 0..4 {
        a.expect("chat").await;
        b.expect("chat").await;
    }
    c.expect("chat").await;
    assert_eq!(srv.metric("roomcast_deliveries_total").await, 10.0);
    // A fan-out is timed just after its hand-over to the sessions, which may already have
    // written it: wait for the count rather than read it.
    srv.wait_metric("roomcast_fanout_seconds_count", 5.0).await;
    assert!(srv.metric("roomcast_fanout_seconds_sum").await > 0.0);

    // Two notification sockets for one user, one push: two frames pushed.
    let mut n1 = notification_socket(&srv, "bob").await;
    let mut n2 = notification_socket(&srv, "bob").await;
    srv.wait_metric(NOTIFICATIONS, 2.0).await;
    let (status, _) = http_post(
        srv.addr,
        "/send-notification/?user_id=bob&title=t&message=m",
        &[],
    )
    .await;
    assert_eq!(status, 200);
    n1.expect("notification").await;
    n2.expect("notification").await;
    assert_eq!(srv.metric("roomcast_notifications_pushed_total").await, 2.0);

    // carol leaves: room two empties, one user fewer.
    c.close().await;
    srv.wait_metric("roomcast_rooms", 1.0).await;
    assert_eq!(srv.metric("roomcast_users").await, 2.0);
    assert_eq!(srv.metric("roomcast_store_write_failures_total").await, 0.0);
}
