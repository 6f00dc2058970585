//! Per-connection bookkeeping: socket settings, the server's bound on connections, and a way
//! to cut a connection whose session actor no longer runs.
//!
//! Every accepted connection, HTTP or WebSocket, takes a [`ConnSlot`] in its server's
//! [`ConnLimit`] (a count shared by all workers; actix-web's own `max_connections` is per
//! worker) and gives it back when the connection is dropped. A connection that finds the
//! count past the bound is still served, but only with HTTP 503 (`http::bound_request`), and
//! is then closed. [`Bounds`] sets the count's bound and actix-web's per-worker accept limit
//! so that both stay below the open-file limit: past the served bound clients get a fast
//! 503, past the accept limit they wait in the listen backlog, and the server never runs out
//! of descriptors.
//!
//! actix-web bounds the head of a connection's first request only (`client_request_timeout`):
//! a keep-alive connection whose next request's head never finishes would be held for ever.
//! So each connection also has a watchdog ([`Activity`]): a connection that has had no
//! request under way for the keep-alive time plus the request timeout is shut down (an idle
//! keep-alive connection is closed by actix-web before that). It stops watching once the
//! connection is upgraded to a WebSocket, whose heartbeat bounds it.
//!
//! actix-web polls a WebSocket session actor only while the connection's write buffer has
//! room. A client that stops reading therefore freezes its own actor: the actor cannot close
//! itself, and a close frame queued for it is never written. `ChatServer` notices such a
//! session (its bounded mailbox is full), stops sending to it, and after a grace period shuts
//! the socket down. The shutdown wakes actix-web's connection task, which then fails its
//! write, drops the actor and closes the connection. The cut is marked on the [`ConnFd`], so
//! the session counts its end as the slow consumer it was (4001), not as a dropped
//! connection.
//!
//! `ChatServer` keeps only the descriptor's number and the peer's address ([`ConnFd`]), not an
//! open duplicate: a duplicate per connection would double the descriptors the server needs.
//! It duplicates the descriptor when it evicts a session ([`ConnFd::duplicate`]). The session
//! is alive then (its mailbox was full, not closed), but its connection could close at that
//! very moment and a new connection could get the same number. Two guards make that harmless:
//! the duplicate must have the recorded peer address, and the cut happens only if the
//! session's `Disconnect` has not arrived by the end of the grace period (a closed connection
//! sends it at once).

use std::any::Any;
use std::cell::Cell;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::dev::Extensions;

/// An accepted connection's descriptor number and peer, recorded by the `on_connect` hook,
/// and whether `ChatServer` cut it.
#[derive(Debug, Clone)]
pub struct ConnFd {
    fd: RawFd,
    peer: SocketAddr,
    /// Set by [`ConnHandle::cut`] before the shutdown, so the session sees it once its
    /// connection ends.
    cut: Arc<AtomicBool>,
}

/// How long actix-web keeps an idle keep-alive connection (`HttpServer::keep_alive`).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// The `HttpServer::on_connect` hook for a server whose connections `limit` counts: takes
/// the connection's [`ConnSlot`], sets `TCP_NODELAY` (small frames must not wait for Nagle's
/// algorithm and the peer's delayed ACK: that costs tens of milliseconds per round trip),
/// records the descriptor (of the TCP socket under TLS too) for the WebSocket handlers, and
/// starts the connection's watchdog, which shuts it down once no request has been under way
/// for `KEEP_ALIVE` + `request_timeout`. Runs on the worker thread that serves the
/// connection.
pub fn on_connect(
    limit: Arc<ConnLimit>,
    request_timeout: Duration,
) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
    move |conn, ext| {
        ext.insert(limit.take_slot());
        let Some(tcp) = tcp_of(conn) else {
            return;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            log::debug!("TCP_NODELAY: {e}");
        }
        let Ok(peer) = tcp.peer_addr() else {
            return;
        };
        let fd = ConnFd {
            fd: tcp.as_raw_fd(),
            peer,
            cut: Arc::default(),
        };
        let activity = Rc::new(Activity::default());
        actix_web::rt::spawn(watch(
            Rc::downgrade(&activity),
            fd.clone(),
            KEEP_ALIVE + request_timeout,
        ));
        ext.insert(ConnActivity(activity));
        ext.insert(fd);
    }
}

/// The TCP stream of a connection as the `on_connect` hook sees it: plain, or under TLS.
fn tcp_of(conn: &dyn Any) -> Option<&actix_web::rt::net::TcpStream> {
    use actix_tls::accept::rustls_0_23::TlsStream;
    use actix_web::rt::net::TcpStream;
    conn.downcast_ref::<TcpStream>().or_else(|| {
        conn.downcast_ref::<TlsStream<TcpStream>>()
            .map(|tls| tls.get_ref().0)
    })
}

/// What a connection's watchdog knows of its requests (single-threaded: the connection's
/// worker marks it, the watchdog on the same worker reads it).
#[derive(Debug)]
pub struct Activity {
    /// Since when no request has been under way (`None`: one is).
    idle_since: Cell<Option<Instant>>,
    /// Upgraded to a WebSocket: no longer watched.
    upgraded: Cell<bool>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            idle_since: Cell::new(Some(Instant::now())),
            upgraded: Cell::new(false),
        }
    }
}

/// A connection's [`Activity`], kept in its extensions (dropped with the connection, which
/// ends the watchdog).
#[derive(Debug, Clone)]
pub struct ConnActivity(Rc<Activity>);

impl ConnActivity {
    /// A request starts; it is under way until the returned guard (kept until its response
    /// body is done) is dropped. `upgrade`: a WebSocket upgrade, after which the connection
    /// is not watched.
    pub fn request(&self, upgrade: bool) -> RequestUnderWay {
        if upgrade {
            self.0.upgraded.set(true);
        }
        self.0.idle_since.set(None);
        RequestUnderWay(Rc::clone(&self.0))
    }
}

/// A request under way on a connection; dropping it makes the connection idle again.
#[derive(Debug)]
pub struct RequestUnderWay(Rc<Activity>);

impl Drop for RequestUnderWay {
    fn drop(&mut self) {
        self.0.idle_since.set(Some(Instant::now()));
    }
}

/// Shuts the connection down once it has been idle (no request under way) for `limit`;
/// returns when the connection is gone or upgraded.
async fn watch(activity: Weak<Activity>, fd: ConnFd, limit: Duration) {
    loop {
        let wait = match activity.upgrade() {
            Some(a) if a.upgraded.get() => return,
            Some(a) => match a.idle_since.get() {
                Some(since) if since.elapsed() >= limit => {
                    log::debug!("connection idle past {limit:?} closed peer={}", fd.peer);
                    if let Ok(conn) = fd.duplicate() {
                        conn.shut();
                    }
                    return;
                }
                Some(since) => limit - since.elapsed(),
                None => limit,
            },
            None => return,
        };
        actix_web::rt::time::sleep(wait).await;
    }
}

/// One server's open connections, HTTP and WebSocket, across its workers.
#[derive(Debug)]
pub struct ConnLimit {
    open: AtomicUsize,
    /// Connections served; the ones past it are answered 503.
    bound: usize,
}

impl ConnLimit {
    pub fn new(bound: usize) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            open: AtomicUsize::new(0),
            bound,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a new connection; dropping the slot un-counts it.
    fn take_slot(self: &Arc<Self>) -> ConnSlot {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        ConnSlot {
            limit: Arc::clone(self),
            over: open > self.bound,
        }
    }
}

/// A connection's place in its server's [`ConnLimit`], kept in the connection's extensions
/// (dropped with the connection).
#[derive(Debug)]
pub struct ConnSlot {
    limit: Arc<ConnLimit>,
    over: bool,
}

impl ConnSlot {
    /// Whether the connection came when the server already had its bound: it gets 503.
    pub fn over_bound(&self) -> bool {
        self.over
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.limit.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Descriptors kept, beside the connections, for the listener, the workers' event loops, the
/// store's files and the log.
const FIXED_FDS: u64 = 64;

/// Connections accepted beyond the served bound, to be answered 503 rather than left waiting.
const REFUSAL_ROOM: usize = 64;

/// How many connections a server serves, and how many each worker accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Connections served at once (the [`ConnLimit`] bound): `--max-connections` WebSockets
    /// plus `--max-http-connections`, within the open-file limit.
    pub served: usize,
    /// actix-web's per-worker `max_connections`: the served bound and some room for 503
    /// answers, shared out among the workers. Past it clients wait in the listen backlog,
    /// which costs no descriptor.
    pub per_worker: usize,
}

impl Bounds {
    /// `fd_limit` is the open-file limit in force (`None`: unknown, no fitting).
    pub fn new(
        max_websockets: usize,
        max_http: usize,
        fd_limit: Option<u64>,
        workers: usize,
    ) -> Bounds {
        let wanted = max_websockets.saturating_add(max_http);
        let served = match fd_limit {
            Some(limit) => {
                let fit = limit.saturating_sub(FIXED_FDS + REFUSAL_ROOM as u64);
                wanted
                    .min(usize::try_from(fit).unwrap_or(usize::MAX))
                    .max(1)
            }
            None => wanted,
        };
        let accepted = served.saturating_add(REFUSAL_ROOM);
        Bounds {
            served,
            per_worker: accepted.div_ceil(workers.max(1)),
        }
    }
}

impl ConnFd {
    /// An owned duplicate of the connection's socket, if the descriptor still refers to it.
    pub fn duplicate(&self) -> io::Result<ConnHandle> {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on any number is memory-safe: it fails with EBADF if
        // the number is not open, and otherwise returns a new descriptor that we then own.
        let new = unsafe { libc::fcntl(self.fd, libc::F_DUPFD_CLOEXEC, 0) };
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `new` was just returned by fcntl and nothing else owns it.
        let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(new) });
        match stream.peer_addr() {
            Ok(peer) if peer == self.peer => Ok(ConnHandle {
                stream,
                cut: Arc::clone(&self.cut),
            }),
            _ => Err(io::Error::other(
                "descriptor now belongs to another connection",
            )),
        }
    }

    /// Whether `ChatServer` cut this connection (a slow consumer that never took its close
    /// frame).
    pub fn was_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }
}

/// An owned duplicate of a connection's socket.
#[derive(Debug)]
pub struct ConnHandle {
    stream: TcpStream,
    cut: Arc<AtomicBool>,
}

impl ConnHandle {
    /// Shuts the connection down in both directions; the peer sees it end. Marked first, so
    /// the session that sees its connection end knows why.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.shut();
    }

    fn shut(&self) {
        if let Err(e) = self.stream.shutdown(Shutdown::Both) {
            log::debug!("shut connection: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_connections_and_mark_those_past_the_bound() {
        let limit = ConnLimit::new(2);
        let a = limit.take_slot();
        let b = limit.take_slot();
        let c = limit.take_slot();
        assert_eq!(limit.open(), 3);
        assert_eq!(
            [a.over_bound(), b.over_bound(), c.over_bound()],
            [false, false, true]
        );
        drop(a);
        drop(c);
        assert_eq!(limit.open(), 1);
        assert!(!limit.take_slot().over_bound());
        assert_eq!(limit.open(), 1, "the temporary slot was given back");
    }

    #[test]
    fn bounds_stay_below_the_open_file_limit() {
        // Plenty of descriptors: the flags decide.
        let b = Bounds::new(1000, 100, Some(1 << 20), 2);
        assert_eq!(b.served, 1100);
        assert_eq!(b.per_worker, (1100 + REFUSAL_ROOM).div_ceil(2));
        // ulimit -n 1200: served and accepted connections leave descriptors to spare.
        for workers in [1, 2, 3, 8] {
            let b = Bounds::new(944, 128, Some(1200), workers);
            assert!(b.served <= 944 + 128);
            let accepted = (b.per_worker * workers) as u64;
            assert!(
                accepted + FIXED_FDS <= 1200 + workers as u64,
                "{workers} workers: {b:?}"
            );
        }
        // Unknown limit; no workers count as one.
        assert_eq!(
            Bounds::new(20, 5, None, 0),
            Bounds {
                served: 25,
                per_worker: 25 + REFUSAL_ROOM
            }
        );
    }
}
