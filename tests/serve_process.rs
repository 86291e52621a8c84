//! `missive serve`, the README's first command, as a newcomer runs it: it
//! starts a one-node cluster with ChatService and the WebSocket gateway on
//! loopback, answers `/healthz`, takes a message sent with a token from
//! `missive token`, stops cleanly on SIGTERM, and serves the same history
//! after a restart from its data directory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use missive_proto::v1 as pb;
use missive_proto::v1::chat_service_client::ChatServiceClient;
use tonic::transport::Endpoint;

const BIN: &str = env!("CARGO_BIN_EXE_missive");

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

struct Serve {
    child: Child,
    grpc: String,
    http: String,
}

impl Serve {
    fn start(data: &Path) -> Serve {
        let (grpc, http, internal) = (free_addr(), free_addr(), free_addr());
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--grpc", &grpc, "--http", &http, "--internal", &internal])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn missive serve");
        let s = Serve { child, grpc, http };
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.healthz() != Some(200) {
            assert!(Instant::now() < deadline, "/healthz never answered 200");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// The status `/healthz` answers, if the gateway answers at all.
    fn healthz(&self) -> Option<u16> {
        let mut c = TcpStream::connect(&self.http).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        c.read_to_string(&mut out).ok()?;
        out.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGTERM, then the exit status and what it printed.
    fn stop(mut self) -> (bool, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                let mut out = String::new();
                if let Some(mut o) = self.child.stdout.take() {
                    let _ = o.read_to_string(&mut out);
                }
                return (st.success(), out);
            }
            assert!(Instant::now() < deadline, "missive serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(user: &str) -> String {
    let out = Command::new(BIN)
        .args(["token", "--user", user])
        .output()
        .expect("missive token");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

async fn client(
    grpc: &str,
    user: &str,
) -> ChatServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
> {
    let channel = Endpoint::from_shared(format!("http://{grpc}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to ChatService");
    let value = format!("Bearer {}", token(user)).parse().expect("ascii");
    ChatServiceClient::with_interceptor(channel, Bearer(value))
}

#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
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
