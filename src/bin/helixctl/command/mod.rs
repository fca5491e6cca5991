//! helixctl's verbs, a file each: its arguments (`Args`) and its `run`.
//! Everything here reads shared memory directly through read-only
//! attachments, so it works whether or not helixd runs; each listing has a
//! JSON form with the stable schema documented in `docs/helixctl.md`.

pub mod control_log;
pub mod doctor;
pub mod evict;
/// Not a verb: fan-in rings as `list`, `stat`, `top` and `rm` show them.
pub mod fanin;
pub mod list;
pub mod metrics;
/// Not a verb: the twin and the services' files in `metrics`.
pub mod metrics_extra;
pub mod readers;
pub mod rm;
pub mod send;
pub mod stat;
pub mod tail;
pub mod top;
pub mod twin;
pub mod verify;
