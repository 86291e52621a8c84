//! `/metrics` for the processes that run a node: `missive node --metrics
//! ADDR` serves it on a listener of its own; `missive serve` hands the same
//! renderer to its gateway, whose HTTP listener then answers `/metrics` with
//! the node's series and the gateway's in one body.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use missive_api::Chat;
use missive_gateway::gateway::MetricsSource;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Renders `chat`'s node metrics and whatever else `registry` holds.
pub fn source(chat: Chat, registry: Registry) -> MetricsSource {
    let registry = Arc::new(registry);
    Arc::new(move || {
        let chat = chat.clone();
        let registry = registry.clone();
        Box::pin(async move {
            chat.render_metrics(&registry)
                .await
                .map_err(|e| e.to_string())
        })
    })
}

/// Serves `GET /metrics` from `source` on `addr` until the process ends.
pub async fn serve(addr: &str, source: MetricsSource) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} for /metrics"))?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let source = source.clone();
            async move { render(source).await }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "serving /metrics");
        }
    });
    Ok(())
}

async fn render(source: MetricsSource) -> Response {
    match source().await {
        Ok(body) => (
            [(header::CONTENT_TYPE, missive_api::metrics::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
