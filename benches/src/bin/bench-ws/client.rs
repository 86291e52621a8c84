//! WebSocket clients of the benchmark: one TCP connection each, bound to a
//! source address of its own before it connects, with small buffers.
//!
//! One source address has only the kernel's ephemeral ports (~28,000 here)
//! towards one server port, so connection `i` binds to one of
//! [`SOURCES`] loopback addresses (127.0.0.2, 127.0.0.3, …), round-robin.
//! Linux routes all of 127.0.0.0/8 to `lo`, so none needs configuring.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// A client connection.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Loopback source addresses connections are spread over: 64 × ~28,000
/// ports leaves room for any count this benchmark opens, TIME_WAIT
/// included.
const SOURCES: usize = 64;

/// How long one answer the setup waits for (auth, subscribe, create) may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The source address of connection `i`: 127.0.0.2 + (i mod [`SOURCES`]).
fn source_of(i: usize) -> IpAddr {
    let host = 2 + (i % SOURCES) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
}

/// Opens connection `i` to `ws://{server}{path}`. `read_buffer` is
/// tungstenite's read buffer, which it allocates and zeroes in full for
/// every connection: a small one keeps 100,000 clients in memory.
pub(crate) async fn connect(
    i: usize,
    server: SocketAddr,
    path: &str,
    read_buffer: usize,
) -> Result<Ws> {
    let socket = TcpSocket::new_v4().context("creating a socket")?;
    socket
        .bind(SocketAddr::new(source_of(i), 0))
        .with_context(|| format!("binding to {}", source_of(i)))?;
    let tcp = socket
        .connect(server)
        .await
        .with_context(|| format!("connecting to {server} from {}", source_of(i)))?;
    tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        // Every frame goes out at once: the benchmark measures latency.
        .write_buffer_size(0);
    let (ws, _) = client_async_with_config(format!("ws://{server}{path}"), tcp, Some(config))
        .await
        .with_context(|| format!("WebSocket handshake with {server}"))?;
    Ok(ws)
}

/// The next text frame; control frames are skipped (pings are answered by
/// tungstenite as it reads).
pub(crate) async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(f))) => bail!("closed by the server: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("reading a frame"),
            None => bail!("the connection ended"),
        }
    }
}

/// Sends `frame` as a text frame.
pub(crate) async fn send_text(ws: &mut Ws, frame: String) -> Result<()> {
    ws.send(Message::text(frame))
        .await
        .context("sending a frame")
}

/// Reads frames until `pick` returns something, within [`ANSWER_TIMEOUT`].
/// An `error` frame answering `req_id` fails.
async fn await_frame<T>(
    ws: &mut Ws,
    req_id: u64,
    mut pick: impl FnMut(&Value) -> Option<T>,
) -> Result<T> {
    tokio::time::timeout(ANSWER_TIMEOUT, async {
        loop {
            let text = next_text(ws).await?;
            let v: Value =
                serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
            if v["type"] == "error" && v["req_id"] == req_id {
                bail!("error answer: {text}");
            }
            if let Some(t) = pick(&v) {
                return Ok(t);
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no answer within {ANSWER_TIMEOUT:?}"))?
}

fn is_result(v: &Value, req_id: u64) -> bool {
    v["type"] == "result" && v["req_id"] == req_id
}

/// The `auth` frame and its answer.
pub(crate) async fn auth(ws: &mut Ws, token: &str) -> Result<()> {
    send_text(
        ws,
        json!({"type": "auth", "req_id": 1, "token": token}).to_string(),
    )
    .await?;
    await_frame(ws, 1, |v| is_result(v, 1).then_some(())).await
}

/// `subscribe` from now; returns once the subscription is live
/// (`caught_up`).
pub(crate) async fn subscribe(ws: &mut Ws) -> Result<()> {
    send_text(
        ws,
        json!({"type": "subscribe", "req_id": 2, "since": ""}).to_string(),
    )
    .await?;
    await_frame(ws, 2, |v| (v["type"] == "caught_up").then_some(())).await
}

/// `create_direct` with `peer`: the conversation's id.
pub(crate) async fn create_direct(ws: &mut Ws, peer: &str) -> Result<String> {
    send_text(
        ws,
        json!({"type": "create_direct", "req_id": 3, "peer": peer}).to_string(),
    )
    .await?;
    await_frame(ws, 3, |v| {
        is_result(v, 3)
            .then(|| v["data"]["conversation_id"].as_str().map(str::to_owned))
            .flatten()
    })
    .await
}
