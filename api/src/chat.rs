//! [`Chat`]: a cluster node running the chat state machine, with the hub,
//! the stores for reads, presence tracking and rate limits — everything
//! `ChatService` needs.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use missive_proto::v1 as pb;
use missive_proto::v1::chat_command::Op;
use missive_raft::node::partition_dir;
use missive_raft::{ClusterNode, ClusterSecret, Command, NodeConfig};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::apply::ChatStateMachine;
use crate::auth::{Auth, Caller};
use crate::error::{Error, Rejected};
use crate::hub::Hub;
use crate::ids;
use crate::push::{self, PushConfig};
use crate::ratelimit::RateLimiter;
use crate::store::{Store, StoreError};

/// Timings of a node's background work.
#[derive(Clone, Debug)]
pub struct ChatOptions {
    /// The push notifier's retry policy.
    pub push: PushConfig,
    /// How long a node may miss its leaders' heartbeats before its users'
    /// presence sessions end.
    pub presence_ttl: Duration,
    /// How often presence sessions are swept.
    pub presence_sweep: Duration,
    /// History older than this leaves the projections (messages and the
    /// events subscriptions replay); `None` keeps it all.
    pub history_retention: Option<Duration>,
    /// How often leaders apply `history_retention`.
    pub history_expire_every: Duration,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            push: PushConfig::default(),
            presence_ttl: crate::presence::PRESENCE_TTL,
            presence_sweep: crate::presence::SWEEP_EVERY,
            history_retention: None,
            history_expire_every: crate::retention::EXPIRE_EVERY,
        }
    }
}

/// How long a write waits for this node to apply it before answering (see
/// [`Chat::propose_to`]): replicas apply within a heartbeat or two.
pub const APPLY_WAIT: Duration = Duration::from_secs(5);

/// The projection store's file inside a partition directory.
pub const PROJECTIONS_FILE: &str = "projections.redb";

/// The device presence transitions made by the node itself are attributed
/// to (the user's own last device is gone by then).
const NODE_DEVICE: &str = "node";

struct Inner {
    /// The cluster member.
    node: ClusterNode<ChatStateMachine>,
    /// Live subscriptions.
    hub: Arc<Hub>,
    /// Each partition's projections, for reads.
    stores: Vec<Arc<Store>>,
    /// Verifies callers.
    auth: Auth,
    /// What operators' calls (ChatAdmin) must carry.
    secret: ClusterSecret,
    /// Per-user write rates.
    limiter: RateLimiter,
    /// Set once at shutdown; background work watches it.
    stop: watch::Sender<bool>,
    /// The background tasks (push notifier, presence), awaited at
    /// shutdown so that nothing holds the node after it. A std `Mutex`,
    /// never held across an `.await`.
    background: Mutex<Vec<JoinHandle<()>>>,
}

/// A chat node; cheap to clone.
#[derive(Clone)]
pub struct Chat {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl Chat {
    /// Starts the node (its internal service on `internal`) with the chat
    /// state machine in every partition.
    pub async fn start(
        config: NodeConfig,
        auth: Auth,
        internal: TcpListener,
    ) -> Result<Chat, Error> {
        Self::start_with(config, auth, internal, ChatOptions::default()).await
    }

    /// [`Chat::start`] with other timings.
    pub async fn start_with(
        config: NodeConfig,
        auth: Auth,
        internal: TcpListener,
        options: ChatOptions,
    ) -> Result<Chat, Error> {
        let secret = config.secret.clone();
        let hub = Arc::new(Hub::default());
        let data = config.data_dir.clone();
        let node = ClusterNode::start(config, internal, {
            let hub = hub.clone();
            move |p| {
                ChatStateMachine::new(
                    p,
                    partition_dir(&data, p).join(PROJECTIONS_FILE),
                    hub.clone(),
                )
            }
        })
        .await
        .map_err(Error::from_raft)?;
        let mut stores = Vec::new();
        for p in 0..node.partitions() {
            let sm = node.state_machine(p).map_err(Error::from_raft)?;
            stores.push(sm.read(|sm| sm.store())?);
        }
        hub.set_stores(stores.clone());
        // Typing from other nodes: straight to this node's subscribers.
        node.on_relay({
            let hub = hub.clone();
            Arc::new(
                move |payload: Vec<u8>| match pb::ChatEvent::decode(payload.as_slice()) {
                    Ok(event) => match &event.kind {
                        Some(pb::chat_event::Kind::Typing(t)) => {
                            let user = t.user.clone();
                            hub.relay(&user, event);
                        }
                        _ => tracing::debug!("a relayed message that is not typing"),
                    },
                    Err(e) => tracing::debug!(error = %e, "a relayed message that does not decode"),
                },
            )
        });
        let chat = Chat {
            inner: Arc::new(Inner {
                node,
                hub,
                stores,
                auth,
                secret,
                limiter: RateLimiter::default(),
                stop: watch::Sender::new(false),
                background: Mutex::new(Vec::new()),
            }),
        };
        chat.spawn_background(presence_offline(chat.clone()));
        push::spawn(&chat, options.push);
        crate::presence::spawn(&chat, options.presence_ttl, options.presence_sweep);
        if let Some(keep) = options.history_retention {
            crate::retention::spawn(&chat, keep, options.history_expire_every);
        }
        Ok(chat)
    }

    /// The cluster node.
    pub fn node(&self) -> &ClusterNode<ChatStateMachine> {
        &self.inner.node
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// The cluster secret operators' calls must carry.
    pub fn secret(&self) -> &ClusterSecret {
        &self.inner.secret
    }

    /// Each partition's store.
    pub fn stores(&self) -> &[Arc<Store>] {
        &self.inner.stores
    }

    /// The store of the partition `key` (a conversation or user id) lives in.
    pub fn store_of(&self, key: &str) -> Arc<Store> {
        self.inner.stores[self.partition_of(key) as usize].clone()
    }

    pub fn partition_of(&self, key: &str) -> u32 {
        ids::partition(key, self.inner.node.partitions())
    }

    /// Takes one write token of `user`; `RESOURCE_EXHAUSTED` if none is left.
    pub fn rate_limit(&self, user: &str) -> Result<(), Rejected> {
        if self.inner.limiter.allow(user) {
            Ok(())
        } else {
            crate::metrics::RATE_LIMITED.inc();
            Err(Rejected::exhausted(format!(
                "too many writes from {user}; slow down"
            )))
        }
    }

    /// Proposes `op` as `caller` to the partition of `key` and returns the
    /// reply; a rejection becomes `Err(Error::Rejected)`.
    pub async fn propose(
        &self,
        key: &str,
        caller: &Caller,
        op: Op,
    ) -> Result<pb::ChatReply, Error> {
        self.propose_to(self.partition_of(key), caller, op).await
    }

    /// [`Chat::propose`] to partition `p`. Returns once this node has
    /// applied the write too, so reads here see it (see
    /// `wait_applied`).
    pub async fn propose_to(
        &self,
        p: u32,
        caller: &Caller,
        op: Op,
    ) -> Result<pb::ChatReply, Error> {
        let cmd = pb::ChatCommand {
            actor: caller.user.clone(),
            device: caller.device.clone(),
            op: Some(op),
        };
        let (reply, index) = self
            .inner
            .node
            .write_indexed(
                p,
                Command {
                    body: cmd.encode_to_vec(),
                    request_id: String::new(),
                },
            )
            .await
            .map_err(Error::from_raft)?;
        self.wait_applied(p, index).await;
        let reply = pb::ChatReply::decode(reply.body.as_slice())?;
        match &reply.rejection {
            Some(r) => Err(Rejected::from_pb(r).into()),
            None => Ok(reply),
        }
    }

    /// Waits (at most [`APPLY_WAIT`]) until this node has applied entry
    /// `index` of partition `p`.
    ///
    /// Read-your-writes through any node: a write arriving at a follower is
    /// forwarded to the leader, which answers once *it* has applied the
    /// entry; this node's projections, which the caller reads next (a
    /// create answers with the conversation it made; a client reads its
    /// history after sending), may not have it yet. On the leader the entry
    /// is already applied and this returns at once. Past the bound the write
    /// still succeeded — it is committed — so the reply goes out anyway.
    async fn wait_applied(&self, p: u32, index: u64) {
        let sm = match self.inner.node.state_machine(p) {
            Ok(sm) => sm,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "waiting for a local apply");
                return;
            }
        };
        // The state machine's own watermark, not openraft's applied index:
        // that one counts entries queued for a group commit, which readers
        // do not see until it is flushed.
        if !sm.wait_applied(index, APPLY_WAIT).await {
            tracing::warn!(partition = p, index, "this node lags behind its write");
        }
    }

    /// Relays an ephemeral event (typing) to this node's subscribers and to
    /// every other node's, never logging it.
    pub fn relay(&self, user: &str, event: pb::ChatEvent) {
        let payload = event.encode_to_vec();
        self.inner.hub.relay(user, event);
        let node = self.inner.node.clone();
        // Not awaited by the caller: typing is worth nothing late, and the
        // sender's write rate limit bounds how many of these run.
        tokio::spawn(async move { node.relay(payload).await });
    }

    /// Resolves once the node has begun to shut down.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.inner.stop.subscribe();
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    }

    /// Runs `work` in the background until the node shuts down; shutdown
    /// waits for it to end, dropping whatever it holds (a clone of the node
    /// among them).
    pub fn spawn_background(&self, work: impl Future<Output = ()> + Send + 'static) {
        let mut stop = self.inner.stop.subscribe();
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => {}
                () = work => {}
            }
        });
        self.inner
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }

    /// Runs a read on the blocking pool (redb reads are blocking I/O).
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Chat) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Error> {
        let chat = self.clone();
        tokio::task::spawn_blocking(move || f(&chat))
            .await
            .map_err(|e| Error::Store(StoreError::Io(std::io::Error::other(e.to_string()))))?
    }

    /// Records `user` online (its first subscription on this node).
    pub async fn went_online(&self, caller: &Caller) {
        let op = Op::Presence(pb::SetPresence {
            online: true,
            node: self.node().id(),
        });
        if let Err(e) = self.propose(&caller.user, caller, op).await {
            tracing::warn!(user = %caller.user, error = %e, "recording presence online");
        }
    }

    /// Serves `ChatService` (with health and reflection) on `listener` until
    /// `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        self.serve_tls(listener, None, shutdown).await
    }

    /// [`Chat::serve`], over TLS when `tls` is given.
    pub async fn serve_tls(
        &self,
        listener: TcpListener,
        tls: Option<tonic::transport::ServerTlsConfig>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let stop = self.inner.stop.clone();
        crate::service::router(self.clone(), tls)?
            .serve_with_incoming_shutdown(missive_proto::wire::incoming(listener), async move {
                shutdown.await;
                // A graceful server shutdown waits for every open stream:
                // subscriptions and gateway links end when the node
                // stops, telling their clients to go on elsewhere, so
                // the stop begins here rather than after serving ends.
                stop.send_replace(true);
            })
            .await
    }

    /// Stops the node: partitions shut down, stores made durable.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.inner.stop.send_replace(true);
        let tasks = std::mem::take(
            &mut *self
                .inner
                .background
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in tasks {
            // Each ends at its next await point once told to stop.
            let _ = t.await;
        }
        self.inner.node.shutdown().await.map_err(Error::from_raft)?;
        for s in &self.inner.stores {
            s.sync()?;
        }
        Ok(())
    }
}

/// Records users offline whose last subscription on this node ended.
async fn presence_offline(chat: Chat) {
    loop {
        for user in chat.hub().went_offline_users().await {
            offline(&chat, user).await;
        }
    }
}

async fn offline(chat: &Chat, user: String) {
    let caller = Caller {
        user: user.clone(),
        device: NODE_DEVICE.to_owned(),
    };
    let op = Op::Presence(pb::SetPresence {
        online: false,
        node: chat.node().id(),
    });
    if let Err(e) = chat.propose(&user, &caller, op).await {
        tracing::warn!(%user, error = %e, "recording presence offline");
    }
}
