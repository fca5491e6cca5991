//! The latency percentile plot (`--plot FILE.svg`): HDR histogram style,
//! latency (log scale) against percentile on the "1 / (1 - p)" log scale,
//! so 90%, 99%, 99.9%, ... are equally spaced and the tail is visible. One
//! line per transport.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use plotters::prelude::*;

use crate::stats::CurvePoint;

/// One line of the plot.
pub struct Series<'a> {
    /// Its name in the legend.
    pub name: &'a str,
    /// The curve.
    pub curve: &'a [CurvePoint],
}

/// Line colours, one per series in order (helix first, then baselines).
const COLOURS: [RGBColor; 10] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// `log10(1 / (1 - p))` of a percentile `p` (0 to 100).
fn x_of(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).max(1e-12).log10()
}

/// The percentile at `x` decades: 0%, 90%, 99%, 99.9%, ...
fn percentile_label(x: f64) -> String {
    let nines = x.round() as i32;
    if nines <= 0 {
        return "0%".into();
    }
    let p = 100.0 * (1.0 - 10f64.powi(-nines));
    format!("{p:.*}%", (nines - 2).max(0) as usize)
}

/// A latency axis label: `100 ns`, `2 us`, `1.5 ms`, without trailing zeros.
fn axis_ns(ns: f64) -> String {
    let (v, unit) = match ns {
        x if x >= 1e9 => (x / 1e9, "s"),
        x if x >= 1e6 => (x / 1e6, "ms"),
        x if x >= 1e3 => (x / 1e3, "us"),
        x => (x, "ns"),
    };
    let n = format!("{v:.2}");
    format!("{} {unit}", n.trim_end_matches('0').trim_end_matches('.'))
}

/// Writes the plot to `path` (SVG).
pub fn percentile_plot(path: &Path, title: &str, series: &[Series<'_>]) -> Result<()> {
    let points = series.iter().flat_map(|s| s.curve.iter());
    let (mut lo, mut hi, mut xmax) = (f64::MAX, 1.0f64, 1.0f64);
    for p in points {
        lo = lo.min(p.ns.max(1) as f64);
        hi = hi.max(p.ns as f64);
        xmax = xmax.max(x_of(p.percentile));
    }
    if lo == f64::MAX {
        bail!("nothing to plot: no latency was recorded");
    }
    // Headroom above the slowest tail keeps the legend (upper left, where
    // the curves are at their medians) clear of the lines.
    let (lo, hi) = (lo / 1.5, hi * 4.0);
    let xmax = xmax.ceil();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .margin_right(56)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..xmax, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("round-trip latency (log scale)")
        // One label per decade: plotters picks whole numbers for a range
        // of a few units with this many labels; anything else stays blank.
        .x_labels(xmax as usize + 1)
        .x_label_formatter(&|x| if (x - x.round()).abs() < 1e-6 { percentile_label(*x) } else { String::new() })
        .y_label_formatter(&|y| axis_ns(*y))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .bold_line_style(RGBColor(0xcc, 0xcc, 0xcc))
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let width = if s.name.starts_with("helix") { 3 } else { 2 };
        let style = ShapeStyle { color: colour.to_rgba(), filled: false, stroke_width: width };
        let line = s.curve.iter().map(|p| (x_of(p.percentile), p.ns.max(1) as f64));
        chart
            .draw_series(LineSeries::new(line, style))
            .map_err(err)?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_labelled_by_their_nines() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(5.0), "99.999%");
        assert!((x_of(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(axis_ns(100.0), "100 ns");
        assert_eq!(axis_ns(1000.0), "1 us");
        assert_eq!(axis_ns(2_500_000.0), "2.5 ms");
    }
}
