//! `Entry` ↔ the bytes of a log record: an encoded `missive.v1.LogEntry`.
//!
//! The record header (index, timestamp) belongs to missive-log and is not
//! repeated in the envelope; decoding takes both from the record.

use missive_proto::ENVELOPE_VERSION;
use missive_proto::v1::{self as pb, log_entry};
use prost::Message;

use super::impl_leader_id::{leader_id_from_pb, leader_id_to_pb};
use super::impl_membership::{membership_from_pb, membership_to_pb};
use crate::error::{Error, Result};
use crate::types::{Command, Entry, LogId, Payload};

impl From<Command> for pb::Command {
    fn from(c: Command) -> pb::Command {
        pb::Command {
            body: c.body,
            request_id: c.request_id,
        }
    }
}

impl From<pb::Command> for Command {
    fn from(c: pb::Command) -> Command {
        Command {
            body: c.body,
            request_id: c.request_id,
        }
    }
}

/// The envelope of `entry`: what the log stores and the transport carries.
pub(crate) fn envelope(entry: &Entry) -> pb::LogEntry {
    let payload = match &entry.payload {
        Payload::Blank => log_entry::Payload::Blank(pb::Blank {}),
        Payload::Membership(m) => log_entry::Payload::Membership(membership_to_pb(m)),
        Payload::Normal(c) => log_entry::Payload::Command(c.clone().into()),
    };
    pb::LogEntry {
        envelope_version: ENVELOPE_VERSION,
        leader: Some(leader_id_to_pb(&entry.log_id.leader_id)),
        payload: Some(payload),
    }
}

/// Appends the envelope of `entry` to `buf`.
pub(crate) fn encode_entry(entry: &Entry, buf: &mut Vec<u8>) {
    // Encoding into a Vec cannot run out of room.
    envelope(entry)
        .encode(buf)
        .expect("invariant: a Vec grows to fit");
}

/// Decodes the record at `index`, appended with `timestamp_ms`, holding
/// `bytes`.
pub(crate) fn decode_entry(index: u64, timestamp_ms: u64, bytes: &[u8]) -> Result<Entry> {
    let envelope = pb::LogEntry::decode(bytes).map_err(|e| Error::CorruptEnvelope {
        index,
        reason: e.to_string(),
    })?;
    decode_envelope(index, timestamp_ms, envelope)
}

/// The entry at `index`, stamped `timestamp_ms`, that `envelope` describes.
pub(crate) fn decode_envelope(
    index: u64,
    timestamp_ms: u64,
    envelope: pb::LogEntry,
) -> Result<Entry> {
    let corrupt = |reason: String| Error::CorruptEnvelope { index, reason };
    if envelope.envelope_version != ENVELOPE_VERSION {
        return Err(Error::UnknownEnvelopeVersion {
            index,
            version: envelope.envelope_version,
            known: ENVELOPE_VERSION,
        });
    }
    let leader = envelope
        .leader
        .as_ref()
        .ok_or_else(|| corrupt("no leader".into()))?;
    let payload = match envelope.payload {
        Some(log_entry::Payload::Blank(_)) => Payload::Blank,
        Some(log_entry::Payload::Membership(m)) => {
            Payload::Membership(membership_from_pb(&m).map_err(|e| corrupt(e.to_string()))?)
        }
        Some(log_entry::Payload::Command(c)) => Payload::Normal(c.into()),
        // A payload case this build does not know decodes as none: stop
        // rather than skip it (see log.proto).
        None => {
            return Err(corrupt(
                "no payload, or a payload kind this build does not know".into(),
            ));
        }
    };
    Ok(Entry {
        log_id: LogId::new(leader_id_from_pb(leader), index),
        timestamp_ms: Some(timestamp_ms),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::types::{ClusterMembership, LeaderId, Node};

    fn entry(payload: Payload) -> Entry {
        Entry {
            log_id: LogId::new(
                LeaderId {
                    term: 4,
                    node_id: 2,
                },
                17,
            ),
            timestamp_ms: Some(1_700_000_000_123),
            payload,
        }
    }

    fn round_trip(e: &Entry) -> Entry {
        let mut buf = Vec::new();
        encode_entry(e, &mut buf);
        decode_entry(e.log_id.index, e.timestamp_ms.unwrap_or(0), &buf).expect("decodes")
    }

    #[test]
    fn every_payload_kind_round_trips() {
        let m = ClusterMembership::new(
            vec![BTreeSet::from([1, 2])],
            BTreeMap::from([
                (1, Node::new("a:1")),
                (2, Node::new("b:2")),
                (3, Node::new("c:3")),
            ]),
        )
        .expect("valid");
        for p in [
            Payload::Blank,
            Payload::Membership(m),
            Payload::Normal(Command {
                body: vec![0xff, 0, 0x80],
                request_id: "r-1".into(),
            }),
        ] {
            let e = entry(p);
            assert_eq!(round_trip(&e), e);
        }
    }

    #[test]
    fn unknown_envelope_version_is_refused() {
        let bad = pb::LogEntry {
            envelope_version: ENVELOPE_VERSION + 1,
            leader: Some(pb::LeaderId {
                term: 1,
                node_id: 1,
            }),
            payload: Some(log_entry::Payload::Blank(pb::Blank {})),
        };
        let err = decode_entry(5, 0, &bad.encode_to_vec()).expect_err("refused");
        assert!(matches!(
            err,
            Error::UnknownEnvelopeVersion { index: 5, .. }
        ));
    }

    #[test]
    fn envelope_without_payload_is_refused() {
        let bad = pb::LogEntry {
            envelope_version: ENVELOPE_VERSION,
            leader: Some(pb::LeaderId {
                term: 1,
                node_id: 1,
            }),
            payload: None,
        };
        let err = decode_entry(5, 0, &bad.encode_to_vec()).expect_err("refused");
        assert!(matches!(err, Error::CorruptEnvelope { index: 5, .. }));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            decode_entry(9, 0, &[0xff; 12]),
            Err(Error::CorruptEnvelope { index: 9, .. })
        ));
    }
}
