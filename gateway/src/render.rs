//! ChatService answers and events as the JSON the WebSocket protocol sends
//! (docs/protocol.md, "Objects"). Protobuf types stop here: nothing past this
//! edge sees them.
//!
//! Field names are the .proto names in snake_case; bytes are standard base64;
//! enums are lowercase words; 64-bit integers are JSON numbers (seqs,
//! timestamps and key ids stay far below 2^53).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use missive_proto::v1 as pb;
use missive_proto::v1::chat_event::Kind;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> Value {
    Value::String(STANDARD.encode(bytes))
}

fn role(r: pb::Role) -> &'static str {
    match r {
        pb::Role::Member => "member",
        pb::Role::Admin => "admin",
        pb::Role::Unspecified => "unspecified",
    }
}

fn kind(k: pb::ConversationKind) -> &'static str {
    match k {
        pb::ConversationKind::Direct => "direct",
        pb::ConversationKind::Group => "group",
        pb::ConversationKind::Unspecified => "unspecified",
    }
}

fn member(m: &pb::Member) -> Value {
    json!({ "user": m.user, "role": role(m.role()) })
}

pub fn conversation(c: &pb::Conversation) -> Value {
    json!({
        "conversation_id": c.conversation_id,
        "kind": kind(c.kind()),
        "name": c.name,
        "members": c.members.iter().map(member).collect::<Vec<_>>(),
        "created_ms": c.created_ms,
        "last_seq": c.last_seq,
    })
}

fn media(m: &pb::MediaRef) -> Value {
    json!({ "media_id": m.media_id, "mime_type": m.mime_type, "size": m.size, "name": m.name })
}

fn content(c: Option<&pb::Content>) -> Value {
    let Some(c) = c else { return Value::Null };
    json!({
        "text": c.text,
        "ciphertexts": c.ciphertexts.iter().map(|x| json!({
            "user": x.user, "device": x.device, "body": b64(&x.body),
        })).collect::<Vec<_>>(),
        "media": c.media.as_ref().map(media),
    })
}

pub fn message(m: &pb::Message) -> Value {
    json!({
        "conversation_id": m.conversation_id,
        "seq": m.seq,
        "sender": m.sender,
        "sender_device": m.sender_device,
        "client_msg_id": m.client_msg_id,
        "sent_ms": m.sent_ms,
        "content": content(m.content.as_ref()),
        "reply_to": m.reply_to,
        "edited_ms": m.edited_ms,
        "deleted": m.deleted,
        "reactions": m.reactions.iter().map(|r| json!({ "user": r.user, "emoji": r.emoji }))
            .collect::<Vec<_>>(),
    })
}

fn presence(p: &pb::PresenceChanged) -> Value {
    json!({ "user": p.user, "online": p.online, "last_seen_ms": p.last_seen_ms })
}

fn dead_letter(d: &pb::DeadLetter) -> Value {
    json!({
        "index": d.index,
        "conversation_id": d.conversation_id,
        "seq": d.seq,
        "sender": d.sender,
        "user": d.user,
        "device": d.device,
        "url": d.url,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "failed_ms": d.failed_ms,
    })
}

/// An event: its header, `kind` naming what happened, and the details under
/// a field of the same name (`{"kind":"typing","typing":{...}}`).
pub fn event(e: &pb::ChatEvent) -> Value {
    let (name, body) = match &e.kind {
        Some(Kind::ConversationCreated(c)) => ("conversation_created", conversation(c)),
        Some(Kind::MembersChanged(m)) => (
            "members_changed",
            json!({
                "added": m.added.iter().map(member).collect::<Vec<_>>(),
                "removed": m.removed,
            }),
        ),
        Some(Kind::RoleChanged(r)) => (
            "role_changed",
            json!({ "user": r.user, "role": role(r.role()) }),
        ),
        Some(Kind::MessageSent(m)) => ("message_sent", message(m)),
        Some(Kind::MessageEdited(m)) => (
            "message_edited",
            json!({ "target": m.target, "content": content(m.content.as_ref()) }),
        ),
        Some(Kind::MessageDeleted(m)) => ("message_deleted", json!({ "target": m.target })),
        Some(Kind::ReactionSet(r)) => (
            "reaction_set",
            json!({ "target": r.target, "emoji": r.emoji }),
        ),
        Some(Kind::Receipt(r)) => (
            "receipt",
            json!({
                "user": r.user,
                "delivered_up_to": r.delivered_up_to,
                "read_up_to": r.read_up_to,
            }),
        ),
        Some(Kind::Presence(p)) => ("presence", presence(p)),
        Some(Kind::Typing(t)) => ("typing", json!({ "user": t.user, "typing": t.typing })),
        Some(Kind::PushDeadLettered(d)) => ("push_dead_lettered", dead_letter(d)),
        // A kind newer than this gateway: forwarded without details rather
        // than dropped, so the client's seq stays gapless.
        None => ("unknown", json!({})),
    };
    json!({
        "conversation_id": e.conversation_id,
        "seq": e.seq,
        "timestamp_ms": e.timestamp_ms,
        "actor": e.actor,
        "kind": name,
        name: body,
    })
}

pub fn event_ack(a: &pb::EventAck) -> Value {
    json!({ "conversation_id": a.conversation_id, "seq": a.seq, "timestamp_ms": a.timestamp_ms })
}

pub fn send_response(r: &pb::SendResponse) -> Value {
    json!({ "seq": r.seq, "timestamp_ms": r.timestamp_ms, "duplicate": r.duplicate })
}

pub fn message_status(r: &pb::MessageStatusResponse) -> Value {
    json!({
        "members": r.members.iter().map(|m| json!({
            "user": m.user,
            "delivered": m.delivered,
            "read": m.read,
            "delivered_up_to": m.delivered_up_to,
            "read_up_to": m.read_up_to,
        })).collect::<Vec<_>>(),
        "delivered_to_all": r.delivered_to_all,
        "read_by_all": r.read_by_all,
    })
}

pub fn history(r: &pb::HistoryResponse) -> Value {
    json!({ "messages": r.messages.iter().map(message).collect::<Vec<_>>(), "more": r.more })
}

pub fn inbox(r: &pb::InboxResponse) -> Value {
    json!({
        "entries": r.entries.iter().map(|e| json!({
            "conversation": e.conversation.as_ref().map(conversation),
            "last_message": e.last_message.as_ref().map(message),
            "unread": e.unread,
            "delivered_up_to": e.delivered_up_to,
            "read_up_to": e.read_up_to,
            "last_activity_ms": e.last_activity_ms,
        })).collect::<Vec<_>>(),
    })
}

pub fn presence_response(r: &pb::PresenceResponse) -> Value {
    json!({ "users": r.users.iter().map(presence).collect::<Vec<_>>() })
}

fn one_time_key(k: &pb::OneTimeKey) -> Value {
    json!({ "key_id": k.key_id, "public_key": b64(&k.public_key) })
}

pub fn claim_keys(r: &pb::ClaimKeysResponse) -> Value {
    json!({
        "bundles": r.bundles.iter().map(|b| json!({
            "user": b.user,
            "device": b.device,
            "identity_key": b64(&b.identity_key),
            "signed_prekey_id": b.signed_prekey_id,
            "signed_prekey": b64(&b.signed_prekey),
            "signed_prekey_signature": b64(&b.signed_prekey_signature),
            "one_time_key": b.one_time_key.as_ref().map(one_time_key),
            "last_resort": b.last_resort,
        })).collect::<Vec<_>>(),
    })
}

/// `media_upload`'s answer: where to PUT the bytes, until when, and
/// whether the object is stored already (the PUT may then be skipped).
pub fn media_upload(media_id: &str, g: &crate::media::Grant) -> Value {
    json!({
        "media_id": media_id,
        "upload_url": g.url,
        "expires_ms": g.expires_ms,
        "stored": g.stored,
    })
}

/// `media_url`'s answer: where to GET the bytes, and until when.
pub fn media_url(g: &crate::media::Grant) -> Value {
    json!({ "url": g.url, "expires_ms": g.expires_ms })
}

/// The answer of a call that has nothing more to say.
pub fn done() -> Value {
    json!({})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_kind_and_carries_it_under_that_name() {
        let e = pb::ChatEvent {
            conversation_id: "d-1".into(),
            seq: 3,
            timestamp_ms: 9,
            actor: "bob".into(),
            kind: Some(Kind::Typing(pb::Typing {
                user: "bob".into(),
                typing: true,
            })),
        };
        let v = event(&e);
        assert_eq!(v["kind"], "typing");
        assert_eq!(v["typing"]["typing"], true);
        assert_eq!(v["seq"], 3);
    }

    #[test]
    fn bytes_are_base64() {
        let c = pb::Content {
            ciphertexts: vec![pb::Ciphertext {
                user: "bob".into(),
                device: "d".into(),
                body: vec![0xab, 0xcd, 0xef],
            }],
            ..Default::default()
        };
        assert_eq!(content(Some(&c))["ciphertexts"][0]["body"], "q83v");
    }
}
