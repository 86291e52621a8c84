//! The web app: static HTML, CSS and JavaScript compiled into the binary and
//! served at `/`. It is a client of WebSocket protocol v1 (`/ws`) like any
//! other, with no build step and no framework (gateway/web/, docs/webapp.md).
//!
//! Every answer carries `Cache-Control: no-cache` (a new binary serves its
//! own files at once; browsers still revalidate nothing they need not, the
//! files being small) and a Content-Security-Policy that lets the page load
//! scripts, styles, images and connections from its own origin only, so a
//! message's text can never run as code even if it reached the DOM as HTML.

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Only the page's own origin, for everything. `connect-src 'self'` covers
/// the same-origin `ws:`/`wss:` socket (CSP level 3).
const CSP: &str = "default-src 'self'; img-src 'self'; connect-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file and how it is described to the browser.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/style.css"),
    },
    Asset {
        path: "/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../web/icon.svg"),
    },
];

/// The app's routes, to merge beside the gateway's `/ws` and `/healthz`.
pub fn router() -> Router {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let (content_type, body) = (asset.content_type, asset.body);
        router.route(
            asset.path,
            get(move || async move { serve(content_type, body) }),
        )
    })
}

fn serve(content_type: &'static str, body: &'static [u8]) -> Response {
    let headers: [(HeaderName, HeaderValue); 4] = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The raw HTTP answer to `GET path` from the app's routes on a real listener.
    async fn get(path: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, router()).await });
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.expect("read");
        server.abort();
        answer.to_ascii_lowercase()
    }

    #[tokio::test]
    async fn files_are_served_with_their_type_no_cache_and_a_self_only_csp() {
        for (path, content_type) in [
            ("/", "text/html"),
            ("/app.js", "text/javascript"),
            ("/style.css", "text/css"),
            ("/icon.svg", "image/svg+xml"),
        ] {
            let answer = get(path).await;
            assert!(answer.starts_with("http/1.1 200"), "{path}: {answer}");
            assert!(
                answer.contains(&format!("content-type: {content_type}")),
                "{path}"
            );
            assert!(answer.contains("cache-control: no-cache"), "{path}");
            assert!(
                answer.contains("content-security-policy: default-src 'self';"),
                "{path}"
            );
        }
        assert!(get("/nope.js").await.starts_with("http/1.1 404"));
    }

    #[test]
    fn every_asset_the_page_names_is_served() {
        let page = std::str::from_utf8(ASSETS[0].body).expect("index.html is UTF-8");
        for asset in &ASSETS[1..] {
            assert!(
                page.contains(&format!("\"{}\"", asset.path)),
                "index.html does not load {}",
                asset.path
            );
        }
    }
}
