//! Request frames that map to one unary ChatService call: their fields
//! (parsed strictly: an unknown field is a `bad_request`, so a typo never
//! passes silently), the call, and the JSON of its answer.
//!
//! Every value is handed to ChatService as it came: validation (ids, sizes,
//! membership) is the node's, so the gateway and the gRPC surface can never
//! disagree about what is allowed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use missive_proto::v1 as pb;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tonic::Status;

use crate::media::{self, Media, MediaError};
use crate::nodes::{Bearer, Nodes};
use crate::protocol::{code, status_code};
use crate::render;

/// Every request type this module answers, as documented.
pub const TYPES: &[&str] = &[
    "create_direct",
    "create_group",
    "get_conversation",
    "add_members",
    "remove_members",
    "leave",
    "set_role",
    "send",
    "edit",
    "delete",
    "react",
    "mark_delivered",
    "mark_read",
    "message_status",
    "history",
    "inbox",
    "presence",
    "typing",
    "publish_keys",
    "claim_keys",
    "set_push_target",
    "media_upload",
    "media_url",
];

/// Why a request got no result: an `error` frame's code and message.
#[derive(Debug)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure {
            code: status_code(s.code()),
            message: s.message().to_owned(),
        }
    }
}

fn bad(message: impl Into<String>) -> Failure {
    Failure {
        code: code::BAD_REQUEST,
        message: message.into(),
    }
}

impl From<MediaError> for Failure {
    fn from(e: MediaError) -> Self {
        Failure {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

fn fields<T: DeserializeOwned>(body: Map<String, Value>) -> Result<T, Failure> {
    serde_json::from_value(Value::Object(body)).map_err(|e| bad(e.to_string()))
}

fn bytes(field: &str, s: &str) -> Result<Vec<u8>, Failure> {
    STANDARD
        .decode(s)
        .map_err(|e| bad(format!("{field}: not base64: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Peer {
    peer: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conv {
    conversation_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Members {
    conversation_id: String,
    users: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RoleIn {
    Member,
    Admin,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRole {
    conversation_id: String,
    user: String,
    role: RoleIn,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CiphertextIn {
    user: String,
    device: String,
    body: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaIn {
    media_id: String,
    #[serde(default)]
    mime_type: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentIn {
    #[serde(default)]
    text: String,
    #[serde(default)]
    ciphertexts: Vec<CiphertextIn>,
    #[serde(default)]
    media: Option<MediaIn>,
}

impl ContentIn {
    fn into_pb(self) -> Result<pb::Content, Failure> {
        let mut ciphertexts = Vec::with_capacity(self.ciphertexts.len());
        for c in self.ciphertexts {
            ciphertexts.push(pb::Ciphertext {
                body: bytes("ciphertexts.body", &c.body)?,
                user: c.user,
                device: c.device,
            });
        }
        Ok(pb::Content {
            text: self.text,
            ciphertexts,
            media: self.media.map(|m| pb::MediaRef {
                media_id: m.media_id,
                mime_type: m.mime_type,
                size: m.size,
                name: m.name,
            }),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Send {
    conversation_id: String,
    client_msg_id: String,
    content: ContentIn,
    #[serde(default)]
    reply_to: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    conversation_id: String,
    seq: u64,
    content: ContentIn,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MsgRef {
    conversation_id: String,
    seq: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct React {
    conversation_id: String,
    seq: u64,
    #[serde(default)]
    emoji: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Receipt {
    conversation_id: String,
    up_to: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct History {
    conversation_id: String,
    #[serde(default)]
    before: u64,
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Inbox {
    #[serde(default)]
    limit: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Presence {
    users: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Typing {
    conversation_id: String,
    typing: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyIn {
    key_id: u64,
    public_key: String,
}

impl KeyIn {
    fn into_pb(self, field: &str) -> Result<pb::OneTimeKey, Failure> {
        Ok(pb::OneTimeKey {
            key_id: self.key_id,
            public_key: bytes(field, &self.public_key)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishKeys {
    identity_key: String,
    signed_prekey_id: u64,
    signed_prekey: String,
    signed_prekey_signature: String,
    #[serde(default)]
    one_time_keys: Vec<KeyIn>,
    #[serde(default)]
    last_resort_key: Option<KeyIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimKeys {
    user: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaUpload {
    sha256: String,
    size: u64,
    mime_type: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaUrl {
    media_id: String,
    mime_type: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushTarget {
    #[serde(default)]
    url: String,
    #[serde(default)]
    token: String,
}

/// Answers one request of a [`TYPES`] type as the caller `bearer`. Media
/// requests are answered by the gateway itself from `media` (no node is
/// called: the connection was authenticated by one already).
pub async fn dispatch(
    nodes: &Nodes,
    media: Option<&Media>,
    bearer: &Bearer,
    kind: &str,
    body: Map<String, Value>,
) -> Result<Value, Failure> {
    // Writes that are safe to retry on another node (see `crate::nodes`).
    const RETRY: bool = true;
    let out = match kind {
        "create_direct" => {
            let r: Peer = fields(body)?;
            let m = pb::CreateDirectRequest { peer: r.peer };
            let c = nodes.call(bearer, "CreateDirect", m, RETRY).await?;
            render::conversation(&c)
        }
        "create_group" => {
            let r: NewGroup = fields(body)?;
            let m = pb::CreateGroupRequest {
                name: r.name,
                members: r.members,
            };
            // Not retried: a second attempt would create a second group.
            let c = nodes.call(bearer, "CreateGroup", m, false).await?;
            render::conversation(&c)
        }
        "get_conversation" => {
            let r: Conv = fields(body)?;
            let m = pb::ConversationRequest {
                conversation_id: r.conversation_id,
            };
            let c = nodes.call(bearer, "GetConversation", m, RETRY).await?;
            render::conversation(&c)
        }
        "add_members" | "remove_members" => {
            let r: Members = fields(body)?;
            let m = pb::MembersRequest {
                conversation_id: r.conversation_id,
                users: r.users,
            };
            let ack = if kind == "add_members" {
                nodes.call(bearer, "AddMembers", m, RETRY).await?
            } else {
                nodes.call(bearer, "RemoveMembers", m, RETRY).await?
            };
            render::event_ack(&ack)
        }
        "leave" => {
            let r: Conv = fields(body)?;
            let m = pb::ConversationRequest {
                conversation_id: r.conversation_id,
            };
            let ack = nodes.call(bearer, "Leave", m, RETRY).await?;
            render::event_ack(&ack)
        }
        "set_role" => {
            let r: SetRole = fields(body)?;
            let role = match r.role {
                RoleIn::Member => pb::Role::Member,
                RoleIn::Admin => pb::Role::Admin,
            };
            let m = pb::SetRoleRequest {
                conversation_id: r.conversation_id,
                user: r.user,
                role: role.into(),
            };
            let ack = nodes.call(bearer, "SetRole", m, RETRY).await?;
            render::event_ack(&ack)
        }
        "send" => {
            let r: Send = fields(body)?;
            let m = pb::SendRequest {
                conversation_id: r.conversation_id,
                client_msg_id: r.client_msg_id,
                content: Some(r.content.into_pb()?),
                reply_to: r.reply_to,
            };
            let s = nodes.call(bearer, "Send", m, RETRY).await?;
            render::send_response(&s)
        }
        "edit" => {
            let r: Edit = fields(body)?;
            let m = pb::EditRequest {
                conversation_id: r.conversation_id,
                seq: r.seq,
                content: Some(r.content.into_pb()?),
            };
            let ack = nodes.call(bearer, "Edit", m, RETRY).await?;
            render::event_ack(&ack)
        }
        "delete" => {
            let r: MsgRef = fields(body)?;
            let m = pb::MessageRef {
                conversation_id: r.conversation_id,
                seq: r.seq,
            };
            let ack = nodes.call(bearer, "Delete", m, RETRY).await?;
            render::event_ack(&ack)
        }
        "react" => {
            let r: React = fields(body)?;
            let m = pb::ReactRequest {
                conversation_id: r.conversation_id,
                seq: r.seq,
                emoji: r.emoji,
            };
            let ack = nodes.call(bearer, "React", m, RETRY).await?;
            render::event_ack(&ack)
        }
        "mark_delivered" | "mark_read" => {
            let r: Receipt = fields(body)?;
            let m = pb::ReceiptRequest {
                conversation_id: r.conversation_id,
                up_to: r.up_to,
            };
            let ack = if kind == "mark_delivered" {
                nodes.call(bearer, "MarkDelivered", m, RETRY).await?
            } else {
                nodes.call(bearer, "MarkRead", m, RETRY).await?
            };
            render::event_ack(&ack)
        }
        "message_status" => {
            let r: MsgRef = fields(body)?;
            let m = pb::MessageRef {
                conversation_id: r.conversation_id,
                seq: r.seq,
            };
            let s = nodes.call(bearer, "MessageStatus", m, RETRY).await?;
            render::message_status(&s)
        }
        "history" => {
            let r: History = fields(body)?;
            let m = pb::HistoryRequest {
                conversation_id: r.conversation_id,
                before: r.before,
                after: r.after,
                limit: r.limit,
            };
            let h = nodes.call(bearer, "History", m, RETRY).await?;
            render::history(&h)
        }
        "inbox" => {
            let r: Inbox = fields(body)?;
            let m = pb::InboxRequest { limit: r.limit };
            let i = nodes.call(bearer, "Inbox", m, RETRY).await?;
            render::inbox(&i)
        }
        "presence" => {
            let r: Presence = fields(body)?;
            let m = pb::PresenceRequest { users: r.users };
            let p = nodes.call(bearer, "Presence", m, RETRY).await?;
            render::presence_response(&p)
        }
        "typing" => {
            let r: Typing = fields(body)?;
            let m = pb::TypingRequest {
                conversation_id: r.conversation_id,
                typing: r.typing,
            };
            nodes
                .call::<_, pb::Done>(bearer, "SetTyping", m, RETRY)
                .await?;
            render::done()
        }
        "publish_keys" => {
            let r: PublishKeys = fields(body)?;
            let mut one_time_keys = Vec::with_capacity(r.one_time_keys.len());
            for k in r.one_time_keys {
                one_time_keys.push(k.into_pb("one_time_keys.public_key")?);
            }
            let m = pb::PublishKeys {
                identity_key: bytes("identity_key", &r.identity_key)?,
                signed_prekey_id: r.signed_prekey_id,
                signed_prekey: bytes("signed_prekey", &r.signed_prekey)?,
                signed_prekey_signature: bytes(
                    "signed_prekey_signature",
                    &r.signed_prekey_signature,
                )?,
                one_time_keys,
                last_resort_key: match r.last_resort_key {
                    Some(k) => Some(k.into_pb("last_resort_key.public_key")?),
                    None => None,
                },
            };
            nodes
                .call::<_, pb::Done>(bearer, "PublishKeys", m, RETRY)
                .await?;
            render::done()
        }
        "claim_keys" => {
            let r: ClaimKeys = fields(body)?;
            let m = pb::ClaimKeys { user: r.user };
            // A retry after an unknown outcome may take a second one-time key
            // of each device; the first is then simply never used, which the
            // key directory is built to tolerate (keys are single-use, not
            // counted).
            let k = nodes.call(bearer, "ClaimKeys", m, RETRY).await?;
            render::claim_keys(&k)
        }
        "set_push_target" => {
            let r: PushTarget = fields(body)?;
            let m = pb::SetPushTarget {
                url: r.url,
                token: r.token,
            };
            nodes
                .call::<_, pb::Done>(bearer, "SetPushTarget", m, RETRY)
                .await?;
            render::done()
        }
        "media_upload" => {
            let r: MediaUpload = fields(body)?;
            let media = media.ok_or(MediaError::NotConfigured)?;
            let g = media
                .grant_upload(&r.sha256, r.size, &r.mime_type, media::now_ms())
                .await?;
            render::media_upload(&r.sha256, &g)
        }
        "media_url" => {
            let r: MediaUrl = fields(body)?;
            let media = media.ok_or(MediaError::NotConfigured)?;
            let g = media
                .grant_download(&r.media_id, &r.mime_type, media::now_ms())
                .await?;
            render::media_url(&g)
        }
        other => {
            return Err(Failure {
                code: code::UNKNOWN_TYPE,
                message: format!("unknown frame type {other:?}"),
            });
        }
    };
    Ok(out)
}
