//! roomcast: a realtime room server.
//!
//! Browsers and programs connect over WebSocket, join rooms, chat, see who is there and who
//! is typing, and receive each room's recent history on join. See `docs/PROTOCOL.md` for the
//! wire protocol and `ARCHITECTURE.md` for how the pieces fit.
//!
//! # Layout
//!
//! - [`config`]: the one `Config` (flags and `ROOMCAST_*` variables).
//! - [`auth`]: who a socket is (tokens, or development mode) and the rooms it may use.
//! - [`ids`]: `RoomId`, `UserId`, `SessionId`, `Seq`: validated domain names.
//! - [`protocol`]: wire types, decoding with stable error codes, encode-once frames. No actix.
//! - [`server`]: the `ChatServer` actor, its messages, and pure room logic.
//! - [`session`]: the WebSocket session actor; the only user of actix-web-actors.
//! - [`http`]: routes: upgrades, push, health, metrics, live stats, the embedded pages.
//! - [`metrics`]: the per-server Prometheus metrics.
//! - [`store`]: history beyond the in-memory window, behind one trait.
//! - [`cluster`]: several nodes as one, through Redis (`--cluster`).
//! - [`ratelimit`], [`conn`]: a token bucket; a handle to cut a stalled connection.
//! - [`procfs`]: process and kernel figures from `/proc`, for live stats, tests and tools.
//! - [`tls`]: `--tls-cert`/`--tls-key` made into the listener's rustls configuration.
//!
//! [`start`] is the entry point that `main` and the tests share: it binds, starts
//! `ChatServer` and the HTTP server, and returns a [`Running`] server that can be shut down.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod procfs;
pub mod protocol;
pub mod ratelimit;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Addr, Arbiter};
use actix_web::{App, HttpServer, dev::ServerHandle, web};
use anyhow::Context as _;

pub use config::Config;
use metrics::Metrics;
use server::ChatServer;
use server::messages::{CloseStore, GetStats, Shutdown, WatchStats};

/// A started server.
pub struct Running {
    /// The address actually bound (the port is real even when the config said 0).
    pub addr: SocketAddr,
    /// This server's metrics (what `GET /metrics` renders).
    pub metrics: Arc<Metrics>,
    /// Samples the figures `GET /live/stats` streams.
    sampler: http::live::Sampler,
    http: ServerHandle,
    /// Resolves when the HTTP server has stopped.
    http_task: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
    chat: Addr<ChatServer>,
    /// `ChatServer`'s counts as it publishes them (the store's state among them).
    stats: tokio::sync::watch::Receiver<server::messages::Stats>,
    /// The thread `ChatServer` runs on.
    chat_arbiter: Arbiter,
    shutdown_timeout: Duration,
}

/// Binds `config.bind` and starts serving (over TLS with `--tls-cert`/`--tls-key`). Must
/// run inside an actix `System`.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config.validate().map_err(anyhow::Error::msg)?;
    let mut config = config;
    config.max_connections = fit_to_fd_limit(config.max_connections);
    // Read before anything starts: a bad certificate or key stops the server here.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let listener = TcpListener::bind(config.bind)
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let addr = listener.local_addr()?;

    // The memory store keeps enough per room for the longest recovery.
    let keep = config.history_keep.max(config.recovery_max);
    let backend = match &config.cluster {
        Some(url) => {
            cluster::check_reachable(url)?;
            None
        }
        None => Some(store::open(&config.store, config.sync, keep)?),
    };
    // One per server: sessions and `ChatServer` report into it.
    let metrics = Metrics::new();
    let chat_arbiter = Arbiter::new();
    let (chat_tx, chat_rx) = tokio::sync::oneshot::channel();
    let chat_config = config.clone();
    let chat_metrics = Arc::clone(&metrics);
    chat_arbiter.spawn_fn(move || {
        let chat = match (backend, &chat_config.cluster) {
            (Some(backend), _) => ChatServer::start_with(&chat_config, backend, chat_metrics)
                .map_err(anyhow::Error::from),
            (None, Some(url)) => ChatServer::start_cluster(&chat_config, url, chat_metrics),
            (None, None) => Err(anyhow::anyhow!("no store")),
        };
        let _ = chat_tx.send(chat);
    });
    let chat = chat_rx
        .await
        .context("the chat server's thread ended")?
        .context("cannot start the store thread")?;

    let stats = chat
        .send(WatchStats)
        .await
        .context("the chat server stopped at start")?;
    let config = Arc::new(config);
    let started = Instant::now();
    let (sampler, live) = http::live::Sampler::start(Arc::clone(&metrics), started);
    // Who sockets are: tokens checked with the configured key, or development mode.
    let identity = match &config.cluster {
        // Development mode in a cluster: one key for every node, kept in Redis.
        Some(url) if config.jwt_secret.is_none() && config.jwt_public_key.is_none() => {
            let (url, candidate) = (url.clone(), auth::random_secret());
            let secret =
                actix_web::rt::task::spawn_blocking(move || cluster::dev_secret(&url, &candidate))
                    .await
                    .context("the development key's lookup ended")??;
            auth::Identity::with_dev_secret(&config, secret)?
        }
        _ => auth::Identity::from_config(&config)?,
    };
    let identity = Arc::new(identity);
    if identity.is_development() && !addr.ip().is_loopback() {
        log::warn!(
            "development mode on a non-loopback address addr={addr}: any client may claim any \
             user name; set --jwt-secret or --jwt-public-key (docs/SECURITY.md)"
        );
    }
    let state = web::Data::new(http::AppState {
        server: chat.clone(),
        config: Arc::clone(&config),
        started,
        metrics: Arc::clone(&metrics),
        live,
        stats: stats.clone(),
        identity,
    });
    // One per server: the per-IP connection rate is counted across the workers.
    let upgrade_guard = web::Data::new(http::guard::UpgradeGuard::new(&config));
    let routes_config = Arc::clone(&config);
    let workers = match config.workers {
        0 => default_workers(std::thread::available_parallelism().map_or(1, |n| n.get())),
        n => n,
    };
    // Every connection, HTTP or WebSocket, counts against one bound across the workers, kept
    // below the open-file limit (see `conn`).
    let fd_limit = rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft);
    let bounds = conn::Bounds::new(
        config.max_connections,
        config.max_http_connections,
        fd_limit,
        workers,
    );
    let conn_limit = conn::ConnLimit::new(bounds.served);
    let request_timeout = Duration::from_millis(config.request_timeout_ms);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(upgrade_guard.clone())
            .wrap(actix_web::middleware::from_fn(http::bound_request))
            .configure(|cfg| http::routes(cfg, &routes_config))
            .default_service(web::to(http::not_found))
    })
    .workers(workers)
    .backlog(4096)
    .max_connections(bounds.per_worker)
    // A request's head must arrive this soon after connecting (408 and closed otherwise); its
    // body is bounded the same by `http::bound_request`, and later requests' heads by the
    // connection's watchdog (`conn::on_connect`).
    .client_request_timeout(request_timeout)
    .keep_alive(conn::KEEP_ALIVE)
    // How long a connection closing after an unread body may keep draining it.
    .client_disconnect_timeout(Duration::from_secs(1))
    .disable_signals()
    // What is left of the shutdown once the WebSockets are closed (`Running::shutdown`):
    // HTTP requests still under way get at most a second more, so that the whole shutdown
    // stays within `--shutdown-timeout` plus that second.
    .shutdown_timeout(config.shutdown_timeout.min(HTTP_SHUTDOWN_GRACE_SECS))
    .on_connect(conn::on_connect(conn_limit, request_timeout));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    }
    .run();
    let http = server.handle();
    let http_task = actix_web::rt::spawn(server);
    start_memory_trimmer();
    log::info!("listening on {scheme}://{addr}");
    log::info!("browser chat: {scheme}://{addr}/  dashboard: {scheme}://{addr}/dashboard");
    Ok(Running {
        addr,
        metrics,
        sampler,
        http,
        http_task,
        chat,
        stats,
        chat_arbiter,
        shutdown_timeout: Duration::from_secs(config.shutdown_timeout),
    })
}

/// HTTP workers for `cores` CPU cores: one core is left to `ChatServer`'s thread, which every
/// request goes through. On two cores one worker beside it gave scenario A a p99 of 8.4-9.6 ms
/// where two gave 11.7-12.1 ms (docs/BENCHMARKS.md, "One worker per core but one").
fn default_workers(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

/// Seconds HTTP requests still under way get to finish once the WebSockets are closed.
const HTTP_SHUTDOWN_GRACE_SECS: u64 = 1;

impl Running {
    /// Ends the live-stats streams, closes every socket with 1001, waits (up to the shutdown
    /// timeout) for them to go, then stops the HTTP server and `ChatServer`. A WebSocket
    /// still open at the deadline (its client stopped reading its close frame) is cut then,
    /// not waited for again; with none left, HTTP requests under way get up to
    /// [`HTTP_SHUTDOWN_GRACE_SECS`] to finish.
    pub async fn shutdown(self) {
        self.sampler.stop();
        let mut sockets_left = 0;
        if self.chat.send(Shutdown).await.is_ok() {
            let deadline = Instant::now() + self.shutdown_timeout;
            loop {
                sockets_left = match self.chat.send(GetStats).await {
                    Ok(stats) => stats.connections,
                    Err(_) => 0,
                };
                if sockets_left == 0 || Instant::now() >= deadline {
                    break;
                }
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if sockets_left > 0 {
            log::warn!("{sockets_left} sockets did not close within the shutdown timeout; cut");
        }
        self.http.stop(sockets_left == 0).await;
        let _ = self.http_task.await;
        // Every request is answered: let the store commit what is queued, and wait for it.
        if let Ok(Some(store)) = self.chat.send(CloseStore).await {
            let _ = actix_web::rt::task::spawn_blocking(move || store.join()).await;
        }
        self.chat_arbiter.stop();
        log::info!("stopped");
    }
}

/// Runs until SIGINT or SIGTERM, then shuts down cleanly. If the history store fails for
/// good (its thread panicked), the server also shuts down, and this returns an error, so that
/// the process exits non-zero and a supervisor restarts it: without its store a node can
/// take no chat, and a fresh process reopens the store.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    let mut stats = running.stats.clone();
    let store_down = async move {
        let _ = stats.wait_for(|s| s.store == store::StoreState::Down).await;
    };
    let signal = std::pin::pin!(wait_for_signal());
    let store_down = std::pin::pin!(store_down);
    match futures_util::future::select(signal, store_down).await {
        futures_util::future::Either::Left((signal, _)) => {
            signal?;
            log::info!("signal received, shutting down");
            running.shutdown().await;
            Ok(())
        }
        futures_util::future::Either::Right(((), _)) => {
            log::error!("the history store failed for good; shutting down");
            running.shutdown().await;
            anyhow::bail!("the history store failed; restart roomcast")
        }
    }
}

async fn wait_for_signal() -> std::io::Result<()> {
    use actix_web::rt::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (term, int) = (std::pin::pin!(term.recv()), std::pin::pin!(int.recv()));
    futures_util::future::select(term, int).await;
    Ok(())
}

/// How often freed heap memory is handed back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// glibc's allocator keeps memory freed by closed connections for reuse, so after a peak the
/// process stays at its peak size. A thread of its own (so no actor ever waits on it) asks it
/// every `TRIM_INTERVAL` to return free pages. Started once per process. Only glibc has
/// `malloc_trim`; other allocators (macOS's, musl's) return memory by themselves, and there
/// this does nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn start_memory_trimmer() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("roomcast-trim".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(TRIM_INTERVAL);
                    // SAFETY: malloc_trim only walks the allocator's own free lists.
                    unsafe { libc::malloc_trim(0) };
                }
            });
        if let Err(e) = spawned {
            log::warn!("memory trimmer not started: {e}");
        }
    });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn start_memory_trimmer() {}

/// Descriptors kept for everything but WebSockets: listener, epoll and event fds, plain HTTP
/// requests, log and store files.
const RESERVED_FDS: u64 = 256;

/// Raises the soft open-file limit to the hard one, and lowers `max_connections` to what that
/// allows (one descriptor per WebSocket plus a reserve), so that past it clients get a clean
/// HTTP 503 rather than failed accepts.
fn fit_to_fd_limit(max_connections: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            log::warn!("could not raise the open file limit: {e}");
            return max_connections;
        }
    };
    let reserve = RESERVED_FDS.min(limit / 2);
    let budget = usize::try_from(limit - reserve).unwrap_or(usize::MAX);
    if budget < max_connections {
        log::warn!(
            "open file limit {limit} allows {budget} WebSockets, not --max-connections \
             {max_connections}; using {budget} (raise the hard limit, e.g. LimitNOFILE= or \
             ulimit -Hn, for more)"
        );
        budget
    } else {
        log::debug!("open file limit={limit}");
        max_connections
    }
}

#[cfg(test)]
mod invariants {
    //! ARCHITECTURE.md's structural invariants, checked over the source tree.

    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Files under `src/` whose code (comments aside) mentions `needle`, relative to `src/`.
    fn files_using(needle: &str) -> Vec<String> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut users: Vec<String> = files
            .iter()
            .filter(|f| {
                std::fs::read_to_string(f)
                    .expect("read a source file")
                    .lines()
                    .map(str::trim_start)
                    .filter(|l| !l.starts_with("//"))
                    .any(|l| l.contains(needle))
            })
            .map(|f| f.strip_prefix(&src).unwrap().to_string_lossy().into_owned())
            .collect();
        users.sort();
        users
    }

    #[test]
    fn only_the_session_module_knows_the_websocket_actor_crate() {
        // Spelled in two pieces so that this file does not match.
        assert_eq!(
            files_using(&["actix_web", "_actors"].concat()),
            ["session.rs"]
        );
    }

    #[test]
    fn the_server_actor_builds_no_http_shapes() {
        let server: Vec<String> = files_using("Serialize")
            .into_iter()
            .filter(|f| f.starts_with("server"))
            .collect();
        assert!(server.is_empty(), "serialized in {server:?}");
        let http: Vec<String> = files_using("actix_web")
            .into_iter()
            .filter(|f| f.starts_with("server") || f == "protocol.rs")
            .collect();
        assert!(http.is_empty(), "actix-web used in {http:?}");
    }
}
