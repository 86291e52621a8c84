//! [`compare_stores`]: two projection stores, table by table, key by key.
//!
//! Both stores are opened read-only (redb's shared lock), so a store a
//! running node holds open cannot be compared: redb refuses, and the error
//! says so — compare a stopped node's store, or a copy.
//!
//! What is compared is the history the projections hold. Two rows of the
//! `meta` table describe where a store stands rather than what it holds,
//! and are compared by meaning:
//!
//! - `applied` (the position): by the index of the last entry applied. Its
//!   leader ids and membership name the cluster that applied it, which a
//!   restore replaces on purpose.
//! - `epoch` (the history's lineage, which a restore changes so clients
//!   resync): reported beside the result, never counted as a difference.

use std::fmt::Debug;
use std::path::Path;

use missive_proto::v1 as pb;
use missive_raft::AppliedState;
use prost::Message;
use redb::{
    ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable, TableError, TableHandle,
};

use super::OfflineError;
use crate::store::{self, StoreError, TABLES};

/// Longest rendering of one value in a difference.
const MAX_RENDERED: usize = 600;

/// Which store a row is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Only in the first store.
    Left,
    /// Only in the second.
    Right,
    /// In both, with different values.
    Both,
}

/// One row that differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The table.
    pub table: &'static str,
    /// The key, decoded.
    pub key: String,
    /// Where the row is.
    pub side: Side,
    /// The first store's value, decoded, if it has the row.
    pub left: Option<String>,
    /// The second store's value, decoded, if it has the row.
    pub right: Option<String>,
}

/// The result of a comparison.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// The first differences found, in table and key order (at most the
    /// limit asked for).
    pub differences: Vec<Difference>,
    /// How many rows differ in all.
    pub count: u64,
    /// Rows compared per table: (table, rows in the first, in the second).
    pub rows: Vec<(&'static str, u64, u64)>,
    /// Each store's last applied index.
    pub applied: (Option<u64>, Option<u64>),
    /// Each store's history epoch (0 when none is set).
    pub epoch: (u64, u64),
}

/// Compares the stores at `left` and `right`, keeping the first `limit`
/// differences (all are counted).
pub fn compare_stores(left: &Path, right: &Path, limit: usize) -> Result<Comparison, OfflineError> {
    let (a, b) = (open(left)?, open(right)?);
    let (ta, tb) = (
        a.begin_read().map_err(StoreError::from)?,
        b.begin_read().map_err(StoreError::from)?,
    );
    let mut out = Comparison::default();
    let tables: &'static [store::Table] = &TABLES;
    for table in tables {
        let (tab_a, tab_b) = (open_table(&ta, *table)?, open_table(&tb, *table)?);
        let mut rows_a = Rows::new(tab_a.as_ref())?;
        let mut rows_b = Rows::new(tab_b.as_ref())?;
        let (mut head_a, mut head_b) = (rows_a.next()?, rows_b.next()?);
        while head_a.is_some() || head_b.is_some() {
            let order = match (&head_a, &head_b) {
                (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            // Streams both tables in key order, holding one row of each.
            let (key, va, vb) = match order {
                std::cmp::Ordering::Less => {
                    let (k, v) = head_a
                        .take()
                        .expect("invariant: Less means a row on the left");
                    head_a = rows_a.next()?;
                    (k, Some(v), None)
                }
                std::cmp::Ordering::Greater => {
                    let (k, v) = head_b
                        .take()
                        .expect("invariant: Greater means a row on the right");
                    head_b = rows_b.next()?;
                    (k, None, Some(v))
                }
                std::cmp::Ordering::Equal => {
                    let (k, v) = head_a
                        .take()
                        .expect("invariant: Equal means a row on each side");
                    let (_, w) = head_b
                        .take()
                        .expect("invariant: Equal means a row on each side");
                    head_a = rows_a.next()?;
                    head_b = rows_b.next()?;
                    (k, Some(v), Some(w))
                }
            };
            if table.name() == store::META.name()
                && meta_row(&mut out, &key, va.as_deref(), vb.as_deref())
            {
                continue;
            }
            if va == vb {
                continue;
            }
            out.count += 1;
            if out.differences.len() < limit {
                out.differences.push(Difference {
                    table: table.name(),
                    key: render_key(table.name(), &key),
                    side: match (&va, &vb) {
                        (Some(_), None) => Side::Left,
                        (None, Some(_)) => Side::Right,
                        _ => Side::Both,
                    },
                    left: va.map(|v| render_value(table.name(), &key, &v)),
                    right: vb.map(|v| render_value(table.name(), &key, &v)),
                });
            }
        }
        out.rows.push((table.name(), rows_a.count, rows_b.count));
    }
    Ok(out)
}

fn open(path: &Path) -> Result<ReadOnlyDatabase, OfflineError> {
    if !path.exists() {
        return Err(OfflineError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no projection store here"),
        ));
    }
    ReadOnlyDatabase::open(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => OfflineError::Layout {
            path: path.to_owned(),
            reason: "the store is open in a running node (redb holds it locked); compare a \
                     stopped node's store or a copy of it"
                .into(),
        },
        e => e.into(),
    })
}

/// A projection table opened for reading.
type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
/// One row: key and value.
type Row = (Vec<u8>, Vec<u8>);

fn open_table(
    txn: &ReadTransaction,
    table: store::Table,
) -> Result<Option<ReadTable>, OfflineError> {
    match txn.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(StoreError::from(e).into()),
    }
}

/// A table's rows in key order, one at a time (an absent table has none).
struct Rows<'t> {
    /// The table's iterator.
    iter: Option<redb::Range<'t, &'static [u8], &'static [u8]>>,
    /// Rows handed out so far.
    count: u64,
}

impl<'t> Rows<'t> {
    fn new(table: Option<&'t ReadTable>) -> Result<Rows<'t>, OfflineError> {
        let iter = match table {
            Some(t) => Some(t.iter().map_err(StoreError::from)?),
            None => None,
        };
        Ok(Rows { iter, count: 0 })
    }

    fn next(&mut self) -> Result<Option<Row>, OfflineError> {
        let Some(iter) = self.iter.as_mut() else {
            return Ok(None);
        };
        match iter.next() {
            None => Ok(None),
            Some(row) => {
                let (k, v) = row.map_err(StoreError::from)?;
                self.count += 1;
                Ok(Some((k.value().to_vec(), v.value().to_vec())))
            }
        }
    }
}

fn be_u64(v: &[u8]) -> Option<u64> {
    v.try_into().ok().map(u64::from_be_bytes)
}

fn applied_index(v: &[u8]) -> Option<u64> {
    AppliedState::decode(v)
        .ok()
        .and_then(|s| s.last_applied)
        .map(|id| id.index)
}

/// Records the `meta` rows compared by meaning; true if `key` was one.
fn meta_row(out: &mut Comparison, key: &[u8], a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    if key == store::EPOCH_KEY {
        out.epoch = (
            a.and_then(be_u64).unwrap_or(0),
            b.and_then(be_u64).unwrap_or(0),
        );
        return true;
    }
    if key == store::APPLIED_KEY {
        let (ia, ib) = (a.and_then(applied_index), b.and_then(applied_index));
        out.applied = (ia, ib);
        if ia != ib {
            out.count += 1;
            out.differences.push(Difference {
                table: store::META.name(),
                key: "applied".into(),
                side: Side::Both,
                left: Some(format!("last applied index {ia:?}")),
                right: Some(format!("last applied index {ib:?}")),
            });
        }
        return true;
    }
    false
}

/// A key as its table builds it (see `crate::store::keys`).
fn render_key(table: &str, key: &[u8]) -> String {
    let split_seq = |key: &[u8]| -> Option<(String, u64)> {
        let (head, seq) = key.split_at_checked(key.len().checked_sub(8)?)?;
        Some((parts(head.strip_suffix(&[0])?), be_u64(seq)?))
    };
    match table {
        "messages" | "events" => split_seq(key).map(|(c, s)| format!("{c} seq {s}")),
        "one_time_keys" => split_seq(key).map(|(d, n)| format!("{d} key {n}")),
        "push_queue" => be_u64(key).map(|i| format!("index {i}")),
        "dead_letters" => key
            .split_at_checked(8)
            .and_then(|(i, rest)| Some(format!("index {} {}", be_u64(i)?, parts(rest)))),
        _ => None,
    }
    .unwrap_or_else(|| parts(key))
}

/// NUL-separated parts, joined by `/`; bytes that are not printable text
/// in hex.
fn parts(key: &[u8]) -> String {
    key.split(|b| *b == 0)
        .map(|p| match std::str::from_utf8(p) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_owned(),
            _ => format!("0x{}", hex(p)),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A value as its table stores it: a projection record, decoded.
fn render_value(table: &str, key: &[u8], v: &[u8]) -> String {
    fn decoded<M: Message + Default + Debug>(v: &[u8]) -> Option<String> {
        M::decode(v).ok().map(|m| format!("{m:?}"))
    }
    let s = match table {
        "meta" if key == store::PUSH_CURSOR_KEY => be_u64(v).map(|c| format!("push cursor {c}")),
        "conversations" => decoded::<pb::ConversationRecord>(v),
        "members" => decoded::<pb::MemberRecord>(v),
        "user_conversations" => be_u64(v).map(|s| match s {
            0 => "member".to_owned(),
            s => format!("removed at seq {s}"),
        }),
        "messages" => decoded::<pb::MessageRecord>(v),
        "events" => decoded::<pb::StoredEvent>(v),
        "sent" => decoded::<pb::SentRecord>(v),
        "presence" => decoded::<pb::PresenceRecord>(v),
        "presence_sessions" => be_u64(v).map(|ms| format!("since {ms} ms")),
        "device_keys" => decoded::<pb::DeviceKeysRecord>(v),
        "push_targets" => decoded::<pb::PushTargetRecord>(v),
        "push_queue" => decoded::<pb::PushQueueEntry>(v),
        "dead_letters" => decoded::<pb::DeadLetter>(v),
        _ => None,
    }
    .unwrap_or_else(|| format!("0x{}", hex(v)));
    if s.len() > MAX_RENDERED {
        let cut = (0..=MAX_RENDERED)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}…", &s[..cut])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keys;

    #[test]
    fn keys_read_as_their_tables_build_them() {
        assert_eq!(render_key("messages", &keys::seq("c1", 7)), "c1 seq 7");
        assert_eq!(
            render_key("members", &keys::pair("c1", "alice")),
            "c1/alice"
        );
        assert_eq!(
            render_key("one_time_keys", &keys::numbered("bob", "d1", 3)),
            "bob/d1 key 3"
        );
        assert_eq!(
            render_key("dead_letters", &keys::dead_letter(9, "bob", "d1")),
            "index 9 bob/d1"
        );
        assert_eq!(render_key("push_queue", &5u64.to_be_bytes()), "index 5");
    }
}
