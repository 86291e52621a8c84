//! `missive log replay`, `restore` and `diff` against a history written
//! through a real `missive serve` process:
//!
//! - replaying a backup of the stopped node to its end rebuilds exactly
//!   the node's projections (`diff` finds nothing);
//! - a restore of the backup to index N equals a replay of the node's
//!   directory to N and carries a new epoch;
//! - the restored directory starts with `missive serve` and serves the
//!   history up to N and nothing after, and takes new messages after it;
//! - `diff` names a row planted in one store, with its table and key.

use std::path::Path;

use missive_api::store::{self, Store};
use missive_proto::v1 as pb;
use missive_proto::v1::chat_command::Op;
use prost::Message;

use crate::support::{Client, Serve, client, free_addr, missive, path, text};

async fn send(c: &mut Client, conv: &str, id: &str) -> u64 {
    c.send(pb::SendRequest {
        conversation_id: conv.into(),
        client_msg_id: id.into(),
        content: Some(pb::Content {
            text: format!("message {id}"),
            ..Default::default()
        }),
        reply_to: 0,
    })
    .await
    .expect("send")
    .into_inner()
    .seq
}

async fn history(c: &mut Client, conv: &str) -> Vec<String> {
    c.history(pb::HistoryRequest {
        conversation_id: conv.into(),
        ..Default::default()
    })
    .await
    .expect("history")
    .into_inner()
    .messages
    .into_iter()
    .map(|m| m.content.map(|c| c.text).unwrap_or_default())
    .collect()
}

/// `missive log diff --data a --against b`.
fn diff(a: &Path, b: &Path) -> std::process::Output {
    missive(&["log", "diff", "--data", path(a), "--against", path(b)])
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The partition and log index of the send with `client_msg_id`.
fn index_of_send(data: &Path, client_msg_id: &str) -> (u32, u64) {
    for p in 0..2u32 {
        let dir = data.join("partitions").join(p.to_string()).join("log");
        let out = missive(&["log", "dump", "--json", dir.to_str().expect("utf-8 path")]);
        assert!(out.status.success(), "{}", text(&out));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let Some(body) = v["entry"]["body_hex"].as_str() else {
                continue;
            };
            let cmd = pb::ChatCommand::decode(unhex(body).as_slice()).expect("a chat command");
            if let Some(Op::Send(s)) = cmd.op
                && s.client_msg_id == client_msg_id
            {
                return (p, v["index"].as_u64().expect("an index"));
            }
        }
    }
    panic!("no send {client_msg_id} in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_restore_and_diff_agree_with_the_node_that_wrote_the_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let serve = Serve::start_with(&data, &free_addr(), &["--partitions", "2"]);
    let mut alice = client(&serve.grpc, "alice").await;
    let conv = alice
        .create_direct(pb::CreateDirectRequest { peer: "bob".into() })
        .await
        .expect("create a direct conversation")
        .into_inner()
        .conversation_id;
    let mut seqs = Vec::new();
    for k in 1..=6 {
        seqs.push(send(&mut alice, &conv, &format!("m{k}")).await);
    }
    drop(alice);
    let (ok, out) = serve.stop();
    assert!(ok, "missive serve exited with an error:\n{out}");

    let backup = dir.path().join("backup");
    let out = missive(&[
        "log",
        "backup",
        "--data",
        path(&data),
        "--to",
        path(&backup),
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // Replay of the backup to the end equals the node's projections.
    let replayed = dir.path().join("replayed");
    let out = missive(&[
        "log",
        "replay",
        "--data",
        path(&backup),
        "--out",
        path(&replayed),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("events/s"), "{}", text(&out));
    let out = diff(&replayed, &data);
    assert!(
        out.status.success(),
        "replay differs from the node:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("no difference"), "{}", text(&out));

    // Restore to the index of m3 equals a replay to it, with a new epoch.
    let (_, n) = index_of_send(&data, "m3");
    let n = n.to_string();
    let replayed_n = dir.path().join("replayed-n");
    let out = missive(&[
        "log",
        "replay",
        "--data",
        path(&data),
        "--to-index",
        &n,
        "--out",
        path(&replayed_n),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let restored = dir.path().join("restored");
    let internal = free_addr();
    let out = missive(&[
        "log",
        "restore",
        path(&backup),
        "--to-index",
        &n,
        "--data",
        path(&restored),
        "--advertise",
        &internal,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = diff(&restored, &replayed_n);
    assert!(
        out.status.success(),
        "restore differs from the replay:\n{}",
        text(&out)
    );
    let report = text(&out);
    for line in report.lines().filter(|l| l.starts_with("partition ")) {
        let epochs = line
            .split("epoch ")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .expect("an epoch pair");
        let (new, old) = epochs.split_once(" vs ").expect("two epochs");
        assert_eq!(old, "0", "{line}");
        assert!(
            new.parse::<u64>().expect("a number") > 0,
            "no new epoch: {line}"
        );
    }
    // …and differs from the node's full history by the later messages.
    let out = diff(&restored, &data);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("only in --against"), "{}", text(&out));

    // The restored directory serves the history up to m3, and goes on.
    let serve = Serve::start_with(&restored, &internal, &["--partitions", "2"]);
    let mut bob = client(&serve.grpc, "bob").await;
    // History pages come newest first.
    assert_eq!(
        history(&mut bob, &conv).await,
        ["message m3", "message m2", "message m1"]
    );
    let seq = send(&mut bob, &conv, "after-restore").await;
    assert_eq!(
        seq,
        seqs[2] + 1,
        "the next event follows the restored history"
    );
    assert_eq!(history(&mut bob, &conv).await.len(), 4);
    drop(bob);
    let (ok, out) = serve.stop();
    assert!(ok, "missive serve exited with an error:\n{out}");
    let log = restored.join("partitions").join("0").join("log");
    let out = missive(&["log", "verify", path(&log)]);
    assert!(out.status.success(), "{}", text(&out));

    // A planted row is named by table and key.
    {
        let s = Store::open(
            &replayed
                .join("partitions")
                .join("0")
                .join("projections.redb"),
        )
        .expect("open the replayed store");
        let txn = s.write().expect("a write");
        txn.open_table(store::MEMBERS)
            .expect("members")
            .insert(b"planted\0mallory".as_slice(), b"".as_slice())
            .expect("insert");
        s.commit(txn, 0).expect("commit");
        s.sync().expect("sync");
    }
    let out = diff(&replayed, &data);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("members [planted/mallory]: only in --data"),
        "{}",
        text(&out)
    );
}
