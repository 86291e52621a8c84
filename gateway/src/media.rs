//! Media: attachments kept on the gateway's local disk, named by the SHA-256
//! of their bytes, moved in and out over plain HTTP with signed, expiring
//! URLs (docs/protocol.md, "Media").
//!
//! A client asks over its authenticated WebSocket for a URL (`media_upload`,
//! `media_url`); the URL is the capability: an HMAC-SHA256 with the
//! gateway's key over the method, the id, the size (uploads), the content
//! type and the expiry. The HTTP side holds no session and checks nothing
//! but that signature and the bytes themselves, so it works behind any host
//! and any number of gateways that share the key.
//!
//! Invariants:
//! - An object at `<dir>/sha256/<2 hex>/<id>` is complete and durable, and
//!   the SHA-256 of its bytes is `id`: it was written to a temporary file,
//!   hashed while written, checked, fsynced, renamed into place, and its
//!   directory fsynced. Objects are never modified, so gateways may share a
//!   directory or copy objects between them by name.
//! - A refused or broken upload leaves nothing: its temporary file is
//!   removed when the upload ends, however it ends.
//! - An upload reads at most its signed `size` bytes and stops at the first
//!   one over; at most [`MediaConfig::max_uploads`] uploads and
//!   [`MediaConfig::max_downloads`] downloads run at once, and one more is
//!   answered 503 at once (nothing waits in a queue).
//! - Only types of [`ALLOWED_TYPES`] are stored or served, each checked
//!   against its magic bytes on upload, and served with `nosniff` and a
//!   sandboxing Content-Security-Policy, so no stored object runs as a page
//!   of the gateway's origin.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;

/// Largest object accepted by default (16 MiB).
pub const MAX_BYTES: u64 = 16 << 20;

/// How long a signed URL stays valid by default.
pub const URL_TTL: Duration = Duration::from_secs(15 * 60);

/// Uploads one gateway receives at once by default; one more is answered 503.
/// With [`MAX_BYTES`] objects this bounds the disk being written to 256 MiB
/// and the memory to one chunk per upload.
pub const MAX_UPLOADS: usize = 16;

/// Downloads one gateway sends at once by default; one more is answered 503.
/// Each holds one open file and one chunk of [`CHUNK_BYTES`] at a time.
pub const MAX_DOWNLOADS: usize = 256;

/// An upload from which no bytes arrive for this long is dropped (408), so a
/// stalled client cannot hold an upload slot.
pub const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes read from disk per chunk of a download.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Bytes of a media key.
pub const KEY_BYTES: usize = 32;

/// The content types stored and served. Each has magic bytes that are
/// checked on upload, and none is run by a browser as a page.
pub const ALLOWED_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "audio/ogg",
    "video/mp4",
];

/// Bytes of an object's start that [`magic_matches`] looks at.
const MAGIC_BYTES: usize = 12;

/// Temporary files older than this when the store opens are the leftovers of
/// a gateway that stopped mid-upload (a live upload never idles this long).
const STALE_PARTIAL: Duration = Duration::from_secs(3600);

/// Sent with every download: the object is data, never a page of this origin.
const DOWNLOAD_CSP: &str = "default-src 'none'; sandbox";

/// The `code` of media errors, in `error` frames and HTTP error bodies.
pub mod code {
    pub const INVALID_ARGUMENT: &str = "invalid_argument";
    pub const TOO_LARGE: &str = "media_too_large";
    pub const TYPE: &str = "media_type";
    pub const HASH_MISMATCH: &str = "hash_mismatch";
    pub const SIZE_MISMATCH: &str = "size_mismatch";
    pub const BAD_SIGNATURE: &str = "bad_signature";
    pub const EXPIRED: &str = "expired";
    pub const NOT_FOUND: &str = "not_found";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const TIMEOUT: &str = "timeout";
    pub const INTERNAL: &str = "internal";
}

/// Where media is kept and how it is bounded.
#[derive(Clone)]
pub struct MediaConfig {
    /// The directory of the store: objects under `sha256/`, uploads in
    /// progress under `tmp/`. Created if missing.
    pub dir: PathBuf,
    /// The key URLs are signed with. Gateways that share it accept each
    /// other's URLs; keeping it across restarts keeps URLs valid.
    pub key: [u8; KEY_BYTES],
    /// Largest object (bytes). See [`MAX_BYTES`].
    pub max_bytes: u64,
    /// Lifetime of a signed URL. See [`URL_TTL`].
    pub url_ttl: Duration,
    /// See [`MAX_UPLOADS`].
    pub max_uploads: usize,
    /// See [`MAX_DOWNLOADS`].
    pub max_downloads: usize,
    /// See [`UPLOAD_IDLE_TIMEOUT`].
    pub upload_idle_timeout: Duration,
}

impl MediaConfig {
    /// A store in `dir` signing with `key`, with the default bounds.
    pub fn new(dir: impl Into<PathBuf>, key: [u8; KEY_BYTES]) -> MediaConfig {
        MediaConfig {
            dir: dir.into(),
            key,
            max_bytes: MAX_BYTES,
            url_ttl: URL_TTL,
            max_uploads: MAX_UPLOADS,
            max_downloads: MAX_DOWNLOADS,
            upload_idle_timeout: UPLOAD_IDLE_TIMEOUT,
        }
    }
}

impl fmt::Debug for MediaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaConfig")
            .field("dir", &self.dir)
            .field("key", &"<redacted>")
            .field("max_bytes", &self.max_bytes)
            .field("url_ttl", &self.url_ttl)
            .field("max_uploads", &self.max_uploads)
            .field("max_downloads", &self.max_downloads)
            .field("upload_idle_timeout", &self.upload_idle_timeout)
            .finish()
    }
}

/// Why a media request was refused. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A malformed id, query or field.
    #[error("{0}")]
    Invalid(String),
    /// Over the store's limit or over the size the URL was signed for.
    #[error("media is at most {max} bytes")]
    TooLarge { max: u64 },
    /// A type not allowed, or bytes that are not of the declared type.
    #[error("{0}")]
    Type(String),
    /// The bytes' SHA-256 is not the id.
    #[error("the SHA-256 of the bytes is not the media id")]
    HashMismatch,
    /// Fewer bytes than the URL was signed for.
    #[error("{got} bytes received; the upload was signed for {declared}")]
    SizeMismatch { declared: u64, got: u64 },
    /// The URL's signature is not the gateway's for these parameters.
    #[error("the URL's signature does not match")]
    BadSignature,
    /// The URL expired.
    #[error("the URL has expired: ask for a new one")]
    Expired,
    /// No such object.
    #[error("no such media")]
    NotFound,
    /// This gateway keeps no media.
    #[error("media is not configured")]
    NotConfigured,
    /// Every upload or download slot is taken; retry later.
    #[error("too many {0} at once: retry later")]
    Busy(&'static str),
    /// The client stopped sending.
    #[error("no bytes arrived for {0:?}")]
    Timeout(Duration),
    /// The request body broke off.
    #[error("the upload broke off: {0}")]
    Body(String),
    /// The disk failed.
    #[error("storage: {0}")]
    Io(#[from] io::Error),
}

impl MediaError {
    /// The `code` clients see.
    pub fn code(&self) -> &'static str {
        match self {
            MediaError::Invalid(_) | MediaError::Body(_) => code::INVALID_ARGUMENT,
            MediaError::TooLarge { .. } => code::TOO_LARGE,
            MediaError::Type(_) => code::TYPE,
            MediaError::HashMismatch => code::HASH_MISMATCH,
            MediaError::SizeMismatch { .. } => code::SIZE_MISMATCH,
            MediaError::BadSignature => code::BAD_SIGNATURE,
            MediaError::Expired => code::EXPIRED,
            MediaError::NotFound => code::NOT_FOUND,
            MediaError::NotConfigured | MediaError::Busy(_) => code::UNAVAILABLE,
            MediaError::Timeout(_) => code::TIMEOUT,
            MediaError::Io(_) => code::INTERNAL,
        }
    }

    /// The HTTP status of the media routes.
    pub fn status(&self) -> StatusCode {
        match self {
            MediaError::Invalid(_)
            | MediaError::Body(_)
            | MediaError::HashMismatch
            | MediaError::SizeMismatch { .. } => StatusCode::BAD_REQUEST,
            MediaError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            MediaError::Type(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            MediaError::BadSignature => StatusCode::FORBIDDEN,
            MediaError::Expired => StatusCode::GONE,
            MediaError::NotFound | MediaError::NotConfigured => StatusCode::NOT_FOUND,
            MediaError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            MediaError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            MediaError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for MediaError {
    fn into_response(self) -> Response {
        if let MediaError::Io(e) = &self {
            tracing::warn!(error = %e, "media storage");
        }
        let body = json!({ "code": self.code(), "message": self.to_string() }).to_string();
        (
            self.status(),
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response()
    }
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A media id: the SHA-256 of the bytes as 64 lowercase hex digits (so it
/// is also a valid ChatService id for `content.media.media_id`).
pub fn check_id(id: &str) -> Result<(), MediaError> {
    if id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(MediaError::Invalid(
            "a media id is a SHA-256: 64 lowercase hex digits".into(),
        ))
    }
}

/// `mime` if it is one of [`ALLOWED_TYPES`].
pub fn check_type(mime: &str) -> Result<&'static str, MediaError> {
    ALLOWED_TYPES
        .iter()
        .find(|t| **t == mime)
        .copied()
        .ok_or_else(|| {
            MediaError::Type(format!(
                "media type {mime:?} is not allowed (allowed: {})",
                ALLOWED_TYPES.join(", ")
            ))
        })
}

/// Whether the first bytes of an object (at least the first 12, or all of a
/// shorter one) are those of `mime`.
pub fn magic_matches(mime: &str, head: &[u8]) -> bool {
    match mime {
        "image/png" => head.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" => head.starts_with(&[0xff, 0xd8, 0xff]),
        "image/gif" => head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a"),
        "image/webp" => head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP",
        "application/pdf" => head.starts_with(b"%PDF-"),
        "audio/ogg" => head.starts_with(b"OggS"),
        "video/mp4" => head.len() >= 8 && &head[4..8] == b"ftyp",
        _ => false,
    }
}

/// Which of the two signed URLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Put,
    Get,
}

/// Signs and checks media URLs with one key. Public so that a deployment can
/// hand out URLs from elsewhere, and so tests can forge expired ones.
#[derive(Clone)]
pub struct Signer {
    key: [u8; KEY_BYTES],
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl Signer {
    pub fn new(key: [u8; KEY_BYTES]) -> Signer {
        Signer { key }
    }

    /// The MAC over every signed parameter. Fields are joined with NUL,
    /// which none of them can hold (hex, digits, an allowed type), so no two
    /// parameter sets sign the same bytes.
    fn mac(&self, method: Method, id: &str, size: Option<u64>, mime: &str, exp: u64) -> HmacSha256 {
        let mut m =
            HmacSha256::new_from_slice(&self.key).expect("HMAC-SHA256 takes a key of any length");
        let method = match method {
            Method::Put => "PUT",
            Method::Get => "GET",
        };
        let size = size.map(|s| s.to_string()).unwrap_or_default();
        for part in [
            "missive-media-v1",
            method,
            id,
            &size,
            mime,
            &exp.to_string(),
        ] {
            m.update(part.as_bytes());
            m.update(b"\0");
        }
        m
    }

    /// The signature of one URL (base64url, no padding).
    pub fn sign(
        &self,
        method: Method,
        id: &str,
        size: Option<u64>,
        mime: &str,
        exp: u64,
    ) -> String {
        URL_SAFE_NO_PAD.encode(
            self.mac(method, id, size, mime, exp)
                .finalize()
                .into_bytes(),
        )
    }

    /// Whether `sig` signs these parameters; compared in constant time.
    pub fn verify(
        &self,
        method: Method,
        id: &str,
        size: Option<u64>,
        mime: &str,
        exp: u64,
        sig: &str,
    ) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(sig) else {
            return false;
        };
        self.mac(method, id, size, mime, exp)
            .verify_slice(&raw)
            .is_ok()
    }

    /// `/media/<id>?size=&type=&exp=&sig=`: where `size` bytes of `mime`
    /// may be PUT until `exp` (ms since the epoch).
    pub fn upload_url(&self, id: &str, size: u64, mime: &str, exp: u64) -> String {
        let sig = self.sign(Method::Put, id, Some(size), mime, exp);
        format!("/media/{id}?size={size}&type={mime}&exp={exp}&sig={sig}")
    }

    /// `/media/<id>?type=&exp=&sig=`: where the object may be fetched as
    /// `mime` until `exp`.
    pub fn download_url(&self, id: &str, mime: &str, exp: u64) -> String {
        let sig = self.sign(Method::Get, id, None, mime, exp);
        format!("/media/{id}?type={mime}&exp={exp}&sig={sig}")
    }
}

/// A signed URL handed to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Relative (`/media/…`), so it works behind any host.
    pub url: String,
    /// When the URL stops working (ms since the epoch).
    pub expires_ms: u64,
    /// Whether the object is stored already (an upload may then be skipped).
    pub stored: bool,
}

/// What an upload stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub media_id: String,
    pub size: u64,
    pub mime_type: &'static str,
}

/// The parameters of a media URL's query.
#[derive(Debug, Default)]
struct Query {
    size: Option<u64>,
    mime: Option<String>,
    exp: Option<u64>,
    sig: Option<String>,
}

impl Query {
    fn parse(q: Option<&str>) -> Result<Query, MediaError> {
        let mut out = Query::default();
        for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v)?;
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| MediaError::Invalid(format!("{k} must be a number")))
            };
            let dup = match k {
                "size" => out.size.replace(number(&v)?).is_some(),
                "exp" => out.exp.replace(number(&v)?).is_some(),
                "type" => out.mime.replace(v).is_some(),
                "sig" => out.sig.replace(v).is_some(),
                // Not signed, so not read: a cache-buster and the like pass.
                _ => false,
            };
            if dup {
                return Err(MediaError::Invalid(format!("{k} is given twice")));
            }
        }
        Ok(out)
    }
}

fn percent_decode(s: &str) -> Result<String, MediaError> {
    let bad = || MediaError::Invalid("a malformed query".into());
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Removes an upload's temporary file unless it was renamed into place: a
/// refused, broken or cancelled upload (the client went away and hyper
/// dropped the handler) leaves nothing behind.
struct Partial {
    path: PathBuf,
    placed: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.placed {
            // Best effort: a file that cannot be removed now is stale at the
            // next start and removed then.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The media store of one gateway.
#[derive(Debug)]
pub struct Media {
    config: MediaConfig,
    signer: Signer,
    /// `<dir>/sha256`: complete objects only.
    objects: PathBuf,
    /// `<dir>/tmp`: uploads in progress, on the same file system as
    /// `objects` so that placing one is an atomic rename.
    partials: PathBuf,
    /// Upload slots ([`MediaConfig::max_uploads`]).
    uploads: Arc<Semaphore>,
    /// Download slots ([`MediaConfig::max_downloads`]).
    downloads: Arc<Semaphore>,
}

impl Media {
    /// Opens (creating) the store in `config.dir`, removing temporary files a
    /// stopped gateway left behind.
    pub fn open(config: MediaConfig) -> io::Result<Media> {
        let objects = config.dir.join("sha256");
        let partials = config.dir.join("tmp");
        std::fs::create_dir_all(&objects)?;
        std::fs::create_dir_all(&partials)?;
        for entry in std::fs::read_dir(&partials)? {
            let entry = entry?;
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_PARTIAL);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Media {
            signer: Signer::new(config.key),
            uploads: Arc::new(Semaphore::new(config.max_uploads)),
            downloads: Arc::new(Semaphore::new(config.max_downloads)),
            objects,
            partials,
            config,
        })
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// Where object `id` (already checked) lives.
    pub fn path_of(&self, id: &str) -> PathBuf {
        self.objects.join(&id[..2]).join(id)
    }

    async fn is_stored(&self, id: &str) -> Result<bool, MediaError> {
        Ok(tokio::fs::try_exists(self.path_of(id)).await?)
    }

    /// A URL to PUT `size` bytes of `mime` whose SHA-256 is `id`.
    pub async fn grant_upload(
        &self,
        id: &str,
        size: u64,
        mime: &str,
        now_ms: u64,
    ) -> Result<Grant, MediaError> {
        check_id(id)?;
        let mime = check_type(mime)?;
        if size == 0 {
            return Err(MediaError::Invalid("media size must be at least 1".into()));
        }
        if size > self.config.max_bytes {
            return Err(MediaError::TooLarge {
                max: self.config.max_bytes,
            });
        }
        let exp = self.expiry(now_ms);
        Ok(Grant {
            url: self.signer.upload_url(id, size, mime, exp),
            expires_ms: exp,
            stored: self.is_stored(id).await?,
        })
    }

    /// A URL to GET object `id` as `mime`; `NotFound` if it is not stored.
    pub async fn grant_download(
        &self,
        id: &str,
        mime: &str,
        now_ms: u64,
    ) -> Result<Grant, MediaError> {
        check_id(id)?;
        let mime = check_type(mime)?;
        if !self.is_stored(id).await? {
            return Err(MediaError::NotFound);
        }
        let exp = self.expiry(now_ms);
        Ok(Grant {
            url: self.signer.download_url(id, mime, exp),
            expires_ms: exp,
            stored: true,
        })
    }

    fn expiry(&self, now_ms: u64) -> u64 {
        let ttl = u64::try_from(self.config.url_ttl.as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_add(ttl)
    }

    /// Checks a URL's id, signature and expiry; its type, and its size for a
    /// PUT.
    fn authorize(
        &self,
        method: Method,
        id: &str,
        query: Option<&str>,
        now_ms: u64,
    ) -> Result<(Option<u64>, &'static str, u64), MediaError> {
        check_id(id)?;
        let q = Query::parse(query)?;
        let missing = |what: &str| MediaError::Invalid(format!("the URL has no {what}"));
        let mime = q.mime.ok_or_else(|| missing("type"))?;
        let exp = q.exp.ok_or_else(|| missing("exp"))?;
        let sig = q.sig.ok_or_else(|| missing("sig"))?;
        let size = match method {
            Method::Put => Some(q.size.ok_or_else(|| missing("size"))?),
            Method::Get => None,
        };
        if !self.signer.verify(method, id, size, &mime, exp, &sig) {
            return Err(MediaError::BadSignature);
        }
        if now_ms > exp {
            return Err(MediaError::Expired);
        }
        // Signed by this key, so within bounds when it was signed; checked
        // again because the bounds may have changed since.
        let mime = check_type(&mime)?;
        if let Some(s) = size
            && s > self.config.max_bytes
        {
            return Err(MediaError::TooLarge {
                max: self.config.max_bytes,
            });
        }
        Ok((size, mime, exp))
    }

    /// Serves `PUT /media/{id}?size=&type=&exp=&sig=`.
    pub async fn put(
        &self,
        id: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Body,
        now_ms: u64,
    ) -> Result<Stored, MediaError> {
        let (size, mime, _) = self.authorize(Method::Put, id, query, now_ms)?;
        let size = size.expect("a PUT is authorized with its size");
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > size) {
            // Refused before a byte is read.
            return Err(MediaError::TooLarge { max: size });
        }
        let _slot = self
            .uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| MediaError::Busy("uploads"))?;
        let path = self.path_of(id);
        if tokio::fs::try_exists(&path).await? {
            // Content-addressed: the stored object is these bytes already
            // if they hash to `id`. Check them anyway (and read nothing
            // more than `size`) so a wrong upload is refused the same way
            // whether or not the object exists.
            return self.receive(id, size, mime, body, None).await;
        }
        self.receive(id, size, mime, body, Some(path)).await
    }

    /// Streams the body to a temporary file while hashing it, checks it, and
    /// renames it to `place` (`None`: the object is stored already).
    async fn receive(
        &self,
        id: &str,
        size: u64,
        mime: &'static str,
        body: Body,
        place: Option<PathBuf>,
    ) -> Result<Stored, MediaError> {
        let mut partial = Partial {
            path: self
                .partials
                .join(format!("{id}.{}.part", random_suffix()?)),
            placed: false,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial.path)
            .await?;
        let mut hasher = Sha256::new();
        let mut head: Vec<u8> = Vec::with_capacity(MAGIC_BYTES);
        let mut total: u64 = 0;
        let mut stream = body.into_data_stream();
        let idle = self.config.upload_idle_timeout;
        loop {
            let chunk = match timeout(idle, stream.next()).await {
                Err(_) => return Err(MediaError::Timeout(idle)),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(MediaError::Body(e.to_string())),
                Ok(Some(Ok(c))) => c,
            };
            total = total.saturating_add(chunk.len() as u64);
            if total > size {
                // Stop reading: the rest of the body is never taken in.
                return Err(MediaError::TooLarge { max: size });
            }
            if head.len() < MAGIC_BYTES {
                let take = (MAGIC_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
                if head.len() == MAGIC_BYTES && !magic_matches(mime, &head) {
                    return Err(not_of_type(mime));
                }
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        if total != size {
            return Err(MediaError::SizeMismatch {
                declared: size,
                got: total,
            });
        }
        if !magic_matches(mime, &head) {
            return Err(not_of_type(mime));
        }
        if hex(&hasher.finalize()) != id {
            return Err(MediaError::HashMismatch);
        }
        if let Some(place) = place {
            // The bytes reach the disk before the name does: after a crash an
            // object under `sha256/` is whole or absent, never partial.
            file.sync_all().await?;
            drop(file);
            let shard = place
                .parent()
                .expect("an object path has a shard directory")
                .to_path_buf();
            let new_shard = !tokio::fs::try_exists(&shard).await?;
            tokio::fs::create_dir_all(&shard).await?;
            tokio::fs::rename(&partial.path, &place).await?;
            partial.placed = true;
            // The rename is durable once the directory holding the name is
            // (and the shard's own name, when it was just made).
            sync_dir(shard).await?;
            if new_shard {
                sync_dir(self.objects.clone()).await?;
            }
        }
        Ok(Stored {
            media_id: id.to_owned(),
            size,
            mime_type: mime,
        })
    }

    /// Serves `GET /media/{id}?type=&exp=&sig=`.
    pub async fn get(
        &self,
        id: &str,
        query: Option<&str>,
        now_ms: u64,
    ) -> Result<Response, MediaError> {
        let (_, mime, exp) = self.authorize(Method::Get, id, query, now_ms)?;
        let slot = self
            .downloads
            .clone()
            .try_acquire_owned()
            .map_err(|_| MediaError::Busy("downloads"))?;
        let file = match tokio::fs::File::open(self.path_of(id)).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(MediaError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata().await?.len();
        let max_age = exp.saturating_sub(now_ms) / 1000;
        let headers = [
            (CONTENT_TYPE, HeaderValue::from_static(mime)),
            (CONTENT_LENGTH, HeaderValue::from(len)),
            (
                CACHE_CONTROL,
                HeaderValue::try_from(format!("private, max-age={max_age}"))
                    .expect("digits are a valid header value"),
            ),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(DOWNLOAD_CSP),
            ),
            (
                HeaderName::from_static("cross-origin-resource-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ];
        Ok((headers, Body::from_stream(chunks(file, slot))).into_response())
    }
}

/// The file in chunks of [`CHUNK_BYTES`], holding the download slot until
/// the last one is sent or the client goes away.
fn chunks(
    file: tokio::fs::File,
    slot: OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some((file, slot)), |state| async move {
        let (mut file, slot) = state?;
        let mut buf = vec![0u8; CHUNK_BYTES];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some((file, slot))))
            }
            // The error ends the body; nothing is read after it.
            Err(e) => Some((Err(e), None)),
        }
    })
}

fn not_of_type(mime: &str) -> MediaError {
    MediaError::Type(format!("the bytes are not {mime}"))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// A name part no other upload (of this or another gateway sharing the
/// directory) picks at the same time.
fn random_suffix() -> io::Result<String> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(hex(&b))
}

async fn sync_dir(dir: PathBuf) -> io::Result<()> {
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
}

/// The media key kept at `path`: read if it exists, else made from the
/// operating system's randomness and written with mode 0600. Written to a
/// temporary file, fsynced, then hard-linked into place, so a crash leaves
/// no half key and two processes starting at once agree on one.
pub fn load_or_create_key(path: &Path) -> io::Result<[u8; KEY_BYTES]> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let read = |path: &Path| -> io::Result<[u8; KEY_BYTES]> {
        let b = std::fs::read(path)?;
        b.try_into().map_err(|b: Vec<u8>| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {} bytes, not a {KEY_BYTES}-byte media key",
                    path.display(),
                    b.len()
                ),
            )
        })
    };
    match read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
    let tmp = dir.join(format!(".key.{}.tmp", random_suffix()?));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&key)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            std::fs::File::open(dir)?.sync_all()?;
            Ok(key)
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; KEY_BYTES] = [7; KEY_BYTES];

    fn id_of(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    #[test]
    fn a_signature_covers_every_parameter() {
        let s = Signer::new(KEY);
        let id = id_of(b"x");
        let sig = s.sign(Method::Put, &id, Some(5), "image/png", 1000);
        assert!(s.verify(Method::Put, &id, Some(5), "image/png", 1000, &sig));
        assert!(!s.verify(Method::Get, &id, Some(5), "image/png", 1000, &sig));
        assert!(!s.verify(Method::Put, &id_of(b"y"), Some(5), "image/png", 1000, &sig));
        assert!(!s.verify(Method::Put, &id, Some(6), "image/png", 1000, &sig));
        assert!(!s.verify(Method::Put, &id, Some(5), "image/gif", 1000, &sig));
        assert!(!s.verify(Method::Put, &id, Some(5), "image/png", 1001, &sig));
        assert!(!s.verify(Method::Put, &id, Some(5), "image/png", 1000, "not base64!"));
        let other = Signer::new([8; KEY_BYTES]);
        assert!(!other.verify(Method::Put, &id, Some(5), "image/png", 1000, &sig));
    }

    #[test]
    fn ids_are_lowercase_sha256_hex() {
        assert!(check_id(&id_of(b"abc")).is_ok());
        assert!(check_id(&id_of(b"abc").to_uppercase()).is_err());
        assert!(check_id("../etc/passwd").is_err());
        assert!(check_id(&"a".repeat(63)).is_err());
        assert_eq!(
            id_of(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn magic_bytes_tell_the_types_apart() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert!(magic_matches("image/png", png));
        assert!(!magic_matches("image/jpeg", png));
        assert!(magic_matches("image/jpeg", &[0xff, 0xd8, 0xff, 0xe0]));
        assert!(magic_matches("image/gif", b"GIF89a......"));
        assert!(magic_matches("image/webp", b"RIFF\x10\0\0\0WEBPVP8 "));
        assert!(!magic_matches("image/webp", b"RIFF\x10\0\0\0WAVE"));
        assert!(magic_matches("video/mp4", b"\0\0\0\x18ftypmp42"));
        assert!(!magic_matches("image/png", b"\x89PN"));
        assert!(!magic_matches("text/html", b"<html>"));
    }

    #[test]
    fn a_query_is_read_with_percent_escapes_and_no_repeats() {
        let q = Query::parse(Some("size=3&type=image%2Fpng&exp=9&sig=ab-_&v=1")).expect("query");
        assert_eq!(q.size, Some(3));
        assert_eq!(q.mime.as_deref(), Some("image/png"));
        assert_eq!(q.exp, Some(9));
        assert_eq!(q.sig.as_deref(), Some("ab-_"));
        assert!(Query::parse(Some("exp=1&exp=2")).is_err());
        assert!(Query::parse(Some("size=x")).is_err());
        assert!(Query::parse(Some("type=%zz")).is_err());
    }

    #[test]
    fn the_key_is_made_once_with_mode_0600_and_then_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("media").join("key");
        let a = load_or_create_key(&path).expect("create");
        let b = load_or_create_key(&path).expect("load");
        assert_eq!(a, b);
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"short").expect("write");
        assert!(load_or_create_key(&path).is_err());
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key")]);
    }
}
