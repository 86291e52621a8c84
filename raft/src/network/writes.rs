//! Many writes over one stream: the `Writes` call, both sides.
//!
//! With `Forward`, every write is an HTTP/2 stream of its own: headers
//! encoded and decoded, a task spawned and the service stack run on the
//! server, a stream opened, flow-controlled and closed on both. With 256
//! clients writing to one leader that was two thirds of the leader's
//! consensus thread, against a tenth for openraft's core
//! (docs/raft-storage.md, "256 clients"). `Writes` carries the same
//! requests and the same answers over one long-lived stream, each write
//! tagged with an id its sender chose and answered in any order; both
//! directions send whatever is ready as one message. Each write has exactly
//! `Forward`'s semantics; only the transport differs.
//!
//! - [`Answers`] is the server's side: the answer stream of one call. It
//!   runs the writes itself, as futures it polls, so a write costs no task
//!   and no HTTP/2 stream.
//! - [`WriteStream`] is a client's side: one open call, shared by any number
//!   of concurrent writers.
//!
//! # Bounds
//!
//! - At most [`MAX_WRITES_IN_FLIGHT`] writes of one stream run at once on
//!   the server; past that it stops reading the stream, and HTTP/2's flow
//!   control stops the sender, whose writers then wait on its queue of
//!   [`UP_QUEUE`] writes.
//! - A message carries at most [`MAX_BATCH`] writes or answers and, past
//!   the first, at most [`BATCH_BYTES`] of them. A write too large for a
//!   message on its own is refused before it is sent (`INVALID_ARGUMENT`):
//!   it would break the stream for every write sharing it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use missive_proto::v1 as pb;
use missive_proto::v1::raft_internal_client::RaftInternalClient;
use pb::write_result::Outcome;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::secret::ClusterSecret;
use super::service::forward_write;
use crate::node::Node;
use crate::state_machine::StateMachine;

/// Most writes of one stream the server runs at once.
pub const MAX_WRITES_IN_FLIGHT: usize = 4096;

/// Most writes, or answers, in one message.
pub const MAX_BATCH: usize = 1024;

/// Most bytes of writes, or answers, in one message, past its first.
pub const BATCH_BYTES: usize = 1024 * 1024;

/// What a write's wrapping in a message adds to it, at most: its id, its
/// tag and length, the batch's tag and length.
const WRAPPING_BYTES: usize = 32;

/// Writes a client's stream queues before its writers wait.
pub const UP_QUEUE: usize = 1024;

type Running = Pin<Box<dyn Future<Output = pb::WriteResult> + Send>>;

/// The answers of one `Writes` call: a stream that reads the caller's
/// batches, runs their writes (with `R`: a [`Runner`] on a node), and
/// yields their results as they finish.
pub(crate) struct Answers<R, B> {
    run: R,
    /// The caller's batches; `None` once it has closed its side (or broke),
    /// or the node stops.
    batches: Option<B>,
    /// Resolves when the node stops: no write is taken after it.
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Writes read but not yet started: at most one batch's worth, when the
    /// stream is at its bound.
    waiting: VecDeque<pb::StreamedWrite>,
    running: FuturesUnordered<Running>,
}

impl<SM: StateMachine, B> Answers<Runner<SM>, B>
where
    B: Stream<Item = Result<pb::WriteBatch, Status>> + Unpin,
{
    /// The answers of a call to `node`.
    pub(crate) fn new(node: Node<SM>, batches: B) -> Self {
        let stopping = Box::pin(node.stopping());
        Answers::with(Runner(node), batches, stopping)
    }
}

/// Runs a stream's writes on a node.
pub(crate) struct Runner<SM: StateMachine>(Node<SM>);

impl<SM: StateMachine> Run for Runner<SM> {
    fn run(&self, w: pb::StreamedWrite) -> Running {
        let node = self.0.clone();
        Box::pin(async move {
            let outcome = match w.write {
                Some(req) => match forward_write(&node, req).await {
                    Ok(done) => Outcome::Done(done),
                    Err(status) => failed(&status),
                },
                None => failed(&Status::invalid_argument(
                    "a streamed write without a request",
                )),
            };
            pb::WriteResult {
                id: w.id,
                outcome: Some(outcome),
            }
        })
    }
}

/// How a stream's writes are run: each to its result.
pub(crate) trait Run {
    fn run(&self, w: pb::StreamedWrite) -> Running;
}

impl<R: Run, B> Answers<R, B>
where
    B: Stream<Item = Result<pb::WriteBatch, Status>> + Unpin,
{
    fn with(run: R, batches: B, stopping: Pin<Box<dyn Future<Output = ()> + Send>>) -> Self {
        Answers {
            run,
            batches: Some(batches),
            stopping,
            waiting: VecDeque::new(),
            running: FuturesUnordered::new(),
        }
    }

    /// Starts what was read and reads more, while there is room.
    fn take_in(&mut self, cx: &mut Context<'_>) {
        if self.batches.is_some() && self.stopping.as_mut().poll(cx).is_ready() {
            // What was read but not started is dropped unanswered: its
            // sender learns only that the stream ended, as with a call cut
            // off by a stopping server.
            self.batches = None;
            self.waiting.clear();
        }
        loop {
            while self.running.len() < MAX_WRITES_IN_FLIGHT
                && let Some(w) = self.waiting.pop_front()
            {
                self.running.push(self.run.run(w));
            }
            if self.running.len() >= MAX_WRITES_IN_FLIGHT {
                return;
            }
            let Some(batches) = self.batches.as_mut() else {
                return;
            };
            match batches.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(batch))) => self.waiting.extend(batch.writes),
                Poll::Ready(Some(Err(status))) => {
                    // Nobody is left to answer; the writes already started
                    // still finish (they may have been proposed).
                    tracing::debug!(error = %status, "a write stream broke");
                    self.batches = None;
                }
                Poll::Ready(None) => self.batches = None,
                Poll::Pending => return,
            }
        }
    }
}

impl<R: Run + Unpin, B> Stream for Answers<R, B>
where
    B: Stream<Item = Result<pb::WriteBatch, Status>> + Unpin,
{
    type Item = Result<pb::WriteResults, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.take_in(cx);
        let (mut results, mut bytes) = (Vec::new(), 0);
        while results.len() < MAX_BATCH
            && bytes < BATCH_BYTES
            && let Poll::Ready(Some(r)) = this.running.poll_next_unpin(cx)
        {
            bytes += r.encoded_len();
            results.push(r);
        }
        if !results.is_empty() {
            return Poll::Ready(Some(Ok(pb::WriteResults { results })));
        }
        // Every path to `Pending` polled the batches or a running write,
        // which will wake this stream: `waiting` is only left non-empty
        // when `running` is full.
        if this.batches.is_none() && this.waiting.is_empty() && this.running.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

fn failed(status: &Status) -> Outcome {
    Outcome::Failed(pb::WriteFailure {
        code: status.code() as i32,
        message: status.message().to_owned(),
    })
}

/// A write waiting to be sent, with the length of its request encoded,
/// measured once when it was checked against the message size.
type Queued = (pb::StreamedWrite, usize);

/// What a writer waits for.
type Waiter = oneshot::Sender<Result<pb::ForwardResponse, Status>>;

/// A client's end of one open `Writes` call. Any number of tasks write
/// through it at once; when the call ends, every write still waiting fails
/// with `UNAVAILABLE` and so does every later one: open a new stream.
#[derive(Debug)]
pub struct WriteStream {
    shared: Arc<Shared>,
    /// Queued writes, each with its encoded length.
    up: mpsc::Sender<Queued>,
    /// The largest message either side accepts.
    max_message_bytes: usize,
}

#[derive(Debug)]
struct Shared {
    /// Who the stream goes to, for errors.
    peer: String,
    waiters: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    /// Set by the reader when the call ended; no answer comes after.
    broken: AtomicBool,
}

impl WriteStream {
    /// Opens a `Writes` call over `channel` to `peer` (its address, for
    /// errors), with the cluster secret. Fails as the call's opening does:
    /// an unreachable peer gives tonic's `UNAVAILABLE` and nothing was sent.
    pub async fn open(
        channel: Channel,
        peer: &str,
        secret: &ClusterSecret,
        max_message_bytes: usize,
    ) -> Result<WriteStream, Status> {
        let (up, rx) = mpsc::channel::<Queued>(UP_QUEUE);
        let mut request = Request::new(batches(rx));
        secret.attach(&mut request);
        let mut client = RaftInternalClient::new(channel)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let answers = client.writes(request).await?.into_inner();
        let shared = Arc::new(Shared {
            peer: peer.to_owned(),
            waiters: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            broken: AtomicBool::new(false),
        });
        tokio::spawn(read(shared.clone(), answers));
        Ok(WriteStream {
            shared,
            up,
            max_message_bytes,
        })
    }

    /// Whether the call has ended: every write through it would fail.
    pub fn is_broken(&self) -> bool {
        self.shared.broken.load(Ordering::Acquire)
    }

    /// Sends one write and waits, at most `timeout`, for its answer: what
    /// `Forward` would have answered. A write whose answer did not come
    /// (the deadline, the call ending) may or may not have been applied.
    pub async fn write(
        &self,
        request: pb::ForwardRequest,
        timeout: Duration,
    ) -> Result<pb::ForwardResponse, Status> {
        let len = request.encoded_len();
        if len + WRAPPING_BYTES > self.max_message_bytes {
            return Err(Status::invalid_argument(format!(
                "a write of {len} bytes does not fit in a message of at most {} bytes",
                self.max_message_bytes
            )));
        }
        let answer = async {
            let (tx, rx) = oneshot::channel();
            let id = self.shared.register(tx)?;
            let _forget = Forget {
                shared: &self.shared,
                id,
            };
            let write = pb::StreamedWrite {
                id,
                write: Some(request),
            };
            self.up
                .send((write, len))
                .await
                .map_err(|_| self.shared.broken_status())?;
            rx.await
                .unwrap_or_else(|_| Err(self.shared.broken_status()))
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(answer) => answer,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer from {} within {timeout:?}",
                self.shared.peer
            ))),
        }
    }
}

/// The queued writes as messages: each poll sends whatever is queued as one
/// message, within its bounds; a write that would pass them opens the next.
fn batches(mut rx: mpsc::Receiver<Queued>) -> impl Stream<Item = pb::WriteBatch> {
    let mut carried: Option<Queued> = None;
    futures_util::stream::poll_fn(move |cx| {
        let (first, mut bytes) = match carried.take() {
            Some(q) => q,
            None => match std::task::ready!(rx.poll_recv(cx)) {
                Some(q) => q,
                None => return Poll::Ready(None),
            },
        };
        let mut writes = vec![first];
        while writes.len() < MAX_BATCH
            && let Ok((w, len)) = rx.try_recv()
        {
            bytes += len;
            if bytes > BATCH_BYTES {
                carried = Some((w, len));
                break;
            }
            writes.push(w);
        }
        Poll::Ready(Some(pb::WriteBatch { writes }))
    })
}

impl Shared {
    fn register(&self, w: Waiter) -> Result<u64, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, w);
        // The reader sets `broken` before it fails every waiter: either it
        // saw this one, or this sees `broken`.
        if self.broken.load(Ordering::Acquire) {
            self.forget(id);
            return Err(self.broken_status());
        }
        Ok(id)
    }

    fn forget(&self, id: u64) -> Option<Waiter> {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
    }

    fn broken_status(&self) -> Status {
        Status::unavailable(format!("the write stream to {} has ended", self.peer))
    }
}

/// Forgets a write whose writer went away (its deadline); the server still
/// finishes it, and its answer is dropped.
struct Forget<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.forget(self.id);
    }
}

/// Hands each answer to its writer until the call ends, then fails the
/// writers still waiting.
async fn read(shared: Arc<Shared>, mut answers: tonic::Streaming<pb::WriteResults>) {
    let end = loop {
        match answers.message().await {
            Ok(Some(batch)) => {
                for r in batch.results {
                    if let Some(tx) = shared.forget(r.id) {
                        let _ = tx.send(answer_of(r.outcome));
                    }
                }
            }
            Ok(None) => break shared.broken_status(),
            Err(status) => {
                break Status::unavailable(format!(
                    "the write stream to {} broke: {}",
                    shared.peer,
                    status.message()
                ));
            }
        }
    };
    shared.broken.store(true, Ordering::Release);
    let waiters = std::mem::take(
        &mut *shared
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    for (_, tx) in waiters {
        let _ = tx.send(Err(end.clone()));
    }
}

/// A write's answer as `Forward` would have given it.
fn answer_of(outcome: Option<Outcome>) -> Result<pb::ForwardResponse, Status> {
    match outcome {
        Some(Outcome::Done(done)) => Ok(done),
        Some(Outcome::Failed(f)) => Err(Status::new(Code::from_i32(f.code), f.message)),
        None => Err(Status::internal("an answer without an outcome")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures_util::future::pending;
    use futures_util::task::noop_waker_ref;

    use super::*;

    /// Runs writes that finish when the test says so, answering each with
    /// its id as the index.
    #[derive(Default)]
    struct Held {
        release: Mutex<Vec<oneshot::Sender<()>>>,
    }

    impl Run for Arc<Held> {
        fn run(&self, w: pb::StreamedWrite) -> Running {
            let (tx, rx) = oneshot::channel();
            self.release.lock().unwrap().push(tx);
            Box::pin(async move {
                let _ = rx.await;
                pb::WriteResult {
                    id: w.id,
                    outcome: Some(Outcome::Done(pb::ForwardResponse {
                        reply: Vec::new(),
                        index: w.id,
                    })),
                }
            })
        }
    }

    impl Held {
        fn started(&self) -> usize {
            self.release.lock().unwrap().len()
        }

        /// Lets the first `n` writes still held finish.
        fn finish(&self, n: usize) {
            let mut held = self.release.lock().unwrap();
            for tx in held.drain(..n) {
                tx.send(()).unwrap();
            }
        }
    }

    fn batch(ids: std::ops::Range<u64>) -> Result<pb::WriteBatch, Status> {
        Ok(pb::WriteBatch {
            writes: ids
                .map(|id| pb::StreamedWrite {
                    id,
                    write: Some(pb::ForwardRequest::default()),
                })
                .collect(),
        })
    }

    fn poll<S: Stream + Unpin + ?Sized>(s: &mut S) -> Poll<Option<S::Item>> {
        s.poll_next_unpin(&mut Context::from_waker(noop_waker_ref()))
    }

    fn ids(answer: Poll<Option<Result<pb::WriteResults, Status>>>) -> Vec<u64> {
        match answer {
            Poll::Ready(Some(Ok(r))) => r.results.iter().map(|r| r.id).collect(),
            other => panic!("expected answers, got {other:?}"),
        }
    }

    #[test]
    fn a_stream_reads_no_more_writes_than_it_may_run_at_once() {
        let per_batch = MAX_BATCH as u64;
        let batches = (0..6).map(|b| batch(b * per_batch..(b + 1) * per_batch));
        let read = Arc::new(AtomicUsize::new(0));
        let counted = read.clone();
        let batches = futures_util::stream::iter(batches).inspect(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let held = Arc::new(Held::default());
        let mut answers = Answers::with(held.clone(), batches, Box::pin(pending()));

        assert!(poll(&mut answers).is_pending());
        assert_eq!(held.started(), MAX_WRITES_IN_FLIGHT);
        let full = MAX_WRITES_IN_FLIGHT.div_ceil(MAX_BATCH);
        assert_eq!(read.load(Ordering::Relaxed), full, "read past the bound");

        // Finished writes are answered together, and make room for more.
        held.finish(3);
        assert_eq!(ids(poll(&mut answers)), vec![0, 1, 2]);
        assert!(poll(&mut answers).is_pending());
        assert_eq!(held.started(), MAX_WRITES_IN_FLIGHT - 3 + 3);
        assert_eq!(read.load(Ordering::Relaxed), full + 1);

        // The stream ends once the caller's side has and every write is
        // answered.
        let mut answered = 3;
        while held.started() > 0 {
            let n = held.started();
            held.finish(n);
            while let Poll::Ready(Some(Ok(r))) = poll(&mut answers) {
                answered += r.results.len();
                assert!(r.results.len() <= MAX_BATCH);
            }
        }
        assert_eq!(answered, 6 * MAX_BATCH);
        assert!(matches!(poll(&mut answers), Poll::Ready(None)));
    }

    #[test]
    fn a_stopping_node_answers_what_it_took_then_ends_the_stream() {
        let (more, mut rx) = mpsc::unbounded_channel();
        let batches = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let (stop, stopped) = oneshot::channel::<()>();
        let stopping = Box::pin(async move {
            let _ = stopped.await;
        });
        let held = Arc::new(Held::default());
        let mut answers = Answers::with(held.clone(), batches, stopping);
        more.send(batch(0..5)).unwrap();
        assert!(poll(&mut answers).is_pending());
        assert_eq!(held.started(), 5);

        stop.send(()).unwrap();
        more.send(batch(5..10)).unwrap();
        assert!(poll(&mut answers).is_pending());
        assert_eq!(held.started(), 5, "took a write after the node stopped");
        held.finish(5);
        assert_eq!(ids(poll(&mut answers)), vec![0, 1, 2, 3, 4]);
        assert!(matches!(poll(&mut answers), Poll::Ready(None)));
    }

    /// A write carrying `bytes` bytes of command, queued as
    /// [`WriteStream::write`] queues it.
    fn queued(id: u64, bytes: usize) -> Queued {
        let request = pb::ForwardRequest {
            command: Some(pb::Command {
                body: vec![0; bytes],
                request_id: String::new(),
            }),
            ..Default::default()
        };
        let len = request.encoded_len();
        let write = pb::StreamedWrite {
            id,
            write: Some(request),
        };
        (write, len)
    }

    /// How many writes each message that is ready now carries.
    fn sizes(out: &mut (impl Stream<Item = pb::WriteBatch> + Unpin)) -> Vec<usize> {
        let mut sizes = Vec::new();
        while let Poll::Ready(Some(b)) = poll(out) {
            sizes.push(b.writes.len());
        }
        sizes
    }

    #[test]
    fn queued_writes_leave_in_messages_bounded_by_count_and_bytes() {
        let (tx, rx) = mpsc::channel(4096);
        let mut out = Box::pin(batches(rx));
        for id in 0..2000 {
            tx.try_send(queued(id, 10)).unwrap();
        }
        assert_eq!(sizes(&mut out), vec![MAX_BATCH, 2000 - MAX_BATCH]);

        // 600 KiB each: two would pass the byte bound, so each goes alone;
        // one larger than the bound still goes, alone.
        for id in 0..3 {
            tx.try_send(queued(id, 600 * 1024)).unwrap();
        }
        tx.try_send(queued(3, 2 * BATCH_BYTES)).unwrap();
        tx.try_send(queued(4, 10)).unwrap();
        assert_eq!(sizes(&mut out), vec![1, 1, 1, 1, 1]);

        drop(tx);
        assert!(matches!(poll(&mut out), Poll::Ready(None)));
    }

    #[test]
    fn answers_come_back_as_the_server_gave_them() {
        let done = pb::ForwardResponse {
            reply: b"r".to_vec(),
            index: 9,
        };
        assert_eq!(
            answer_of(Some(Outcome::Done(done.clone()))).expect("done"),
            done
        );
        let refused = Status::failed_precondition("not the leader");
        let back = answer_of(Some(failed(&refused))).expect_err("a failure");
        assert_eq!(back.code(), Code::FailedPrecondition);
        assert_eq!(back.message(), "not the leader");
        assert_eq!(
            answer_of(None).expect_err("no outcome").code(),
            Code::Internal
        );
    }
}
