//! `fdatasync` of the ledger's segment file on a thread of its own, so
//! that recording waits for the disk only when it starts a new segment.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tracing::{error, info, warn};

use crate::shared::textfile::unix_now;
use helix::ledger::store::{Ledger, LedgerError, SyncJob};

/// `fdatasync` on a thread of its own. A sync of the segment file takes
/// about a millisecond on a virtual disk, every fsync interval; done by the
/// recording thread, the frames waited with it (scheduler traces showed the
/// ledger blocked on I/O for 8% of the time at 1 M frames/s). One sync at a
/// time: the next is started once the last has finished and is due.
pub struct Syncer {
    jobs: Option<mpsc::Sender<SyncJob>>,
    done: mpsc::Receiver<Result<(), LedgerError>>,
    /// When the sync in flight started.
    busy_since: Option<Instant>,
    /// Logged that the sync in flight is slow.
    slow_logged: bool,
    /// Unix time the last sync completed (at first: when the ledger was
    /// opened, everything in it durable), for `--metrics-file`.
    pub synced_at: f64,
    thread: Option<JoinHandle<()>>,
}

/// A sync in flight this long is logged as slow.
const SLOW_SYNC: Duration = Duration::from_secs(1);

impl Syncer {
    pub fn spawn() -> Result<Syncer> {
        let (jobs, rx) = mpsc::channel::<SyncJob>();
        let (tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ledger-sync".into())
            .spawn(move || {
                for job in rx {
                    if tx.send(job.run()).is_err() {
                        return;
                    }
                }
            })
            .context("starting the sync thread")?;
        Ok(Syncer {
            jobs: Some(jobs),
            done,
            busy_since: None,
            slow_logged: false,
            synced_at: unix_now(),
            thread: Some(thread),
        })
    }

    /// Whether a sync is in flight; the error of one that failed.
    pub fn busy(&mut self) -> Result<bool> {
        if let Some(since) = self.busy_since {
            match self.done.try_recv() {
                Ok(result) => {
                    if self.slow_logged {
                        info!("the slow fdatasync finished after {:.1} s", since.elapsed().as_secs_f64());
                    }
                    self.busy_since = None;
                    result?;
                    self.synced_at = unix_now();
                }
                Err(mpsc::TryRecvError::Empty) => {
                    if !self.slow_logged && since.elapsed() >= SLOW_SYNC {
                        self.slow_logged = true;
                        warn!("fdatasync has taken more than {} s: the disk is slow or stuck", SLOW_SYNC.as_secs());
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => return Err(anyhow!("the sync thread died")),
            }
        }
        Ok(self.busy_since.is_some())
    }

    /// How long the sync in flight has been running.
    pub fn stuck_for(&self) -> Duration {
        self.busy_since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Starts syncing what `ledger` has written, if anything is new.
    pub fn start(&mut self, ledger: &mut Ledger) -> Result<()> {
        if let Some(job) = ledger.begin_sync()? {
            let jobs = self.jobs.as_ref().expect("jobs is taken only on drop");
            jobs.send(job).map_err(|_| anyhow!("the sync thread died"))?;
            self.busy_since = Some(Instant::now());
            self.slow_logged = false;
        }
        Ok(())
    }

    /// Waits for a sync in flight and ends the thread.
    pub fn finish(mut self) -> Result<()> {
        match self.busy_since.take() {
            Some(_) => Ok(self.done.recv().map_err(|_| anyhow!("the sync thread died"))??),
            None => Ok(()),
        }
    }
}

impl Drop for Syncer {
    /// On an early return: waits for a sync in flight, and logs its failure
    /// (the error that ended the service is reported by the caller).
    fn drop(&mut self) {
        self.jobs = None;
        if self.busy_since.take().is_some() {
            if let Ok(Err(e)) = self.done.recv() {
                error!("{e}");
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::path::PathBuf;

    /// Waits until the sync in flight has finished: its result.
    fn settle(s: &mut Syncer) -> Result<()> {
        let until = Instant::now() + Duration::from_secs(30);
        while s.busy()? {
            assert!(Instant::now() < until, "the sync never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    #[test]
    fn a_background_sync_that_fails_stops_the_service_naming_the_file() {
        let mut s = Syncer::spawn().unwrap();
        // fdatasync on /dev/null fails (EINVAL): a stand-in for a disk error.
        let dev_null = File::options().write(true).open("/dev/null").unwrap();
        s.jobs.as_ref().unwrap().send(SyncJob::new(dev_null, PathBuf::from("/dev/null"))).unwrap();
        s.busy_since = Some(Instant::now());
        let err = format!("{:#}", settle(&mut s).unwrap_err());
        assert!(err.starts_with("/dev/null: fdatasync: "), "{err}");
        assert!(!s.busy().unwrap(), "a failed sync is no longer in flight");
        s.finish().unwrap();
    }

    #[test]
    fn a_sync_of_a_segment_file_succeeds_and_finish_collects_it() {
        let path = std::env::temp_dir().join(format!("helix-syncer-{}.seg", std::process::id()));
        let mut f = File::create(&path).unwrap();
        std::io::Write::write_all(&mut f, b"records").unwrap();
        let mut s = Syncer::spawn().unwrap();
        s.jobs.as_ref().unwrap().send(SyncJob::new(f, path.clone())).unwrap();
        s.busy_since = Some(Instant::now());
        assert!(s.stuck_for() < Duration::from_secs(30));
        s.finish().unwrap();
        std::fs::remove_file(&path).unwrap();
    }
}
