//! Each session's outbound frames, gathered while `ChatServer` works through its mailbox and
//! handed over in one piece at the next flush.
//!
//! Sending each frame to each recipient as its own actor message costs two allocations per
//! delivery (the envelope and the queue node), made on `ChatServer`'s thread and freed on a
//! worker's: in a profile of a busy room, the allocator was the largest cost. Gathering costs
//! nothing in latency: actix polls an actor's spawned futures only after its mailbox is
//! drained, so the flush runs as soon as there is nothing else to do; under a flood that
//! never drains the mailbox, `ChatServer` flushes every so many messages instead.
//!
//! Every frame for a session goes through its outbox, in order, and so does a close order
//! (kick, shutdown): it goes after the frames gathered before it, so gathering cannot
//! reorder them. Every flush checks every session it hands frames to against the queue
//! bound, in frames and in bytes.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use actix::prelude::*;

use super::messages::{Backlog, Outbound};
use crate::ids::SessionId;
use crate::protocol::Frame;

/// How much may wait for one session, handed over and not yet written: past either bound it
/// is a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBound {
    pub frames: usize,
    pub bytes: usize,
}

/// One session's mailbox address and what waits for the next flush.
#[derive(Debug)]
pub struct Outbox {
    addr: Recipient<Outbound>,
    /// What the session has in its mailbox, not yet written.
    backlog: Backlog,
    /// Frames queued since the last flush, oldest first.
    pending: RefCell<Vec<Frame>>,
    /// Their bytes.
    pending_bytes: Cell<usize>,
    /// A close order to send after the pending frames.
    close: Cell<Option<(u16, &'static str)>>,
    /// In the flush list.
    dirty: Cell<bool>,
}

impl Outbox {
    pub fn new(addr: Recipient<Outbound>, backlog: Backlog) -> Rc<Outbox> {
        Rc::new(Outbox {
            addr,
            backlog,
            pending: RefCell::new(Vec::new()),
            pending_bytes: Cell::new(0),
            close: Cell::new(None),
            dirty: Cell::new(false),
        })
    }

    /// Orders the session to close now, dropping what is still gathered. `do_send` ignores
    /// the mailbox bound, so the order gets through even to a slow consumer, behind what its
    /// mailbox already holds.
    pub fn close_now(&self, code: u16, reason: &'static str) {
        self.pending.borrow_mut().clear();
        self.pending_bytes.set(0);
        self.close.set(None);
        self.addr.do_send(Outbound::Close { code, reason });
    }

    /// Bytes waiting for this session: handed over and not written, plus gathered.
    pub fn queued_bytes(&self) -> usize {
        self.backlog.bytes() + self.pending_bytes.get()
    }

    /// What waits for the session, for logs: frames and bytes handed over and not written,
    /// and how long since it last wrote.
    pub fn backlog_state(&self) -> (usize, usize, std::time::Duration) {
        (
            self.backlog.frames(),
            self.backlog.bytes(),
            self.backlog.since_progress(),
        )
    }

    /// Whether the session wrote to its socket within `within` (or was first fed then).
    pub fn progressing(&self, within: std::time::Duration) -> bool {
        self.backlog.since_progress() <= within
    }
}

/// The outboxes holding frames or a close order, in the order they first got one.
#[derive(Debug, Default)]
pub struct Outboxes {
    dirty: Vec<(SessionId, Rc<Outbox>)>,
    /// Frames gathered since the last flush, over all outboxes.
    frames: usize,
}

impl Outboxes {
    fn mark(&mut self, session: SessionId, outbox: &Rc<Outbox>) {
        if !outbox.dirty.replace(true) {
            self.dirty.push((session, Rc::clone(outbox)));
        }
    }

    /// Queues `frame` for the session behind `outbox`.
    pub fn queue(&mut self, session: SessionId, outbox: &Rc<Outbox>, frame: Frame) {
        self.mark(session, outbox);
        outbox
            .pending_bytes
            .set(outbox.pending_bytes.get() + frame.len());
        outbox.pending.borrow_mut().push(frame);
        self.frames += 1;
    }

    /// Frames gathered since the last flush.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Orders the session closed after what is gathered for it.
    pub fn close(
        &mut self,
        session: SessionId,
        outbox: &Rc<Outbox>,
        code: u16,
        reason: &'static str,
    ) {
        self.mark(session, outbox);
        outbox.close.set(Some((code, reason)));
    }

    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty()
    }

    /// Hands every outbox's frames to its session, one mailbox item each, then its close
    /// order if it has one. A session whose backlog would pass `bound` gets nothing and is
    /// returned as a slow consumer, unless it is being closed anyway: then its frames are
    /// dropped and the close goes. Returns the slow consumers.
    pub fn flush(&mut self, bound: QueueBound) -> Vec<SessionId> {
        let mut slow = Vec::new();
        self.frames = 0;
        for (session, outbox) in self.dirty.drain(..) {
            outbox.dirty.set(false);
            let close = outbox.close.take();
            let frames = std::mem::take(&mut *outbox.pending.borrow_mut());
            let bytes = outbox.pending_bytes.replace(0);
            let n = frames.len();
            if n > 0 {
                let over = outbox.backlog.frames() + n > bound.frames
                    || outbox.backlog.bytes() + bytes > bound.bytes;
                let msg = match n {
                    _ if over => None,
                    1 => frames.into_iter().next().map(Outbound::Frame),
                    _ => Some(Outbound::Batch(frames)),
                };
                match msg.map(|m| outbox.addr.try_send(m)) {
                    Some(Ok(())) => outbox.backlog.handed(n, bytes),
                    // Stopped: its Disconnect is queued behind its last requests.
                    Some(Err(SendError::Closed(_))) => continue,
                    None | Some(Err(SendError::Full(_))) if close.is_none() => {
                        slow.push(session);
                        continue;
                    }
                    None | Some(Err(SendError::Full(_))) => {}
                }
            }
            if let Some((code, reason)) = close {
                outbox.addr.do_send(Outbound::Close { code, reason });
            }
        }
        slow
    }
}
