//! The web app in two real browsers: `missive serve` started as a newcomer
//! runs it, and two headless Chromium profiles (alice and bob) driven over
//! the W3C WebDriver protocol through `chromedriver`.
//!
//! The story: alice logs in with the development login, starts a direct chat
//! with bob and sends a message; bob sees it arrive live with an unread
//! badge and opens it; alice's ticks turn blue (read); bob types and alice
//! sees "bob is typing…"; alice sends an image picked with the file input,
//! and it is displayed on both sides; the server restarts while alice
//! writes, and her queued message reaches bob once. Screenshots of both sides at each step
//! land in target/webapp-screenshots/.
//!
//! Chromium (`/usr/bin/chromium`) and `chromedriver` must be installed
//! (Debian: `apt-get install chromium chromium-driver`; CI's .ci/run does
//! it). Without them the test fails and says so: it is never skipped.
//!
//! Every wait polls a condition up to a deadline; nothing is asserted on
//! time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{BIN, free_addr, spawn_serve, start_retrying_lost_ports};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long any one condition may take to become true.
const DEADLINE: Duration = Duration::from_secs(20);
/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// WebDriver's key code for Enter.
const ENTER: &str = "\u{E007}";

/// Kills a child process when dropped, so a failing test leaves nothing
/// running.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `missive serve` on loopback ports with its own data directory.
struct Serve {
    process: Process,
    data: PathBuf,
    /// `--grpc`, `--http`, `--internal`: kept to restart on the same ones.
    addrs: [String; 3],
}

impl Serve {
    /// Starts it on free loopback ports, again on fresh ones if another
    /// process took one first ([`start_retrying_lost_ports`]).
    fn start(data: &Path) -> Serve {
        start_retrying_lost_ports(|| {
            Serve::try_on(data.to_owned(), [free_addr(), free_addr(), free_addr()])
        })
    }

    fn on(data: PathBuf, addrs: [String; 3]) -> Serve {
        Serve::try_on(data, addrs)
            .unwrap_or_else(|stderr| panic!("missive serve did not start:\n{stderr}"))
    }

    /// Starts it on `addrs` and waits for `/healthz`; if it exits first,
    /// what it wrote to stderr.
    fn try_on(data: PathBuf, addrs: [String; 3]) -> Result<Serve, String> {
        let [grpc, http, internal] = &addrs;
        let (child, stderr_path) = spawn_serve(&data, [grpc, http, internal], &[], Stdio::null());
        let mut serve = Serve {
            process: Process(child),
            data,
            addrs,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_call(serve.http(), "GET", "/healthz", None).map(|r| r.0) != Ok(200) {
            if serve.process.0.try_wait().expect("wait").is_some() {
                return Err(std::fs::read_to_string(&stderr_path).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "/healthz never answered 200");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(serve)
    }

    fn http(&self) -> &str {
        &self.addrs[1]
    }

    /// Stops it with SIGTERM (its clients are told to reconnect) and waits.
    fn stop(mut self) -> (PathBuf, [String; 3]) {
        let pid = self.process.0.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.process.0.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "missive serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        (
            std::mem::take(&mut self.data),
            std::mem::take(&mut self.addrs),
        )
    }
}

/// Starts `chromedriver` on a free port, or fails saying what to install.
fn start_chromedriver() -> (Process, String) {
    let install = "install Chromium and its WebDriver (Debian: `apt-get install chromium \
                   chromium-driver`; CI's .ci/run does it)";
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: {install}"
    );
    let addr = free_addr();
    let port = addr.rsplit(':').next().expect("an address has a port");
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("chromedriver could not be started ({e}): {install}"));
    let driver = Process(child);
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok((200, body)) = http_call(&addr, "GET", "/status", None)
            && body["value"]["ready"] == true
        {
            return (driver, addr);
        }
        assert!(Instant::now() < deadline, "chromedriver never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request with a JSON body and `Connection: close`; the answer's
/// status and JSON body (`Null` when it is not JSON).
fn http_call(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write to {addr}: {e}"))?;
    // Read the headers, then exactly the body they announce: chromedriver
    // keeps the connection open whatever `Connection` says.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        if n == 0 {
            return Err(format!("{addr} closed before the end of the headers"));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut payload = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let complete = match length {
            Some(n) => payload.len() >= n,
            None if chunked => payload.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        payload.extend_from_slice(&buf[..n]);
    }
    if chunked {
        payload = dechunk(&payload)?;
    }
    Ok((
        status,
        serde_json::from_slice(&payload).unwrap_or(Value::Null),
    ))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("short chunk")?);
        data = data.get(size + 2..).ok_or("short chunk")?;
    }
}

/// One browser: a WebDriver session with a profile of its own.
struct Browser {
    name: &'static str,
    driver: String,
    session: String,
    shots: PathBuf,
    /// The profile directory lives as long as the browser.
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(name: &'static str, driver: &str, shots: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1180,820",
            "--lang=en-US",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let (status, answer) =
            http_call(driver, "POST", "/session", Some(&caps)).expect("new WebDriver session");
        assert_eq!(status, 200, "chromedriver refused the session: {answer}");
        let session = answer["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Browser {
            name,
            driver: driver.to_owned(),
            session,
            shots: shots.to_owned(),
            _profile: profile,
        }
    }

    /// One WebDriver command; its `value`.
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, answer) = http_call(&self.driver, method, &path, body.as_ref())
            .unwrap_or_else(|e| panic!("{}: {method} {path}: {e}", self.name));
        assert_eq!(
            status, 200,
            "{}: {method} {path} failed: {answer}",
            self.name
        );
        answer["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body) with `args`; its return value.
    fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v[ELEMENT]
            .as_str()
            .expect("an element reference")
            .to_owned()
    }

    /// Clicks an element; finds it again if a render replaced it in between.
    fn click(&self, css: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let el = self.find(css);
            let path = format!("/session/{}/element/{el}/click", self.session);
            match http_call(&self.driver, "POST", &path, Some(&json!({}))) {
                Ok((200, _)) => return,
                Ok((_, answer))
                    if answer["value"]["error"] == "stale element reference"
                        && Instant::now() < deadline => {}
                other => panic!("{}: click {css}: {other:?}", self.name),
            }
        }
    }

    /// Types into an element as a user would (key events, one by one).
    fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Polls `script` (a function body returning a truthy value when the
    /// condition holds) until it holds; fails with screenshots otherwise.
    fn wait(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let v = self.js(script, args.clone());
            // JavaScript's falsy values that JSON can carry.
            let falsy = v.is_null() || v == false || v == "" || v.as_f64() == Some(0.0);
            if !falsy {
                return v;
            }
            if Instant::now() > deadline {
                self.screenshot("failure");
                panic!("{}: {what} did not happen within {DEADLINE:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, step: &str) {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(v.as_str().expect("a base64 screenshot"));
        let path = self.shots.join(format!("{step}-{}.png", self.name));
        std::fs::write(&path, png).expect("write a screenshot");
    }

    fn login(&self, base: &str, user: &str) {
        self.goto(base);
        self.wait(
            "the login screen",
            "return !document.querySelector('#login-screen').hidden",
            json!([]),
        );
        self.type_into("#login-name", &format!("{user}{ENTER}"));
        self.wait(
            "connected after login",
            "return document.body.dataset.view === 'main' \
             && document.body.dataset.connection === 'online'",
            json!([]),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = http_call(&self.driver, "DELETE", &path, None);
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A `width`×`height` RGB PNG of a colour gradient, its pixels in stored
/// (uncompressed) deflate blocks: a valid image with no encoder.
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0); // filter: none
        for x in 0..width {
            raw.extend_from_slice(&[
                (40 + x * 200 / width) as u8,
                (110 + y * 120 / height) as u8,
                237,
            ]);
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &zlib);
    chunk(b"IEND", &[]);
    out
}

/// The loaded image of a sent (not pending) message: its natural width.
const IMAGE_SHOWN: &str = "const img = document.querySelector('.msg[data-seq] img.msg-image'); \
     return img && img.complete && img.naturalWidth > 0 ? img.naturalWidth : null;";

#[test]
fn two_browsers_chat_live_with_receipts_typing_an_image_and_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(&dir.path().join("data"));
    let base = format!("http://{}/", serve.http());
    let (_driver, driver) = start_chromedriver();
    let target = Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("the binary sits in target/<profile>/");
    let shots = target.join("webapp-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");

    let alice = Browser::open("alice", &driver, &shots);
    let bob = Browser::open("bob", &driver, &shots);
    alice.login(&base, "alice");
    bob.login(&base, "bob");
    alice.screenshot("01-logged-in");

    // alice starts a direct chat with bob and says hello.
    alice.click("#new-chat-btn");
    alice.type_into("#new-direct-peer", &format!("bob{ENTER}"));
    alice.wait(
        "the chat with bob open",
        "return !document.querySelector('#chat-pane').hidden \
         && document.querySelector('#chat-title').textContent === 'bob'",
        json!([]),
    );
    let hello = "Hi Bob! Lunch at noon?";
    alice.type_into("#composer-input", &format!("{hello}{ENTER}"));
    alice.wait(
        "the message sent (one tick or more)",
        "return document.querySelector('.msg.own[data-seq] .ticks')",
        json!([]),
    );

    // bob sees it arrive live, unread, then opens it.
    bob.wait(
        "alice's conversation with an unread badge and the preview",
        "const c = document.querySelector('.conv-item[data-title=\"alice\"]'); \
         return c && c.dataset.unread === '1' \
           && c.querySelector('.conv-preview').textContent === arguments[0];",
        json!([hello]),
    );
    bob.screenshot("02-unread");
    bob.click(".conv-item[data-title=\"alice\"]");
    bob.wait(
        "the message shown in the chat",
        "const m = document.querySelector('.msg[data-sender=\"alice\"] .msg-text'); \
         return m && m.textContent === arguments[0];",
        json!([hello]),
    );
    bob.wait(
        "the unread badge gone",
        "return document.querySelector('.conv-item[data-title=\"alice\"]').dataset.unread === '0'",
        json!([]),
    );

    // alice's ticks turn blue; bob is online in her header.
    alice.wait(
        "the read ticks",
        "const t = document.querySelector('.msg.own[data-seq] .ticks'); \
         return t && t.dataset.state === 'read' && getComputedStyle(t).color;",
        json!([]),
    );
    alice.wait(
        "bob shown online",
        "return document.querySelector('#chat-presence').textContent === 'online'",
        json!([]),
    );
    alice.screenshot("03-read");

    // bob types; alice sees it.
    bob.type_into("#composer-input", "Sure, see you");
    alice.wait(
        "the typing indicator",
        "const t = document.querySelector('#typing-indicator'); \
         return !t.hidden && t.textContent === 'bob is typing…';",
        json!([]),
    );
    alice.screenshot("04-typing");
    bob.type_into("#composer-input", &format!(" there!{ENTER}"));
    alice.wait(
        "bob's answer",
        "const m = [...document.querySelectorAll('.msg[data-sender=\"bob\"] .msg-text')]; \
         return m.some((x) => x.textContent === 'Sure, see you there!');",
        json!([]),
    );

    // alice sends an image with the file picker; both sides display it.
    let image = dir.path().join("sunset.png");
    std::fs::write(&image, png(96, 64)).expect("write the image");
    alice.type_into("#file-input", image.to_str().expect("a UTF-8 temp path"));
    let width = alice.wait("the image shown to alice", IMAGE_SHOWN, json!([]));
    assert_eq!(width, 96);
    let width = bob.wait("the image shown to bob", IMAGE_SHOWN, json!([]));
    assert_eq!(width, 96);
    alice.screenshot("05-image");
    bob.screenshot("05-image");

    // The server restarts while alice writes: her message waits in the
    // outbox, then goes out once both have reconnected, and bob, resuming
    // from his last token, gets it exactly once.
    let (data, addrs) = serve.stop();
    alice.wait(
        "the connection lost",
        "return document.body.dataset.connection !== 'online'",
        json!([]),
    );
    let queued = "Sent while the server was down";
    alice.type_into("#composer-input", &format!("{queued}{ENTER}"));
    alice.wait(
        "the message queued",
        "return document.querySelector('.msg.pending .ticks[data-state=\"pending\"]')",
        json!([]),
    );
    alice.screenshot("06-queued");
    let _serve = Serve::on(data, addrs);
    let copies = "return [...document.querySelectorAll('.msg[data-seq] .msg-text')] \
                  .filter((x) => x.textContent === arguments[0]).length;";
    bob.wait("the queued message", copies, json!([queued]));
    alice.wait(
        "the queued message sent",
        "return !document.querySelector('.msg.pending') \
           && document.querySelector('.msg.own[data-seq]:last-child .msg-text').textContent \
              === arguments[0];",
        json!([queued]),
    );
    let seen = "return [...document.querySelectorAll('.msg[data-seq]')] \
                .map((m) => `${m.dataset.seq}:${m.dataset.clientMsgId}`).join(' ') \
                + JSON.stringify(document.body.dataset);";
    assert_eq!(
        bob.js(copies, json!([queued])),
        1,
        "bob: {} / alice: {}",
        bob.js(seen, json!([])),
        alice.js(seen, json!([]))
    );
    alice.screenshot("07-resumed");
    bob.screenshot("07-resumed");
}
