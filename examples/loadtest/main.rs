//! `loadtest`: a load generator and checker for a roomcast deployment.
//!
//! ```text
//! cargo run --release --example loadtest -- SCENARIO [flags]
//! ```
//!
//! Scenarios (each bounded in time and in counts, each stopping by itself):
//!
//! - `fanout`: `--rooms R` rooms of `--clients C` members, `--senders S` of them per room
//!   sending, either at `--rate N` messages/s each or as fast as a window of `--window W`
//!   unacknowledged messages allows (a message is acknowledged by its echo). Every member checks
//!   every delivery's `seq` (lost, duplicated, out of order) and measures send → delivery
//!   latency. `--warmup` seconds are checked but not measured, then `--duration` seconds are.
//!   With `--ack`, chats carry a `client_msg_id` and the server's `ack` (sent once the message
//!   is committed to its store) releases the window instead: acknowledged, durable chats per
//!   second, send → ack latency, and a check that each message gets one ack with its echo's
//!   `seq`.
//! - `idle`: `--connections N` joined connections (rooms of `--room-size`) held for
//!   `--duration` seconds: connect latency, and the server's RSS per connection with
//!   `--server-pid`.
//! - `churn`: `--cycles N` connect → join → chat → leave → close cycles, `--concurrency K` at a
//!   time (optionally `--rate` cycles/s); each cycle must see its `joined`, its own echo and its
//!   `left`. Afterwards `/health` should be back to its baseline.
//! - `notify`: `--sockets N` notification sockets and `--pushes M` pushes over HTTP, once the
//!   server has a notification endpoint (exit status 2 while `/notifications/x` is a 404).
//! - `flood`: `--senders S` post into one room at a fixed total `--rate` (0: as fast as the
//!   sockets take it) with no window, for `--duration` seconds, while `--readers R` read it
//!   and a quiet pair in another room times one chat every 100 ms: the longest time a reader
//!   went without a delivery, who was closed and why, chats refused `overloaded`, the quiet
//!   room's latency, `/health` answers and, with `--server-pid`, the server's RSS over time.
//! - `storm`: a reconnect storm. The tool runs the server (its command line after `--`),
//!   `--clients` post into `--rooms` while it is restarted with each `--restarts` signal
//!   (SIGTERM, SIGKILL), and every client reconnects with jittered backoff and rejoins with
//!   `since_seq`: clients that recovered exactly, `recovered: false`, the time until all are
//!   back, per-client recovery percentiles and the store's reads per second.
//!
//! Common flags: `--url` (env `ROOMCAST_URL`, default `ws://127.0.0.1:8080`; only loopback
//! hosts unless `--allow-remote`), `--server-pid PID` (server CPU and RSS from `/proc`; the
//! run is refused unless that process listens on the URL's port), `--json PATH` /
//! `--html PATH` (default `loadtest-reports/SCENARIO.json` / `.html`, a folder git ignores),
//! `--quiet`, `--threads`, `--connect-timeout`, `--connect-concurrency`, `--setup-timeout`,
//! `--drain`.
//!
//! Output: a summary on stdout, the JSON and HTML reports, a progress bar on stderr. Exit
//! status: 0 when the run completed without loss, duplication, disorder or connection failures;
//! 1 otherwise; 2 when the run could not start (bad flags, non-loopback host, no server, a
//! `--server-pid` that is not the server).
//!
//! # Layout
//!
//! - `main.rs`: flags, the runtime, the shared context ([`Ctx`]), the verdict and the outputs.
//! - `fanout.rs`, `idle.rs`, `churn.rs`, `notify.rs`, `flood/`, `storm/`: one scenario each; `acks.rs`:
//!   a sender's `client_msg_id` bookkeeping for `fanout --ack`.
//! - `members/`: what `fanout` and `flood` members share: the run's phase and schedule, the
//!   setup (connect, join, register), the `chat` checks on the receive path, a room's last
//!   `seq`; `sending.rs`: what their senders share (sent and answered counts, stamped texts,
//!   a fixed-rate clock, the writer task's sink).
//! - `conn.rs`: opening connections, `welcome`, `join`.
//! - `wire.rs`: the receive path's byte-level frame reading and the `seq` checker.
//! - `stats.rs`: histograms and per-second counters shared by the tasks.
//! - `proc.rs`: the `--server-pid` check and `/proc` sampling (parsed by `roomcast::procfs`);
//!   `target.rs`: `--url` and the loopback rule; `progress.rs`: the progress bar; `report.rs`:
//!   the outputs; `charts.rs`: the HTML report's SVG charts, drawn with plotters.
//!
//! HTTP calls (`/health`, the notify scenario's probe and pushes) go through one `reqwest`
//! client, pinned to the address `--url` resolved to and never through a proxy.
//!
//! The tool must not be the bottleneck of the machine it runs on: it runs on a multi-threaded
//! tokio runtime, one task per connection (plus a writer task per sender), reads frames as
//! bytes (see `wire.rs`), and records measurements in batches (see `stats.rs`).

mod acks;
mod charts;
mod churn;
mod conn;
mod fanout;
mod flood;
mod idle;
mod members;
mod notify;
mod peer;
mod proc;
mod progress;
mod report;
mod sending;
mod stats;
mod storm;
mod target;
mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::conn::Connector;
use crate::proc::{ProcSample, Sampler};
use crate::progress::Progress;
use crate::report::{Health, Report};
use crate::target::Target;

/// roomcast load tool: fan-out, idle, churn and notification load with loss/order checks.
#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "roomcast load tool: fan-out, idle, churn, notification, flood and reconnect-storm load, with loss and order checks",
    after_help = "Exit status: 0 = no loss, duplication, disorder or connection failure; \
                  1 = problems (listed in the summary); 2 = could not run."
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Rooms of members, some of them sending; checks and times every delivery.
    Fanout(fanout::FanoutArgs),
    /// Many joined, idle connections: connect latency and server memory per connection.
    Idle(idle::IdleArgs),
    /// Connect → join → chat → leave → close cycles; /health must return to its baseline.
    Churn(churn::ChurnArgs),
    /// Notification sockets and HTTP pushes (needs the server's notification endpoint).
    Notify(notify::NotifyArgs),
    /// An open-loop flood into one room: delivery gaps, closes, refusals, a quiet room's
    /// latency, /health and server memory.
    #[command(
        after_help = "Besides the senders and readers, a quiet pair in a room of its own times one \
                      chat every --quiet-interval-ms, and /health is probed every --health-every \
                      seconds. Exit status 1 when the server closed a member, a delivery was \
                      lost, duplicated or out of order, a quiet chat was not delivered, or a \
                      /health probe went unanswered; chats refused `overloaded` are reported, \
                      not failures."
    )]
    Flood(flood::FloodArgs),
    /// A reconnect storm: clients keep posting while the tool restarts the server (SIGTERM,
    /// kill -9); every client reconnects with backoff and rejoins with since_seq.
    #[command(after_help = storm::HELP)]
    Storm(storm::StormArgs),
    /// Fan-out against another chat server that speaks bare text (the actix example, a node
    /// `ws` server), to compare it with roomcast's `fanout` in one run.
    #[command(
        after_help = "Each member opens --path ({room} replaced) and sends --join-text if given. \
                      Senders send `lt|SENDER|N|SEND_NS`; the room's first member releases the \
                      senders' windows. Exit status 1 when a delivery was lost or duplicated, \
                      or a connection failed."
    )]
    Peer(peer::PeerArgs),
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Fanout(_) => "fanout",
            Scenario::Idle(_) => "idle",
            Scenario::Churn(_) => "churn",
            Scenario::Notify(_) => "notify",
            Scenario::Flood(_) => "flood",
            Scenario::Storm(_) => "storm",
            Scenario::Peer(_) => "peer",
        }
    }
}

/// Flags every scenario takes.
#[derive(Debug, Clone, Args, Serialize)]
#[command(next_help_heading = "Common options")]
pub struct Common {
    /// The server's base URL (ws:// or http://).
    #[arg(
        long,
        env = "ROOMCAST_URL",
        default_value = "ws://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Another node of the same cluster (repeatable): WebSocket clients are spread over
    /// `--url` and these, round-robin in the order they open. HTTP calls and `--server-pid`
    /// concern `--url` only.
    #[arg(long, global = true)]
    pub also_url: Vec<String>,
    /// Allow a host that is not a loopback address (127.0.0.0/8, localhost, ::1).
    #[arg(long, global = true)]
    pub allow_remote: bool,
    /// The server's process id, to report its CPU time and RSS (from /proc). The run is
    /// refused unless this process listens on the --url port; while it runs but does not
    /// listen yet, the tool waits up to --connect-timeout for it.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Where to write the JSON report [default: loadtest-reports/SCENARIO.json, under the
    /// current folder; the repository's .gitignore lists loadtest-reports/].
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Where to write the HTML report [default: loadtest-reports/SCENARIO.html].
    #[arg(long, global = true)]
    pub html: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Runtime worker threads [default: one per CPU].
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Seconds allowed for each connection step (TCP + upgrade, welcome, join).
    #[arg(long, default_value_t = 10.0, global = true)]
    pub connect_timeout: f64,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64, global = true)]
    pub connect_concurrency: usize,
    /// Seconds allowed for opening and joining all connections before the run starts anyway.
    #[arg(long, default_value_t = 120.0, global = true)]
    pub setup_timeout: f64,
    /// Seconds to wait after the run for in-flight deliveries (the hard deadline's grace).
    #[arg(long, default_value_t = 5.0, global = true)]
    pub drain: f64,
}

impl Common {
    fn validate(&self) -> Result<(), String> {
        check_range("--connect-timeout", self.connect_timeout, 0.1, 300.0)?;
        check_range("--setup-timeout", self.setup_timeout, 1.0, 3600.0)?;
        check_range("--drain", self.drain, 0.0, 300.0)?;
        check_count("--connect-concurrency", self.connect_concurrency, 1, 10_000)?;
        if let Some(t) = self.threads {
            check_count("--threads", t, 1, 1024)?;
        }
        Ok(())
    }
}

/// `Err` unless `lo <= v <= hi` (and finite).
pub fn check_range(flag: &str, v: f64, lo: f64, hi: f64) -> Result<(), String> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(format!("{flag} must be between {lo} and {hi} (got {v})"))
    }
}

pub fn check_count(flag: &str, v: usize, lo: usize, hi: usize) -> Result<(), String> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("{flag} must be between {lo} and {hi} (got {v})"))
    }
}

/// Where the reports go without `--json` / `--html`: a folder `.gitignore` names, so runs
/// leave nothing to commit.
pub const REPORT_DIR: &str = "loadtest-reports";

/// What every scenario gets.
pub struct Ctx {
    pub common: Common,
    pub target: Target,
    pub addr: SocketAddr,
    /// `--also-url`'s nodes, resolved: clients go to `addr` and these in turn.
    pub also: Vec<SocketAddr>,
    /// Tags room and user names, so runs never share rooms (or their history).
    pub run_id: String,
    /// Time zero of every timestamp the tool sends (`send_ns`).
    pub epoch: Instant,
    pub progress: Progress,
    pub server: Option<Sampler>,
    pub threads: usize,
    /// For `/health` and the notify scenario: resolves the host to `addr`, uses no proxy.
    pub http: reqwest::Client,
}

impl Ctx {
    /// Nanoseconds since [`Ctx::epoch`].
    pub fn now_ns(&self) -> u64 {
        ns_since(self.epoch, Instant::now())
    }

    pub fn connector(&self, read_buffer: usize) -> Arc<Connector> {
        self.connector_with(read_buffer, 0)
    }

    /// A connector whose sockets gather up to `write_buffer` bytes of frames before writing
    /// them (0: each frame is written at once), for sockets that send in bulk.
    pub fn connector_with(&self, read_buffer: usize, write_buffer: usize) -> Arc<Connector> {
        let mut addrs = vec![self.addr];
        addrs.extend(&self.also);
        Arc::new(Connector::new(
            addrs,
            self.target.clone(),
            self.common.connect_concurrency,
            Duration::from_secs_f64(self.common.connect_timeout),
            read_buffer,
            write_buffer,
        ))
    }

    /// The server's CPU and RSS now, with `--server-pid`.
    pub fn server_now(&self) -> Option<ProcSample> {
        self.server.as_ref().and_then(Sampler::now)
    }

    /// The server's `/health` counts, when it answers within 3 s.
    pub async fn health(&self) -> Option<Health> {
        let resp = self
            .http
            .get(self.target.http_url("/health"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?;
        if resp.status() != reqwest::StatusCode::OK {
            return None;
        }
        resp.json().await.ok()
    }

    /// A room or user name for this run: `lt{run}{kind}{i}`.
    pub fn name(&self, kind: &str, i: usize) -> String {
        format!("lt{}{kind}{i}", self.run_id)
    }

    pub fn setup_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.common.setup_timeout)
    }

    /// Waits until `joined + failed` reaches `n` or `--setup-timeout` passes, showing progress;
    /// warns when the timeout cut the wait short. `what` names the sockets in the warning.
    pub async fn wait_for_setup(
        &self,
        joined: &AtomicU64,
        failed: &AtomicU64,
        n: usize,
        what: &str,
    ) {
        let deadline = Instant::now() + self.setup_timeout();
        loop {
            let (j, f) = (
                joined.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
            );
            let detail = if f > 0 {
                format!("{f} failed")
            } else {
                String::new()
            };
            self.progress.set(j, detail);
            if j + f >= n as u64 {
                return;
            }
            if Instant::now() >= deadline {
                self.progress.warn(format!(
                    "only {j} of {n} {what} within --setup-timeout {}s",
                    self.common.setup_timeout
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs_f64(self.common.drain)
    }

    /// Warns when `n` sockets would not fit under this process's open-files limit.
    pub fn check_fd_limit(&self, n: usize) {
        if let Some(limit) = proc::open_files_limit()
            && (n as u64) + 64 > limit
        {
            self.progress.warn(format!(
                "{n} connections need more open files than this process may have ({limit}); \
                 raise the limit with `ulimit -n {}` in this shell",
                (n + 1024).next_power_of_two()
            ));
        }
    }
}

pub fn ns_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// Shell-quotes the arguments the tool was started with.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let usage = |msg: String| {
        eprintln!("loadtest: {msg}");
        ExitCode::from(2)
    };
    if let Err(e) = cli.common.validate() {
        return usage(e);
    }
    let checked = match &cli.scenario {
        Scenario::Fanout(a) => a.validate(),
        Scenario::Idle(a) => a.validate(),
        Scenario::Churn(a) => a.validate(),
        Scenario::Notify(a) => a.validate(),
        Scenario::Flood(a) => a.validate(),
        Scenario::Storm(a) => a.validate(),
        Scenario::Peer(a) => a.validate(),
    };
    if let Err(e) = checked {
        return usage(e);
    }
    let target = match Target::parse(&cli.common.url) {
        Ok(t) => t,
        Err(e) => return usage(e),
    };
    if !target.is_loopback() && !cli.common.allow_remote {
        return usage(format!(
            "refusing to load {:?}: it is not a loopback address (127.0.0.0/8, localhost, ::1). \
             Pass --allow-remote to load another machine.",
            target.host
        ));
    }
    let threads = cli
        .common
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return usage(format!("cannot start the runtime: {e}")),
    };
    let report = match runtime.block_on(run(cli, target, threads)) {
        Ok(r) => r,
        Err(e) => return usage(format!("{e:#}")),
    };
    // Connection tasks still running past their deadline are dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Resolves the target and checks that something listens there; the first address that
/// accepts a TCP connection wins. While `starting` (the `--server-pid`) is a running process,
/// refused connections are tried again every 50 ms for up to `timeout`: the server may have
/// been started a moment ago (`roomcast ... & loadtest --server-pid $!`).
async fn resolve(
    target: &Target,
    allow_remote: bool,
    timeout: Duration,
    starting: Option<u32>,
) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target.authority())
        .await
        .with_context(|| format!("cannot resolve {}", target.host))?
        .collect();
    if let Some(addr) = addrs
        .iter()
        .find(|a| !allow_remote && !target::is_loopback_ip(a.ip()))
    {
        bail!(
            "{} resolves to {}, which is not a loopback address; pass --allow-remote",
            target.host,
            addr.ip()
        );
    }
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        let mut refused = false;
        for &addr in &addrs {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => return Ok(addr),
                Ok(Err(e)) => {
                    refused |= e.kind() == std::io::ErrorKind::ConnectionRefused;
                    last_err = Some(format!("{addr}: {e}"));
                }
                Err(_) => last_err = Some(format!("{addr}: no answer within {timeout:?}")),
            }
        }
        let may_be_starting = starting.is_some_and(proc::is_running);
        if !refused || !may_be_starting || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exited = match starting {
        Some(pid) if !proc::is_running(pid) => {
            format!(" (--server-pid {pid} is not running: did it fail to start?)")
        }
        _ => String::new(),
    };
    bail!(
        "cannot reach the server at {}: {}{exited}",
        target.authority(),
        last_err.unwrap_or_else(|| "no address".to_string())
    )
}

/// The tool's HTTP client: resolves the target's host to `addr` (the address checked at
/// the start), never uses a proxy.
pub fn http_client(
    target: &Target,
    addr: SocketAddr,
    connect_timeout: f64,
) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .resolve(&target.host, addr)
        .connect_timeout(Duration::from_secs_f64(connect_timeout))
        .tcp_nodelay(true)
        .user_agent("roomcast-loadtest")
        .build()
        .context("cannot set up the HTTP client")
}

async fn run(cli: Cli, target: Target, threads: usize) -> anyhow::Result<Report> {
    let scenario = cli.scenario.name();
    // `storm` runs its own server, started before the address is checked.
    let mut owned = match &cli.scenario {
        Scenario::Storm(a) => Some(a.start_server(&cli.common, target.port).await?),
        _ => None,
    };
    let addr = resolve(
        &target,
        cli.common.allow_remote,
        Duration::from_secs_f64(cli.common.connect_timeout),
        cli.common.server_pid,
    )
    .await?;
    let mut also = Vec::new();
    for url in &cli.common.also_url {
        let node = Target::parse(url).map_err(anyhow::Error::msg)?;
        if !node.is_loopback() && !cli.common.allow_remote {
            anyhow::bail!("refusing to load {url:?}: not a loopback address (see --allow-remote)");
        }
        let timeout = Duration::from_secs_f64(cli.common.connect_timeout);
        also.push(resolve(&node, cli.common.allow_remote, timeout, None).await?);
    }
    let server = match cli.common.server_pid {
        Some(pid) => {
            proc::check_server_pid(pid, addr)?;
            Some(
                Sampler::start(pid)
                    .with_context(|| format!("--server-pid {pid}: cannot read /proc/{pid}"))?,
            )
        }
        None => None,
    };
    let http = http_client(&target, addr, cli.common.connect_timeout)?;
    let epoch = Instant::now();
    let run_id = {
        let ms = chrono::Utc::now().timestamp_millis() as u64;
        format!(
            "{:06x}",
            (ms ^ (u64::from(std::process::id()) << 20)) & 0xff_ffff
        )
    };
    let mut ctx = Ctx {
        common: cli.common.clone(),
        target,
        addr,
        also,
        run_id,
        epoch,
        progress: Progress::new(cli.common.quiet),
        server,
        threads,
        http,
    };
    let started_at = chrono::Utc::now();
    let tool_cpu0 = proc::sample_self();
    let mut report = match &cli.scenario {
        Scenario::Fanout(a) => fanout::run(&ctx, a).await?,
        Scenario::Idle(a) => idle::run(&ctx, a).await?,
        Scenario::Churn(a) => churn::run(&ctx, a).await?,
        Scenario::Notify(a) => notify::run(&ctx, a).await?,
        Scenario::Flood(a) => flood::run(&ctx, a).await?,
        Scenario::Storm(a) => {
            let server = owned.take().context("the storm's server")?;
            storm::run(&ctx, a, server).await?
        }
        Scenario::Peer(a) => peer::run(&ctx, a).await?,
    };
    ctx.progress.finish();
    let wall = epoch.elapsed().as_secs_f64();
    let tool_cpu = proc::sample_self().cpu_secs - tool_cpu0.cpu_secs;
    report.tool = format!("roomcast loadtest {}", env!("CARGO_PKG_VERSION"));
    report.scenario = scenario.to_string();
    report.command_line = command_line();
    report.url = ctx.target.ws_url("");
    report.started_at = started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    report.wall_secs = wall;
    report.tool_process = report::ToolStats {
        threads,
        cpu_secs: tool_cpu,
        cpu_pct_avg: if wall > 0.0 {
            100.0 * tool_cpu / wall
        } else {
            0.0
        },
        rss_peak_bytes: proc::self_peak_rss(),
    };
    if let Some(s) = ctx.server.take() {
        let stats = s.finish();
        if !stats.alive_at_end {
            report.problems.push(format!(
                "the server process {} went away during the run",
                stats.pid
            ));
        }
        report.server = Some(stats);
    }
    let mut settings = serde_json::json!({ "common": &cli.common });
    settings[scenario] = match &cli.scenario {
        Scenario::Fanout(a) => serde_json::to_value(a)?,
        Scenario::Idle(a) => serde_json::to_value(a)?,
        Scenario::Churn(a) => serde_json::to_value(a)?,
        Scenario::Notify(a) => serde_json::to_value(a)?,
        Scenario::Flood(a) => serde_json::to_value(a)?,
        Scenario::Storm(a) => serde_json::to_value(a)?,
        Scenario::Peer(a) => serde_json::to_value(a)?,
    };
    report.settings = settings;
    report.warnings = ctx.progress.warnings();
    report.passed = report.problems.is_empty();

    print!("{}", report::text(&report));
    let json = cli
        .common
        .json
        .clone()
        .unwrap_or_else(|| Path::new(REPORT_DIR).join(format!("{scenario}.json")));
    let html = cli
        .common
        .html
        .clone()
        .unwrap_or_else(|| Path::new(REPORT_DIR).join(format!("{scenario}.html")));
    report::write_json(&report, &json).with_context(|| format!("writing {}", json.display()))?;
    report::write_html(&report, &html).with_context(|| format!("writing {}", html.display()))?;
    eprintln!("reports: {} {}", json.display(), html.display());
    Ok(report)
}
