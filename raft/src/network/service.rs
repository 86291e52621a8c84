//! The server side of the internal transport: each call goes to the
//! partition it names, on this node.
//!
//! Raft calls go straight to the partition's openraft instance. A forwarded
//! write is applied here only if this node leads the partition; otherwise it
//! is refused with `FAILED_PRECONDITION` and the sender looks for the leader
//! again — a relayed write is never forwarded again, so it cannot loop. A
//! write from an operator's client (not relayed) takes the node's write
//! path, which forwards it. Operators'
//! calls go to the node's cluster operations.

use std::collections::BTreeMap;

use missive_proto::v1 as pb;
use missive_proto::v1::raft_internal_server::RaftInternal;
use openraft::Snapshot;
use tonic::{Request, Response, Status, Streaming};

use super::snapshot_stream;
use super::writes::{Answers, Runner};
use crate::error::Error;
use crate::node::Node;
use crate::pb as conv;
use crate::state_machine::StateMachine;
use crate::types::{Command, Node as Member};

/// Largest message accepted or sent (an append of many entries, a
/// forwarded command). Bounds the memory one call can take.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The `RaftInternal` service of one node.
#[derive(Debug)]
pub(crate) struct Service<SM: StateMachine> {
    /// The node whose partitions the calls are for.
    pub(crate) node: Node<SM>,
}

/// The status a failed call answers with.
pub(crate) fn status_of(e: Error) -> Status {
    match e {
        Error::NotLeader { .. } => Status::failed_precondition(e.to_string()),
        Error::Unavailable { .. } => Status::unavailable(e.to_string()),
        Error::OutcomeUnknown { .. } => Status::aborted(e.to_string()),
        Error::UnknownPartition { .. } | Error::Config(_) | Error::InvalidMembership(_) => {
            Status::invalid_argument(e.to_string())
        }
        Error::Rpc(status) => *status,
        other => Status::internal(other.to_string()),
    }
}

/// A write, from `Forward` or a `Writes` stream: applied here if relayed
/// (this node must lead), else through the node's write path, which
/// forwards it to the leader.
pub(crate) async fn forward_write<SM: StateMachine>(
    node: &Node<SM>,
    req: pb::ForwardRequest,
) -> Result<pb::ForwardResponse, Status> {
    let command: Command = req
        .command
        .ok_or_else(|| Status::invalid_argument("a forwarded write without a command"))?
        .into();
    let (reply, index) = if req.relayed {
        node.write_local(req.partition, command).await
    } else {
        node.write_indexed(req.partition, command).await
    }
    .map_err(status_of)?;
    Ok(pb::ForwardResponse {
        reply: reply.body,
        index,
    })
}

fn bad(e: conv::Malformed) -> Status {
    Status::invalid_argument(e.to_string())
}

fn fatal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl<SM: StateMachine> RaftInternal for Service<SM> {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let req = request.into_inner();
        let raft = self.node.raft(req.partition).map_err(status_of)?;
        let rpc = conv::append_from_pb(req).map_err(bad)?;
        let resp = raft.append_entries(rpc).await.map_err(fatal)?;
        Ok(Response::new(conv::append_response_to_pb(&resp)))
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let req = request.into_inner();
        let raft = self.node.raft(req.partition).map_err(status_of)?;
        let rpc = conv::vote_request_from_pb(&req).map_err(bad)?;
        let resp = raft.vote(rpc).await.map_err(fatal)?;
        Ok(Response::new(conv::vote_response_to_pb(&resp)))
    }

    async fn pre_vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let req = request.into_inner();
        let raft = self.node.raft(req.partition).map_err(status_of)?;
        let rpc = conv::vote_request_from_pb(&req).map_err(bad)?;
        let resp = raft.pre_vote(rpc).await.map_err(fatal)?;
        Ok(Response::new(conv::vote_response_to_pb(&resp)))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let mut stream = request.into_inner();
        let (header, first) = snapshot_stream::receive_header(&mut stream).await?;
        let raft = self.node.raft(header.partition).map_err(status_of)?;
        let vote = conv::vote_from_pb(header.vote.as_ref()).map_err(bad)?;
        let path = self
            .node
            .incoming_snapshot_path(header.partition)
            .map_err(status_of)?;
        let received = snapshot_stream::receive_into(&path, first, stream).await;
        let result = match received {
            Ok(file) => match file.meta() {
                Ok(meta) => raft
                    .install_full_snapshot(
                        vote,
                        Snapshot {
                            meta,
                            snapshot: file,
                        },
                    )
                    .await
                    .map_err(fatal),
                Err(e) => Err(Status::invalid_argument(e.to_string())),
            },
            Err(status) => Err(status),
        };
        // Installing copied it into the snapshot directory (or it failed).
        if let Err(e) = tokio::fs::remove_file(&path).await {
            tracing::warn!(path = %path.display(), error = %e, "removing a received snapshot failed");
        }
        let resp = result?;
        Ok(Response::new(pb::SnapshotResponse {
            vote: Some(conv::vote_to_pb(&resp.vote)),
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let req = request.into_inner();
        let raft = self.node.raft(req.partition).map_err(status_of)?;
        let rpc = conv::transfer_from_pb(&req).map_err(bad)?;
        let resp = raft.handle_transfer_leader(rpc).await.map_err(fatal)?;
        Ok(Response::new(pb::TransferLeaderResponse {
            rejected: resp.err().map(|e| e.to_string()).unwrap_or_default(),
        }))
    }

    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        Ok(Response::new(
            forward_write(&self.node, request.into_inner()).await?,
        ))
    }

    type WritesStream = Answers<Runner<SM>, Streaming<pb::WriteBatch>>;

    async fn writes(
        &self,
        request: Request<Streaming<pb::WriteBatch>>,
    ) -> Result<Response<Self::WritesStream>, Status> {
        Ok(Response::new(Answers::new(
            self.node.clone(),
            request.into_inner(),
        )))
    }

    async fn relay(
        &self,
        request: Request<pb::RelayRequest>,
    ) -> Result<Response<pb::RelayResponse>, Status> {
        self.node.deliver_relayed(request.into_inner().payload);
        Ok(Response::new(pb::RelayResponse {}))
    }

    async fn initialize(
        &self,
        request: Request<pb::InitializeRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let members: BTreeMap<_, _> = request
            .into_inner()
            .members
            .into_iter()
            .map(|n| (n.id, Member::new(n.addr)))
            .collect();
        let message = self.node.initialize(members).await.map_err(status_of)?;
        Ok(Response::new(pb::AdminResponse { message }))
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let req = request.into_inner();
        let node = req
            .node
            .ok_or_else(|| Status::invalid_argument("add node: no node"))?;
        let message = match req.partition {
            Some(p) => self.node.add_node_on(p, node.id, &node.addr).await,
            None => self.node.add_node(node.id, &node.addr).await,
        }
        .map_err(status_of)?;
        Ok(Response::new(pb::AdminResponse { message }))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let req = request.into_inner();
        let message = match req.partition {
            Some(p) => self.node.remove_node_on(p, req.id).await,
            None => self.node.remove_node(req.id).await,
        }
        .map_err(status_of)?;
        Ok(Response::new(pb::AdminResponse { message }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(self.node.status().to_pb()))
    }
}
