//! A connection's bounded send queue and the task that writes it to the
//! socket.
//!
//! Everything sent to a client (results, errors, events, pings, the close
//! frame) goes through one `mpsc` queue of `Limits::send_queue` frames. A
//! producer waits at most `Limits::send_timeout` for room; a queue that stays
//! full that long makes the client a slow consumer and closes the connection
//! (close code 4008). So a client that stops reading costs at most the
//! queue's frames plus the one being written, never more; it reconnects and
//! resumes from the token of the last event it saw.
//!
//! The writer is the only owner of the socket's sending half. A close
//! for a slow consumer overtakes the queue (it is a separate one-shot
//! channel): the frames still queued are dropped, the close frame is written
//! if the socket
//! takes it within [`CLOSE_TIMEOUT`], and the writer ends. Other closes
//! (auth refused, idle, shutdown) queue their close frame behind what is
//! already queued, so an explaining `error` frame arrives first.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::limits::CLOSE_TIMEOUT;
use crate::protocol::close;

/// Counters of the whole gateway, for tests and operators.
#[derive(Debug, Default)]
pub struct Stats {
    /// WebSocket connections open now.
    pub connections: AtomicUsize,
    /// Connections refused because [`crate::Limits::max_connections`] were open.
    pub refused: AtomicU64,
    /// Connections closed because their send queue was full.
    pub slow_consumers: AtomicU64,
    /// The most frames any one connection has had queued at once.
    pub queue_high_water: AtomicUsize,
    /// Request frames read from authenticated connections.
    pub requests: AtomicU64,
    /// Requests answered `rate_limited` by the per-connection bucket.
    pub rate_limited: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections: usize,
    pub refused: u64,
    pub slow_consumers: u64,
    pub queue_high_water: usize,
    pub requests: u64,
    pub rate_limited: u64,
}

impl StatsSnapshot {
    /// Adds `other`'s counts to these, as one gateway of several processes
    /// reports them: connections and counters add up; the high-water mark
    /// is the larger.
    pub fn merge(&mut self, other: &StatsSnapshot) {
        self.connections += other.connections;
        self.refused += other.refused;
        self.slow_consumers += other.slow_consumers;
        self.queue_high_water = self.queue_high_water.max(other.queue_high_water);
        self.requests += other.requests;
        self.rate_limited += other.rate_limited;
    }
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.connections.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            slow_consumers: self.slow_consumers.load(Ordering::Relaxed),
            queue_high_water: self.queue_high_water.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
        }
    }
}

/// The producers' handle on a connection's send queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Message>,
    /// Taken by the first close; later closes are no-ops. A std mutex: it is
    /// held only to take the option, never across an await.
    closer: Arc<Mutex<Option<oneshot::Sender<CloseFrame>>>>,
    /// How long [`Outbox::send`] waits for room before the client is closed.
    send_timeout: Duration,
    stats: Arc<Stats>,
}

impl Outbox {
    /// Starts the writer of `sink` with a queue of `capacity` frames.
    pub fn start<S>(
        sink: S,
        capacity: usize,
        send_timeout: Duration,
        stats: Arc<Stats>,
    ) -> (Outbox, JoinHandle<()>)
    where
        S: Sink<Message> + Send + Unpin + 'static,
        S::Error: Send,
    {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (close_tx, close_rx) = oneshot::channel();
        let writer = tokio::spawn(write(sink, rx, close_rx));
        let out = Outbox {
            tx,
            closer: Arc::new(Mutex::new(Some(close_tx))),
            send_timeout,
            stats,
        };
        (out, writer)
    }

    /// Queues a text frame; see [`Outbox::send`].
    pub async fn text(&self, frame: String) -> bool {
        self.send(Message::Text(frame.into())).await
    }

    /// Queues `m`, waiting at most the send timeout for room. A queue that
    /// stays full that long belongs to a client that is not reading: the
    /// connection is closed as a slow consumer. False when `m` was not queued
    /// (timed out, or closing).
    ///
    /// Waiting (rather than closing at the first full queue) lets a burst,
    /// such as the replay after a resume, drain at the client's pace; the
    /// subscription's gRPC stream waits meanwhile, with its own bound.
    pub async fn send(&self, m: Message) -> bool {
        let m = match self.tx.try_send(m) {
            Ok(()) => return self.queued(),
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(m)) => m,
        };
        match timeout(self.send_timeout, self.tx.send(m)).await {
            Ok(Ok(())) => self.queued(),
            Ok(Err(_)) => false,
            Err(_) => {
                self.slow_consumer();
                false
            }
        }
    }

    /// Queues `m` if there is room now; never closes. For frames that may
    /// be skipped (WebSocket pings).
    pub fn push(&self, m: Message) -> bool {
        self.tx.try_send(m).is_ok() && self.queued()
    }

    fn queued(&self) -> bool {
        let depth = self.tx.max_capacity() - self.tx.capacity();
        self.stats
            .queue_high_water
            .fetch_max(depth, Ordering::Relaxed);
        true
    }

    /// Closes a client that does not read. What is queued would never
    /// reach it, so the close overtakes the queue.
    fn slow_consumer(&self) {
        if let Some(now) = self.take_closer() {
            self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            tracing::info!("closing a slow consumer");
            let _ = now.send(frame(
                close::SLOW_CONSUMER,
                "send queue full: reconnect and subscribe from your last token",
            ));
        }
    }

    /// Closes the connection with `code` after the frames already queued (an
    /// error frame explaining the close goes out first). If the client does
    /// not take them within [`CLOSE_TIMEOUT`], the close overtakes them. True
    /// for the first close of the connection; later ones change nothing.
    pub fn close(&self, code: u16, reason: &str) -> bool {
        let Some(now) = self.take_closer() else {
            return false;
        };
        let f = frame(code, reason);
        if self.tx.try_send(Message::Close(Some(f.clone()))).is_err() {
            let _ = now.send(f);
            return true;
        }
        tokio::spawn(async move {
            tokio::time::sleep(CLOSE_TIMEOUT).await;
            // Fails harmlessly if the writer is already done.
            let _ = now.send(f);
        });
        true
    }

    fn take_closer(&self) -> Option<oneshot::Sender<CloseFrame>> {
        match self.closer.lock() {
            Ok(mut g) => g.take(),
            // Poisoned: a holder panicked while taking the option; it is
            // either taken or still there, and either way safe to take.
            Err(p) => p.into_inner().take(),
        }
    }

    /// True once a close was asked for.
    pub fn closing(&self) -> bool {
        match self.closer.lock() {
            Ok(g) => g.is_none(),
            Err(p) => p.into_inner().is_none(),
        }
    }
}

/// The writer: queued frames in order until a close is asked for, the
/// queue's producers are all gone, or the socket fails.
async fn write<S>(
    mut sink: S,
    mut rx: mpsc::Receiver<Message>,
    mut close_rx: oneshot::Receiver<CloseFrame>,
) where
    S: Sink<Message> + Unpin,
    S::Error: Send,
{
    loop {
        let next = tokio::select! {
            biased;
            c = &mut close_rx => return finish(&mut sink, c.ok()).await,
            m = rx.recv() => m,
        };
        let m = match next {
            Some(Message::Close(f)) => return finish(&mut sink, f).await,
            Some(m) => m,
            None => return finish(&mut sink, None).await,
        };
        // A close overtakes a write the client is not reading.
        tokio::select! {
            biased;
            c = &mut close_rx => return finish(&mut sink, c.ok()).await,
            r = sink.send(m) => if r.is_err() { return },
        }
    }
}

fn frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

async fn finish<S>(sink: &mut S, frame: Option<CloseFrame>)
where
    S: Sink<Message> + Unpin,
{
    if let Some(f) = frame {
        let _ = timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(f)))).await;
    }
    let _ = timeout(CLOSE_TIMEOUT, sink.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_closes_the_connection_as_a_slow_consumer() {
        // A sink that takes nothing: a client that never reads.
        let sink = Box::pin(futures_util::sink::unfold((), |(), _m: Message| {
            std::future::pending::<Result<(), ()>>()
        }));
        let stats = Arc::new(Stats::default());
        let wait = Duration::from_millis(50);
        let (out, writer) = Outbox::start(sink, 4, wait, stats.clone());
        let mut queued = 0;
        while out.text(format!("frame {queued}")).await {
            queued += 1;
            assert!(queued < 100, "the queue never filled");
        }
        // One in the (blocked) sink's slot at most, the rest queued.
        assert!(queued <= 4 + 2, "queued {queued}");
        assert!(out.closing());
        let s = stats.snapshot();
        assert_eq!(s.slow_consumers, 1);
        assert!(s.queue_high_water <= 4);
        timeout(CLOSE_TIMEOUT * 4, writer)
            .await
            .expect("the writer ends after a close it cannot send")
            .expect("the writer does not panic");
    }

    #[tokio::test]
    async fn a_reading_client_gets_its_frames_then_the_close() {
        let (tx, mut seen) = mpsc::channel::<Message>(16);
        let sink = Box::pin(futures_util::sink::unfold(
            tx,
            |tx, m: Message| async move {
                tx.send(m).await.map_err(|_| ())?;
                Ok::<_, ()>(tx)
            },
        ));
        let wait = Duration::from_millis(50);
        let (out, writer) = Outbox::start(sink, 4, wait, Arc::new(Stats::default()));
        assert!(out.text("a".into()).await);
        // Give the writer the frame before the close overtakes the queue.
        let first = seen.recv().await.expect("a frame");
        assert_eq!(first, Message::Text("a".into()));
        assert!(out.close(close::IDLE, "idle"));
        assert!(!out.close(close::IDLE, "again"));
        match seen.recv().await {
            Some(Message::Close(Some(f))) => assert_eq!(f.code, close::IDLE),
            other => panic!("expected a close, got {other:?}"),
        }
        writer.await.expect("the writer ends");
    }
}
