//! `Subscribe(since)`: replay, then live, with no gap and no duplicate.
//!
//! 1. Register with the hub. Under the hub's lock, read each partition's
//!    applied index `A[p]` and the user's conversations: every event at or
//!    below `A[p]` is in the store, and every later one will be routed to
//!    this subscription (see [`Hub::register`](crate::hub::Hub::register)).
//! 2. Replay, per partition in log order, the user's conversation events
//!    with index in `(since[p], A[p]]` (a conversation the user left, up to
//!    the event that removed it).
//! 3. Send `CaughtUp`, then live events, skipping any at or below `A[p]`.
//!
//! Every event carries the token after it. A token of another epoch or
//! partition count, or ahead of this node for longer than
//! [`CATCH_UP_WAIT`], gets `Resync` instead of a replay.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use missive_proto::v1 as pb;
use missive_proto::v1::subscribe_response::Kind;
use tokio::sync::mpsc;
use tonic::Status;

use crate::auth::Caller;
use crate::chat::Chat;
use crate::error::Error;
use crate::hub::Registration;
use crate::limits::MAX_REPLAY_EVENTS;
use crate::query;
use crate::store::{Store, StoreError};
use crate::token::Token;

/// The stream `Subscribe` answers.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

/// How long a token ahead of this node (a replica still applying) is given
/// to be reached before the client is told to resync.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(3);

/// Replayed responses buffered towards the client. Live events are taken
/// straight off the hub's queue, the bound that counts.
const OUTPUT_QUEUE: usize = 64;

/// Events fetched from the store at once while replaying.
const REPLAY_CHUNK: usize = 256;

/// What registering read, under the hub's lock.
#[derive(Debug)]
struct View {
    epoch: u64,
    applied: Vec<u64>,
    /// Per partition: the highest log index whose events retention removed;
    /// a token before it cannot be replayed without a gap.
    floor: Vec<u64>,
    /// Per partition: the user's conversations and the seq that removed it
    /// from each (0 while a member).
    convs: Vec<Vec<(String, u64)>>,
}

fn read_view(stores: &[Arc<Store>], user: &str) -> Result<(View, Vec<String>), StoreError> {
    let mut view = View {
        epoch: 0,
        applied: Vec::with_capacity(stores.len()),
        floor: Vec::with_capacity(stores.len()),
        convs: Vec::with_capacity(stores.len()),
    };
    let mut active = Vec::new();
    for (p, s) in stores.iter().enumerate() {
        let txn = s.read()?;
        if p == 0 {
            view.epoch = query::epoch(&txn)?;
        }
        view.applied.push(query::applied_index(&txn)?);
        view.floor.push(query::history_floor(&txn)?);
        let convs = query::user_conversations_in(&txn, user)?;
        active.extend(convs.iter().filter(|c| c.1 == 0).map(|c| c.0.clone()));
        view.convs.push(convs);
    }
    Ok((view, active))
}

fn token(epoch: u64, pos: &[u64]) -> String {
    Token {
        epoch,
        indexes: pos.to_vec(),
    }
    .encode()
}

/// Starts a subscription for `caller` from `since` (empty: from now).
pub async fn start(chat: Chat, caller: Caller, since: String) -> Result<EventStream, Status> {
    let since = match since.as_str() {
        "" => None,
        s => Some(Token::decode(s)?),
    };
    if let Some(t) = &since {
        wait_for(&chat, t).await?;
    }
    let (reg, view) = {
        let hub = chat.hub().clone();
        let stores = chat.stores().to_vec();
        let user = caller.user.clone();
        tokio::task::spawn_blocking(move || hub.register(&user, || read_view(&stores, &user)))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::resource_exhausted(e.to_string()))?
            .map_err(|e| Status::from(Error::from(e)))?
    };
    if reg.first {
        let (chat, caller) = (chat.clone(), caller.clone());
        tokio::spawn(async move { chat.went_online(&caller).await });
    }
    let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
    let stopping = Box::pin(chat.stopping());
    tokio::spawn(async move {
        if let Err(status) = run(&chat, reg, view, since, &tx).await {
            let _ = tx.send(Step::Item(Err(status))).await;
        }
    });
    Ok(Box::pin(Subscription {
        replay: Some(rx),
        live: None,
        stopping,
        done: false,
    }))
}

/// What the replay task hands the stream, in order.
#[expect(
    clippy::large_enum_variant,
    reason = "all but the last step are items; boxing them would allocate per event"
)]
enum Step {
    Item(Result<pb::SubscribeResponse, Status>),
    /// Caught up: from here the stream reads the hub's deliveries itself.
    Live(Live),
}

/// A caught-up subscription's state.
struct Live {
    reg: Registration,
    epoch: u64,
    /// Per partition, the last log index sent (or replayed).
    pos: Vec<u64>,
}

/// The stream `start` returns. The replay runs in a task of its own (it
/// reads the store on the blocking pool); once caught up, the stream takes
/// each live event straight off the hub's queue as it is polled — no task
/// and no second queue between the hub and the caller, which a node pays
/// for on every event to every subscriber.
struct Subscription {
    /// The replay task's output; `None` once live.
    replay: Option<mpsc::Receiver<Step>>,
    live: Option<Live>,
    /// Streams would otherwise stay open on a stopped node (a graceful
    /// server shutdown waits for them): a live subscription then tells the
    /// client to go on elsewhere from its token.
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// It has sent its last item.
    done: bool,
}

impl Stream for Subscription {
    type Item = Result<pb::SubscribeResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(live) = &mut this.live {
                return match live.reg.rx.poll_recv(cx) {
                    Poll::Ready(Some(d)) => {
                        if let Some((p, index)) = d.position {
                            let Some(at) = live.pos.get_mut(p as usize) else {
                                continue;
                            };
                            if index <= *at {
                                // Already replayed (committed before registering).
                                continue;
                            }
                            *at = index;
                        }
                        Poll::Ready(Some(Ok(pb::SubscribeResponse {
                            kind: Some(Kind::Event((*d.event).clone())),
                            token: token(live.epoch, &live.pos),
                        })))
                    }
                    Poll::Ready(None) => {
                        let why = if live.reg.overflowed.load(Ordering::Relaxed) {
                            "the subscriber fell behind"
                        } else {
                            "the node is shutting down"
                        };
                        this.done = true;
                        Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                            "{why}; resume with token {}",
                            token(live.epoch, &live.pos)
                        )))))
                    }
                    // Checked only when no event is waiting: polling the
                    // stop signal once per event was a measurable share of
                    // the node's CPU, and a stopping node soon stops
                    // publishing.
                    Poll::Pending if this.stopping.as_mut().poll(cx).is_ready() => {
                        this.done = true;
                        Poll::Ready(Some(Err(Status::unavailable(format!(
                            "the node is shutting down; resume with token {}",
                            token(live.epoch, &live.pos)
                        )))))
                    }
                    Poll::Pending => Poll::Pending,
                };
            }
            let Some(rx) = &mut this.replay else {
                return Poll::Ready(None);
            };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(Step::Item(item))) => return Poll::Ready(Some(item)),
                Poll::Ready(Some(Step::Live(live))) => {
                    this.live = Some(live);
                    this.replay = None;
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Waits (bounded) for this node to have applied up to `t`.
async fn wait_for(chat: &Chat, t: &Token) -> Result<(), Status> {
    if t.indexes.len() != chat.stores().len() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    loop {
        let stores = chat.stores().to_vec();
        let applied = tokio::task::spawn_blocking(move || {
            stores
                .iter()
                .map(|s| query::applied_index(&s.read()?))
                .collect::<Result<Vec<u64>, StoreError>>()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::from(Error::from(e)))?;
        if t.indexes
            .iter()
            .zip(&applied)
            .all(|(want, have)| want <= have)
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Out = mpsc::Sender<Step>;

async fn send(tx: &Out, kind: Kind, token: String) -> Result<(), Status> {
    tx.send(Step::Item(Ok(pb::SubscribeResponse {
        kind: Some(kind),
        token,
    })))
    .await
    // The client went away: nothing left to do.
    .map_err(|_| Status::cancelled("subscriber gone"))
}

async fn run(
    chat: &Chat,
    reg: Registration,
    view: View,
    since: Option<Token>,
    tx: &Out,
) -> Result<(), Status> {
    let epoch = view.epoch;
    let mut pos = match since {
        None => view.applied.clone(),
        Some(t)
            if t.epoch != epoch
                || t.indexes.len() != view.applied.len()
                || t.indexes.iter().zip(&view.applied).any(|(a, b)| a > b)
                || t.indexes.iter().zip(&view.floor).any(|(a, f)| a < f) =>
        {
            let reason = if t.epoch != epoch {
                "the history was replaced (another epoch)"
            } else if t.indexes.iter().zip(&view.floor).any(|(a, f)| a < f) {
                "history after the token was removed by retention"
            } else {
                "the token is not from this cluster's history"
            };
            send(
                tx,
                Kind::Resync(pb::Resync {
                    reason: reason.into(),
                }),
                token(epoch, &view.applied),
            )
            .await?;
            view.applied.clone()
        }
        Some(t) => match replay(chat, &view, t.indexes, tx).await? {
            Some(pos) => pos,
            None => return Ok(()),
        },
    };
    for (p, a) in pos.iter_mut().zip(&view.applied) {
        *p = (*p).max(*a);
    }
    send(tx, Kind::CaughtUp(pb::CaughtUp {}), token(epoch, &pos)).await?;
    // The client may have gone already; then the registration is dropped
    // with the message.
    let _ = tx.send(Step::Live(Live { reg, epoch, pos })).await;
    Ok(())
}

/// Replays the user's events after `from` up to the view's applied indexes;
/// returns the position reached, or `None` if it told the client to resync.
async fn replay(
    chat: &Chat,
    view: &View,
    from: Vec<u64>,
    tx: &Out,
) -> Result<Option<Vec<u64>>, Status> {
    let mut pos = from.clone();
    // First the keys (small), then the events in chunks: memory stays
    // bounded by MAX_REPLAY_EVENTS keys and one chunk of events.
    let mut plan = Vec::with_capacity(view.applied.len());
    let mut total = 0usize;
    for (p, convs) in view.convs.iter().enumerate() {
        let store = chat.stores()[p].clone();
        let convs = convs.clone();
        let (after, upto) = (from[p], view.applied[p]);
        let keys = tokio::task::spawn_blocking(move || replay_keys(&store, &convs, after, upto))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::from(Error::from(e)))?;
        total += keys.len();
        if total > MAX_REPLAY_EVENTS {
            send(
                tx,
                Kind::Resync(pb::Resync {
                    reason: format!("more than {MAX_REPLAY_EVENTS} events were missed: load again"),
                }),
                token(view.epoch, &view.applied),
            )
            .await?;
            return Ok(Some(view.applied.clone()));
        }
        plan.push(keys);
    }
    for (p, keys) in plan.into_iter().enumerate() {
        for chunk in keys.chunks(REPLAY_CHUNK) {
            let store = chat.stores()[p].clone();
            let chunk = chunk.to_vec();
            let events = tokio::task::spawn_blocking(move || {
                let txn = store.read()?;
                let mut out = Vec::with_capacity(chunk.len());
                for (_, conv, seq) in &chunk {
                    out.extend(query::events(&txn, conv, *seq, *seq, 1)?);
                }
                Ok::<_, StoreError>(out)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::from(Error::from(e)))?;
            for stored in events {
                let Some(event) = stored.event else { continue };
                pos[p] = stored.index;
                send(tx, Kind::Event(event), token(view.epoch, &pos)).await?;
            }
        }
    }
    Ok(Some(pos))
}

/// The (index, conversation, seq) of every event to replay from one
/// partition, in log order.
fn replay_keys(
    store: &Store,
    convs: &[(String, u64)],
    after: u64,
    upto: u64,
) -> Result<Vec<(u64, String, u64)>, StoreError> {
    let txn = store.read()?;
    let mut keys = Vec::new();
    for (conv, left) in convs {
        let Some(head) = query::conversation_record(&txn, conv)? else {
            continue;
        };
        let last = if *left > 0 { *left } else { head.last_seq };
        let first = query::first_seq_after(&txn, conv, last, after)?;
        for e in query::events(&txn, conv, first, last, MAX_REPLAY_EVENTS + 1)? {
            if e.index > upto {
                break;
            }
            if let Some(ev) = &e.event {
                keys.push((e.index, conv.clone(), ev.seq));
            }
            if keys.len() > MAX_REPLAY_EVENTS {
                return Ok(keys);
            }
        }
    }
    keys.sort();
    Ok(keys)
}
