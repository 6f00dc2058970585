//! Measurement sinks shared by the connection tasks, built so that recording stays cheap when
//! hundreds of tasks on several threads record at once.
//!
//! - [`LatencySink`]: HdrHistograms (1 µs .. 60 s, 3 significant digits) in a few
//!   mutex-protected shards. A task never records a single value into it: it fills a small
//!   local buffer ([`LatencyBatch`]) and hands it over when full, so a shard lock is taken once
//!   per 128 deliveries, and tasks spread over the shards by index. A histogram of that range
//!   is ~200 KB, so one per connection would not be "small per-connection state".
//! - [`Timeline`]: one atomic counter per second since the run's start, for the
//!   deliveries-per-second chart. Tasks count locally and add once per second they saw (or
//!   per 256 events).
//! - [`Percentiles`] and [`log_buckets`] turn a histogram into the report's numbers and the
//!   HTML chart's log-scaled buckets.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest value kept, in microseconds (60 s); larger ones are clamped to it.
pub const MAX_US: u64 = 60_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Sharded histograms; see the module docs.
pub struct LatencySink {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl LatencySink {
    pub fn new(shards: usize) -> LatencySink {
        LatencySink {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    /// Records microsecond values (clamped to 1 µs .. 60 s).
    pub fn record(&self, key: usize, values_us: &[u64]) {
        if values_us.is_empty() {
            return;
        }
        let shard = &self.shards[key % self.shards.len()];
        let mut h = match shard.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        for &v in values_us {
            h.saturating_record(v.clamp(1, MAX_US));
        }
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for s in &self.shards {
            let h = match s.lock() {
                Ok(h) => h,
                Err(poisoned) => poisoned.into_inner(),
            };
            // Same bounds everywhere, so adding cannot fail.
            let _ = all.add(&*h);
        }
        all
    }
}

/// A task's local buffer in front of a [`LatencySink`].
pub struct LatencyBatch {
    key: usize,
    values: Vec<u64>,
}

impl LatencyBatch {
    const CAP: usize = 128;

    pub fn new(key: usize) -> LatencyBatch {
        LatencyBatch {
            key,
            values: Vec::new(),
        }
    }

    pub fn push(&mut self, sink: &LatencySink, us: u64) {
        if self.values.capacity() == 0 {
            self.values.reserve_exact(Self::CAP);
        }
        self.values.push(us);
        if self.values.len() == Self::CAP {
            self.flush(sink);
        }
    }

    pub fn flush(&mut self, sink: &LatencySink) {
        sink.record(self.key, &self.values);
        self.values.clear();
    }
}

/// Events per second since a start time that is set once the run starts.
pub struct Timeline {
    start_ns: AtomicU64,
    buckets: Vec<AtomicU64>,
    total: AtomicU64,
}

impl Timeline {
    pub fn new(seconds: usize) -> Timeline {
        Timeline {
            start_ns: AtomicU64::new(u64::MAX),
            buckets: (0..seconds.max(1)).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
        }
    }

    /// Sets the start (nanoseconds since the tool's epoch); events before it are not counted.
    pub fn start_at(&self, ns: u64) {
        self.start_ns.store(ns, Ordering::Release);
    }

    /// The second (since the start) that `now_ns` falls in, if the run has started.
    pub fn second_of(&self, now_ns: u64) -> Option<u64> {
        let start = self.start_ns.load(Ordering::Acquire);
        (now_ns >= start).then(|| (now_ns - start) / 1_000_000_000)
    }

    pub fn add(&self, second: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.total.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = usize::try_from(second)
            .ok()
            .and_then(|s| self.buckets.get(s))
        {
            b.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Everything added so far (for the live rate).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The buckets up to `seconds` (the run's length, rounded up).
    pub fn snapshot(&self, seconds: usize) -> Vec<u64> {
        self.buckets
            .iter()
            .take(seconds)
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// A task's local counter in front of a [`Timeline`]: adds once per second seen, or per 256
/// events.
#[derive(Default)]
pub struct TimelineBatch {
    second: u64,
    count: u64,
}

impl TimelineBatch {
    pub fn count(&mut self, tl: &Timeline, now_ns: u64) {
        let Some(sec) = tl.second_of(now_ns) else {
            return;
        };
        if sec != self.second {
            self.flush(tl);
            self.second = sec;
        }
        self.count += 1;
        // Also every so often within a second, so that the live rate keeps up.
        if self.count == 256 {
            self.flush(tl);
        }
    }

    pub fn flush(&mut self, tl: &Timeline) {
        tl.add(self.second, self.count);
        self.count = 0;
    }
}

/// A histogram's summary, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One bar of the latency chart: values in `[lo_us, hi_us)`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bucket {
    pub lo_us: f64,
    pub hi_us: f64,
    pub count: u64,
}

/// Buckets per factor of ten.
const PER_DECADE: f64 = 10.0;

/// Log-scaled buckets (ten per decade) from the histogram's smallest to largest value.
pub fn log_buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    let index = |v: u64| ((v.max(1) as f64).log10() * PER_DECADE).floor() as usize;
    let (lo, hi) = (index(h.min()), index(h.max()));
    let mut counts = vec![0u64; hi - lo + 1];
    for v in h.iter_recorded() {
        let i = index(v.value_iterated_to()).clamp(lo, hi) - lo;
        counts[i] += v.count_at_value();
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, count)| {
            let k = (lo + i) as f64;
            Bucket {
                lo_us: 10f64.powf(k / PER_DECADE),
                hi_us: 10f64.powf((k + 1.0) / PER_DECADE),
                count,
            }
        })
        .collect()
}

/// `1234` µs → `1.23ms`.
pub fn fmt_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1_000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

/// `123456789` bytes → `117.7 MiB`.
pub fn fmt_bytes(b: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_merges_shards_and_clamps() {
        let sink = LatencySink::new(3);
        let mut b = LatencyBatch::new(1);
        for v in 0..200u64 {
            b.push(&sink, v * 10);
        }
        b.flush(&sink);
        sink.record(2, &[u64::MAX]);
        let h = sink.merged();
        assert_eq!(h.len(), 201);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_US - MAX_US / 1000);
    }

    #[test]
    fn buckets_cover_every_value() {
        let mut h = new_histogram();
        for v in [1u64, 5, 50, 500, 5_000, 5_000, 60_000_000] {
            h.record(v).unwrap();
        }
        let b = log_buckets(&h);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 7);
        assert!(b.first().unwrap().lo_us <= 1.0);
        assert!(b.last().unwrap().hi_us >= 60_000_000.0);
    }

    #[test]
    fn timeline_counts_per_second() {
        let tl = Timeline::new(3);
        let mut b = TimelineBatch::default();
        b.count(&tl, 5); // before the start: ignored
        tl.start_at(1_000_000_000);
        for ns in [
            1_000_000_000u64,
            1_500_000_000,
            2_100_000_000,
            9_000_000_000,
        ] {
            b.count(&tl, ns);
        }
        b.flush(&tl);
        assert_eq!(tl.snapshot(3), vec![2, 1, 0]);
        assert_eq!(tl.total(), 4); // the late one counts in the total only
    }
}
