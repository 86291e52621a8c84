//! The projection store: one redb database per partition, behind the narrow
//! surface the chat state machine and the queries use.
//!
//! Every table maps bytes to bytes: keys are built in [`keys`], values are
//! `missive.v1` projection records (`projection.proto`). Why redb and not
//! sled is in docs/projection-store.md.
//!
//! # Durability
//!
//! The partition's log is durable before anything is applied, so a
//! projection commit need not be: applies commit with redb's
//! `Durability::None` and one commit in a while is made durable (see
//! [`Store::commit`]): after [`DURABLE_AFTER_ENTRIES`] entries, or
//! [`DURABLE_AFTER`] at the latest. After a crash redb opens at its last
//! durable commit, whose `applied` state says where it stands, and Raft
//! applies the log again from there. The state and its position are always in one
//! transaction, so they never disagree.
//!
//! redb writes out every page changed since the last durable commit at the
//! next one. It writes through [`writeback`], which queues the writes and
//! fdatasyncs, in order, for a thread of the store's own: the commit
//! returns once its pages are queued, and the applies behind it go on while
//! they reach the disk. [`Store::sync`] waits for them. What remains of the
//! pause is redb's own work on those pages. The partitions of a node, loaded
//! alike, would reach their thresholds together and make it at once, so
//! each partition's schedule starts at its own offset
//! ([`Store::open_partition`]): their pauses take turns.
//!
//! # Snapshots
//!
//! [`Store::write_snapshot`] streams every table of a read transaction (a
//! consistent view) as `table, key, value` records; [`Store::install`]
//! replaces the whole store from such a stream in bounded chunks.

pub mod keys;
mod writeback;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

/// A projection table: bytes to bytes.
pub type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// A projection table open in a write transaction.
pub type WriteTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// Where the store stands: the encoded `AppliedState` of missive-raft.
pub const META: Table = TableDefinition::new("meta");
/// conversation id → `ConversationRecord`.
pub const CONVERSATIONS: Table = TableDefinition::new("conversations");
/// (conversation, user) → `MemberRecord`.
pub const MEMBERS: Table = TableDefinition::new("members");
/// (user, conversation) → the seq that removed the user, 8 bytes big-endian
/// (0 while a member): a user's conversations, for inbox and subscriptions.
pub const USER_CONVERSATIONS: Table = TableDefinition::new("user_conversations");
/// (conversation, seq) → `MessageRecord`.
pub const MESSAGES: Table = TableDefinition::new("messages");
/// (conversation, seq) → `StoredEvent`: what subscriptions replay.
pub const EVENTS: Table = TableDefinition::new("events");
/// (conversation, sender, client_msg_id) → `SentRecord`.
pub const SENT: Table = TableDefinition::new("sent");
/// user → `PresenceRecord`.
pub const PRESENCE: Table = TableDefinition::new("presence");
/// (user, node id in decimal) → when the session started (8 bytes
/// big-endian ms): the nodes holding a live subscription of the user.
pub const PRESENCE_SESSIONS: Table = TableDefinition::new("presence_sessions");
/// (user, device) → `DeviceKeysRecord`.
pub const DEVICE_KEYS: Table = TableDefinition::new("device_keys");
/// (user, device, key id) → one-time public key.
pub const ONE_TIME_KEYS: Table = TableDefinition::new("one_time_keys");
/// (user, device) → `PushTargetRecord`.
pub const PUSH_TARGETS: Table = TableDefinition::new("push_targets");
/// log index → `PushQueueEntry`: messages whose notifications are not
/// settled, in log order (the push notifier's feed).
pub const PUSH_QUEUE: Table = TableDefinition::new("push_queue");
/// (index, user, device) → `DeadLetter`.
pub const DEAD_LETTERS: Table = TableDefinition::new("dead_letters");

/// Every table, in the order snapshots and dumps list them. The position is
/// the table's number in a snapshot: append only.
pub const TABLES: [Table; 14] = [
    META,
    CONVERSATIONS,
    MEMBERS,
    USER_CONVERSATIONS,
    MESSAGES,
    EVENTS,
    SENT,
    PRESENCE,
    DEVICE_KEYS,
    ONE_TIME_KEYS,
    PUSH_TARGETS,
    PUSH_QUEUE,
    DEAD_LETTERS,
    PRESENCE_SESSIONS,
];

/// The key of the applied state in [`META`].
pub const APPLIED_KEY: &[u8] = b"applied";
/// The key of the push cursor in [`META`] (8 bytes big-endian): every
/// message at or below it has its notifications settled.
pub const PUSH_CURSOR_KEY: &[u8] = b"push_cursor";
/// The key of the history epoch in [`META`] (8 bytes big-endian; absent
/// means 0). A restore sets a new one so clients resync.
pub const EPOCH_KEY: &[u8] = b"epoch";

/// The highest log index whose conversation events retention removed (8
/// bytes big-endian): a subscription resuming from before it has a gap and
/// is told to resync.
pub const HISTORY_FLOOR_KEY: &[u8] = b"history_floor";

/// Entries applied without a durable commit, at most: bounds how much of
/// the log a restart applies again (about two seconds of replay at
/// bench-replay's rate for one partition) by its amount rather than by
/// time. The disk's share of a durable commit runs behind the applies
/// ([`writeback`]); what holds them is redb releasing the pages of the last
/// durable state that the commits since replaced, which grows far slower
/// than the entries between: under load, fewer and larger durable commits
/// pause the partition for less in total, and a pause that comes every 40 s
/// at 5,000 msg/s rather than every 10 s falls in fewer of the seconds a
/// latency percentile is taken over (docs/projection-store.md, "Durable
/// commits in the node" and "Writing behind").
pub const DURABLE_AFTER_ENTRIES: u64 = 200_000;

/// The longest applied entries stay non-durable, however few.
pub const DURABLE_AFTER: Duration = Duration::from_secs(60);

/// Rows an install commits at once, so installing a large snapshot never
/// holds it whole in a transaction's memory.
const INSTALL_CHUNK_ROWS: usize = 8192;

/// Snapshot stream magic and version.
const SNAPSHOT_MAGIC: &[u8; 8] = b"MSVPRJ01";
/// Ends a snapshot stream (no table has this number).
const END_OF_SNAPSHOT: u8 = 0xff;
/// Keys and values in a snapshot are at most this long; anything longer is
/// a damaged stream, not a row.
const MAX_SNAPSHOT_FIELD: usize = 64 << 20;

/// A store failure. Any of them stops the partition's apply: a state machine
/// that cannot store a committed entry cannot go on without diverging.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("projection store: {0}")]
    Db(#[from] redb::Error),
    #[error("projection store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("projection row {table}/{key:?} does not decode: {source}")]
    Corrupt {
        table: &'static str,
        key: String,
        source: prost::DecodeError,
    },
    #[error("snapshot stream is damaged: {0}")]
    BadSnapshot(String),
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// One row of a [`Store::dump`]: table number, key, value.
pub type Row = (u8, Vec<u8>, Vec<u8>);

/// One partition's projections.
#[derive(Debug)]
pub struct Store {
    /// The redb database.
    db: Database,
    /// Waits for what the database has written to reach the disk
    /// ([`writeback`]).
    flusher: writeback::Flusher,
    /// Since the last durable commit. A std `Mutex`: only the apply path
    /// takes it, briefly, never across an `.await`.
    since_durable: Mutex<SinceDurable>,
}

/// What was applied since the last durable commit.
#[derive(Debug)]
struct SinceDurable {
    at: Instant,
    entries: u64,
}

/// Where partition `partition`'s durable-commit schedule starts, as a share
/// of the interval: the fractional part of `partition` times the golden
/// ratio, which spreads any number of partitions evenly without knowing how
/// many there are (0, 0.618, 0.236, 0.854, 0.472, …).
fn schedule_offset(partition: u32) -> f64 {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    (f64::from(partition) * GOLDEN).fract()
}

impl Store {
    /// Opens (creating if needed) the store of `partition` at `path`, its
    /// first durable commit staggered against the other partitions' (see
    /// the module docs): it comes after `1 - offset` of
    /// [`DURABLE_AFTER_ENTRIES`] or of [`DURABLE_AFTER`].
    pub fn open_partition(path: &Path, partition: u32) -> Result<Store, StoreError> {
        Store::open_at(path, schedule_offset(partition))
    }

    /// Opens (creating if needed) the store at `path`, with every table.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_at(path, 0.0)
    }

    /// Opens the store with `offset` of the durable-commit interval already
    /// counted.
    fn open_at(path: &Path, offset: f64) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let (backend, flusher) = writeback::WriteBehind::open(path)?;
        let db = redb::Builder::new().create_with_backend(backend)?;
        let txn = db.begin_write()?;
        for t in TABLES {
            txn.open_table(t)?;
        }
        txn.commit()?;
        let now = Instant::now();
        Ok(Store {
            db,
            flusher,
            since_durable: Mutex::new(SinceDurable {
                at: now
                    .checked_sub(DURABLE_AFTER.mul_f64(offset))
                    .unwrap_or(now),
                entries: (DURABLE_AFTER_ENTRIES as f64 * offset) as u64,
            }),
        })
    }

    /// A read transaction: a consistent view.
    pub fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// A write transaction that [`Store::commit`] commits.
    pub fn write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write()?;
        // The log is the durable copy (see the module docs); `commit` makes
        // one commit in a while durable.
        txn.set_durability(Durability::None)?;
        Ok(txn)
    }

    /// Commits `txn`, which applied `entries` log entries: durably once
    /// [`DURABLE_AFTER_ENTRIES`] or [`DURABLE_AFTER`] has passed since the
    /// last durable commit.
    pub fn commit(&self, mut txn: WriteTransaction, entries: u64) -> Result<(), StoreError> {
        let mut since = self
            .since_durable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        since.entries += entries;
        if since.entries >= DURABLE_AFTER_ENTRIES || since.at.elapsed() >= DURABLE_AFTER {
            txn.set_durability(Durability::Immediate)?;
            // Saves the allocator state with the commit, so reopening after
            // a crash needs no full repair scan (docs/projection-store.md).
            txn.set_quick_repair(true);
            let started = Instant::now();
            txn.commit()?;
            crate::metrics::DURABLE_COMMIT_SECONDS.observe(started.elapsed().as_secs_f64());
            *since = SinceDurable {
                at: Instant::now(),
                entries: 0,
            };
        } else {
            txn.commit()?;
        }
        Ok(())
    }

    /// Makes everything committed so far durable (at shutdown, after an
    /// install).
    pub fn sync(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.commit()?;
        self.flusher.drain()?;
        Ok(())
    }

    /// The stored applied state bytes, if any.
    pub fn applied_bytes(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(META)?;
        Ok(t.get(APPLIED_KEY)?.map(|v| v.value().to_vec()))
    }

    /// Writes every row of `txn` to `out` (the snapshot stream).
    pub fn write_snapshot(txn: &ReadTransaction, out: &mut dyn Write) -> Result<(), StoreError> {
        out.write_all(SNAPSHOT_MAGIC)?;
        for (n, table) in TABLES.iter().enumerate() {
            let t = txn.open_table(*table)?;
            for row in t.iter()? {
                let (k, v) = row?;
                out.write_all(&[n as u8])?;
                for field in [k.value(), v.value()] {
                    out.write_all(&(field.len() as u32).to_le_bytes())?;
                    out.write_all(field)?;
                }
            }
        }
        out.write_all(&[END_OF_SNAPSHOT])?;
        Ok(())
    }

    /// Replaces every table with the rows of a snapshot stream, then stores
    /// `applied` (the snapshot's position) and makes it durable.
    ///
    /// Rows are committed in chunks to bound memory. A crash in the middle
    /// leaves a mix under the *old* applied state; missive-raft then finds the
    /// current snapshot newer than the store and installs it again, which
    /// starts by clearing everything.
    pub fn install(&self, data: &mut dyn Read, applied: &[u8]) -> Result<(), StoreError> {
        let mut magic = [0u8; 8];
        data.read_exact(&mut magic)?;
        if &magic != SNAPSHOT_MAGIC {
            return Err(StoreError::BadSnapshot("not a projection snapshot".into()));
        }
        let mut txn = self.write()?;
        for t in TABLES {
            txn.delete_table(t)?;
            txn.open_table(t)?;
        }
        while !install_chunk(&txn, data)? {
            txn.commit()?;
            txn = self.write()?;
        }
        txn.open_table(META)?.insert(APPLIED_KEY, applied)?;
        txn.commit()?;
        self.sync()
    }

    /// Every row of every table, in order: two stores hold the same
    /// projections exactly when their dumps are equal.
    pub fn dump(&self) -> Result<Vec<Row>, StoreError> {
        let txn = self.read()?;
        let mut rows = Vec::new();
        for (n, table) in TABLES.iter().enumerate() {
            let t = txn.open_table(*table)?;
            for row in t.iter()? {
                let (k, v) = row?;
                rows.push((n as u8, k.value().to_vec(), v.value().to_vec()));
            }
        }
        Ok(rows)
    }
}

/// Inserts the rows of a snapshot stream into `txn`, up to
/// [`INSTALL_CHUNK_ROWS`] of them; whether the stream ended. Rows come table
/// by table, so the table of the last row stays open until a row of another
/// table comes, rather than being opened once per row.
fn install_chunk(txn: &WriteTransaction, data: &mut dyn Read) -> Result<bool, StoreError> {
    let mut open: Option<(u8, WriteTable<'_>)> = None;
    let mut rows = 0;
    while rows < INSTALL_CHUNK_ROWS {
        let mut tag = [0u8; 1];
        data.read_exact(&mut tag)?;
        if tag[0] == END_OF_SNAPSHOT {
            return Ok(true);
        }
        let table = *TABLES
            .get(tag[0] as usize)
            .ok_or_else(|| StoreError::BadSnapshot(format!("unknown table {}", tag[0])))?;
        let key = read_field(data)?;
        let value = read_field(data)?;
        if tag[0] == 0 && key == APPLIED_KEY {
            // The snapshot's own position is written last, by `install`.
            continue;
        }
        let w = match &mut open {
            Some((t, w)) if *t == tag[0] => w,
            _ => {
                open = None;
                &mut open.insert((tag[0], txn.open_table(table)?)).1
            }
        };
        w.insert(key.as_slice(), value.as_slice())?;
        rows += 1;
    }
    Ok(false)
}

fn read_field(data: &mut dyn Read) -> Result<Vec<u8>, StoreError> {
    let mut len = [0u8; 4];
    data.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_SNAPSHOT_FIELD {
        return Err(StoreError::BadSnapshot(format!("a {len}-byte field")));
    }
    let mut v = vec![0u8; len];
    data.read_exact(&mut v)?;
    Ok(v)
}

/// Decodes the record at `key` of `table`, if present.
pub fn get<M: prost::Message + Default>(
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    name: &'static str,
    key: &[u8],
) -> Result<Option<M>, StoreError> {
    match t.get(key)? {
        None => Ok(None),
        Some(v) => decode(name, key, v.value()).map(Some),
    }
}

/// Decodes a record read from `name` at `key`.
pub fn decode<M: prost::Message + Default>(
    name: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|source| StoreError::Corrupt {
        table: name,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use redb::TableHandle;

    use super::*;

    /// A store whose tables hold `n` rows each, spread over several tables
    /// so that an install switches tables and crosses chunk boundaries.
    fn filled(path: &Path, n: usize) -> Store {
        let s = Store::open(path).unwrap();
        let txn = s.write().unwrap();
        for table in [CONVERSATIONS, MESSAGES, EVENTS, PUSH_QUEUE] {
            let mut t = txn.open_table(table).unwrap();
            for i in 0..n {
                let key = format!("{}/{i:08}", table.name());
                t.insert(key.as_bytes(), vec![i as u8; i % 97].as_slice())
                    .unwrap();
            }
        }
        txn.open_table(META)
            .unwrap()
            .insert(APPLIED_KEY, b"old".as_slice())
            .unwrap();
        s.commit(txn, 1).unwrap();
        s
    }

    /// Entries a store takes before its first durable commit.
    fn entries_before_first_durable(store: &Store) -> u64 {
        let mut applied = 0;
        loop {
            let step = DURABLE_AFTER_ENTRIES / 50;
            let txn = store.write().unwrap();
            store.commit(txn, step).unwrap();
            applied += step;
            let since = store.since_durable.lock().unwrap();
            if since.entries == 0 {
                return applied;
            }
            assert!(applied <= DURABLE_AFTER_ENTRIES, "no durable commit");
        }
    }

    #[test]
    fn the_partitions_of_a_node_take_turns_at_their_durable_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut firsts = Vec::new();
        for p in 0..4 {
            let store = Store::open_partition(&dir.path().join(format!("{p}.redb")), p).unwrap();
            firsts.push(entries_before_first_durable(&store));
        }
        // Partition 0 keeps the full interval; the others come earlier, each
        // at its own point, at least a tenth of the interval apart.
        assert_eq!(firsts[0], DURABLE_AFTER_ENTRIES);
        let mut sorted = firsts.clone();
        sorted.sort_unstable();
        for pair in sorted.windows(2) {
            assert!(
                pair[1] - pair[0] >= DURABLE_AFTER_ENTRIES / 10,
                "durable commits after {firsts:?} entries: too close together"
            );
        }
    }

    #[test]
    fn an_install_of_several_chunks_reproduces_every_row_and_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let rows = INSTALL_CHUNK_ROWS + INSTALL_CHUNK_ROWS / 2;
        let from = filled(&dir.path().join("from.redb"), rows);
        let mut stream = Vec::new();
        Store::write_snapshot(&from.read().unwrap(), &mut stream).unwrap();

        // The target holds rows the snapshot does not: they must go.
        let to = filled(&dir.path().join("to.redb"), 10);
        let txn = to.write().unwrap();
        txn.open_table(PRESENCE)
            .unwrap()
            .insert(b"stale".as_slice(), b"x".as_slice())
            .unwrap();
        to.commit(txn, 1).unwrap();

        to.install(&mut stream.as_slice(), b"new").unwrap();

        let mut want = from.dump().unwrap();
        for row in &mut want {
            if row.0 == 0 && row.1 == APPLIED_KEY {
                row.2 = b"new".to_vec();
            }
        }
        assert_eq!(to.dump().unwrap(), want);
        assert_eq!(to.dump().unwrap().len(), 4 * rows + 1);
        assert_eq!(to.applied_bytes().unwrap().as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn a_stream_naming_an_unknown_table_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = filled(&dir.path().join("s.redb"), 5);
        let before = s.dump().unwrap();
        let mut stream = SNAPSHOT_MAGIC.to_vec();
        stream.push(TABLES.len() as u8);
        stream.extend_from_slice(&[0; 8]);
        let err = s.install(&mut stream.as_slice(), b"new").unwrap_err();
        assert!(matches!(err, StoreError::BadSnapshot(_)), "{err}");
        assert_eq!(s.dump().unwrap(), before);
    }
}
