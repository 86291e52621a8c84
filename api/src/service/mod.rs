//! `ChatService` over gRPC: the edge where protobuf requests become
//! commands and queries, and errors become status codes.
//!
//! Every call is authenticated by the interceptor ([`crate::auth`]); writes
//! are rate limited per user, then proposed to the partition that owns them
//! (forwarded to its leader by missive-raft); reads are answered from this
//! node's projections, and only for members.

mod admin;
mod link;
mod subscribe;

pub use admin::Admin;
pub use link::Link;

use std::collections::HashSet;

use missive_proto::v1 as pb;
use missive_proto::v1::chat_command::Op;
use missive_proto::v1::chat_service_server::{ChatService, ChatServiceServer};
use missive_proto::v1::{ConversationKind, ReceiptKind};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::chat::Chat;
use crate::error::Rejected;
use crate::limits::{DEFAULT_PAGE, MAX_INBOX, MAX_PAGE, MAX_PRESENCE_USERS};
use crate::{ids, query, validate};

/// Largest request or response message, in bytes: a message's content is at
/// most 1 MiB, a history page 200 of them.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 16 << 20;

/// The routes: ChatService (authenticated), health, reflection.
/// Streams a connection may reset before the server accepted them, and
/// streams the server may reset for the peer's errors, before the
/// connection is closed with ENHANCE_YOUR_CALM (see [`router`]).
const MAX_PENDING_RESET_STREAMS: usize = 4096;
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 65_536;

/// HTTP/2 receive windows: a gateway's link carries all of its users'
/// requests on one stream, which the 64 KiB default would throttle to a
/// window per round trip.
const LINK_STREAM_WINDOW: u32 = 4 << 20;
const LINK_CONNECTION_WINDOW: u32 = 16 << 20;

/// The metadata key a caller may set to name its call in the node's logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longer request ids are replaced by one made here.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// A request id unique within this process: its start time and a counter.
fn next_request_id() -> String {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static START: LazyLock<u64> = LazyLock::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:x}-{}", *START, NEXT.fetch_add(1, Ordering::Relaxed))
}

///
/// With `tls`, every connection is TLS (rustls).
pub fn router(
    chat: Chat,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<tonic::transport::server::Router, tonic::transport::Error> {
    let auth = chat.auth().interceptor();
    let service = InterceptedService::new(
        ChatServiceServer::new(Service { chat: chat.clone() })
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        auth,
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    // Serving from here on; a node that stops drops the reporter with it.
    tokio::spawn(async move {
        health.set_serving::<ChatServiceServer<Service>>().await;
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(missive_proto::FILE_DESCRIPTOR_SET)
        .build_v1();
    // Every call runs in a span carrying its request id: the caller's
    // `x-request-id` (a gateway passes its own) or one made here, so each
    // log line a call writes can be traced back to it.
    // A gateway carries all of its users' calls and subscriptions on one
    // HTTP/2 connection, so the per-connection defaults meant for one client
    // (GOAWAY after 20 streams reset before they were accepted, or 1,024
    // reset for errors) would drop every user of a gateway at once when a
    // burst of its calls time out. The limits stay, sized for a connection
    // that multiplexes thousands of users.
    let mut builder = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(LINK_STREAM_WINDOW))
        .initial_connection_window_size(Some(LINK_CONNECTION_WINDOW))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESET_STREAMS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let mut builder = builder.trace_fn(|req| {
        let id = req
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_REQUEST_ID_BYTES)
            .map(str::to_owned)
            .unwrap_or_else(next_request_id);
        tracing::info_span!("grpc", method = %req.uri().path(), request_id = %id)
    });
    let router = builder.add_service(health_service);
    let router = match reflection {
        Ok(r) => router.add_service(r),
        Err(e) => {
            tracing::warn!(error = %e, "gRPC reflection unavailable");
            router
        }
    };
    let secret = chat.secret().clone();
    let admin = missive_proto::v1::chat_admin_server::ChatAdminServer::with_interceptor(
        Admin { chat: chat.clone() },
        move |r| secret.check(r),
    );
    let link = missive_proto::v1::gateway_link_server::GatewayLinkServer::new(Link::new(&chat))
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    Ok(router
        .add_service(service)
        .add_service(link)
        .add_service(admin))
}

/// The service; cheap to clone.
#[derive(Clone, Debug)]
pub struct Service {
    chat: Chat,
}

fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no verified caller"))
}

fn ack(r: pb::ChatReply) -> Response<pb::EventAck> {
    Response::new(pb::EventAck {
        conversation_id: r.conversation_id,
        seq: r.seq,
        timestamp_ms: r.timestamp_ms,
    })
}

impl Service {
    /// A write: rate limit, then propose to the partition of `key`.
    async fn write(&self, key: &str, c: &Caller, op: Op) -> Result<pb::ChatReply, Status> {
        self.chat.rate_limit(&c.user)?;
        Ok(self.chat.propose(key, c, op).await?)
    }

    /// Checks `conv` is a valid id and `user` a member of it now.
    async fn require_member(&self, conv: &str, user: &str) -> Result<(), Status> {
        validate::id("conversation_id", conv)?;
        let (conv, user) = (conv.to_owned(), user.to_owned());
        self.chat
            .read(move |chat| {
                let txn = chat.store_of(&conv).read()?;
                if query::conversation_record(&txn, &conv)?.is_none() {
                    return Err(Rejected::not_found("no such conversation").into());
                }
                match query::member(&txn, &conv, &user)? {
                    Some(m) if m.left_seq == 0 => Ok(()),
                    _ => Err(Rejected::denied("not a member of the conversation").into()),
                }
            })
            .await
            .map_err(Status::from)
    }

    async fn conversation(&self, conv: String) -> Result<pb::Conversation, Status> {
        let c = self
            .chat
            .read(move |chat| Ok(query::conversation(&chat.store_of(&conv).read()?, &conv)?))
            .await?;
        c.ok_or_else(|| Status::not_found("no such conversation"))
    }

    async fn receipt(
        &self,
        req: Request<pb::ReceiptRequest>,
        kind: ReceiptKind,
    ) -> Result<Response<pb::EventAck>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        validate::id("conversation_id", &r.conversation_id)?;
        let op = Op::Receipt(pb::MarkReceipt {
            conversation_id: r.conversation_id.clone(),
            kind: kind as i32,
            up_to: r.up_to,
        });
        Ok(ack(self.write(&r.conversation_id, &c, op).await?))
    }

    async fn change_members(
        &self,
        c: &Caller,
        conv: String,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> Result<Response<pb::EventAck>, Status> {
        validate::id("conversation_id", &conv)?;
        let op = Op::ChangeMembers(pb::ChangeMembers {
            conversation_id: conv.clone(),
            add,
            remove,
        });
        Ok(ack(self.write(&conv, c, op).await?))
    }
}

#[tonic::async_trait]
impl ChatService for Service {
    async fn create_direct(
        &self,
        req: Request<pb::CreateDirectRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let c = caller(&req)?;
        let peer = req.into_inner().peer;
        validate::id("peer", &peer)?;
        if peer == c.user {
            return Err(Rejected::invalid("a direct conversation is with someone else").into());
        }
        let conv = ids::direct_id(&c.user, &peer);
        let op = Op::CreateConversation(pb::CreateConversation {
            conversation_id: conv.clone(),
            kind: ConversationKind::Direct as i32,
            name: String::new(),
            members: vec![peer],
        });
        self.write(&conv, &c, op).await?;
        Ok(Response::new(self.conversation(conv).await?))
    }

    async fn create_group(
        &self,
        req: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let mut random = [0u8; 16];
        getrandom::fill(&mut random)
            .map_err(|e| Status::internal(format!("no randomness: {e}")))?;
        let conv = ids::new_group_id(random);
        let op = Op::CreateConversation(pb::CreateConversation {
            conversation_id: conv.clone(),
            kind: ConversationKind::Group as i32,
            name: r.name,
            members: r.members,
        });
        self.write(&conv, &c, op).await?;
        Ok(Response::new(self.conversation(conv).await?))
    }

    async fn get_conversation(
        &self,
        req: Request<pb::ConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let c = caller(&req)?;
        let conv = req.into_inner().conversation_id;
        self.require_member(&conv, &c.user).await?;
        Ok(Response::new(self.conversation(conv).await?))
    }

    async fn add_members(
        &self,
        req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::EventAck>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        self.change_members(&c, r.conversation_id, r.users, Vec::new())
            .await
    }

    async fn remove_members(
        &self,
        req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::EventAck>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        self.change_members(&c, r.conversation_id, Vec::new(), r.users)
            .await
    }

    async fn leave(
        &self,
        req: Request<pb::ConversationRequest>,
    ) -> Result<Response<pb::EventAck>, Status> {
        let c = caller(&req)?;
        let conv = req.into_inner().conversation_id;
        let me = c.user.clone();
        self.change_members(&c, conv, Vec::new(), vec![me]).await
    }

    async fn set_role(
        &self,
        req: Request<pb::SetRoleRequest>,
    ) -> Result<Response<pb::EventAck>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        validate::id("conversation_id", &r.conversation_id)?;
        let op = Op::SetRole(pb::SetRole {
            conversation_id: r.conversation_id.clone(),
            user: r.user,
            role: r.role,
        });
        Ok(ack(self.write(&r.conversation_id, &c, op).await?))
    }

    async fn send(
        &self,
        req: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        validate::id("conversation_id", &r.conversation_id)?;
        let op = Op::Send(pb::SendMessage {
            conversation_id: r.conversation_id.clone(),
            client_msg_id: r.client_msg_id,
            content: r.content,
            reply_to: r.reply_to,
        });
        let reply = self.write(&r.conversation_id, &c, op).await?;
        if !reply.duplicate {
            crate::metrics::MESSAGES_SENT.inc();
        }
        Ok(Response::new(pb::SendResponse {
            seq: reply.seq,
            timestamp_ms: reply.timestamp_ms,
            duplicate: reply.duplicate,
        }))
    }

    async fn edit(&self, req: Request<pb::EditRequest>) -> Result<Response<pb::EventAck>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        validate::id("conversation_id", &r.conversation_id)?;
        let op = Op::Edit(pb::EditMessage {
            conversation_id: r.conversation_id.clone(),
            seq: r.seq,
            content: r.content,
        });
        Ok(ack(self.write(&r.conversation_id, &c, op).await?))
    }

    async fn delete(&self, req: Request<pb::MessageRef>) -> Result<Response<pb::EventAck>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        validate::id("conversation_id", &r.conversation_id)?;
        let op = Op::Delete(pb::DeleteMessage {
            conversation_id: r.conversation_id.clone(),
            seq: r.seq,
        });
        Ok(ack(self.write(&r.conversation_id, &c, op).await?))
    }

    async fn react(
        &self,
        req: Request<pb::ReactRequest>,
    ) -> Result<Response<pb::EventAck>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        validate::id("conversation_id", &r.conversation_id)?;
        let op = Op::React(pb::React {
            conversation_id: r.conversation_id.clone(),
            seq: r.seq,
            emoji: r.emoji,
        });
        Ok(ack(self.write(&r.conversation_id, &c, op).await?))
    }

    async fn mark_delivered(
        &self,
        req: Request<pb::ReceiptRequest>,
    ) -> Result<Response<pb::EventAck>, Status> {
        self.receipt(req, ReceiptKind::Delivered).await
    }

    async fn mark_read(
        &self,
        req: Request<pb::ReceiptRequest>,
    ) -> Result<Response<pb::EventAck>, Status> {
        self.receipt(req, ReceiptKind::Read).await
    }

    async fn message_status(
        &self,
        req: Request<pb::MessageRef>,
    ) -> Result<Response<pb::MessageStatusResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        self.require_member(&r.conversation_id, &c.user).await?;
        let status = self
            .chat
            .read(move |chat| {
                let txn = chat.store_of(&r.conversation_id).read()?;
                let m = query::message(&txn, &r.conversation_id, r.seq)?
                    .ok_or_else(|| Rejected::not_found("no such message"))?;
                Ok(query::message_status(
                    &txn,
                    &r.conversation_id,
                    r.seq,
                    &m.sender,
                )?)
            })
            .await?;
        Ok(Response::new(status))
    }

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        if r.limit > MAX_PAGE {
            return Err(
                Rejected::invalid(format!("a page holds at most {MAX_PAGE} messages")).into(),
            );
        }
        if r.before != 0 && r.after != 0 {
            return Err(Rejected::invalid("page before or after a seq, not both").into());
        }
        self.require_member(&r.conversation_id, &c.user).await?;
        let limit = if r.limit == 0 { DEFAULT_PAGE } else { r.limit } as usize;
        let (messages, more) = self
            .chat
            .read(move |chat| {
                let txn = chat.store_of(&r.conversation_id).read()?;
                Ok(query::history(
                    &txn,
                    &r.conversation_id,
                    r.before,
                    r.after,
                    limit,
                )?)
            })
            .await?;
        Ok(Response::new(pb::HistoryResponse { messages, more }))
    }

    async fn inbox(
        &self,
        req: Request<pb::InboxRequest>,
    ) -> Result<Response<pb::InboxResponse>, Status> {
        let c = caller(&req)?;
        let limit = match req.into_inner().limit {
            0 => MAX_INBOX,
            n => n.min(MAX_INBOX),
        } as usize;
        let mut entries = self
            .chat
            .read(move |chat| {
                let mut all = Vec::new();
                for s in chat.stores() {
                    all.extend(query::inbox(s, &c.user)?);
                }
                Ok(all)
            })
            .await?;
        entries.sort_by(|a, b| {
            b.last_activity_ms.cmp(&a.last_activity_ms).then_with(|| {
                let id =
                    |e: &pb::InboxEntry| e.conversation.as_ref().map(|c| c.conversation_id.clone());
                id(a).cmp(&id(b))
            })
        });
        entries.truncate(limit);
        Ok(Response::new(pb::InboxResponse { entries }))
    }

    async fn presence(
        &self,
        req: Request<pb::PresenceRequest>,
    ) -> Result<Response<pb::PresenceResponse>, Status> {
        let c = caller(&req)?;
        let users = req.into_inner().users;
        if users.len() > MAX_PRESENCE_USERS {
            return Err(
                Rejected::invalid(format!("at most {MAX_PRESENCE_USERS} users per call")).into(),
            );
        }
        validate::users(&users)?;
        let out = self
            .chat
            .read(move |chat| {
                // Whom the caller shares a conversation with.
                let mut mine = HashSet::new();
                for s in chat.stores() {
                    for (conv, left) in query::user_conversations(s, &c.user)? {
                        if left == 0 {
                            mine.insert(conv);
                        }
                    }
                }
                let mut out = Vec::with_capacity(users.len());
                for u in users {
                    let shares = u == c.user || {
                        let mut found = false;
                        for s in chat.stores() {
                            if query::user_conversations(s, &u)?
                                .iter()
                                .any(|(conv, left)| *left == 0 && mine.contains(conv))
                            {
                                found = true;
                                break;
                            }
                        }
                        found
                    };
                    if !shares {
                        return Err(Rejected::denied(format!(
                            "{u} shares no conversation with you"
                        ))
                        .into());
                    }
                    out.push(query::presence(&chat.store_of(&u), &u)?);
                }
                Ok(out)
            })
            .await?;
        Ok(Response::new(pb::PresenceResponse { users: out }))
    }

    async fn set_typing(
        &self,
        req: Request<pb::TypingRequest>,
    ) -> Result<Response<pb::Done>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        self.chat.rate_limit(&c.user)?;
        self.require_member(&r.conversation_id, &c.user).await?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.chat.relay(
            &c.user,
            pb::ChatEvent {
                conversation_id: r.conversation_id,
                seq: 0,
                timestamp_ms: now_ms,
                actor: c.user.clone(),
                kind: Some(pb::chat_event::Kind::Typing(pb::Typing {
                    user: c.user.clone(),
                    typing: r.typing,
                })),
            },
        );
        Ok(Response::new(pb::Done {}))
    }

    async fn publish_keys(
        &self,
        req: Request<pb::PublishKeys>,
    ) -> Result<Response<pb::Done>, Status> {
        let c = caller(&req)?;
        let user = c.user.clone();
        self.write(&user, &c, Op::PublishKeys(req.into_inner()))
            .await?;
        Ok(Response::new(pb::Done {}))
    }

    async fn claim_keys(
        &self,
        req: Request<pb::ClaimKeys>,
    ) -> Result<Response<pb::ClaimKeysResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        validate::id("user", &r.user)?;
        let user = r.user.clone();
        let reply = self.write(&user, &c, Op::ClaimKeys(r)).await?;
        Ok(Response::new(pb::ClaimKeysResponse {
            bundles: reply.bundles,
        }))
    }

    async fn set_push_target(
        &self,
        req: Request<pb::SetPushTarget>,
    ) -> Result<Response<pb::Done>, Status> {
        let c = caller(&req)?;
        let user = c.user.clone();
        self.write(&user, &c, Op::SetPushTarget(req.into_inner()))
            .await?;
        Ok(Response::new(pb::Done {}))
    }

    type SubscribeStream = subscribe::EventStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let c = caller(&req)?;
        let since = req.into_inner().since;
        Ok(Response::new(
            subscribe::start(self.chat.clone(), c, since).await?,
        ))
    }
}
