//! The log the projection applies: conversations created first, then a mix
//! of sends, receipts, edits and reactions, cut into apply batches of the
//! sizes group commit produces. Everything comes from one seed, so any
//! process can regenerate the same log, batch for batch.
//!
//! The generator keeps a shadow of what apply will do (each conversation's
//! last seq, its recent messages, each member's watermarks) only to issue
//! commands a real client would: receipts that move a watermark forward,
//! edits of the editor's own recent messages. Apply checks everything
//! again itself and never trusts the shadow.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::rng::Rng;

/// Conversations, all created before the timed mix starts.
pub(crate) const CONVERSATIONS: usize = 1_000;
/// Users; members of each conversation are drawn from them.
pub(crate) const USERS: usize = 10_000;
/// The largest apply batch: group commit hands the state machine 1 to this
/// many entries at once (uniformly here).
pub(crate) const MAX_BATCH: u64 = 64;
/// Exponent of the Zipf law that picks a conversation: a few busy groups
/// and a long tail of quiet chats.
const ZIPF_EXPONENT: f64 = 0.8;
/// Recent messages per conversation that edits and reactions aim at.
const RECENT_MESSAGES: usize = 16;
/// Recent sends a retry may repeat.
const RECENT_SENDS: usize = 256;
/// Share of sends that are client retries of an earlier send (same
/// `client_msg_id`): apply answers them from the idempotency table.
const RETRY_SHARE: f64 = 0.01;
/// Message body sizes, bytes.
const BODY_MIN: u64 = 100;
const BODY_MAX: u64 = 300;
/// Reaction emoji are numbered 0..EMOJI.
const EMOJI: u64 = 64;
/// The leader's clock at index 0, ms since the epoch; each index adds
/// `MS_PER_INDEX`, so timestamps are part of the log and replay exactly.
const EPOCH_MS: u64 = 1_750_000_000_000;
const MS_PER_INDEX: u64 = 7;

pub(crate) type Id = [u8; 16];

/// What a log entry asks the state machine to do.
#[derive(Clone, Debug)]
pub(crate) enum Command {
    CreateConversation {
        conversation: Id,
        /// The creator first.
        members: Vec<Id>,
    },
    Send {
        conversation: Id,
        sender: Id,
        client_msg_id: Id,
        body: Vec<u8>,
    },
    Receipt {
        conversation: Id,
        user: Id,
        /// `ReadUpTo` when true, `DeliveredUpTo` when false.
        read: bool,
        up_to: u64,
    },
    Edit {
        conversation: Id,
        editor: Id,
        target: u64,
        body: Vec<u8>,
    },
    React {
        conversation: Id,
        user: Id,
        target: u64,
        emoji: u32,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) index: u64,
    /// Leader-assigned, so apply is deterministic.
    pub(crate) timestamp_ms: u64,
    pub(crate) command: Command,
}

/// Entries handed to apply at once; committed as one write.
#[derive(Clone, Debug)]
pub(crate) struct Batch {
    /// True for the conversation-creating prefix, which is not timed.
    pub(crate) setup: bool,
    pub(crate) entries: Vec<Entry>,
}

impl Batch {
    pub(crate) fn last_index(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.index)
    }
}

/// The generator. Its memory is bounded by the fixed numbers of users,
/// conversations and members, not by the length of the log.
#[derive(Debug)]
pub(crate) struct Workload {
    rng: Rng,
    conversations: Vec<Id>,
    users: Vec<Id>,
    /// Member user numbers per conversation, the creator first.
    members: Vec<Vec<u32>>,
    /// Cumulative Zipf weights over conversations, for a binary search.
    popularity: Vec<f64>,
    /// Shadow: each conversation's last seq.
    last_seq: Vec<u64>,
    /// Shadow: (seq, sender) of each conversation's latest messages.
    recent: Vec<VecDeque<(u64, u32)>>,
    /// Shadow: (conversation, user) → (delivered, read).
    watermarks: HashMap<(u32, u32), (u64, u64)>,
    /// (conversation, sender, client_msg_id) of the latest sends.
    recent_sends: VecDeque<(u32, u32, Id)>,
    next_index: u64,
    created: usize,
    /// Mix entries still to generate.
    remaining: u64,
}

impl Workload {
    /// A log of `CONVERSATIONS` creations followed by `events` mix entries.
    pub(crate) fn new(seed: u64, events: u64) -> Workload {
        let mut rng = Rng::new(seed);
        let conversations: Vec<Id> = (0..CONVERSATIONS).map(|_| rng.id16()).collect();
        let users: Vec<Id> = (0..USERS).map(|_| rng.id16()).collect();
        let members = (0..CONVERSATIONS)
            .map(|_| {
                let size = match rng.unit() {
                    p if p < 0.6 => 2,
                    p if p < 0.9 => rng.between(3, 20),
                    _ => rng.between(50, 500),
                } as usize;
                let mut seen = HashSet::with_capacity(size);
                let mut list = Vec::with_capacity(size);
                while list.len() < size {
                    let user = rng.below(USERS as u64) as u32;
                    if seen.insert(user) {
                        list.push(user);
                    }
                }
                list
            })
            .collect();
        let mut total = 0.0;
        let popularity = (0..CONVERSATIONS)
            .map(|rank| {
                total += 1.0 / ((rank + 1) as f64).powf(ZIPF_EXPONENT);
                total
            })
            .collect();
        Workload {
            rng,
            conversations,
            users,
            members,
            popularity,
            last_seq: vec![0; CONVERSATIONS],
            recent: vec![VecDeque::with_capacity(RECENT_MESSAGES); CONVERSATIONS],
            watermarks: HashMap::new(),
            recent_sends: VecDeque::with_capacity(RECENT_SENDS),
            next_index: 1,
            created: 0,
            remaining: events,
        }
    }

    pub(crate) fn conversation_id(&self, n: usize) -> Id {
        self.conversations[n]
    }

    /// Rows of the membership table the setup writes.
    pub(crate) fn memberships(&self) -> usize {
        self.members.iter().map(Vec::len).sum()
    }

    /// The next apply batch, `None` after the last.
    pub(crate) fn next_batch(&mut self) -> Option<Batch> {
        let size = self.rng.between(1, MAX_BATCH);
        if self.created < CONVERSATIONS {
            let n = (size as usize).min(CONVERSATIONS - self.created);
            let entries = (0..n).map(|_| self.create()).collect();
            return Some(Batch {
                setup: true,
                entries,
            });
        }
        if self.remaining == 0 {
            return None;
        }
        let n = size.min(self.remaining);
        self.remaining -= n;
        let entries = (0..n).map(|_| self.mix()).collect();
        Some(Batch {
            setup: false,
            entries,
        })
    }

    fn entry(&mut self, command: Command) -> Entry {
        let index = self.next_index;
        self.next_index += 1;
        Entry {
            index,
            timestamp_ms: EPOCH_MS + index * MS_PER_INDEX,
            command,
        }
    }

    fn create(&mut self) -> Entry {
        let c = self.created;
        self.created += 1;
        self.last_seq[c] = 1;
        let command = Command::CreateConversation {
            conversation: self.conversations[c],
            members: self.members[c]
                .iter()
                .map(|&u| self.users[u as usize])
                .collect(),
        };
        self.entry(command)
    }

    /// 70 % sends, 20 % receipts, 5 % edits, 5 % reactions; a receipt or
    /// edit that has nothing to act on becomes a send.
    fn mix(&mut self) -> Entry {
        let c = self.pick_conversation();
        let roll = self.rng.unit();
        let command = if roll < 0.7 {
            self.send(c)
        } else if roll < 0.9 {
            self.receipt(c).unwrap_or_else(|| self.send(c))
        } else if roll < 0.95 {
            self.edit(c).unwrap_or_else(|| self.send(c))
        } else {
            self.react(c).unwrap_or_else(|| self.send(c))
        };
        self.entry(command)
    }

    fn pick_conversation(&mut self) -> usize {
        let total = self.popularity.last().copied().unwrap_or(0.0);
        let target = self.rng.unit() * total;
        self.popularity
            .partition_point(|&w| w <= target)
            .min(CONVERSATIONS - 1)
    }

    fn pick_member(&mut self, c: usize) -> u32 {
        let members = &self.members[c];
        members[self.rng.below(members.len() as u64) as usize]
    }

    fn body(&mut self) -> Vec<u8> {
        let mut body = vec![0; self.rng.between(BODY_MIN, BODY_MAX) as usize];
        self.rng.fill(&mut body);
        body
    }

    fn send(&mut self, c: usize) -> Command {
        if !self.recent_sends.is_empty() && self.rng.unit() < RETRY_SHARE {
            let pick = self.rng.below(self.recent_sends.len() as u64) as usize;
            let (rc, sender, client_msg_id) = self.recent_sends[pick];
            return Command::Send {
                conversation: self.conversations[rc as usize],
                sender: self.users[sender as usize],
                client_msg_id,
                body: self.body(),
            };
        }
        let sender = self.pick_member(c);
        let client_msg_id = self.rng.id16();
        self.last_seq[c] += 1;
        push_bounded(
            &mut self.recent[c],
            (self.last_seq[c], sender),
            RECENT_MESSAGES,
        );
        push_bounded(
            &mut self.recent_sends,
            (c as u32, sender, client_msg_id),
            RECENT_SENDS,
        );
        Command::Send {
            conversation: self.conversations[c],
            sender: self.users[sender as usize],
            client_msg_id,
            body: self.body(),
        }
    }

    /// Devices mostly acknowledge everything they hold (up to the head).
    fn receipt(&mut self, c: usize) -> Option<Command> {
        let user = self.pick_member(c);
        let read = self.rng.unit() < 0.5;
        let head = self.last_seq[c];
        let (delivered, read_up_to) = self
            .watermarks
            .get(&(c as u32, user))
            .copied()
            .unwrap_or((0, 0));
        let current = if read { read_up_to } else { delivered };
        if current >= head {
            return None;
        }
        let up_to = if self.rng.unit() < 0.8 {
            head
        } else {
            self.rng.between(current + 1, head)
        };
        let next = if read {
            (delivered.max(up_to), up_to)
        } else {
            (up_to, read_up_to)
        };
        self.watermarks.insert((c as u32, user), next);
        self.last_seq[c] += 1;
        Some(Command::Receipt {
            conversation: self.conversations[c],
            user: self.users[user as usize],
            read,
            up_to,
        })
    }

    fn edit(&mut self, c: usize) -> Option<Command> {
        let recent = &self.recent[c];
        if recent.is_empty() {
            return None;
        }
        let (target, editor) = recent[self.rng.below(recent.len() as u64) as usize];
        self.last_seq[c] += 1;
        Some(Command::Edit {
            conversation: self.conversations[c],
            editor: self.users[editor as usize],
            target,
            body: self.body(),
        })
    }

    fn react(&mut self, c: usize) -> Option<Command> {
        let recent = &self.recent[c];
        if recent.is_empty() {
            return None;
        }
        let (target, _) = recent[self.rng.below(recent.len() as u64) as usize];
        let user = self.pick_member(c);
        self.last_seq[c] += 1;
        Some(Command::React {
            conversation: self.conversations[c],
            user: self.users[user as usize],
            target,
            emoji: self.rng.below(EMOJI) as u32,
        })
    }
}

fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, bound: usize) {
    if ring.len() == bound {
        ring.pop_front();
    }
    ring.push_back(item);
}
