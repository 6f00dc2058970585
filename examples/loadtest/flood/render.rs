//! The flood section as people read it: rows for the text summary and the HTML table, and
//! the HTML report's charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::summary::{FloodSection, LAGGING_BYTES};
use crate::charts::{self, Unit};
use crate::report::{Section, TimelineSection};
use crate::stats::{fmt_bytes, fmt_us};

fn reasons(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".to_string();
    }
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(us: u64) -> String {
    fmt_us(us as f64)
}

/// The flood section's rows for the text summary and the HTML table.
pub fn sections(f: &FloodSection) -> Vec<Section> {
    let row = |k: &str, v: String| (k.to_string(), v);
    let mut out = Vec::new();
    let offered = if f.offered_per_sec > 0.0 {
        format!("{:.0} messages/s offered", f.offered_per_sec)
    } else {
        "as fast as the sockets took them".to_string()
    };
    let mut rows = vec![
        row(
            "shape",
            format!(
                "{} senders ({offered}), {} readers, {:.0} s",
                f.senders, f.readers, f.flood_secs
            ),
        ),
        row(
            "sent / accepted",
            format!(
                "{} ({:.0}/s over {:.1} s of sending) / {}",
                f.sent, f.sent_per_sec, f.sending_secs, f.accepted
            ),
        ),
        row("refused overloaded", f.overloaded.to_string()),
    ];
    if f.rate_limited > 0 {
        rows.push(row("refused rate_limited", f.rate_limited.to_string()));
    }
    if !f.other_errors.is_empty() {
        rows.push(row("other errors", reasons(&f.other_errors)));
    }
    rows.push(row("never answered", f.unanswered.to_string()));
    if let Some(c) = &f.server_counters {
        rows.push(row(
            "server counters (growth)",
            format!(
                "overloaded {}, slow consumers closed {}, deliveries {}, frames sent {}",
                c.overloaded, c.slow_consumers_closed, c.deliveries, c.frames_sent
            ),
        ));
    }
    out.push(Section {
        title: "flood".to_string(),
        rows,
    });

    let g = &f.gaps;
    out.push(Section {
        title: "time without a delivery".to_string(),
        rows: vec![
            row(
                "longest, any reader",
                match g.longest_reader {
                    Some(i) => format!(
                        "{} (member {i}, ending {:.1} s into the flood)",
                        ms(g.longest_us),
                        g.longest_end_s
                    ),
                    None => "no readers".to_string(),
                },
            ),
            row(
                "each reader's longest",
                format!(
                    "p50 {}  p90 {}  max {}",
                    ms(g.readers_us.p50),
                    ms(g.readers_us.p90),
                    ms(g.readers_us.max)
                ),
            ),
            row(
                "each sender's longest",
                format!("p50 {}  max {}", ms(g.senders_us.p50), ms(g.senders_us.max)),
            ),
        ],
    });

    let c = &f.closes;
    let mut rows = vec![
        row(
            "readers closed",
            format!(
                "{} of {} as slow consumers (4001), {} otherwise",
                c.readers_slow, f.readers, c.readers_other
            ),
        ),
        row("readers, by reason", reasons(&c.readers)),
        row("senders, by reason", reasons(&c.senders)),
        row("quiet pair, by reason", reasons(&c.quiet)),
    ];
    if let (Some(a), Some(b)) = (c.first_reader_s, c.last_reader_s) {
        rows.push(row(
            "readers closed between",
            format!("{a:.1} s and {b:.1} s into the flood"),
        ));
        rows.push(row(
            "at the close: since last delivery",
            format!(
                "p50 {}  max {}",
                ms(c.since_delivery_us.p50),
                ms(c.since_delivery_us.max)
            ),
        ));
        rows.push(row(
            "at the close: accepted, not received",
            format!(
                "p50 {}  max {} messages",
                c.behind_messages.p50, c.behind_messages.max
            ),
        ));
        rows.push(row(
            "at the close: unread by the reader",
            if c.unread_bytes.count > 0 {
                format!(
                    "p50 {}  max {}  (socket receive queue, last sample before the close; {} readers sampled)",
                    fmt_bytes(c.unread_bytes.p50 as f64),
                    fmt_bytes(c.unread_bytes.max as f64),
                    c.unread_bytes.count
                )
            } else {
                "not sampled".to_string()
            },
        ));
        rows.push(row(
            "lagging / keeping up at the close",
            format!(
                "{} / {}  (at least / under {} unread at the last sample)",
                c.readers_lagging,
                c.readers_keeping_up,
                fmt_bytes(LAGGING_BYTES as f64)
            ),
        ));
        rows.push(row(
            "at the close: not yet across",
            if c.unsent_bytes.count > 0 {
                format!(
                    "p50 {}  max {}  (server socket's send queue)",
                    fmt_bytes(c.unsent_bytes.p50 as f64),
                    fmt_bytes(c.unsent_bytes.max as f64)
                )
            } else {
                "not sampled".to_string()
            },
        ));
    }
    out.push(Section {
        title: "closes".to_string(),
        rows,
    });

    out.push(Section {
        title: "readers' connections (kernel queues, every 250 ms)".to_string(),
        rows: vec![row(
            "peak unread by a reader / not yet across",
            if f.queues.sampled {
                format!(
                    "{} / {}",
                    fmt_bytes(f.queues.unread_peak_bytes as f64),
                    fmt_bytes(f.queues.unsent_peak_bytes as f64)
                )
            } else {
                "not sampled (no /proc/net/tcp)".to_string()
            },
        )],
    });

    let q = &f.quiet;
    out.push(Section {
        title: format!("quiet room (one chat every {} ms)", q.interval_ms),
        rows: vec![
            row(
                "sent / delivered / refused / undelivered",
                format!(
                    "{} / {} / {} / {}",
                    q.sent, q.delivered, q.refused, q.undelivered
                ),
            ),
            row(
                "latency",
                if q.latency.us.count > 0 {
                    format!(
                        "p50 {}  p99 {}  max {}",
                        ms(q.latency.us.p50),
                        ms(q.latency.us.p99),
                        ms(q.latency.us.max)
                    )
                } else {
                    "no samples".to_string()
                },
            ),
        ],
    });

    let h = &f.health;
    let mut rows = vec![
        row(
            "answered / probes",
            format!(
                "{} / {}  (timeout {:.0} ms)",
                h.answered, h.probes, h.timeout_ms
            ),
        ),
        row(
            "answer time",
            match (h.answer_ms_p50, h.answer_ms_max) {
                (Some(p), Some(m)) => format!("p50 {p:.1} ms  max {m:.1} ms"),
                _ => "no answers".to_string(),
            },
        ),
    ];
    if let Some(s) = h.first_unanswered_s {
        rows.push(row(
            "unanswered",
            format!("first at {s:.1} s; {}", reasons(&h.errors)),
        ));
    }
    out.push(Section {
        title: "/health during the flood".to_string(),
        rows,
    });
    out
}

/// The flood section's charts for the HTML report.
pub fn charts(f: &FloodSection) -> String {
    let mut s = String::new();
    let x = "seconds since the start of the flood";
    let unread: Vec<(f64, f64)> = f
        .queues
        .series
        .iter()
        .map(|p| (p.t, p.unread_max as f64))
        .collect();
    let unsent: Vec<(f64, f64)> = f
        .queues
        .series
        .iter()
        .map(|p| (p.t, p.unsent_max as f64))
        .collect();
    let quiet: Vec<(f64, f64)> = f
        .quiet
        .worst_per_second_us
        .iter()
        .enumerate()
        .filter(|(_, us)| **us > 0)
        .map(|(i, &us)| (i as f64, us as f64 / 1_000.0))
        .collect();
    let health: Vec<(f64, f64)> = f
        .health
        .series
        .iter()
        .map(|p| (p.at_s, p.ms.unwrap_or(f.health.timeout_ms)))
        .collect();
    let _ = write!(
        s,
        "<h2>Quiet room: worst latency of the chats sent each second</h2>\n{}\n\
         <h2>/health answer time (unanswered probes drawn at the timeout)</h2>\n{}\n\
         <h2>Readers' sockets: most bytes unread by any reader</h2>\n{}\n\
         <h2>Server's sockets to the readers: most bytes not yet across</h2>\n{}\n",
        charts::line(&quiet, x, Unit::Millis),
        charts::line(&health, x, Unit::Millis),
        charts::line(&unread, x, Unit::Bytes),
        charts::line(&unsent, x, Unit::Bytes),
    );
    if !f.closes.readers_per_second.is_empty() {
        let closes = TimelineSection {
            what: "readers closed".to_string(),
            per_second: f.closes.readers_per_second.clone(),
            measure_from_s: 0.0,
            measure_to_s: f.flood_secs,
        };
        let _ = write!(
            s,
            "<h2>Readers closed per second</h2>\n{}\n",
            charts::timeline(&closes)
        );
    }
    if f.quiet.latency.us.count > 0 {
        let _ = write!(
            s,
            "<h2>Quiet room latency histogram ({})</h2>\n{}\n",
            crate::report::esc(&f.quiet.latency.what),
            charts::latency_histogram(&f.quiet.latency.buckets, &f.quiet.latency.us)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_charts_render() {
        let mut f = FloodSection {
            senders: 3,
            readers: 2,
            ..FloodSection::default()
        };
        f.closes.readers_slow = 1;
        f.closes.first_reader_s = Some(1.0);
        f.closes.last_reader_s = Some(1.0);
        f.closes
            .readers
            .insert("closed by server: 4001 slow consumer".to_string(), 1);
        let text: Vec<String> = sections(&f)
            .iter()
            .flat_map(|s| s.rows.iter().map(|(k, v)| format!("{k} {v}")))
            .collect();
        assert!(text.iter().any(|r| r.contains("1 of 2 as slow consumers")));
        assert!(text.iter().any(|r| r.contains("as fast as the sockets")));
        assert!(charts(&f).contains("Quiet room"));
    }
}
