//! Plumbing the HELIX programs share: configuration loading and errors with
//! file:line, the services' common flags, log setup, the systemd service
//! runner, signals, child processes. Each
//! program compiles this folder in as its own `shared` module (`#[path]` in
//! its `main.rs`), so it is no part of the `helix` library's API; a program
//! uses what it needs and the rest is dead code to it, hence the allowance
//! below.
#![allow(dead_code)]

pub mod checkpoint;
pub mod child;
pub mod cli;
pub mod conf;
pub mod finite;
pub mod logging;
pub mod said;
pub mod service;
pub mod signal;
pub mod textfile;
