//! The HTTP surface: WebSocket upgrades (chat and notification sockets), the seed's push
//! endpoint, the JSON API under `/api`, health, metrics, live stats, and the browser pages'
//! files.
//!
//! Handlers translate between HTTP and `ChatServer` messages; they hold no state of their own
//! beyond [`AppState`]. Errors are [`ApiError`], always a JSON body.
//!
//! Every request first passes [`bound_request`]: past the server's connection bound it is
//! answered 503 at once, and a request body must arrive within `--request-timeout-ms`.
//! WebSocket upgrades then pass [`guard::check_upgrade`]: the per-IP connection rate and the
//! page's origin.

mod access;
mod api;
mod assets;
mod dev_token;
pub mod error;
pub mod guard;
mod health;
pub mod live;
mod metrics;
mod notify;
mod ws;

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{self, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::{self, Next};
use actix_web::{HttpMessage as _, ResponseError, web};
use bytes::Bytes;
use futures_util::Stream;

use crate::config::Config;
use crate::conn::{ConnActivity, ConnSlot, RequestUnderWay};
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
    /// How sockets prove who they are (`auth`): one per server, shared by the workers, so a
    /// development token minted by one worker is accepted by all.
    pub identity: Arc<crate::auth::Identity>,
}

/// The middleware every request passes (`App::wrap(from_fn(bound_request))`).
///
/// - A request on a connection that came past the server's connection bound
///   ([`ConnSlot::over_bound`]) is answered 503 (`unavailable`) at once, and its connection
///   closed.
/// - The request is under way, for the connection's watchdog (`conn`), until its response
///   body is done.
/// - A request with a body (WebSocket upgrades aside, whose "body" is the socket) must
///   deliver it within `--request-timeout-ms`: reading it past then fails, which a handler
///   answers 408. And its connection is closed after the answer if the body has not all
///   arrived by then: actix-web would otherwise keep reading a chunked body that the handler
///   left unread, for as long as the client cares to send it (or to send nothing). To that
///   end the request's payload is kept alive until the response body is done: actix-web
///   closes a connection whose unfinished body is still wanted when it answers.
pub async fn bound_request(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req
        .conn_data::<ConnSlot>()
        .is_some_and(ConnSlot::over_bound)
    {
        if let Some(state) = req.app_data::<web::Data<AppState>>() {
            state.metrics.connection_refused();
        }
        log::debug!(
            "connection past the bound refused peer={:?}",
            req.peer_addr()
        );
        let refusal =
            ApiError::Unavailable("the server has too many connections; try again later".into());
        return Ok(req.into_response(refusal.error_response()));
    }
    let upgrade = req.head().upgrade();
    // Under way (for the connection's watchdog) until the response body is done.
    let under_way = req
        .conn_data::<ConnActivity>()
        .map(|activity| activity.request(upgrade));
    let payload = req.take_payload();
    if upgrade || matches!(payload, dev::Payload::None) {
        req.set_payload(payload);
        let response = next.call(req).await?;
        return Ok(response.map_body(|_, body| {
            BoxBody::new(KeepPayload {
                body: body.boxed(),
                _payload: None,
                _under_way: under_way,
            })
        }));
    }
    let timeout_ms = req
        .app_data::<web::Data<AppState>>()
        .map_or(5000, |state| state.config.request_timeout_ms);
    let payload = Rc::new(RefCell::new(payload));
    let body = BodyDeadline {
        payload: Rc::clone(&payload),
        timeout_ms,
        sleep: Box::pin(actix_web::rt::time::sleep(Duration::from_millis(
            timeout_ms,
        ))),
        timed_out: false,
    };
    req.set_payload(dev::Payload::from(
        Box::pin(body) as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>
    ));
    let response = next.call(req).await?;
    Ok(response.map_body(|_, body| {
        BoxBody::new(KeepPayload {
            body: body.boxed(),
            _payload: Some(payload),
            _under_way: under_way,
        })
    }))
}

/// A request body that fails once its deadline passes.
struct BodyDeadline {
    payload: Rc<RefCell<dev::Payload>>,
    timeout_ms: u64,
    sleep: Pin<Box<actix_web::rt::time::Sleep>>,
    timed_out: bool,
}

/// The error a body read past its deadline fails with; [`body_timed_out`] recognizes it.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0} ms")]
struct BodyTimedOut(u64);

/// The timeout (in ms) if `e` is a body read that passed its deadline.
pub(crate) fn body_timed_out(e: &PayloadError) -> Option<u64> {
    match e {
        PayloadError::Io(e) => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<BodyTimedOut>())
            .map(|t| t.0),
        _ => None,
    }
}

impl Stream for BodyDeadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut *self.payload.borrow_mut()).poll_next(cx) {
            return Poll::Ready(item);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timed_out = true;
                let e = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    BodyTimedOut(self.timeout_ms),
                );
                Poll::Ready(Some(Err(PayloadError::Io(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A response body that keeps its request's payload alive, and its request under way, until
/// it is done.
struct KeepPayload {
    body: BoxBody,
    _payload: Option<Rc<RefCell<dev::Payload>>>,
    _under_way: Option<RequestUnderWay>,
}

impl MessageBody for KeepPayload {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
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
    // The upgrades pass the origin check and the connection rate first; other methods fall
    // through to the JSON 404, as with `route`.
    let upgrade = |path| {
        web::resource(path)
            .guard(actix_web::guard::Get())
            .wrap(middleware::from_fn(guard::check_upgrade))
    };
    cfg.service(upgrade("/ws").route(web::get().to(ws::multi_socket)))
        .service(upgrade("/ws/{room_id}/{user_id}").route(web::get().to(ws::room_socket)))
        .service(upgrade("/notifications/{user_id}").route(web::get().to(ws::notification_socket)))
        .route(
            "/send-notification/",
            web::post().to(notify::send_notification),
        )
        .route(
            "/send-notification",
            web::post().to(notify::send_notification),
        )
        // HEAD too: load balancers' health checks send it (actix-web drops the body).
        .route("/health", web::get().to(health::health))
        .route("/health", web::head().to(health::health))
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
            // Only what actix-files would look for on disk reaches it: it answers a path it
            // refuses (a hidden segment such as `/.env` or `/x/.git/config`, an encoded `/`)
            // with its own 400 and another method with its own 405, both text/plain, before
            // its default handler is asked. Routed past it, they get the JSON 404 of any
            // unknown path (docs/API.md), as a missing file or a directory without an index
            // already does through that default handler.
            cfg.service(
                actix_files::Files::new("/", dir)
                    .index_file("index.html")
                    .guard(actix_web::guard::fn_guard(files_would_serve)),
            );
        }
        None => assets::embedded(cfg),
    }
}

/// Whether `--static-dir`'s files service would look on disk for this request: a GET or HEAD
/// whose path actix-files' own parser accepts (hidden files refused), so that the two agree.
fn files_would_serve(ctx: &actix_web::guard::GuardContext<'_>) -> bool {
    use actix_web::http::Method;
    matches!(ctx.head().method, Method::GET | Method::HEAD)
        && actix_files::PathBufWrap::parse_path(ctx.head().uri.path(), false).is_ok()
}

/// One request to a fresh app with the real routes and a real `ChatServer` on the memory
/// store: its status and JSON body. For unit tests that need a peer address the integration
/// tests cannot have (they connect from loopback).
#[cfg(test)]
pub(crate) async fn call_app(
    config: Config,
    req: actix_web::test::TestRequest,
) -> (u16, serde_json::Value) {
    use actix_web::{App, test, web};

    let store = Box::new(crate::store::MemoryStore::new(10, 10));
    let metrics = Metrics::new();
    let server = ChatServer::start_with(&config, store, Arc::clone(&metrics)).unwrap();
    let stats = server
        .send(crate::server::messages::WatchStats)
        .await
        .unwrap();
    let identity = Arc::new(crate::auth::Identity::from_config(&config).unwrap());
    let config = Arc::new(config);
    let started = Instant::now();
    let (_sampler, live) = live::Sampler::start(Arc::clone(&metrics), started);
    let state = web::Data::new(AppState {
        server,
        config: Arc::clone(&config),
        started,
        metrics,
        live,
        stats,
        identity,
    });
    let app = test::init_service(
        App::new()
            .app_data(state)
            .configure(|cfg| routes(cfg, &config))
            .default_service(web::to(not_found)),
    )
    .await;
    let resp = test::call_service(&app, req.to_request()).await;
    let status = resp.status().as_u16();
    (status, test::read_body_json(resp).await)
}
