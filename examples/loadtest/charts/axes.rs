//! The axes plotters cannot choose by itself: a log axis from a 1-2-5 value to a 1-2-5 value
//! with a tick at each (1, 2 and 5 per decade; powers of ten only past four decades, the rest
//! as light grid lines), a seconds axis with whole-second ticks, and round tick labels.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

/// A log axis's ends and ticks.
pub struct LogTicks {
    /// From the 1-2-5 value at or below the lowest value to the one at or above the highest.
    pub ends: Range<f64>,
    /// Labelled: 1, 2 and 5 per decade; only the powers of ten past four decades.
    pub bold: Vec<f64>,
    /// Grid lines only: 1 to 9 per decade.
    pub light: Vec<f64>,
}

/// The ticks of a log axis over `[lo, hi]` (both positive).
pub fn log_ticks(lo: f64, hi: f64) -> LogTicks {
    const EPS: f64 = 1e-9;
    let (lo, hi) = (lo.max(f64::MIN_POSITIVE), hi.max(lo));
    let first_decade = lo.log10().floor() as i32;
    let mut all = Vec::new();
    let mut decade = first_decade;
    loop {
        let p = 10f64.powi(decade);
        all.extend((1..10).map(|m| f64::from(m) * p));
        if p * 10.0 >= hi * (1.0 - EPS) || decade > first_decade + 30 {
            all.push(p * 10.0);
            break;
        }
        decade += 1;
    }
    let is_125 = |v: f64| {
        let m = v / 10f64.powi(v.log10().floor() as i32);
        [1.0, 2.0, 5.0, 10.0].iter().any(|k| (m - k).abs() < 1e-6)
    };
    let start = all
        .iter()
        .copied()
        .filter(|&v| is_125(v) && v <= lo * (1.0 + EPS))
        .fold(f64::NAN, f64::max);
    let end = all
        .iter()
        .copied()
        .filter(|&v| is_125(v) && v >= hi * (1.0 - EPS))
        .fold(f64::NAN, f64::min);
    let inside: Vec<f64> = all
        .into_iter()
        .filter(|&v| v >= start * (1.0 - EPS) && v <= end * (1.0 + EPS))
        .collect();
    let many_decades = (end / start).log10() > 4.0 + EPS;
    let is_power = |v: f64| (v.log10() - v.log10().round()).abs() < 1e-9;
    let bold = inside
        .iter()
        .copied()
        .filter(|&v| if many_decades { is_power(v) } else { is_125(v) })
        .collect();
    LogTicks {
        ends: start..end,
        bold,
        light: inside,
    }
}

/// A linear axis of seconds from 0, ticked by [`second_ticks`]. (plotters' own `f64` axis
/// cannot take fixed ticks and still format its labels.)
pub struct Seconds {
    end: f64,
    ticks: Vec<f64>,
}

impl Seconds {
    pub fn to(end: f64) -> Seconds {
        let end = end.max(1.0);
        Seconds {
            end,
            ticks: second_ticks(end),
        }
    }
}

impl Ranged for Seconds {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        limit.0 + (span * value / self.end).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold grid lines and labels at the ticks; no light lines between them.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        0.0..self.end
    }
}

/// Whole-second ticks from 0 to `end`, in steps of 1, 2, 5, 10, 20, 30, 60, ... so that
/// there are at most 12.
pub fn second_ticks(end: f64) -> Vec<f64> {
    let step = [
        1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    ]
    .into_iter()
    .find(|s| end / s <= 12.0)
    .unwrap_or(3600.0);
    (0..)
        .map(|i| f64::from(i) * step)
        .take_while(|&s| s <= end + 1e-9)
        .collect()
}

/// A latency tick label: `500µs`, `1ms`, `20ms`, `1s`.
pub fn tick_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{}µs", trim(us))
    } else if us < 1_000_000.0 {
        format!("{}ms", trim(us / 1_000.0))
    } else {
        format!("{}s", trim(us / 1_000_000.0))
    }
}

/// A count tick label: `0`, `500`, `2.5k`, `1.2M`.
pub fn count(v: u64) -> String {
    let v = v as f64;
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// `v` with at most three decimals and no trailing zeros: `2`, `2.5`, `0.125`.
pub fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axes_run_from_a_1_2_5_value_to_another_with_ticks_at_each() {
        let t = log_ticks(1000.0, 15_849.0);
        assert_eq!(t.ends, 1000.0..20_000.0);
        assert_eq!(t.bold, vec![1000.0, 2000.0, 5000.0, 10_000.0, 20_000.0]);
        assert_eq!(t.light.len(), 11); // 1..9 thousand, 10k, 20k
        let t = log_ticks(125.9, 158.5);
        assert_eq!(t.ends, 100.0..200.0);
        assert_eq!(t.bold, vec![100.0, 200.0]);
        // Past four decades only the powers of ten are labelled.
        let t = log_ticks(1.0, 60_000_000.0);
        assert_eq!(t.ends, 1.0..1e8);
        assert_eq!(t.bold.len(), 9);
    }

    #[test]
    fn tick_labels_are_round() {
        assert_eq!(tick_us(500.0), "500µs");
        assert_eq!(tick_us(2000.0), "2ms");
        assert_eq!(tick_us(1_000_000.0), "1s");
        assert_eq!(count(0), "0");
        assert_eq!(count(2500), "2.5k");
        assert_eq!(count(1_200_000), "1.2M");
        assert_eq!(second_ticks(2.0), vec![0.0, 1.0, 2.0]);
        assert_eq!(
            second_ticks(30.0),
            vec![0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
        );
    }
}
