//! Reading a stopped node's committed commands from its directory: what
//! operators and the process tests use to compare replicas entry by entry.

use std::ops::ControlFlow;
use std::path::Path;

use openraft::RaftLogReader;
use openraft::storage::RaftLogStorage;

use super::{meta, partition_dir};
use crate::error::{Error, Result};
use crate::log_store::LogStore;
use crate::types::{Command, Payload};

/// Entries read per step (bounds memory whatever the log's length).
const DUMP_BATCH: u64 = 256;

/// Calls `f(partition, index, command)` for every committed command in the
/// node directory `data`, partition by partition, in log order. Entries
/// already purged (covered by a snapshot) are not there to read: the first
/// index read of each partition is reported as `f`'s first call, so callers
/// can tell. The node must be stopped (its logs are locked while it runs).
pub async fn for_each_committed(
    data: &Path,
    mut f: impl FnMut(u32, u64, &Command) -> ControlFlow<()>,
) -> Result<()> {
    let text = tokio::fs::read_to_string(data.join(meta::NODE_META_FILE))
        .await
        .map_err(|e| Error::io("read", data.join(meta::NODE_META_FILE), e))?;
    let partitions = meta::parse(&text)
        .map_err(|reason| Error::NodeMeta {
            path: data.join(meta::NODE_META_FILE),
            reason,
        })?
        .partitions;
    for p in 0..partitions {
        let mut store = LogStore::open(partition_dir(data, p), Default::default()).await?;
        let pdir = partition_dir(data, p);
        let committed = store
            .read_committed()
            .await
            .map_err(|e| Error::io("read committed", &pdir, e))?
            .map(|l| l.index);
        let first = store.log_state().first_index;
        let mut reader = store.reader();
        let mut at = first;
        let mut stop = false;
        while let Some(last) = committed
            && at <= last
            && !stop
        {
            let to = (at + DUMP_BATCH).min(last + 1);
            let entries = reader
                .try_get_log_entries(at..to)
                .await
                .map_err(|e| Error::io("read", &pdir, e))?;
            if entries.is_empty() {
                break;
            }
            for e in &entries {
                if let Payload::Normal(c) = &e.payload
                    && f(p, e.log_id.index, c).is_break()
                {
                    stop = true;
                    break;
                }
            }
            at = entries.last().map_or(to, |e| e.log_id.index + 1);
        }
        drop(reader);
        store.close().await;
        if stop {
            break;
        }
    }
    Ok(())
}
