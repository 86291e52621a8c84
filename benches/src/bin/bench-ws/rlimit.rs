//! The open-file limit: every WebSocket is a descriptor on each side, so
//! 100,000 connections need far more than the usual hard limit.
//!
//! The benchmark runs as root: it raises both its soft and hard limits to
//! the kernel's ceiling (`/proc/sys/fs/nr_open`) before it spawns anything,
//! so the gateway it starts inherits a hard limit it can raise its own soft
//! limit to.

use std::fs;

use anyhow::{Context, Result};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises this process's open-file limits as far as the kernel allows; the
/// soft limit now.
pub(crate) fn raise_open_files() -> Result<u64> {
    let ceiling: u64 = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    let now = getrlimit(Resource::Nofile);
    if now.current.is_some_and(|c| c < ceiling) {
        let raised = Rlimit {
            current: Some(ceiling),
            maximum: Some(ceiling.max(now.maximum.unwrap_or(0))),
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            // Not root: the soft limit can still reach the hard one.
            eprintln!("raising the open-file limit to {ceiling}: {e}; trying the hard limit");
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: now.maximum,
                    maximum: now.maximum,
                },
            )
            .context("raising the open-file soft limit")?;
        }
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}
