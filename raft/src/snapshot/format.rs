//! The bytes of a snapshot file.
//!
//! ```text
//! header (64 bytes, little-endian), format version 2
//!   0  8  magic "MSVSNAPS"
//!   8  2  format version, 2
//!  10  2  flags: bit 0 chain hash present
//!  12  4  state length s (≤ MAX_STATE_BYTES)
//!  16  8  data length d
//!  24  4  CRC32 of the body (state and data)
//!  28 32  chain hash of the snapshot's last entry in the partition's log
//!         (zero when flag bit 0 is clear: the builder did not know it)
//!  60  4  CRC32 of header bytes 0..60
//! state (s bytes): the `AppliedState` the snapshot leaves a state machine in
//! data  (d bytes): what the state machine's `SnapshotSource` wrote
//! ```
//!
//! The file is exactly 64 + s + d bytes long. The header is written last
//! (its lengths and CRC are known only then), before the fdatasync.
//!
//! The chain hash travels with the snapshot so that a replica that installs
//! it past the end of its log continues the log's hash chain from it
//! (`missive_log::Log::purge_with_hash`) and ends up with the chain hash
//! every other replica has at the same index.
//!
//! Version 1 files (written before the chain hash existed) have a 32-byte
//! header: the same fields up to byte 28 (bytes 10..12 reserved, zero), then
//! the CRC32 of header bytes 0..28; the body follows at byte 32. They are
//! still read, as snapshots without a chain hash, and copied as they are.
//! Code that knows only version 1 refuses a version 2 file ("unknown format
//! version") rather than misplace its body.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use missive_log::ChainHash;

use crate::applied_state::AppliedState;
use crate::error::{BoxError, Error, Result};

/// Length of the header this code writes (version 2).
pub(crate) const HEADER_LEN: usize = 64;
/// Length of a version 1 header.
const V1_HEADER_LEN: usize = 32;
const MAGIC: [u8; 8] = *b"MSVSNAPS";
/// The version this code writes.
const VERSION: u16 = 2;
/// The version before the chain hash, still read.
const VERSION_1: u16 = 1;
/// Header flag: the chain hash field holds the hash of the last entry.
const HAS_CHAIN_HASH: u16 = 1 << 0;

/// Bound on the encoded applied state in a header. It holds a membership,
/// so it is small; the bound keeps a corrupt length from allocating much.
pub const MAX_STATE_BYTES: u32 = 1 << 20;

/// Size of the buffers a snapshot is streamed through.
const CHUNK: usize = 64 << 10;

/// The header of a snapshot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The format version the header was read in or is written in; a copy
    /// keeps it, so the body stays where the header says.
    pub version: u16,
    /// Length of the encoded applied state.
    pub state_len: u32,
    /// Length of the state machine's data.
    pub data_len: u64,
    /// CRC32 of state and data.
    pub body_crc: u32,
    /// The chain hash of the snapshot's last entry, if its builder knew it
    /// (never in version 1).
    pub chain_hash: Option<ChainHash>,
}

impl Header {
    /// The header's length in its version.
    pub fn header_len(&self) -> usize {
        if self.version == VERSION_1 {
            V1_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    fn encode(&self) -> Vec<u8> {
        let len = self.header_len();
        let mut b = vec![0u8; len];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.state_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.data_len.to_le_bytes());
        b[24..28].copy_from_slice(&self.body_crc.to_le_bytes());
        if self.version != VERSION_1
            && let Some(hash) = &self.chain_hash
        {
            b[10..12].copy_from_slice(&HAS_CHAIN_HASH.to_le_bytes());
            b[28..60].copy_from_slice(hash);
        }
        let crc_at = len - 4;
        let crc = crc32fast::hash(&b[..crc_at]);
        b[crc_at..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the header at the start of `b` (which holds at least the
    /// header, or the whole file if it is shorter).
    fn decode(b: &[u8]) -> std::result::Result<Header, &'static str> {
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if b.len() < V1_HEADER_LEN {
            return Err("shorter than a header");
        }
        if b[0..8] != MAGIC {
            return Err("wrong magic");
        }
        // The version says where the header's CRC is, so it is read first;
        // a damaged version is unknown or fails that CRC.
        let version = u16::from_le_bytes([b[8], b[9]]);
        let len = match version {
            VERSION => HEADER_LEN,
            VERSION_1 => V1_HEADER_LEN,
            _ => return Err("unknown format version"),
        };
        if b.len() < len {
            return Err("shorter than a header");
        }
        let crc_at = len - 4;
        if crc32fast::hash(&b[..crc_at]) != u32_at(crc_at) {
            return Err("header CRC mismatch");
        }
        let state_len = u32_at(12);
        if state_len > MAX_STATE_BYTES {
            return Err("state length out of bounds");
        }
        let mut d = [0u8; 8];
        d.copy_from_slice(&b[16..24]);
        let chain_hash = if version == VERSION {
            let flags = u16::from_le_bytes([b[10], b[11]]);
            if flags & !HAS_CHAIN_HASH != 0 {
                return Err("unknown header flags");
            }
            (flags & HAS_CHAIN_HASH != 0).then(|| {
                let mut h = [0u8; 32];
                h.copy_from_slice(&b[28..60]);
                h
            })
        } else {
            None
        };
        Ok(Header {
            version,
            state_len,
            data_len: u64::from_le_bytes(d),
            body_crc: u32_at(24),
            chain_hash,
        })
    }

    /// Where the data starts.
    pub fn data_offset(&self) -> u64 {
        self.header_len() as u64 + u64::from(self.state_len)
    }

    /// The length of the whole file.
    pub fn file_len(&self) -> u64 {
        self.data_offset() + self.data_len
    }
}

/// A writer that keeps a CRC and a count of what passes through it.
struct Checksummed<W> {
    /// Where the bytes go.
    inner: W,
    /// CRC32 of every byte so far.
    crc: crc32fast::Hasher,
    /// How many bytes so far.
    len: u64,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a complete snapshot file at `path` (which must not exist): the
/// state, then what `write_data` writes, then the header. Durable before it
/// returns; making it current is the caller's rename.
pub(crate) fn write_file(
    path: &Path,
    state: &AppliedState,
    chain_hash: Option<ChainHash>,
    write_data: impl FnOnce(&mut dyn Write) -> std::result::Result<(), BoxError>,
) -> Result<Header> {
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    // Room for the header, written last.
    file.write_all_at(&[0u8; HEADER_LEN], 0)
        .map_err(|e| Error::io("write", path, e))?;
    let state_bytes = state.encode();
    let state_len = u32::try_from(state_bytes.len())
        .ok()
        .filter(|n| *n <= MAX_STATE_BYTES)
        .ok_or_else(|| Error::corrupt_snapshot(path, "applied state too large for a header"))?;
    let mut body = BufWriter::with_capacity(
        CHUNK,
        Checksummed {
            inner: Positioned {
                file: &file,
                pos: HEADER_LEN as u64,
                pace: true,
                unpaced: 0,
            },
            crc: crc32fast::Hasher::new(),
            len: 0,
        },
    );
    body.write_all(&state_bytes)
        .map_err(|e| Error::io("write", path, e))?;
    write_data(&mut body).map_err(Error::StateMachine)?;
    let body = body
        .into_inner()
        .map_err(|e| Error::io("write", path, e.into_error()))?;
    let header = Header {
        version: VERSION,
        state_len,
        data_len: body.len - u64::from(state_len),
        body_crc: body.crc.finalize(),
        chain_hash,
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(|e| Error::io("write", path, e))?;
    // Durable before the caller's rename can make it current.
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", path, e))?;
    Ok(header)
}

/// Writes at an advancing position with pwrite (no shared cursor), paced
/// to the disk ([`crate::pace`]).
struct Positioned<'a> {
    /// The file written.
    file: &'a File,
    /// Where the next byte goes.
    pos: u64,
    /// Whether to pace: a build does, a copy does not (a replica
    /// installing a snapshot is behind, and catching up comes first).
    pace: bool,
    /// Bytes written since the last hand to the disk.
    unpaced: usize,
}

/// Bytes a snapshot writes between two hands to the disk.
const PACE_BYTES: usize = 1 << 20;

impl Write for Positioned<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.pos)?;
        self.pos += n as u64;
        self.unpaced += n;
        if self.pace && self.unpaced >= PACE_BYTES {
            // A snapshot is the whole state: written at memory speed it
            // would reach the disk in one burst at its fdatasync, with the
            // logs' flushes waiting behind it (crate::pace).
            crate::pace::paced(self.file, self.unpaced)?;
            self.unpaced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads and checks the header and the applied state of a snapshot file
/// (not the data: see [`check_body`]).
pub(crate) fn read_head(file: &File, path: &Path) -> Result<(Header, AppliedState)> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    // As much as the longest header, or the whole file if it is shorter;
    // `decode` tells which version, and so how much of it, is the header.
    let mut h = vec![0u8; len.min(HEADER_LEN as u64) as usize];
    file.read_exact_at(&mut h, 0)
        .map_err(|e| Error::io("read", path, e))?;
    let header = Header::decode(&h).map_err(|reason| Error::corrupt_snapshot(path, reason))?;
    if len != header.file_len() {
        return Err(Error::corrupt_snapshot(
            path,
            format!("file is {len} bytes, its header says {}", header.file_len()),
        ));
    }
    let mut state = vec![0u8; header.state_len as usize];
    file.read_exact_at(&mut state, header.header_len() as u64)
        .map_err(|e| Error::io("read", path, e))?;
    let state = AppliedState::decode(&state)
        .map_err(|e| Error::corrupt_snapshot(path, format!("applied state: {e}")))?;
    Ok((header, state))
}

/// Streams the body of `file` through its CRC check, copying it to `sink`
/// if one is given.
pub(crate) fn check_body(
    file: &File,
    path: &Path,
    header: &Header,
    mut sink: Option<&mut dyn Write>,
) -> Result<()> {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = header.header_len() as u64;
    let end = header.file_len();
    while pos < end {
        let n = (end - pos).min(CHUNK as u64) as usize;
        file.read_exact_at(&mut buf[..n], pos)
            .map_err(|e| Error::io("read", path, e))?;
        crc.update(&buf[..n]);
        if let Some(sink) = sink.as_mut() {
            sink.write_all(&buf[..n])
                .map_err(|e| Error::io("write copy of", path, e))?;
        }
        pos += n as u64;
    }
    if crc.finalize() != header.body_crc {
        return Err(Error::corrupt_snapshot(path, "body CRC mismatch"));
    }
    Ok(())
}

/// Copies the snapshot file `src` to a new file `dst`, checking it on the
/// way. Durable before it returns.
pub(crate) fn copy_checked(
    src: &File,
    src_path: &Path,
    dst_path: &Path,
) -> Result<(Header, AppliedState)> {
    let (header, state) = read_head(src, src_path)?;
    let dst = File::options()
        .write(true)
        .create_new(true)
        .open(dst_path)
        .map_err(|e| Error::io("create", dst_path, e))?;
    dst.write_all_at(&header.encode(), 0)
        .map_err(|e| Error::io("write", dst_path, e))?;
    let mut out = BufWriter::with_capacity(
        CHUNK,
        Positioned {
            file: &dst,
            pos: header.header_len() as u64,
            pace: false,
            unpaced: 0,
        },
    );
    check_body(src, src_path, &header, Some(&mut out))?;
    out.flush().map_err(|e| Error::io("write", dst_path, e))?;
    drop(out);
    // Durable before the caller's rename can make it current.
    dst.sync_data()
        .map_err(|e| Error::io("fdatasync", dst_path, e))?;
    Ok((header, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_refuses_any_flipped_bit() {
        for (version, chain_hash) in [
            (VERSION, Some([0x5A; 32])),
            (VERSION, None),
            (VERSION_1, None),
        ] {
            let h = Header {
                version,
                state_len: 70,
                data_len: 1 << 40,
                body_crc: 0xdead_beef,
                chain_hash,
            };
            let b = h.encode();
            assert_eq!(b.len(), h.header_len());
            assert_eq!(Header::decode(&b), Ok(h));
            for byte in 0..b.len() {
                let mut bad = b.clone();
                bad[byte] ^= 0x10;
                assert!(
                    Header::decode(&bad).is_err(),
                    "version {version}, byte {byte}"
                );
            }
        }
    }

    #[test]
    fn a_version_1_file_is_read_without_a_chain_hash_and_copied_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = AppliedState::default().encode();
        let data = b"version one data";
        let mut body = state.clone();
        body.extend_from_slice(data);
        let header = Header {
            version: VERSION_1,
            state_len: state.len() as u32,
            data_len: data.len() as u64,
            body_crc: crc32fast::hash(&body),
            chain_hash: None,
        };
        let mut file = header.encode();
        assert_eq!(file.len(), 32, "a version 1 header is 32 bytes");
        file.extend_from_slice(&body);
        let path = dir.path().join("v1");
        std::fs::write(&path, &file).expect("write");
        let f = File::open(&path).expect("open");
        let (h, read_state) = read_head(&f, &path).expect("head");
        assert_eq!((h.version, h.chain_hash), (VERSION_1, None));
        assert_eq!(read_state, AppliedState::default());
        assert_eq!(h.data_offset(), 32 + state.len() as u64);
        let copy = dir.path().join("copy");
        copy_checked(&f, &path, &copy).expect("copy");
        assert_eq!(std::fs::read(&copy).expect("read copy"), file);
    }

    fn written(dir: &Path, data: &[u8]) -> std::path::PathBuf {
        let path = dir.join("s");
        let data = data.to_vec();
        write_file(&path, &AppliedState::default(), Some([1; 32]), move |out| {
            out.write_all(&data)?;
            Ok(())
        })
        .expect("write");
        path
    }

    #[test]
    fn a_written_file_checks_and_copies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let path = written(dir.path(), &data);
        let f = File::open(&path).expect("open");
        let (h, state) = read_head(&f, &path).expect("head");
        assert_eq!(state, AppliedState::default());
        assert_eq!(h.data_len, data.len() as u64);
        assert_eq!(h.chain_hash, Some([1; 32]));
        let copy = dir.path().join("copy");
        copy_checked(&f, &path, &copy).expect("copy");
        assert_eq!(
            std::fs::read(&copy).expect("read copy"),
            std::fs::read(&path).expect("read original")
        );
    }

    #[test]
    fn a_flipped_data_byte_fails_the_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = written(dir.path(), b"some state machine bytes");
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).expect("write");
        let f = File::open(&path).expect("open");
        let (h, _) = read_head(&f, &path).expect("header is intact");
        assert!(matches!(
            check_body(&f, &path, &h, None),
            Err(Error::CorruptSnapshot { .. })
        ));
    }

    #[test]
    fn a_cut_file_is_refused_at_the_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = written(dir.path(), b"0123456789");
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("write");
        let f = File::open(&path).expect("open");
        assert!(matches!(
            read_head(&f, &path),
            Err(Error::CorruptSnapshot { .. })
        ));
    }
}
