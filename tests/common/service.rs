//! A Unix datagram socket standing in for systemd's NOTIFY_SOCKET, and the
//! services started with it.

use std::borrow::BorrowMut;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::Reaped;

/// A Unix datagram socket standing in for systemd's NOTIFY_SOCKET.
pub struct Notify {
    pub sock: UnixDatagram,
    pub path: PathBuf,
}

impl Notify {
    /// Binds `notify.sock` in `dir`; pass `path` as NOTIFY_SOCKET.
    pub fn new(dir: &Path) -> Notify {
        Notify::at(dir.join("notify.sock"))
    }

    /// Binds a socket at `path` (for tests with several services).
    pub fn at(path: PathBuf) -> Notify {
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Notify { sock, path }
    }

    pub fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.recv(&mut buf) {
                Ok(n) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
                // A receive time-out returns EINTR when a signal arrives,
                // even with SA_RESTART.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("no notification within 20 s: {e}"),
            }
        }
    }

    /// The next message containing `what`.
    pub fn until(&self, what: &str) -> String {
        loop {
            let m = self.next();
            if m.lines().any(|l| l == what || l.starts_with(what)) {
                return m;
            }
        }
    }

    /// Starts the service `cmd` with this socket as its NOTIFY_SOCKET.
    pub fn spawn(&self, mut cmd: impl BorrowMut<Command>) -> Reaped {
        Reaped::new(cmd.borrow_mut().env("NOTIFY_SOCKET", &self.path).spawn().unwrap())
    }

    /// Starts the service `cmd` as `spawn` does and waits for its READY=1.
    pub fn ready(&self, cmd: impl BorrowMut<Command>) -> Reaped {
        let service = self.spawn(cmd);
        self.until("READY=1");
        service
    }
}
