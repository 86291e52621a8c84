//! [`Gateway`]: the HTTP surface (`/ws`, `/healthz`, `/metrics`), the accept loop with
//! its timeouts, the connection cap and graceful shutdown.
//!
//! `serve` runs its own accept loop over hyper rather than `axum::serve` so
//! that a client that never finishes its request headers is dropped after
//! `Limits::header_read_timeout`, and so that stopping can first tell every
//! WebSocket client to reconnect (close 1012) and then wait for them, up to
//! `Limits::shutdown_grace`.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

use crate::devlogin::{self, DevLogin, Minter};
use crate::error::Error;
use crate::limits::Limits;
use crate::link::LocalNode;
use crate::media::{self, Media, MediaConfig, MediaError};
use crate::nodes::Nodes;
use crate::outbox::{Stats, StatsSnapshot};
use crate::session::{self, Context, ReadError};

/// A gateway in front of some ChatService nodes. Cheap to clone: clones
/// share everything.
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ctx: Arc<Context>,
    /// One permit per open WebSocket (`Limits::max_connections`).
    connections: Arc<Semaphore>,
    /// Turns true once: every session closes with 1012 and no new one starts.
    stop: watch::Sender<bool>,
    /// What `/metrics` answers when set (a process with a node in it adds
    /// the node's series); otherwise the gateway's own series.
    metrics: std::sync::OnceLock<Hook>,
    /// Set by [`Gateway::with_dev_login`]; `/dev/login` answers 404 without.
    dev_login: OnceLock<DevLogin>,
    /// Set by [`Gateway::with_tls`]: every accepted connection is TLS.
    tls: OnceLock<Arc<tokio_rustls::rustls::ServerConfig>>,
}

/// A [`MetricsSource`], opaque to `Debug`.
struct Hook(MetricsSource);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsSource")
    }
}

/// Renders a whole `/metrics` body (OpenMetrics text); see
/// [`Gateway::set_metrics`].
pub type MetricsSource = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

/// The Content-Type of an OpenMetrics text body.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Gateway {
    /// A gateway to the ChatService endpoints `node_addrs` (`host:port`).
    /// Connects lazily: a node that is down now is tried when it is needed.
    pub fn new(node_addrs: Vec<String>, limits: Limits) -> Result<Gateway, Error> {
        Gateway::with_node_tls(node_addrs, limits, None)
    }

    /// [`Gateway::new`], reaching the nodes over TLS when `node_tls` is
    /// given (see [`crate::tls::node_client_config`]).
    pub fn with_node_tls(
        node_addrs: Vec<String>,
        limits: Limits,
        node_tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<Gateway, Error> {
        let nodes = Nodes::new(
            node_addrs,
            limits.call_timeout,
            limits.node_calls_in_flight,
            node_tls,
        )?;
        Ok(Gateway::with_nodes(nodes, limits))
    }

    /// A gateway to `node`, in this process (`missive serve`): the same
    /// gateway, its link to the node without HTTP/2 (see [`crate::link`]).
    pub fn local(node: Arc<dyn LocalNode>, limits: Limits) -> Gateway {
        let nodes = Nodes::local(node, limits.call_timeout, limits.node_calls_in_flight);
        Gateway::with_nodes(nodes, limits)
    }

    fn with_nodes(nodes: Nodes, limits: Limits) -> Gateway {
        let nodes = Arc::new(nodes);
        let (stop, _) = watch::channel(false);
        Gateway {
            inner: Arc::new(Inner {
                connections: Arc::new(Semaphore::new(limits.max_connections)),
                ctx: Arc::new(Context {
                    nodes,
                    limits,
                    stats: Arc::new(Stats::default()),
                    media: OnceLock::new(),
                }),
                stop,
                metrics: std::sync::OnceLock::new(),
                dev_login: OnceLock::new(),
                tls: OnceLock::new(),
            }),
        }
    }

    /// Serves HTTPS and `wss://` only, with `config` (see
    /// [`crate::tls::server_config`]).
    pub fn with_tls(
        self,
        config: Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> Result<Gateway, Error> {
        self.inner
            .tls
            .set(config)
            .map_err(|_| Error::Configured("TLS"))?;
        Ok(self)
    }

    /// Keeps media (uploads and downloads by signed URL, docs/protocol.md
    /// "Media") in `config.dir`, creating it. Without it, `media_upload` and
    /// `media_url` answer `unavailable` and `/media/` answers 404.
    pub fn with_media(self, config: MediaConfig) -> Result<Gateway, Error> {
        let dir = config.dir.clone();
        let media = Media::open(config).map_err(|source| Error::Media { dir, source })?;
        self.inner
            .ctx
            .media
            .set(Arc::new(media))
            .map_err(|_| Error::Configured("media"))?;
        Ok(self)
    }

    /// Answers `POST /dev/login` with tokens from `minter` (docs/protocol.md,
    /// "Development login"). Only for deployments where anyone may mint
    /// tokens anyway; without it the route answers 404.
    pub fn with_dev_login(self, minter: Minter) -> Result<Gateway, Error> {
        self.inner
            .dev_login
            .set(DevLogin(minter))
            .map_err(|_| Error::Configured("development login"))?;
        Ok(self)
    }

    /// The routes: `GET /ws` (the WebSocket protocol), `GET /healthz`,
    /// `PUT`/`GET /media/{id}` (signed media URLs) and `POST /dev/login`.
    /// Another server may mount them beside its own (the web app); it then
    /// calls [`Gateway::shutdown`] when it stops.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/ws", get(ws))
            .route("/healthz", get(healthz))
            .route("/media/{id}", get(media_get).put(media_put))
            .route("/dev/login", post(dev_login))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
            .merge(crate::webapp::router())
    }

    /// Adds the gateway's series (`missive_ws_*`) to `registry`, read from
    /// its counters at each scrape.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(crate::metrics::StatsCollector::Live(
            self.inner.ctx.stats.clone(),
        )));
    }

    /// Makes `/metrics` answer what `source` renders (once; later calls are
    /// ignored). A process that runs a node beside the gateway renders both
    /// in one body; `source` should include [`Gateway::register_metrics`].
    pub fn set_metrics(&self, source: MetricsSource) {
        let _ = self.inner.metrics.set(Hook(source));
    }

    /// The gateway's counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.ctx.stats.snapshot()
    }

    /// Tells every connection to reconnect (close 1012) and refuses new ones.
    pub fn shutdown(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Serves [`Gateway::router`] on `listener` until `shutdown` resolves,
    /// then closes every WebSocket with 1012 and waits for them (at most
    /// `Limits::shutdown_grace`).
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let limits = &self.inner.ctx.limits;
        let service = TowerToHyperService::new(self.router());
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => {
                    let tcp = match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(e) => {
                            // Out of descriptors and the like pass; do not spin.
                            tracing::warn!(error = %e, "accepting a connection");
                            sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Frames are small and interactive: no Nagle delay.
                    let _ = tcp.set_nodelay(true);
                    let http = http.clone();
                    let service = service.clone();
                    let stop = self.inner.stop.subscribe();
                    match self.inner.tls.get().cloned().map(tokio_rustls::TlsAcceptor::from) {
                        None => {
                            conns.spawn(serve_connection(http, tcp, service, stop));
                        }
                        Some(acceptor) => {
                            let handshake = limits.header_read_timeout;
                            conns.spawn(async move {
                                // In the connection's task, so a slow
                                // handshake holds up no other client.
                                match timeout(handshake, acceptor.accept(tcp)).await {
                                    Ok(Ok(tls)) => serve_connection(http, tls, service, stop).await,
                                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!("TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
            }
        }
        drop(listener);
        self.shutdown();
        let deadline = Instant::now() + limits.shutdown_grace;
        // Sessions run on tasks of their own (the upgrade's): wait for the
        // count of open ones to reach zero.
        while self.stats().connections > 0 && Instant::now() < deadline {
            sleep(std::time::Duration::from_millis(20)).await;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if timeout(left, async { while conns.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            conns.abort_all();
        }
        Ok(())
    }
}

/// Serves one HTTP/1.1 connection (plain or TLS) until it ends, or until
/// the gateway stops: then it finishes gracefully.
async fn serve_connection<I>(
    http: http1::Builder,
    io: I,
    service: TowerToHyperService<Router>,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = session::stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Counts a session open while it lives.
struct Open(Arc<Stats>);

impl Open {
    fn new(stats: Arc<Stats>) -> Open {
        stats.connections.fetch_add(1, Ordering::Relaxed);
        Open(stats)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn ws(State(gw): State<Gateway>, upgrade: WebSocketUpgrade) -> Response {
    let inner = &gw.inner;
    if *inner.stop.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let Ok(permit) = inner.connections.clone().try_acquire_owned() else {
        inner.ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    let ctx = inner.ctx.clone();
    let stop = inner.stop.subscribe();
    let hard = ctx.limits.hard_message_bytes;
    upgrade
        .max_message_size(hard)
        .max_frame_size(hard)
        .read_buffer_size(ctx.limits.read_buffer_bytes)
        .on_upgrade(move |socket| async move {
            let _permit = permit;
            let _open = Open::new(ctx.stats.clone());
            let (sink, stream) = socket.split();
            let stream = stream.map(|r| r.map_err(read_error));
            session::run(ctx, sink, stream, stop).await;
        })
}

/// Tells a message over the size limit apart from a broken connection.
fn read_error(e: axum::Error) -> ReadError {
    use tungstenite::error::{CapacityError, Error as WsError};
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => ReadError::TooBig,
        _ => ReadError::Broken(inner.to_string()),
    }
}

async fn metrics(State(gw): State<Gateway>) -> Response {
    let body = match gw.inner.metrics.get() {
        Some(Hook(source)) => source().await,
        None => {
            let mut registry = prometheus_client::registry::Registry::default();
            gw.register_metrics(&mut registry);
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry)
                .map(|()| out)
                .map_err(|e| e.to_string())
        }
    };
    match body {
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn healthz(State(gw): State<Gateway>) -> Response {
    if gw.inner.ctx.nodes.any_answers().await {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no ChatService node answers\n",
        )
            .into_response()
    }
}

async fn media_put(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(m) = gw.inner.ctx.media.get() else {
        return MediaError::NotConfigured.into_response();
    };
    match m
        .put(&id, uri.query(), &headers, body, media::now_ms())
        .await
    {
        Ok(s) => (
            StatusCode::CREATED,
            [(CONTENT_TYPE, "application/json")],
            serde_json::json!({ "media_id": s.media_id, "size": s.size, "mime_type": s.mime_type })
                .to_string(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn media_get(State(gw): State<Gateway>, Path(id): Path<String>, uri: Uri) -> Response {
    let Some(m) = gw.inner.ctx.media.get() else {
        return MediaError::NotConfigured.into_response();
    };
    match m.get(&id, uri.query(), media::now_ms()).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn dev_login(State(gw): State<Gateway>, body: Body) -> Response {
    devlogin::login(gw.inner.dev_login.get(), body).await
}
