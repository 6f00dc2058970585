//! Each session's outbound frames, gathered while `ChatServer` works through its mailbox and
//! handed over in one piece when the mailbox is empty.
//!
//! Sending each frame to each recipient as its own actor message costs two allocations per
//! delivery (the envelope and the queue node), made on `ChatServer`'s thread and freed on a
//! worker's: in a profile of a busy room, the allocator was the largest cost. Gathering costs
//! nothing in latency: actix polls an actor's spawned futures only after its mailbox is
//! drained, so the flush runs as soon as there is nothing else to do. Under load, one flush
//! carries every frame a session got from many messages; when idle, each frame goes at once.
//!
//! Every frame for a session goes through its outbox, in order, so gathering cannot reorder
//! them.

use std::cell::RefCell;
use std::rc::Rc;

use actix::prelude::*;

use super::messages::{Backlog, Outbound};
use crate::ids::SessionId;
use crate::protocol::Frame;

/// One session's mailbox address and the frames waiting for the next flush.
#[derive(Debug)]
pub struct Outbox {
    addr: Recipient<Outbound>,
    /// Frames in the session's mailbox, not yet written.
    backlog: Backlog,
    /// Frames queued since the last flush, oldest first.
    pending: RefCell<Vec<Frame>>,
}

impl Outbox {
    pub fn new(addr: Recipient<Outbound>, backlog: Backlog) -> Rc<Outbox> {
        Rc::new(Outbox {
            addr,
            backlog,
            pending: RefCell::new(Vec::new()),
        })
    }

    /// Orders the session to close, dropping what is still gathered. `do_send` ignores the
    /// mailbox bound, so the order gets through even to a slow consumer.
    pub fn close(&self, code: u16, reason: &'static str) {
        self.pending.borrow_mut().clear();
        self.addr.do_send(Outbound::Close { code, reason });
    }
}

/// The outboxes holding frames, in the order they first got one.
#[derive(Debug, Default)]
pub struct Outboxes {
    dirty: Vec<(SessionId, Rc<Outbox>)>,
}

impl Outboxes {
    /// Queues `frame` for the session behind `outbox`.
    pub fn queue(&mut self, session: SessionId, outbox: &Rc<Outbox>, frame: Frame) {
        let mut pending = outbox.pending.borrow_mut();
        if pending.is_empty() {
            self.dirty.push((session, Rc::clone(outbox)));
        }
        pending.push(frame);
    }

    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty()
    }

    /// Hands every outbox's frames to its session, one mailbox item each. A session whose
    /// backlog would pass `max_pending` frames gets nothing and is returned as a slow
    /// consumer. Returns the slow consumers.
    pub fn flush(&mut self, max_pending: usize) -> Vec<SessionId> {
        let mut slow = Vec::new();
        for (session, outbox) in self.dirty.drain(..) {
            let mut pending = outbox.pending.borrow_mut();
            let n = pending.len();
            if n == 0 {
                continue; // cleared by `close`
            }
            if outbox.backlog.get() + n > max_pending {
                pending.clear();
                slow.push(session);
                continue;
            }
            let msg = match n {
                // A lone frame leaves the Vec (and its capacity) in place for next time.
                1 => Outbound::Frame(pending.pop().expect("length is 1")),
                _ => Outbound::Batch(std::mem::take(&mut *pending)),
            };
            drop(pending);
            match outbox.addr.try_send(msg) {
                Ok(()) => outbox.backlog.add(n),
                Err(SendError::Full(_)) => slow.push(session),
                // Stopped: its Disconnect is queued behind its last requests.
                Err(SendError::Closed(_)) => {}
            }
        }
        slow
    }
}
