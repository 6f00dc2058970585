//! The HTML report's charts: inline SVG drawn by plotters. Latency histograms on a log axis,
//! per-second bar charts, and line charts of the server's CPU and RSS.
//!
//! plotters lays out the axes, the labels and the grid, with round tick values on the linear
//! axes; `axes.rs` chooses the ticks plotters cannot guess (1, 2 and 5 per decade on the log
//! axis, whole seconds on the time axis). Marks (percentiles, warm-up, stop) are dashed lines
//! whose labels sit in a strip above the plot, in as many rows as it takes for none to
//! overlap, so no label is ever drawn over a bar. Each bar gets a native SVG tooltip
//! (`<title>`), which browsers show on hover without a script.

mod axes;

use std::fmt::Write as _;
use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, Ranged};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use self::axes::{Seconds, count, log_ticks, tick_us, trim};
use crate::report::{TimelineSection, esc};
use crate::stats::{Bucket, Percentiles, fmt_bytes, fmt_us};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const WIDTH: u32 = 860;
const BAR_HEIGHT: u32 = 260;
const LINE_HEIGHT: u32 = 200;
const FONT: &str = "sans-serif";
/// plotters writes `font-size` as size / 1.24: 15 gives 12 px text.
const TEXT_SIZE: f64 = 15.0;
/// Estimated width of a 12 px character, for placing mark labels.
const CHAR_PX: f64 = 6.5;
/// Height of one row of mark labels.
const ROW_PX: i32 = 15;
const MARGIN: u32 = 12;
/// Right of the plot: room for half of the last tick's label.
const MARGIN_RIGHT: u32 = 28;
const Y_LABEL_AREA: u32 = 64;
const X_LABEL_AREA: u32 = 44;

const BACKGROUND: RGBColor = RGBColor(252, 252, 253);
const INK: RGBColor = RGBColor(68, 68, 68);
const AXIS: RGBColor = RGBColor(136, 136, 136);
const GRID: RGBColor = RGBColor(222, 222, 228);
const LIGHT_GRID: RGBColor = RGBColor(240, 240, 244);
const BAR: RGBColor = RGBColor(59, 111, 216);
/// Warm-up seconds: delivered and checked, not measured.
const WARMUP: RGBColor = RGBColor(185, 196, 216);
/// Drain seconds, after the stop.
const DRAIN: RGBColor = RGBColor(159, 182, 232);
const P50: RGBColor = RGBColor(46, 125, 50);
const P99: RGBColor = RGBColor(230, 81, 0);
const P999: RGBColor = RGBColor(198, 40, 40);
const PHASE: RGBColor = RGBColor(90, 90, 90);

/// A dashed vertical line at `x`, labelled above the plot.
struct Mark {
    x: f64,
    label: String,
    color: RGBColor,
}

/// One bar: `[lo, hi)` on the x axis, `count` high, with a tooltip.
struct Bar {
    lo: f64,
    hi: f64,
    count: u64,
    color: RGBColor,
    tip: String,
}

/// A latency histogram over log-scaled buckets, with p50, p99 and p99.9 marked.
pub fn latency_histogram(buckets: &[Bucket], p: &Percentiles) -> String {
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
        return "<p>No samples.</p>".to_string();
    };
    let ticks = log_ticks(first.lo_us, last.hi_us);
    let range = ticks.ends.clone();
    let bars: Vec<Bar> = buckets
        .iter()
        .map(|b| Bar {
            lo: b.lo_us,
            hi: b.hi_us,
            count: b.count,
            color: BAR,
            tip: format!("{} – {}: {}", fmt_us(b.lo_us), fmt_us(b.hi_us), b.count),
        })
        .collect();
    let clamp = |us: u64| (us as f64).clamp(range.start, range.end);
    let marks = [
        ("p50", p.p50, P50),
        ("p99", p.p99, P99),
        ("p99.9", p.p999, P999),
    ]
    .into_iter()
    .map(|(name, us, color)| Mark {
        x: clamp(us),
        label: format!("{name} {}", fmt_us(us as f64)),
        color,
    })
    .collect::<Vec<_>>();
    let (lo_ln, hi_ln) = (range.start.ln(), range.end.ln());
    let x_axis = range
        .clone()
        .log_scale()
        .with_key_points(ticks.bold)
        .with_light_points(ticks.light);
    svg(BAR_HEIGHT, |root| {
        bar_chart(
            root,
            x_axis,
            &|x| (x.ln() - lo_ln) / (hi_ln - lo_ln),
            &bars,
            &marks,
            ("latency (log scale, 10 buckets per decade)", "samples"),
            &|us| tick_us(*us),
        )
    })
}

/// Counts per second, pale outside the measured window, with its start and end marked.
pub fn timeline(t: &TimelineSection) -> String {
    let n = t.per_second.len();
    if n == 0 {
        return "<p>No seconds recorded.</p>".to_string();
    }
    let bars: Vec<Bar> = t
        .per_second
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let (lo, hi) = (i as f64, i as f64 + 1.0);
            let color = if hi <= t.measure_from_s + 1e-9 {
                WARMUP
            } else if lo >= t.measure_to_s - 1e-9 {
                DRAIN
            } else {
                BAR
            };
            Bar {
                lo,
                hi,
                count,
                color,
                tip: format!("second {i}–{}: {count} {}", i + 1, t.what),
            }
        })
        .collect();
    let mut marks = Vec::new();
    if t.measure_from_s > 0.0 {
        marks.push(Mark {
            x: t.measure_from_s,
            label: "measuring".to_string(),
            color: PHASE,
        });
    }
    if t.measure_to_s < n as f64 {
        marks.push(Mark {
            x: t.measure_to_s,
            label: "stop".to_string(),
            color: PHASE,
        });
    }
    let pale = !marks.is_empty();
    let x_desc = format!(
        "seconds{}",
        if pale {
            " (pale: warm-up and drain, not measured)"
        } else {
            ""
        }
    );
    let end = n as f64;
    svg(BAR_HEIGHT, |root| {
        bar_chart(
            root,
            Seconds::to(end),
            &|x| x / end,
            &bars,
            &marks,
            (&x_desc, &format!("{} per second", t.what)),
            &|s| format!("{s:.0}s"),
        )
    })
}

/// The unit of a line chart's values.
#[derive(Clone, Copy)]
pub enum Unit {
    /// Percent of one core.
    Percent,
    /// Bytes, drawn in MiB so the ticks are round there.
    Bytes,
    /// Milliseconds.
    Millis,
}

/// A line over `(seconds, value)` points, from zero.
pub fn line(points: &[(f64, f64)], x_desc: &str, unit: Unit) -> String {
    if points.len() < 2 {
        return "<p>Too few samples.</p>".to_string();
    }
    let scale = match unit {
        Unit::Percent | Unit::Millis => 1.0,
        Unit::Bytes => 1.0 / (1024.0 * 1024.0),
    };
    let points: Vec<(f64, f64)> = points.iter().map(|&(t, v)| (t, v * scale)).collect();
    let x_end = points.iter().map(|p| p.0).fold(1.0, f64::max).ceil();
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let y_end = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    svg(LINE_HEIGHT, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(MARGIN)
            .margin_right(MARGIN_RIGHT)
            .x_label_area_size(X_LABEL_AREA)
            .y_label_area_size(Y_LABEL_AREA)
            .build_cartesian_2d(Seconds::to(x_end), 0.0..y_end)?;
        let y_fmt = |v: &f64| match unit {
            Unit::Percent => format!("{}%", trim(*v)),
            Unit::Bytes => format!("{} MiB", trim(*v)),
            Unit::Millis => format!("{} ms", trim(*v)),
        };
        chart
            .configure_mesh()
            .bold_line_style(GRID)
            .light_line_style(LIGHT_GRID)
            .axis_style(AXIS)
            .label_style(text_style(INK))
            .axis_desc_style(text_style(INK))
            .x_desc(x_desc)
            .x_label_formatter(&|s| format!("{s:.0}s"))
            .y_labels(5)
            .max_light_lines(1)
            .y_label_formatter(&y_fmt)
            .draw()?;
        chart.draw_series(LineSeries::new(points.iter().copied(), BAR.stroke_width(2)))?;
        chart.draw_series(PointSeries::of_element(
            points.iter().copied(),
            2,
            BAR.filled(),
            &|c, s, st| Circle::new(c, s, st),
        ))?;
        let tips = points
            .iter()
            .enumerate()
            .map(|(i, &(t, v))| {
                // Each point's tooltip covers the column from halfway to its neighbours.
                let left = if i == 0 {
                    t
                } else {
                    (points[i - 1].0 + t) / 2.0
                };
                let right = points.get(i + 1).map_or(t, |p| (p.0 + t) / 2.0);
                let value = match unit {
                    Unit::Percent => format!("{v:.0}%"),
                    Unit::Bytes => fmt_bytes(v / scale),
                    Unit::Millis => format!("{v:.1} ms"),
                };
                Tip {
                    x: chart.backend_coord(&(left, 0.0)).0..chart.backend_coord(&(right, 0.0)).0,
                    text: format!("{t:.0} s: {value}"),
                }
            })
            .collect();
        Ok(Overlay {
            tips,
            y: chart.plotting_area().get_pixel_range().1,
        })
    })
}

/// An invisible column over part of the plot, which shows `text` on hover.
struct Tip {
    x: Range<i32>,
    text: String,
}

/// What is added to plotters' SVG: the tooltip columns, over the plot's pixel rows `y`.
struct Overlay {
    tips: Vec<Tip>,
    y: Range<i32>,
}

/// Draws with `draw` on a `WIDTH` × `height` SVG and returns it, tooltips added; a drawing
/// failure becomes a line of text in the report rather than a failed run.
fn svg(height: u32, draw: impl FnOnce(&Area) -> Result<Overlay>) -> String {
    let mut out = String::new();
    let drawn = {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&BACKGROUND)
            .map_err(Into::into)
            .and_then(|()| draw(&root))
            .and_then(|overlay| {
                root.present()?;
                Ok(overlay)
            })
    };
    let overlay = match drawn {
        Ok(o) => o,
        Err(e) => {
            return format!(
                "<p>The chart could not be drawn: {}</p>",
                esc(&e.to_string())
            );
        }
    };
    let mut tips = String::new();
    for tip in &overlay.tips {
        let _ = write!(
            tips,
            r##"<rect x="{}" y="{}" width="{}" height="{}" fill="#000" fill-opacity="0"><title>{}</title></rect>"##,
            tip.x.start,
            overlay.y.start,
            (tip.x.end - tip.x.start).max(1),
            overlay.y.end - overlay.y.start,
            esc(&tip.text)
        );
    }
    match out.rfind("</svg>") {
        Some(end) => out.insert_str(end, &tips),
        None => out.push_str(&tips),
    }
    out
}

/// A bar chart on x axis `x` (whose fraction of the width at a value is `frac`), counts on a
/// linear y axis, `marks` labelled above the plot; `desc` is (x, y) axis descriptions.
fn bar_chart<X>(
    root: &Area,
    x: X,
    frac: &dyn Fn(f64) -> f64,
    bars: &[Bar],
    marks: &[Mark],
    desc: (&str, &str),
    x_fmt: &dyn Fn(&f64) -> String,
) -> Result<Overlay>
where
    X: Ranged<ValueType = f64, FormatOption = DefaultFormatting>,
{
    // Where each mark's label goes: rows above the plot, none overlapping another.
    let plot_px = f64::from(WIDTH - MARGIN - MARGIN_RIGHT - Y_LABEL_AREA);
    let left_px = f64::from(MARGIN + Y_LABEL_AREA);
    let spans: Vec<Range<f64>> = marks
        .iter()
        .map(|m| {
            let center = left_px + plot_px * frac(m.x);
            let half = CHAR_PX * m.label.chars().count() as f64 / 2.0;
            center - half..center + half
        })
        .collect();
    let rows = label_rows(&spans);
    let strip = rows.iter().max().map_or(0, |r| (r + 1) as i32 * ROW_PX);

    let y_max = bars.iter().map(|b| b.count).max().unwrap_or(0);
    // Headroom, so the tallest bar does not touch the top.
    let y_end = y_max + y_max / 10 + 1;
    let mut chart = ChartBuilder::on(root)
        .margin(MARGIN)
        .margin_right(MARGIN_RIGHT)
        .margin_top(MARGIN as i32 + strip)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(x, 0u64..y_end)?;
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(LIGHT_GRID)
        .axis_style(AXIS)
        .label_style(text_style(INK))
        .axis_desc_style(text_style(INK))
        .x_desc(desc.0)
        .y_desc(desc.1)
        .x_label_formatter(x_fmt)
        .y_labels(6)
        .max_light_lines(1)
        .y_label_formatter(&|v| count(*v))
        .draw()?;

    let (plot_x, plot_y) = chart.plotting_area().get_pixel_range();
    // A one-pixel gap between bars, when they are wide enough to spare it.
    let gap = bars
        .iter()
        .all(|b| chart.backend_coord(&(b.hi, 0)).0 - chart.backend_coord(&(b.lo, 0)).0 >= 4);
    chart.draw_series(bars.iter().map(|b| {
        let mut r = Rectangle::new([(b.lo, 0), (b.hi, b.count)], b.color.filled());
        if gap {
            r.set_margin(0, 0, 0, 1);
        }
        r
    }))?;

    for (m, row) in marks.iter().zip(&rows) {
        let px = chart.backend_coord(&(m.x, 0)).0;
        root.draw(&DashedPathElement::new(
            [(px, plot_y.start), (px, plot_y.end)],
            4,
            3,
            m.color.stroke_width(1),
        ))?;
        // Centred over its line, but kept inside the picture.
        let half = (CHAR_PX * m.label.chars().count() as f64 / 2.0) as i32;
        let center = px.clamp(plot_x.start + half, plot_x.end - half);
        root.draw(&Text::new(
            m.label.clone(),
            (center, plot_y.start - 3 - *row as i32 * ROW_PX),
            text_style(m.color).pos(Pos::new(HPos::Center, VPos::Bottom)),
        ))?;
    }

    let tips = bars
        .iter()
        .map(|b| Tip {
            x: chart.backend_coord(&(b.lo, 0)).0..chart.backend_coord(&(b.hi, 0)).0,
            text: b.tip.clone(),
        })
        .collect();
    Ok(Overlay { tips, y: plot_y })
}

fn text_style(color: RGBColor) -> TextStyle<'static> {
    (FONT, TEXT_SIZE).into_font().color(&color)
}

/// Rows (0 = nearest the plot) for labels spanning `spans` pixels, so that labels in one row
/// are at least a few pixels apart; each label takes the lowest row it fits in.
fn label_rows(spans: &[Range<f64>]) -> Vec<usize> {
    const SPACE: f64 = 6.0;
    let mut taken: Vec<Vec<Range<f64>>> = Vec::new();
    spans
        .iter()
        .map(|s| {
            let fits = |row: &Vec<Range<f64>>| {
                row.iter()
                    .all(|o| s.end + SPACE <= o.start || o.end + SPACE <= s.start)
            };
            let row = match taken.iter().position(fits) {
                Some(r) => r,
                None => {
                    taken.push(Vec::new());
                    taken.len() - 1
                }
            };
            taken[row].push(s.clone());
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_labels_go_to_separate_rows() {
        let rows = label_rows(&[0.0..50.0, 40.0..90.0, 100.0..150.0, 45.0..95.0]);
        assert_eq!(rows, vec![0, 1, 0, 2]);
    }

    #[test]
    fn charts_are_svg_with_a_tooltip_per_bar() {
        let buckets = [
            Bucket {
                lo_us: 1000.0,
                hi_us: 1258.9,
                count: 5,
            },
            Bucket {
                lo_us: 1258.9,
                hi_us: 1584.9,
                count: 2,
            },
        ];
        let p = Percentiles {
            count: 7,
            p50: 1100,
            p99: 1500,
            p999: 1500,
            ..Percentiles::default()
        };
        let svg = latency_histogram(&buckets, &p);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(svg.matches("<title>").count(), 2);
        // plotters writes each text element's content on a line of its own.
        for label in ["1ms", "2ms", "p50 1.10ms", "p99 1.50ms", "p99.9 1.50ms"] {
            assert!(svg.lines().any(|l| l.trim() == label), "{label} in {svg}");
        }
    }
}
