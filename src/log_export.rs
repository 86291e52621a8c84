//! `missive log export`: a conversation's history, or what concerns one
//! user, as JSON lines — what a compliance request or a migration needs.
//!
//! The history is what the chat state machine makes of the log: each
//! partition involved is rebuilt offline from the log (snapshot, then every
//! record, through the real state machine: `missive_api::offline`) into a
//! temporary store, and the conversation's stored events are read from it.
//! So an export shows exactly what the service shows — in particular a
//! message deleted for everyone appears as sent with `"deleted": true` and
//! no content, followed by its deletion: the state machine removes the body
//! from the message, from the event that sent it and from every edit, and
//! the export never reads the body from the raw command in the log.
//!
//! One line per event, in seq order: `index` (log index of the command),
//! `seq`, `timestamp_ms`, `time`, `actor`, `conversation_id`, `type`, and
//! the event's fields. `--user` exports, from every conversation the user
//! is or was in: the user's messages (and their edits, deletions,
//! reactions), the user's receipts, and every membership change; then the
//! user's key publications (public keys only) from the log of the user's
//! partition.
//!
//! Receipts and key publications are not conversation events in the
//! projections (receipts are watermarks, keys a directory), so their
//! history is read from the commands in the log: a receipt line is the
//! mark as asked (`up_to`), which the state machine applies as a watermark
//! that only moves forward.

use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use missive_api::ids;
use missive_api::offline::{DEFAULT_BATCH, Source, StopAt, rebuild_partition};
use missive_api::query;
use missive_log::fs::StdFs;
use missive_log::verify::{self, Problem};
use missive_proto::v1 as pb;
use missive_proto::v1::chat_command::Op;
use missive_proto::v1::chat_event::Kind;
use missive_proto::v1::{LogEntry, log_entry::Payload};
use missive_raft::backup::hex;
use prost::Message as _;
use serde_json::{Value, json};

use crate::time_fmt::rfc3339_ms;

/// Payload bound used when scanning the log; the log's default.
const MAX_RECORD_BYTES: u32 = 16 << 20;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A stopped node's data directory, or a backup.
    #[arg(long)]
    data: PathBuf,
    /// Export this conversation's whole history.
    #[arg(long, conflicts_with = "user", required_unless_present = "user")]
    conversation: Option<String>,
    /// Export what concerns this user.
    #[arg(long)]
    user: Option<String>,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A directory removed when dropped: the rebuilt stores.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(args: ExportArgs) -> Result<ExitCode> {
    let source =
        Source::open(&args.data).with_context(|| format!("reading {}", args.data.display()))?;
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "missive-export-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )));
    std::fs::create_dir_all(&scratch.0)
        .with_context(|| format!("creating {}", scratch.0.display()))?;
    let mut lines = Vec::new();
    match (&args.conversation, &args.user) {
        (Some(conv), None) => {
            let p = ids::partition(conv, source.partitions());
            let store = rebuild(&source, p, &scratch.0)?;
            conversation_lines(&store, conv, |_| true, &mut lines)?;
            if lines.is_empty() {
                bail!("no conversation {conv:?} in {}", args.data.display());
            }
            receipts(&source.log_dir(p), conv, None, &mut lines)?;
            lines.sort_by_key(|l| l["index"].as_u64());
        }
        (None, Some(user)) => {
            for p in 0..source.partitions() {
                let store = rebuild(&source, p, &scratch.0)?;
                let convs = query::user_conversations(&store, user)
                    .map_err(|e| anyhow::anyhow!("reading partition {p}: {e}"))?;
                for (conv, _) in convs {
                    let mut conv_lines = Vec::new();
                    conversation_lines(&store, &conv, |e| concerns(e, user), &mut conv_lines)?;
                    receipts(&source.log_dir(p), &conv, Some(user), &mut conv_lines)?;
                    conv_lines.sort_by_key(|l| l["index"].as_u64());
                    lines.extend(conv_lines);
                }
            }
            let p = ids::partition(user, source.partitions());
            key_publications(&source.log_dir(p), user, &mut lines)?;
        }
        _ => bail!("give either --conversation or --user"),
    }
    let sink: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let mut out = BufWriter::new(sink);
    for line in &lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Partition `p` of `source` rebuilt through the chat state machine into
/// a store under `scratch`.
fn rebuild(
    source: &Source,
    p: u32,
    scratch: &Path,
) -> Result<std::sync::Arc<missive_api::store::Store>> {
    let out = scratch.join(format!("p{p}.redb"));
    let (sm, _) = rebuild_partition(source, p, StopAt::End, &out, DEFAULT_BATCH, &|_| {})
        .with_context(|| format!("rebuilding partition {p} from the log"))?;
    sm.store()
        .map_err(|e| anyhow::anyhow!("opening the rebuilt store of partition {p}: {e}"))
}

/// Whether an event of a conversation concerns `user`: membership changes
/// always; messages, edits, deletions and reactions the user made; the
/// user's receipts.
fn concerns(e: &pb::ChatEvent, user: &str) -> bool {
    match &e.kind {
        Some(Kind::ConversationCreated(_) | Kind::MembersChanged(_) | Kind::RoleChanged(_)) => true,
        // Receipts come from the log (see `receipts`).
        Some(Kind::Receipt(_)) => false,
        _ => e.actor == user,
    }
}

/// Appends the JSON lines of `conv`'s events that `keep` accepts.
fn conversation_lines(
    store: &missive_api::store::Store,
    conv: &str,
    keep: impl Fn(&pb::ChatEvent) -> bool,
    lines: &mut Vec<Value>,
) -> Result<()> {
    let txn = store
        .read()
        .map_err(|e| anyhow::anyhow!("reading the rebuilt store: {e}"))?;
    let Some(head) = query::conversation_record(&txn, conv)
        .map_err(|e| anyhow::anyhow!("reading conversation {conv}: {e}"))?
    else {
        return Ok(());
    };
    let events = query::events(&txn, conv, 1, head.last_seq, usize::MAX)
        .map_err(|e| anyhow::anyhow!("reading the events of {conv}: {e}"))?;
    for stored in events {
        let Some(event) = stored.event else { continue };
        if keep(&event) {
            lines.push(event_line(stored.index, &event));
        }
    }
    Ok(())
}

/// A message body as JSON (binary as hex); `null` when there is none.
fn content(c: Option<&pb::Content>) -> Value {
    let Some(c) = c else { return Value::Null };
    json!({
        "text": c.text,
        "ciphertexts": c.ciphertexts.iter().map(|t| json!({
            "user": t.user, "device": t.device, "body_hex": hex(&t.body),
        })).collect::<Vec<_>>(),
        "media": c.media.as_ref().map(|m| json!({
            "media_id": m.media_id, "mime_type": m.mime_type, "size": m.size, "name": m.name,
        })),
    })
}

/// One event as a JSON line.
fn event_line(index: u64, e: &pb::ChatEvent) -> Value {
    let mut v = json!({
        "index": index,
        "seq": e.seq,
        "timestamp_ms": e.timestamp_ms,
        "time": rfc3339_ms(e.timestamp_ms),
        "actor": e.actor,
        "conversation_id": e.conversation_id,
    });
    let (kind, fields) = match &e.kind {
        Some(Kind::ConversationCreated(c)) => (
            "conversation_created",
            json!({
                "kind": c.kind,
                "name": c.name,
                "members": c.members.iter().map(|m| json!({"user": m.user, "role": m.role})).collect::<Vec<_>>(),
            }),
        ),
        Some(Kind::MembersChanged(m)) => (
            "members_changed",
            json!({
                "added": m.added.iter().map(|m| json!({"user": m.user, "role": m.role})).collect::<Vec<_>>(),
                "removed": m.removed,
            }),
        ),
        Some(Kind::RoleChanged(r)) => ("role_changed", json!({ "user": r.user, "role": r.role })),
        Some(Kind::MessageSent(m)) => (
            "message_sent",
            json!({
                "sender": m.sender,
                "sender_device": m.sender_device,
                "client_msg_id": m.client_msg_id,
                "reply_to": m.reply_to,
                "deleted": m.deleted,
                // Absent for a message deleted for everyone: the state
                // machine removed the body.
                "content": content(m.content.as_ref()),
            }),
        ),
        Some(Kind::MessageEdited(m)) => (
            "message_edited",
            json!({ "target": m.target, "content": content(m.content.as_ref()) }),
        ),
        Some(Kind::MessageDeleted(m)) => (
            "message_deleted",
            json!({ "target": m.target, "body": "deleted for everyone" }),
        ),
        Some(Kind::ReactionSet(r)) => (
            "reaction_set",
            json!({ "target": r.target, "emoji": r.emoji }),
        ),
        Some(Kind::Receipt(r)) => (
            "receipt",
            json!({ "user": r.user, "delivered_up_to": r.delivered_up_to, "read_up_to": r.read_up_to }),
        ),
        Some(Kind::Presence(p)) => ("presence", json!({ "user": p.user, "online": p.online })),
        Some(Kind::Typing(_)) => ("typing", json!({})),
        Some(Kind::PushDeadLettered(d)) => (
            "push_dead_lettered",
            json!({ "user": d.user, "device": d.device }),
        ),
        None => ("unknown", json!({})),
    };
    v["type"] = json!(kind);
    if let (Value::Object(obj), Value::Object(f)) = (&mut v, fields) {
        obj.extend(f);
    }
    v
}

/// Calls `f` with every chat command in the log directory `log_dir`, in
/// log order, with its index and timestamp. Fails on corruption.
fn for_each_command(log_dir: &Path, mut f: impl FnMut(u64, u64, &pb::ChatCommand)) -> Result<()> {
    let report = verify::read_dir(&StdFs, log_dir, MAX_RECORD_BYTES, |h, payload| {
        if let Ok(entry) = LogEntry::decode(payload)
            && let Some(Payload::Command(c)) = entry.payload
            && let Ok(cmd) = pb::ChatCommand::decode(c.body.as_slice())
        {
            f(h.index, h.timestamp, &cmd);
        }
        ControlFlow::Continue(())
    })
    .with_context(|| format!("reading {}", log_dir.display()))?;
    if let Some(Problem::Corruption {
        segment,
        position,
        kind,
    }) = report.problem
    {
        bail!(
            "corruption in {} at byte {position}: {kind}",
            segment.display()
        );
    }
    Ok(())
}

/// Appends the receipts marked in conversation `conv` (by `user` only, if
/// given), read from the log: receipts are watermarks in the projections,
/// not events, so their history is the log's.
fn receipts(log_dir: &Path, conv: &str, user: Option<&str>, lines: &mut Vec<Value>) -> Result<()> {
    for_each_command(log_dir, |index, ts, cmd| {
        if let Some(Op::Receipt(r)) = &cmd.op
            && r.conversation_id == conv
            && user.is_none_or(|u| u == cmd.actor)
        {
            let kind = match pb::ReceiptKind::try_from(r.kind) {
                Ok(pb::ReceiptKind::Delivered) => "delivered",
                Ok(pb::ReceiptKind::Read) => "read",
                _ => "unspecified",
            };
            lines.push(json!({
                "index": index,
                "timestamp_ms": ts,
                "time": rfc3339_ms(ts),
                "actor": cmd.actor,
                "device": cmd.device,
                "conversation_id": conv,
                "type": "receipt",
                "kind": kind,
                "up_to": r.up_to,
            }));
        }
    })
}

/// Appends `user`'s key publications, read from the log of the user's
/// partition: public keys only (identity key, signed prekey and its
/// signature, and how many one-time keys were added — never a private key,
/// which the service never receives).
fn key_publications(log_dir: &Path, user: &str, lines: &mut Vec<Value>) -> Result<()> {
    for_each_command(log_dir, |index, ts, cmd| {
        if cmd.actor == user
            && let Some(Op::PublishKeys(k)) = &cmd.op
        {
            lines.push(json!({
                "index": index,
                "timestamp_ms": ts,
                "time": rfc3339_ms(ts),
                "actor": cmd.actor,
                "device": cmd.device,
                "type": "keys_published",
                "identity_key": hex(&k.identity_key),
                "signed_prekey_id": k.signed_prekey_id,
                "signed_prekey": hex(&k.signed_prekey),
                "signed_prekey_signature": hex(&k.signed_prekey_signature),
                "one_time_keys_added": k.one_time_keys.len(),
                "last_resort_key_set": k.last_resort_key.is_some(),
            }));
        }
    })
}
