//! The narrow interface the projection needs from a store, which each
//! engine implements: one atomic write per apply batch, point reads inside
//! it, the applied index, a page read and full scans for the checker.

use anyhow::Result;

/// The projection's tables. Keys and values are fixed-width big-endian
/// fields (see `apply`), so byte order is key order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Table {
    /// (conversation 16 B, seq u64) → message row.
    Messages,
    /// conversation → last seq, last message seq, last activity.
    Heads,
    /// (conversation, user) → delivered_up_to, read_up_to.
    Watermarks,
    /// (sender, client_msg_id) → (conversation, seq).
    Idempotency,
    /// (conversation, user) → role, joined_at.
    Members,
    /// (user, conversation) → joined_at: the inbox's reverse index.
    MemberOf,
    /// (conversation, seq) → event bytes.
    Events,
    /// Named values; only `APPLIED_INDEX_KEY`.
    Meta,
}

impl Table {
    pub(crate) const ALL: [Table; 8] = [
        Table::Messages,
        Table::Heads,
        Table::Watermarks,
        Table::Idempotency,
        Table::Members,
        Table::MemberOf,
        Table::Events,
        Table::Meta,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Messages => "messages",
            Table::Heads => "heads",
            Table::Watermarks => "watermarks",
            Table::Idempotency => "idempotency",
            Table::Members => "members",
            Table::MemberOf => "member_of",
            Table::Events => "events",
            Table::Meta => "meta",
        }
    }

    /// A stable one-byte id, for engines that keep every table in one
    /// keyspace.
    pub(crate) fn id(self) -> u8 {
        self as u8
    }
}

/// The key of the last applied log index in `Table::Meta`. It is written
/// in the same atomic write as the changes of the entries up to it, so
/// after any crash the store holds exactly the effects of the log prefix
/// it names.
pub(crate) const APPLIED_INDEX_KEY: &[u8] = b"applied_index";

/// A visitor of rows, key then value, in key order.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// The changes of one write, made through its `Txn`.
pub(crate) type Changes<'a> = dyn FnMut(&mut dyn Txn) -> Result<()> + 'a;

/// One open write: reads see the write's own earlier changes.
pub(crate) trait Txn {
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;
}

/// What the projection needs from an engine.
pub(crate) trait Store {
    /// Runs `f` in one write and commits it atomically: all of its changes
    /// or none survive a crash. Durability is the engine's policy (see its
    /// module): the log is durable, so a commit may be lost by a crash as
    /// long as a whole prefix of commits survives.
    fn write(&mut self, f: &mut Changes<'_>) -> Result<()>;

    /// The applied index of the last commit, `None` for a new store.
    fn applied_index(&self) -> Result<Option<u64>>;

    /// The values of the last `limit` messages of `conversation`, newest
    /// first: one page of history.
    fn page(&self, conversation: &[u8; 16], limit: usize) -> Result<Vec<Vec<u8>>>;

    /// Every row of `table` in key order.
    fn scan(&self, table: Table, visit: &mut Visit<'_>) -> Result<()>;

    /// Makes every commit durable and closes the store.
    fn close(self: Box<Self>) -> Result<()>;

    /// Durable commits made by this handle; `None` for an engine that
    /// makes its writes durable on its own schedule.
    fn durable_commits(&self) -> Option<u64>;
}

/// The key range of one conversation's messages: (conversation, 0) to
/// (conversation, u64::MAX), inclusive.
pub(crate) fn conversation_range(conversation: &[u8; 16]) -> ([u8; 24], [u8; 24]) {
    let mut lo = [0u8; 24];
    lo[..16].copy_from_slice(conversation);
    let mut hi = [0xffu8; 24];
    hi[..16].copy_from_slice(conversation);
    (lo, hi)
}
