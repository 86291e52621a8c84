//! [`Source`]: a directory laid out like a node's data directory.
//!
//! ```text
//! <root>/node.meta                              optional (a backup may lack it)
//! <root>/partitions/<p>/log/<segments>          the partition's log
//! <root>/partitions/<p>/snapshots/current.snap  its snapshot, if it has one
//! <root>/partitions/<p>/projections.redb        its projections (a node's)
//! ```
//!
//! A stopped node's data directory and a `missive log backup` directory
//! both have this shape. The partition count comes from `node.meta` when
//! there is one, else from the partition directories present, which must be
//! numbered 0..P without a hole.

use std::path::{Path, PathBuf};

use missive_log::format::parse_segment_file_name;
use missive_raft::LOG_DIR;
use missive_raft::node::{PARTITIONS_DIR, partition_dir};
use missive_raft::offline::{current_snapshot_path, read_node_meta};

use super::OfflineError;
use crate::chat::PROJECTIONS_FILE;

/// A data or backup directory.
#[derive(Clone, Debug)]
pub struct Source {
    /// The directory.
    root: PathBuf,
    /// How many partitions it holds.
    partitions: u32,
}

impl Source {
    /// Looks at `root` and counts its partitions.
    pub fn open(root: &Path) -> Result<Source, OfflineError> {
        let layout = |reason: String| OfflineError::Layout {
            path: root.to_owned(),
            reason,
        };
        if let Some((_, partitions)) = read_node_meta(root)? {
            return Ok(Source {
                root: root.to_owned(),
                partitions,
            });
        }
        let dir = root.join(PARTITIONS_DIR);
        let entries = std::fs::read_dir(&dir).map_err(|e| OfflineError::io(&dir, e))?;
        let mut numbers = Vec::new();
        for e in entries {
            let e = e.map_err(|e| OfflineError::io(&dir, e))?;
            if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                numbers.push(p);
            }
        }
        numbers.sort_unstable();
        if numbers.is_empty() {
            return Err(layout(format!(
                "no partition directory in {}",
                dir.display()
            )));
        }
        if numbers.iter().enumerate().any(|(i, p)| *p as usize != i) {
            return Err(layout(format!(
                "partition directories {numbers:?} are not numbered 0..P"
            )));
        }
        Ok(Source {
            root: root.to_owned(),
            partitions: numbers.len() as u32,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How many partitions it holds.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Partition `p`'s directory.
    pub fn partition_dir(&self, p: u32) -> PathBuf {
        partition_dir(&self.root, p)
    }

    /// Partition `p`'s log directory.
    pub fn log_dir(&self, p: u32) -> PathBuf {
        self.partition_dir(p).join(LOG_DIR)
    }

    /// Partition `p`'s current snapshot (which may not exist).
    pub fn snapshot_path(&self, p: u32) -> PathBuf {
        current_snapshot_path(&self.partition_dir(p))
    }

    /// Partition `p`'s projection store (which may not exist).
    pub fn projections_path(&self, p: u32) -> PathBuf {
        self.partition_dir(p).join(PROJECTIONS_FILE)
    }

    /// The bytes of partition `p`'s segment files: what a rebuild reads.
    pub fn log_bytes(&self, p: u32) -> Result<u64, OfflineError> {
        let dir = self.log_dir(p);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(OfflineError::io(&dir, e)),
        };
        let mut n = 0;
        for e in entries {
            let e = e.map_err(|e| OfflineError::io(&dir, e))?;
            if e.file_name()
                .to_str()
                .and_then(parse_segment_file_name)
                .is_some()
            {
                n += e
                    .metadata()
                    .map_err(|err| OfflineError::io(e.path(), err))?
                    .len();
            }
        }
        Ok(n)
    }
}
