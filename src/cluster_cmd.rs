//! `missive cluster`: operations on a running cluster, sent to any node's
//! internal service (with the cluster secret).

use std::process::ExitCode;

use anyhow::{Context, bail};
use missive_proto::v1 as pb;

use crate::node_client::{CALL_TIMEOUT, NodeClient, block_on};
use crate::secret_arg;

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Initializes every partition with the given members and spreads the
    /// partitions' leaders over them. Run once, against one of the members.
    Init {
        /// The node to ask (one of the members).
        #[arg(long)]
        node: String,
        /// The members: `1=127.0.0.1:7001,2=127.0.0.1:7002,...`.
        #[arg(long)]
        members: String,
        #[arg(long)]
        secret: Option<String>,
    },
    /// Adds a running, empty node to every partition (learner, then voter).
    AddNode {
        #[arg(long)]
        node: String,
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// The new node's internal address.
        #[arg(long)]
        addr: String,
        #[arg(long)]
        secret: Option<String>,
    },
    /// Removes a node from every partition.
    RemoveNode {
        #[arg(long)]
        node: String,
        #[arg(long)]
        id: u64,
        #[arg(long)]
        secret: Option<String>,
    },
    /// Per partition, as its leader sees it: leader, term, commit and
    /// applied index, each follower's lag (the asked node's view where the
    /// leader cannot be reached).
    Status {
        #[arg(long)]
        node: String,
        #[arg(long)]
        secret: Option<String>,
    },
}

pub fn run(cmd: ClusterCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        match cmd {
            ClusterCommand::Init {
                node,
                members,
                secret,
            } => {
                let members = parse_members(&members)?;
                let mut c = connect(&node, secret).await?;
                let req = c.request(pb::InitializeRequest { members }, CALL_TIMEOUT);
                println!("{}", c.client.initialize(req).await?.into_inner().message);
            }
            ClusterCommand::AddNode {
                node,
                id,
                addr,
                secret,
            } => {
                let mut c = connect(&node, secret).await?;
                let req = c.request(
                    pb::AddNodeRequest {
                        node: Some(pb::Node { id, addr }),
                        partition: None,
                    },
                    CALL_TIMEOUT,
                );
                println!("{}", c.client.add_node(req).await?.into_inner().message);
            }
            ClusterCommand::RemoveNode { node, id, secret } => {
                let mut c = connect(&node, secret).await?;
                let req = c.request(
                    pb::RemoveNodeRequest {
                        id,
                        partition: None,
                    },
                    CALL_TIMEOUT,
                );
                println!("{}", c.client.remove_node(req).await?.into_inner().message);
            }
            ClusterCommand::Status { node, secret } => {
                let mut c = connect(&node, secret.clone()).await?;
                let req = c.request(pb::StatusRequest {}, CALL_TIMEOUT);
                let mut status = c.client.status(req).await?.into_inner();
                leaders_views(&mut status, secret).await;
                print!("{}", table(&status));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn connect(node: &str, secret: Option<String>) -> anyhow::Result<NodeClient> {
    let secret = secret_arg::resolve(secret, &[node])?;
    NodeClient::connect(node, secret).await
}

/// `1=host:port,2=host:port` → members.
fn parse_members(s: &str) -> anyhow::Result<Vec<pb::Node>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("member {part:?} is not ID=ADDR"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("member id {id:?}"))?;
        out.push(pb::Node {
            id,
            addr: addr.trim().to_owned(),
        });
    }
    if out.is_empty() {
        bail!("--members lists no member");
    }
    Ok(out)
}

/// Replaces each partition the asked node does not lead by its leader's
/// view, which has the followers' progress. A leader that cannot be asked
/// leaves the asked node's view in place.
pub(crate) async fn leaders_views(status: &mut pb::StatusResponse, secret: Option<String>) {
    let mut views: std::collections::BTreeMap<u64, Option<pb::StatusResponse>> = Default::default();
    for p in &mut status.partitions {
        let Some(leader) = p.leader.filter(|l| *l != status.node_id) else {
            continue;
        };
        if let std::collections::btree_map::Entry::Vacant(slot) = views.entry(leader) {
            let addr = p
                .members
                .iter()
                .find(|m| m.id == leader)
                .map(|m| m.addr.clone());
            let view = match addr {
                Some(addr) => ask(&addr, secret.clone()).await.ok(),
                None => None,
            };
            slot.insert(view);
        }
        if let Some(Some(view)) = views.get(&leader)
            && let Some(theirs) = view.partitions.iter().find(|q| q.partition == p.partition)
        {
            *p = theirs.clone();
        }
    }
}

async fn ask(addr: &str, secret: Option<String>) -> anyhow::Result<pb::StatusResponse> {
    let mut c = connect(addr, secret).await?;
    let req = c.request(pb::StatusRequest {}, CALL_TIMEOUT);
    Ok(c.client.status(req).await?.into_inner())
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The status as a table, one line per partition.
pub fn table(s: &pb::StatusResponse) -> String {
    let mut out = format!("asked node {}; each row as its leader sees it\n", s.node_id);
    out.push_str(&format!(
        "{:<9} {:>6} {:>5} {:>8} {:>8}  followers (id: matched, lag)\n",
        "partition", "leader", "term", "commit", "applied"
    ));
    for p in &s.partitions {
        let followers = if p.followers.is_empty() {
            match p.leader {
                Some(l) if l != s.node_id => format!("(node {l} did not answer)"),
                _ => "-".into(),
            }
        } else {
            p.followers
                .iter()
                .map(|f| format!("{}: {}, {}", f.id, opt(f.matched), f.lag))
                .collect::<Vec<_>>()
                .join("; ")
        };
        out.push_str(&format!(
            "{:<9} {:>6} {:>5} {:>8} {:>8}  {}\n",
            p.partition,
            opt(p.leader),
            p.term,
            opt(p.committed),
            opt(p.applied),
            followers
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse() {
        let m = parse_members("1=127.0.0.1:7001, 2=127.0.0.1:7002").expect("parses");
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].id, 2);
        assert_eq!(m[1].addr, "127.0.0.1:7002");
        assert!(parse_members("x").is_err());
        assert!(parse_members("").is_err());
    }
}
