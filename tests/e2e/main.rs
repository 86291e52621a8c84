//! End-to-end tests of the `missive` binary: real processes on loopback,
//! the command line, and the web app in headless Chromium. One test binary
//! for every module; nextest runs each test in its own process.

mod cli_log;
mod cluster_process;
mod gateway_workers;
mod log_backup_process;
mod log_replay_restore;
mod serve_process;
mod support;
mod webapp_browser;
