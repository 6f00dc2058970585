//! A handle on a session's TCP connection, so a connection can be cut when its session actor
//! no longer runs.
//!
//! actix-web polls a WebSocket session actor only while the connection's write buffer has
//! room. A client that stops reading therefore freezes its own actor: the actor cannot close
//! itself, and a close frame queued for it is never written. `ChatServer` notices such a
//! session (its bounded mailbox is full), stops sending to it, and after a grace period shuts
//! the socket down through this handle. The shutdown wakes actix-web's connection task, which
//! then fails its write, drops the actor and closes the connection.
//!
//! The handle owns a duplicate of the socket's file descriptor, taken while a request on that
//! connection is being served (so the descriptor is certainly open and is this connection's).
//! Owning a duplicate means the descriptor number can never be reused by another connection
//! while `ChatServer` still holds the handle. Cost: one file descriptor per WebSocket.

use std::any::Any;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use actix_web::dev::Extensions;

/// The raw descriptor of an accepted connection, recorded by [`record_fd`] for the handlers.
#[derive(Debug, Clone, Copy)]
pub struct ConnFd(RawFd);

/// `HttpServer::on_connect` hook: remembers each TCP connection's descriptor.
pub fn record_fd(conn: &dyn Any, ext: &mut Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        ext.insert(ConnFd(tcp.as_raw_fd()));
    }
}

impl ConnFd {
    /// Duplicates the descriptor. Call only while serving a request on this connection.
    pub fn handle(&self) -> io::Result<ConnHandle> {
        // SAFETY: `ConnFd` is read from the extensions of a request that is being served on
        // this very connection, so the descriptor is open and belongs to it for the duration
        // of this call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.0) };
        Ok(ConnHandle(TcpStream::from(fd.try_clone_to_owned()?)))
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
