//! A minimal HTTP/1.1 client for push webhooks: one POST of a JSON body per
//! connection, with a deadline over the whole exchange.
//!
//! Push targets are plain `http://` endpoints — an FCM/APNs bridge next to
//! the cluster on a private network. Nothing else is spoken: no redirects,
//! no TLS (`crate::validate::push_target` refuses `https://` with that
//! reason), responses read up to [`MAX_RESPONSE_BYTES`] and only for the
//! status line.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Response bytes read at most: the status line is all that is used.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("bad push url {0:?}")]
    BadUrl(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the webhook answered {0}")]
    Status(String),
}

/// `host:port` and path of an `http://` url.
fn split(url: &str) -> Result<(String, String), WebhookError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| WebhookError::BadUrl(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(WebhookError::BadUrl(url.to_owned()));
    }
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_owned()))
}

/// POSTs `body` (JSON) to `url`; Ok on a 2xx answer.
pub async fn post(url: &str, body: &[u8], timeout: Duration) -> Result<(), WebhookError> {
    let (authority, path) = split(url)?;
    let exchange = async {
        let mut conn = TcpStream::connect(&authority).await?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\nUser-Agent: missive-push\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await?;
        conn.write_all(body).await?;
        conn.flush().await?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 1024];
        while !buf.contains(&b'\n') && buf.len() < MAX_RESPONSE_BYTES {
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let status = line.lines().next().unwrap_or("").trim().to_owned();
        let code = status.split_whitespace().nth(1).unwrap_or("");
        if code.len() == 3 && code.starts_with('2') {
            Ok(())
        } else {
            Err(WebhookError::Status(if status.is_empty() {
                "nothing".to_owned()
            } else {
                status
            }))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| WebhookError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split("http://127.0.0.1:9000/push/x").expect("valid"),
            ("127.0.0.1:9000".into(), "/push/x".into())
        );
        assert_eq!(
            split("http://bridge").expect("valid"),
            ("bridge:80".into(), "/".into())
        );
        assert!(split("https://x/").is_err());
        assert!(split("http://user@x/").is_err());
        assert!(split("http:///path").is_err());
    }
}
