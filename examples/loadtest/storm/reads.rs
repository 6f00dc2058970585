//! The store's reads, from the server's `roomcast_store_reads_total`, read from `/metrics`
//! every 250 ms over the whole run.
//!
//! Each server process counts from 0: readings are kept only outside restarts (from the
//! signal to the new process's `listening on`), and the first after a restart is the new
//! process's whole count. [`Sampler::window`] gives the reads between two instants and their peak
//! rate over any second; [`Sampler::finish`] the reads in each second of the run.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Shared;
use crate::Ctx;
use crate::report::TimelineSection;

const EVERY: Duration = Duration::from_millis(250);
const METRIC: &str = "roomcast_store_reads_total";

/// The store's reads in a window of the run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StoreReads {
    pub reads: u64,
    /// `reads` over the window's length.
    pub per_sec_avg: f64,
    /// The most reads in any one second of the window.
    pub per_sec_peak: f64,
}

pub struct Sampler {
    /// (when, reads since the run started, over every process).
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Reads `/metrics` until [`Sampler::finish`]. A reading is kept only when no restart
    /// was under way while it was taken (`sh.restart_no` = `sh.started`): the first one after
    /// a restart is the new process's count.
    pub fn start(ctx: &Ctx, sh: Arc<Shared>) -> Sampler {
        let samples: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
        let (http, url) = (ctx.http.clone(), ctx.target.http_url("/metrics"));
        let out = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            let (mut total, mut last, mut process) = (0u64, 0u64, 0usize);
            let settled = || {
                let started = sh.started.load(Ordering::SeqCst);
                (sh.restart_no.load(Ordering::SeqCst) == started).then_some(started)
            };
            loop {
                tick.tick().await;
                let Some(before) = settled() else { continue };
                let reading = async {
                    let resp = http.get(&url).timeout(EVERY * 4).send().await.ok()?;
                    parse(&resp.text().await.ok()?)
                };
                let Some(v) = reading.await else { continue };
                if settled() != Some(before) {
                    continue;
                }
                total += if before != process {
                    v
                } else {
                    v.saturating_sub(last)
                };
                (last, process) = (v, before);
                if let Ok(mut s) = out.lock() {
                    s.push((Instant::now(), total));
                }
            }
        });
        Sampler { samples, task }
    }

    fn snapshot(&self) -> Vec<(Instant, u64)> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The reads from `from` to `to` (waits for the reading after `to`).
    pub async fn window(&self, from: Instant, to: Instant) -> StoreReads {
        tokio::time::sleep_until((to + EVERY + EVERY / 2).into()).await;
        let s = self.snapshot();
        let at = |t: Instant| {
            s.iter()
                .take_while(|&&(when, _)| when <= t)
                .last()
                .map_or(0, |&(_, n)| n)
        };
        let reads = at(to + EVERY).saturating_sub(at(from));
        let secs = to.saturating_duration_since(from).as_secs_f64().max(0.001);
        let mut peak: f64 = 0.0;
        for &(t, n) in s.iter().filter(|&&(t, _)| t > from && t <= to + EVERY) {
            let before = t.checked_sub(Duration::from_secs(1)).unwrap_or(t);
            let then = at(before.max(from));
            peak = peak.max(n.saturating_sub(then) as f64);
        }
        StoreReads {
            reads,
            per_sec_avg: reads as f64 / secs,
            per_sec_peak: peak,
        }
    }

    /// Stops sampling; the reads in each second since `start`.
    pub async fn finish(self, start: Instant) -> TimelineSection {
        self.task.abort();
        let s = self.snapshot();
        let end = s.last().map_or(start, |&(t, _)| t);
        let seconds = end.saturating_duration_since(start).as_secs() as usize + 1;
        let mut per_second = vec![0u64; seconds];
        let mut prev = s
            .iter()
            .take_while(|&&(t, _)| t <= start)
            .last()
            .map_or(0, |&(_, n)| n);
        for &(t, n) in s.iter().filter(|&&(t, _)| t > start) {
            let sec = t.duration_since(start).as_secs() as usize;
            if let Some(b) = per_second.get_mut(sec) {
                *b += n.saturating_sub(prev);
            }
            prev = n;
        }
        TimelineSection {
            what: "store reads (roomcast_store_reads_total)".to_string(),
            per_second,
            measure_from_s: 0.0,
            measure_to_s: seconds as f64,
        }
    }
}

/// `roomcast_store_reads_total` in Prometheus text.
fn parse(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(METRIC)?.strip_prefix(' ')?;
        v.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_counter_is_read_from_prometheus_text() {
        let text = "# HELP roomcast_store_reads_total x\n# TYPE roomcast_store_reads_total counter\nroomcast_store_reads_total 42\n";
        assert_eq!(super::parse(text), Some(42));
        assert_eq!(super::parse("roomcast_store_reads_totalx 1\n"), None);
    }
}
