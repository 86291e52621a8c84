//! The push notifier against a real webhook receiver on loopback: members
//! with no online device are notified of each message, failures are retried
//! with backoff, notifications that fail every attempt become dead letters
//! that `ChatAdmin` lists and re-drives, and online members get no push.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use missive_api::ChatOptions;
use missive_api::push::PushConfig;
use missive_proto::v1 as pb;
use missive_proto::v1::chat_admin_client::ChatAdminClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

/// A webhook receiver: answers 500 to the first `fail_first` requests (all
/// of them while `fail_first` is `usize::MAX`), 200 after, and records the
/// JSON bodies it accepted.
#[derive(Clone)]
struct Receiver {
    url: String,
    requests: Arc<AtomicUsize>,
    fail_first: Arc<AtomicUsize>,
    accepted: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let r = Receiver {
            url: format!("http://{}/push", listener.local_addr().expect("addr")),
            requests: Arc::new(AtomicUsize::new(0)),
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
            accepted: Arc::new(Mutex::new(Vec::new())),
        };
        let me = r.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let Some(body) = read_request(&mut conn).await else {
                        return;
                    };
                    let n = me.requests.fetch_add(1, Ordering::SeqCst);
                    let ok = n >= me.fail_first.load(Ordering::SeqCst);
                    if ok {
                        let v = serde_json::from_slice(&body).expect("a JSON body");
                        me.accepted.lock().expect("lock").push(v);
                    }
                    let status = if ok {
                        "200 OK"
                    } else {
                        "500 Internal Server Error"
                    };
                    let _ = conn
                        .write_all(
                            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                });
            }
        });
        r
    }

    /// Every request succeeds from now on.
    fn heal(&self) {
        self.fail_first.store(0, Ordering::SeqCst);
    }

    fn accepted_seqs(&self) -> BTreeSet<u64> {
        self.accepted
            .lock()
            .expect("lock")
            .iter()
            .map(|v| v["seq"].as_u64().expect("a seq"))
            .collect()
    }
}

/// Reads one HTTP request and returns its body.
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = conn.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf[end + 4..end + 4 + len].to_vec());
        }
    }
}

fn fast_push(max_attempts: u32) -> ChatOptions {
    ChatOptions {
        push: PushConfig {
            max_attempts,
            first_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            call_timeout: Duration::from_secs(2),
            poll: Duration::from_millis(20),
        },
        ..ChatOptions::default()
    }
}

async fn one_node(options: ChatOptions) -> (TestNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = TestNode::start_with(1, &dir.path().join("1"), PARTITIONS, options).await;
    initialize(std::slice::from_ref(&node)).await;
    (node, dir)
}

async fn set_target(c: &mut Client, url: &str, token: &str) {
    c.set_push_target(pb::SetPushTarget {
        url: url.to_owned(),
        token: token.to_owned(),
    })
    .await
    .expect("set the push target");
}

/// Adds the cluster secret to every call.
#[derive(Clone)]
struct Secret;

impl tonic::service::Interceptor for Secret {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert(
            "x-missive-cluster-secret",
            CLUSTER_SECRET.parse().expect("ascii"),
        );
        Ok(r)
    }
}

type Admin = ChatAdminClient<tonic::service::interceptor::InterceptedService<Channel, Secret>>;

fn admin(node: &TestNode) -> Admin {
    let channel = Endpoint::from_shared(format!("http://{}", node.addr))
        .expect("an endpoint")
        .connect_lazy();
    ChatAdminClient::with_interceptor(channel, Secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_member_is_notified_of_each_message_through_retries() {
    let (node, _dir) = one_node(fast_push(5)).await;
    // Two failures first: the retries must carry the notification through.
    let receiver = Receiver::start(2).await;
    let mut alice = node.client("alice", "phone");
    let mut bob = node.client("bob", "phone");
    set_target(&mut bob, &receiver.url, "tok-bob").await;
    let conv = direct(&mut alice, "bob").await;
    let mut seqs = BTreeSet::new();
    for i in 0..3 {
        seqs.insert(
            send(&mut alice, &conv, &format!("m{i}"), "secret words")
                .await
                .seq,
        );
    }
    eventually("bob's device to be notified of every message", || {
        let got = receiver.accepted_seqs();
        let want = seqs.clone();
        async move { want.is_subset(&got).then_some(()) }
    })
    .await;
    let accepted = receiver.accepted.lock().expect("lock").clone();
    for v in &accepted {
        assert_eq!(v["user"], "bob");
        assert_eq!(v["device"], "phone");
        assert_eq!(v["token"], "tok-bob");
        assert_eq!(v["sender"], "alice");
        assert_eq!(v["conversation_id"], conv.as_str());
        // The content never leaves in a notification.
        assert!(!v.to_string().contains("secret words"), "{v}");
    }
    assert!(receiver.requests.load(Ordering::SeqCst) >= accepted.len() + 2);
    // The sender is never notified of its own message.
    assert!(accepted.iter().all(|v| v["user"] != "alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_always_fails_leaves_a_dead_letter_that_redrive_delivers() {
    let attempts = 3;
    let (node, _dir) = one_node(fast_push(attempts)).await;
    let receiver = Receiver::start(usize::MAX).await;
    let mut alice = node.client("alice", "phone");
    let mut bob = node.client("bob", "tablet");
    set_target(&mut bob, &receiver.url, "tok").await;
    let conv = direct(&mut alice, "bob").await;
    let sent = send(&mut alice, &conv, "m1", "hello").await;
    let mut admin = admin(&node);
    let letters = eventually("a dead letter", || {
        let mut admin = admin.clone();
        async move {
            let l = admin
                .list_dead_letters(pb::ListDeadLettersRequest { limit: 0 })
                .await
                .expect("list dead letters")
                .into_inner()
                .letters;
            (!l.is_empty()).then_some(l)
        }
    })
    .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let l = &letters[0];
    assert_eq!((l.user.as_str(), l.device.as_str()), ("bob", "tablet"));
    assert_eq!(
        (l.conversation_id.as_str(), l.seq),
        (conv.as_str(), sent.seq)
    );
    assert_eq!(l.attempts, attempts);
    assert!(l.last_error.contains("500"), "{}", l.last_error);
    assert_eq!(receiver.requests.load(Ordering::SeqCst), attempts as usize);

    // Still failing: the re-drive reports it and the letter stays.
    let r = admin
        .redrive_dead_letters(pb::RedriveRequest { letters: vec![] })
        .await
        .expect("redrive")
        .into_inner();
    assert_eq!((r.delivered, r.failed), (0, 1));

    receiver.heal();
    let r = admin
        .redrive_dead_letters(pb::RedriveRequest { letters: vec![] })
        .await
        .expect("redrive")
        .into_inner();
    assert_eq!((r.delivered, r.failed), (1, 0));
    assert_eq!(receiver.accepted_seqs(), BTreeSet::from([sent.seq]));
    let left = admin
        .list_dead_letters(pb::ListDeadLettersRequest { limit: 0 })
        .await
        .expect("list dead letters")
        .into_inner()
        .letters;
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_member_gets_no_push_and_admin_calls_need_the_cluster_secret() {
    let (node, _dir) = one_node(fast_push(2)).await;
    let receiver = Receiver::start(0).await;
    let mut alice = node.client("alice", "phone");
    let mut bob = node.client("bob", "phone");
    let mut carol = node.client("carol", "phone");
    set_target(&mut bob, &receiver.url, "tok-bob").await;
    set_target(&mut carol, &receiver.url, "tok-carol").await;
    let conv = group(&mut alice, "trio", &["bob", "carol"]).await;
    // Bob is online: a live subscription.
    let mut sub = Sub::open(&mut bob, "").await;
    sub.until_caught_up().await;
    eventually("bob to be online", || {
        let mut alice = alice.clone();
        async move {
            let p = alice
                .presence(pb::PresenceRequest {
                    users: vec!["bob".into()],
                })
                .await
                .ok()?
                .into_inner();
            p.users.first().is_some_and(|u| u.online).then_some(())
        }
    })
    .await;
    let sent = send(&mut alice, &conv, "m1", "hi both").await;
    eventually("carol to be notified", || {
        let got = receiver.accepted_seqs();
        async move { got.contains(&sent.seq).then_some(()) }
    })
    .await;
    // The cursor has moved past the message: nothing more will come for it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let users: Vec<String> = receiver
        .accepted
        .lock()
        .expect("lock")
        .iter()
        .map(|v| v["user"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(users.iter().all(|u| u == "carol"), "{users:?}");
    drop(sub);

    let channel = Endpoint::from_shared(format!("http://{}", node.addr))
        .expect("an endpoint")
        .connect_lazy();
    let r = ChatAdminClient::new(channel)
        .list_dead_letters(pb::ListDeadLettersRequest { limit: 0 })
        .await;
    assert_code(
        r,
        tonic::Code::Unauthenticated,
        "ChatAdmin without the secret",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_push_targets_are_refused_with_a_reason() {
    let (node, _dir) = one_node(fast_push(2)).await;
    let mut bob = node.client("bob", "phone");
    let r = bob
        .set_push_target(pb::SetPushTarget {
            url: "https://push.example/x".into(),
            token: "t".into(),
        })
        .await;
    assert_code(r, tonic::Code::InvalidArgument, "an https target");
}
