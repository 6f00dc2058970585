//! The wall clock the store measures time by: when a stored notification expires, how old a
//! message is for age-based retention, the `ts_ms` a message is stored with.
//!
//! The system clock, except in tests, which hold a [`ManualClock`] and move it forward
//! instead of sleeping. It travels to the store thread inside [`super::Retention`] (so
//! `Config::retention` carries it), and the store thread reads it once per batch and once per
//! retention pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Unix milliseconds, from the system or from a [`ManualClock`].
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(ManualClock),
}

impl Clock {
    /// Unix milliseconds now.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => super::now_ms(),
            Clock::Manual(m) => m.now_ms(),
        }
    }
}

/// Two clocks are equal when they read the same time source.
impl PartialEq for Clock {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Clock::System, Clock::System) => true,
            (Clock::Manual(a), Clock::Manual(b)) => Arc::ptr_eq(&a.0, &b.0),
            _ => false,
        }
    }
}

impl Eq for Clock {}

/// A clock that stands still until it is moved; clones share the time. For tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// Stands at `start_ms` (Unix milliseconds).
    pub fn at(start_ms: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start_ms)))
    }

    /// Stands at the system's time now, so what is stored carries a plausible time.
    pub fn starting_now() -> Self {
        Self::at(super::now_ms())
    }

    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Moves the time forward by `by` (whole milliseconds).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(ms))
            })
            .expect("the update always returns Some");
    }
}

impl From<ManualClock> for Clock {
    fn from(m: ManualClock) -> Self {
        Clock::Manual(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_its_clones_follow() {
        let hand = ManualClock::at(1_000);
        let clock = Clock::from(hand.clone());
        assert_eq!(clock.now_ms(), 1_000);
        hand.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_ms(), 2_500);
        hand.advance(Duration::MAX);
        assert_eq!(clock.now_ms(), i64::MAX, "saturates");
        assert_eq!(clock, Clock::from(hand));
        assert_ne!(clock, Clock::from(ManualClock::at(1_000)));
        assert!(Clock::System.now_ms() > 1_600_000_000_000);
    }
}
