//! `helix-bench peer` (hidden): the other end of a measurement, which
//! helix-bench starts as a process of its own, and how it starts one.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{ChildStdout, Command, Stdio};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use helix::{Namespace, WaitStrategy};

use super::{fanin, pingpong, stream};
use crate::affinity::pin_to_cpu;
use crate::shared::child::ChildProcess;

#[derive(Subcommand, Debug, PartialEq)]
pub enum PeerCmd {
    Pingpong(PeerPingpongArgs),
    Stream(PeerStreamArgs),
    Fanin(PeerFaninArgs),
}

// The echoing end of one pingpong transport.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct PeerPingpongArgs {
    pub transport: pingpong::Transport,
    #[arg(long)]
    pub size: usize,
    #[arg(long)]
    pub rounds: u64,
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long)]
    pub cpu: Option<usize>,
}

// One reader process of the stream scenario.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct PeerStreamArgs {
    #[arg(long)]
    pub frames: u64,
    #[arg(long)]
    pub batch: u64,
    #[arg(long)]
    pub wait: WaitStrategy,
    #[arg(long)]
    pub gating: bool,
    #[arg(long)]
    pub cpu: Option<usize>,
}

// One producer process of the fanin scenario.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct PeerFaninArgs {
    #[arg(long)]
    pub records: u64,
    #[arg(long)]
    pub size: usize,
    #[arg(long)]
    pub batch: u64,
    #[arg(long)]
    pub cpu: Option<usize>,
}

impl PeerCmd {
    /// The command line that runs it: the verb and its flags.
    pub fn to_args(&self) -> Vec<String> {
        let cpu = |cpu: Option<usize>| cpu.into_iter().flat_map(|c| ["--cpu".to_owned(), c.to_string()]);
        match self {
            PeerCmd::Pingpong(a) => {
                let mut v = vec!["pingpong".to_owned(), a.transport.name().into()];
                v.extend(["--size".into(), a.size.to_string(), "--rounds".into(), a.rounds.to_string()]);
                v.extend(["--dir".into(), a.dir.display().to_string()]);
                v.extend(cpu(a.cpu));
                v
            }
            PeerCmd::Stream(a) => {
                let mut v = vec!["stream".to_owned(), "--frames".into(), a.frames.to_string()];
                v.extend(["--batch".into(), a.batch.to_string(), "--wait".into(), stream::wait_name(a.wait).into()]);
                if a.gating {
                    v.push("--gating".into());
                }
                v.extend(cpu(a.cpu));
                v
            }
            PeerCmd::Fanin(a) => {
                let mut v = vec!["fanin".to_owned(), "--records".into(), a.records.to_string()];
                v.extend(["--size".into(), a.size.to_string(), "--batch".into(), a.batch.to_string()]);
                v.extend(cpu(a.cpu));
                v
            }
        }
    }
}

/// Starts peers: this program again, in the measurement's namespace.
pub struct Peers {
    /// This program.
    pub exe: PathBuf,
    /// The measurement's namespace.
    pub namespace: Namespace,
}

impl Peers {
    /// The command that runs `what`.
    pub fn command(&self, what: &PeerCmd) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(["--namespace", self.namespace.as_str(), "peer"]).args(what.to_args());
        c
    }

    /// Starts `what` as `name` (with its stdin piped too if `stdin`) and
    /// waits until it says it is ready (attached, or holding its lane).
    pub fn start(&self, name: &str, what: &PeerCmd, stdin: bool) -> Result<PeerProcess> {
        let mut cmd = self.command(what);
        if stdin {
            cmd.stdin(Stdio::piped());
        }
        let mut child = ChildProcess::spawn(name, cmd.stdout(Stdio::piped()))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("{name} failed to start");
        }
        Ok((child, out))
    }
}

/// A started peer and its standard output, which carries its results.
pub type PeerProcess = (ChildProcess, BufReader<ChildStdout>);

/// Runs a peer until its measurement is done.
pub fn run(what: PeerCmd, ns: &Namespace) -> Result<()> {
    match what {
        PeerCmd::Pingpong(a) => {
            if let Some(cpu) = a.cpu {
                pin_to_cpu(cpu)?;
            }
            pingpong::peer(a.transport, ns, a.size, a.rounds, &a.dir)
        }
        PeerCmd::Stream(a) => {
            if let Some(cpu) = a.cpu {
                pin_to_cpu(cpu)?;
            }
            stream::peer(ns, a.frames, a.batch, a.gating, a.wait)
        }
        PeerCmd::Fanin(a) => {
            if let Some(cpu) = a.cpu {
                pin_to_cpu(cpu)?;
            }
            fanin::producer(ns, a.records, a.size, a.batch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::parse;

    #[test]
    fn peer_commands_parse_back_to_themselves() {
        for what in [
            PeerCmd::Pingpong(PeerPingpongArgs {
                transport: pingpong::Transport::Helix(WaitStrategy::Park),
                size: 64,
                rounds: 220,
                dir: "/tmp/pp".into(),
                cpu: Some(1),
            }),
            PeerCmd::Pingpong(PeerPingpongArgs {
                transport: pingpong::Transport::UnixDgram,
                size: 8,
                rounds: 1,
                dir: "/tmp/x y".into(),
                cpu: None,
            }),
            PeerCmd::Stream(PeerStreamArgs {
                frames: 5000,
                batch: 16,
                wait: WaitStrategy::default(),
                gating: true,
                cpu: Some(0),
            }),
            PeerCmd::Stream(PeerStreamArgs { frames: 1, batch: 1, wait: WaitStrategy::Spin, gating: false, cpu: None }),
            PeerCmd::Fanin(PeerFaninArgs { records: 7, size: 64, batch: 3, cpu: Some(1) }),
            PeerCmd::Fanin(PeerFaninArgs { records: 1, size: 8, batch: 1, cpu: None }),
            PeerCmd::Pingpong(PeerPingpongArgs {
                transport: pingpong::Transport::FanIn(WaitStrategy::Spin),
                size: 64,
                rounds: 3,
                dir: "/tmp/pp".into(),
                cpu: None,
            }),
        ] {
            let crate::Cmd::Peer { what: parsed } = parse(std::iter::once("peer".to_owned()).chain(what.to_args()))
            else {
                panic!("not a peer command")
            };
            assert_eq!(parsed, what);
        }
    }
}
