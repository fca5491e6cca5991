//! `helix-bench render`: `docs/PERFORMANCE.md` from one `helix-bench
//! report` run. The JSON documents of its scenarios become the tables, the
//! targets (met or not, computed from the figures), the plot and the prose
//! around them. The prose is here, one file per section of the document,
//! as templates with the run's figures filled in, so the document never
//! says something the data does not.

mod bridge;
mod capacity;
mod control;
mod e2e;
mod fanin;
mod head;
mod ledger;
mod pingpong;
mod stream;
mod targets;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use super::{
    bridge as bridge_scenario, capacity as capacity_scenario, control as control_scenario, e2e as e2e_scenario,
    fanin as fanin_scenario, ledger as ledger_scenario, pingpong as pingpong_scenario, stream as stream_scenario,
};
use crate::document::{read_document, Document, Index};

#[derive(Args, Debug, Clone, PartialEq)]
pub struct RenderArgs {
    /// The folder `helix-bench report` wrote.
    #[arg(long)]
    pub dir: PathBuf,
    /// The Markdown file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Draw the report's latency plot (from its pingpong results) here and
    /// link it from the document (relative to the document's folder).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Draw the capacity plot (from the report's capacity results, if it
    /// has them) here and link it from the document.
    #[arg(long, value_name = "FILE.svg")]
    pub capacity_plot: Option<PathBuf>,
    /// Hand-written notes included verbatim at the end.
    #[arg(long)]
    pub notes: Option<PathBuf>,
}

/// The frame size the pingpong targets are judged at (the telemetry
/// sample's slot size class; every size is in the tables).
pub const TARGET_SIZE: usize = 64;

/// The report's file for the blocking transports on one CPU.
pub const ONE_CPU_JSON: &str = "pingpong-one-cpu.json";

/// Runs `helix-bench render`.
pub fn run(a: RenderArgs) -> Result<()> {
    let notes = match &a.notes {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let link = match &a.plot {
        Some(plot) => {
            let pp: Document<pingpong_scenario::Results> = read_document(&a.dir.join("pingpong.json"))?;
            let size = if pp.results.params.args.sizes.contains(&TARGET_SIZE) {
                TARGET_SIZE
            } else {
                pp.results.params.args.sizes.first().copied().unwrap_or_default()
            };
            pp.results.plot(size, &pp.machine, plot)?;
            Some(relative(plot, &a.out))
        }
        None => None,
    };
    let capacity_json = a.dir.join(CAPACITY_JSON);
    let capacity_link = match &a.capacity_plot {
        Some(plot) if capacity_json.is_file() => {
            capacity::plot(&read_document(&capacity_json)?, plot)?;
            Some(relative(plot, &a.out))
        }
        _ => None,
    };
    let md = render(&a.dir, Plots { latency: link.as_deref(), capacity: capacity_link.as_deref() }, notes.as_deref())?;
    std::fs::write(&a.out, md).with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    Ok(())
}

/// The report's capacity results.
pub const CAPACITY_JSON: &str = "capacity.json";

/// The report's control results.
pub const CONTROL_JSON: &str = "control.json";

/// The report's helix-bridge results.
pub const BRIDGE_JSON: &str = "bridge.json";

/// The report's fan-in results.
pub const FANIN_JSON: &str = "fanin.json";

/// `plot`'s path as the document `doc` links it: relative to the document's
/// folder when it is inside it.
fn relative(plot: &Path, doc: &Path) -> String {
    let base = doc.parent().unwrap_or(Path::new(""));
    plot.strip_prefix(base).unwrap_or(plot).display().to_string()
}

/// The plots' paths as the document links them, those drawn.
pub struct Plots<'a> {
    /// The round-trip latency plot.
    pub latency: Option<&'a str>,
    /// The capacity plot.
    pub capacity: Option<&'a str>,
}

/// Everything read from a report folder.
struct Run {
    index: Index,
    pingpong: Option<Document<pingpong_scenario::Results>>,
    /// The blocking transports with both processes on one CPU, if run.
    pingpong_one_cpu: Option<(String, Document<pingpong_scenario::Results>)>,
    streams: Vec<Document<stream_scenario::Results>>,
    /// The fan-in ring's flows and round trip, if run.
    fanin: Option<(String, Document<fanin_scenario::Results>)>,
    ledger: Option<Document<ledger_scenario::Results>>,
    /// Each e2e run with its JSON file's name, one per CPU placement.
    e2e: Vec<(String, Document<e2e_scenario::Results>)>,
    /// The capacity run with its JSON file's name, if run.
    capacity: Option<(String, Document<capacity_scenario::Results>)>,
    /// Commands through helixd, if run.
    control: Option<(String, Document<control_scenario::Results>)>,
    /// helix-bridge through JetStream, if run.
    bridge: Option<(String, Document<bridge_scenario::Results>)>,
}

fn load(dir: &Path) -> Result<Run> {
    let index: Index = {
        let path = dir.join("report.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow!("{}: {e} (run `helix-bench report` first)", path.display()))?;
        serde_json::from_str(&text).with_context(|| path.display().to_string())?
    };
    let mut run = Run {
        index,
        pingpong: None,
        pingpong_one_cpu: None,
        streams: vec![],
        fanin: None,
        ledger: None,
        e2e: vec![],
        capacity: None,
        control: None,
        bridge: None,
    };
    for step in run.index.steps.clone() {
        if step.error.is_some() {
            continue;
        }
        let path = dir.join(&step.json);
        match step.scenario.as_str() {
            "pingpong" => {
                let doc: Document<pingpong_scenario::Results> = read_document(&path)?;
                if step.json == ONE_CPU_JSON {
                    run.pingpong_one_cpu = Some((step.json.clone(), doc));
                } else {
                    run.pingpong = Some(doc);
                }
            }
            "stream" => run.streams.push(read_document(&path)?),
            "fanin" => run.fanin = Some((step.json.clone(), read_document(&path)?)),
            "ledger" => run.ledger = Some(read_document(&path)?),
            "e2e" => run.e2e.push((step.json.clone(), read_document(&path)?)),
            "capacity" => run.capacity = Some((step.json.clone(), read_document(&path)?)),
            "control" => run.control = Some((step.json.clone(), read_document(&path)?)),
            "bridge" => run.bridge = Some((step.json.clone(), read_document(&path)?)),
            other => bail!("unknown scenario {other:?}"),
        }
    }
    Ok(run)
}

/// Renders the report in `dir` to Markdown; `plots` are the SVGs drawn;
/// `notes` is included verbatim at the end.
pub fn render(dir: &Path, plots: Plots<'_>, notes: Option<&str>) -> Result<String> {
    let run = load(dir)?;
    let mut md = String::new();
    head::section(&mut md, &run);
    targets::section(&mut md, &run);
    if let Some(pp) = &run.pingpong {
        pingpong::section(&mut md, &run, pp, plots.latency);
    }
    if !run.streams.is_empty() {
        stream::section(&mut md, &run);
    }
    if let Some((json, doc)) = &run.fanin {
        fanin::section(&mut md, &run, json, doc);
    }
    if let Some(l) = &run.ledger {
        ledger::section(&mut md, &run, l);
    }
    if !run.e2e.is_empty() {
        e2e::section(&mut md, &run);
    }
    if let Some((json, doc)) = &run.capacity {
        capacity::section(&mut md, &run, json, doc, plots.capacity);
    }
    if let Some((json, doc)) = &run.control {
        control::section(&mut md, &run, json, doc);
    }
    if let Some((json, doc)) = &run.bridge {
        bridge::section(&mut md, &run, json, doc);
    }
    failed(&mut md, &run);
    if let Some(notes) = notes {
        md.push_str(notes.trim_end());
        md.push('\n');
    }
    Ok(md)
}

/// The scenarios that failed, if any did.
fn failed(md: &mut String, run: &Run) {
    let failed: Vec<_> = run.index.steps.iter().filter(|s| s.error.is_some()).collect();
    if failed.is_empty() {
        return;
    }
    md.push_str("## Scenarios that failed in this run\n\n");
    for s in failed {
        let _ = writeln!(md, "- `{}`: {}", shell(&s.command), s.error.as_deref().unwrap_or(""));
    }
    md.push('\n');
}

/// A command line as a shell would take it back, the program by name.
fn shell(cmd: &[String]) -> String {
    let mut v: Vec<String> = cmd
        .iter()
        .map(|a| {
            if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./,=:".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect();
    if let Some(first) = v.first_mut() {
        // The program by name, not by the path it ran from.
        *first = Path::new(first.as_str()).file_name().map_or(first.clone(), |f| f.to_string_lossy().into_owned());
    }
    v.join(" ")
}

/// The command of the step that wrote `json`.
fn step_command(run: &Run, json: &str) -> Option<String> {
    run.index.steps.iter().find(|s| s.json == json).map(|s| shell(&s.command))
}

/// The command that wrote `doc`: its step's, or its own.
fn command_of<R>(run: &Run, json: &str, doc: &Document<R>) -> String {
    step_command(run, json).unwrap_or_else(|| shell(&doc.command))
}

/// Frames/s in millions: `21.37 M`.
fn mfps(x: f64) -> String {
    format!("{:.2} M", x / 1e6)
}

/// Ratios, each as [`ratio`] writes it, separated by spaces.
fn ratios(v: &[f64]) -> String {
    v.iter().map(|&x| ratio(x)).collect::<Vec<_>>().join(" ")
}

/// A ratio with two decimals, or three significant digits below 0.1.
fn ratio(x: f64) -> String {
    if x < 0.1 {
        format!("{x:.3}")
    } else {
        format!("{x:.2}")
    }
}

/// 1234567 as `1,234,567`.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_commands_read_as_the_document_writes_them() {
        for (n, text) in [(0, "0"), (1234567, "1,234,567"), (100, "100")] {
            assert_eq!(group(n), text);
        }
        assert_eq!(ratio(0.0512), "0.051");
        assert_eq!(ratios(&[1.234, 0.5]), "1.23 0.50");
        assert_eq!(mfps(21_370_000.0), "21.37 M");
        let cmd = ["/x/target/release/helix-bench", "e2e", "--dir", "/var/tmp/a b", "--note", "it's"].map(String::from);
        assert_eq!(shell(&cmd), "helix-bench e2e --dir '/var/tmp/a b' --note 'it'\\''s'");
    }
}
