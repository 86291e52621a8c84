//! gRPC connections to the node and the credentials of every user.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use missive_api::Auth;
use missive_proto::v1::chat_service_client::ChatServiceClient;
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::SENDER_CONNECTIONS;
use crate::node::{JWT_SECRET, Node};

/// Lifetime of the minted tokens: longer than any run.
const TOKEN_TTL_SECS: u64 = 24 * 3600;

/// The connections senders share and each user's `authorization` value.
#[derive(Debug)]
pub(crate) struct Clients {
    /// Where the node listens, for more connections (subscribers).
    pub(crate) addr: SocketAddr,
    /// The senders' connections, used round-robin.
    channels: Vec<Channel>,
    /// `Bearer <JWT>` of user `i` at index `i`.
    bearer: Vec<MetadataValue<Ascii>>,
}

/// The id of user `i`.
pub(crate) fn user_id(i: usize) -> String {
    format!("u{i:05}")
}

impl Clients {
    /// Opens the senders' connections and mints a token for each of
    /// `users` users.
    pub(crate) async fn connect(node: &Node, users: usize) -> Result<Clients> {
        let auth = Auth::hs256(JWT_SECRET)?;
        let bearer = (0..users)
            .map(|i| {
                let token = auth.mint(&user_id(i), None, TOKEN_TTL_SECS)?;
                Ok(MetadataValue::try_from(format!("Bearer {token}"))?)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut channels = Vec::with_capacity(SENDER_CONNECTIONS);
        for _ in 0..SENDER_CONNECTIONS {
            channels.push(connect(node.addr).await?);
        }
        Ok(Clients {
            addr: node.addr,
            channels,
            bearer,
        })
    }

    /// A client on the `k`-th connection (round-robin).
    pub(crate) fn client(&self, k: usize) -> ChatServiceClient<Channel> {
        ChatServiceClient::new(self.channels[k % self.channels.len()].clone())
    }

    /// `msg` as a call of user `user`.
    pub(crate) fn request<T>(&self, user: usize, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert("authorization", self.bearer[user].clone());
        req
    }
}

/// A new HTTP/2 connection to `addr`.
pub(crate) async fn connect(addr: SocketAddr) -> Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}
