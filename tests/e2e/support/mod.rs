//! What the process tests of the `missive` binary share: the binary, free
//! loopback addresses, `missive serve` as a child process with its HTTP
//! probes, and ChatService clients authenticated with `missive token`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use missive_proto::v1::chat_service_client::ChatServiceClient;
use tonic::transport::Endpoint;

pub const BIN: &str = env!("CARGO_BIN_EXE_missive");

/// How long `missive serve` may take to answer `/healthz`, and to stop.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Runs `missive args…` to completion.
pub fn missive(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the missive binary runs")
}

/// What a finished command printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A development token for `user`, from `missive token`.
pub fn token(user: &str) -> String {
    let out = missive(&["token", "--user", user]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// `missive serve` on `data` with its gRPC, HTTP and internal services on
/// `addrs`, and the file its stderr goes to (beside `data`; a file, not a
/// pipe, because nothing reads a pipe while it runs and a full one would
/// stall its logging).
pub fn spawn_serve(
    data: &Path,
    addrs: [&str; 3],
    extra: &[&str],
    stdout: Stdio,
) -> (Child, PathBuf) {
    let [grpc, http, internal] = addrs;
    let stderr_path = data.with_extension("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
    let child = Command::new(BIN)
        .arg("serve")
        .arg("--data")
        .arg(data)
        .args(["--grpc", grpc, "--http", http, "--internal", internal])
        .args(extra)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn missive serve");
    (child, stderr_path)
}

/// Whether a start failed only because an address picked by
/// [`free_addr`] was taken by another process in the meantime (it binds
/// port 0 and lets go), so that trying again on fresh addresses is right.
fn lost_its_port(stderr: &str) -> bool {
    stderr.contains("Address already in use")
}

/// What `start` returns once it succeeds, `start` being tried again (on the
/// fresh addresses it picks) while it fails only because it [lost its
/// port](lost_its_port), up to five times in all. Any other failure panics
/// with the stderr `start` returned.
pub fn start_retrying_lost_ports<T>(mut start: impl FnMut() -> Result<T, String>) -> T {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match start() {
            Ok(started) => return started,
            Err(stderr) if lost_its_port(&stderr) && attempts < 5 => {}
            Err(stderr) => panic!("missive serve did not start:\n{stderr}"),
        }
    }
}

/// The whole HTTP/1.1 response to `GET path` from `addr`, if it answers
/// within 5 s.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut c = TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    Some(out)
}

/// `missive serve` as a child process; killed on drop.
pub struct Serve {
    pub child: Child,
    pub grpc: String,
    pub http: String,
    stderr_path: PathBuf,
}

impl Serve {
    /// `missive serve` on free addresses, once `/healthz` answers 200.
    pub fn start(data: &Path) -> Serve {
        Serve::start_with(data, &free_addr(), &[])
    }

    /// [`Serve::start`] with its internal service on `internal` and `extra`
    /// arguments.
    ///
    /// A start that [lost its port](lost_its_port) is tried again on fresh
    /// gRPC and HTTP addresses; any other failure panics with what the
    /// process wrote to stderr.
    pub fn start_with(data: &Path, internal: &str, extra: &[&str]) -> Serve {
        start_retrying_lost_ports(|| {
            let mut s = Serve::spawn_with(data, internal, extra);
            let deadline = Instant::now() + START_TIMEOUT;
            while s.healthz() != Some(200) {
                if let Some(st) = s.child.try_wait().expect("wait") {
                    return Err(format!("exited: {st}\n{}", s.stderr()));
                }
                assert!(
                    Instant::now() < deadline,
                    "/healthz never answered 200\n{}",
                    s.stderr()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(s)
        })
    }

    /// `missive serve` with `extra` arguments, not waited for.
    pub fn spawn(data: &Path, extra: &[&str]) -> Serve {
        Serve::spawn_with(data, &free_addr(), extra)
    }

    fn spawn_with(data: &Path, internal: &str, extra: &[&str]) -> Serve {
        let (grpc, http) = (free_addr(), free_addr());
        let (child, stderr_path) =
            spawn_serve(data, [&grpc, &http, internal], extra, Stdio::piped());
        Serve {
            child,
            grpc,
            http,
            stderr_path,
        }
    }

    /// What the process has written to stderr so far (its last 4 KiB).
    pub fn stderr(&self) -> String {
        let all = std::fs::read(&self.stderr_path).unwrap_or_default();
        let tail = &all[all.len().saturating_sub(4096)..];
        String::from_utf8_lossy(tail).into_owned()
    }

    /// The status `/healthz` answers, if the gateway answers at all.
    pub fn healthz(&self) -> Option<u16> {
        self.get("/healthz")?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// The whole HTTP/1.1 response to `GET path`, if the gateway answers.
    pub fn get(&self, path: &str) -> Option<String> {
        http_get(&self.http, path)
    }

    /// SIGTERM, then the exit status and what it printed.
    pub fn stop(mut self) -> (bool, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + STOP_TIMEOUT;
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

#[derive(Clone)]
pub struct Bearer(pub tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

pub type Client = ChatServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// A ChatService client at `grpc` calling as `user`.
pub async fn client(grpc: &str, user: &str) -> Client {
    let channel = Endpoint::from_shared(format!("http://{grpc}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to ChatService");
    let value = format!("Bearer {}", token(user)).parse().expect("ascii");
    ChatServiceClient::with_interceptor(channel, Bearer(value))
}
