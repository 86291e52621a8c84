//! A snapshot file on the wire: a client stream of [`pb::SnapshotChunk`]s,
//! the first carrying the header (partition and vote), each at most
//! [`SNAPSHOT_CHUNK_BYTES`] of the file. The file is self-describing (its
//! header holds the snapshot's metadata, its body a CRC), so the receiver
//! writes the bytes to a file and opens it like any snapshot file; nothing
//! holds the snapshot whole in memory, and at most one chunk per transfer is
//! in flight in this code.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use futures_util::{Stream, StreamExt, stream};
use missive_proto::v1 as pb;
use tokio::io::AsyncWriteExt;
use tonic::{Status, Streaming};

use crate::SnapshotFile;
use crate::pb as conv;
use crate::types::Vote;

/// Bytes of the snapshot file one chunk carries at most.
pub const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

/// The chunks of `file`, and its length. A read error ends the stream early;
/// the receiver then refuses the short file.
pub(crate) fn send(
    partition: u32,
    vote: &Vote,
    file: SnapshotFile,
) -> io::Result<(impl Stream<Item = pb::SnapshotChunk> + Send + 'static, u64)> {
    let len = file.file().metadata()?.len();
    let header = pb::SnapshotHeader {
        partition,
        vote: Some(conv::vote_to_pb(vote)),
    };
    let state = (file, 0u64, Some(header));
    let chunks = stream::unfold(state, move |(file, at, header)| async move {
        if at >= len && header.is_none() {
            return None;
        }
        let want = usize::try_from(len - at)
            .unwrap_or(usize::MAX)
            .min(SNAPSHOT_CHUNK_BYTES);
        // Positional reads: the handle's cursor is shared with other users.
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; want];
            let r = file.file().read_exact_at(&mut buf, at).map(|()| buf);
            (file, r)
        })
        .await;
        let (file, data) = match read {
            Ok((file, Ok(buf))) => (file, buf),
            Ok((file, Err(e))) => {
                tracing::warn!(path = %file.path().display(), error = %e, "reading a snapshot to send failed");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading a snapshot to send failed");
                return None;
            }
        };
        let next = at + data.len() as u64;
        Some((pb::SnapshotChunk { header, data }, (file, next, None)))
    });
    Ok((chunks, len))
}

/// Reads the first chunk of a received stream: the header and the first
/// bytes.
pub(crate) async fn receive_header(
    stream: &mut Streaming<pb::SnapshotChunk>,
) -> Result<(pb::SnapshotHeader, Vec<u8>), Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
    let header = first
        .header
        .ok_or_else(|| Status::invalid_argument("the first snapshot chunk has no header"))?;
    Ok((header, first.data))
}

/// Writes `first` and the rest of `stream` to `path`, then opens it as a
/// snapshot file.
pub(crate) async fn receive_into(
    path: &Path,
    first: Vec<u8>,
    mut stream: Streaming<pb::SnapshotChunk>,
) -> Result<SnapshotFile, Status> {
    let io_err = |e: io::Error| Status::internal(format!("{}: {e}", path.display()));
    let mut out = tokio::fs::File::create(path).await.map_err(io_err)?;
    out.write_all(&first).await.map_err(io_err)?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if chunk.header.is_some() {
            return Err(Status::invalid_argument(
                "a snapshot header after the first chunk",
            ));
        }
        out.write_all(&chunk.data).await.map_err(io_err)?;
    }
    // Not synced here: installing copies the file into place and syncs the
    // copy; this one is deleted afterwards.
    out.flush().await.map_err(io_err)?;
    drop(out);
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || SnapshotFile::open(&path))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::invalid_argument(format!("received snapshot: {e}")))
}
