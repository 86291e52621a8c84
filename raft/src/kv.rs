//! A key-value map as a replicated state machine: small, but real — it
//! decodes commands, replies, and streams snapshots to and from files.
//! missive-raft's tests and benchmarks replicate it; it is not chat.
//!
//! Command bodies (integers little-endian):
//! - set: `1, u32 key length, key, u32 value length, value`
//! - delete: `1` is replaced by `2`, and no value.
//!
//! A reply is the previous value: `0` for none, or `1` then its bytes. A
//! malformed command is rejected with the reply `0xff` (a deterministic
//! rejection, not an error).
//!
//! Snapshot data: the pairs in key order, each `u32 key length, key, u32
//! value length, value`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use crate::{AppliedState, BoxError, Command, CommandEntry, Reply, SnapshotSource, StateMachine};

const SET: u8 = 1;
const DELETE: u8 = 2;
const REJECTED: u8 = 0xff;

/// The map, where it stands, and when each key was last written.
#[derive(Debug, Default)]
pub struct Kv {
    pub map: BTreeMap<String, String>,
    /// The leader timestamp of the last write of each key (not part of
    /// snapshots; tests read it to check timestamps reach apply).
    pub written_at: BTreeMap<String, u64>,
    pub applied: AppliedState,
}

pub fn set(key: &str, value: &str) -> Command {
    let mut body = vec![SET];
    put(&mut body, key.as_bytes());
    put(&mut body, value.as_bytes());
    Command {
        body,
        request_id: format!("set {key}"),
    }
}

pub fn delete(key: &str) -> Command {
    let mut body = vec![DELETE];
    put(&mut body, key.as_bytes());
    Command {
        body,
        request_id: format!("delete {key}"),
    }
}

/// The state machine refused a malformed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the key-value state machine rejected the command")]
pub struct Rejected;

/// The previous value a reply carries; `Err` for a rejection.
pub fn previous(reply: &Reply) -> Result<Option<String>, Rejected> {
    match reply.body.split_first() {
        Some((0, [])) => Ok(None),
        Some((1, v)) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
        _ => Err(Rejected),
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn take<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = b.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    let (v, rest) = (rest.get(..len)?, &rest[len..]);
    *b = rest;
    Some(v)
}

fn take_string(b: &mut &[u8]) -> Option<String> {
    String::from_utf8(take(b)?.to_vec()).ok()
}

/// A decoded command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Set { key: String, value: String },
    /// Remove `key`.
    Delete { key: String },
}

/// Decodes a command body; `None` for a malformed one (which apply rejects).
pub fn decode(command: &Command) -> Option<Op> {
    let (op, mut rest) = command.body.split_first()?;
    let op = match *op {
        SET => Op::Set {
            key: take_string(&mut rest)?,
            value: take_string(&mut rest)?,
        },
        DELETE => Op::Delete {
            key: take_string(&mut rest)?,
        },
        _ => return None,
    };
    rest.is_empty().then_some(op)
}

impl Kv {
    fn apply_one(&mut self, c: &CommandEntry<'_>) -> Reply {
        let previous = match decode(c.command) {
            Some(Op::Set { key, value }) => {
                self.written_at.insert(key.clone(), c.timestamp_ms);
                self.map.insert(key, value)
            }
            Some(Op::Delete { key }) => {
                self.written_at.insert(key.clone(), c.timestamp_ms);
                self.map.remove(&key)
            }
            None => {
                return Reply {
                    body: vec![REJECTED],
                };
            }
        };
        Reply {
            body: match previous {
                None => vec![0],
                Some(v) => [&[1u8][..], v.as_bytes()].concat(),
            },
        }
    }
}

impl StateMachine for Kv {
    type Snapshot = KvView;

    fn applied_state(&self) -> Result<AppliedState, BoxError> {
        Ok(self.applied.clone())
    }

    fn apply(
        &mut self,
        commands: &[CommandEntry<'_>],
        after: &AppliedState,
    ) -> Result<Vec<Reply>, BoxError> {
        let replies = commands.iter().map(|c| self.apply_one(c)).collect();
        // In memory, so "atomically with the changes" is trivially true.
        self.applied = after.clone();
        Ok(replies)
    }

    fn begin_snapshot(&mut self) -> Result<KvView, BoxError> {
        // A test-sized map: a copy is the consistent view.
        Ok(KvView(self.map.clone()))
    }

    fn install_snapshot(
        &mut self,
        state: &AppliedState,
        data: &mut dyn Read,
    ) -> Result<(), BoxError> {
        let mut map = BTreeMap::new();
        // One pair at a time: memory is bounded by the largest pair.
        while let Some(k) = read_field(data, true)? {
            let v = read_field(data, false)?.ok_or("snapshot ends inside a pair")?;
            map.insert(String::from_utf8(k)?, String::from_utf8(v)?);
        }
        self.map = map;
        self.written_at.clear();
        self.applied = state.clone();
        Ok(())
    }
}

/// Reads one length-prefixed field; `None` at a clean end if `eof_ok`.
fn read_field(data: &mut dyn Read, eof_ok: bool) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match data.read(&mut len[got..])? {
            0 if got == 0 && eof_ok => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let mut v = vec![0u8; u32::from_le_bytes(len) as usize];
    data.read_exact(&mut v)?;
    Ok(Some(v))
}

/// A copy of the map, written out as a snapshot.
#[derive(Debug)]
pub struct KvView(BTreeMap<String, String>);

impl SnapshotSource for KvView {
    fn write_to(self, out: &mut dyn Write) -> Result<(), BoxError> {
        for (k, v) in &self.0 {
            for field in [k.as_bytes(), v.as_bytes()] {
                out.write_all(&(field.len() as u32).to_le_bytes())?;
                out.write_all(field)?;
            }
        }
        Ok(())
    }
}
