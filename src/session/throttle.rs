//! A throttle for what a misbehaving client could otherwise make a session repeat without
//! end: warnings about its bad frames in the log, error frames answering its refused
//! messages. Pure, with the clock passed in.

use std::time::{Duration, Instant};

/// Lets one event through per interval and counts the ones it holds back in between.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    /// When an event last went through.
    last: Option<Instant>,
    /// Events held back since then.
    held: u64,
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Report it, with the `held` events before it that were not reported.
    Pass { held: u64 },
    /// Hold it back. `first`: the first held since the last report; a caller that wants
    /// every event reported in the end schedules a [`Throttle::flush`] at `until`.
    Hold { first: bool, until: Instant },
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            last: None,
            held: 0,
        }
    }

    /// An event at `now`.
    pub fn event(&mut self, now: Instant) -> Verdict {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.held += 1;
                Verdict::Hold {
                    first: self.held == 1,
                    until: last + self.interval,
                }
            }
            _ => {
                self.last = Some(now);
                Verdict::Pass {
                    held: std::mem::take(&mut self.held),
                }
            }
        }
    }

    /// Reports, at `now`, the events held back: returns how many (0: nothing to report, and
    /// nothing changes). A report counts as the interval's one event.
    pub fn flush(&mut self, now: Instant) -> u64 {
        let held = std::mem::take(&mut self.held);
        if held > 0 {
            self.last = Some(now);
        }
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_event_per_interval_goes_through_with_the_count_held_before_it() {
        let t0 = Instant::now();
        let mut t = Throttle::new(100 * MS);
        assert_eq!(t.event(t0), Verdict::Pass { held: 0 });
        let until = t0 + 100 * MS;
        assert_eq!(t.event(t0 + MS), Verdict::Hold { first: true, until });
        assert_eq!(
            t.event(t0 + 50 * MS),
            Verdict::Hold {
                first: false,
                until
            }
        );
        assert_eq!(
            t.event(t0 + 99 * MS),
            Verdict::Hold {
                first: false,
                until
            }
        );
        assert_eq!(t.event(t0 + 100 * MS), Verdict::Pass { held: 3 });
        assert_eq!(
            t.event(t0 + 150 * MS),
            Verdict::Hold {
                first: true,
                until: t0 + 200 * MS
            }
        );
    }

    #[test]
    fn a_flush_reports_what_was_held_and_starts_an_interval() {
        let t0 = Instant::now();
        let mut t = Throttle::new(100 * MS);
        assert_eq!(t.flush(t0), 0, "nothing held");
        assert_eq!(t.event(t0), Verdict::Pass { held: 0 });
        t.event(t0 + MS);
        t.event(t0 + 2 * MS);
        assert_eq!(t.flush(t0 + 100 * MS), 2);
        assert_eq!(t.flush(t0 + 100 * MS), 0);
        // The flush was the interval's report: the next event within it is held.
        assert_eq!(
            t.event(t0 + 150 * MS),
            Verdict::Hold {
                first: true,
                until: t0 + 200 * MS
            }
        );
        assert_eq!(t.event(t0 + 200 * MS), Verdict::Pass { held: 1 });
    }

    #[test]
    fn a_clock_that_goes_backwards_holds_rather_than_panics() {
        let t0 = Instant::now() + 10 * MS;
        let mut t = Throttle::new(100 * MS);
        t.event(t0);
        assert!(matches!(t.event(t0 - 5 * MS), Verdict::Hold { .. }));
    }
}
