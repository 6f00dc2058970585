//! The flood run's figures: its report section, built from the members' outcomes, and the
//! verdict (`render.rs` shows them).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::member::{Outcome, Role};
use super::probes::{HealthProbe, QueuePoint, ServerCounters};
use super::{FloodArgs, Shared};
use crate::report::{Connections, Deliveries, Latency, Report, TimelineSection};
use crate::stats::{Percentiles, log_buckets, new_histogram};

/// `flood`: what an open-loop flood into one room did to its readers, to a quiet room, to
/// `/health` and to the server's memory.
#[derive(Debug, Default, Serialize)]
pub struct FloodSection {
    pub senders: u64,
    pub readers: u64,
    /// Messages/s offered by all senders together; 0: as fast as the sockets took them.
    pub offered_per_sec: f64,
    pub flood_secs: f64,
    /// From the start until the last sender stopped (earlier than `flood_secs` when
    /// `--max-messages` were all sent first).
    pub sending_secs: f64,
    pub sent: u64,
    /// Messages sent per second of sending.
    pub sent_per_sec: f64,
    /// Echoed to their senders: accepted, stored and delivered.
    pub accepted: u64,
    /// Refused with `overloaded`, as the senders were told.
    pub overloaded: u64,
    pub rate_limited: u64,
    pub other_errors: BTreeMap<String, u64>,
    /// Sent and neither echoed nor refused by the end of the drain.
    pub unanswered: u64,
    /// Deliveries the open members still lacked when the run ended (counted in `lost`).
    pub missing_at_end: u64,
    pub gaps: Gaps,
    pub closes: Closes,
    pub queues: Queues,
    pub quiet: Quiet,
    pub health: HealthSection,
    /// The growth of the server's counters over the run, from `/metrics` (when it answered
    /// before and after).
    pub server_counters: Option<ServerCounters>,
}

/// The median and the largest of some values.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Spread {
    pub count: u64,
    pub p50: u64,
    pub max: u64,
}

impl Spread {
    fn of(mut v: Vec<u64>) -> Spread {
        v.sort_unstable();
        Spread {
            count: v.len() as u64,
            p50: v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0),
            max: v.last().copied().unwrap_or(0),
        }
    }
}

/// Times without a delivery.
#[derive(Debug, Default, Serialize)]
pub struct Gaps {
    /// The longest time any reader went without a delivery.
    pub longest_us: u64,
    /// Which reader (member index), and when that gap ended (seconds since the start).
    pub longest_reader: Option<usize>,
    pub longest_end_s: f64,
    /// Each reader's longest gap, over the readers.
    pub readers_us: Percentiles,
    /// Each sender's longest gap (senders read the room too).
    pub senders_us: Percentiles,
}

/// Connections the server ended during the run.
#[derive(Debug, Default, Serialize)]
pub struct Closes {
    /// Readers closed with 4001 (slow consumer).
    pub readers_slow: u64,
    /// Readers ended any other way (another code, or no close frame).
    pub readers_other: u64,
    /// By reason, per role.
    pub readers: BTreeMap<String, u64>,
    pub senders: BTreeMap<String, u64>,
    pub quiet: BTreeMap<String, u64>,
    /// When the first and the last reader were closed (seconds since the start).
    pub first_reader_s: Option<f64>,
    pub last_reader_s: Option<f64>,
    /// For the closed readers, at their close: time since their last delivery (µs),
    /// accepted messages they had not received, and their connection's queues at the last
    /// sample before it (bytes unread by the tool, bytes not yet across from the server).
    pub since_delivery_us: Spread,
    pub behind_messages: Spread,
    pub unread_bytes: Spread,
    pub unsent_bytes: Spread,
    /// Closed readers whose socket held at least [`LAGGING_BYTES`] unread at the last sample
    /// before the close (the reader was behind what the server had written), and those
    /// whose socket held less (it was taking what came).
    pub readers_lagging: u64,
    pub readers_keeping_up: u64,
    /// Readers closed in each second of the run.
    pub readers_per_second: Vec<u64>,
    /// Every closed reader, in the order of their closes.
    pub closed_readers: Vec<ClosedReader>,
}

/// Unread bytes in a reader's socket from which it counts as lagging: a few frames' worth
/// is a reader between two reads, this much is a backlog.
pub const LAGGING_BYTES: u64 = 64 * 1024;

/// One reader the server closed.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedReader {
    pub member: usize,
    /// Seconds since the start of the flood.
    pub at_s: f64,
    pub code: Option<u16>,
    pub reason: String,
    pub since_delivery_ms: f64,
    /// Accepted messages it had not received.
    pub behind: u64,
    /// Its connection's queues at the last sample before the close (bytes).
    pub unread: Option<u64>,
    pub unsent: Option<u64>,
}

/// The readers' connection queues over the run (`/proc/net/tcp`).
#[derive(Debug, Default, Serialize)]
pub struct Queues {
    pub sampled: bool,
    pub unread_peak_bytes: u64,
    pub unsent_peak_bytes: u64,
    pub series: Vec<QueuePoint>,
}

/// The quiet pair: one chat every interval, in a room of their own.
#[derive(Debug, Default, Serialize)]
pub struct Quiet {
    pub interval_ms: u64,
    pub sent: u64,
    pub delivered: u64,
    /// Refused with an error.
    pub refused: u64,
    /// Accepted (echoed) and never delivered to the other member.
    pub undelivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Send → delivery to the other member.
    pub latency: Latency,
    /// The worst latency of the chats sent in each second of the flood, µs (0: none).
    pub worst_per_second_us: Vec<u64>,
}

/// `/health` during the flood.
#[derive(Debug, Default, Serialize)]
pub struct HealthSection {
    pub probes: u64,
    pub answered: u64,
    pub unanswered: u64,
    pub timeout_ms: f64,
    pub answer_ms_p50: Option<f64>,
    pub answer_ms_max: Option<f64>,
    pub first_unanswered_s: Option<f64>,
    pub errors: BTreeMap<String, u64>,
    pub series: Vec<HealthProbe>,
}

/// What `run` hands over besides the outcomes.
pub struct Extras {
    pub stuck: u64,
    pub joined: u64,
    pub ran_secs: f64,
    pub health: Vec<HealthProbe>,
    pub queues: Vec<QueuePoint>,
    pub counters: Option<ServerCounters>,
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Sender => "sender",
        Role::Reader => "reader",
        Role::QuietSender => "quiet sender",
        Role::QuietReader => "quiet reader",
    }
}

pub fn build_report(a: &FloodArgs, sh: &Shared, outcomes: &[Outcome], x: Extras) -> Report {
    let start_ns = sh.start_ns.load(Ordering::SeqCst);
    let secs_since_start = |ns: u64| ns.saturating_sub(start_ns) as f64 / 1e9;
    let last_accepted = sh.room.seqs.last_accepted();
    let mut r = Report::default();
    let mut conns = Connections {
        attempted: a.members() as u64,
        ..Connections::default()
    };
    let mut del = Deliveries::default();
    let mut f = FloodSection {
        senders: a.senders as u64,
        readers: a.readers as u64,
        offered_per_sec: a.rate,
        flood_secs: a.duration,
        ..FloodSection::default()
    };
    let mut malformed = 0;
    let mut reader_gaps = new_histogram();
    let mut sender_gaps = new_histogram();
    let (mut since, mut behind, mut unread, mut unsent) = (vec![], vec![], vec![], vec![]);
    let mut quiet_accepted = 0;
    for o in outcomes {
        if !o.setup.add_to(&mut conns) {
            continue;
        }
        malformed += o.chats.malformed;
        if let Some(c) = &o.closed {
            conns.dropped += 1;
            let key = format!("{}: {}", role_name(o.role), c.reason);
            *conns.drop_reasons.entry(key).or_default() += 1;
            let by_role = match o.role {
                Role::Reader => &mut f.closes.readers,
                Role::Sender => &mut f.closes.senders,
                Role::QuietSender | Role::QuietReader => &mut f.closes.quiet,
            };
            *by_role.entry(c.reason.clone()).or_default() += 1;
            if o.role == Role::Reader {
                if c.code == Some(4001) {
                    f.closes.readers_slow += 1;
                } else {
                    f.closes.readers_other += 1;
                }
                let at = secs_since_start(c.at_ns);
                f.closes.first_reader_s = Some(f.closes.first_reader_s.map_or(at, |s| s.min(at)));
                f.closes.last_reader_s = Some(f.closes.last_reader_s.map_or(at, |s| s.max(at)));
                since.push(c.since_delivery_ns / 1_000);
                behind.push(c.behind);
                unread.extend(c.unread);
                unsent.extend(c.unsent);
                match c.unread {
                    Some(b) if b >= LAGGING_BYTES => f.closes.readers_lagging += 1,
                    Some(_) => f.closes.readers_keeping_up += 1,
                    None => {}
                }
                let second = at.max(0.0) as usize;
                let per_second = &mut f.closes.readers_per_second;
                if per_second.len() <= second {
                    per_second.resize(second + 1, 0);
                }
                per_second[second] += 1;
                f.closes.closed_readers.push(ClosedReader {
                    member: o.idx,
                    at_s: at,
                    code: c.code,
                    reason: c.reason.clone(),
                    since_delivery_ms: c.since_delivery_ns as f64 / 1e6,
                    behind: c.behind,
                    unread: c.unread,
                    unsent: c.unsent,
                });
            }
        }
        match o.role {
            Role::Sender | Role::Reader => {
                // A closed member is expected to have what came before its close; an open one
                // everything the room accepted.
                let tail = match o.closed {
                    Some(_) => 0,
                    None => last_accepted.saturating_sub(o.last_seq),
                };
                let upto = if o.closed.is_some() {
                    o.last_seq
                } else {
                    last_accepted.max(o.last_seq)
                };
                del.expected += upto.saturating_sub(o.base_seq);
                del.measured += o.measured;
                o.chats.add_to(&mut del, tail);
                f.missing_at_end += tail;
                let gap_us = (o.max_gap_ns / 1_000).clamp(1, crate::stats::MAX_US);
                if o.role == Role::Reader {
                    reader_gaps.saturating_record(gap_us);
                    if o.max_gap_ns / 1_000 > f.gaps.longest_us {
                        f.gaps.longest_us = o.max_gap_ns / 1_000;
                        f.gaps.longest_reader = Some(o.idx);
                        f.gaps.longest_end_s = secs_since_start(o.max_gap_end_ns);
                    }
                } else {
                    sender_gaps.saturating_record(gap_us);
                    f.sent += o.sent;
                    f.accepted += o.echoes;
                    f.overloaded += o.overloaded;
                    f.rate_limited += o.rate_limited;
                    for (k, v) in &o.errors {
                        *f.other_errors.entry(k.clone()).or_default() += v;
                    }
                }
            }
            Role::QuietSender => {
                f.quiet.sent = o.sent;
                f.quiet.refused = o.overloaded + o.rate_limited + o.errors.values().sum::<u64>();
                quiet_accepted = o.echoes;
            }
            Role::QuietReader => {
                let c = &o.chats;
                f.quiet.delivered = c.received - c.duplicated;
                f.quiet.lost = c.gap_lost.saturating_sub(c.late);
                f.quiet.duplicated = c.duplicated;
                f.quiet.out_of_order = c.late;
            }
        }
    }
    f.quiet.undelivered = quiet_accepted.saturating_sub(f.quiet.delivered);
    f.unanswered = f
        .sent
        .saturating_sub(f.accepted + f.overloaded + f.rate_limited)
        .saturating_sub(f.other_errors.values().sum::<u64>());
    f.sending_secs = match sh.room.sending_ended_ns.load(Ordering::SeqCst) {
        super::UNKNOWN => a.duration,
        end => secs_since_start(end).min(a.duration),
    };
    f.sent_per_sec = f.sent as f64 / f.sending_secs.max(1e-3);
    f.gaps.readers_us = Percentiles::of(&reader_gaps);
    f.gaps.senders_us = Percentiles::of(&sender_gaps);
    f.closes
        .closed_readers
        .sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    f.closes.since_delivery_us = Spread::of(since);
    f.closes.behind_messages = Spread::of(behind);
    f.closes.unread_bytes = Spread::of(unread);
    f.closes.unsent_bytes = Spread::of(unsent);
    f.queues = Queues {
        sampled: outcomes
            .iter()
            .any(|o| sh.queues[o.idx].seen.load(Ordering::Relaxed)),
        unread_peak_bytes: x.queues.iter().map(|p| p.unread_max).max().unwrap_or(0),
        unsent_peak_bytes: x.queues.iter().map(|p| p.unsent_max).max().unwrap_or(0),
        series: x.queues,
    };
    let quiet_lat = sh.quiet_latency.merged();
    f.quiet.interval_ms = a.quiet_interval_ms;
    f.quiet.latency = Latency {
        what: "send → delivery to the other member of the quiet pair".to_string(),
        us: Percentiles::of(&quiet_lat),
        buckets: log_buckets(&quiet_lat),
    };
    f.quiet.worst_per_second_us = sh
        .quiet_worst
        .iter()
        .take(a.duration.ceil() as usize)
        .map(|w| w.load(Ordering::Relaxed))
        .collect();
    f.health = health_section(x.health, a.health_timeout);
    f.server_counters = x.counters;
    sh.setup.add_to(&mut conns, x.stuck);
    del.measured_secs = a.duration;
    del.per_sec = del.measured as f64 / a.duration;

    let p = &mut r.problems;
    if x.joined == 0 {
        p.push("no member could connect and join".to_string());
    }
    if conns.failed > 0 {
        p.push(format!("{} connections failed", conns.failed));
    }
    for (role, closes) in [
        ("readers", &f.closes.readers),
        ("senders", &f.closes.senders),
        ("quiet pair members", &f.closes.quiet),
    ] {
        let n: u64 = closes.values().sum();
        if n > 0 {
            p.push(format!(
                "{n} {role} were closed by the server ({})",
                closes
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if del.lost > 0 {
        p.push(format!(
            "{} deliveries lost ({} of them still missing when the run ended)",
            del.lost, f.missing_at_end
        ));
    }
    if del.duplicated > 0 {
        p.push(format!("{} deliveries duplicated", del.duplicated));
    }
    if del.out_of_order > 0 {
        p.push(format!("{} deliveries out of order", del.out_of_order));
    }
    if malformed > 0 {
        p.push(format!("{malformed} chat frames without a readable seq"));
    }
    let q = &f.quiet;
    if q.undelivered + q.lost + q.duplicated + q.out_of_order > 0 {
        p.push(format!(
            "quiet room: {} chats accepted and never delivered, {} lost, {} duplicated, {} out of order",
            q.undelivered, q.lost, q.duplicated, q.out_of_order
        ));
    }
    if f.health.unanswered > 0 {
        p.push(format!(
            "{} of {} /health probes got no answer within {:.0} ms",
            f.health.unanswered, f.health.probes, f.health.timeout_ms
        ));
    }
    if x.joined > 0 && f.sent == 0 {
        p.push("no message was sent".to_string());
    }

    let lat = sh.latency.merged();
    let keep = (x.ran_secs.ceil() as usize + 1).max(a.duration.ceil() as usize);
    let mut per_second = sh.timeline.snapshot(keep);
    let busy = per_second.iter().rposition(|&v| v > 0).map_or(0, |i| i + 1);
    per_second.truncate(busy.max(a.duration.ceil() as usize));
    r.connections = conns;
    r.deliveries = Some(del);
    r.latency = Some(Latency {
        what: "send → delivery to a reader, flood room".to_string(),
        us: Percentiles::of(&lat),
        buckets: log_buckets(&lat),
    });
    r.timeline = Some(TimelineSection {
        what: "deliveries".to_string(),
        per_second,
        measure_from_s: 0.0,
        measure_to_s: a.duration,
    });
    r.flood = Some(f);
    r
}

fn health_section(probes: Vec<HealthProbe>, timeout_s: f64) -> HealthSection {
    let mut h = HealthSection {
        probes: probes.len() as u64,
        timeout_ms: timeout_s * 1_000.0,
        ..HealthSection::default()
    };
    let mut times: Vec<f64> = probes.iter().filter_map(|p| p.ms).collect();
    times.sort_by(f64::total_cmp);
    h.answered = times.len() as u64;
    h.unanswered = h.probes - h.answered;
    h.answer_ms_p50 = times.get(times.len().saturating_sub(1) / 2).copied();
    h.answer_ms_max = times.last().copied();
    for p in &probes {
        if let Some(e) = &p.error {
            *h.errors.entry(e.clone()).or_default() += 1;
            h.first_unanswered_s.get_or_insert(p.at_s);
        }
    }
    h.series = probes;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_lower_median_and_the_max() {
        let s = Spread::of(vec![5, 1, 9, 3]);
        assert_eq!((s.count, s.p50, s.max), (4, 3, 9));
        let e = Spread::of(Vec::new());
        assert_eq!((e.count, e.p50, e.max), (0, 0, 0));
    }

    #[test]
    fn health_counts_unanswered_probes() {
        let probes = vec![
            HealthProbe {
                at_s: 0.0,
                ms: Some(2.0),
                error: None,
            },
            HealthProbe {
                at_s: 1.0,
                ms: None,
                error: Some("no answer within 2s".to_string()),
            },
            HealthProbe {
                at_s: 2.0,
                ms: Some(4.0),
                error: None,
            },
        ];
        let h = health_section(probes, 2.0);
        assert_eq!((h.probes, h.answered, h.unanswered), (3, 2, 1));
        assert_eq!((h.answer_ms_p50, h.answer_ms_max), (Some(2.0), Some(4.0)));
        assert_eq!(h.first_unanswered_s, Some(1.0));
        assert_eq!(h.timeout_ms, 2000.0);
    }
}
