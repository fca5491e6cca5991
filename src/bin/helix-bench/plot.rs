//! The latency percentile plot (`--plot FILE.svg`): HDR histogram style,
//! latency (log scale) against percentile on the "1 / (1 - p)" log scale,
//! so 90%, 99%, 99.9%, ... are equally spaced and the tail is visible. One
//! line per transport. And the capacity plot: P99 per reader and CPU per
//! sample per process against the stream count.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use plotters::coord::types::RangedCoordf64;
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
    legend(&mut chart).map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One line of a plot against stream counts: (streams, value) points.
pub struct Line<'a> {
    /// Its name in the legend.
    pub name: &'a str,
    /// Its points, in increasing x.
    pub points: Vec<(f64, f64)>,
}

/// The capacity plot (SVG): two panels over the stream counts, above each
/// reader's P99 (log scale) with the `limit_ns` line, below each process's
/// CPU time per sample.
pub fn capacity_plot(path: &Path, title: &str, p99: &[Line<'_>], limit_ns: f64, cpu: &[Line<'_>]) -> Result<()> {
    let all = |lines: &[Line<'_>]| lines.iter().flat_map(|l| l.points.clone()).collect::<Vec<_>>();
    let (lat, ns) = (all(p99), all(cpu));
    if lat.is_empty() && ns.is_empty() {
        bail!("nothing to plot: no stream count was measured");
    }
    let xmax = lat.iter().chain(&ns).map(|p| p.0).fold(1.0, f64::max) * 1.08;
    let lo = lat.iter().map(|p| p.1.max(1.0)).fold(limit_ns, f64::min) / 2.0;
    let hi = lat.iter().map(|p| p.1).fold(limit_ns, f64::max) * 4.0;
    let top = ns.iter().map(|p| p.1).fold(1.0, f64::max) * 1.3;
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (960, 860)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    let (upper, lower) = root.split_vertically(420);
    let mut chart = ChartBuilder::on(&upper)
        .margin(16)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..xmax, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("streams")
        .y_desc("P99, ingest to reader (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| axis_ns(*y))
        .label_style(("sans-serif", 14))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(err)?;
    let target = ShapeStyle { color: BLACK.mix(0.5), filled: false, stroke_width: 1 };
    chart
        .draw_series(LineSeries::new([(0.0, limit_ns), (xmax, limit_ns)], target))
        .map_err(err)?
        .label(format!("target: under {}", axis_ns(limit_ns)))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], target));
    draw_lines(&mut chart, p99).map_err(err)?;
    let mut chart = ChartBuilder::on(&lower)
        .margin(16)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..xmax, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("streams")
        .y_desc("CPU ns per sample")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(err)?;
    draw_lines(&mut chart, cpu).map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Draws `lines` (a line and a dot per point each) and the legend.
fn draw_lines<'a, DB: DrawingBackend + 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    lines: &[Line<'_>],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (i, l) in lines.iter().enumerate() {
        let style = ShapeStyle { color: COLOURS[i % COLOURS.len()].to_rgba(), filled: true, stroke_width: 2 };
        chart.draw_series(l.points.iter().map(|&p| Circle::new(p, 4, style)))?;
        chart
            .draw_series(LineSeries::new(l.points.iter().copied(), style))?
            .label(l.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    legend(chart)
}

/// The legend, upper left, of every line drawn with a label.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_labelled_by_their_nines() {
        for (x, label) in [(0.0, "0%"), (1.0, "90%"), (2.0, "99%"), (3.0, "99.9%"), (5.0, "99.999%")] {
            assert_eq!(percentile_label(x), label);
        }
        assert!((x_of(99.0) - 2.0).abs() < 1e-9);
        for (ns, label) in [(100.0, "100 ns"), (1000.0, "1 us"), (2_500_000.0, "2.5 ms")] {
            assert_eq!(axis_ns(ns), label);
        }
    }
}
