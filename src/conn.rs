//! Per-connection socket settings, and a way to cut a connection whose session actor no
//! longer runs.
//!
//! actix-web polls a WebSocket session actor only while the connection's write buffer has
//! room. A client that stops reading therefore freezes its own actor: the actor cannot close
//! itself, and a close frame queued for it is never written. `ChatServer` notices such a
//! session (its bounded mailbox is full), stops sending to it, and after a grace period shuts
//! the socket down. The shutdown wakes actix-web's connection task, which then fails its
//! write, drops the actor and closes the connection.
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
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use actix_web::dev::Extensions;

/// An accepted connection's descriptor number and peer, recorded by [`on_connect`].
#[derive(Debug, Clone, Copy)]
pub struct ConnFd {
    fd: RawFd,
    peer: SocketAddr,
}

/// `HttpServer::on_connect` hook: sets `TCP_NODELAY` (small frames must not wait for Nagle's
/// algorithm and the peer's delayed ACK: that costs tens of milliseconds per round trip) and
/// records the descriptor for the WebSocket handlers.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Err(e) = tcp.set_nodelay(true) {
            log::debug!("TCP_NODELAY: {e}");
        }
        if let Ok(peer) = tcp.peer_addr() {
            ext.insert(ConnFd {
                fd: tcp.as_raw_fd(),
                peer,
            });
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
            Ok(peer) if peer == self.peer => Ok(ConnHandle(stream)),
            _ => Err(io::Error::other(
                "descriptor now belongs to another connection",
            )),
        }
    }
}

/// An owned duplicate of a connection's socket.
#[derive(Debug)]
pub struct ConnHandle(TcpStream);

impl ConnHandle {
    /// Shuts the connection down in both directions; the peer sees it end.
    pub fn cut(&self) {
        if let Err(e) = self.0.shutdown(Shutdown::Both) {
            log::debug!("cut connection: {e}");
        }
    }
}
