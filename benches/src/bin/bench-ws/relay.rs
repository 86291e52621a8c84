//! The bare relay: the loopback limit of the gateway's own stack. An axum
//! WebSocket server (the same axum, hyper and tungstenite, with the
//! gateway's buffer sizes) that forwards each text frame of connection `n`
//! to connection `n ^ 1` and does nothing else: no JSON, no auth, no gRPC,
//! no storage.
//!
//! A connection's first frame is `hello N`. Each connection has a bounded
//! queue of [`QUEUE`] frames (the gateway's send queue) drained by its own
//! writer task, as in the gateway. The relay is a process of its own (see
//! [`Relay`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
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

/// The relay, a child process of the benchmark (the same executable run
/// with [`SERVE_FLAG`]): a process of its own, like the gateway, so its
/// descriptors (one per connection) count against its own limit and its CPU
/// time is its own. Dropping this stops it.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    child: Child,
}

/// The argument that makes the benchmark's executable serve the relay.
pub(crate) const SERVE_FLAG: &str = "--serve-relay";

impl Relay {
    /// Starts the relay process; returns once it listens.
    pub(crate) fn start() -> Result<Relay> {
        let exe = std::env::current_exe().context("finding the benchmark's executable")?;
        let mut child = Command::new(exe)
            .arg(SERVE_FLAG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the relay process")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("the relay's stdout")?;
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the relay's address")?;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("the relay said {line:?}, not its address"))?;
        Ok(Relay { addr, child })
    }

    /// The relay process's id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The relay process: listens on a loopback port, prints it, and serves
/// until its stdin closes (the benchmark ended, however it ended).
pub(crate) fn serve() -> Result<()> {
    crate::rlimit::raise_open_files()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the relay's runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the relay")?;
        println!("{}", listener.local_addr().context("the relay's address")?);
        let peers: Peers = Arc::default();
        let app = Router::new().route("/ws", get(upgrade)).with_state(peers);
        // Stdin is a pipe from the benchmark: it closes when the benchmark
        // ends, however it ends. Read on a thread (a blocking read).
        let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
            let _ = gone_tx.send(());
        });
        let parent_gone = async {
            let _ = gone_rx.await;
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(parent_gone)
            .await
            .context("serving the relay")
    })
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
