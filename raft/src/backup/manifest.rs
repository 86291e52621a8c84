//! `manifest.json`: what a finished backup holds.
//!
//! Written last, atomically (temporary file, fdatasync, rename, directory
//! fsync), and removed first when a new backup starts in the same
//! directory: a directory with a manifest is a finished backup, one
//! without is not. docs/backup-and-audit.md documents every field.
//!
//! ```json
//! {
//!   "format": "missive-backup", "version": 1, "kind": "online",
//!   "created_ms": 1763830000000, "node_id": 1, "partition_count": 4,
//!   "checksum": "blake3",
//!   "files": [{"path": "partitions/0/log/00000000000000000000.seg",
//!              "size": 4096, "blake3": "…64 hex digits…"}, …],
//!   "partitions": [{"partition": 0, "committed_index": 41,
//!                   "head_hash": "…", "snapshot_index": 41}, …],
//!   "bytes_copied": 4096, "bytes_skipped": 0
//! }
//! ```

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// File name of the manifest in a backup directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The value of the manifest's `format` field.
const FORMAT: &str = "missive-backup";
/// The manifest version this code writes and reads.
const VERSION: u64 = 1;

/// One file of a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    /// Its path relative to the backup directory, `/`-separated.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// BLAKE3 of its bytes.
    pub blake3: [u8; 32],
}

/// What a backup holds of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestPartition {
    /// The partition number.
    pub partition: u32,
    /// The last log index the backup holds: committed when it was taken.
    /// `None` when the partition had no committed entry.
    pub committed_index: Option<u64>,
    /// The chain hash of that entry.
    pub head_hash: Option<[u8; 32]>,
    /// The last index the snapshot covers, if the backup has one.
    pub snapshot_index: Option<u64>,
}

/// A backup's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// `"online"` (taken by a running node) or `"offline"` (from a stopped
    /// node's directory).
    pub kind: String,
    /// When the backup finished, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The id of the node it was taken from, if known.
    pub node_id: Option<u64>,
    /// The cluster's partition count.
    pub partition_count: u32,
    /// Every file, with size and checksum.
    pub files: Vec<ManifestFile>,
    /// Per partition, the index covered and the head hash at it.
    pub partitions: Vec<ManifestPartition>,
    /// Bytes this backup wrote.
    pub bytes_copied: u64,
    /// Bytes kept from the previous backup in the same directory.
    pub bytes_skipped: u64,
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Parses 64 hex digits into a 32-byte hash.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Manifest {
    /// The manifest as JSON.
    pub fn to_json(&self) -> Value {
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| json!({ "path": f.path, "size": f.size, "blake3": hex(&f.blake3) }))
            .collect();
        let partitions: Vec<Value> = self
            .partitions
            .iter()
            .map(|p| {
                json!({
                    "partition": p.partition,
                    "committed_index": p.committed_index,
                    "head_hash": p.head_hash.map(|h| hex(&h)),
                    "snapshot_index": p.snapshot_index,
                })
            })
            .collect();
        json!({
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "created_ms": self.created_ms,
            "node_id": self.node_id,
            "partition_count": self.partition_count,
            "checksum": "blake3",
            "files": files,
            "partitions": partitions,
            "bytes_copied": self.bytes_copied,
            "bytes_skipped": self.bytes_skipped,
        })
    }

    /// Parses a manifest; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let bad = |reason: &str| Error::Backup {
            path: path.to_owned(),
            reason: format!("invalid manifest: {reason}"),
        };
        let v: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        if v["format"] != FORMAT {
            return Err(bad("not a missive backup manifest"));
        }
        if v["version"] != VERSION {
            return Err(bad("unknown version"));
        }
        if v["checksum"] != "blake3" {
            return Err(bad("unknown checksum"));
        }
        let u64_of = |v: &Value, what: &str| v.as_u64().ok_or_else(|| bad(what));
        let opt_u64 = |v: &Value, what: &str| match v {
            Value::Null => Ok(None),
            v => v.as_u64().map(Some).ok_or_else(|| bad(what)),
        };
        let hash_of =
            |v: &Value, what: &str| v.as_str().and_then(parse_hash).ok_or_else(|| bad(what));
        let mut files = Vec::new();
        for f in v["files"].as_array().ok_or_else(|| bad("files"))? {
            let path = f["path"].as_str().ok_or_else(|| bad("file path"))?;
            // Paths stay inside the backup directory.
            if path.is_empty()
                || path.starts_with('/')
                || path
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(bad("file path leaves the backup directory"));
            }
            files.push(ManifestFile {
                path: path.to_owned(),
                size: u64_of(&f["size"], "file size")?,
                blake3: hash_of(&f["blake3"], "file checksum")?,
            });
        }
        let mut partitions = Vec::new();
        for p in v["partitions"]
            .as_array()
            .ok_or_else(|| bad("partitions"))?
        {
            let partition = u64_of(&p["partition"], "partition")?;
            partitions.push(ManifestPartition {
                partition: u32::try_from(partition).map_err(|_| bad("partition"))?,
                committed_index: opt_u64(&p["committed_index"], "committed index")?,
                head_hash: match &p["head_hash"] {
                    Value::Null => None,
                    h => Some(hash_of(h, "head hash")?),
                },
                snapshot_index: opt_u64(&p["snapshot_index"], "snapshot index")?,
            });
        }
        let count = u64_of(&v["partition_count"], "partition count")?;
        Ok(Manifest {
            kind: v["kind"].as_str().ok_or_else(|| bad("kind"))?.to_owned(),
            created_ms: u64_of(&v["created_ms"], "created_ms")?,
            node_id: opt_u64(&v["node_id"], "node id")?,
            partition_count: u32::try_from(count).map_err(|_| bad("partition count"))?,
            files,
            partitions,
            bytes_copied: u64_of(&v["bytes_copied"], "bytes_copied")?,
            bytes_skipped: u64_of(&v["bytes_skipped"], "bytes_skipped")?,
        })
    }

    /// Reads the manifest of the backup in `dir`, `None` if it has none
    /// (no backup, or one that did not finish). Blocking.
    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Manifest::parse(&text, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// The recorded size and checksum of `path`, if listed.
    pub fn file(&self, path: &str) -> Option<(u64, [u8; 32])> {
        self.files
            .iter()
            .find(|f| f.path == path)
            .map(|f| (f.size, f.blake3))
    }

    /// Checks every listed file of the backup in `dir` against its size
    /// and BLAKE3; returns one line per file that is missing or differs.
    /// Blocking.
    pub fn check_files(&self, dir: &Path) -> Vec<String> {
        let mut problems = Vec::new();
        for f in &self.files {
            let path = dir.join(&f.path);
            match hash_file(&path) {
                Ok((size, hash)) if size == f.size && hash == f.blake3 => {}
                Ok((size, _)) => problems.push(format!(
                    "{} ({size} bytes) differs from the manifest ({} bytes, blake3 {})",
                    f.path,
                    f.size,
                    hex(&f.blake3)
                )),
                Err(e) => problems.push(format!("{} is missing: {e}", f.path)),
            }
        }
        problems
    }

    /// Writes the manifest into `dir` atomically and durably. Blocking.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let mut text = serde_json::to_string_pretty(&self.to_json())
            .map_err(|e| Error::io("encode", &tmp, std::io::Error::other(e)))?;
        text.push('\n');
        let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| Error::io("write", &tmp, e))?;
        // Durable before the rename makes it the manifest: a manifest must
        // never name files whose bytes a crash could lose.
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        let path = dir.join(MANIFEST_FILE);
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
        sync_dir(dir)
    }

    /// Removes the manifest of `dir`, durably, so that the directory no
    /// longer counts as a finished backup. Blocking.
    pub fn remove(dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }
}

/// The size and BLAKE3 of the file at `path`, streamed.
fn hash_file(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    let mut f = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let size = std::io::copy(&mut f, &mut hasher)?;
    Ok((size, *hasher.finalize().as_bytes()))
}

/// Makes `dir`'s entries durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync dir", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_paths_stay_inside() {
        let m = Manifest {
            kind: "offline".into(),
            created_ms: 5,
            node_id: Some(1),
            partition_count: 2,
            files: vec![ManifestFile {
                path: "partitions/0/log/00000000000000000000.seg".into(),
                size: 64,
                blake3: [7; 32],
            }],
            partitions: vec![ManifestPartition {
                partition: 0,
                committed_index: Some(3),
                head_hash: Some([9; 32]),
                snapshot_index: None,
            }],
            bytes_copied: 64,
            bytes_skipped: 0,
        };
        let text = m.to_json().to_string();
        assert_eq!(Manifest::parse(&text, Path::new("m")).expect("parse"), m);
        let evil = text.replace("partitions/0/log", "../../etc");
        assert!(Manifest::parse(&evil, Path::new("m")).is_err());
    }
}
