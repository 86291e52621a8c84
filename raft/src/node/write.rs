//! Writes: applied by the partition's leader, wherever they arrive.
//!
//! [`Node::write`] finds the partition's leader in this node's metrics. If it
//! is this node, the write is proposed here; otherwise it is forwarded once,
//! over the internal `Forward` call, to the leader, which proposes it only if
//! it still leads. While no leader is known, or the one known no longer
//! leads, or its address refuses connections, the write waits
//! [`RETRY_PAUSE`] and looks again, until the node's write timeout.
//!
//! A write is retried only when it surely was not proposed: "not leader"
//! answers and refused connections. A call that failed after reaching the
//! leader (timeout, connection cut, entry discarded by a leader change) may
//! or may not commit: it fails with [`Error::OutcomeUnknown`] rather than
//! risk applying the command twice.

use std::time::Duration;

use openraft::errors::ClientWriteError;
use tokio::time::Instant;

use super::Node;
use crate::error::{Error, Result};
use crate::state_machine::StateMachine;
use crate::types::{Command, Reply};

/// How long a write waits before looking for the leader again.
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);

impl<SM: StateMachine> Node<SM> {
    /// Applies `command` to partition `p` through its leader and returns the
    /// state machine's reply.
    pub async fn write(&self, p: u32, command: Command) -> Result<Reply> {
        Ok(self.write_indexed(p, command).await?.0)
    }

    /// [`Node::write`], also returning the index the command committed at.
    pub async fn write_indexed(&self, p: u32, command: Command) -> Result<(Reply, u64)> {
        let started = Instant::now();
        let result = self.write_with_retries(p, command).await;
        if result.is_ok() {
            crate::metrics::COMMIT_SECONDS.observe(started.elapsed().as_secs_f64());
        }
        result
    }

    /// [`Node::write_indexed`] without the measuring: finds the leader,
    /// retrying until the write deadline.
    async fn write_with_retries(&self, p: u32, command: Command) -> Result<(Reply, u64)> {
        let deadline = Instant::now() + self.inner.write_timeout;
        loop {
            let leader = self.metrics(p)?.current_leader;
            let result = match leader {
                Some(id) if id == self.inner.id => self.write_local(p, command.clone()).await,
                Some(id) => self.forward(p, id, &command, deadline).await,
                None => Err(Error::NotLeader {
                    partition: p,
                    leader: None,
                }),
            };
            match result {
                Err(e) if e.is_retryable_write() && Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) if e.is_retryable_write() => {
                    return Err(Error::Unavailable {
                        partition: p,
                        reason: format!(
                            "no leader took the write within {:?}: {e}",
                            self.inner.write_timeout
                        ),
                    });
                }
                other => return other,
            }
        }
    }

    /// Sends the write to `leader`.
    async fn forward(
        &self,
        p: u32,
        leader: u64,
        command: &Command,
        deadline: Instant,
    ) -> Result<(Reply, u64)> {
        if let Some(addr) = self.members(p)?.get(&leader) {
            self.inner.peers.learn(leader, addr);
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        let wire = command.clone().into();
        match self.inner.peers.forward(leader, p, wire, timeout).await {
            Ok(resp) => Ok((Reply { body: resp.reply }, resp.index)),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => Err(Error::NotLeader {
                partition: p,
                leader: None,
            }),
            // Nothing was sent when the connection was refused.
            Err(s) if s.code() == tonic::Code::Unavailable && refused(&s) => {
                Err(Error::NotLeader {
                    partition: p,
                    leader: Some(leader),
                })
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Aborted
                        // The connection closed mid-call (the leader stopping).
                        | tonic::Code::Cancelled
                ) || broke_here(&s) =>
            {
                Err(Error::OutcomeUnknown {
                    partition: p,
                    reason: format!("forwarding to node {leader}: {}", s.message()),
                })
            }
            Err(s) => Err(Error::Rpc(Box::new(s))),
        }
    }

    /// Proposes `command` on this node, which must lead partition `p`;
    /// returns the reply and the index it was committed at.
    pub async fn write_local(&self, p: u32, command: Command) -> Result<(Reply, u64)> {
        match self.raft(p)?.client_write(command).await {
            Ok(resp) => Ok((resp.data, resp.log_id.index)),
            Err(e) => Err(match e.into_api_error() {
                Some(ClientWriteError::ForwardToLeader(f)) => Error::NotLeader {
                    partition: p,
                    leader: f.leader_id,
                },
                Some(ClientWriteError::LogEntryDiscarded(f)) => Error::OutcomeUnknown {
                    partition: p,
                    reason: format!("the entry was discarded by a leader change: {f}"),
                },
                Some(other) => Error::Raft(other.to_string()),
                None => Error::Raft(format!("partition {p} has stopped")),
            }),
        }
    }
}

/// Whether the status was made on this side from a transport failure (it
/// carries the failure as its source), not answered by the peer: a stopping
/// leader's GOAWAY reaches a call in flight as a local `Internal` ("h2
/// protocol error"), which says nothing of whether the write ran.
fn broke_here(s: &tonic::Status) -> bool {
    std::error::Error::source(s).is_some()
}

/// True when a status says the connection could not be opened, so the call
/// never left this node: tonic's "tcp connect error" (the TCP connect itself
/// failed), or no address known. Matched exactly — a connection reset
/// mid-call also mentions "connection" and must not count, because the
/// leader may have received the write.
fn refused(s: &tonic::Status) -> bool {
    s.message() == "tcp connect error" || s.message().starts_with("no known address")
}

#[cfg(test)]
mod tests {
    use missive_proto::v1 as pb;

    use super::*;
    use crate::network::{ClusterSecret, Peers};

    /// A peer's own `Internal` is its answer; one built here from a broken
    /// connection leaves the write's fate unknown.
    #[test]
    fn a_status_made_from_a_transport_failure_is_told_from_a_peers_answer() {
        assert!(!broke_here(&tonic::Status::internal("the peer failed")));
        let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(broke_here(&tonic::Status::from_error(Box::new(broken))));
    }

    /// The retry of a forwarded write after its leader died relies on
    /// recognising a refused connection from tonic's message alone.
    #[tokio::test]
    async fn a_refused_connection_is_recognised_as_never_sent() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let peers = Peers::new(
            ClusterSecret::new("some-secret").expect("secret"),
            tokio::runtime::Handle::current(),
        );
        peers.learn(9, &format!("127.0.0.1:{port}"));
        let err = peers
            .forward(9, 0, pb::Command::default(), Duration::from_secs(2))
            .await
            .expect_err("nobody listens");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(refused(&err), "not recognised as refused: {err:?}");
    }
}
