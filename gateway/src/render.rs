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
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

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

// Messages and events are written straight into the frame's text through
// `Serialize`, with no `Value` tree built first: a gateway renders one per
// recipient of every message, and building the tree (a string and a node per
// field) cost more than writing the text. Other answers are rare and stay
// `Value`s.

/// A message as JSON.
#[derive(Debug)]
struct MessageJson<'a>(&'a pb::Message);

/// A message's content as JSON.
struct ContentJson<'a>(&'a pb::Content);

struct CiphertextJson<'a>(&'a pb::Ciphertext);

struct MediaJson<'a>(&'a pb::MediaRef);

struct ReactionJson<'a>(&'a pb::Reaction);

impl Serialize for MessageJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut map = s.serialize_map(Some(11))?;
        map.serialize_entry("conversation_id", &m.conversation_id)?;
        map.serialize_entry("seq", &m.seq)?;
        map.serialize_entry("sender", &m.sender)?;
        map.serialize_entry("sender_device", &m.sender_device)?;
        map.serialize_entry("client_msg_id", &m.client_msg_id)?;
        map.serialize_entry("sent_ms", &m.sent_ms)?;
        map.serialize_entry("content", &m.content.as_ref().map(ContentJson))?;
        map.serialize_entry("reply_to", &m.reply_to)?;
        map.serialize_entry("edited_ms", &m.edited_ms)?;
        map.serialize_entry("deleted", &m.deleted)?;
        map.serialize_entry(
            "reactions",
            &m.reactions.iter().map(ReactionJson).collect::<Vec<_>>(),
        )?;
        map.end()
    }
}

impl Serialize for ContentJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("text", &c.text)?;
        map.serialize_entry(
            "ciphertexts",
            &c.ciphertexts.iter().map(CiphertextJson).collect::<Vec<_>>(),
        )?;
        map.serialize_entry("media", &c.media.as_ref().map(MediaJson))?;
        map.end()
    }
}

impl Serialize for CiphertextJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("user", &x.user)?;
        map.serialize_entry("device", &x.device)?;
        map.serialize_entry("body", &STANDARD.encode(&x.body))?;
        map.end()
    }
}

impl Serialize for MediaJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("media_id", &m.media_id)?;
        map.serialize_entry("mime_type", &m.mime_type)?;
        map.serialize_entry("size", &m.size)?;
        map.serialize_entry("name", &m.name)?;
        map.end()
    }
}

impl Serialize for ReactionJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("user", &self.0.user)?;
        map.serialize_entry("emoji", &self.0.emoji)?;
        map.end()
    }
}

/// `Value` of what serializes to a JSON object with string keys, which
/// cannot fail.
fn value(x: impl Serialize) -> Value {
    serde_json::to_value(x).unwrap_or(Value::Null)
}

#[cfg(test)]
fn content(c: Option<&pb::Content>) -> Value {
    value(c.map(ContentJson))
}

pub fn message(m: &pb::Message) -> Value {
    value(MessageJson(m))
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
pub fn event(e: &pb::ChatEvent) -> EventJson<'_> {
    EventJson(e)
}

/// An event as JSON (see [`event`]).
#[derive(Debug)]
pub struct EventJson<'a>(&'a pb::ChatEvent);

impl Serialize for EventJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut map = s.serialize_map(Some(6))?;
        map.serialize_entry("conversation_id", &e.conversation_id)?;
        map.serialize_entry("seq", &e.seq)?;
        map.serialize_entry("timestamp_ms", &e.timestamp_ms)?;
        map.serialize_entry("actor", &e.actor)?;
        let name = match &e.kind {
            Some(Kind::ConversationCreated(_)) => "conversation_created",
            Some(Kind::MembersChanged(_)) => "members_changed",
            Some(Kind::RoleChanged(_)) => "role_changed",
            Some(Kind::MessageSent(_)) => "message_sent",
            Some(Kind::MessageEdited(_)) => "message_edited",
            Some(Kind::MessageDeleted(_)) => "message_deleted",
            Some(Kind::ReactionSet(_)) => "reaction_set",
            Some(Kind::Receipt(_)) => "receipt",
            Some(Kind::Presence(_)) => "presence",
            Some(Kind::Typing(_)) => "typing",
            Some(Kind::PushDeadLettered(_)) => "push_dead_lettered",
            // A kind newer than this gateway: forwarded without details
            // rather than dropped, so the client's seq stays gapless.
            None => "unknown",
        };
        map.serialize_entry("kind", name)?;
        match &e.kind {
            Some(Kind::MessageSent(m)) => map.serialize_entry(name, &MessageJson(m))?,
            other => map.serialize_entry(name, &details(other.as_ref()))?,
        }
        map.end()
    }
}

/// An event's details as a `Value` (a sent message's are written directly).
fn details(kind: Option<&Kind>) -> Value {
    match kind {
        Some(Kind::ConversationCreated(c)) => conversation(c),
        Some(Kind::MembersChanged(m)) => json!({
            "added": m.added.iter().map(member).collect::<Vec<_>>(),
            "removed": m.removed,
        }),
        Some(Kind::RoleChanged(r)) => json!({ "user": r.user, "role": role(r.role()) }),
        Some(Kind::MessageSent(m)) => message(m),
        Some(Kind::MessageEdited(m)) => json!({
            "target": m.target,
            "content": value(m.content.as_ref().map(ContentJson)),
        }),
        Some(Kind::MessageDeleted(m)) => json!({ "target": m.target }),
        Some(Kind::ReactionSet(r)) => json!({ "target": r.target, "emoji": r.emoji }),
        Some(Kind::Receipt(r)) => json!({
            "user": r.user,
            "delivered_up_to": r.delivered_up_to,
            "read_up_to": r.read_up_to,
        }),
        Some(Kind::Presence(p)) => presence(p),
        Some(Kind::Typing(t)) => json!({ "user": t.user, "typing": t.typing }),
        Some(Kind::PushDeadLettered(d)) => dead_letter(d),
        None => json!({}),
    }
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

fn b64(bytes: &[u8]) -> Value {
    Value::String(STANDARD.encode(bytes))
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
        let v = value(event(&e));
        assert_eq!(v["kind"], "typing");
        assert_eq!(v["typing"]["typing"], true);
        assert_eq!(v["seq"], 3);
    }

    #[test]
    fn a_sent_message_frame_carries_every_field() {
        let m = pb::Message {
            conversation_id: "d-1".into(),
            seq: 7,
            sender: "alice".into(),
            sender_device: "phone".into(),
            client_msg_id: "c1".into(),
            sent_ms: 11,
            content: Some(pb::Content {
                text: "hi \"there\"".into(),
                ciphertexts: vec![pb::Ciphertext {
                    user: "bob".into(),
                    device: "d".into(),
                    body: vec![0xab, 0xcd, 0xef],
                }],
                media: Some(pb::MediaRef {
                    media_id: "m1".into(),
                    mime_type: "image/png".into(),
                    size: 5,
                    name: "a.png".into(),
                }),
            }),
            reply_to: 3,
            reactions: vec![pb::Reaction {
                user: "bob".into(),
                emoji: "👍".into(),
            }],
            ..Default::default()
        };
        let e = pb::ChatEvent {
            conversation_id: "d-1".into(),
            seq: 7,
            timestamp_ms: 11,
            actor: "alice".into(),
            kind: Some(Kind::MessageSent(m.clone())),
        };
        let text = crate::protocol::event(&event(&e), "tok");
        let v: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["type"], "event");
        assert_eq!(v["token"], "tok");
        assert_eq!(v["event"]["kind"], "message_sent");
        assert_eq!(v["event"]["seq"], 7);
        // The same object history answers with.
        assert_eq!(v["event"]["message_sent"], message(&m));
        let sent = &v["event"]["message_sent"];
        assert_eq!(sent["content"]["text"], "hi \"there\"");
        assert_eq!(sent["content"]["ciphertexts"][0]["body"], "q83v");
        assert_eq!(sent["content"]["media"]["mime_type"], "image/png");
        assert_eq!(sent["reactions"][0]["emoji"], "👍");
        assert_eq!(sent["reply_to"], 3);
        assert_eq!(sent["deleted"], false);
        // No content (a deleted message) is null.
        let gone = pb::Message {
            content: None,
            deleted: true,
            ..m
        };
        assert_eq!(message(&gone)["content"], Value::Null);
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
