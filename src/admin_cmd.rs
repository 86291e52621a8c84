//! `missive admin status`: one screen about a running node and its cluster —
//! each partition's leader, term, commit and applied index and followers'
//! lag (as the partition's leader sees it), and the chat's levels: live
//! subscriptions, push backlog and dead letters per partition, messages
//! sent, events delivered, rate-limit refusals and the mean server-side
//! delivery latency. Everything comes from `ChatAdmin/Status` on the node's
//! ChatService address, plus each leader's internal `Status` for the
//! followers' progress; the full distributions are on `/metrics`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use missive_proto::v1 as pb;
use missive_proto::v1::chat_admin_client::ChatAdminClient;
use tonic::transport::Endpoint;

use crate::cluster_cmd;
use crate::node_client::{CALL_TIMEOUT, block_on};
use crate::secret_arg;

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// One screen about a running node and its cluster.
    Status {
        /// The node's ChatService address (`host:port`).
        #[arg(long)]
        node: String,
        /// The cluster secret (or MISSIVE_CLUSTER_SECRET); optional on
        /// loopback.
        #[arg(long)]
        secret: Option<String>,
    },
}

pub fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        match cmd {
            AdminCommand::Status { node, secret } => {
                let status = ask(&node, secret.clone()).await?;
                let mut cluster = status.cluster.clone().unwrap_or_default();
                cluster_cmd::leaders_views(&mut cluster, secret).await;
                print!("{}", screen(&node, &status, &cluster));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn ask(node: &str, secret: Option<String>) -> anyhow::Result<pb::AdminStatusResponse> {
    let secret = secret_arg::resolve(secret, &[node])?;
    let channel = Endpoint::from_shared(format!("http://{node}"))?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("connecting to {node}"))?;
    let mut req = tonic::Request::new(pb::AdminStatusRequest {});
    req.set_timeout(CALL_TIMEOUT);
    secret.attach(&mut req);
    Ok(ChatAdminClient::new(channel)
        .status(req)
        .await
        .with_context(|| format!("ChatAdmin/Status on {node}"))?
        .into_inner())
}

/// The screen: the chat's figures, then the partition table with each
/// partition's push backlog and dead letters.
fn screen(node: &str, s: &pb::AdminStatusResponse, cluster: &pb::StatusResponse) -> String {
    let led = cluster
        .partitions
        .iter()
        .filter(|p| p.leader == Some(cluster.node_id))
        .count();
    let members: std::collections::BTreeSet<u64> = cluster
        .partitions
        .iter()
        .flat_map(|p| p.members.iter().map(|m| m.id))
        .collect();
    let mut out = format!(
        "node {} at {node}: {} partitions, leads {led}; cluster members {:?}\n",
        cluster.node_id,
        cluster.partitions.len(),
        members
    );
    out.push_str(&format!(
        "chat: {} live subscriptions; since start {} messages sent, {} events delivered \
         (mean delivery {:.2} ms over {}), {} writes rate-limited\n",
        s.subscriptions,
        s.messages_sent,
        s.events_delivered,
        s.delivery_mean_ms,
        s.deliveries_timed,
        s.rate_limited
    ));
    out.push_str(&format!(
        "push: backlog {} · dead letters {}\n\n",
        s.push_backlog.iter().sum::<u64>(),
        s.dead_letters.iter().sum::<u64>()
    ));
    out.push_str(&cluster_cmd::table(cluster));
    out.push_str(&format!(
        "\n{:<9} {:>12} {:>12}\n",
        "partition", "push backlog", "dead letters"
    ));
    for (p, (backlog, dead)) in s.push_backlog.iter().zip(&s.dead_letters).enumerate() {
        out.push_str(&format!("{p:<9} {backlog:>12} {dead:>12}\n"));
    }
    out
}
