//! Every bound of the gateway, named, with its default. docs/protocol.md
//! lists the same numbers; a change here changes the documented protocol.

use std::time::Duration;

/// Largest WebSocket message (and frame) the gateway reads. A bigger one is a
/// protocol error: the connection is closed with 1009 (message too big).
/// This bounds the memory one connection's reads can take.
pub const HARD_MESSAGE_BYTES: usize = 4 << 20;

/// Largest request frame the gateway acts on. A frame between this and
/// [`HARD_MESSAGE_BYTES`] is answered with a `too_large` error and the
/// connection stays open. 2 MiB holds the largest message content ChatService
/// accepts (1 MiB) with its bytes in base64.
pub const MAX_REQUEST_BYTES: usize = 2 << 20;

/// Bytes of the buffer each connection reads the socket into, and the most
/// one read call takes. tungstenite allocates and zeroes all of it for every
/// connection up front: its default, 128 KiB, was nine tenths of an idle
/// connection's memory (docs/benchmarks-ws.md). 2 KiB holds an `auth` frame
/// with a long (RS256) token in one read; a bigger frame grows the buffer
/// for itself and costs more read calls (a 2 MiB one about a thousand).
pub const READ_BUFFER_BYTES: usize = 2 * 1024;

/// Outgoing frames queued for one connection (results, errors and events).
pub const SEND_QUEUE: usize = 256;

/// A connection whose send queue stays full this long is a slow consumer: it
/// is closed with [`crate::protocol::close::SLOW_CONSUMER`] and resumes from
/// its last token.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Open WebSocket connections per gateway; more are refused with HTTP 503
/// before the upgrade.
pub const MAX_CONNECTIONS: usize = 10_000;

/// Requests (any frame but `pong`s) one connection may send per second...
pub const REQUESTS_PER_SECOND: f64 = 50.0;
/// ...and in one burst. Requests over it get a `rate_limited` error.
pub const REQUEST_BURST: f64 = 100.0;

/// Requests of one connection being answered at once; a request beyond it
/// waits until one finishes, so a connection holds at most this many gRPC
/// calls in flight.
pub const MAX_IN_FLIGHT: usize = 32;

/// How long a new connection has to send its `auth` frame.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection from which nothing (not even a pong) arrives for this long is
/// closed with [`crate::protocol::close::IDLE`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the gateway pings an idle connection (WebSocket ping), so a live
/// client always has something to answer well within [`IDLE_TIMEOUT`].
pub const PING_INTERVAL: Duration = Duration::from_secs(20);

/// How long a client has to send its HTTP request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one ChatService call may take before it is answered `timeout`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Unary calls open from the gateway towards its nodes at once, all
/// connections together; a call waits up to `nodes::ADMIT_WAIT` for a turn
/// and is otherwise answered `unavailable` (gateway/src/nodes.rs explains
/// why). Below the nodes' bound on HTTP/2 streams reset before they were
/// accepted (4,096).
pub const NODE_CALLS_IN_FLIGHT: usize = 2048;

/// How long writing a close frame may take before the socket is dropped
/// (a consumer that does not read cannot receive it).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a graceful shutdown waits for connections to take their close
/// frames before it drops them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Bytes of a JWT passed through to ChatService.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Bytes of a `req_id` string.
pub const MAX_REQ_ID_BYTES: usize = 64;

/// The gateway's bounds; [`Limits::default`] is the documented protocol.
/// Tests shrink them to reach the edges quickly.
#[derive(Clone, Debug)]
pub struct Limits {
    /// See [`SEND_QUEUE`].
    pub send_queue: usize,
    /// See [`SEND_TIMEOUT`].
    pub send_timeout: Duration,
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`REQUESTS_PER_SECOND`].
    pub requests_per_second: f64,
    /// See [`REQUEST_BURST`].
    pub request_burst: f64,
    /// See [`MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// See [`MAX_REQUEST_BYTES`].
    pub max_request_bytes: usize,
    /// See [`READ_BUFFER_BYTES`].
    pub read_buffer_bytes: usize,
    /// See [`HARD_MESSAGE_BYTES`].
    pub hard_message_bytes: usize,
    /// See [`AUTH_TIMEOUT`].
    pub auth_timeout: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`PING_INTERVAL`].
    pub ping_interval: Duration,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`CALL_TIMEOUT`].
    pub call_timeout: Duration,
    /// See [`NODE_CALLS_IN_FLIGHT`].
    pub node_calls_in_flight: usize,
    /// See [`SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            send_queue: SEND_QUEUE,
            send_timeout: SEND_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            requests_per_second: REQUESTS_PER_SECOND,
            request_burst: REQUEST_BURST,
            max_in_flight: MAX_IN_FLIGHT,
            max_request_bytes: MAX_REQUEST_BYTES,
            read_buffer_bytes: READ_BUFFER_BYTES,
            hard_message_bytes: HARD_MESSAGE_BYTES,
            auth_timeout: AUTH_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            ping_interval: PING_INTERVAL,
            header_read_timeout: HEADER_READ_TIMEOUT,
            call_timeout: CALL_TIMEOUT,
            node_calls_in_flight: NODE_CALLS_IN_FLIGHT,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}
