//! The run's result, and its three renderings: a text summary on stdout, a JSON file and a
//! self-contained HTML file.
//!
//! Every scenario fills one [`Report`]; sections that do not apply stay `None` and are left out
//! everywhere. The text summary and the HTML table come from the same [`sections`] list, so the
//! two always agree. The HTML page loads nothing: its charts are inline SVG from `charts.rs`
//! (bars with native `<title>` tooltips, no script), its style is inline.
//!
//! The verdict is computed by the scenario (a list of `problems`): an empty list means the run
//! passed and the tool exits 0.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::charts::{self, Unit};
use crate::flood::FloodSection;
use crate::proc::ServerStats;
use crate::stats::{Bucket, Percentiles, fmt_bytes, fmt_us};

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub tool: String,
    pub scenario: String,
    pub command_line: String,
    pub url: String,
    pub started_at: String,
    pub wall_secs: f64,
    pub passed: bool,
    /// Why the run failed (exit status 1); empty when it passed.
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    /// The scenario's parameters.
    pub settings: serde_json::Value,
    pub connections: Connections,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Messages>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Deliveries>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<TimelineSection>,
    /// `fanout --ack`: acknowledged (committed) chats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acks: Option<AckSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifySection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<FloodSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm: Option<crate::storm::StormSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerStats>,
    pub tool_process: ToolStats,
}

#[derive(Debug, Default, Serialize)]
pub struct Connections {
    pub attempted: u64,
    pub made: u64,
    /// Could not be opened, or opened but not joined in time.
    pub failed: u64,
    /// Opened, then lost before the run ended.
    pub dropped: u64,
    pub failure_reasons: BTreeMap<String, u64>,
    pub drop_reasons: BTreeMap<String, u64>,
    /// TCP connect + WebSocket upgrade.
    pub connect_latency_us: Percentiles,
    pub connect_buckets: Vec<Bucket>,
}

#[derive(Debug, Default, Serialize)]
pub struct Messages {
    pub sent: u64,
    /// Messages the server accepted: echoed back to their sender (or seen by members, when a
    /// sender lost its socket before its echoes).
    pub accepted: u64,
    pub rate_limited: u64,
    pub other_errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Deliveries {
    /// Accepted messages × members of their room.
    pub expected: u64,
    pub received: u64,
    /// `seq` gaps never filled, plus messages a receiver never got by the end.
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Chat frames whose text is not the tool's (someone else in the room).
    pub foreign: u64,
    /// Deliveries received during the measured window (after warm-up).
    pub measured: u64,
    pub measured_secs: f64,
    pub per_sec: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    /// What is measured, e.g. "send → delivery".
    pub what: String,
    pub us: Percentiles,
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Default, Serialize)]
pub struct TimelineSection {
    /// What is counted per second, e.g. "deliveries".
    pub what: String,
    pub per_second: Vec<u64>,
    /// The measured window, in seconds since the timeline's start.
    pub measure_from_s: f64,
    pub measure_to_s: f64,
}

/// `fanout --ack`: each chat carries a `client_msg_id`, and the server's `ack` (sent once the
/// message is committed) releases the sender's window.
#[derive(Debug, Default, Serialize)]
pub struct AckSection {
    /// First acks received (one per acknowledged message).
    pub acked: u64,
    /// First acks received during the measured window.
    pub measured: u64,
    pub measured_secs: f64,
    /// Acknowledged chats per second in the measured window.
    pub per_sec: f64,
    /// A second ack for the same message.
    pub duplicated: u64,
    /// Acks for a `client_msg_id` the sender never sent.
    pub unknown: u64,
    /// Ack and echo of one message with different `seq`s.
    pub seq_mismatch: u64,
    /// Echoed (stored and delivered) but never acknowledged.
    pub echoed_not_acked: u64,
    /// Acknowledged, but the sender never got its echo.
    pub acked_not_echoed: u64,
    /// Neither ack nor echo: lost, or answered by an `error`.
    pub unanswered: u64,
    /// Send → ack, for messages sent in the measured window.
    pub latency: Latency,
    pub timeline: TimelineSection,
}

/// The server's `/health` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub connections: u64,
    pub users: u64,
    pub rooms: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct IdleSection {
    pub connections: u64,
    pub room_size: u64,
    pub held_secs: f64,
    /// `joined` round trip after `welcome`.
    pub join_latency_us: Percentiles,
    pub rss_before_bytes: Option<u64>,
    pub rss_connected_bytes: Option<u64>,
    pub rss_held_bytes: Option<u64>,
    pub rss_after_close_bytes: Option<u64>,
    /// (RSS at the end of the hold − RSS before) / connections made.
    pub rss_per_connection_bytes: Option<f64>,
    /// `/proc/net/sockstat` before connecting and while held (`None` where it is unreadable).
    pub kernel_tcp_before: Option<KernelTcp>,
    pub kernel_tcp_held: Option<KernelTcp>,
    pub health_before: Option<Health>,
    pub health_held: Option<Health>,
    pub health_after: Option<Health>,
}

/// The machine's TCP sockets in use and the bytes of their buffers (`mem` pages).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KernelTcp {
    pub sockets: u64,
    pub buffer_bytes: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct ChurnSection {
    pub cycles: u64,
    pub completed: u64,
    pub failed: u64,
    pub failure_reasons: BTreeMap<String, u64>,
    pub cycles_per_sec: f64,
    pub cycle_latency_us: Percentiles,
    pub rss_start_bytes: Option<u64>,
    pub rss_end_bytes: Option<u64>,
    pub health_before: Option<Health>,
    pub health_after: Option<Health>,
    pub back_to_baseline: Option<bool>,
}

#[derive(Debug, Default, Serialize)]
pub struct NotifySection {
    pub sockets: u64,
    pub pushes: u64,
    pub push_ok: u64,
    pub push_failed: u64,
    pub push_failure_reasons: BTreeMap<String, u64>,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub per_sec: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct ToolStats {
    pub threads: usize,
    pub cpu_secs: f64,
    pub cpu_pct_avg: f64,
    pub rss_peak_bytes: u64,
}

/// A titled group of (label, value) rows.
pub struct Section {
    pub title: String,
    pub rows: Vec<(String, String)>,
}

fn pct_line(p: &Percentiles) -> String {
    if p.count == 0 {
        return "no samples".to_string();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
        fmt_us(p.p50 as f64),
        fmt_us(p.p90 as f64),
        fmt_us(p.p99 as f64),
        fmt_us(p.p999 as f64),
        fmt_us(p.max as f64),
        p.count
    )
}

fn reasons(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn opt_bytes(b: Option<u64>) -> String {
    b.map_or("-".to_string(), |b| fmt_bytes(b as f64))
}

fn health_line(h: Option<&Health>) -> String {
    h.map_or("unavailable".to_string(), |h| {
        format!(
            "connections {}, users {}, rooms {}",
            h.connections, h.users, h.rooms
        )
    })
}

/// The report as titled rows, shared by the text and HTML renderings.
pub fn sections(r: &Report) -> Vec<Section> {
    let mut out = Vec::new();
    let c = &r.connections;
    let mut rows = vec![
        (
            "made / attempted".to_string(),
            format!(
                "{} / {}  ({} failed, {} dropped)",
                c.made, c.attempted, c.failed, c.dropped
            ),
        ),
        (
            "connect latency".to_string(),
            pct_line(&c.connect_latency_us),
        ),
    ];
    if !c.failure_reasons.is_empty() {
        rows.push(("failures".to_string(), reasons(&c.failure_reasons)));
    }
    if !c.drop_reasons.is_empty() {
        rows.push(("drops".to_string(), reasons(&c.drop_reasons)));
    }
    out.push(Section {
        title: "connections".to_string(),
        rows,
    });

    if let Some(m) = &r.messages {
        let mut rows = vec![
            ("sent".to_string(), m.sent.to_string()),
            ("accepted by the server".to_string(), m.accepted.to_string()),
            (
                "rate_limited errors".to_string(),
                if m.rate_limited > 0 {
                    format!(
                        "{}  <- the server's rate limit dropped these; restart it with --rate-per-sec 0",
                        m.rate_limited
                    )
                } else {
                    "0".to_string()
                },
            ),
        ];
        if !m.other_errors.is_empty() {
            rows.push(("other errors".to_string(), reasons(&m.other_errors)));
        }
        out.push(Section {
            title: "messages".to_string(),
            rows,
        });
    }

    if let Some(d) = &r.deliveries {
        let mut rows = vec![
            (
                "expected / received".to_string(),
                format!("{} / {}", d.expected, d.received),
            ),
            (
                "lost / duplicated / out of order".to_string(),
                format!("{} / {} / {}", d.lost, d.duplicated, d.out_of_order),
            ),
            (
                "deliveries per second".to_string(),
                format!(
                    "{:.0}  ({} in the {:.1} s measured window)",
                    d.per_sec, d.measured, d.measured_secs
                ),
            ),
        ];
        if d.foreign > 0 {
            rows.push(("foreign chat frames".to_string(), d.foreign.to_string()));
        }
        out.push(Section {
            title: "deliveries".to_string(),
            rows,
        });
    }

    if let Some(l) = r.latency.as_ref().filter(|l| l.us.count == 0) {
        out.push(Section {
            title: format!("latency ({})", l.what),
            rows: vec![("samples".to_string(), "none".to_string())],
        });
    }
    if let Some(l) = r.latency.as_ref().filter(|l| l.us.count > 0) {
        out.push(Section {
            title: format!("latency ({})", l.what),
            rows: vec![
                ("p50".to_string(), fmt_us(l.us.p50 as f64)),
                ("p90".to_string(), fmt_us(l.us.p90 as f64)),
                ("p99".to_string(), fmt_us(l.us.p99 as f64)),
                ("p99.9".to_string(), fmt_us(l.us.p999 as f64)),
                ("max".to_string(), fmt_us(l.us.max as f64)),
                (
                    "mean / samples".to_string(),
                    format!("{} / {}", fmt_us(l.us.mean), l.us.count),
                ),
            ],
        });
    }

    if let Some(f) = &r.flood {
        out.extend(crate::flood::sections(f));
    }
    if let Some(s) = &r.storm {
        out.extend(crate::storm::sections(s));
    }

    if let Some(a) = &r.acks {
        out.push(Section {
            title: "acks (committed chats, acknowledged to their senders)".to_string(),
            rows: vec![
                (
                    "acked / duplicated / unknown".to_string(),
                    format!("{} / {} / {}", a.acked, a.duplicated, a.unknown),
                ),
                (
                    "acked chats per second".to_string(),
                    format!(
                        "{:.0}  ({} in the {:.1} s measured window)",
                        a.per_sec, a.measured, a.measured_secs
                    ),
                ),
                ("ack seq ≠ echo seq".to_string(), a.seq_mismatch.to_string()),
                (
                    "echoed, not acked / acked, not echoed / neither".to_string(),
                    format!(
                        "{} / {} / {}",
                        a.echoed_not_acked, a.acked_not_echoed, a.unanswered
                    ),
                ),
                (
                    format!("latency ({})", a.latency.what),
                    pct_line(&a.latency.us),
                ),
            ],
        });
    }

    if let Some(i) = &r.idle {
        out.push(Section {
            title: "idle".to_string(),
            rows: vec![
                (
                    "held".to_string(),
                    format!(
                        "{} connections in rooms of {} for {:.1} s",
                        i.connections, i.room_size, i.held_secs
                    ),
                ),
                ("join latency".to_string(), pct_line(&i.join_latency_us)),
                (
                    "server RSS before / connected / held / after close".to_string(),
                    format!(
                        "{} / {} / {} / {}",
                        opt_bytes(i.rss_before_bytes),
                        opt_bytes(i.rss_connected_bytes),
                        opt_bytes(i.rss_held_bytes),
                        opt_bytes(i.rss_after_close_bytes)
                    ),
                ),
                (
                    "server RSS per connection".to_string(),
                    i.rss_per_connection_bytes
                        .map_or("- (needs --server-pid)".to_string(), fmt_bytes),
                ),
                (
                    "kernel TCP sockets / buffers, before / held".to_string(),
                    match (i.kernel_tcp_before, i.kernel_tcp_held) {
                        (Some(b), Some(h)) => format!(
                            "{} / {} before, {} / {} held ({} per socket added, both ends)",
                            b.sockets,
                            fmt_bytes(b.buffer_bytes as f64),
                            h.sockets,
                            fmt_bytes(h.buffer_bytes as f64),
                            fmt_bytes(
                                (h.buffer_bytes as f64 - b.buffer_bytes as f64)
                                    / (h.sockets.saturating_sub(b.sockets)).max(1) as f64
                            )
                        ),
                        _ => "- (/proc/net/sockstat unreadable)".to_string(),
                    },
                ),
                (
                    "/health before".to_string(),
                    health_line(i.health_before.as_ref()),
                ),
                (
                    "/health while held".to_string(),
                    health_line(i.health_held.as_ref()),
                ),
                (
                    "/health after".to_string(),
                    health_line(i.health_after.as_ref()),
                ),
            ],
        });
    }

    if let Some(ch) = &r.churn {
        let mut rows = vec![
            (
                "completed / cycles".to_string(),
                format!("{} / {}  ({} failed)", ch.completed, ch.cycles, ch.failed),
            ),
            (
                "cycles per second".to_string(),
                format!("{:.1}", ch.cycles_per_sec),
            ),
            ("cycle time".to_string(), pct_line(&ch.cycle_latency_us)),
            (
                "server RSS start / end".to_string(),
                format!(
                    "{} / {}",
                    opt_bytes(ch.rss_start_bytes),
                    opt_bytes(ch.rss_end_bytes)
                ),
            ),
            (
                "/health before".to_string(),
                health_line(ch.health_before.as_ref()),
            ),
            (
                "/health after".to_string(),
                format!(
                    "{}{}",
                    health_line(ch.health_after.as_ref()),
                    match ch.back_to_baseline {
                        Some(true) => "  (back to baseline)",
                        Some(false) => "  (NOT back to baseline)",
                        None => "",
                    }
                ),
            ),
        ];
        if !ch.failure_reasons.is_empty() {
            rows.push(("failures".to_string(), reasons(&ch.failure_reasons)));
        }
        out.push(Section {
            title: "churn".to_string(),
            rows,
        });
    }

    if let Some(n) = &r.notify {
        let mut rows = vec![
            (
                "pushes ok / sent".to_string(),
                format!("{} / {}  ({} failed)", n.push_ok, n.pushes, n.push_failed),
            ),
            (
                "received / lost / duplicated".to_string(),
                format!("{} / {} / {}", n.received, n.lost, n.duplicated),
            ),
            ("pushes per second".to_string(), format!("{:.1}", n.per_sec)),
        ];
        if !n.push_failure_reasons.is_empty() {
            rows.push((
                "push failures".to_string(),
                reasons(&n.push_failure_reasons),
            ));
        }
        out.push(Section {
            title: "notifications".to_string(),
            rows,
        });
    }

    if let Some(s) = &r.server {
        out.push(Section {
            title: format!("server (pid {}, {})", s.pid, s.name),
            rows: vec![
                (
                    "CPU".to_string(),
                    format!(
                        "{:.2} s  ({:.0}% of one core on average{})",
                        s.cpu_secs,
                        s.cpu_pct_avg,
                        if s.alive_at_end {
                            ""
                        } else {
                            "; the process went away"
                        }
                    ),
                ),
                (
                    "RSS start / peak / end".to_string(),
                    format!(
                        "{} / {} / {}",
                        fmt_bytes(s.rss_start_bytes as f64),
                        fmt_bytes(s.rss_peak_bytes as f64),
                        fmt_bytes(s.rss_end_bytes as f64)
                    ),
                ),
            ],
        });
    }

    let t = &r.tool_process;
    out.push(Section {
        title: "load tool".to_string(),
        rows: vec![
            (
                "CPU".to_string(),
                format!(
                    "{:.2} s  ({:.0}% of one core on average, {} runtime threads)",
                    t.cpu_secs, t.cpu_pct_avg, t.threads
                ),
            ),
            ("peak RSS".to_string(), fmt_bytes(t.rss_peak_bytes as f64)),
            ("wall time".to_string(), format!("{:.1} s", r.wall_secs)),
        ],
    });
    out
}

/// The text summary for stdout.
pub fn text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "roomcast loadtest: {} against {} -- {}",
        r.scenario,
        r.url,
        if r.passed { "PASS" } else { "FAIL" }
    );
    let secs = sections(r);
    let width = secs
        .iter()
        .flat_map(|s| s.rows.iter().map(|(k, _)| k.chars().count()))
        .max()
        .unwrap_or(10);
    for sec in &secs {
        let _ = writeln!(s, "{}", sec.title);
        for (k, v) in &sec.rows {
            let _ = writeln!(s, "  {k:<width$}  {v}");
        }
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    for p in &r.problems {
        let _ = writeln!(s, "PROBLEM: {p}");
    }
    s
}

pub fn write_json(r: &Report, path: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(r)?;
    create_parent(path)?;
    std::fs::write(path, json + "\n")?;
    Ok(())
}

pub fn write_html(r: &Report, path: &Path) -> anyhow::Result<()> {
    create_parent(path)?;
    std::fs::write(path, html(r))?;
    Ok(())
}

/// Creates the folder `path` goes in, if it has one and it is missing.
fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// `s` with HTML's special characters escaped, for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:900px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}td{padding:3px 8px;border-bottom:1px solid #eee;vertical-align:top}
td.k{color:#555;white-space:nowrap;width:1%}tr.sec td{font-weight:600;background:#f4f6f8;color:#222}
pre{background:#f4f6f8;padding:8px;white-space:pre-wrap;word-break:break-all}
.pass{color:#0a7a2f;font-weight:700}.fail{color:#b00020;font-weight:700}
svg{border:1px solid #e4e4e8;max-width:100%;height:auto}
.warn{color:#9a6700}";

pub fn html(r: &Report) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>roomcast loadtest: {}</title><style>{STYLE}</style></head><body>\n",
        esc(&r.scenario)
    );
    let _ = write!(
        s,
        "<h1>roomcast load test: {} <span class=\"{}\">{}</span></h1>\n<p>{} against <code>{}</code>, started {}, {:.1} s.</p>\n",
        esc(&r.scenario),
        if r.passed { "pass" } else { "fail" },
        if r.passed { "PASS" } else { "FAIL" },
        esc(&r.tool),
        esc(&r.url),
        esc(&r.started_at),
        r.wall_secs
    );
    if !r.problems.is_empty() {
        s.push_str("<ul class=\"fail\">");
        for p in &r.problems {
            let _ = write!(s, "<li>{}</li>", esc(p));
        }
        s.push_str("</ul>\n");
    }
    if !r.warnings.is_empty() {
        s.push_str("<ul class=\"warn\">");
        for w in &r.warnings {
            let _ = write!(s, "<li>warning: {}</li>", esc(w));
        }
        s.push_str("</ul>\n");
    }
    let _ = writeln!(
        s,
        "<h2>Command line</h2><pre>{}</pre>",
        esc(&r.command_line)
    );
    s.push_str("<h2>Summary</h2><table>\n");
    for sec in sections(r) {
        let _ = writeln!(
            s,
            "<tr class=\"sec\"><td colspan=\"2\">{}</td></tr>",
            esc(&sec.title)
        );
        for (k, v) in &sec.rows {
            let _ = writeln!(
                s,
                "<tr><td class=\"k\">{}</td><td>{}</td></tr>",
                esc(k),
                esc(v)
            );
        }
    }
    s.push_str("</table>\n");
    if let Some(l) = &r.latency {
        let _ = write!(
            s,
            "<h2>Latency histogram ({})</h2>\n{}\n",
            esc(&l.what),
            charts::latency_histogram(&l.buckets, &l.us)
        );
    }
    if let Some(t) = &r.timeline {
        let _ = write!(
            s,
            "<h2>{} per second</h2>\n{}\n",
            esc(&capitalize(&t.what)),
            charts::timeline(t)
        );
    }
    if let Some(f) = &r.flood {
        s.push_str(&crate::flood::charts(f));
    }
    if let Some(a) = &r.acks {
        let _ = write!(
            s,
            "<h2>Ack latency histogram ({})</h2>\n{}\n<h2>{} per second</h2>\n{}\n",
            esc(&a.latency.what),
            charts::latency_histogram(&a.latency.buckets, &a.latency.us),
            esc(&capitalize(&a.timeline.what)),
            charts::timeline(&a.timeline)
        );
    }
    if r.connections.connect_latency_us.count > 0 {
        let _ = write!(
            s,
            "<h2>Connect latency histogram (TCP connect + WebSocket upgrade)</h2>\n{}\n",
            charts::latency_histogram(
                &r.connections.connect_buckets,
                &r.connections.connect_latency_us
            )
        );
    }
    if let Some(srv) = &r.server {
        let cpu: Vec<(f64, f64)> = srv.series.iter().map(|p| (p.t, p.cpu_pct)).collect();
        let rss: Vec<(f64, f64)> = srv
            .series
            .iter()
            .map(|p| (p.t, p.rss_bytes as f64))
            .collect();
        let _ = write!(
            s,
            "<h2>Server CPU (% of one core)</h2>\n{}\n<h2>Server RSS</h2>\n{}\n",
            charts::line(&cpu, "seconds since the sampler started", Unit::Percent),
            charts::line(&rss, "seconds since the sampler started", Unit::Bytes)
        );
    }
    let _ = write!(
        s,
        "<h2>Settings</h2><pre>{}</pre>\n<p>The same data is in the JSON report.</p>\n</body></html>\n",
        esc(&serde_json::to_string_pretty(&r.settings).unwrap_or_default())
    );
    s
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_self_contained_and_escaped() {
        let mut r = Report {
            scenario: "fanout".to_string(),
            command_line: "loadtest fanout --url 'ws://<x>'".to_string(),
            ..Report::default()
        };
        r.latency = Some(Latency {
            what: "send → delivery".to_string(),
            us: Percentiles {
                count: 3,
                p50: 100,
                p99: 1000,
                p999: 1000,
                max: 1000,
                ..Percentiles::default()
            },
            buckets: vec![Bucket {
                lo_us: 100.0,
                hi_us: 125.9,
                count: 3,
            }],
        });
        r.timeline = Some(TimelineSection {
            what: "deliveries".to_string(),
            per_second: vec![1, 2, 3],
            measure_from_s: 1.0,
            measure_to_s: 2.0,
        });
        r.acks = Some(AckSection {
            acked: 3,
            latency: Latency {
                what: "send → ack".to_string(),
                ..Latency::default()
            },
            timeline: TimelineSection {
                what: "acks".to_string(),
                per_second: vec![3],
                measure_from_s: 0.0,
                measure_to_s: 1.0,
            },
            ..AckSection::default()
        });
        let h = html(&r);
        assert!(h.contains("Ack latency histogram (send → ack)"));
        assert!(h.contains("Acks per second"));
        assert!(text(&r).contains("acked / duplicated / unknown"));
        assert!(h.contains("&lt;x&gt;"));
        assert!(h.contains("<svg"));
        assert!(!h.contains("<script"));
        assert!(!h.contains("src="));
        assert!(!h.contains("href="));
    }
}
