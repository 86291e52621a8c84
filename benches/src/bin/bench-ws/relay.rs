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
//!
//! **Durable**, the relay also writes every frame to a file and makes it
//! durable before it forwards it: the limit of a chat that delivers nothing
//! before it is on disk, as missive delivers nothing before its log holds
//! it. One thread (the [`Journal`]) takes whatever frames are waiting, up to
//! [`JOURNAL_BATCH`], writes them with one `pwrite` over zeros written
//! ahead (as missive's log writes over prepared space, so no fdatasync
//! commits filesystem metadata), fdatasyncs, then forwards each: group
//! commit, with nothing else to do.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
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

/// Frames waiting for the durable relay's journal, each with the queue it
/// goes to once durable.
const JOURNAL_QUEUE: usize = 4096;

/// The most frames one write and fdatasync of the journal carries.
const JOURNAL_BATCH: usize = 1024;

/// The journal file's size: zeros written before the first frame, then
/// overwritten round and round.
const JOURNAL_BYTES: u64 = 64 << 20;

/// A frame to make durable, and where it goes after.
type Pending = (Message, mpsc::Sender<Message>);

/// What a relay connection does with a frame for its partner.
#[derive(Clone, Debug)]
enum Forward {
    /// Straight to the partner's queue.
    Bare,
    /// Through the journal first.
    Durable(mpsc::Sender<Pending>),
}

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
    /// Starts the relay process; returns once it listens. With `journal`,
    /// the relay is durable: it writes each frame to that file, made
    /// durable, before it forwards it.
    pub(crate) fn start(journal: Option<&Path>) -> Result<Relay> {
        let exe = std::env::current_exe().context("finding the benchmark's executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg(SERVE_FLAG);
        if let Some(path) = journal {
            cmd.arg(path);
        }
        let mut child = cmd
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
/// until its stdin closes (the benchmark ended, however it ended). With a
/// journal file (the argument after [`SERVE_FLAG`]), durable.
pub(crate) fn serve() -> Result<()> {
    crate::rlimit::raise_open_files()?;
    let journal = std::env::args_os().nth(2).map(PathBuf::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the relay's runtime")?;
    runtime.block_on(async {
        let forward = match journal {
            None => Forward::Bare,
            Some(path) => Forward::Durable(Journal::start(&path)?),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the relay")?;
        println!("{}", listener.local_addr().context("the relay's address")?);
        let peers: Peers = Arc::default();
        let app = Router::new()
            .route("/ws", get(upgrade))
            .with_state((peers, forward));
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

/// The durable relay's group commit: a thread that writes the frames
/// waiting, fdatasyncs, and forwards them.
struct Journal {
    file: File,
    /// Where the next batch goes (wrapping at [`JOURNAL_BYTES`]).
    at: u64,
    rx: mpsc::Receiver<Pending>,
}

impl Journal {
    /// Creates `path` full of zeros, made durable, and starts the thread;
    /// the sender frames go to it by.
    fn start(path: &Path) -> Result<mpsc::Sender<Pending>> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        let zeros = vec![0u8; 1 << 20];
        for at in (0..JOURNAL_BYTES).step_by(zeros.len()) {
            file.write_all_at(&zeros, at)
                .context("zeroing the journal")?;
        }
        file.sync_all().context("syncing the journal")?;
        let (tx, rx) = mpsc::channel(JOURNAL_QUEUE);
        let mut journal = Journal { file, at: 0, rx };
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || journal.run())
            .context("starting the journal thread")?;
        Ok(tx)
    }

    fn run(&mut self) {
        let mut batch: Vec<Pending> = Vec::with_capacity(JOURNAL_BATCH);
        let mut bytes = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            batch.push(first);
            while batch.len() < JOURNAL_BATCH {
                match self.rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            bytes.clear();
            for (m, _) in &batch {
                if let Message::Text(t) = m {
                    bytes.extend_from_slice(&(t.len() as u32).to_le_bytes());
                    bytes.extend_from_slice(t.as_bytes());
                }
            }
            if self.at + bytes.len() as u64 > JOURNAL_BYTES {
                self.at = 0;
            }
            if let Err(e) = self
                .file
                .write_all_at(&bytes, self.at)
                .and_then(|()| self.file.sync_data())
            {
                eprintln!("the durable relay's journal failed: {e}");
                return;
            }
            self.at += bytes.len() as u64;
            for (m, to) in batch.drain(..) {
                // A partner that cannot keep up loses the frame, and the
                // benchmark counts it lost; the journal waits for nobody.
                let _ = to.try_send(m);
            }
        }
    }
}

async fn upgrade(
    State((peers, forward)): State<(Peers, Forward)>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.read_buffer_size(missive_gateway::limits::READ_BUFFER_BYTES)
        .on_upgrade(move |socket| relay(socket, peers, forward))
}

async fn relay(socket: WebSocket, peers: Peers, forward: Forward) {
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
        let Some(p) = &peer else { continue };
        let sent = match &forward {
            Forward::Bare => p.send(Message::Text(t)).await.is_ok(),
            Forward::Durable(journal) => {
                if journal.send((Message::Text(t), p.clone())).await.is_err() {
                    break; // the journal failed: the relay is done
                }
                !p.is_closed()
            }
        };
        if !sent {
            peer = None;
        }
    }
    if let Ok(mut p) = peers.lock() {
        p.remove(&me);
    }
    writer.abort();
}
