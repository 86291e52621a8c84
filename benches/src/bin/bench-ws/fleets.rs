//! The users of the delivery phase, connected and paired, on each system:
//! missive (authenticated, subscribed, each pair in a direct conversation)
//! and the bare relay (each connection named by its first frame).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use missive_api::Auth;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client;
use crate::load::{Clock, Fleet};

/// Connections being set up at once (each costs node calls on missive).
const SETTING_UP: usize = 256;

/// tungstenite's read buffer per client of this phase.
const CLIENT_READ_BUFFER: usize = 4096;

/// Connection numbers are offset per fleet so each fleet's connections
/// start on their own spread of source addresses.
const MISSIVE_CONN_BASE: usize = 0;
const RELAY_CONN_BASE: usize = 1 << 20;

fn user_id(u: usize) -> String {
    format!("u{u:05}")
}

/// `users` missive users on `gateway`, subscribed, pair `k` (users `2k`,
/// `2k + 1`) in a direct conversation; also the conversations' ids. The
/// fleet is called `name`.
pub(crate) async fn missive(
    name: &'static str,
    gateway: SocketAddr,
    auth: &Auth,
    users: usize,
    clock: Clock,
) -> Result<(Fleet, Vec<String>)> {
    let mut tokens = Vec::with_capacity(users);
    for u in 0..users {
        tokens.push(
            auth.mint(&user_id(u), None, 24 * 3600)
                .map_err(|e| anyhow!("minting a token: {e}"))?,
        );
    }
    let tokens = Arc::new(tokens);
    let conns = each(users, move |u| {
        let tokens = tokens.clone();
        async move {
            let mut ws =
                client::connect(MISSIVE_CONN_BASE + u, gateway, "/ws", CLIENT_READ_BUFFER).await?;
            client::auth(&mut ws, &tokens[u]).await?;
            client::subscribe(&mut ws).await?;
            Ok(ws)
        }
    })
    .await
    .context("connecting missive users")?;
    eprintln!(
        "delivery: {users} missive users subscribed; creating {} direct conversations",
        users / 2
    );
    // The even user of each pair creates the conversation.
    let mut evens = Vec::with_capacity(users / 2);
    let mut odds = Vec::with_capacity(users / 2);
    for (u, ws) in conns.into_iter().enumerate() {
        if u % 2 == 0 {
            evens.push(ws)
        } else {
            odds.push(ws)
        }
    }
    let evens = Arc::new(std::sync::Mutex::new(
        evens.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    let created = each(users / 2, {
        let evens = evens.clone();
        move |k| {
            let ws = evens.lock().ok().and_then(|mut e| e[k].take());
            async move {
                let mut ws = ws.context("each pair is created once")?;
                let conv = client::create_direct(&mut ws, &user_id(2 * k + 1)).await?;
                Ok((ws, conv))
            }
        }
    })
    .await
    .context("creating conversations")?;
    let mut conversations = Vec::with_capacity(users / 2);
    let mut all = Vec::with_capacity(users);
    for ((even, conv), odd) in created.into_iter().zip(odds) {
        conversations.push(conv);
        all.push(even);
        all.push(odd);
    }
    Ok((Fleet::new(name, all, &conversations, clock), conversations))
}

/// `users` connections to the relay at `relay`, connection `u` named `u`
/// (so paired with `u ^ 1`); frames carry `conversations` as on missive.
pub(crate) async fn relay(
    name: &'static str,
    relay: SocketAddr,
    users: usize,
    conversations: &[String],
    clock: Clock,
) -> Result<Fleet> {
    let conns = each(users, move |u| async move {
        let mut ws = client::connect(RELAY_CONN_BASE + u, relay, "/ws", CLIENT_READ_BUFFER).await?;
        client::send_text(&mut ws, format!("hello {u}")).await?;
        Ok(ws)
    })
    .await
    .context("connecting relay users")?;
    Ok(Fleet::new(name, conns, conversations, clock))
}

/// Runs `f(0..n)` with at most [`SETTING_UP`] at once; the results in order,
/// or the first failure.
async fn each<T, F, Fut>(n: usize, f: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(SETTING_UP));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .context("the setup limit closed")?;
        let fut = f(i);
        tasks.spawn(async move {
            let r = fut.await;
            drop(permit);
            (i, r)
        });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, r) = joined.map_err(|e| anyhow!("a setup task failed: {e}"))?;
        out[i] = Some(r.with_context(|| format!("connection {i}"))?);
    }
    out.into_iter()
        .map(|t| t.context("every task reported"))
        .collect()
}
