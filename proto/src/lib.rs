//! missive's protobuf schema: the `missive.v1` package and the Rust types
//! generated from it.
//!
//! The .proto files under `proto/` are the source of truth; `build.rs` compiles
//! them with `protox` (pure Rust, so no system `protoc` is needed) and
//! `tonic-prost-build`. Everything here but [`wire`] is generated: conversions
//! between these wire types and each crate's own types live at the edge of the
//! crate that owns them, so the types never leak into a core.
//!
//! This crate must depend on nothing else in the workspace: every other crate
//! may depend on it, and the schema must stay buildable on its own.
//!
//! # Layout
//!
//! - [`v1`]: the generated `missive.v1` messages. [`v1::LogEntry`] is the
//!   envelope that every payload of a partition's log carries;
//!   `v1::raft_internal_client` and `v1::raft_internal_server` are the
//!   internal node-to-node service (`raft.proto`).
//! - [`ENVELOPE_VERSION`]: the envelope version today's writers set.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded schema, for gRPC reflection.
//! - [`wire`]: how these messages travel: the TCP streams every missive
//!   gRPC server and client uses, so that small messages share a write.

/// The generated `missive.v1` package (see `proto/missive/v1/*.proto`).
// Generated oneofs hold messages inline; boxing them would change every
// caller for no gain on these short-lived values.
#[allow(clippy::large_enum_variant)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/missive.v1.rs"));
}

pub mod wire;

/// The value of [`v1::LogEntry::envelope_version`] that this build writes and
/// understands. A reader must refuse an entry with any other value rather than
/// apply it (the rules are in `log.proto`).
pub const ENVELOPE_VERSION: u32 = 1;

/// The encoded `google.protobuf.FileDescriptorSet` of every file in this crate,
/// with imports and source comments, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/missive_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::v1::{Blank, Command, LeaderId, LogEntry, Membership, Node, VoterSet, log_entry};
    use super::{ENVELOPE_VERSION, FILE_DESCRIPTOR_SET};
    use proptest::prelude::*;
    use prost::Message;

    fn entry(payload: log_entry::Payload) -> LogEntry {
        LogEntry {
            envelope_version: ENVELOPE_VERSION,
            leader: Some(LeaderId {
                term: 7,
                node_id: 3,
            }),
            payload: Some(payload),
        }
    }

    fn node(id: u64) -> Node {
        Node {
            id,
            addr: format!("10.0.0.{id}:7100"),
        }
    }

    fn assert_round_trips(original: &LogEntry) {
        let bytes = original.encode_to_vec();
        let decoded = LogEntry::decode(bytes.as_slice()).expect("bytes just encoded must decode");
        assert_eq!(&decoded, original);
    }

    #[test]
    fn blank_entry_round_trips() {
        assert_round_trips(&entry(log_entry::Payload::Blank(Blank {})));
    }

    #[test]
    fn joint_membership_entry_round_trips() {
        let old = VoterSet {
            voters: vec![node(1), node(2), node(3)],
        };
        let new = VoterSet {
            voters: vec![node(2), node(3), node(4)],
        };
        assert_round_trips(&entry(log_entry::Payload::Membership(Membership {
            voter_sets: vec![old, new],
            learners: vec![node(5)],
        })));
    }

    #[test]
    fn command_entry_round_trips_with_opaque_body() {
        assert_round_trips(&entry(log_entry::Payload::Command(Command {
            // Bytes that are not valid protobuf: the envelope must carry them untouched.
            body: vec![0xff, 0x00, 0x80, 0x7f, 0xff],
            request_id: "req-0001".to_owned(),
        })));
    }

    #[test]
    fn blank_payload_is_distinguishable_from_missing_payload() {
        let blank = entry(log_entry::Payload::Blank(Blank {}));
        let missing = LogEntry {
            payload: None,
            ..blank.clone()
        };
        let decoded = LogEntry::decode(blank.encode_to_vec().as_slice()).expect("valid encoding");
        assert_eq!(decoded.payload, Some(log_entry::Payload::Blank(Blank {})));
        assert_ne!(blank.encode_to_vec(), missing.encode_to_vec());
    }

    #[test]
    fn garbage_bytes_give_decode_error() {
        let cases: &[(&str, &[u8])] = &[
            ("varint longer than ten bytes", &[0xff; 16]),
            ("wire type 7 does not exist", &[0x0f]),
            ("field number zero is invalid", &[0x00, 0x01]),
            ("leader length runs past the end", &[0x12, 0x0a, 0x08]),
            ("end group without start group", &[0x0c]),
        ];
        for (why, bytes) in cases {
            assert!(
                LogEntry::decode(*bytes).is_err(),
                "{why}: decoding {bytes:02x?} should fail"
            );
        }
    }

    #[test]
    fn descriptor_set_describes_log_proto() {
        /// The two fields of `FileDescriptorProto` this test reads; prost skips the rest.
        #[derive(Clone, PartialEq, Message)]
        struct FileDescriptor {
            #[prost(string, tag = "1")]
            name: String,
            #[prost(string, tag = "2")]
            package: String,
        }
        #[derive(Clone, PartialEq, Message)]
        struct FileDescriptorSet {
            #[prost(message, repeated, tag = "1")]
            file: Vec<FileDescriptor>,
        }

        let set =
            FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("build.rs wrote a valid set");
        let log = set
            .file
            .iter()
            .find(|file| file.name == "missive/v1/log.proto")
            .expect("log.proto is compiled into the set");
        assert_eq!(log.package, "missive.v1");
        assert!(
            set.file
                .iter()
                .any(|file| file.name == "missive/v1/raft.proto"),
            "raft.proto is compiled into the set"
        );
    }

    proptest! {
        /// Decoding is total: any bytes give a value or an error, never a panic.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = LogEntry::decode(bytes.as_slice());
        }
    }
}
