//! `missive kv`: the key-value state machine a node runs until the chat
//! state machine lands — write through any node, and read a stopped node's
//! committed writes from its directory.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

use missive_proto::v1 as pb;
use missive_raft::kv::{self, Op};
use missive_raft::partition::partition_of;

use crate::node_client::{CALL_TIMEOUT, NodeClient, block_on};
use crate::secret_arg;

#[derive(Debug, clap::Subcommand)]
pub enum KvCommand {
    /// Sets KEY to VALUE through any node (it forwards to the partition's
    /// leader); prints the previous value.
    Put {
        #[arg(long)]
        node: String,
        #[arg(long)]
        secret: Option<String>,
        key: String,
        value: String,
    },
    /// Prints every committed write of a stopped node, partition by
    /// partition in log order: `partition index set KEY VALUE`.
    Dump {
        /// The node's data directory.
        #[arg(long)]
        data: PathBuf,
    },
}

pub fn run(cmd: KvCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        match cmd {
            KvCommand::Put {
                node,
                secret,
                key,
                value,
            } => {
                let secret = secret_arg::resolve(secret, &[node.as_str()])?;
                let mut c = NodeClient::connect(&node, secret).await?;
                let req = c.request(pb::StatusRequest {}, CALL_TIMEOUT);
                let partitions = c.client.status(req).await?.into_inner().partitions.len();
                let p = partition_of(key.as_bytes(), partitions as u32);
                let command = kv::set(&key, &value);
                let req = c.request(
                    pb::ForwardRequest {
                        partition: p,
                        command: Some(pb::Command {
                            body: command.body,
                            request_id: command.request_id,
                        }),
                        relayed: false,
                    },
                    CALL_TIMEOUT,
                );
                let resp = c.client.forward(req).await?.into_inner();
                let reply = missive_raft::Reply { body: resp.reply };
                match kv::previous(&reply)? {
                    Some(v) => println!("partition {p} index {} previous {v}", resp.index),
                    None => println!("partition {p} index {} previous none", resp.index),
                }
            }
            KvCommand::Dump { data } => {
                missive_raft::node::for_each_committed(&data, |p, index, c| {
                    match kv::decode(c) {
                        Some(Op::Set { key, value }) => println!("{p} {index} set {key} {value}"),
                        Some(Op::Delete { key }) => println!("{p} {index} delete {key}"),
                        None => println!("{p} {index} rejected"),
                    }
                    ControlFlow::Continue(())
                })
                .await?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
