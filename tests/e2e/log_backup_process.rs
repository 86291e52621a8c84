//! `missive log backup`, `audit` and `export` as an operator runs them
//! against a real `missive serve` and real log directories:
//!
//! - an online backup taken while messages keep flowing verifies and
//!   audits clean, holds every message acknowledged before it began (read
//!   back through the real state machine by `export`), and a second backup
//!   into the same directory copies only what changed; the node records
//!   each partition's backup watermark, which bounds its retention;
//! - one byte changed in a sealed segment is found by `verify` and `audit`
//!   with its partition, segment file and byte position;
//! - a checkpoint written by an earlier audit catches a history rewritten
//!   with a valid chain;
//! - an export lists a conversation's events with the body of a message
//!   deleted for everyone absent; an offline backup of the stopped node
//!   audits clean, and one of a running node is refused.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use missive_log::{Log, Options, Record};
use missive_proto::v1 as pb;
use serde_json::Value;

use crate::support::{Client, Serve, client, missive, path, text};

async fn send(c: &mut Client, conv: &str, id: &str, body: &str) -> u64 {
    c.send(pb::SendRequest {
        conversation_id: conv.into(),
        client_msg_id: id.into(),
        content: Some(pb::Content {
            text: body.into(),
            ..Default::default()
        }),
        reply_to: 0,
    })
    .await
    .expect("send")
    .into_inner()
    .seq
}

async fn direct(c: &mut Client, peer: &str) -> String {
    c.create_direct(pb::CreateDirectRequest { peer: peer.into() })
        .await
        .expect("create a direct conversation")
        .into_inner()
        .conversation_id
}

fn export(data: &Path, what: &str, id: &str) -> (Vec<Value>, String) {
    let out = missive(&["log", "export", "--data", path(data), what, id]);
    assert!(out.status.success(), "export failed: {}", text(&out));
    let raw = String::from_utf8(out.stdout).expect("utf-8");
    let lines = raw
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    (lines, raw)
}

/// The `type` of each exported line, in order.
fn types(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l["type"].as_str().expect("type"))
        .collect()
}

fn backup_json(args: &[&str]) -> Value {
    let out = missive(args);
    assert!(out.status.success(), "backup failed: {}", text(&out));
    let raw = String::from_utf8(out.stdout).expect("utf-8");
    serde_json::from_str(raw.trim()).expect("the manifest as JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_under_write_load_holds_every_acknowledged_message_and_audits_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, to) = (dir.path().join("data"), dir.path().join("backup"));
    let serve = Serve::start(&data);
    let mut alice = client(&serve.grpc, "alice").await;
    let conv = direct(&mut alice, "bob").await;

    // A writer that keeps sending until told to stop, counting what was
    // acknowledged (seqs are gapless, so the count bounds the seqs).
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (acked, stop, conv) = (acked.clone(), stop.clone(), conv.clone());
        let mut alice = alice.clone();
        async move {
            let mut highest = 0;
            for i in 0..5_000u32 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                highest = send(&mut alice, &conv, &format!("m{i}"), &format!("message {i}")).await;
                acked.store(highest, Ordering::SeqCst);
            }
            highest
        }
    });
    while acked.load(Ordering::SeqCst) < 30 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let acked_before = acked.load(Ordering::SeqCst);
    let args = [
        "log",
        "backup",
        "--node",
        &serve.grpc,
        "--to",
        path(&to),
        "--json",
    ]
    .map(str::to_owned);
    let first = tokio::task::spawn_blocking(move || {
        backup_json(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("backup task");
    let acked_during = acked.load(Ordering::SeqCst);
    // More writes, then an incremental backup into the same directory.
    while acked.load(Ordering::SeqCst) < acked_during + 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let last = writer.await.expect("writer");
    assert!(last > acked_before, "writes went on around the backup");
    assert_eq!(first["kind"], "online");

    let audit = missive(&["log", "audit", "--backup", path(&to)]);
    assert!(audit.status.success(), "{}", text(&audit));
    assert!(text(&audit).contains("AUDIT OK"), "{}", text(&audit));
    for p in first["partitions"].as_array().expect("partitions") {
        let log = to
            .join("partitions")
            .join(p["partition"].to_string())
            .join("log");
        let verify = missive(&["log", "verify", path(&log)]);
        assert!(verify.status.success(), "{}", text(&verify));
    }
    let (lines, _) = export(&to, "--conversation", &conv);
    let sent: Vec<u64> = lines
        .iter()
        .filter(|l| l["type"] == "message_sent")
        .map(|l| l["seq"].as_u64().expect("seq"))
        .collect();
    for seq in 2..=acked_before {
        assert!(
            sent.contains(&seq),
            "message {seq}, acknowledged before the backup, is not in it"
        );
    }

    let second = backup_json(&[
        "log",
        "backup",
        "--node",
        &serve.grpc,
        "--to",
        path(&to),
        "--json",
    ]);
    let copied = second["bytes_copied"].as_u64().expect("bytes_copied");
    let skipped = second["bytes_skipped"].as_u64().expect("bytes_skipped");
    assert!(skipped > 0, "the second backup skipped nothing: {second}");
    let total: u64 = second["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["size"].as_u64().expect("size"))
        .sum();
    assert_eq!(copied + skipped, total);
    let audit = missive(&["log", "audit", "--backup", path(&to)]);
    assert!(audit.status.success(), "{}", text(&audit));
    // Each partition records what the backup holds: its log's retention
    // never deletes past it.
    for p in second["partitions"].as_array().expect("partitions") {
        let Some(index) = p["committed_index"].as_u64() else {
            continue;
        };
        let watermark = data
            .join("partitions")
            .join(p["partition"].to_string())
            .join("backup-watermark");
        let text = std::fs::read_to_string(&watermark).expect("a backup watermark");
        assert_eq!(
            text.lines().nth(1),
            Some(index.to_string().as_str()),
            "{text}"
        );
    }
    let _ = serve.stop();
}

/// A data directory with one partition whose log has small segments.
fn small_log(data: &Path, records: u64, tag: &str) -> Log {
    let dir = data.join("partitions").join("0").join("log");
    let log = Log::open(
        &dir,
        Options {
            segment_bytes: 2048,
            ..Options::default()
        },
    )
    .expect("open log");
    for i in 0..records {
        let payload = format!("{tag} record {i} ").repeat(8);
        log.append(&[Record {
            timestamp: 1_700_000_000_000 + i,
            payload: payload.as_bytes(),
        }])
        .expect("append");
    }
    log
}

#[test]
fn a_changed_byte_in_a_sealed_segment_is_found_by_verify_and_audit_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    drop(small_log(&data, 60, "original"));
    let log_dir = data.join("partitions/0/log");
    let first = log_dir.join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&first).expect("read segment");
    // A byte of the first record's payload (records start at byte 64, after
    // the segment header; payloads 64 bytes into a record).
    bytes[64 + 64 + 10] ^= 0x20;
    std::fs::write(&first, &bytes).expect("write segment");

    let verify = missive(&["log", "verify", path(&log_dir)]);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    let out = text(&verify);
    assert!(out.contains("00000000000000000000.seg at byte 64"), "{out}");

    let audit = missive(&["log", "audit", "--data", path(&data)]);
    assert_eq!(audit.status.code(), Some(1), "{}", text(&audit));
    let out = text(&audit);
    assert!(out.contains("partition   0"), "{out}");
    assert!(out.contains("00000000000000000000.seg at byte 64"), "{out}");
    assert!(out.contains("AUDIT FAILED"), "{out}");
}

#[test]
fn a_checkpoint_from_an_earlier_audit_catches_a_rewritten_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let checkpoint = dir.path().join("checkpoint.json");
    let log = small_log(&data, 40, "original");
    let audit = missive(&[
        "log",
        "audit",
        "--data",
        path(&data),
        "--write-checkpoint",
        path(&checkpoint),
    ]);
    assert!(audit.status.success(), "{}", text(&audit));
    assert!(text(&audit).contains("head index 39"), "{}", text(&audit));
    // History grows: the checkpoint still holds.
    log.append(&[Record {
        timestamp: 1_800_000_000_000,
        payload: b"later",
    }])
    .expect("append");
    drop(log);
    let audit = missive(&[
        "log",
        "audit",
        "--data",
        path(&data),
        "--checkpoint",
        path(&checkpoint),
    ]);
    assert!(audit.status.success(), "{}", text(&audit));
    assert!(
        text(&audit).contains("checkpoint at index 39 holds"),
        "{}",
        text(&audit)
    );
    // History rewritten with a valid chain: every record checks out on
    // its own, only the checkpoint can tell.
    std::fs::remove_dir_all(data.join("partitions/0/log")).expect("remove log");
    drop(small_log(&data, 45, "rewritten"));
    let audit = missive(&[
        "log",
        "audit",
        "--data",
        path(&data),
        "--checkpoint",
        path(&checkpoint),
    ]);
    assert_eq!(audit.status.code(), Some(1), "{}", text(&audit));
    assert!(
        text(&audit).contains("CHECKPOINT MISMATCH at index 39"),
        "{}",
        text(&audit)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_lists_the_conversation_with_the_deleted_body_absent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, to) = (dir.path().join("data"), dir.path().join("offline-backup"));
    let serve = Serve::start(&data);
    let mut alice = client(&serve.grpc, "alice").await;
    let mut bob = client(&serve.grpc, "bob").await;
    let conv = direct(&mut alice, "bob").await;
    let first = send(&mut alice, &conv, "a1", "first words").await;
    let secret = send(&mut alice, &conv, "a2", "words to take back").await;
    let third = send(&mut bob, &conv, "b1", "bob answers").await;
    alice
        .edit(pb::EditRequest {
            conversation_id: conv.clone(),
            seq: first,
            content: Some(pb::Content {
                text: "first words, edited".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("edit");
    alice
        .delete(pb::MessageRef {
            conversation_id: conv.clone(),
            seq: secret,
        })
        .await
        .expect("delete");
    bob.react(pb::ReactRequest {
        conversation_id: conv.clone(),
        seq: first,
        emoji: "👍".into(),
    })
    .await
    .expect("react");
    bob.mark_read(pb::ReceiptRequest {
        conversation_id: conv.clone(),
        up_to: third,
    })
    .await
    .expect("mark read");

    // A running node's directory is not backed up offline.
    let refused = missive(&["log", "backup", "--data", path(&data), "--to", path(&to)]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("--node"), "{}", text(&refused));
    let _ = serve.stop();

    let (lines, raw) = export(&data, "--conversation", &conv);
    assert_eq!(
        types(&lines),
        [
            "conversation_created",
            "message_sent",
            "message_sent",
            "message_sent",
            "message_edited",
            "message_deleted",
            "reaction_set",
            "receipt",
        ],
        "{raw}"
    );
    for l in &lines {
        // Receipts are watermarks, not conversation events: no seq.
        let seq_ok = l["type"] == "receipt" || l["seq"].as_u64().is_some();
        assert!(l["index"].as_u64().is_some() && seq_ok, "{l}");
        assert!(l["actor"].as_str().is_some_and(|a| !a.is_empty()), "{l}");
    }
    assert!(
        !raw.contains("words to take back"),
        "a deleted body was exported: {raw}"
    );
    let deleted = lines
        .iter()
        .find(|l| l["type"] == "message_sent" && l["seq"] == secret)
        .expect("the deleted message's line");
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["content"], Value::Null);
    assert!(raw.contains("first words, edited"), "{raw}");

    // Bob's export: his message, reaction and receipt, and the membership
    // change; none of alice's messages.
    let (bobs, raw) = export(&data, "--user", "bob");
    assert_eq!(
        types(&bobs),
        [
            "conversation_created",
            "message_sent",
            "reaction_set",
            "receipt"
        ],
        "{raw}"
    );
    assert!(!raw.contains("first words"), "{raw}");

    // The stopped node backs up offline, and the backup audits clean.
    let manifest = backup_json(&[
        "log",
        "backup",
        "--data",
        path(&data),
        "--to",
        path(&to),
        "--json",
    ]);
    assert_eq!(manifest["kind"], "offline");
    let audit = missive(&["log", "audit", "--backup", path(&to)]);
    assert!(audit.status.success(), "{}", text(&audit));
    let (from_backup, _) = export(&to, "--conversation", &conv);
    assert_eq!(from_backup, lines);
}
