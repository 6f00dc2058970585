//! The live display on stderr: an indicatif bar for the connect phase (connections made of
//! total) and then for the run (elapsed of total seconds, with the live rate), plus warnings
//! printed above the bar. `--quiet` turns the bar off; warnings are still printed.
//!
//! The live rate comes from a counter the connection tasks add to in batches (every 256 events
//! or once a second each, see `stats::Timeline`), sampled every 250 ms and differenced over the
//! last second, so the display costs the receive path next to nothing. The bar only draws when
//! stderr is a terminal.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    warnings: Arc<Mutex<Vec<String>>>,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let bar = (!quiet).then(|| {
            let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            pb.set_style(ProgressStyle::default_spinner());
            pb
        });
        Progress {
            bar,
            warnings: Arc::default(),
        }
    }

    /// A counting bar: `what pos/len msg`.
    pub fn counting(&self, what: &str, total: u64) {
        if let Some(pb) = &self.bar {
            if let Ok(style) =
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
            {
                pb.set_style(style.progress_chars("=> "));
            }
            pb.set_prefix(what.to_string());
            pb.set_length(total);
            pb.set_position(0);
            pb.set_message("");
        }
    }

    /// A timed bar: `[elapsed] [bar] pos/len s msg`.
    pub fn timed(&self, what: &str, total_secs: f64) {
        if let Some(pb) = &self.bar {
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix:>12} [{elapsed_precise}] [{bar:30}] {pos}/{len}s {msg}",
            ) {
                pb.set_style(style.progress_chars("=> "));
            }
            pb.set_prefix(what.to_string());
            pb.reset_elapsed();
            pb.set_length(total_secs.ceil() as u64);
            pb.set_position(0);
        }
    }

    pub fn set(&self, pos: u64, msg: String) {
        if let Some(pb) = &self.bar {
            pb.set_position(pos);
            pb.set_message(msg);
        }
    }

    /// Prints a line above the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(pb) => pb.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Prints a warning and keeps it for the report.
    pub fn warn(&self, line: String) {
        self.println(&format!("warning: {line}"));
        if let Ok(mut w) = self.warnings.lock() {
            w.push(line);
        }
    }

    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    pub fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}

/// Updates a timed bar every 250 ms with the rate of `counter` over the last second, until
/// the returned handle is aborted. `phase(elapsed)` names the current phase.
pub fn spawn_rate_ticker<C, P>(
    progress: Progress,
    start: Instant,
    unit: &'static str,
    counter: C,
    phase: P,
) -> tokio::task::JoinHandle<()>
where
    C: Fn() -> u64 + Send + 'static,
    P: Fn(f64) -> &'static str + Send + 'static,
{
    tokio::spawn(async move {
        let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let now = Instant::now();
            let n = counter();
            samples.push_back((now, n));
            while samples.len() > 5 {
                samples.pop_front();
            }
            let rate = match samples.front() {
                Some(&(t, c)) if now > t => (n - c.min(n)) as f64 / (now - t).as_secs_f64(),
                _ => 0.0,
            };
            let elapsed = now.saturating_duration_since(start).as_secs_f64();
            progress.set(
                elapsed as u64,
                format!("{rate:>9.0} {unit}/s  {}", phase(elapsed)),
            );
        }
    })
}
