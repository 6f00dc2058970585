//! The storm's flags (`StormArgs`), their bounds, and `storm --help`'s closing text.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::{OwnedServer, Stop};
use crate::{check_count, check_range};

/// `storm --help`'s closing text.
pub const HELP: &str = "\
The tool owns the server: give its command line after `--`. It must listen on --url's port (a \
fixed --bind) and keep its history in a file (the default SQLite store, or --store \
sqlite:PATH). The tool starts it and waits for its `listening on` line, stops it with each \
--restarts signal in turn (term: SIGTERM, graceful; kill: SIGKILL, kill -9) and starts the same \
command again (same port, same store), and stops it with SIGTERM at the end. Its output goes to \
--server-log.

Example:
  ulimit -n 20000
  loadtest --url ws://127.0.0.1:9004 storm --clients 10000 --rooms 1000 --restarts term,kill \\
    -- target/release/roomcast --bind 127.0.0.1:9004 --store sqlite:/tmp/storm.db

Reports: clients that recovered exactly (no gap, no duplicate, every acked chat present once, \
every chat acked), rejoins answered recovered: false, per restart the time until every client \
was back, per-client recovery p50/p99/max (signal to rejoined with history), and the store's \
reads per second meanwhile (roomcast_store_reads_total from /metrics). Exit status 1 when a \
client did not recover exactly or did not come back within --recover-timeout.";

#[derive(Debug, Clone, Args, Serialize)]
pub struct StormArgs {
    /// Clients, one socket each.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Rooms; client i is in room i mod --rooms (and more with --rooms-per-client).
    #[arg(long, default_value_t = 1_000)]
    pub rooms: usize,
    /// Rooms each client joins (and rejoins with since_seq).
    #[arg(long, default_value_t = 1)]
    pub rooms_per_client: usize,
    /// Chats per second each client posts (each with a client_msg_id, acknowledged once
    /// committed), spread over its rooms.
    #[arg(long, default_value_t = 0.2)]
    pub rate: f64,
    /// Most unacknowledged chats per client; a tick that finds this many sends nothing new.
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    /// The restarts, in order: `term` (SIGTERM, graceful) or `kill` (SIGKILL, kill -9).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "term,kill")]
    pub restarts: Vec<Stop>,
    /// Seconds of posting before the first restart.
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,
    /// Seconds of posting after every client is back from a restart (or its
    /// --recover-timeout passed), before the next restart or the drain.
    #[arg(long, default_value_t = 10.0)]
    pub restart_every: f64,
    /// Seconds after a restart's signal by which every client must be back.
    #[arg(long, default_value_t = 60.0)]
    pub recover_timeout: f64,
    /// The clients' reconnect backoff: attempt n waits a uniformly random time in
    /// [0, min(cap, base × 2^(n-1))) ("full jitter"); reset once a client is back.
    #[arg(long, default_value_t = 250)]
    pub backoff_base_ms: u64,
    /// The backoff's longest wait: a client refused until the server is back waits at most
    /// this long after its last refusal, so the time until all are back is about the
    /// server's downtime plus this (the default is the browser chat's).
    #[arg(long, default_value_t = 5_000)]
    pub backoff_cap_ms: u64,
    /// Seconds the server may take to log `listening on` after it is started.
    #[arg(long, default_value_t = 60.0)]
    pub server_start_timeout: f64,
    /// Seconds a SIGTERM'd server may take to exit before it is killed.
    #[arg(long, default_value_t = 30.0)]
    pub server_stop_timeout: f64,
    /// Where the server's output goes [default: loadtest-reports/storm-server.log].
    #[arg(long)]
    pub server_log: Option<PathBuf>,
    /// The server's command line, after `--`. It must listen on --url's port (a fixed
    /// --bind), and keep its history in a file (--store sqlite:PATH, the default store) for
    /// the clients to recover after a restart.
    #[arg(last = true, required = true, value_name = "SERVER_COMMAND")]
    pub server: Vec<String>,
}

impl StormArgs {
    pub fn validate(&self) -> Result<(), String> {
        check_count("--clients", self.clients, 1, 100_000)?;
        check_count("--rooms", self.rooms, 1, 100_000)?;
        check_count("--rooms-per-client", self.rooms_per_client, 1, 32)?;
        if self.rooms_per_client > self.rooms {
            return Err("--rooms-per-client must not exceed --rooms".to_string());
        }
        check_range("--rate", self.rate, 0.01, 20.0)?;
        check_count("--window", self.window, 1, 256)?;
        if self.restarts.is_empty() || self.restarts.len() > 16 {
            return Err("--restarts takes 1 to 16 of term, kill".to_string());
        }
        check_range("--warmup", self.warmup, 0.0, 3600.0)?;
        check_range("--restart-every", self.restart_every, 0.0, 3600.0)?;
        check_range("--recover-timeout", self.recover_timeout, 1.0, 3600.0)?;
        if !(1..=60_000).contains(&self.backoff_base_ms)
            || !(self.backoff_base_ms..=600_000).contains(&self.backoff_cap_ms)
        {
            return Err(
                "--backoff-base-ms must be 1 to 60000, --backoff-cap-ms from it to 600000"
                    .to_string(),
            );
        }
        check_range(
            "--server-start-timeout",
            self.server_start_timeout,
            1.0,
            600.0,
        )?;
        check_range(
            "--server-stop-timeout",
            self.server_stop_timeout,
            0.1,
            600.0,
        )
    }

    /// The report path for the server's output.
    pub fn server_log(&self) -> PathBuf {
        self.server_log
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::REPORT_DIR).join("storm-server.log"))
    }

    /// Starts the server this scenario owns (before the tool resolves `--url`).
    pub async fn start_server(
        &self,
        common: &crate::Common,
        port: u16,
    ) -> anyhow::Result<OwnedServer> {
        if common.server_pid.is_some() {
            anyhow::bail!("storm starts its own server: --server-pid does not apply");
        }
        OwnedServer::start(
            &self.server,
            port,
            self.server_log(),
            Duration::from_secs_f64(self.server_start_timeout),
            Duration::from_secs_f64(self.server_stop_timeout),
        )
        .await
    }
}
