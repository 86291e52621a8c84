//! Protocol v1 end to end: real WebSocket clients against a gateway in front
//! of a real one-node chat cluster. Each test is named after what it proves.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{End, Env, WAIT, Ws, is_presence};
use missive_gateway::Limits;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, sleep, timeout};

fn text_of(event: &Value) -> &str {
    event["message_sent"]["content"]["text"]
        .as_str()
        .unwrap_or_default()
}

async fn direct(a: &mut Ws, peer: &str) -> String {
    let c = a.ok("create_direct", json!({ "peer": peer })).await;
    c["conversation_id"].as_str().expect("an id").to_owned()
}

async fn send(a: &mut Ws, conv: &str, id: &str, text: &str) -> u64 {
    let r = a
        .ok(
            "send",
            json!({ "conversation_id": conv, "client_msg_id": id, "content": { "text": text } }),
        )
        .await;
    r["seq"].as_u64().expect("a seq")
}

async fn history_len(a: &mut Ws, conv: &str) -> usize {
    let h = a
        .ok("history", json!({ "conversation_id": conv, "limit": 200 }))
        .await;
    h["messages"].as_array().expect("messages").len()
}

/// A raw HTTP/1.1 GET; the status code.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_exchange_messages_with_receipts_and_typing() {
    exchange_with_receipts_and_typing(Env::start().await).await;
}

/// The same through a gateway that reaches its node in-process, as `missive
/// serve` runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_exchange_messages_through_an_in_process_link() {
    exchange_with_receipts_and_typing(Env::local(Limits::default()).await).await;
}

async fn exchange_with_receipts_and_typing(env: Env) {
    let mut alice = env.login("alice").await;
    let mut bob = env.login("bob").await;
    bob.subscribe("").await;
    bob.until_caught_up().await;
    alice.subscribe("").await;
    alice.until_caught_up().await;

    let conv = direct(&mut alice, "bob").await;
    bob.next_event_where(|e| e["kind"] == "conversation_created")
        .await;
    let seq = send(&mut alice, &conv, "m-1", "hi bob").await;
    let got = bob.next_event_where(|e| e["kind"] == "message_sent").await;
    assert_eq!(text_of(&got["event"]), "hi bob");
    assert_eq!(got["event"]["seq"], seq);
    assert!(!got["token"].as_str().unwrap_or_default().is_empty());

    // A retried send is answered with the original seq and stores nothing.
    let again = alice
        .ok(
            "send",
            json!({ "conversation_id": conv, "client_msg_id": "m-1", "content": { "text": "hi bob" } }),
        )
        .await;
    assert_eq!(again["seq"], seq);
    assert_eq!(again["duplicate"], true);

    bob.ok(
        "mark_delivered",
        json!({ "conversation_id": conv, "up_to": seq }),
    )
    .await;
    let r = alice
        .next_event_where(|e| e["kind"] == "receipt" && e["receipt"]["user"] == "bob")
        .await;
    assert_eq!(r["event"]["receipt"]["delivered_up_to"], seq);
    bob.ok(
        "mark_read",
        json!({ "conversation_id": conv, "up_to": seq }),
    )
    .await;
    let r = alice
        .next_event_where(|e| e["kind"] == "receipt" && e["receipt"]["read_up_to"] == seq)
        .await;
    assert_eq!(r["event"]["receipt"]["user"], "bob");
    let status = alice
        .ok(
            "message_status",
            json!({ "conversation_id": conv, "seq": seq }),
        )
        .await;
    assert_eq!(status["read_by_all"], true, "{status}");

    bob.ok("typing", json!({ "conversation_id": conv, "typing": true }))
        .await;
    let t = alice
        .next_event_where(|e| e["kind"] == "typing" && e["typing"]["user"] == "bob")
        .await;
    assert_eq!(t["event"]["typing"]["typing"], true);

    bob.ok(
        "react",
        json!({ "conversation_id": conv, "seq": seq, "emoji": "👍" }),
    )
    .await;
    let r = alice
        .next_event_where(|e| e["kind"] == "reaction_set")
        .await;
    assert_eq!(r["event"]["reaction_set"]["emoji"], "👍");

    let h = bob.ok("history", json!({ "conversation_id": conv })).await;
    assert_eq!(h["messages"][0]["content"]["text"], "hi bob");
    assert_eq!(h["messages"][0]["reactions"][0]["emoji"], "👍");
    let inbox = bob.ok("inbox", json!({})).await;
    assert_eq!(inbox["entries"][0]["unread"], 0, "{inbox}");
    let p = alice.ok("presence", json!({ "users": ["bob"] })).await;
    assert_eq!(p["users"][0]["online"], true, "{p}");

    // Errors are typed and carry the request's id.
    let mut carol = env.login("carol").await;
    let e = carol
        .call("get_conversation", json!({ "conversation_id": conv }))
        .await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "permission_denied", "{e}");
    let e = carol.call("launch_rockets", json!({})).await;
    assert_eq!(e["code"], "unknown_type");
    let e = carol.call("send", json!({ "conversation_id": conv })).await;
    assert_eq!(e["code"], "bad_request", "{e}");
    let e = carol
        .call("inbox", json!({ "limit": 1, "colour": "blue" }))
        .await;
    assert_eq!(e["code"], "bad_request", "unknown fields are refused: {e}");
    let pong = carol.call("ping", json!({})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_dropped_connection_gets_exactly_the_missed_events() {
    resume_gets_exactly_the_missed_events(Env::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_through_an_in_process_link_gets_exactly_the_missed_events() {
    resume_gets_exactly_the_missed_events(Env::local(Limits::default()).await).await;
}

async fn resume_gets_exactly_the_missed_events(env: Env) {
    let mut alice = env.login("alice").await;
    let mut bob = env.login("bob").await;
    bob.subscribe("").await;
    bob.until_caught_up().await;
    let conv = direct(&mut alice, "bob").await;
    let s1 = send(&mut alice, &conv, "m-1", "one").await;
    let seen = bob.next_event_where(|e| e["kind"] == "message_sent").await;
    assert_eq!(seen["event"]["seq"], s1);
    let token = seen["token"].as_str().expect("a token").to_owned();
    // The connection drops without a close handshake.
    drop(bob);

    let s2 = send(&mut alice, &conv, "m-2", "two").await;
    let s3 = send(&mut alice, &conv, "m-3", "three").await;

    let mut bob = env.login("bob").await;
    bob.subscribe(&token).await;
    let (events, _) = bob.until_caught_up().await;
    let got: Vec<(u64, String)> = events
        .iter()
        .filter(|f| !is_presence(&f["event"]))
        .map(|f| {
            (
                f["event"]["seq"].as_u64().expect("seq"),
                text_of(&f["event"]).to_owned(),
            )
        })
        .collect();
    assert_eq!(got, vec![(s2, "two".into()), (s3, "three".into())]);
    // And live from there on.
    let s4 = send(&mut alice, &conv, "m-4", "four").await;
    let live = bob.next_event_where(|e| e["kind"] == "message_sent").await;
    assert_eq!(live["event"]["seq"], s4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_a_bounded_queue_and_resumes() {
    const QUEUE: usize = 8;
    const PER_SENDER: usize = 80;
    let env = Env::with(Limits {
        send_queue: QUEUE,
        send_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let mut alice = env.login("alice").await;
    let mut carol = env.login("carol").await;
    let group = alice
        .ok(
            "create_group",
            json!({ "name": "g", "members": ["bob", "carol"] }),
        )
        .await["conversation_id"]
        .as_str()
        .expect("an id")
        .to_owned();

    // Bob's socket takes little: his kernel buffers fill fast.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = socket.connect(env.addr).await.expect("connect");
    let (ws, _) =
        tokio_tungstenite::client_async(env.url(), tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .expect("handshake");
    let mut bob = Ws::new(ws);
    let r = bob.call("auth", json!({ "token": env.token("bob") })).await;
    assert_eq!(r["type"], "result");
    bob.subscribe("").await;
    bob.until_caught_up().await;

    // Bob stops reading while ~10 MB of messages are sent to him.
    let body = "x".repeat(60_000);
    let mut sent = BTreeSet::new();
    for (who, ws) in [("a", &mut alice), ("c", &mut carol)] {
        for i in 0..PER_SENDER {
            // One at a time: a sender reads its results, so it is never the
            // slow consumer of this test.
            let r = ws
                .ok(
                    "send",
                    json!({ "conversation_id": group, "client_msg_id": format!("{who}-{i}"),
                            "content": { "text": body } }),
                )
                .await;
            sent.insert(r["seq"].as_u64().expect("seq"));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.gateway.stats().slow_consumers == 0 {
        assert!(Instant::now() < deadline, "bob was never closed");
        sleep(Duration::from_millis(20)).await;
    }
    let stats = env.gateway.stats();
    assert!(
        stats.queue_high_water <= QUEUE,
        "a connection's queue held {} frames, over its bound {QUEUE}",
        stats.queue_high_water
    );

    // What bob had in his buffers, then the end: the close frame if it fit.
    let (end, frames) = bob.until_end(Duration::from_secs(10)).await;
    assert!(
        matches!(end, End::Closed(Some(4008)) | End::Dropped),
        "ended with {end:?}"
    );
    let mut seen = BTreeSet::new();
    let mut token = String::new();
    for f in frames.iter().filter(|f| f["type"] == "event") {
        if f["event"]["kind"] == "message_sent" {
            assert!(seen.insert(f["event"]["seq"].as_u64().expect("seq")));
        }
        token = f["token"].as_str().expect("token").to_owned();
    }
    assert!(seen.len() < sent.len(), "bob was cut off before the end");

    // Resuming from the last token he saw gives him the rest, once each.
    let mut bob = env.login("bob").await;
    bob.subscribe(&token).await;
    let (events, _) = bob.until_caught_up().await;
    for f in events
        .iter()
        .filter(|f| f["event"]["kind"] == "message_sent")
    {
        let seq = f["event"]["seq"].as_u64().expect("seq");
        assert!(seen.insert(seq), "seq {seq} delivered twice");
    }
    assert_eq!(seen, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_refused_and_closed_with_4001() {
    let env = Env::start().await;
    let mut ws = env.connect().await;
    let r = ws.call("auth", json!({ "token": "not.a.jwt" })).await;
    assert_eq!(r["type"], "error");
    assert_eq!(r["code"], "unauthenticated");
    assert_eq!(ws.until_end(WAIT).await.0, End::Closed(Some(4001)));

    // A token of another key, and a first frame that is not auth.
    let other = missive_api::auth::Auth::hs256(b"some other secret of 32 or more bytes")
        .expect("secret")
        .mint("alice", None, 60)
        .expect("mint");
    let mut ws = env.connect().await;
    let r = ws.call("auth", json!({ "token": other })).await;
    assert_eq!(r["code"], "unauthenticated");
    assert_eq!(ws.until_end(WAIT).await.0, End::Closed(Some(4001)));
    let mut ws = env.connect().await;
    let r = ws.call("inbox", json!({})).await;
    assert_eq!(r["code"], "unauthenticated");
    assert_eq!(ws.until_end(WAIT).await.0, End::Closed(Some(4001)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_and_changes_nothing() {
    let env = Env::start().await;
    let mut alice = env.login("alice").await;
    let conv = direct(&mut alice, "bob").await;
    let limits = Limits::default();

    // Over the request bound: an error, and the connection stays usable.
    let text = "y".repeat(limits.max_request_bytes);
    alice
        .send(
            "send",
            json!({ "conversation_id": conv, "client_msg_id": "big", "content": { "text": text } }),
        )
        .await;
    let e = alice.next_frame().await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "too_large", "{e}");
    assert_eq!(alice.call("ping", json!({})).await["type"], "pong");
    assert_eq!(history_len(&mut alice, &conv).await, 0);

    // Over the hard bound: the connection is closed with 1009.
    let text = "z".repeat(limits.hard_message_bytes);
    let frame = json!({ "type": "send", "req_id": 99, "conversation_id": conv,
                        "client_msg_id": "huge", "content": { "text": text } });
    // The gateway may close before the client has finished writing it.
    let _ = futures_util::SinkExt::send(
        &mut alice.ws,
        tokio_tungstenite::tungstenite::Message::text(frame.to_string()),
    )
    .await;
    let (end, _) = alice.until_end(WAIT).await;
    assert!(
        matches!(end, End::Closed(Some(1009)) | End::Dropped),
        "ended with {end:?}"
    );
    let mut alice = env.login("alice").await;
    assert_eq!(history_len(&mut alice, &conv).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_rate_limit_is_refused_and_changes_nothing() {
    const BURST: usize = 10;
    const TRIED: usize = 30;
    let env = Env::with(Limits {
        requests_per_second: 1.0,
        request_burst: BURST as f64,
        ..Limits::default()
    })
    .await;
    let mut alice = env.login("alice").await;
    let conv = direct(&mut alice, "bob").await;
    let mut ids = Vec::new();
    for i in 0..TRIED {
        ids.push(
            alice
                .send(
                    "send",
                    json!({ "conversation_id": conv, "client_msg_id": format!("m-{i}"),
                            "content": { "text": "hi" } }),
                )
                .await,
        );
    }
    let (mut ok, mut limited) = (0, 0);
    for id in ids {
        let r = alice.answer(id).await;
        match (r["type"].as_str(), r["code"].as_str()) {
            (Some("result"), _) => ok += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            _ => panic!("unexpected answer {r}"),
        }
    }
    assert_eq!(ok + limited, TRIED);
    // The burst (less the create_direct), plus at most a refill or two.
    assert!(ok <= BURST + 1, "{ok} passed");
    assert!(limited >= TRIED - BURST - 1, "{limited} refused");
    sleep(Duration::from_millis(1100)).await;
    assert_eq!(history_len(&mut alice, &conv).await, ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_with_503() {
    let env = Env::with(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let _a = env.login("alice").await;
    let _b = env.login("bob").await;
    match tokio_tungstenite::connect_async(env.url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 503);
        }
        other => panic!("expected a 503, got {:?}", other.map(|_| ())),
    }
    assert_eq!(env.gateway.stats().refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_by_the_auth_and_idle_timeouts() {
    let env = Env::with(Limits {
        auth_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(400),
        ping_interval: Duration::from_secs(30),
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut ws = env.connect().await;
    assert_eq!(ws.until_end(WAIT).await.0, End::Closed(Some(4002)));
    let mut ws = env.login("alice").await;
    assert_eq!(ws.until_end(WAIT).await.0, End::Closed(Some(4009)));

    // Headers that never end: the connection is dropped.
    let mut s = TcpStream::connect(env.addr).await.expect("connect");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = timeout(WAIT, async {
        let mut total = 0;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the gateway drops a client that never ends its headers");
    let _ = n;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_graceful_shutdown_tell_clients_to_reconnect() {
    let mut env = Env::start().await;
    assert_eq!(http_get(env.addr, "/healthz").await, 200);
    let mut alice = env.login("alice").await;
    alice.subscribe("").await;
    alice.until_caught_up().await;
    env.stop_gateway();
    assert_eq!(alice.until_end(WAIT).await.0, End::Closed(Some(1012)));
    if let Some(served) = env.served.take() {
        timeout(WAIT, served)
            .await
            .expect("serve returns after the grace")
            .expect("serve does not panic");
    }

    // A gateway whose only node is not there is not healthy.
    let gw = missive_gateway::Gateway::new(vec!["127.0.0.1:1".into()], Limits::default())
        .expect("a gateway");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { gw.serve(listener, std::future::pending()).await });
    assert_eq!(http_get(addr, "/healthz").await, 503);
}

/// A gateway in front of three nodes keeps its clients served when the node
/// it prefers stops: calls move to another node, and the subscription
/// re-subscribes there from the last token it forwarded.
///
/// Regression (of the test harness): each node used to initialize itself as
/// a one-node cluster when started, so "three nodes" were three separate
/// clusters and the survivors had never heard of the conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_failure_is_invisible_to_subscribers_no_gap_no_duplicate() {
    let mut env = Env::cluster(3, Limits::default()).await;
    let mut alice = env.login("alice").await;
    let mut bob = env.login("bob").await;
    bob.subscribe("").await;
    bob.until_caught_up().await;
    let conv = direct(&mut alice, "bob").await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(send(&mut alice, &conv, &format!("m-{i}"), "before").await);
    }
    // The node the gateway prefers (and bob's stream runs on) goes away.
    env.nodes[0].stop().await;
    for i in 5..10 {
        // A write racing the election may be refused as unavailable: the
        // same client_msg_id makes the retry safe.
        let deadline = Instant::now() + WAIT;
        loop {
            let r = alice
                .call(
                    "send",
                    json!({ "conversation_id": conv, "client_msg_id": format!("m-{i}"),
                            "content": { "text": "after" } }),
                )
                .await;
            if r["type"] == "result" {
                sent.push(r["data"]["seq"].as_u64().expect("seq"));
                break;
            }
            assert_eq!(r["code"], "unavailable", "{r}");
            assert!(Instant::now() < deadline, "no node took the send");
            sleep(Duration::from_millis(100)).await;
        }
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let f = bob.next_frame().await;
        match f["type"].as_str() {
            Some("event") if f["event"]["kind"] == "message_sent" => {
                got.push(f["event"]["seq"].as_u64().expect("seq"));
            }
            Some("event") => {}
            other => panic!("unexpected {other:?}: {f}"),
        }
    }
    sent.dedup();
    assert_eq!(got, sent, "every message once, in order");
}

/// A gateway whose in-process node stops answers its clients at once: a
/// call is refused as `unavailable` (what clients retry elsewhere), and
/// nothing waits on a link that will never answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_node_that_stops_leaves_no_call_waiting() {
    let mut env = Env::local(Limits::default()).await;
    let mut alice = env.login("alice").await;
    let conv = direct(&mut alice, "bob").await;
    send(&mut alice, &conv, "m-1", "before").await;

    env.nodes[0].stop().await;
    let r = timeout(
        WAIT,
        alice.call(
            "send",
            json!({ "conversation_id": conv, "client_msg_id": "m-2", "content": { "text": "after" } }),
        ),
    )
    .await
    .expect("an answer, not a wait");
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["code"], "unavailable", "{r}");
}
