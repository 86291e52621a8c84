//! The node metadata file, `<data>/node.meta`: the node's id and the number
//! of partitions, both fixed when the node's directory is created.
//!
//! Text, one `key = value` a line after a version line, so an operator can
//! read it. Written once (temporary file, fsync, rename, directory fsync);
//! a node started with an id or partition count that disagrees with it
//! refuses to start rather than serve someone else's data.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::types::NodeId;

/// Name of the metadata file in a node's data directory.
pub const NODE_META_FILE: &str = "node.meta";

const VERSION_LINE: &str = "missive-node 1";

/// What the file records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NodeMeta {
    /// The node's id in its cluster.
    pub id: NodeId,
    /// How many partitions the cluster has.
    pub partitions: u32,
}

/// Reads the metadata in `dir`, or writes `wanted` there if there is none.
/// `wanted.partitions == None` takes the stored count (or `default` for a
/// new directory).
pub(crate) fn open_or_create(
    dir: &Path,
    id: NodeId,
    partitions: Option<u32>,
    default: u32,
) -> Result<NodeMeta> {
    let path = dir.join(NODE_META_FILE);
    let bad = |reason: String| Error::NodeMeta {
        path: path.clone(),
        reason,
    };
    match fs::read_to_string(&path) {
        Ok(text) => {
            let stored = parse(&text).map_err(bad)?;
            if stored.id != id {
                return Err(bad(format!(
                    "the directory belongs to node {}, not node {id}",
                    stored.id
                )));
            }
            if let Some(p) = partitions
                && p != stored.partitions
            {
                return Err(bad(format!(
                    "the cluster has {} partitions, not {p} (fixed at creation)",
                    stored.partitions
                )));
            }
            Ok(stored)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let meta = NodeMeta {
                id,
                partitions: partitions.unwrap_or(default),
            };
            if meta.partitions == 0 {
                return Err(Error::Config(
                    "a cluster needs at least one partition".into(),
                ));
            }
            write(dir, &meta)?;
            Ok(meta)
        }
        Err(e) => Err(Error::io("read", path, e)),
    }
}

pub(crate) fn parse(text: &str) -> Result<NodeMeta, String> {
    let mut lines = text.lines();
    if lines.next() != Some(VERSION_LINE) {
        return Err(format!("the first line is not {VERSION_LINE:?}"));
    }
    let (mut id, mut partitions) = (None, None);
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("not `key = value`: {line:?}"))?;
        let v = v.trim();
        match k.trim() {
            "id" => id = Some(v.parse::<NodeId>().map_err(|e| format!("id: {e}"))?),
            "partitions" => {
                partitions = Some(v.parse::<u32>().map_err(|e| format!("partitions: {e}"))?)
            }
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    match (id, partitions) {
        (Some(id), Some(partitions)) if partitions > 0 => Ok(NodeMeta { id, partitions }),
        _ => Err("id or partitions missing or zero".into()),
    }
}

fn write(dir: &Path, meta: &NodeMeta) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let tmp = dir.join(format!("{NODE_META_FILE}.tmp"));
    let path = dir.join(NODE_META_FILE);
    let text = format!(
        "{VERSION_LINE}\nid = {}\npartitions = {}\n",
        meta.id, meta.partitions
    );
    let mut f = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io("write", &tmp, e))?;
    // Durable before it is renamed into place: a crash leaves the old state
    // (no file) or the whole new one.
    f.sync_all().map_err(|e| Error::io("sync", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
    // The rename itself is durable only once the directory is synced.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = open_or_create(dir.path(), 3, Some(2), 4).expect("create");
        assert_eq!(
            m,
            NodeMeta {
                id: 3,
                partitions: 2
            }
        );
        assert_eq!(open_or_create(dir.path(), 3, None, 4).expect("reopen"), m);
        assert!(open_or_create(dir.path(), 4, None, 4).is_err(), "other id");
        assert!(
            open_or_create(dir.path(), 3, Some(5), 4).is_err(),
            "other count"
        );
    }
}
