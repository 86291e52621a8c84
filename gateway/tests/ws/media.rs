//! Media by signed, expiring URLs and the development login, end to end: real
//! WebSocket and HTTP clients against a gateway (with a media store in a
//! temporary directory) in front of a real one-node chat cluster. Each test
//! is named after what it proves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{End, Env, Ws};
use missive_gateway::media::{KEY_BYTES, Signer};
use missive_gateway::{Limits, MediaConfig};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const KEY: [u8; KEY_BYTES] = [42; KEY_BYTES];
/// The test store's largest object: small, so the bound is cheap to pass.
const MAX: u64 = 1 << 20;
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

fn media_dir(root: &Path) -> PathBuf {
    root.join("media")
}

/// A gateway with media in `<test dir>/media` and the development login.
async fn env() -> Env {
    Env::build(1, Limits::default(), |gw, dir, chat| {
        let mut config = MediaConfig::new(media_dir(dir), KEY);
        config.max_bytes = MAX;
        let auth = chat.auth().clone();
        gw.with_media(config)
            .expect("a media store")
            .with_dev_login(Arc::new(move |user: &str| {
                auth.mint(user, None, 3600).map_err(|e| e.to_string())
            }))
            .expect("development login")
    })
    .await
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` bytes that start like a PNG, distinct per `seed`.
fn png(len: usize, seed: u64) -> Vec<u8> {
    let mut out = PNG_MAGIC.to_vec();
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push((x >> 33) as u8);
    }
    out.truncate(len);
    out
}

/// Every file under `dir`, at any depth.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("list a directory") {
            let p = e.expect("an entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// How a request body is sent.
enum Req<'a> {
    Nothing,
    /// With its `Content-Length`.
    Sized(&'a [u8]),
    /// With a `Content-Length` other than its length.
    Claiming(u64, &'a [u8]),
    /// `Transfer-Encoding: chunked`, in chunks of 16 KiB.
    Chunked(&'a [u8]),
}

#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request on its own connection. The body is written while
/// the answer is read, so an answer that comes before the body was taken
/// (a refused upload) is still read.
async fn http(addr: SocketAddr, method: &str, path: &str, body: Req<'_>) -> Answer {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    let mut payload = Vec::new();
    match body {
        Req::Nothing => req.push_str("Content-Length: 0\r\n"),
        Req::Sized(b) => {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
            payload.extend_from_slice(b);
        }
        Req::Claiming(n, b) => {
            req.push_str(&format!("Content-Length: {n}\r\n"));
            payload.extend_from_slice(b);
        }
        Req::Chunked(b) => {
            req.push_str("Transfer-Encoding: chunked\r\n");
            for c in b.chunks(16 * 1024) {
                payload.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                payload.extend_from_slice(c);
                payload.extend_from_slice(b"\r\n");
            }
            payload.extend_from_slice(b"0\r\n\r\n");
        }
    }
    req.push_str("\r\n");
    let writer = tokio::spawn(async move {
        // A refused upload may be cut off mid-body: write errors are expected.
        if wr.write_all(req.as_bytes()).await.is_ok() {
            let _ = wr.write_all(&payload).await;
        }
        // The write half stays open until the answer is read: a client that
        // half-closes is taken to have gone away.
        wr
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match timeout(Duration::from_secs(10), rd.read(&mut chunk))
            .await
            .expect("an answer in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    drop(writer.await);
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head}"));
    let answer = Answer {
        status,
        body: buf[split + 4..].to_vec(),
        head,
    };
    if let Some(n) = answer.header("content-length") {
        assert_eq!(answer.body.len().to_string(), n, "a whole body");
    }
    answer
}

async fn upload_grant(ws: &mut Ws, bytes: &[u8], mime: &str) -> Value {
    ws.ok(
        "media_upload",
        json!({ "sha256": sha256(bytes), "size": bytes.len(), "mime_type": mime }),
    )
    .await
}

/// Asks for an upload URL and PUTs `bytes` to it; the HTTP answer.
async fn upload(env: &Env, ws: &mut Ws, bytes: &[u8], mime: &str) -> Answer {
    let g = upload_grant(ws, bytes, mime).await;
    let url = g["upload_url"].as_str().expect("an upload url");
    http(env.addr, "PUT", url, Req::Sized(bytes)).await
}

/// Asserts a refused HTTP answer: its status and code, and an empty store.
fn refused(a: &Answer, status: u16, code: &str, dir: &Path) {
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(a.json()["code"], code, "{a:?}");
    assert_eq!(files(dir), Vec::<PathBuf>::new(), "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_round_trips_and_a_message_can_carry_it() {
    let env = env().await;
    let mut alice = env.login("alice").await;
    let bytes = png(300_000, 1);
    let id = sha256(&bytes);

    let g = upload_grant(&mut alice, &bytes, "image/png").await;
    assert_eq!(g["media_id"], id);
    assert_eq!(g["stored"], false);
    let url = g["upload_url"].as_str().expect("an upload url");
    assert!(url.starts_with(&format!("/media/{id}?")), "relative: {url}");
    assert!(g["expires_ms"].as_u64().expect("expires_ms") > 0);
    let put = http(env.addr, "PUT", url, Req::Sized(&bytes)).await;
    assert_eq!(put.status, 201, "{put:?}");
    assert_eq!(
        put.json(),
        json!({ "media_id": id, "size": bytes.len(), "mime_type": "image/png" })
    );
    let stored = media_dir(env.dir.path())
        .join("sha256")
        .join(&id[..2])
        .join(&id);
    assert_eq!(std::fs::read(&stored).expect("the object"), bytes);
    assert_eq!(files(&media_dir(env.dir.path())), vec![stored.clone()]);

    // Content-addressed: the same bytes again are stored once, and the
    // grant says they are there.
    let again = upload(&env, &mut alice, &bytes, "image/png").await;
    assert_eq!(again.status, 201, "{again:?}");
    assert_eq!(
        upload_grant(&mut alice, &bytes, "image/png").await["stored"],
        true
    );
    assert_eq!(files(&media_dir(env.dir.path())), vec![stored]);

    // A message names the object; the receiver fetches it by its own URL.
    let conv = alice.ok("create_direct", json!({ "peer": "bob" })).await["conversation_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let media =
        json!({ "media_id": id, "mime_type": "image/png", "size": bytes.len(), "name": "cat.png" });
    alice
        .ok(
            "send",
            json!({ "conversation_id": conv, "client_msg_id": "m-1", "content": { "media": media } }),
        )
        .await;
    let mut bob = env.login("bob").await;
    let h = bob.ok("history", json!({ "conversation_id": conv })).await;
    let got = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find_map(|m| m["content"]["media"].as_object().cloned())
        .expect("a message with media");
    assert_eq!(Value::Object(got.clone()), media);

    let u = bob
        .ok(
            "media_url",
            json!({ "media_id": got["media_id"], "mime_type": got["mime_type"] }),
        )
        .await;
    let url = u["url"].as_str().expect("a url");
    assert!(url.starts_with(&format!("/media/{id}?")), "relative: {url}");
    let get = http(env.addr, "GET", url, Req::Nothing).await;
    assert_eq!(get.status, 200, "{}", get.head);
    assert_eq!(get.body, bytes, "the same bytes");
    assert_eq!(get.header("content-type"), Some("image/png"));
    assert_eq!(get.header("x-content-type-options"), Some("nosniff"));
    let cache = get.header("cache-control").expect("cache-control");
    assert!(cache.starts_with("private, max-age="), "{cache}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_get_their_status_and_store_nothing() {
    let env = env().await;
    let dir = media_dir(env.dir.path());
    let mut alice = env.login("alice").await;
    let signer = Signer::new(KEY);
    let bytes = png(50_000, 2);
    let id = sha256(&bytes);

    // Bytes whose hash is not the id.
    let g = upload_grant(&mut alice, &bytes, "image/png").await;
    let url = g["upload_url"].as_str().expect("a url").to_owned();
    let mut other = bytes.clone();
    other[100] ^= 1;
    let a = http(env.addr, "PUT", &url, Req::Sized(&other)).await;
    refused(&a, 400, "hash_mismatch", &dir);

    // Fewer bytes than signed for.
    let a = http(env.addr, "PUT", &url, Req::Sized(&bytes[..1000])).await;
    refused(&a, 400, "size_mismatch", &dir);

    // More bytes than signed for: by their Content-Length before any is
    // read, and while streaming when no length is declared.
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 10]);
    let a = http(env.addr, "PUT", &url, Req::Sized(&longer)).await;
    refused(&a, 413, "media_too_large", &dir);
    let a = http(env.addr, "PUT", &url, Req::Chunked(&longer)).await;
    refused(&a, 413, "media_too_large", &dir);

    // The declared type is not what the bytes are.
    let jpeg_named_png = [&[0xff, 0xd8, 0xff, 0xe0][..], &bytes[4..]].concat();
    let a = upload(&env, &mut alice, &jpeg_named_png, "image/png").await;
    refused(&a, 415, "media_type", &dir);
    let a = upload(&env, &mut alice, &bytes, "image/gif").await;
    refused(&a, 415, "media_type", &dir);

    // A type that is not allowed: refused when asked for, and by a URL
    // signed for it all the same.
    let html = b"<html><script>alert(1)</script></html>";
    let r = alice
        .call(
            "media_upload",
            json!({ "sha256": sha256(html), "size": html.len(), "mime_type": "text/html" }),
        )
        .await;
    assert_eq!(r["code"], "media_type", "{r}");
    let forged = signer.upload_url(&sha256(html), html.len() as u64, "text/html", u64::MAX / 2);
    let a = http(env.addr, "PUT", &forged, Req::Sized(html)).await;
    refused(&a, 415, "media_type", &dir);

    // A tampered URL: another size, another type, another signature.
    let tampered = url.replace(&format!("size={}", bytes.len()), "size=10");
    let a = http(env.addr, "PUT", &tampered, Req::Sized(&bytes[..10])).await;
    refused(&a, 403, "bad_signature", &dir);
    let tampered = url.replace("type=image/png", "type=image/gif");
    let a = http(env.addr, "PUT", &tampered, Req::Sized(&bytes)).await;
    refused(&a, 403, "bad_signature", &dir);
    let (base, sig) = url.split_once("&sig=").expect("a signature");
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{base}&sig={flipped}{}", &sig[1..]);
    let a = http(env.addr, "PUT", &tampered, Req::Sized(&bytes)).await;
    refused(&a, 403, "bad_signature", &dir);

    // An expired URL (signed with the gateway's key, for a past instant).
    let expired = signer.upload_url(&id, bytes.len() as u64, "image/png", 1_000);
    let a = http(env.addr, "PUT", &expired, Req::Sized(&bytes)).await;
    refused(&a, 410, "expired", &dir);

    // Bounds checked when the URL is asked for.
    let r = alice
        .call(
            "media_upload",
            json!({ "sha256": id, "size": MAX + 1, "mime_type": "image/png" }),
        )
        .await;
    assert_eq!(r["code"], "media_too_large", "{r}");
    let r = alice
        .call(
            "media_upload",
            json!({ "sha256": id, "size": 0, "mime_type": "image/png" }),
        )
        .await;
    assert_eq!(r["code"], "invalid_argument", "{r}");
    let r = alice
        .call(
            "media_upload",
            json!({ "sha256": "../../etc/passwd", "size": 3, "mime_type": "image/png" }),
        )
        .await;
    assert_eq!(r["code"], "invalid_argument", "{r}");
    let r = alice
        .call(
            "media_upload",
            json!({ "sha256": id, "size": 3, "mime_type": "image/png", "extra": 1 }),
        )
        .await;
    assert_eq!(r["code"], "bad_request", "{r}");
    assert_eq!(files(&dir), Vec::<PathBuf>::new(), "nothing stored");

    // And the URL that was handed out still works for the right bytes.
    let a = http(env.addr, "PUT", &url, Req::Chunked(&bytes)).await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(files(&dir).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_over_the_signed_size_is_refused_before_the_body_arrives() {
    let env = env().await;
    let dir = media_dir(env.dir.path());
    let mut alice = env.login("alice").await;
    let bytes = png(20_000, 3);
    let g = upload_grant(&mut alice, &bytes, "image/png").await;
    let url = g["upload_url"].as_str().expect("a url");
    // A Content-Length over the signed size is refused before the body.
    let a = http(env.addr, "PUT", url, Req::Claiming(MAX, &bytes)).await;
    refused(&a, 413, "media_too_large", &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_need_a_valid_unexpired_signature_and_a_stored_object() {
    let env = env().await;
    let mut alice = env.login("alice").await;
    let signer = Signer::new(KEY);
    let bytes = png(4_000, 4);
    let id = sha256(&bytes);

    let r = alice
        .call(
            "media_url",
            json!({ "media_id": id, "mime_type": "image/png" }),
        )
        .await;
    assert_eq!(r["code"], "not_found", "{r}");
    let a = http(
        env.addr,
        "GET",
        &signer.download_url(&id, "image/png", u64::MAX / 2),
        Req::Nothing,
    )
    .await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (404, json!("not_found"))
    );

    assert_eq!(
        upload(&env, &mut alice, &bytes, "image/png").await.status,
        201
    );
    let u = alice
        .ok(
            "media_url",
            json!({ "media_id": id, "mime_type": "image/png" }),
        )
        .await;
    let url = u["url"].as_str().expect("a url");
    assert_eq!(http(env.addr, "GET", url, Req::Nothing).await.body, bytes);

    let tampered = url.replace("type=image/png", "type=application/pdf");
    let a = http(env.addr, "GET", &tampered, Req::Nothing).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (403, json!("bad_signature"))
    );
    let a = http(
        env.addr,
        "GET",
        &format!("/media/{id}?type=image/png"),
        Req::Nothing,
    )
    .await;
    assert_eq!(a.status, 400, "{a:?}");
    // An upload URL does not download.
    let put_url = signer.upload_url(&id, bytes.len() as u64, "image/png", u64::MAX / 2);
    let a = http(env.addr, "GET", &put_url, Req::Nothing).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (403, json!("bad_signature"))
    );
    let expired = signer.download_url(&id, "image/png", 1_000);
    let a = http(env.addr, "GET", &expired, Req::Nothing).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (410, json!("expired"))
    );
    let r = alice
        .call(
            "media_url",
            json!({ "media_id": id, "mime_type": "text/html" }),
        )
        .await;
    assert_eq!(r["code"], "media_type", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_requests_before_auth_are_refused() {
    let env = env().await;
    let mut ws = env.connect().await;
    let bytes = png(100, 5);
    let r = ws
        .call(
            "media_upload",
            json!({ "sha256": sha256(&bytes), "size": bytes.len(), "mime_type": "image/png" }),
        )
        .await;
    assert_eq!(r["code"], "unauthenticated", "{r}");
    let (end, _) = ws.until_end(Duration::from_secs(10)).await;
    assert_eq!(end, End::Closed(Some(4001)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_login_answers_a_token_that_authenticates_a_websocket() {
    let env = env().await;
    let body = br#"{"user":"carol"}"#;
    let a = http(env.addr, "POST", "/dev/login", Req::Sized(body)).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let v = a.json();
    assert_eq!(v["user"], "carol");
    let token = v["token"].as_str().expect("a token");
    let mut ws = env.connect().await;
    let r = ws.call("auth", json!({ "token": token })).await;
    assert_eq!(r["type"], "result", "{r}");
    let c = ws.ok("create_direct", json!({ "peer": "dave" })).await;
    let members: Vec<&str> = c["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["user"].as_str())
        .collect();
    assert!(members.contains(&"carol"), "{c}");

    for (body, code) in [
        (&br#"{"user":"no spaces"}"#[..], "invalid_argument"),
        (br#"{"user":""}"#, "invalid_argument"),
        (br#"{"user":"carol","admin":true}"#, "bad_request"),
        (b"user=carol", "bad_request"),
    ] {
        let a = http(env.addr, "POST", "/dev/login", Req::Sized(body)).await;
        assert_eq!(a.status, 400, "{a:?}");
        assert_eq!(a.json()["code"], code, "{a:?}");
    }
    let long = vec![b' '; 4096];
    let a = http(env.addr, "POST", "/dev/login", Req::Sized(&long)).await;
    assert_eq!(a.status, 413, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_configuration_media_is_unavailable_and_dev_login_is_404() {
    let env = Env::start().await;
    let mut alice = env.login("alice").await;
    let bytes = png(100, 6);
    let id = sha256(&bytes);
    let r = alice
        .call(
            "media_upload",
            json!({ "sha256": id, "size": bytes.len(), "mime_type": "image/png" }),
        )
        .await;
    assert_eq!(r["code"], "unavailable", "{r}");
    assert_eq!(r["message"], "media is not configured");
    let r = alice
        .call(
            "media_url",
            json!({ "media_id": id, "mime_type": "image/png" }),
        )
        .await;
    assert_eq!(r["code"], "unavailable", "{r}");
    let url = Signer::new(KEY).upload_url(&id, bytes.len() as u64, "image/png", u64::MAX / 2);
    assert_eq!(
        http(env.addr, "PUT", &url, Req::Sized(&bytes)).await.status,
        404
    );
    let a = http(
        env.addr,
        "POST",
        "/dev/login",
        Req::Sized(br#"{"user":"alice"}"#),
    )
    .await;
    assert_eq!(a.status, 404, "{a:?}");
}
