//! `missive gateway --workers N`: one gateway of several processes sharing
//! its port, in front of a real `missive serve`.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{BIN, Serve, http_get, missive, text, token};

/// Connections the test opens: enough that the kernel's hash puts some on
/// every worker (all on one of two: a chance of 2 in 2^40).
const CONNECTIONS: usize = 40;

const WAIT: Duration = Duration::from_secs(30);

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A `missive gateway --workers N` process and the lines it prints.
struct Gateway {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Where its workers listen.
    addr: String,
    /// Each worker's process id, by index, as last announced.
    workers: Vec<u32>,
}

impl Gateway {
    fn start(node_grpc: &str, workers: u16) -> Gateway {
        // Each worker's share of the cap holds every connection a test
        // opens, old and new: the kernel may hand them all to one worker,
        // and a refusal would be the cap working, not a failure.
        let cap = workers * 2 * CONNECTIONS as u16;
        let mut cmd = Command::new(BIN);
        cmd.args(["gateway", "--node", node_grpc, "--listen", "127.0.0.1:0"])
            .args([
                "--workers",
                &workers.to_string(),
                "--max-connections",
                &cap.to_string(),
            ]);
        Gateway::launch(cmd, workers, cap)
    }

    /// Runs `cmd`, a gateway of `workers` workers sharing a cap of `cap`,
    /// and waits until it says it serves.
    fn launch(mut cmd: Command, workers: u16, cap: u16) -> Gateway {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn missive gateway");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut gw = Gateway {
            child,
            lines,
            addr: String::new(),
            workers: vec![0; usize::from(workers)],
        };
        loop {
            let line = gw.next_line();
            if let Some(rest) = line.strip_prefix("missive gateway on ws://") {
                gw.addr = rest.split('/').next().expect("an address").to_owned();
                let each = cap.div_ceil(workers);
                assert!(
                    line.contains(&format!(
                        "{workers} worker processes, at most {each} connections each"
                    )),
                    "{line}"
                );
                break;
            }
        }
        assert!(gw.workers.iter().all(|&p| p != 0), "{:?}", gw.workers);
        gw
    }

    /// The next line printed, noting the workers' announcements.
    fn next_line(&mut self) -> String {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .expect("the gateway prints a line in time");
        if let Some((index, pid)) = worker_announcement(&line) {
            self.workers[index] = pid;
        }
        line
    }

    /// Waits for worker `index` to be announced again by a process other
    /// than `old`.
    fn await_restart(&mut self, index: usize, old: u32) {
        while self.workers[index] == old {
            self.next_line();
        }
    }

    /// Reads lines until `done` holds, given each line.
    fn read_until(&mut self, mut done: impl FnMut(&Gateway, &str) -> bool) {
        loop {
            let line = self.next_line();
            if done(self, &line) {
                return;
            }
        }
    }

    fn supervisor(&self) -> u32 {
        self.child.id()
    }

    /// The directory of the workers' counter sockets.
    fn socket_dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!("missive-gateway.{}", self.supervisor()))
    }

    /// Worker `index`'s open connections, asked on its counters socket.
    fn connections_of(&self, index: usize) -> u64 {
        let pid = self.workers[index];
        let path = self.socket_dir().join(format!("worker-{index}-{pid}.sock"));
        let mut s = std::os::unix::net::UnixStream::connect(&path).expect("the worker's socket");
        let mut line = String::new();
        s.read_to_string(&mut line).expect("read the counters");
        line.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a count first")
    }

    /// `GET /metrics` on the shared port: `(missive_ws_workers,
    /// missive_ws_connections)`.
    fn metrics(&self) -> (u64, u64) {
        let body = http_get(&self.addr, "/metrics").expect("/metrics answers");
        let value = |name: &str| -> u64 {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in\n{body}"))
        };
        (value("missive_ws_workers"), value("missive_ws_connections"))
    }

    /// Waits until the metrics read `want`, whichever worker answers.
    fn await_metrics(&self, want: (u64, u64)) {
        let deadline = Instant::now() + WAIT;
        loop {
            // Several scrapes: each may reach another worker.
            if (0..4).all(|_| self.metrics() == want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "metrics {:?}, want {want:?}",
                self.metrics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(index, pid)` from "missive gateway worker I (pid P) on …".
fn worker_announcement(line: &str) -> Option<(usize, u32)> {
    let rest = line.strip_prefix("missive gateway worker ")?;
    let (index, rest) = rest.split_once(" (pid ")?;
    let (pid, _) = rest.split_once(')')?;
    Some((index.parse().ok()?, pid.parse().ok()?))
}

/// Sends `sig` (`KILL`, `TERM`, `HUP`) to process `pid`.
fn signal(sig: &str, pid: u32) {
    let sent = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill -{sig} {pid}");
}

/// Whether process `pid` is gone (or a zombie nobody has reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

fn await_gone(pid: u32) {
    let deadline = Instant::now() + WAIT;
    while !gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A WebSocket to `addr`, authenticated as `user`.
async fn connect(addr: &str, token: &str) -> Ws {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp)
        .await
        .expect("WebSocket");
    let auth = serde_json::json!({"type": "auth", "req_id": 1, "token": token});
    ws.send(Message::text(auth.to_string()))
        .await
        .expect("send");
    let answer = next_json(&mut ws).await;
    assert_eq!(answer["type"], "result", "{answer}");
    ws
}

async fn next_json(ws: &mut Ws) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("a frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("JSON");
        }
    }
}

/// Whether `ws` still answers a ping.
async fn answers_ping(ws: &mut Ws) -> bool {
    let ping = serde_json::json!({"type": "ping", "req_id": 3});
    if ws.send(Message::text(ping.to_string())).await.is_err() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                return serde_json::from_str::<serde_json::Value>(&t)
                    .is_ok_and(|v| v["type"] == "pong");
            }
            Ok(Some(Ok(_))) => {}
            _ => return false,
        }
    }
}

/// Reads `ws` until it ends; the close code it got, if any.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("ends in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_of_two_workers_serves_on_one_port_survives_a_worker_kill_and_stops_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(&dir.path().join("data"));
    let mut gw = Gateway::start(&serve.grpc, 2);
    gw.await_metrics((2, 0));

    // Every connection is served, whichever worker the kernel gave it to:
    // a ping goes through the worker to the node and back.
    let tokens: Vec<String> = (0..CONNECTIONS).map(|i| token(&format!("w{i}"))).collect();
    let mut clients = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let mut ws = connect(&gw.addr, t).await;
        let ping = serde_json::json!({"type": "ping", "req_id": 2});
        ws.send(Message::text(ping.to_string()))
            .await
            .expect("send");
        let pong = next_json(&mut ws).await;
        assert_eq!(pong["type"], "pong", "connection {i}: {pong}");
        clients.push(ws);
    }
    // Both workers hold some, and any worker's /metrics counts all.
    let held = [gw.connections_of(0), gw.connections_of(1)];
    assert!(held.iter().all(|&n| n > 0), "{held:?}");
    assert_eq!(held.iter().sum::<u64>(), CONNECTIONS as u64);
    gw.await_metrics((2, CONNECTIONS as u64));

    // A worker killed: its clients lose their connections, the other
    // worker's keep theirs, and the supervisor starts it again.
    let victim = gw.workers[1];
    signal("KILL", victim);
    gw.await_restart(1, victim);
    gw.await_metrics((2, held[0]));
    let mut dropped = 0;
    let mut kept = Vec::new();
    for mut ws in clients {
        if answers_ping(&mut ws).await {
            kept.push(ws);
        } else {
            dropped += 1;
        }
    }
    assert_eq!((kept.len() as u64, dropped), (held[0], held[1]));
    // New connections reach the restarted worker too.
    for t in &tokens {
        kept.push(connect(&gw.addr, t).await);
    }
    let now = [gw.connections_of(0), gw.connections_of(1)];
    assert!(now[1] > 0, "{now:?}");

    // SIGTERM to the supervisor: every client is told to reconnect
    // elsewhere (1012), every worker exits, and so does the gateway.
    let workers = gw.workers.clone();
    signal("TERM", gw.supervisor());
    for ws in &mut kept {
        assert_eq!(close_code(ws).await, Some(1012));
    }
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = gw.child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "the gateway did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    for pid in workers {
        await_gone(pid);
    }
    assert!(!gw.socket_dir().exists());
}

#[test]
fn workers_end_with_their_supervisor_and_a_count_of_zero_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(&dir.path().join("data"));
    let mut gw = Gateway::start(&serve.grpc, 3);
    let workers = gw.workers.clone();
    // SIGKILL leaves the supervisor no chance to stop them: they stop
    // themselves.
    gw.child.kill().expect("kill the supervisor");
    gw.child.wait().expect("reap it");
    for pid in workers {
        await_gone(pid);
    }

    let out = missive(&["gateway", "--node", &serve.grpc, "--workers", "0"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--workers"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_replaces_every_worker_while_the_port_stays_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(&dir.path().join("data"));
    let mut gw = Gateway::start(&serve.grpc, 2);
    let old = gw.workers.clone();
    let tokens: Vec<String> = (0..20).map(|i| token(&format!("h{i}"))).collect();
    let mut clients = Vec::new();
    for t in &tokens {
        clients.push(connect(&gw.addr, t).await);
    }

    // Connections opened all through the replacement: the port must
    // never refuse one.
    let probing = Arc::new(AtomicBool::new(true));
    let prober = tokio::spawn({
        let (addr, probing) = (gw.addr.clone(), probing.clone());
        async move {
            let (mut accepted, mut refused) = (0, 0);
            while probing.load(Ordering::Relaxed) {
                match tokio::net::TcpStream::connect(&addr).await {
                    Ok(_) => accepted += 1,
                    Err(_) => refused += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (accepted, refused)
        }
    });

    signal("HUP", gw.supervisor());
    let mut replaced = false;
    gw.read_until(|gw, line| {
        replaced |= line.contains("every worker replaced");
        replaced && gw.workers.iter().zip(&old).all(|(new, old)| new != old)
    });
    for pid in &old {
        await_gone(*pid);
    }
    // The old workers' clients were told to reconnect elsewhere.
    for ws in &mut clients {
        assert_eq!(close_code(ws).await, Some(1012));
    }
    probing.store(false, Ordering::Relaxed);
    let (accepted, refused) = prober.await.expect("the prober");
    assert_eq!(refused, 0, "refused while the workers were replaced");
    assert!(accepted > 0);

    // The new workers serve, and only their sockets remain.
    let mut fresh = Vec::new();
    for t in &tokens {
        let mut ws = connect(&gw.addr, t).await;
        assert!(answers_ping(&mut ws).await);
        fresh.push(ws);
    }
    gw.await_metrics((2, tokens.len() as u64));
    let deadline = Instant::now() + WAIT;
    loop {
        let sockets = std::fs::read_dir(gw.socket_dir())
            .expect("the socket directory")
            .count();
        if sockets == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{sockets} sockets, want 2");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first line `cmd` prints on stdout, once it has; then it is killed,
/// and what it wrote to stderr until then.
fn first_line(cmd: &mut Command) -> (String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn missive gateway");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a line");
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    (line, stderr)
}

#[test]
fn by_default_a_cap_past_the_file_limit_gets_as_many_workers_as_it_needs() {
    // A hard limit of 300 open files leaves a process 236 connections (64
    // kept back): a cap of 500 takes three workers, a cap of 200 one process.
    let gateway = |cap: u16| {
        let mut cmd = Command::new("prlimit");
        cmd.args(["--nofile=300:300", BIN, "gateway", "--node", "127.0.0.1:1"])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--max-connections",
                &cap.to_string(),
            ]);
        cmd
    };
    let gw = Gateway::launch(gateway(500), 3, 500);
    drop(gw);

    let (line, _) = first_line(&mut gateway(200));
    assert!(
        line.starts_with("missive gateway on ws://") && line.contains("at most 200 connections"),
        "{line}"
    );

    // One process asked for more than its files allow says so.
    let (line, stderr) = first_line(gateway(500).args(["--workers", "1"]));
    assert!(line.contains("at most 500 connections"), "{line}");
    assert!(
        stderr.contains("warning: at most about 236 of the 500 connections allowed fit"),
        "{stderr}"
    );
}
