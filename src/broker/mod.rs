//! The seam for fan-out across nodes.
//!
//! `ChatServer` delivers every room frame to its own local members directly and then hands
//! the same encoded bytes to the broker, whose job is to get them to the members that other
//! nodes hold. A single node has no one else to tell, so [`LocalBroker`] does nothing; a
//! Redis broker (pub/sub per room, with frames from other nodes coming back into
//! `ChatServer` as messages) implements the same trait, chosen by configuration.

use crate::ids::RoomId;
use crate::protocol::Frame;

pub trait Broker: Send {
    /// Called once per room frame after local delivery. Must not block.
    fn publish(&mut self, room: &RoomId, frame: &Frame);
}

/// The single-node broker: every member is local, so there is nothing to forward.
#[derive(Debug, Default)]
pub struct LocalBroker;

impl Broker for LocalBroker {
    fn publish(&mut self, _room: &RoomId, _frame: &Frame) {}
}
