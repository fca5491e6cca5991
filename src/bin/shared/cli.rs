//! The command-line flags the three services share, and what they do:
//! `--check`, `--print-default-config`, `--man` and `--completions SHELL`.
//! Each program flattens [`ServiceFlags`] into its own arguments.

use std::fmt::Display;
use std::process::ExitCode;

/// The flags every service takes besides its own.
#[derive(clap::Args, Debug, Clone)]
pub struct ServiceFlags {
    /// Check the configuration, print what it configures, and exit.
    #[arg(long)]
    pub check: bool,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    pub print_default_config: bool,
    /// Print the man page (roff) and exit, e.g. `--man > NAME.1`.
    #[arg(long)]
    pub man: bool,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    /// and exit.
    #[arg(long, value_name = "SHELL")]
    pub completions: Option<clap_complete::Shell>,
}

impl ServiceFlags {
    /// Does what `--print-default-config`, `--man` or `--completions` ask of
    /// program `cmd`, whose embedded default configuration is
    /// `default_config`: the exit code, or `None` if none was given.
    pub fn print(&self, mut cmd: clap::Command, default_config: &str) -> Option<ExitCode> {
        let name = cmd.get_name().to_owned();
        if self.man {
            return Some(match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                // The reader of the page went away (`| head`).
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{name}: {e}");
                    ExitCode::FAILURE
                }
            });
        }
        if let Some(shell) = self.completions {
            clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
            return Some(ExitCode::SUCCESS);
        }
        if self.print_default_config {
            print!("{default_config}");
            return Some(ExitCode::SUCCESS);
        }
        None
    }

    /// Does what the flags ask instead of running program `cmd`: what
    /// [`print`](Self::print) does, or `--check` (see [`check`]), the
    /// configuration loaded by `load`. The exit code, or `None`: run it.
    pub fn act<C, E: Display>(
        &self,
        cmd: clap::Command,
        default_config: &str,
        load: impl FnOnce() -> Result<C, E>,
        report: impl FnOnce(&C) -> String,
    ) -> Option<ExitCode> {
        let name = cmd.get_name().to_owned();
        let printed = self.print(cmd, default_config);
        printed.or_else(|| self.check.then(|| check(&name, load(), report)))
    }
}

/// `--check` of program `name`: prints what `report` says of the
/// configuration and succeeds, or prints the error in one line and fails.
fn check<C, E: Display>(name: &str, checked: Result<C, E>, report: impl FnOnce(&C) -> String) -> ExitCode {
    match checked {
        Ok(c) => {
            print!("{}", report(&c));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a service: logging set up (from `HELIX_LOG`), then `service`;
/// success, or its error in one line on standard error (the journal under
/// systemd) and failure.
pub fn run(service: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    crate::shared::logging::init(crate::shared::logging::level_from_env());
    match service() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            if let Some(hint) = read_only_hint(&e) {
                tracing::error!("{hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What to do about a failure to write to a read-only file system: under
/// systemd, `ProtectSystem=strict` leaves a service only its
/// `ReadWritePaths=` (a journal or ledger folder configured elsewhere
/// fails so, with nothing but "Read-only file system" to say why).
fn read_only_hint(e: &anyhow::Error) -> Option<&'static str> {
    e.chain().filter_map(io_error).any(|io| io.kind() == std::io::ErrorKind::ReadOnlyFilesystem).then_some(
        "the file system is read-only here: under systemd, the unit's ProtectSystem=strict lets the \
             service write only its ReadWritePaths= (`systemctl cat UNIT` shows them): configure a path \
             there, or add the folder in a drop-in (docs/systemd.md)",
    )
}

/// The system call's error `e` is, or carries: the library's errors hold
/// theirs in a field, not as their source (their message says it).
fn io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    use helix::fanin::FanInError;
    use helix::ledger::{anchor::LineError, LedgerError};
    use helix::{AttachError, CreateError};
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        Some(io)
    } else if let Some(LedgerError::Io { error, .. }) = e.downcast_ref() {
        Some(error)
    } else if let Some(LineError::Io { error, .. }) = e.downcast_ref() {
        Some(error)
    } else if let Some(CreateError::Io { error, .. } | CreateError::NoSpace { error, .. }) = e.downcast_ref() {
        Some(error)
    } else if let Some(AttachError::Io { error, .. }) = e.downcast_ref() {
        Some(error)
    } else if let Some(FanInError::Io { error, .. }) = e.downcast_ref() {
        Some(error)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::read_only_hint;
    use anyhow::Context;

    #[test]
    fn a_read_only_file_system_anywhere_in_the_cause_chain_is_explained() {
        let erofs = || std::io::Error::from_raw_os_error(libc::EROFS);
        let deep = Err::<(), _>(erofs()).context("control journal /var/lib/x/control.journal").unwrap_err();
        assert!(read_only_hint(&deep).is_some_and(|h| h.contains("ReadWritePaths=")));
        assert!(read_only_hint(&anyhow::Error::new(erofs())).is_some());
        // In a library error's field (helix-ledger's folder outside its
        // ReadWritePaths=: found by review, once that error stopped giving
        // it as its source).
        let ledger = helix::ledger::LedgerError::Io { path: "/srv/ledger".into(), error: erofs() };
        assert!(read_only_hint(&anyhow::Error::new(ledger)).is_some());
        let other = Err::<(), _>(std::io::Error::from_raw_os_error(libc::EACCES)).context("x").unwrap_err();
        assert_eq!(read_only_hint(&other), None);
    }
}
