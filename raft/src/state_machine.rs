//! The boundary between raft and the application: the [`StateMachine`]
//! trait.
//!
//! raft/ replicates entries; what they mean belongs to the application,
//! which implements this trait. [`StateMachineStore`](crate::StateMachineStore)
//! adapts any implementation to openraft: it feeds committed entries in
//! bounded batches, answers blank and membership entries itself, and moves
//! snapshots through files so no snapshot is ever held whole in memory.
//!
//! # What an implementation must guarantee
//!
//! - **Determinism.** `apply` depends only on the state and the entries: no
//!   clock (an entry carries its leader-assigned `timestamp_ms`), no
//!   randomness, no I/O that can differ between replicas. Replicas that apply
//!   the same log hold the same state.
//! - **Atomic progress.** The `after` state passed to `apply` is stored in
//!   the same atomic write as the batch's changes, and `applied_state`
//!   returns the last one stored: state and position never disagree, even
//!   after a crash.
//! - **Bounded memory.** A snapshot is written to and read from a stream; a
//!   large state is never built whole in memory.
//!
//! The trait is synchronous: the adapter calls it from a thread of its own,
//! one call at a time, so an implementation may do blocking I/O.
//!
//! # Group commit
//!
//! `apply` may leave its changes pending — written, but not yet made
//! visible to readers (an open write transaction) — and [`StateMachine::flush`]
//! makes them visible. The adapter applies every batch waiting for it
//! (bounded) and then flushes once, so under load one commit carries many
//! batches, and when idle every batch is flushed at once. No reply leaves,
//! and nothing else sees the state machine (`begin_snapshot`,
//! `install_snapshot`, `applied_state`, readers through the adapter),
//! before the flush.

use std::io::{Read, Write};

use crate::applied_state::AppliedState;
use crate::error::BoxError;
use crate::types::{Command, LogId, Reply};

/// One committed command, as the state machine applies it.
#[derive(Clone, Copy, Debug)]
pub struct CommandEntry<'a> {
    /// Its log id (the index is its position in the partition's log).
    pub log_id: LogId,
    /// Milliseconds since the Unix epoch, assigned by the leader that
    /// accepted it: the same on every replica.
    pub timestamp_ms: u64,
    /// The command.
    pub command: &'a Command,
}

/// An application's replicated state.
pub trait StateMachine: Send + 'static {
    /// A consistent view of the state, taken quickly, written out later.
    type Snapshot: SnapshotSource;

    /// Where the state stands: the `after` of the last `apply`, or the state
    /// of the last snapshot installed; the default state if neither.
    fn applied_state(&self) -> Result<AppliedState, BoxError>;

    /// Applies `commands` — the commands among a batch of consecutive
    /// committed entries, in log order — and returns exactly one reply per
    /// command. `after` is the state after the whole batch (it also counts
    /// blank and membership entries, which carry no command): store it
    /// atomically with the changes. Called with no command when a batch held
    /// only blank or membership entries.
    ///
    /// An error stops the node: a state machine that cannot apply a
    /// committed entry cannot go on without diverging. A command the
    /// application rejects is not an error — it is a reply saying so.
    fn apply(
        &mut self,
        commands: &[CommandEntry<'_>],
        after: &AppliedState,
    ) -> Result<Vec<Reply>, BoxError>;

    /// Makes the changes of every `apply` since the last flush visible,
    /// atomically with the last `after` they stored. The default, for state
    /// machines whose `apply` leaves nothing pending, does nothing.
    fn flush(&mut self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Takes a consistent view of the current state (for example a read
    /// transaction). It should be quick: applying waits meanwhile. The view
    /// is written out afterwards, while applying goes on.
    fn begin_snapshot(&mut self) -> Result<Self::Snapshot, BoxError>;

    /// Replaces the whole state with the snapshot read from `data` (what a
    /// [`SnapshotSource`] wrote), now at `state`.
    fn install_snapshot(
        &mut self,
        state: &AppliedState,
        data: &mut dyn Read,
    ) -> Result<(), BoxError>;
}

/// A consistent view of a state machine, to be written out as a snapshot.
pub trait SnapshotSource: Send + 'static {
    /// Writes the view to `out`, streaming.
    fn write_to(self, out: &mut dyn Write) -> Result<(), BoxError>;
}
