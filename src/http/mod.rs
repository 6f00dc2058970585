//! The HTTP surface: WebSocket upgrades, health, and the browser chat's files.
//!
//! Handlers translate between HTTP and `ChatServer` messages; they hold no state of their own
//! beyond [`AppState`]. Errors are [`ApiError`], always a JSON body.

mod assets;
pub mod error;
mod health;
mod ws;

use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use actix_web::web;

use crate::config::Config;
use crate::server::ChatServer;
pub use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    pub server: Addr<ChatServer>,
    pub config: Arc<Config>,
    /// When the server started, for `/health`'s uptime.
    pub started: Instant,
}

/// Mounts every route. Shared by `main` and the tests, through [`crate::start`].
pub fn routes(cfg: &mut web::ServiceConfig, static_dir: Option<&std::path::Path>) {
    cfg.route("/ws", web::get().to(ws::multi_socket))
        .route("/ws/{room_id}/{user_id}", web::get().to(ws::room_socket))
        .route("/health", web::get().to(health::health));
    match static_dir {
        Some(dir) => {
            cfg.service(actix_files::Files::new("/", dir).index_file("index.html"));
        }
        None => assets::embedded(cfg),
    }
}
