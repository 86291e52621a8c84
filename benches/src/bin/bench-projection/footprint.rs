//! What a store costs the machine: bytes on disk (as `du` counts them) and
//! the resident memory of this process (from /proc/self/status).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Directory depth walked by `disk_usage`; both engines nest one level.
const MAX_DEPTH: usize = 8;

/// Bytes on disk under `dir`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DiskUsage {
    /// Allocated blocks × 512, what `du` prints: holes in sparse files do
    /// not count.
    pub(crate) allocated: u64,
    /// Sum of file lengths, what `du --apparent-size` prints.
    pub(crate) apparent: u64,
    pub(crate) files: u64,
}

pub(crate) fn disk_usage(dir: &Path) -> Result<DiskUsage> {
    let mut usage = DiskUsage::default();
    walk(dir, 0, &mut usage)?;
    Ok(usage)
}

fn walk(dir: &Path, depth: usize, usage: &mut DiskUsage) -> Result<()> {
    anyhow::ensure!(depth <= MAX_DEPTH, "{} is nested too deep", dir.display());
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            walk(&entry.path(), depth + 1, usage)?;
        } else {
            usage.allocated += meta.blocks() * 512;
            usage.apparent += meta.len();
            usage.files += 1;
        }
    }
    Ok(())
}

/// Resident memory now (`VmRSS`) and at its peak (`VmHWM`), in bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rss {
    pub(crate) now: u64,
    pub(crate) peak: u64,
}

pub(crate) fn rss() -> Result<Rss> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    Ok(Rss {
        now: status_kib(&status, "VmRSS:")? * 1024,
        peak: status_kib(&status, "VmHWM:")? * 1024,
    })
}

fn status_kib(status: &str, field: &str) -> Result<u64> {
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("reading {line:?}"))
}
