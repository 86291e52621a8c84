//! `missive log verify` and `missive log dump` against real log directories:
//! they read what missive-log wrote, decode the envelopes, and name the
//! segment and byte of a corruption with a failing exit code.

use std::path::Path;
use std::process::{Command, Output};

use missive_log::{Log, Options, Record};
use missive_proto::v1::{Blank, Command as Cmd, LeaderId, LogEntry, log_entry::Payload};
use prost::Message;

fn missive(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_missive"))
        .args(args)
        .output()
        .expect("the missive binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Writes `n` command entries (after one blank) with small segments, so the
/// log has several sealed segments.
fn write_log(dir: &Path, n: u64) {
    let opts = Options {
        segment_bytes: 1024,
        ..Options::default()
    };
    let log = Log::open(dir, opts).expect("open log");
    let blank = LogEntry {
        envelope_version: missive_proto::ENVELOPE_VERSION,
        leader: Some(LeaderId {
            term: 1,
            node_id: 7,
        }),
        payload: Some(Payload::Blank(Blank {})),
    };
    log.append(&[Record {
        timestamp: 1_795_332_900_000,
        payload: &blank.encode_to_vec(),
    }])
    .expect("append");
    for i in 0..n {
        let entry = LogEntry {
            envelope_version: missive_proto::ENVELOPE_VERSION,
            leader: Some(LeaderId {
                term: 1,
                node_id: 7,
            }),
            payload: Some(Payload::Command(Cmd {
                body: vec![i as u8; 100],
                request_id: format!("req-{i}"),
            })),
        };
        let bytes = entry.encode_to_vec();
        log.append(&[Record {
            timestamp: 1_795_332_900_000 + i,
            payload: &bytes,
        }])
        .expect("append");
    }
}

#[test]
fn verify_reports_ok_with_segments_and_head_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 40);
    let out = missive(&["log", "verify", dir.path().to_str().expect("utf-8 path")]);
    let text = stdout(&out);
    assert!(out.status.success(), "verify failed: {text}");
    assert!(text.contains("OK: 41 records in"), "{text}");
    assert!(
        text.matches(".seg").count() > 2,
        "expected several segments: {text}"
    );
}

#[test]
fn dump_json_decodes_envelopes_within_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 10);
    let path = dir.path().to_str().expect("utf-8 path");
    let out = missive(&["log", "dump", path, "--from", "0", "--to", "3", "--json"]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["index"], 0);
    assert_eq!(lines[0]["entry"]["kind"], "blank");
    assert_eq!(lines[0]["time"], "2026-11-22T07:35:00.000Z");
    assert_eq!(lines[2]["entry"]["kind"], "command");
    assert_eq!(lines[2]["entry"]["request_id"], "req-1");
    assert_eq!(lines[2]["entry"]["leader"]["node_id"], 7);
    assert_eq!(lines[3]["index"], 3);

    let text = stdout(&missive(&["log", "dump", path, "--from", "5", "--to", "5"]));
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("command (term 1 node 7) request \"req-4\""),
        "{text}"
    );
}

#[test]
fn verify_names_segment_and_byte_of_a_flipped_byte_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 40);
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let victim = &segs[1];
    let mut bytes = std::fs::read(victim).expect("read segment");
    // Flip a payload byte of the first record (header 64 B + record header 64 B).
    bytes[64 + 64 + 5] ^= 0xFF;
    std::fs::write(victim, &bytes).expect("write segment");

    let out = missive(&["log", "verify", dir.path().to_str().expect("utf-8 path")]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let name = victim
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(text.contains("CORRUPTION"), "{text}");
    assert!(text.contains(&name), "{text}");
    assert!(text.contains("at byte 64:"), "{text}");
    // Verification changed nothing.
    assert_eq!(std::fs::read(victim).expect("read"), bytes);
}

#[test]
fn verify_of_a_missing_directory_is_a_clear_error() {
    let out = missive(&["log", "verify", "/nonexistent/missive-log"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot verify"));
}
