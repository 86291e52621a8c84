//! [`Hub`]: the node's live subscriptions, and the routing of committed
//! events to them.
//!
//! Every node applies every partition, so each node's hub sees every event
//! and serves its own subscribers from its own projections. An event goes to
//! the subscribers *interested* in its conversation: a subscription is
//! interested in the conversations its user belongs to, taken from the
//! projections when it registers and kept up to date by the membership
//! events the hub routes (a user added to a conversation starts receiving
//! it with the event that added it; a removed one gets that event last).
//! Presence changes go to the subscribers of every conversation the user is
//! in; typing (never logged) to the conversation's subscribers.
//!
//! # Bounds
//!
//! Each subscription's queue holds [`SUBSCRIBER_QUEUE`] deliveries. A
//! subscriber that falls that far behind is dropped — its queue closes and
//! it is told to resume from its token — so a slow client never grows the
//! node's memory. At most [`MAX_SUBSCRIBERS`] subscriptions are live.
//!
//! # Concurrency
//!
//! One std `Mutex` guards the routing tables; it is never held across an
//! `.await`. Publishing (from the apply threads) and registering take it
//! briefly; registering reads the projections *under* it, which is what
//! makes a subscription's live stream start exactly where its replay ends
//! (see [`Hub::register`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use missive_proto::v1 as pb;
use missive_proto::v1::chat_event::Kind;
use tokio::sync::{Notify, mpsc};

use crate::limits::{MAX_SUBSCRIBERS, SUBSCRIBER_QUEUE};
use crate::query;
use crate::store::Store;

/// An event committed at `index` of a partition's log.
#[derive(Debug)]
pub struct Published {
    pub index: u64,
    pub event: pb::ChatEvent,
}

/// What a subscription receives.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The partition and log index the event was committed at; `None` for
    /// ephemeral events (typing), which have no position.
    pub position: Option<(u32, u64)>,
    pub event: Arc<pb::ChatEvent>,
}

type SubId = u64;

struct Sub {
    user: String,
    tx: mpsc::Sender<Delivery>,
    /// Conversations whose events it receives.
    convs: HashSet<String>,
    /// Set when it was dropped for falling behind.
    overflowed: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    next_id: SubId,
    subs: HashMap<SubId, Sub>,
    by_conv: HashMap<String, HashSet<SubId>>,
    by_user: HashMap<String, HashSet<SubId>>,
}

impl State {
    fn interest(&mut self, id: SubId, conv: &str) {
        if let Some(s) = self.subs.get_mut(&id)
            && s.convs.insert(conv.to_owned())
        {
            self.by_conv.entry(conv.to_owned()).or_default().insert(id);
        }
    }

    fn lose_interest(&mut self, id: SubId, conv: &str) {
        if let Some(s) = self.subs.get_mut(&id) {
            s.convs.remove(conv);
        }
        if let Some(set) = self.by_conv.get_mut(conv) {
            set.remove(&id);
            if set.is_empty() {
                self.by_conv.remove(conv);
            }
        }
    }

    /// Removes a subscription; true if it was its user's last one.
    fn remove(&mut self, id: SubId) -> bool {
        let Some(sub) = self.subs.remove(&id) else {
            return false;
        };
        for conv in &sub.convs {
            if let Some(set) = self.by_conv.get_mut(conv) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_conv.remove(conv);
                }
            }
        }
        match self.by_user.get_mut(&sub.user) {
            Some(set) => {
                set.remove(&id);
                if set.is_empty() {
                    self.by_user.remove(&sub.user);
                    return true;
                }
                false
            }
            None => false,
        }
    }

    fn users_subs(&self, user: &str) -> Vec<SubId> {
        self.by_user
            .get(user)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Sends `d` to each of `ids`; drops the ones that cannot keep up.
    /// Returns the users that went offline by it.
    fn deliver(&mut self, ids: impl IntoIterator<Item = SubId>, d: &Delivery) -> Vec<String> {
        let mut dropped = Vec::new();
        for id in ids {
            let Some(sub) = self.subs.get(&id) else {
                continue;
            };
            match sub.tx.try_send(d.clone()) {
                Ok(()) => {
                    crate::metrics::EVENTS_DELIVERED.inc();
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    crate::metrics::SLOW_SUBSCRIBERS.inc();
                    sub.overflowed.store(true, Ordering::Relaxed);
                    dropped.push(id);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => dropped.push(id),
            }
        }
        let mut offline = Vec::new();
        for id in dropped {
            let user = self.subs.get(&id).map(|s| s.user.clone());
            if self.remove(id)
                && let Some(u) = user
            {
                offline.push(u);
            }
        }
        offline
    }
}

/// The node's subscriptions.
pub struct Hub {
    state: Mutex<State>,
    /// Every partition's store, for routing presence (set once the node has
    /// started; before that nobody can be subscribed).
    stores: OnceLock<Vec<Arc<Store>>>,
    /// Users whose last subscription on this node ended (closed or dropped
    /// for falling behind), waiting for their presence to go offline. A set,
    /// so it is bounded by the users who had subscriptions.
    offline: Mutex<HashSet<String>>,
    /// Wakes whoever waits in [`Hub::went_offline_users`].
    offline_ready: Notify,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscriptions", &self.lock().subs.len())
            .finish()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            state: Mutex::new(State::default()),
            stores: OnceLock::new(),
            offline: Mutex::new(HashSet::new()),
            offline_ready: Notify::new(),
        }
    }
}

/// The hub is full.
#[derive(Debug, thiserror::Error)]
#[error("this node serves its maximum of {MAX_SUBSCRIBERS} subscriptions")]
pub struct Full;

impl Hub {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The tables are updated in small steps that leave them consistent;
        // a panic elsewhere does not make them unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives the hub the partitions' stores, once the node has started.
    pub fn set_stores(&self, stores: Vec<Arc<Store>>) {
        let _ = self.stores.set(stores);
    }

    fn went_offline(&self, users: Vec<String>) {
        if users.is_empty() {
            return;
        }
        self.offline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(users);
        self.offline_ready.notify_one();
    }

    /// Waits for users whose last subscription here ended and who have not
    /// subscribed again since.
    pub async fn went_offline_users(&self) -> Vec<String> {
        loop {
            let users: Vec<String> =
                std::mem::take(&mut *self.offline.lock().unwrap_or_else(PoisonError::into_inner))
                    .into_iter()
                    .collect();
            let gone: Vec<String> = {
                let st = self.lock();
                users
                    .into_iter()
                    .filter(|u| !st.by_user.contains_key(u))
                    .collect()
            };
            if !gone.is_empty() {
                return gone;
            }
            self.offline_ready.notified().await;
        }
    }

    /// True while `user` has a live subscription on this node.
    pub fn has_user(&self, user: &str) -> bool {
        self.lock().by_user.contains_key(user)
    }

    /// Live subscriptions now.
    pub fn subscriptions(&self) -> usize {
        self.lock().subs.len()
    }

    /// Registers a subscription of `user`, interested in the conversations
    /// `view` returns, and returns its receiver and what `view` read.
    ///
    /// `view` runs under the hub's lock. Events are published after their
    /// transaction commits, under the same lock; so an event committed
    /// before `view`'s read is in what it read (replay it), and one
    /// committed after is routed to this subscription (once interested).
    /// An event can be both — committed before, published after — which is
    /// why live events at or below the position `view` read are skipped.
    pub fn register<R, E>(
        self: &Arc<Self>,
        user: &str,
        view: impl FnOnce() -> Result<(R, Vec<String>), E>,
    ) -> Result<Result<(Registration, R), E>, Full> {
        let mut st = self.lock();
        if st.subs.len() >= MAX_SUBSCRIBERS {
            return Err(Full);
        }
        let (r, convs) = match view() {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let id = st.next_id;
        st.next_id += 1;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        st.subs.insert(
            id,
            Sub {
                user: user.to_owned(),
                tx,
                convs: HashSet::new(),
                overflowed: overflowed.clone(),
            },
        );
        let users = st.by_user.entry(user.to_owned()).or_default();
        let first = users.is_empty();
        users.insert(id);
        for c in &convs {
            st.interest(id, c);
        }
        Ok(Ok((
            Registration {
                hub: self.clone(),
                id,
                user: user.to_owned(),
                rx,
                overflowed,
                first,
            },
            r,
        )))
    }

    /// Routes the events a partition just committed.
    pub fn publish(&self, partition: u32, events: Vec<Published>) {
        // Presence goes to everyone who shares a conversation with the user:
        // find those conversations before taking the lock.
        let presence_convs: Vec<Vec<String>> = events
            .iter()
            .map(|p| match &p.event.kind {
                Some(Kind::Presence(pc)) => self.conversations_of(&pc.user),
                _ => Vec::new(),
            })
            .collect();
        let mut offline = Vec::new();
        {
            let mut st = self.lock();
            for (p, convs) in events.into_iter().zip(presence_convs) {
                let conv = p.event.conversation_id.clone();
                crate::metrics::observe_delivery(p.event.timestamp_ms);
                let d = Delivery {
                    position: Some((partition, p.index)),
                    event: Arc::new(p.event),
                };
                match &d.event.kind {
                    Some(Kind::Presence(pc)) => {
                        let mut ids: HashSet<SubId> = st.users_subs(&pc.user).into_iter().collect();
                        for c in &convs {
                            if let Some(set) = st.by_conv.get(c) {
                                ids.extend(set.iter().copied());
                            }
                        }
                        offline.extend(st.deliver(ids, &d));
                    }
                    Some(Kind::ConversationCreated(c)) => {
                        for m in &c.members {
                            for id in st.users_subs(&m.user) {
                                st.interest(id, &conv);
                            }
                        }
                        {
                            let ids = conv_subs(&st, &conv);
                            offline.extend(st.deliver(ids, &d));
                        }
                    }
                    Some(Kind::MembersChanged(mc)) => {
                        for m in &mc.added {
                            for id in st.users_subs(&m.user) {
                                st.interest(id, &conv);
                            }
                        }
                        {
                            let ids = conv_subs(&st, &conv);
                            offline.extend(st.deliver(ids, &d));
                        }
                        for u in &mc.removed {
                            for id in st.users_subs(u) {
                                st.lose_interest(id, &conv);
                            }
                        }
                    }
                    _ => {
                        let ids = conv_subs(&st, &conv);
                        offline.extend(st.deliver(ids, &d));
                    }
                }
            }
        }
        self.went_offline(offline);
    }

    /// Relays an ephemeral event (typing) to a conversation's subscribers,
    /// except `user`'s own.
    pub fn relay(&self, user: &str, event: pb::ChatEvent) {
        let offline = {
            let mut st = self.lock();
            let mine: HashSet<SubId> = st.users_subs(user).into_iter().collect();
            let ids: Vec<SubId> = conv_subs(&st, &event.conversation_id)
                .into_iter()
                .filter(|id| !mine.contains(id))
                .collect();
            let d = Delivery {
                position: None,
                event: Arc::new(event),
            };
            st.deliver(ids, &d)
        };
        self.went_offline(offline);
    }

    /// The conversations `user` is a member of now, over every partition.
    fn conversations_of(&self, user: &str) -> Vec<String> {
        let Some(stores) = self.stores.get() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for s in stores {
            match query::user_conversations(s, user) {
                Ok(convs) => out.extend(convs.into_iter().filter(|c| c.1 == 0).map(|c| c.0)),
                Err(e) => {
                    tracing::warn!(%user, error = %e, "reading a user's conversations for presence")
                }
            }
        }
        out
    }

    fn unregister(&self, id: SubId) -> bool {
        self.lock().remove(id)
    }
}

fn conv_subs(st: &State, conv: &str) -> Vec<SubId> {
    st.by_conv
        .get(conv)
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default()
}

/// A live subscription; unregisters when dropped.
pub struct Registration {
    hub: Arc<Hub>,
    id: SubId,
    /// Its user.
    user: String,
    /// Its deliveries.
    pub rx: mpsc::Receiver<Delivery>,
    /// Set if the hub dropped it for falling behind.
    pub overflowed: Arc<AtomicBool>,
    /// True if it was its user's first live subscription on this node.
    pub first: bool,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.hub.unregister(self.id) {
            // Its user's last subscription here: presence may go offline.
            self.hub.went_offline(vec![std::mem::take(&mut self.user)]);
        }
    }
}
