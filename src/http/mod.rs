//! The HTTP surface: WebSocket upgrades (chat and notification sockets), the seed's push
//! endpoint, the JSON API under `/api`, health, metrics, live stats, and the browser pages'
//! files.
//!
//! Handlers translate between HTTP and `ChatServer` messages; they hold no state of their own
//! beyond [`AppState`]. Errors are [`ApiError`], always a JSON body.

mod access;
mod api;
mod assets;
pub mod error;
mod health;
pub mod live;
mod metrics;
mod notify;
mod ws;

use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use actix_web::web;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::ChatServer;
pub use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    pub server: Addr<ChatServer>,
    pub config: Arc<Config>,
    /// When the server started, for `/health`'s uptime.
    pub started: Instant,
    /// This server's metrics, which sessions report into.
    pub metrics: Arc<Metrics>,
    /// The newest `/live/stats` event.
    pub live: live::LiveFeed,
    /// `ChatServer`'s counts, as it published them after its latest message: `/health`
    /// reads them without waiting in its mailbox.
    pub stats: tokio::sync::watch::Receiver<crate::server::messages::Stats>,
}

/// What an unknown path (or a known path with the wrong method) gets: a JSON 404.
pub async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// Mounts every route. Shared by `main` and the tests, through [`crate::start`].
pub fn routes(cfg: &mut web::ServiceConfig, config: &Config) {
    cfg.route("/ws", web::get().to(ws::multi_socket))
        .route("/ws/{room_id}/{user_id}", web::get().to(ws::room_socket))
        .route(
            "/notifications/{user_id}",
            web::get().to(ws::notification_socket),
        )
        .route(
            "/send-notification/",
            web::post().to(notify::send_notification),
        )
        .route(
            "/send-notification",
            web::post().to(notify::send_notification),
        )
        .route("/health", web::get().to(health::health))
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/live/stats", web::get().to(live::live_stats));
    // A body sent to /api may be as large as a WebSocket frame.
    api::mount(cfg, config.max_frame_bytes);
    match config.static_dir.as_deref() {
        Some(dir) => {
            let dashboard = dir.join("dashboard.html");
            cfg.route(
                "/dashboard",
                web::get().to(move || {
                    let dashboard = dashboard.clone();
                    async move { actix_files::NamedFile::open_async(dashboard).await }
                }),
            );
            cfg.service(actix_files::Files::new("/", dir).index_file("index.html"));
        }
        None => assets::embedded(cfg),
    }
}
