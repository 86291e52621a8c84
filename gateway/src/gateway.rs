//! [`Gateway`]: the HTTP surface (`/ws`, `/healthz`), the accept loop with
//! its timeouts, the connection cap and graceful shutdown.
//!
//! `serve` runs its own accept loop over hyper rather than `axum::serve` so
//! that a client that never finishes its request headers is dropped after
//! `Limits::header_read_timeout`, and so that stopping can first tell every
//! WebSocket client to reconnect (close 1012) and then wait for them, up to
//! `Limits::shutdown_grace`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

use crate::error::Error;
use crate::limits::Limits;
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
}

impl Gateway {
    /// A gateway to the ChatService endpoints `node_addrs` (`host:port`).
    /// Connects lazily: a node that is down now is tried when it is needed.
    pub fn new(node_addrs: Vec<String>, limits: Limits) -> Result<Gateway, Error> {
        let nodes = Arc::new(Nodes::new(node_addrs, limits.call_timeout)?);
        let (stop, _) = watch::channel(false);
        Ok(Gateway {
            inner: Arc::new(Inner {
                connections: Arc::new(Semaphore::new(limits.max_connections)),
                ctx: Arc::new(Context {
                    nodes,
                    limits,
                    stats: Arc::new(Stats::default()),
                }),
                stop,
            }),
        })
    }

    /// The routes: `GET /ws` (the WebSocket protocol) and `GET /healthz`.
    /// Another server may mount them beside its own (the web app); it then
    /// calls [`Gateway::shutdown`] when it stops.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/ws", get(ws))
            .route("/healthz", get(healthz))
            .with_state(self.clone())
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
                    let conn = http
                        .serve_connection(TokioIo::new(tcp), service.clone())
                        .with_upgrades();
                    let mut stop = self.inner.stop.subscribe();
                    conns.spawn(async move {
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            () = session::stopped(&mut stop) => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
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
