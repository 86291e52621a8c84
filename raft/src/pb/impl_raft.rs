//! openraft's RPC messages ↔ the `missive.v1` messages of `RaftInternal`.
//!
//! Entries travel as their log envelope (the bytes the log stores) plus the
//! index and the leader-assigned timestamp; an entry arriving without a
//! timestamp is refused, never stamped here (see docs/raft-storage.md).

use missive_proto::v1 as pb;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, VoteRequest, VoteResponse,
};

use super::impl_entry::{decode_envelope, envelope};
use super::impl_leader_id::{leader_id_from_pb, leader_id_to_pb};
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// A message from a peer that cannot be turned into openraft's type.
#[derive(Debug, thiserror::Error)]
#[error("malformed {what}: {reason}")]
pub struct Malformed {
    /// The message or field.
    pub what: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn malformed(what: &'static str, reason: impl Into<String>) -> Malformed {
    Malformed {
        what,
        reason: reason.into(),
    }
}

pub(crate) fn log_id_to_pb(id: &LogId) -> pb::LogId {
    pb::LogId {
        leader: Some(leader_id_to_pb(&id.leader_id)),
        index: id.index,
    }
}

pub(crate) fn log_id_from_pb(id: &pb::LogId) -> Result<LogId, Malformed> {
    let leader = id
        .leader
        .as_ref()
        .ok_or_else(|| malformed("log id", "no leader"))?;
    Ok(LogId::new(leader_id_from_pb(leader), id.index))
}

fn opt_log_id_from_pb(id: Option<&pb::LogId>) -> Result<Option<LogId>, Malformed> {
    id.map(log_id_from_pb).transpose()
}

pub(crate) fn vote_to_pb(v: &Vote) -> pb::Vote {
    pb::Vote {
        leader: Some(leader_id_to_pb(&v.leader_id)),
        committed: v.committed,
    }
}

pub(crate) fn vote_from_pb(v: Option<&pb::Vote>) -> Result<Vote, Malformed> {
    let v = v.ok_or_else(|| malformed("vote", "missing"))?;
    let leader = v
        .leader
        .as_ref()
        .ok_or_else(|| malformed("vote", "no leader"))?;
    Ok(Vote {
        leader_id: leader_id_from_pb(leader),
        committed: v.committed,
    })
}

/// An entry on the wire. The leader's store stamped it before replication
/// reads it, so a missing timestamp here is a bug this side reports as a
/// refusal on the other.
pub(crate) fn entry_to_pb(e: &Entry) -> pb::WireEntry {
    pb::WireEntry {
        index: e.log_id.index,
        timestamp_ms: e.timestamp_ms,
        entry: Some(envelope(e)),
    }
}

pub(crate) fn entry_from_pb(e: pb::WireEntry) -> Result<Entry, Malformed> {
    let timestamp_ms = e.timestamp_ms.ok_or_else(|| {
        malformed(
            "entry",
            format!(
                "entry {} has no timestamp: followers store the leader's",
                e.index
            ),
        )
    })?;
    let envelope = e
        .entry
        .ok_or_else(|| malformed("entry", format!("entry {} has no envelope", e.index)))?;
    decode_envelope(e.index, timestamp_ms, envelope)
        .map_err(|err| malformed("entry", err.to_string()))
}

pub(crate) fn append_to_pb(
    partition: u32,
    r: AppendEntriesRequest<TypeConfig>,
) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        partition,
        vote: Some(vote_to_pb(&r.vote)),
        prev_log_id: r.prev_log_id.as_ref().map(log_id_to_pb),
        entries: r.entries.iter().map(entry_to_pb).collect(),
        leader_commit: r.leader_commit.as_ref().map(log_id_to_pb),
    }
}

pub(crate) fn append_from_pb(
    r: pb::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<TypeConfig>, Malformed> {
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(r.vote.as_ref())?,
        prev_log_id: opt_log_id_from_pb(r.prev_log_id.as_ref())?,
        leader_commit: opt_log_id_from_pb(r.leader_commit.as_ref())?,
        entries: r
            .entries
            .into_iter()
            .map(entry_from_pb)
            .collect::<Result<_, _>>()?,
    })
}

pub(crate) fn append_response_to_pb(
    r: &AppendEntriesResponse<TypeConfig>,
) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as R;
    let result = match r {
        AppendEntriesResponse::Success => R::Success(pb::Empty {}),
        AppendEntriesResponse::PartialSuccess(id) => R::PartialSuccess(pb::PartialSuccess {
            log_id: id.as_ref().map(log_id_to_pb),
        }),
        AppendEntriesResponse::Conflict => R::Conflict(pb::Empty {}),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_to_pb(v)),
    };
    pb::AppendEntriesResponse {
        result: Some(result),
    }
}

pub(crate) fn append_response_from_pb(
    r: pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<TypeConfig>, Malformed> {
    use pb::append_entries_response::Result as R;
    Ok(match r.result {
        Some(R::Success(_)) => AppendEntriesResponse::Success,
        Some(R::PartialSuccess(p)) => {
            AppendEntriesResponse::PartialSuccess(opt_log_id_from_pb(p.log_id.as_ref())?)
        }
        Some(R::Conflict(_)) => AppendEntriesResponse::Conflict,
        Some(R::HigherVote(v)) => AppendEntriesResponse::HigherVote(vote_from_pb(Some(&v))?),
        None => return Err(malformed("append entries response", "no result")),
    })
}

pub(crate) fn vote_request_to_pb(partition: u32, r: &VoteRequest<TypeConfig>) -> pb::VoteRequest {
    pb::VoteRequest {
        partition,
        vote: Some(vote_to_pb(&r.vote)),
        last_log_id: r.last_log_id.as_ref().map(log_id_to_pb),
        leadership_transfer: r.leadership_transfer,
    }
}

pub(crate) fn vote_request_from_pb(
    r: &pb::VoteRequest,
) -> Result<VoteRequest<TypeConfig>, Malformed> {
    Ok(VoteRequest {
        vote: vote_from_pb(r.vote.as_ref())?,
        last_log_id: opt_log_id_from_pb(r.last_log_id.as_ref())?,
        leadership_transfer: r.leadership_transfer,
    })
}

pub(crate) fn vote_response_to_pb(r: &VoteResponse<TypeConfig>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_pb(&r.vote)),
        vote_granted: r.vote_granted,
        last_log_id: r.last_log_id.as_ref().map(log_id_to_pb),
    }
}

pub(crate) fn vote_response_from_pb(
    r: &pb::VoteResponse,
) -> Result<VoteResponse<TypeConfig>, Malformed> {
    Ok(VoteResponse {
        vote: vote_from_pb(r.vote.as_ref())?,
        vote_granted: r.vote_granted,
        last_log_id: opt_log_id_from_pb(r.last_log_id.as_ref())?,
    })
}

pub(crate) fn transfer_to_pb(
    partition: u32,
    r: &TransferLeaderRequest<TypeConfig>,
) -> pb::TransferLeaderRequest {
    pb::TransferLeaderRequest {
        partition,
        from_leader: Some(vote_to_pb(r.from_leader())),
        to_node_id: *r.to_node_id(),
        last_log_id: r.last_log_id().map(log_id_to_pb),
    }
}

pub(crate) fn transfer_from_pb(
    r: &pb::TransferLeaderRequest,
) -> Result<TransferLeaderRequest<TypeConfig>, Malformed> {
    Ok(TransferLeaderRequest::new(
        vote_from_pb(r.from_leader.as_ref())?,
        r.to_node_id,
        opt_log_id_from_pb(r.last_log_id.as_ref())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, LeaderId, Payload};

    fn entry(timestamp_ms: Option<u64>) -> Entry {
        Entry {
            log_id: LogId::new(
                LeaderId {
                    term: 3,
                    node_id: 2,
                },
                11,
            ),
            timestamp_ms,
            payload: Payload::Normal(Command {
                body: vec![1, 2, 3],
                request_id: "r".into(),
            }),
        }
    }

    #[test]
    fn entries_round_trip_with_their_timestamp() {
        let e = entry(Some(1_700_000_000_000));
        assert_eq!(entry_from_pb(entry_to_pb(&e)).expect("decodes"), e);
    }

    #[test]
    fn an_entry_without_a_timestamp_is_refused() {
        let err = entry_from_pb(entry_to_pb(&entry(None))).expect_err("refused");
        assert!(err.reason.contains("no timestamp"), "{err}");
    }

    #[test]
    fn append_requests_and_responses_round_trip() {
        let vote = Vote {
            leader_id: LeaderId {
                term: 3,
                node_id: 2,
            },
            committed: true,
        };
        let req = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: Some(LogId::new(
                LeaderId {
                    term: 3,
                    node_id: 2,
                },
                10,
            )),
            entries: vec![entry(Some(5))],
            leader_commit: None,
        };
        let back = append_from_pb(append_to_pb(7, req.clone())).expect("decodes");
        assert_eq!(back.vote, req.vote);
        assert_eq!(back.prev_log_id, req.prev_log_id);
        assert_eq!(back.entries, req.entries);
        for r in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(vote),
        ] {
            assert_eq!(
                append_response_from_pb(append_response_to_pb(&r)).expect("decodes"),
                r
            );
        }
    }
}
