//! The server's process (`--server-pid`) and the tool's own: the check that the PID is the
//! server being loaded, and its CPU time and resident memory over the run.
//!
//! Reading `/proc` is `roomcast::procfs`'s job (CPU time is `utime + stime`, assuming
//! [`procfs::CLK_TCK`] ticks per second; RSS is `VmRSS`); this module keeps what the tool does
//! with the readings. [`Sampler`] reads the server every 250 ms on a tokio task, keeping the
//! first reading, the peak RSS, the latest, and a per-second series (CPU % and RSS) for the
//! HTML report.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use roomcast::procfs::{self, Pid};
use serde::Serialize;

pub use roomcast::procfs::Sample as ProcSample;

/// How often the sampler reads `/proc`.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

pub fn sample_pid(pid: u32) -> std::io::Result<ProcSample> {
    procfs::sample(Pid::Of(pid))
}

/// This process's CPU time and RSS (zeros if `/proc` cannot be read).
pub fn sample_self() -> ProcSample {
    procfs::sample(Pid::Current).unwrap_or_default()
}

/// This process's peak RSS (`VmHWM`), in bytes (0 if unknown).
pub fn self_peak_rss() -> u64 {
    procfs::peak_rss_bytes(Pid::Current).unwrap_or(0)
}

/// This process's soft limit on open files.
pub fn open_files_limit() -> Option<u64> {
    procfs::open_files_limit(Pid::Current)
}

/// A process's name, or `?` when it cannot be read.
fn name_of(pid: u32) -> String {
    procfs::process_name(Pid::Of(pid)).unwrap_or_else(|_| "?".to_string())
}

/// Fails unless process `pid` holds the socket listening on `addr`'s port: figures of any
/// other process would be reported as the server's. The error names both processes when it
/// can find the one that listens.
pub fn check_server_pid(pid: u32, addr: SocketAddr) -> anyhow::Result<()> {
    let running = is_running(pid);
    if running {
        let listens = procfs::is_listening_on(Pid::Of(pid), addr.port())
            .with_context(|| format!("--server-pid {pid}: cannot read /proc/{pid}"))?;
        if listens {
            return Ok(());
        }
    }
    let listeners: Vec<String> = procfs::listening_pids(addr.port())
        .unwrap_or_default()
        .into_iter()
        .map(|p| format!("pid {p} ({})", name_of(p)))
        .collect();
    let one = listeners.len() == 1;
    let listed = listeners.join(", ");
    if !running {
        // Typically a server that could not start (its port taken) while an older one still
        // answers on that port.
        if listeners.is_empty() {
            bail!("--server-pid {pid} is not running");
        }
        let verb = if one { "listens" } else { "listen" };
        bail!("--server-pid {pid} is not running; {listed} {verb} on {addr}");
    }
    let name = name_of(pid);
    if listeners.is_empty() {
        bail!("--server-pid {pid} ({name}) does not listen on {addr}");
    }
    let verb = if one { "does" } else { "do" };
    bail!("--server-pid {pid} ({name}) does not listen on {addr}; {listed} {verb}")
}

/// Whether process `pid` exists (and this user may see it).
pub fn is_running(pid: u32) -> bool {
    procfs::process_name(Pid::Of(pid)).is_ok()
}

/// One point of the per-second series.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SeriesPoint {
    /// Seconds since the sampler started.
    pub t: f64,
    /// CPU used over the last second, in percent of one core.
    pub cpu_pct: f64,
    pub rss_bytes: u64,
}

/// The server figures of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStats {
    pub pid: u32,
    /// The process's name (`/proc/PID/comm`).
    pub name: String,
    /// CPU seconds (user + system) used during the run.
    pub cpu_secs: f64,
    pub cpu_note: &'static str,
    /// Average CPU use during the run, in percent of one core.
    pub cpu_pct_avg: f64,
    pub rss_start_bytes: u64,
    pub rss_peak_bytes: u64,
    pub rss_end_bytes: u64,
    /// False if the process went away during the run.
    pub alive_at_end: bool,
    pub series: Vec<SeriesPoint>,
}

#[derive(Debug)]
struct State {
    start: ProcSample,
    last: ProcSample,
    peak_rss: u64,
    alive: bool,
    series: Vec<SeriesPoint>,
    last_point: (Instant, f64),
}

/// Samples a process every 250 ms until [`Sampler::finish`].
pub struct Sampler {
    pid: u32,
    name: String,
    started: Instant,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Fails when the process cannot be read (wrong pid, not Linux).
    pub fn start(pid: u32) -> std::io::Result<Sampler> {
        let first = sample_pid(pid)?;
        let started = Instant::now();
        let state = Arc::new(Mutex::new(State {
            start: first,
            last: first,
            peak_rss: first.rss_bytes,
            alive: true,
            series: Vec::new(),
            last_point: (started, first.cpu_secs),
        }));
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let s = sample_pid(pid);
                let Ok(mut g) = st.lock() else { return };
                match s {
                    Ok(s) => g.record(s, started),
                    Err(_) => {
                        g.alive = false;
                        return;
                    }
                }
            }
        });
        Ok(Sampler {
            pid,
            name: name_of(pid),
            started,
            state,
            task,
        })
    }

    /// Reads the process now (and records the reading).
    pub fn now(&self) -> Option<ProcSample> {
        let s = sample_pid(self.pid).ok()?;
        if let Ok(mut g) = self.state.lock() {
            g.record(s, self.started);
        }
        Some(s)
    }

    pub fn finish(self) -> ServerStats {
        self.task.abort();
        let end = sample_pid(self.pid).ok();
        let wall = self.started.elapsed().as_secs_f64();
        let mut g = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(s) = end {
            g.record(s, self.started);
        } else {
            g.alive = false;
        }
        let cpu = g.last.cpu_secs - g.start.cpu_secs;
        ServerStats {
            pid: self.pid,
            name: self.name.clone(),
            cpu_secs: cpu,
            cpu_note: "utime+stime from /proc/PID/stat, assuming 100 clock ticks per second",
            cpu_pct_avg: if wall > 0.0 { 100.0 * cpu / wall } else { 0.0 },
            rss_start_bytes: g.start.rss_bytes,
            rss_peak_bytes: g.peak_rss,
            rss_end_bytes: g.last.rss_bytes,
            alive_at_end: g.alive,
            series: std::mem::take(&mut g.series),
        }
    }
}

impl State {
    fn record(&mut self, s: ProcSample, started: Instant) {
        self.last = s;
        self.peak_rss = self.peak_rss.max(s.rss_bytes);
        let now = Instant::now();
        let (at, cpu_at) = self.last_point;
        let dt = now.duration_since(at).as_secs_f64();
        if dt >= 1.0 {
            self.series.push(SeriesPoint {
                t: now.duration_since(started).as_secs_f64(),
                cpu_pct: 100.0 * (s.cpu_secs - cpu_at) / dt,
                rss_bytes: s.rss_bytes,
            });
            self.last_point = (now, s.cpu_secs);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_process() {
        let s = super::sample_self();
        assert!(s.rss_bytes > 0);
        assert!(super::open_files_limit().is_some_and(|n| n > 0));
    }
}
