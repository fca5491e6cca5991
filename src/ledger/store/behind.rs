//! Writing behind: a thread of the ledger's own makes the `write(2)` of
//! each flushed buffer, so the recorder reads and hashes on while the
//! kernel copies the last batch into the page cache.
//!
//! That copy is most of a busy recorder's time (58% of its samples, by
//! `perf`, at 5 M telemetry frames/s: new page-cache pages are dear on a
//! virtual machine), and done on the recording thread, frames waited in
//! the ring for every `write`. The buffers go to the thread in order and
//! are written in order, one at a time, so the file is exactly what the
//! synchronous path writes. Each flush is numbered; the caller releases a
//! batch's frames only once [`Ledger::written`](super::Ledger::written)
//! reaches the flush that carried them, so a crash leaves every frame not
//! yet in the file in its ring, as before.
//!
//! A `write` that fails ends the thread's writing: nothing after a failed
//! buffer may reach the file (the chain would break mid-file), so every
//! later flush reports the failure, and the recorder stops. What reached
//! the file is a torn tail at worst, cut off when the ledger opens again.

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Flushed buffers the thread may hold, not yet written, before a flush
/// waits for it: a bound on the memory a stalled disk can take (a
/// recorder's buffer is flushed at 256 KiB).
const MAX_IN_FLIGHT: u64 = 32;

/// The thread's nice value: it gives way to ring readers that wait
/// for frames on the same CPUs. (helix-ledger.service's system call
/// filter lets this one `setpriority(2)` through.)
const WRITE_NICE: libc::c_int = 5;

/// What the thread is asked to do, in order.
enum Job {
    /// Append these bytes to the file.
    Write(Vec<u8>),
    /// Append to this file from now on (the next segment).
    Switch(File),
}

/// How far the thread got.
#[derive(Default)]
struct Progress {
    /// Buffers written, counted from the start.
    written: u64,
    /// The failure that stopped the writing, if one did.
    failed: Option<(io::ErrorKind, String)>,
}

/// The thread's progress, and a wake-up for those who wait for it.
#[derive(Default)]
pub(in crate::ledger) struct Shared {
    progress: Mutex<Progress>,
    moved: Condvar,
    /// Tests hold the writing back with it, and make writes fail.
    #[cfg(test)]
    pub(super) test: TestHooks,
}

/// What a test can do to the thread.
#[cfg(test)]
#[derive(Default)]
pub(super) struct TestHooks {
    /// Held by the thread around each write.
    pub(super) gate: Mutex<()>,
    /// The next write fails, as a full disk's would.
    pub(super) fail: std::sync::atomic::AtomicBool,
    /// The thread panics at its next write.
    pub(super) panic: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        // The thread holds the lock only to count; a panic while counting
        // leaves a count that is still right.
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one buffer written, or the failure that stops the writing.
    fn done(&self, result: &io::Result<()>) {
        let mut p = self.lock();
        match result {
            Ok(()) => p.written += 1,
            Err(e) => p.failed = Some((e.kind(), format!("write: {e}"))),
        }
        drop(p);
        self.moved.notify_all();
    }

    /// `buf` to the end of `file`; in tests, held back or failed at will.
    fn write(&self, file: &mut File, buf: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        let _held = self.test.gate.lock();
        #[cfg(test)]
        if self.test.fail.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left (a test)"));
        }
        file.write_all(buf)
    }

    /// Waits until `flushes` buffers are written, or the writing failed.
    pub(in crate::ledger) fn wait_for(&self, flushes: u64) -> io::Result<()> {
        let mut p = self.lock();
        loop {
            if let Some((kind, why)) = &p.failed {
                return Err(io::Error::new(*kind, why.clone()));
            }
            if p.written >= flushes {
                return Ok(());
            }
            p = self.moved.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The writing thread, as the ledger holds it.
pub(super) struct Behind {
    jobs: Option<SyncSender<Job>>,
    /// Written buffers, emptied, to be filled again.
    spare: Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    /// Buffers handed to the thread, counted from the start.
    handed: u64,
    thread: Option<JoinHandle<()>>,
}

impl Behind {
    /// Starts the thread, appending to `file`; the flushes are counted on
    /// from `flushes`.
    pub(super) fn spawn(file: File, flushes: u64) -> io::Result<Behind> {
        // Room for every buffer in flight and a switch: handing one over
        // never blocks on the channel (the count bounds them first).
        let (jobs, rx) = mpsc::sync_channel::<Job>(MAX_IN_FLIGHT as usize + 2);
        let (spare_tx, spare) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        shared.lock().written = flushes;
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ledger-write".into())
            .spawn(move || write_all_jobs(file, &rx, &spare_tx, &theirs))?;
        Ok(Behind { jobs: Some(jobs), spare, shared, handed: flushes, thread: Some(thread) })
    }

    /// Hands `buf` over to be written and returns an empty buffer to fill
    /// next. Waits while [`MAX_IN_FLIGHT`] buffers are not written yet;
    /// fails if the writing has failed.
    pub(super) fn hand(&mut self, buf: Vec<u8>) -> io::Result<Vec<u8>> {
        self.shared.wait_for((self.handed + 1).saturating_sub(MAX_IN_FLIGHT))?;
        let next = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(buf.capacity()));
        self.send(Job::Write(buf))?;
        self.handed += 1;
        Ok(next)
    }

    /// Writes `buf` to `file` (the thread's file) on the calling thread,
    /// counted as a buffer handed over and written. Only while nothing is
    /// in flight ([`Behind::idle`]), so the file keeps its order.
    pub(super) fn write_here(&mut self, file: &mut File, buf: &mut Vec<u8>) -> io::Result<()> {
        self.shared.wait_for(self.handed)?;
        let result = self.shared.write(file, buf);
        buf.clear();
        self.handed += 1;
        self.shared.done(&result);
        result.map_err(|e| io::Error::new(e.kind(), format!("write: {e}")))
    }

    /// Whether everything handed over is written.
    pub(super) fn idle(&self) -> bool {
        self.shared.lock().written >= self.handed
    }

    /// Appends to `file` from now on. Call once everything handed over
    /// is written ([`Behind::wait_written`]).
    pub(super) fn switch(&mut self, file: File) -> io::Result<()> {
        self.send(Job::Switch(file))
    }

    fn send(&self, job: Job) -> io::Result<()> {
        let jobs = self.jobs.as_ref().expect("jobs is taken only on drop");
        // The thread ends early only by a panic.
        jobs.send(job).map_err(|_| io::Error::other("the ledger's writing thread died"))
    }

    /// Buffers handed over so far.
    pub(super) fn handed(&self) -> u64 {
        self.handed
    }

    /// Buffers written so far.
    pub(super) fn written(&self) -> u64 {
        self.shared.lock().written
    }

    /// Waits until everything handed over is written.
    pub(super) fn wait_written(&self) -> io::Result<()> {
        self.shared.wait_for(self.handed)
    }

    /// What a sync started now must wait for before its `fdatasync`.
    pub(super) fn sync_after(&self) -> (Arc<Shared>, u64) {
        (self.shared.clone(), self.handed)
    }
}

impl Drop for Behind {
    /// Lets the thread write what it was handed, and ends it.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Says a panic of the thread as a failure, so nobody waits for it.
struct PanicIsFailure<'a>(&'a Shared);

impl Drop for PanicIsFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.done(&Err(io::Error::other("the ledger's writing thread panicked")));
        }
    }
}

/// The thread: each job in order, until the ledger lets go of it.
fn write_all_jobs(mut file: File, jobs: &Receiver<Job>, spare: &mpsc::Sender<Vec<u8>>, shared: &Shared) {
    let _guard = PanicIsFailure(shared);
    // SAFETY: setpriority takes plain integers; `who` 0 is this thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, WRITE_NICE) };
    for job in jobs {
        match job {
            Job::Switch(f) => file = f,
            Job::Write(mut buf) => {
                // After a failure nothing more is written (see the module).
                if shared.lock().failed.is_some() {
                    continue;
                }
                #[cfg(test)]
                assert!(!shared.test.panic.load(std::sync::atomic::Ordering::Relaxed), "a test's panic");
                let result = shared.write(&mut file, &buf);
                buf.clear();
                let _ = spare.send(buf);
                shared.done(&result);
            }
        }
    }
}
