//! The frames of WebSocket protocol v1 (docs/protocol.md): parsing a client
//! frame's envelope, building the server's frames, error codes and close
//! codes. Requests' own fields are parsed in [`crate::dispatch`].

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tonic::Code;

use crate::limits::MAX_REQ_ID_BYTES;

/// Close codes the gateway sends, besides 1000 (normal).
pub mod close {
    /// A message over the hard size limit (RFC 6455: message too big).
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The gateway is shutting down: reconnect (to it or another gateway) and
    /// resume from the last token (RFC 6455 registry: service restart).
    pub const SERVICE_RESTART: u16 = 1012;
    /// No node could check the token: reconnect later (RFC 6455 registry:
    /// try again later).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The first frame was not an `auth` frame, or its token was refused.
    pub const UNAUTHENTICATED: u16 = 4001;
    /// No `auth` frame arrived in time.
    pub const AUTH_TIMEOUT: u16 = 4002;
    /// The connection's send queue was full: the client did not read fast
    /// enough. Reconnect and subscribe from the last token.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Nothing arrived from the client (not even a pong) for the idle timeout.
    pub const IDLE: u16 = 4009;
}

/// Error codes of `error` frames: the gRPC ones in snake_case, and the
/// gateway's own.
pub mod code {
    pub const BAD_REQUEST: &str = "bad_request";
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    pub const TOO_LARGE: &str = "too_large";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const TIMEOUT: &str = "timeout";
}

/// The `error` code for a ChatService status.
pub fn status_code(c: Code) -> &'static str {
    match c {
        Code::InvalidArgument | Code::OutOfRange => "invalid_argument",
        Code::NotFound => "not_found",
        Code::PermissionDenied => "permission_denied",
        Code::FailedPrecondition => "failed_precondition",
        Code::AlreadyExists => "already_exists",
        Code::ResourceExhausted => "resource_exhausted",
        Code::Unauthenticated => "unauthenticated",
        Code::Unavailable | Code::Cancelled | Code::Aborted => "unavailable",
        Code::DeadlineExceeded => code::TIMEOUT,
        Code::Ok | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => {
            "internal"
        }
    }
}

/// A request's id, echoed in its answer: a string of at most
/// [`MAX_REQ_ID_BYTES`] or a non-negative integer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReqId(Value);

impl ReqId {
    /// For answers to frames whose id could not be read.
    pub const NONE: ReqId = ReqId(Value::Null);

    fn parse(v: Option<Value>) -> Result<ReqId, String> {
        match v {
            None | Some(Value::Null) => Ok(ReqId::NONE),
            Some(Value::String(s)) if s.len() <= MAX_REQ_ID_BYTES => Ok(ReqId(Value::String(s))),
            Some(Value::Number(n)) if n.is_u64() => Ok(ReqId(Value::Number(n))),
            Some(_) => Err(format!(
                "req_id must be a string of at most {MAX_REQ_ID_BYTES} bytes or a non-negative integer"
            )),
        }
    }
}

/// A client frame, its envelope read: the type, the id, and the rest of its
/// fields for the request's own parser.
#[derive(Debug)]
pub struct Frame {
    pub kind: String,
    pub req_id: ReqId,
    pub body: Map<String, Value>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    req_id: Option<Value>,
    #[serde(flatten)]
    body: Map<String, Value>,
}

/// Reads a text frame's envelope. On failure: the id if it could be read,
/// and what is wrong.
pub fn parse(text: &str) -> Result<Frame, (ReqId, String)> {
    let env: Envelope = match serde_json::from_str(text) {
        Ok(e) => e,
        Err(e) => {
            // Try to answer with the id even when the rest is malformed.
            let id = serde_json::from_str::<Map<String, Value>>(text)
                .ok()
                .and_then(|m| ReqId::parse(m.get("req_id").cloned()).ok())
                .unwrap_or(ReqId::NONE);
            return Err((id, format!("not a frame: {e}")));
        }
    };
    let req_id = ReqId::parse(env.req_id).map_err(|e| (ReqId::NONE, e))?;
    Ok(Frame {
        kind: env.kind,
        req_id,
        body: env.body,
    })
}

/// `{"type":"result","req_id":…,"data":…}`
pub fn result(id: &ReqId, data: Value) -> String {
    json!({ "type": "result", "req_id": id.0, "data": data }).to_string()
}

/// `{"type":"error","req_id":…,"code":…,"message":…}`
pub fn error(id: &ReqId, code: &str, message: &str) -> String {
    json!({ "type": "error", "req_id": id.0, "code": code, "message": message }).to_string()
}

/// The `error` frame for a failed ChatService call.
pub fn status_error(id: &ReqId, s: &tonic::Status) -> String {
    error(id, status_code(s.code()), s.message())
}

/// `{"type":"pong","req_id":…}`
pub fn pong(id: &ReqId) -> String {
    json!({ "type": "pong", "req_id": id.0 }).to_string()
}

/// `{"type":"event","event":…,"token":…}`, the event written straight into
/// the text.
pub fn event(event: &impl serde::Serialize, token: &str) -> String {
    #[derive(serde::Serialize)]
    struct Frame<'a, E> {
        r#type: &'static str,
        event: &'a E,
        token: &'a str,
    }
    // Sized for a typical text message's frame: growing from empty took
    // half a dozen reallocations per frame.
    let mut out = Vec::with_capacity(EVENT_FRAME_CAPACITY);
    let frame = Frame {
        r#type: "event",
        event,
        token,
    };
    // Objects with string keys always serialize, and into valid UTF-8.
    match serde_json::to_writer(&mut out, &frame) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Bytes reserved for an event frame's text.
const EVENT_FRAME_CAPACITY: usize = 512;

/// `{"type":"caught_up","token":…}`
pub fn caught_up(token: &str) -> String {
    json!({ "type": "caught_up", "token": token }).to_string()
}

/// `{"type":"resync","reason":…,"token":…}`
pub fn resync(reason: &str, token: &str) -> String {
    json!({ "type": "resync", "reason": reason, "token": token }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_split_from_the_fields() {
        let f = parse(r#"{"type":"send","req_id":"a1","conversation_id":"d-x"}"#).expect("parse");
        assert_eq!(f.kind, "send");
        assert_eq!(f.req_id, ReqId(Value::String("a1".into())));
        assert_eq!(f.body.len(), 1);
        assert!(f.body.contains_key("conversation_id"));
    }

    #[test]
    fn a_malformed_frame_still_answers_with_its_id() {
        let (id, _) = parse(r#"{"req_id":7,"conversation_id":"d-x"}"#).expect_err("no type");
        assert_eq!(id, ReqId(json!(7)));
        let (id, _) = parse("not json").expect_err("not json");
        assert_eq!(id, ReqId::NONE);
    }

    #[test]
    fn a_req_id_is_a_short_string_or_a_non_negative_integer() {
        assert!(parse(r#"{"type":"ping","req_id":-1}"#).is_err());
        assert!(parse(r#"{"type":"ping","req_id":{"a":1}}"#).is_err());
        let long = "x".repeat(MAX_REQ_ID_BYTES + 1);
        assert!(parse(&format!(r#"{{"type":"ping","req_id":"{long}"}}"#)).is_err());
        assert!(parse(r#"{"type":"ping"}"#).is_ok());
    }
}
