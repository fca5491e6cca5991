//! Measurement arithmetic: latency histograms and their percentiles, the
//! percentile curve the plots draw, medians over runs, and nanoseconds for
//! people.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A new histogram for latencies from 1 ns to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of a latency histogram, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Summary {
    /// The names of [`Summary::percentiles`], as tables head them.
    pub const NAMES: [&'static str; 6] = ["p50", "p90", "p99", "p99.9", "p99.99", "max"];

    /// Summarises a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Summary {
        Summary {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }

    /// p50, p90, p99, p99.9, p99.99 and the maximum: a row of a table.
    pub fn percentiles(&self) -> [u64; 6] {
        [self.p50, self.p90, self.p99, self.p999, self.p9999, self.max]
    }
}

/// One point of a percentile curve: the latency at `percentile`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Percentile, 0 to 100.
    pub percentile: f64,
    /// Latency at that percentile, ns.
    pub ns: u64,
}

/// The HDR percentile curve of a histogram: points evenly spaced in
/// `log10(1 / (1 - p))` (ten per decade: 0%, 20.6%, ..., 90%, ..., 99%,
/// ...) up to where the samples run out, then the maximum (plotted at the
/// last sample's percentile).
pub fn curve(h: &Histogram<u64>) -> Vec<CurvePoint> {
    let mut v = Vec::new();
    if h.is_empty() {
        return v;
    }
    let n = h.len() as f64;
    let mut i = 0u32;
    loop {
        let x = f64::from(i) / 10.0;
        let p = 1.0 - 10f64.powf(-x);
        // Stop where fewer than one sample lies beyond the percentile.
        if (1.0 - p) * n < 1.0 {
            break;
        }
        v.push(CurvePoint { percentile: p * 100.0, ns: h.value_at_quantile(p) });
        i += 1;
    }
    v.push(CurvePoint { percentile: (1.0 - 1.0 / n) * 100.0, ns: h.max() });
    v
}

/// The middle of `items` ordered by `key`: the lower and the upper of the
/// two middle ones, the same one twice for an odd count; `None` for none.
/// Items of equal key keep their order.
pub fn middle_by<T>(items: &[T], key: impl Fn(&T) -> f64) -> Option<(&T, &T)> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let n = sorted.len();
    (n > 0).then(|| (sorted[(n - 1) / 2], sorted[n / 2]))
}

/// The median of `v` (the mean of the middle two for an even count); 0 for
/// none.
pub fn median(v: Vec<f64>) -> f64 {
    middle_by(&v, |&x| x).map_or(0.0, |(lo, hi)| (lo + hi) / 2.0)
}

/// Nanoseconds as a short human string: `812 ns`, `3.41 us`, `1.20 ms`.
pub fn fmt_ns(ns: u64) -> String {
    let mut s = String::new();
    let _ = match ns {
        0..=9_999 => write!(s, "{ns} ns"),
        10_000..=999_999 => write!(s, "{:.2} us", ns as f64 / 1e3),
        _ => write!(s, "{:.2} ms", ns as f64 / 1e6),
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![0.1, 0.7, 0.3]), 0.3);
        // The upper middle of an even count, ties in their original order.
        let runs = [("a", 2.0), ("b", 1.0), ("c", 2.0), ("d", 9.0)];
        assert_eq!(middle_by(&runs, |r| r.1).map(|(lo, hi)| (lo.0, hi.0)), Some(("a", "c")));
    }

    #[test]
    fn nanoseconds_read_in_the_unit_that_fits() {
        assert_eq!(fmt_ns(812), "812 ns");
        assert_eq!(fmt_ns(34_100), "34.10 us");
        assert_eq!(fmt_ns(1_204_000), "1.20 ms");
    }
}
