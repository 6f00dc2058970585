//! The live dashboard (`/dashboard`, built on the metrics branch).

use serde_json::{Value, json};

use crate::common::Client;
use crate::harness::{Page, Server, browser_test};

/// The number shown in `#stat-connections`, once it shows one.
async fn connections_shown(page: &Page, more_than: Option<u64>) -> u64 {
    let v = page
        .wait_for(
            "a connection count",
            "const e = document.getElementById('stat-connections');
             const n = e ? Number(e.textContent.replace(/[^0-9]/g, '')) : NaN;
             return e && e.textContent.trim() !== '' && Number.isFinite(n) ? n : null;",
            vec![],
            |v| v.as_u64().is_some_and(|n| more_than.is_none_or(|m| n > m)),
        )
        .await;
    v.as_u64().unwrap()
}

#[test]
fn dashboard_figures_rise_when_clients_connect() {
    browser_test(
        "dashboard_figures_rise_when_clients_connect",
        |b| async move {
            let server = Server::start();
            let page = b.page("dashboard", &server.url("/dashboard")).await;
            let before = connections_shown(&page, None).await;
            let mut clients = Vec::new();
            for i in 0..3 {
                let mut c =
                    Client::connect(&server.ws_url(&format!("/ws?user_id=viewer{i}"))).await;
                c.expect("welcome").await;
                clients.push(c);
            }
            let after = connections_shown(&page, Some(before)).await;
            assert!(after > before);
            for id in ["stat-connections", "stat-rooms"] {
                let present = page
                    .js(
                        "return !!document.getElementById(arguments[0]);",
                        vec![id.into()],
                    )
                    .await;
                assert_eq!(present, true, "#{id}");
            }
        },
    );
}

/// Replaces `EventSource` before the page starts: `window.__sources` lists every stream the
/// page opened; `emit(fields)` (below) sends an event on the newest; `s.__fail()` breaks it.
const FAKE_EVENT_SOURCE: &str = r#"
window.__sources = [];
class FakeEventSource extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.readyState = 0;
    window.__sources.push(this);
    setTimeout(() => { this.readyState = 1; if (this.onopen) this.onopen(new Event('open')); }, 0);
  }
  close() { this.readyState = 2; }
  __emit(data) {
    if (this.onmessage) this.onmessage(new MessageEvent('message', { data: JSON.stringify(data) }));
  }
  __fail() { this.readyState = 2; if (this.onerror) this.onerror(new Event('error')); }
}
window.EventSource = FakeEventSource;
"#;

/// Emits `arguments[0]` events on the newest fake stream, one second apart (server time),
/// each the sample below with `arguments[1]` merged in and `connections` counting up from
/// `arguments[2]`.
const EMIT: &str = r#"
const s = window.__sources.at(-1);
for (let i = 0; i < arguments[0]; i++) {
  window.__ts = (window.__ts || Date.now() - 600000) + 1000;
  s.__emit({ ts: window.__ts, uptime_secs: 100, connections: arguments[2] + i,
    chat_connections: 1, notification_connections: 0, rooms: 1, users: 1,
    frames_in_per_sec: 1, frames_out_per_sec: 1, deliveries_per_sec: 1, fanout_p99_ms: 0.5,
    rss_bytes: 10485760, ...arguments[1] });
}
return window.__sources.length;
"#;

async fn fake_feed_page(b: &crate::harness::Browser, server: &Server) -> Page {
    let page = b
        .page_with_init_script("dashboard", FAKE_EVENT_SOURCE, &server.url("/dashboard"))
        .await;
    page.wait_eq(
        "the page's stream open",
        "return window.__sources.length === 1 && window.__sources[0].readyState === 1;",
        vec![],
        json!(true),
    )
    .await;
    page
}

async fn emit(page: &Page, count: u64, fields: Value, connections_from: u64) {
    page.js(EMIT, vec![json!(count), fields, json!(connections_from)])
        .await;
}

#[test]
fn big_numbers_have_thousands_separators_and_p99_says_ms() {
    browser_test(
        "big_numbers_have_thousands_separators_and_p99_says_ms",
        |b| async move {
            let server = Server::start();
            let page = fake_feed_page(&b, &server).await;
            emit(
                &page,
                1,
                json!({"chat_connections": 2181000, "notification_connections": 579,
                       "rooms": 12345, "users": 1234567, "frames_in_per_sec": 123456.7,
                       "deliveries_per_sec": 1500000, "fanout_p99_ms": 1234.56,
                       "rss_bytes": 2147483648u64}),
                2181579,
            )
            .await;
            // In the browser's locale (en-US here: "2,181,579"), whatever it is.
            let shown = page
                .wait_for(
                    "the figures",
                    "const f = (n, d) => new Intl.NumberFormat(undefined,
                       { minimumFractionDigits: d, maximumFractionDigits: d }).format(n);
                     const t = (id) => document.getElementById(id).textContent;
                     return [[t('stat-connections'), f(2181579, 0)],
                             [t('stat-chat-connections'), f(2181000, 0)],
                             [t('stat-rooms'), f(12345, 0)],
                             [t('stat-users'), f(1234567, 0)],
                             [t('stat-frames-in'), f(123457, 0)],
                             [t('stat-deliveries'), f(1500000, 0)],
                             [t('stat-fanout-p99'), f(1234.56, 1)],
                             [t('stat-rss'), f(2048, 1)]];",
                    vec![],
                    |v| v[0][0] != "–",
                )
                .await;
            for pair in shown.as_array().unwrap() {
                assert_eq!(pair[0], pair[1], "{shown}");
            }
            assert_eq!(
                shown[0][0], "2,181,579",
                "the test browser's locale is en-US"
            );

            // The p99 says its unit in its heading, next to its figure and on its axis.
            let p99 = page
                .js(
                    "const card = document.querySelector('.card[data-series=\"fanout_p99\"]');
                     return [card.querySelector('h2').textContent,
                             card.querySelector('.value .unit').textContent,
                             card.querySelector('.axis-y .axis-title').textContent,
                             [...card.querySelectorAll('.axis-y text.tick')]
                               .every((t) => t.textContent.endsWith(' ms'))];",
                    vec![],
                )
                .await;
            assert_eq!(p99, json!(["Fan-out p99 (ms)", "ms", "ms", true]));
        },
    );
}

/// For every chart: its value ticks, its value axis title, its time labels and its number of
/// time tick marks.
const AXES: &str = "return [...document.querySelectorAll('.card[data-series]')].map((card) => [
  card.dataset.series,
  [...card.querySelectorAll('.axis-y text.tick')].map((t) => t.textContent),
  card.querySelector('.axis-y .axis-title').textContent,
  [...card.querySelectorAll('.axis-x text.tick')].map((t) => t.textContent),
  card.querySelectorAll('.axis-x line.tick-mark').length]);";

/// A chart's time axis: a mark per tick of `all`, labels (as many as fit) among them, in
/// order, ending with "now".
fn assert_time_axis(chart: &Value, all: &[&str]) {
    assert_eq!(chart[4], all.len(), "{chart}");
    let labels: Vec<&str> = chart[3]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(labels.len() >= 3, "{chart}");
    assert_eq!(labels.last(), Some(&"now"), "{chart}");
    let mut rest = all.iter();
    assert!(
        labels.iter().all(|l| rest.any(|t| t == l)),
        "{chart}: labels not among {all:?}"
    );
}

/// The span of the `connections` chart's line as a fraction of its plot's width, and where
/// it starts (0 = the left end of the time axis).
const LINE_SPAN: &str = "
const svg = document.querySelector('.card[data-series=\"connections\"] svg.chart');
const line = svg.querySelector('path.line').getBBox();
const base = svg.querySelector('.axis-x line.baseline');
const x1 = Number(base.getAttribute('x1')), x2 = Number(base.getAttribute('x2'));
return [Math.round((line.width / (x2 - x1)) * 100), Math.round(((line.x - x1) / (x2 - x1)) * 100)];";

#[test]
fn charts_have_labelled_axes_and_a_60_s_window_or_5_min_on_request() {
    browser_test(
        "charts_have_labelled_axes_and_a_60_s_window_or_5_min_on_request",
        |b| async move {
            let server = Server::start();
            let page = fake_feed_page(&b, &server).await;
            assert_eq!(
                page.js("return document.body.dataset.window;", vec![])
                    .await,
                json!("60")
            );
            // A short run: 6 points, 5 seconds, a twelfth of the 60 s window, not a sliver.
            emit(&page, 6, json!({}), 1000).await;
            let span = page
                .wait_for("the line", LINE_SPAN, vec![], |v| v[0].as_u64() > Some(0))
                .await;
            assert_eq!(span, json!([8, 92]), "5 s of 60 s, at the right end");

            let axes = page.js(AXES, vec![]).await;
            let units = [
                ("connections", "sockets", ""),
                ("rooms", "rooms", ""),
                ("users", "users", ""),
                ("frames_in", "frames/s", "/s"),
                ("frames_out", "frames/s", "/s"),
                ("deliveries", "deliveries/s", "/s"),
                ("fanout_p99", "ms", " ms"),
                ("rss", "MiB", " MiB"),
            ];
            assert_eq!(axes.as_array().unwrap().len(), units.len(), "{axes}");
            for (chart, (series, title, suffix)) in axes.as_array().unwrap().iter().zip(units) {
                assert_eq!(chart[0], series);
                let ticks = chart[1].as_array().unwrap();
                assert!(ticks.len() >= 2, "{chart}");
                assert_eq!(ticks[0], format!("0{suffix}"), "{chart}");
                assert!(
                    ticks.iter().all(|t| t.as_str().unwrap().ends_with(suffix)),
                    "{chart}"
                );
                assert_eq!(chart[2], title);
                assert_time_axis(chart, &["−60 s", "−45 s", "−30 s", "−15 s", "now"]);
            }
            // The connections axis reaches past the highest value shown (1005).
            let top: f64 = axes[0][1]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .as_str()
                .unwrap()
                .replace(['K', 'k'], "e3")
                .parse()
                .unwrap();
            assert!(top >= 1005.0, "{axes}");

            // 90 s of data: the 60 s window is full from end to end.
            emit(&page, 84, json!({}), 1006).await;
            page.wait_eq("the window full", LINE_SPAN, vec![], json!([100, 0]))
                .await;

            // 5 minutes on request: minute ticks, 90 s of 300.
            page.click(".window-toggle button[data-window=\"300\"]")
                .await;
            page.wait_eq(
                "the 5 min window",
                "return [document.body.dataset.window,
                         document.querySelector('.window-toggle button[data-window=\"300\"]')
                           .getAttribute('aria-pressed'),
                         document.querySelector('.window-toggle button[data-window=\"60\"]')
                           .getAttribute('aria-pressed'),
                         document.getElementById('window-label').textContent];",
                vec![],
                json!(["300", "true", "false", "5 minutes"]),
            )
            .await;
            let axes = page.js(AXES, vec![]).await;
            for chart in axes.as_array().unwrap() {
                assert_time_axis(
                    chart,
                    &["−5 min", "−4 min", "−3 min", "−2 min", "−1 min", "now"],
                );
            }
            assert_eq!(page.js(LINE_SPAN, vec![]).await, json!([30, 70]));

            // And back.
            page.click(".window-toggle button[data-window=\"60\"]")
                .await;
            page.wait_eq("the 60 s window", LINE_SPAN, vec![], json!([100, 0]))
                .await;
        },
    );
}

/// Whether the page says its figures are stale: [banner shown, body.stale, live-state].
const STALE: &str = "const b = document.getElementById('stale-banner');
return [!b.hidden && b.offsetHeight > 0, document.body.classList.contains('stale'),
        document.getElementById('live-state').dataset.state];";

#[test]
fn the_dashboard_says_its_figures_are_stale_when_the_server_stops() {
    browser_test(
        "the_dashboard_says_its_figures_are_stale_when_the_server_stops",
        |b| async move {
            let mut server = Server::start();
            let page = b.page("dashboard", &server.url("/dashboard")).await;
            connections_shown(&page, None).await;
            page.wait_eq("live", STALE, vec![], json!([false, false, "connected"]))
                .await;

            server.stop();
            page.wait_for("stale", STALE, vec![], |v| v[0] == true && v[1] == true)
                .await;
            let text = page.text("#stale-banner").await;
            assert!(text.contains("Stale"), "{text}");

            server.start_again();
            page.wait_eq(
                "live again",
                STALE,
                vec![],
                json!([false, false, "connected"]),
            )
            .await;
        },
    );
}

#[test]
fn the_dashboard_says_its_figures_are_stale_when_the_feed_goes_silent_or_breaks() {
    browser_test(
        "the_dashboard_says_its_figures_are_stale_when_the_feed_goes_silent_or_breaks",
        |b| async move {
            let server = Server::start();
            let page = fake_feed_page(&b, &server).await;
            emit(&page, 1, json!({}), 7).await;
            page.wait_eq("live", STALE, vec![], json!([false, false, "connected"]))
                .await;

            // Open but silent: stale after 3 s without an event.
            page.wait_eq("stale", STALE, vec![], json!([true, true, "stale"]))
                .await;
            let text = page.text("#stale-banner").await;
            assert!(text.contains("silent"), "{text}");
            emit(&page, 1, json!({}), 8).await;
            page.wait_eq("live", STALE, vec![], json!([false, false, "connected"]))
                .await;

            // Broken: stale at once, and the page opens a new stream.
            page.js("window.__sources.at(-1).__fail(); return null;", vec![])
                .await;
            let now = page.js(STALE, vec![]).await;
            assert_eq!(now, json!([true, true, "reconnecting"]));
            let text = page.text("#stale-banner").await;
            assert!(text.contains("lost"), "{text}");
            page.wait_eq(
                "a new stream",
                "return window.__sources.length === 2 && window.__sources[1].readyState === 1;",
                vec![],
                json!(true),
            )
            .await;
            emit(&page, 1, json!({}), 9).await;
            page.wait_eq("live", STALE, vec![], json!([false, false, "connected"]))
                .await;
            assert_eq!(page.text("#stat-connections").await, "9");
        },
    );
}

/// `#stat-status`, `#stat-store`, and the broker's state, reconnects and visibility, as the
/// page shows them.
const SERVER_STATE: &str = "
const t = (id) => document.getElementById(id);
return [t('stat-status').textContent, t('stat-status').dataset.state,
        t('stat-store').textContent, t('stat-store').dataset.state,
        t('broker-state').hidden, t('single-node').hidden,
        t('stat-broker').textContent, t('stat-broker').dataset.state,
        t('stat-broker-reconnects').textContent];";

#[test]
fn the_dashboard_shows_the_store_and_a_single_node() {
    browser_test(
        "the_dashboard_shows_the_store_and_a_single_node",
        |b| async move {
            let server = Server::start();
            let page = b.page("dashboard", &server.url("/dashboard")).await;
            let want = json!(["ok", "ok", "ok", "ok", true, false, "–", "", "–"]);
            page.wait_eq("the server's state", SERVER_STATE, vec![], want)
                .await;
        },
    );
}

/// Answers the page's `/health` requests with `window.__health` (status 503 unless "ok").
const FAKE_HEALTH: &str = r#"
const realFetch = window.fetch;
window.__health = null;
window.fetch = (url, opts) => {
  if (String(url).endsWith('/health') && window.__health) {
    const h = window.__health;
    return Promise.resolve(new Response(JSON.stringify(h),
      { status: h.status === 'ok' ? 200 : 503, headers: { 'Content-Type': 'application/json' } }));
  }
  return realFetch(url, opts);
};
"#;

#[test]
fn the_dashboard_shows_a_cluster_brokers_state_and_reconnects() {
    browser_test(
        "the_dashboard_shows_a_cluster_brokers_state_and_reconnects",
        |b| async move {
            let server = Server::start();
            let health = |status: &str, broker: &str, reconnects: u64| {
                format!(
                    "window.__health = {};",
                    json!({"status": status, "store": "ok", "broker": broker,
                           "broker_reconnects": reconnects})
                )
            };
            let page = b
                .page_with_init_script(
                    "dashboard",
                    &format!("{FAKE_HEALTH}\n{}", health("ok", "up", 1234)),
                    &server.url("/dashboard"),
                )
                .await;
            let up = json!(["ok", "ok", "ok", "ok", false, true, "up", "ok", "1,234"]);
            page.wait_eq("broker up", SERVER_STATE, vec![], up).await;

            let degraded = health("degraded", "reconnecting", 1235);
            page.js(&format!("{degraded} return null;"), vec![]).await;
            let down = json!([
                "degraded",
                "bad",
                "ok",
                "ok",
                false,
                true,
                "reconnecting",
                "bad",
                "1,235"
            ]);
            page.wait_eq("broker reconnecting", SERVER_STATE, vec![], down)
                .await;
        },
    );
}
