//! The storm's figures: the clients' results added up ([`Tally`]), each restart's outcome,
//! and their rows in the report ([`sections`]).

use std::collections::BTreeMap;

use serde::Serialize;

use super::client::ClientResult;
use super::reads::StoreReads;
use super::{OwnedServer, StormArgs};
use crate::report::Section;
use crate::stats::{Percentiles, fmt_us};

/// All back within this many seconds of the restart: issue 14's target.
pub const TARGET_SECS: f64 = 10.0;

/// What the clients count: one client's, or all of them added up.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub rejoins_recovered: u64,
    pub rejoins_not_recovered: u64,
    /// Seqs skipped and never seen.
    pub lost: u64,
    /// Seqs seen twice.
    pub duplicated: u64,
    /// Own chats seen at two different seqs (posted twice).
    pub posted_twice: u64,
    /// Acknowledged chats never seen, or seen at another seq than the ack's.
    pub acked_missing: u64,
    /// A chat acknowledged twice with different seqs.
    pub ack_conflicts: u64,
    pub chats_sent: u64,
    /// Sent again after a lost socket or an error, with the same `client_msg_id`.
    pub chats_resent: u64,
    pub chats_acked: u64,
    /// Not acknowledged by the end.
    pub chats_unacked: u64,
    /// Ticks that sent nothing new: `--window` chats were waiting for their acks.
    pub window_full_ticks: u64,
    /// Sockets that ended outside a restart.
    pub unexpected_drops: u64,
    pub connect_attempts: u64,
    /// Clients that had every acknowledged `seq` of their rooms before the drain ended (the
    /// others stopped at its end).
    pub finished: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.rejoins_recovered += o.rejoins_recovered;
        self.rejoins_not_recovered += o.rejoins_not_recovered;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.posted_twice += o.posted_twice;
        self.acked_missing += o.acked_missing;
        self.ack_conflicts += o.ack_conflicts;
        self.chats_sent += o.chats_sent;
        self.chats_resent += o.chats_resent;
        self.chats_acked += o.chats_acked;
        self.chats_unacked += o.chats_unacked;
        self.window_full_ticks += o.window_full_ticks;
        self.unexpected_drops += o.unexpected_drops;
        self.connect_attempts += o.connect_attempts;
        self.finished += o.finished;
    }

    /// No `recovered: false`, nothing lost or doubled, every chat acknowledged and present.
    pub fn clean(&self) -> bool {
        self.rejoins_not_recovered == 0
            && self.lost == 0
            && self.duplicated == 0
            && self.posted_twice == 0
            && self.acked_missing == 0
            && self.ack_conflicts == 0
            && self.chats_unacked == 0
    }
}

/// The clients' results, added up.
#[derive(Debug, Default)]
pub struct Tally {
    pub set_up: u64,
    pub exact: u64,
    /// Clients that got `recovered: false` at least once.
    pub clients_not_recovered: u64,
    pub n: Counts,
    pub reasons: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    pub fn add(&mut self, c: &ClientResult, restarts: usize) {
        self.set_up += u64::from(c.set_up);
        self.exact += u64::from(c.exact(restarts));
        self.clients_not_recovered += u64::from(c.n.rejoins_not_recovered > 0);
        self.n.add(&c.n);
        for (k, v) in &c.reasons {
            *self.reasons.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &c.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }

    /// Connection attempts that failed (`connect: ...`).
    pub fn connect_failures(&self) -> u64 {
        self.reasons
            .iter()
            .filter(|(k, _)| k.starts_with("connect:"))
            .map(|(_, v)| v)
            .sum()
    }

    /// Sockets that ended after they opened (restarts included).
    pub fn drops(&self) -> u64 {
        self.reasons
            .iter()
            .filter(|(k, _)| !k.starts_with("connect:"))
            .map(|(_, v)| v)
            .sum()
    }

    /// The reasons of failed attempts (`connect`) or of ended sockets.
    pub fn reasons_where(&self, connect: bool) -> BTreeMap<String, u64> {
        self.reasons
            .iter()
            .filter(|(k, _)| k.starts_with("connect:") == connect)
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// One restart.
#[derive(Debug, Clone, Serialize)]
pub struct RestartOutcome {
    /// `SIGTERM` or `SIGKILL`.
    pub signal: String,
    /// When it was sent, seconds after the posting started.
    pub at_secs: f64,
    /// From the signal to the old process's exit.
    pub server_exit_secs: f64,
    pub server_status: String,
    pub killed_after_timeout: bool,
    /// From the signal to the new process's `listening on`.
    pub down_secs: f64,
    /// Clients set up before the first restart: the ones expected back.
    pub expected: u64,
    pub back: u64,
    /// From the signal to the last client back; `None` when not all came back.
    pub all_back_secs: Option<f64>,
    /// Per client: from the signal to being back (rejoined, with its history).
    pub recovery_us: Percentiles,
    /// Per client: connection attempts until back (the one that worked included).
    pub attempts: Percentiles,
    /// Per client: of its recovery, the wait for one of the tool's `--connect-concurrency`
    /// slots (the tool's own pacing, not the server's).
    pub slot_wait_us: Percentiles,
    /// From the signal to the last client back (or --recover-timeout).
    pub store_reads: StoreReads,
}

#[derive(Debug, Serialize)]
pub struct StormSection {
    pub clients: u64,
    pub rooms: u64,
    pub rooms_per_client: u64,
    pub rate_per_client: f64,
    pub server_command: Vec<String>,
    pub server_log: String,
    pub set_up: u64,
    /// Clients that recovered exactly from every restart.
    pub recovered_exactly: u64,
    /// Clients that got `recovered: false` at least once.
    pub clients_recovered_false: u64,
    #[serde(flatten)]
    pub n: Counts,
    pub errors: BTreeMap<String, u64>,
    pub restarts: Vec<RestartOutcome>,
    pub target_all_back_secs: f64,
}

impl StormSection {
    pub fn new(
        a: &StormArgs,
        t: &Tally,
        restarts: Vec<RestartOutcome>,
        server: &OwnedServer,
    ) -> StormSection {
        StormSection {
            clients: a.clients as u64,
            rooms: a.rooms as u64,
            rooms_per_client: a.rooms_per_client as u64,
            rate_per_client: a.rate,
            server_command: a.server.clone(),
            server_log: server.log_path().display().to_string(),
            set_up: t.set_up,
            recovered_exactly: t.exact,
            clients_recovered_false: t.clients_not_recovered,
            n: t.n.clone(),
            errors: t.errors.clone(),
            restarts,
            target_all_back_secs: TARGET_SECS,
        }
    }
}

fn row(label: &str, value: String) -> (String, String) {
    (label.to_string(), value)
}

pub fn sections(s: &StormSection) -> Vec<Section> {
    let mut rows = vec![
        row(
            "clients / rooms",
            format!(
                "{} in {} rooms, {} room(s) each, {} chats/s each",
                s.clients, s.rooms, s.rooms_per_client, s.rate_per_client
            ),
        ),
        row(
            "set up / recovered exactly",
            format!("{} / {}", s.set_up, s.recovered_exactly),
        ),
        row(
            "rejoins recovered / recovered: false",
            format!(
                "{} / {}  ({} clients got recovered: false)",
                s.n.rejoins_recovered, s.n.rejoins_not_recovered, s.clients_recovered_false
            ),
        ),
        row(
            "seqs lost / duplicated",
            format!("{} / {}", s.n.lost, s.n.duplicated),
        ),
        row(
            "acked chats missing / posted twice / ack conflicts",
            format!(
                "{} / {} / {}",
                s.n.acked_missing, s.n.posted_twice, s.n.ack_conflicts
            ),
        ),
        row(
            "chats sent / resent / acked / never acked",
            format!(
                "{} / {} / {} / {}",
                s.n.chats_sent, s.n.chats_resent, s.n.chats_acked, s.n.chats_unacked
            ),
        ),
        row(
            "clients done before the drain's end",
            format!("{} of {}", s.n.finished, s.clients),
        ),
        row(
            "sockets lost outside a restart",
            s.n.unexpected_drops.to_string(),
        ),
        row("server", s.server_command.join(" ")),
        row("server output", s.server_log.clone()),
    ];
    if !s.errors.is_empty() {
        let e = s.errors.iter().map(|(k, v)| format!("{k}: {v}"));
        rows.push(row("error frames", e.collect::<Vec<_>>().join(", ")));
    }
    let mut out = vec![Section {
        title: "reconnect storm".to_string(),
        rows,
    }];
    for (k, r) in s.restarts.iter().enumerate() {
        let p = &r.recovery_us;
        let all_back = match r.all_back_secs {
            Some(t) => format!(
                "{t:.2} s  (target {:.0} s: {})",
                s.target_all_back_secs,
                if t <= s.target_all_back_secs {
                    "met"
                } else {
                    "NOT met"
                }
            ),
            None => "not all came back".to_string(),
        };
        out.push(Section {
            title: format!("restart {} ({}, at {:.1} s)", k + 1, r.signal, r.at_secs),
            rows: vec![
                row(
                    "old server exited / new one listening",
                    format!(
                        "{:.2} s ({}{}) / {:.2} s after the signal",
                        r.server_exit_secs,
                        r.server_status,
                        if r.killed_after_timeout {
                            ", killed after the stop timeout"
                        } else {
                            ""
                        },
                        r.down_secs
                    ),
                ),
                row("back / expected", format!("{} / {}", r.back, r.expected)),
                row("all back after", all_back),
                row(
                    "per-client recovery",
                    format!(
                        "p50 {}  p99 {}  max {}",
                        fmt_us(p.p50 as f64),
                        fmt_us(p.p99 as f64),
                        fmt_us(p.max as f64)
                    ),
                ),
                row(
                    "connection attempts until back",
                    format!(
                        "p50 {}  p99 {}  max {}",
                        r.attempts.p50, r.attempts.p99, r.attempts.max
                    ),
                ),
                row(
                    "of which waiting for a tool's connect slot",
                    format!(
                        "p50 {}  p99 {}  max {}  (--connect-concurrency)",
                        fmt_us(r.slot_wait_us.p50 as f64),
                        fmt_us(r.slot_wait_us.p99 as f64),
                        fmt_us(r.slot_wait_us.max as f64)
                    ),
                ),
                row(
                    "store reads until all back",
                    format!(
                        "{}  ({:.0}/s on average, at most {:.0} in one second)",
                        r.store_reads.reads, r.store_reads.per_sec_avg, r.store_reads.per_sec_peak
                    ),
                ),
            ],
        });
    }
    out
}
