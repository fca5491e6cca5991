//! A Unix datagram socket standing in for systemd's NOTIFY_SOCKET, and the
//! services started with it.

use std::borrow::BorrowMut;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::Reaped;

/// A Unix datagram socket standing in for systemd's NOTIFY_SOCKET. A
/// thread reads every notification as it comes, as systemd does: a socket
/// left unread fills (ten datagrams, with the kernel's default
/// `net.unix.max_dgram_qlen`), and the service's next send blocks its
/// main loop.
pub struct Notify {
    sock: UnixDatagram,
    got: std::sync::mpsc::Receiver<String>,
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
        let (tx, got) = std::sync::mpsc::channel();
        let reader = sock.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match reader.recv(&mut buf) {
                    // 0: shut down by `drop` (an empty notification is
                    // never sent).
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
        Notify { sock, got, path }
    }

    pub fn next(&self) -> String {
        self.next_within(Duration::from_secs(20)).expect("no notification within 20 s")
    }

    /// The next notification, if one comes within `wait`.
    pub fn next_within(&self, wait: Duration) -> Option<String> {
        self.got.recv_timeout(wait).ok()
    }

    /// Drops every notification sent so far: those the reading thread has
    /// not read yet too, up to a mark this sends after them (a socket
    /// queues datagrams in order).
    pub fn forget_sent(&self) {
        const MARK: &str = "HELIX_TEST_MARK=1";
        UnixDatagram::unbound().unwrap().send_to(MARK.as_bytes(), &self.path).unwrap();
        while self.next() != MARK {}
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

impl Drop for Notify {
    /// Ends the reading thread.
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}
