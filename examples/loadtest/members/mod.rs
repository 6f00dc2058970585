//! Room members as the `fanout` and `flood` scenarios run them: one task per socket that
//! joins a room, reads it until it has every message, and (for a sender) has a writer task
//! beside it (`sending.rs`).
//!
//! The scenario's main task publishes the run's [`Phase`] on a watch channel: `Setup` while
//! the members join, then `Go` with the [`Schedule`] (or `Abort` when nobody joined). Each
//! member joins through [`join`] (`join.rs`), checks every `chat` it reads with a
//! [`ChatCheck`] (`chats.rs`), and stops once its room's last accepted `seq`, kept in the
//! room's [`RoomSeqs`] (`room.rs`), is known and seen, or at the hard deadline. The main
//! task then takes the members' outcomes with [`collect`].
//!
//! What differs between the scenarios (who sends and how, what is measured, when a member
//! has everything) stays in the scenario; this module holds only what both do the same way.

mod chats;
mod join;
mod room;

pub use chats::{ChatCheck, ChatCounts, count_error};
pub use join::{Setup, SetupOutcome, join};
pub use room::RoomSeqs;

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Sleep;

use crate::progress::Progress;

/// When things happen, fixed when the run starts.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub stop: Instant,
    /// Stop + drain grace: everything ends here.
    pub hard: Instant,
}

/// Where the run is, as the main task publishes it to the members.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// Members are joining; nothing is sent yet.
    Setup,
    /// The run has started, on this schedule.
    Go(Schedule),
    /// Nobody joined: every member stops.
    Abort,
}

/// "Not known yet" for the atomics holding a `seq` or a time.
pub const UNKNOWN: u64 = u64::MAX;

/// Waits until the setup is over: the run started or was aborted (or the main task is gone).
pub async fn setup_over(mut go: watch::Receiver<Phase>) {
    let _ = go.wait_for(|p| !matches!(p, Phase::Setup)).await;
}

/// Waits until the setup is over: the schedule when the run started, `None` when it was
/// aborted (or the main task is gone). What a writer task does before it sends.
pub async fn started(go: &mut watch::Receiver<Phase>) -> Option<Schedule> {
    match *go.wait_for(|p| !matches!(p, Phase::Setup)).await.ok()? {
        Phase::Go(s) => Some(s),
        _ => None,
    }
}

/// A read loop's view of the phase: each change until the run starts or the channel closes,
/// then nothing more.
///
/// In a `select!`, guard the branch with [`PhaseWatch::watching`], so that once the run is
/// under way the read loop does not even build the future.
pub struct PhaseWatch {
    go: watch::Receiver<Phase>,
    watching: bool,
}

impl PhaseWatch {
    pub fn new(go: watch::Receiver<Phase>) -> PhaseWatch {
        PhaseWatch { go, watching: true }
    }

    /// Whether a change can still come.
    pub fn watching(&self) -> bool {
        self.watching
    }

    /// The next phase; `None` when the main task is gone. After `Go` or `None`,
    /// [`PhaseWatch::watching`] is false.
    pub async fn next(&mut self) -> Option<Phase> {
        if self.go.changed().await.is_err() {
            self.watching = false;
            return None;
        }
        let phase = *self.go.borrow_and_update();
        if matches!(phase, Phase::Go(_)) {
            self.watching = false;
        }
        Some(phase)
    }
}

/// A read loop's deadline until the schedule is known: an upper bound on any run, reset to
/// the hard deadline on `Go`.
pub fn until_scheduled() -> Sleep {
    tokio::time::sleep_until((Instant::now() + Duration::from_secs(3600 * 2)).into())
}

/// Takes the member tasks' outcomes (any scenario's, `idle` too), waiting for none past
/// `guard`; a task that panicked or had to be aborted is counted in the second value
/// (stuck). With `progress`, shows how many were taken, every 256.
pub async fn collect<T>(
    handles: Vec<JoinHandle<T>>,
    guard: Instant,
    progress: Option<&Progress>,
) -> (Vec<T>, u64) {
    let mut outcomes = Vec::with_capacity(handles.len());
    let mut stuck = 0u64;
    for (i, mut h) in handles.into_iter().enumerate() {
        match tokio::time::timeout_at(guard.into(), &mut h).await {
            Ok(Ok(o)) => outcomes.push(o),
            Ok(Err(_)) => stuck += 1,
            Err(_) => {
                h.abort();
                stuck += 1;
            }
        }
        if let Some(p) = progress
            && i % 256 == 0
        {
            p.set(i as u64, String::new());
        }
    }
    (outcomes, stuck)
}
