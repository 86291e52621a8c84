//! The bytes of a snapshot file.
//!
//! ```text
//! header (32 bytes, little-endian)
//!   0  8  magic "MSVSNAPS"
//!   8  2  format version, 1
//!  10  2  reserved, zero
//!  12  4  state length s (≤ MAX_STATE_BYTES)
//!  16  8  data length d
//!  24  4  CRC32 of the body (state and data)
//!  28  4  CRC32 of header bytes 0..28
//! state (s bytes): the `AppliedState` the snapshot leaves a state machine in
//! data  (d bytes): what the state machine's `SnapshotSource` wrote
//! ```
//!
//! The file is exactly 32 + s + d bytes long. The header is written last
//! (its lengths and CRC are known only then), before the fdatasync.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::applied_state::AppliedState;
use crate::error::{BoxError, Error, Result};

/// Length of the header.
pub(crate) const HEADER_LEN: usize = 32;
const MAGIC: [u8; 8] = *b"MSVSNAPS";
const VERSION: u16 = 1;

/// Bound on the encoded applied state in a header. It holds a membership,
/// so it is small; the bound keeps a corrupt length from allocating much.
pub const MAX_STATE_BYTES: u32 = 1 << 20;

/// Size of the buffers a snapshot is streamed through.
const CHUNK: usize = 64 << 10;

/// The header of a snapshot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Length of the encoded applied state.
    pub state_len: u32,
    /// Length of the state machine's data.
    pub data_len: u64,
    /// CRC32 of state and data.
    pub body_crc: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.state_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.data_len.to_le_bytes());
        b[24..28].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8; HEADER_LEN]) -> std::result::Result<Header, &'static str> {
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if b[0..8] != MAGIC {
            return Err("wrong magic");
        }
        if crc32fast::hash(&b[..28]) != u32_at(28) {
            return Err("header CRC mismatch");
        }
        if u16::from_le_bytes([b[8], b[9]]) != VERSION {
            return Err("unknown format version");
        }
        let state_len = u32_at(12);
        if state_len > MAX_STATE_BYTES {
            return Err("state length out of bounds");
        }
        let mut d = [0u8; 8];
        d.copy_from_slice(&b[16..24]);
        Ok(Header {
            state_len,
            data_len: u64::from_le_bytes(d),
            body_crc: u32_at(24),
        })
    }

    /// Where the data starts.
    pub fn data_offset(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.state_len)
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
        state_len,
        data_len: body.len - u64::from(state_len),
        body_crc: body.crc.finalize(),
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(|e| Error::io("write", path, e))?;
    // Durable before the caller's rename can make it current.
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", path, e))?;
    Ok(header)
}

/// Writes at an advancing position with pwrite (no shared cursor).
struct Positioned<'a> {
    /// The file written.
    file: &'a File,
    /// Where the next byte goes.
    pos: u64,
}

impl Write for Positioned<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads and checks the header and the applied state of a snapshot file
/// (not the data: see [`check_body`]).
pub(crate) fn read_head(file: &File, path: &Path) -> Result<(Header, AppliedState)> {
    let mut h = [0u8; HEADER_LEN];
    file.read_exact_at(&mut h, 0).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::corrupt_snapshot(path, "shorter than a header"),
        _ => Error::io("read", path, e),
    })?;
    let header = Header::decode(&h).map_err(|reason| Error::corrupt_snapshot(path, reason))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if len != header.file_len() {
        return Err(Error::corrupt_snapshot(
            path,
            format!("file is {len} bytes, its header says {}", header.file_len()),
        ));
    }
    let mut state = vec![0u8; header.state_len as usize];
    file.read_exact_at(&mut state, HEADER_LEN as u64)
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
    let mut pos = HEADER_LEN as u64;
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
            pos: HEADER_LEN as u64,
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
        let h = Header {
            state_len: 70,
            data_len: 1 << 40,
            body_crc: 0xdead_beef,
        };
        let b = h.encode();
        assert_eq!(Header::decode(&b), Ok(h));
        for byte in 0..HEADER_LEN {
            let mut bad = b;
            bad[byte] ^= 0x10;
            assert!(Header::decode(&bad).is_err(), "byte {byte}");
        }
    }

    fn written(dir: &Path, data: &[u8]) -> std::path::PathBuf {
        let path = dir.join("s");
        let data = data.to_vec();
        write_file(&path, &AppliedState::default(), move |out| {
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
