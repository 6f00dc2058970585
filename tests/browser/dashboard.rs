//! The live dashboard (`/dashboard`, built on the metrics branch).

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
