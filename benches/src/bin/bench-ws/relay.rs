//! The bare relay: the loopback limit of the gateway's own stack. An axum
//! WebSocket server (the same axum, hyper and tungstenite, with the
//! gateway's buffer sizes) that forwards each text frame of connection `n`
//! to connection `n ^ 1` and does nothing else: no JSON, no auth, no gRPC,
//! no storage.
//!
//! A connection's first frame is `hello N`. Each connection has a bounded
//! queue of [`QUEUE`] frames (the gateway's send queue) drained by its own
//! writer task, as in the gateway. The relay runs on a runtime of its own
//! with two worker threads, so it does not share the load generator's
//! scheduler.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

/// Frames queued towards one connection.
const QUEUE: usize = missive_gateway::limits::SEND_QUEUE;

/// Each connection's queue, by its number. A std mutex: held only to look
/// up or insert, never across an await.
type Peers = Arc<Mutex<HashMap<u64, mpsc::Sender<Message>>>>;

/// A running relay; dropping it stops it.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Relay {
    pub(crate) fn start() -> Result<Relay> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("relay")
            .enable_all()
            .build()
            .context("starting the relay's runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("binding the relay")?;
        let addr = listener.local_addr().context("the relay's address")?;
        let peers: Peers = Arc::default();
        let app = Router::new().route("/ws", get(upgrade)).with_state(peers);
        runtime.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("relay: {e}");
            }
        });
        Ok(Relay {
            addr,
            _runtime: runtime,
        })
    }
}

async fn upgrade(State(peers): State<Peers>, ws: WebSocketUpgrade) -> Response {
    ws.read_buffer_size(missive_gateway::limits::READ_BUFFER_BYTES)
        .on_upgrade(move |socket| relay(socket, peers))
}

async fn relay(socket: WebSocket, peers: Peers) {
    let (mut sink, mut stream) = socket.split();
    let me = match stream.next().await {
        Some(Ok(Message::Text(t))) => match t
            .as_str()
            .strip_prefix("hello ")
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(n) => n,
            None => return,
        },
        _ => return,
    };
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    if let Ok(mut p) = peers.lock() {
        p.insert(me, tx);
    }
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
    });
    let mut peer: Option<mpsc::Sender<Message>> = None;
    while let Some(Ok(m)) = stream.next().await {
        let Message::Text(t) = m else { continue };
        if peer.is_none() {
            peer = peers.lock().ok().and_then(|p| p.get(&(me ^ 1)).cloned());
        }
        if let Some(p) = &peer
            && p.send(Message::Text(t)).await.is_err()
        {
            peer = None;
        }
    }
    if let Ok(mut p) = peers.lock() {
        p.remove(&me);
    }
    writer.abort();
}
