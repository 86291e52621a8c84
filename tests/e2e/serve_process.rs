//! `missive serve`, the README's first command, as a newcomer runs it: it
//! starts a one-node cluster with ChatService and the WebSocket gateway on
//! loopback, answers `/healthz`, takes a message sent with a token from
//! `missive token`, stops cleanly on SIGTERM, and serves the same history
//! after a restart from its data directory; its `/metrics` and `missive
//! admin status` move when messages flow; with `--tls-cert`/`--tls-key` it
//! serves ChatService, HTTPS and `wss://` over TLS only; given port 0 it
//! prints the ports it got, and a closed stdout does not stop it; it runs
//! with the allocator's larger thread cache unless the operator set one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use missive_proto::v1 as pb;
use missive_proto::v1::chat_service_client::ChatServiceClient;
use tonic::transport::Endpoint;

use crate::support::{
    BIN, Bearer, Serve, client, free_addr, http_get, spawn_serve, start_retrying_lost_ports, token,
};

/// The partitions `missive serve` gives a new data directory: one per
/// two cores, from 1 to 4.
fn default_partitions() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    (cores / 2).clamp(1, 4)
}

impl Serve {
    fn metrics(&self) -> Metrics {
        let body = self.get("/metrics").expect("/metrics answers");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        Metrics(body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_a_message_stops_on_sigterm_and_keeps_it_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let serve = Serve::start(&data);
    let mut alice = client(&serve.grpc, "alice").await;
    let conv = alice
        .create_direct(pb::CreateDirectRequest { peer: "bob".into() })
        .await
        .expect("create a direct conversation")
        .into_inner()
        .conversation_id;
    let sent = alice
        .send(pb::SendRequest {
            conversation_id: conv.clone(),
            client_msg_id: "m1".into(),
            content: Some(pb::Content {
                text: "hello from a fresh checkout".into(),
                ..Default::default()
            }),
            reply_to: 0,
        })
        .await
        .expect("send")
        .into_inner();
    drop(alice);
    let (ok, out) = serve.stop();
    assert!(ok, "missive serve exited with an error:\n{out}");
    assert!(out.contains("missive stopped"), "{out}");

    let serve = Serve::start(&data);
    let mut bob = client(&serve.grpc, "bob").await;
    let history = bob
        .history(pb::HistoryRequest {
            conversation_id: conv,
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].seq, sent.seq);
    let (ok, out) = serve.stop();
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_port_zero_serve_prints_the_addresses_it_bound() {
    // Only the first line is read; the pipe is closed before the rest is
    // printed, and the server must go on serving regardless.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // The internal address is the node's Raft address, kept in its data
    // directory: a real one, as a deployment gives.
    let (mut child, first) = start_retrying_lost_ports(|| {
        let (mut child, stderr) = spawn_serve(
            &data,
            ["127.0.0.1:0", "127.0.0.1:0", &free_addr()],
            &[],
            Stdio::piped(),
        );
        let mut first = String::new();
        let out = child.stdout.take().expect("stdout");
        match BufReader::new(out).read_line(&mut first) {
            Ok(n) if n > 0 => Ok((child, first)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::fs::read_to_string(&stderr).unwrap_or_default())
            }
        }
    });
    // "missive serving ChatService on ADDR and the WebSocket gateway on
    // ws://ADDR/ws (…)"
    let grpc = first
        .split("ChatService on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no ChatService address in {first:?}"));
    let http = first
        .split("ws://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no gateway address in {first:?}"));
    for addr in [grpc, http] {
        assert!(
            !addr.ends_with(":0"),
            "{addr} is not the bound address: {first}"
        );
    }
    let partitions = match default_partitions() {
        1 => "(1 partition, data in ".to_owned(),
        p => format!("({p} partitions, data in "),
    };
    assert!(first.contains(&partitions), "{first}");
    let mut alice = client(grpc, "alice").await;
    alice
        .create_direct(pb::CreateDirectRequest { peer: "bob".into() })
        .await
        .expect("ChatService answers on the printed address");
    let answer = http_get(http, "/healthz").expect("the gateway listens on the printed address");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _ = child.kill();
    let _ = child.wait();
}

/// A `/metrics` response.
struct Metrics(String);

impl Metrics {
    /// The sum of `name`'s samples (every label set), or None if absent.
    fn get(&self, name: &str) -> Option<f64> {
        let mut found = None;
        for line in self.0.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                continue;
            }
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("a sample value in {line:?}"));
            *found.get_or_insert(0.0) += value;
        }
        found
    }

    fn value(&self, name: &str) -> f64 {
        self.get(name)
            .unwrap_or_else(|| panic!("/metrics has no {name}:\n{}", self.0))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_the_listed_series_and_move_when_messages_flow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(&dir.path().join("data"));
    let before = serve.metrics();
    for series in [
        "missive_log_append_seconds_count",
        "missive_raft_commit_seconds_count",
        "missive_raft_apply_lag",
        "missive_raft_partitions",
        "missive_raft_partitions_led",
        "missive_raft_leader",
        "missive_ws_connections",
        "missive_messages_sent_total",
        "missive_events_delivered_total",
        "missive_delivery_seconds_count",
        "missive_push_backlog",
        "missive_push_dead_letters",
        "missive_rate_limited_total",
        "missive_ws_rate_limited_total",
    ] {
        before.value(series);
    }
    let partitions = f64::from(default_partitions());
    assert_eq!(before.value("missive_raft_partitions"), partitions);
    assert_eq!(before.value("missive_raft_partitions_led"), partitions);

    let mut alice = client(&serve.grpc, "alice").await;
    let mut bob = client(&serve.grpc, "bob").await;
    let conv = alice
        .create_direct(pb::CreateDirectRequest { peer: "bob".into() })
        .await
        .expect("create a direct conversation")
        .into_inner()
        .conversation_id;
    let mut events = bob
        .subscribe(pb::SubscribeRequest::default())
        .await
        .expect("subscribe")
        .into_inner();
    // The subscription is live once its replay is over.
    loop {
        let r = events.message().await.expect("stream").expect("open");
        if matches!(r.kind, Some(pb::subscribe_response::Kind::CaughtUp(_))) {
            break;
        }
    }
    // A WebSocket held open shows in the gateway's connection gauge.
    let mut ws = TcpStream::connect(&serve.http).expect("connect");
    write!(
        ws,
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .expect("upgrade request");
    let mut head = [0u8; 12];
    ws.read_exact(&mut head).expect("upgrade answer");
    assert_eq!(&head, b"HTTP/1.1 101");

    const SENT: u64 = 5;
    for i in 0..SENT {
        alice
            .send(pb::SendRequest {
                conversation_id: conv.clone(),
                client_msg_id: format!("m{i}"),
                content: Some(pb::Content {
                    text: format!("message {i}"),
                    ..Default::default()
                }),
                reply_to: 0,
            })
            .await
            .expect("send");
    }
    let mut received = 0;
    while received < SENT {
        let r = events.message().await.expect("stream").expect("open");
        if let Some(pb::subscribe_response::Kind::Event(e)) = r.kind
            && matches!(e.kind, Some(pb::chat_event::Kind::MessageSent(_)))
        {
            received += 1;
        }
    }
    // A retry with a known client_msg_id is not a new message.
    alice
        .send(pb::SendRequest {
            conversation_id: conv.clone(),
            client_msg_id: "m0".into(),
            content: Some(pb::Content {
                text: "message 0".into(),
                ..Default::default()
            }),
            reply_to: 0,
        })
        .await
        .expect("retry");
    // Past the per-user burst, writes are refused and counted.
    let mut refused = false;
    for _ in 0..400 {
        let r = alice
            .mark_delivered(pb::ReceiptRequest {
                conversation_id: conv.clone(),
                up_to: SENT,
            })
            .await;
        if let Err(st) = r {
            assert_eq!(st.code(), tonic::Code::ResourceExhausted, "{st}");
            refused = true;
            break;
        }
    }
    assert!(refused, "400 writes in a burst were never rate limited");

    let after = serve.metrics();
    let moved = |name: &str| after.value(name) - before.value(name);
    assert_eq!(moved("missive_messages_sent_total"), SENT as f64);
    assert!(moved("missive_events_delivered_total") >= SENT as f64);
    assert!(moved("missive_delivery_seconds_count") >= SENT as f64);
    assert!(moved("missive_raft_commit_seconds_count") >= SENT as f64);
    assert!(moved("missive_log_append_seconds_count") >= 1.0);
    assert!(moved("missive_rate_limited_total") >= 1.0);
    assert_eq!(after.value("missive_ws_connections"), 1.0);
    assert_eq!(after.value("missive_subscriptions"), 1.0);
    // openraft reports an apply a moment after the reply it released, so
    // the gauge is read again, within a bound, until it settles.
    let mut lag = after.value("missive_raft_apply_lag");
    for _ in 0..50 {
        if lag == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        lag = serve.metrics().value("missive_raft_apply_lag");
    }
    assert_eq!(lag, 0.0);

    // `missive admin status` shows the same node on one screen. The push
    // notifier settles the messages on its own schedule (it polls every
    // 200 ms when idle), so the screen is taken again, within a bound,
    // until their backlog is gone.
    let status = || {
        let out = Command::new(BIN)
            .args(["admin", "status", "--node", &serve.grpc])
            .output()
            .expect("missive admin status");
        let screen = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{screen}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        screen
    };
    let settled_by = Instant::now() + Duration::from_secs(10);
    let mut screen = status();
    while !screen.contains("push: backlog 0 ") && Instant::now() < settled_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
        screen = status();
    }
    let p = default_partitions();
    assert!(
        screen.contains(&format!("{p} partitions, leads {p}")),
        "{screen}"
    );
    assert!(screen.contains("1 live subscriptions"), "{screen}");
    assert!(
        screen.contains(&format!("{SENT} messages sent")),
        "{screen}"
    );
    assert!(
        screen.contains("push: backlog 0 · dead letters 0"),
        "{screen}"
    );
    drop(ws);
    drop(events);
    let (ok, out) = serve.stop();
    assert!(ok, "{out}");
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM
/// files into `dir`: `(cert, key, cert PEM)`.
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a self-signed certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let pem = ck.cert.pem();
    std::fs::write(&cert, &pem).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (cert, key, pem)
}

/// A TLS client that trusts `ca_pem` only.
fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("a certificate")).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_chatservice_and_the_gateway_speak_tls_only() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, ca_pem) = self_signed(dir.path());
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let serve = Serve::spawn(
        &dir.path().join("data"),
        &["--tls-cert", cert, "--tls-key", key],
    );
    let connector = tls_connector(&ca_pem);
    let name =
        tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a server name");

    // HTTPS: /healthz answers once the gateway reaches ChatService.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = async {
            let tcp = tokio::net::TcpStream::connect(&serve.http).await.ok()?;
            let mut tls = connector.connect(name.clone(), tcp).await.ok()?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut out = Vec::new();
            let _ = tls.read_to_end(&mut out).await;
            Some(String::from_utf8_lossy(&out).into_owned())
        }
        .await;
        if answer
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "https /healthz never answered 200: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Plain HTTP to the TLS listener gets no HTTP answer.
    assert_eq!(serve.healthz(), None);

    // gRPC over TLS, trusting the certificate.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem));
    let channel = Endpoint::from_shared(format!("https://{}", serve.grpc))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("connect to ChatService over TLS");
    let value = format!("Bearer {}", token("alice")).parse().expect("ascii");
    let mut alice = ChatServiceClient::with_interceptor(channel, Bearer(value));
    let conv = alice
        .create_direct(pb::CreateDirectRequest { peer: "bob".into() })
        .await
        .expect("create a direct conversation over TLS")
        .into_inner()
        .conversation_id;
    // Plaintext gRPC is refused.
    let grpc = serve.grpc.clone();
    let refused = tokio::time::timeout(Duration::from_secs(10), async move {
        let channel = Endpoint::from_shared(format!("http://{grpc}"))
            .expect("endpoint")
            .connect()
            .await;
        match channel {
            Err(_) => true,
            Ok(ch) => ChatServiceClient::new(ch)
                .inbox(pb::InboxRequest::default())
                .await
                .is_err(),
        }
    })
    .await
    .unwrap_or(true);
    assert!(refused, "plaintext gRPC reached a TLS-only ChatService");

    // wss://: bob authenticates and reads the conversation alice made.
    let tcp = tokio::net::TcpStream::connect(&serve.http)
        .await
        .expect("connect");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{}/ws", serve.http), tls)
        .await
        .expect("WebSocket over TLS");
    let frames = [
        serde_json::json!({"type": "auth", "req_id": 1, "token": token("bob")}),
        serde_json::json!({"type": "history", "req_id": 2, "conversation_id": conv}),
    ];
    for f in frames {
        ws.send(Message::text(f.to_string())).await.expect("send");
    }
    let mut answered = 0;
    while answered < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer in time")
            .expect("open")
            .expect("a frame");
        let Message::Text(text) = msg else { continue };
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        if v["type"] == "result" {
            answered += 1;
        } else {
            assert_ne!(v["type"], "error", "{v}");
        }
    }
    drop(ws);
    drop(alice);
    let (ok, out) = serve.stop();
    assert!(ok, "{out}");
}

/// The environment the process at `pid` runs with now.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .expect("read /proc/PID/environ")
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn serve_runs_with_a_larger_allocator_thread_cache_unless_one_is_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(&dir.path().join("default"));
    let env = environ(serve.child.id());
    assert!(
        env.iter()
            .any(|v| v == "GLIBC_TUNABLES=glibc.malloc.tcache_count=256"),
        "{env:?}"
    );
    drop(serve);

    // An operator's own count is kept: no second execution adds ours.
    let mut child = Command::new(BIN)
        .args(["serve", "--data"])
        .arg(dir.path().join("own"))
        .args(["--grpc", &free_addr(), "--http", &free_addr()])
        .args(["--internal", &free_addr()])
        .env(
            "GLIBC_TUNABLES",
            "glibc.malloc.mxfast=64:glibc.malloc.tcache_count=16",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn missive serve");
    // Long enough to have executed itself again, had it meant to.
    std::thread::sleep(Duration::from_millis(500));
    // glibc rewrites the environment block it parsed in place (the tunables
    // come apart at their `:`), so look for the count, not the whole value.
    let env = environ(child.id()).join("\n");
    let _ = child.kill();
    let _ = child.wait();
    assert!(env.contains("glibc.malloc.tcache_count=16"), "{env}");
    assert!(!env.contains("glibc.malloc.tcache_count=256"), "{env}");
}
