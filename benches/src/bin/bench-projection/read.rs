//! Reopen and read, run in a fresh child process: the memory a store
//! takes to open a loaded projection and serve a little history.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use serde_json::{Value, json};

use crate::footprint::rss;
use crate::workload::{CONVERSATIONS, Workload};
use crate::{Engine, open_store};

/// Conversations read, spread evenly over the popularity ranks.
pub(crate) const PAGES: usize = 100;
/// Messages per page.
pub(crate) const PAGE: usize = 50;

pub(crate) fn read(engine: Engine, dir: &Path, seed: u64) -> Result<Value> {
    // The ids only: the log itself is not generated.
    let workload = Workload::new(seed, 0);
    let before = rss()?;
    let opening = Instant::now();
    let store = open_store(engine, dir)?;
    let open_ms = opening.elapsed().as_secs_f64() * 1e3;
    let applied_index = store.applied_index()?;
    ensure!(
        applied_index.is_some(),
        "the loaded store has no applied index"
    );
    let reading = Instant::now();
    let mut messages = 0usize;
    let mut bytes = 0usize;
    for n in (0..CONVERSATIONS).step_by(CONVERSATIONS / PAGES) {
        for message in store.page(&workload.conversation_id(n), PAGE)? {
            messages += 1;
            bytes += message.len();
        }
    }
    let read_ms = reading.elapsed().as_secs_f64() * 1e3;
    let after = rss()?;
    store.close()?;
    Ok(json!({
        "open_ms": open_ms,
        "read_ms": read_ms,
        "messages_read": messages,
        "message_bytes_read": bytes,
        "rss_before_open_bytes": before.now,
        "rss_bytes": after.now,
        "peak_rss_bytes": after.peak,
        "applied_index": applied_index,
    }))
}
