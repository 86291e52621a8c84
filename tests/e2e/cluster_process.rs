//! Three real `missive node` processes on 127.0.0.1 under a steady write
//! load: the leader of a partition is killed with SIGKILL and restarted
//! from its directory. Afterwards every acknowledged write is in the
//! committed log of all three nodes exactly once, at the index it was
//! acknowledged with, in the order it was acknowledged, and the three logs
//! are identical.

use std::collections::{BTreeMap, HashMap};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use missive_proto::v1 as pb;
use missive_proto::v1::raft_internal_client::RaftInternalClient;
use missive_raft::ClusterSecret;
use missive_raft::kv;
use missive_raft::partition::partition_of;
use tonic::transport::{Channel, Endpoint};

const BIN: &str = env!("CARGO_BIN_EXE_missive");
const SECRET: &str = "process-test-secret";
const PARTITIONS: u32 = 2;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct Cluster {
    dir: tempfile::TempDir,
    addrs: Vec<String>,
    children: Vec<Option<Child>>,
}

impl Cluster {
    fn data(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("node{}", i + 1))
    }

    fn start(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.path().join(format!("node{}.log", i + 1)))
            .expect("log file");
        let child = Command::new(BIN)
            .args([
                "node",
                "--kv",
                "--id",
                &(i + 1).to_string(),
                "--listen",
                &self.addrs[i],
            ])
            .arg("--data")
            .arg(self.data(i))
            .args(["--partitions", &PARTITIONS.to_string(), "--secret", SECRET])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn node");
        self.children[i] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&self.addrs[i]).is_err() {
            assert!(Instant::now() < deadline, "node {} did not listen", i + 1);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            // Child::kill is SIGKILL.
            c.kill().expect("kill");
            c.wait().expect("reap");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .args(["--secret", SECRET])
        .output()
        .expect("run missive");
    assert!(
        out.status.success(),
        "missive {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn client(addr: &str) -> RaftInternalClient<Channel> {
    let ch = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy();
    RaftInternalClient::new(ch)
}

fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    ClusterSecret::new(SECRET).expect("secret").attach(&mut r);
    r
}

async fn status(addr: &str) -> Option<pb::StatusResponse> {
    let mut c = client(addr);
    let call = c.status(request(pb::StatusRequest {}, Duration::from_secs(2)));
    tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .ok()?
        .ok()
        .map(tonic::Response::into_inner)
}

/// An acknowledged write.
#[derive(Debug)]
struct Ack {
    partition: u32,
    key: String,
    index: u64,
    /// The test's phase when it was acknowledged: 0 before the kill, 1 while
    /// the node was down, 2 after its restart.
    phase: u8,
}

/// Writes unique keys round-robin through the three nodes until `stop`.
async fn load(
    addrs: Vec<String>,
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
) -> (Vec<Ack>, usize) {
    let clients: Vec<_> = addrs.iter().map(|a| client(a)).collect();
    let (mut acks, mut failed) = (Vec::new(), 0);
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("k{i:06}");
        let partition = partition_of(key.as_bytes(), PARTITIONS);
        let command = kv::set(&key, "v");
        let req = request(
            pb::ForwardRequest {
                partition,
                command: Some(pb::Command {
                    body: command.body,
                    request_id: command.request_id,
                }),
                relayed: false,
            },
            Duration::from_secs(5),
        );
        let mut c = clients[i % 3].clone();
        match tokio::time::timeout(Duration::from_secs(6), c.forward(req)).await {
            Ok(Ok(resp)) => acks.push(Ack {
                partition,
                key,
                index: resp.into_inner().index,
                phase: phase.load(Ordering::SeqCst),
            }),
            _ => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        i += 1;
    }
    (acks, failed)
}

/// `partition -> [(index, key)]` from `missive kv dump`.
fn dump(data: &Path) -> BTreeMap<u32, Vec<(u64, String)>> {
    let text = cli_no_secret(&["kv", "dump", "--data", &data.display().to_string()]);
    let mut out: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[2], "set", "unexpected entry {line:?}");
        out.entry(f[0].parse().expect("partition"))
            .or_default()
            .push((f[1].parse().expect("index"), f[3].to_owned()));
    }
    out
}

fn cli_no_secret(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("run missive");
    assert!(
        out.status.success(),
        "missive {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_leader_under_load_loses_and_duplicates_no_acknowledged_write() {
    let mut cluster = Cluster {
        dir: tempfile::tempdir().expect("tempdir"),
        addrs: (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect(),
        children: vec![None, None, None],
    };
    for i in 0..3 {
        cluster.start(i);
    }
    let members = cluster
        .addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    cli(&[
        "cluster",
        "init",
        "--node",
        &cluster.addrs[0],
        "--members",
        &members,
    ]);

    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(0));
    let writer = tokio::spawn(load(cluster.addrs.clone(), stop.clone(), phase.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // SIGKILL the leader of partition 0, let the load run without it, then
    // restart it from its directory.
    let leader = status(&cluster.addrs[1])
        .await
        .and_then(|s| s.partitions[0].leader)
        .expect("partition 0 has a leader");
    let victim = (leader - 1) as usize;
    cluster.kill(victim);
    phase.store(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start(victim);
    phase.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let (acks, failed) = writer.await.expect("writer");
    assert!(
        acks.len() > 50,
        "too few writes acknowledged: {} ({failed} failed)",
        acks.len()
    );
    // The surviving nodes elected a new leader for the partition and their
    // forwarding found it while the old one was down.
    assert!(
        acks.iter().any(|a| a.partition == 0 && a.phase == 1),
        "no write to partition 0 was acknowledged while its leader was down"
    );

    // Wait (bounded) until the three nodes applied the same entries.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut applied = Vec::new();
        for a in &cluster.addrs {
            applied.push(status(a).await.map(|s| {
                s.partitions
                    .iter()
                    .map(|p| (p.applied, p.committed))
                    .collect::<Vec<_>>()
            }));
        }
        if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not converge: {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..3 {
        cluster.kill(i);
    }

    let logs: Vec<_> = (0..3).map(|i| dump(&cluster.data(i))).collect();
    assert_eq!(logs[0], logs[1], "nodes 1 and 2 differ");
    assert_eq!(logs[0], logs[2], "nodes 1 and 3 differ");
    let log = &logs[0];
    let mut seen: HashMap<&str, (u32, u64, usize)> = HashMap::new();
    for (p, entries) in log {
        for (index, key) in entries {
            let e = seen.entry(key).or_insert((*p, *index, 0));
            e.2 += 1;
        }
    }
    let mut last_index: BTreeMap<u32, u64> = BTreeMap::new();
    for ack in &acks {
        let (p, index, count) = seen
            .get(ack.key.as_str())
            .unwrap_or_else(|| panic!("acknowledged {ack:?} is missing"));
        assert_eq!(*count, 1, "acknowledged {ack:?} is present {count} times");
        assert_eq!((*p, *index), (ack.partition, ack.index), "{ack:?} moved");
        let last = last_index.entry(ack.partition).or_insert(0);
        assert!(ack.index > *last, "{ack:?} is out of acknowledgment order");
        *last = ack.index;
    }
    println!(
        "{} writes acknowledged, {failed} failed, node {} killed and restarted",
        acks.len(),
        victim + 1
    );
}
