//! The population: users and the conversations the load goes to, drawn
//! from a fixed seed and created over gRPC.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use missive_proto::v1 as pb;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::Plan;
use crate::clients::{Clients, user_id};
use crate::rng::Rng;

/// Creations in flight at once.
const CREATE_CONCURRENCY: usize = 32;

/// The population's seed.
const SEED: u64 = 0x6d69_7373_6976_6501;

/// Smallest group drawn.
const MIN_GROUP: usize = 3;

/// One conversation of the load.
#[derive(Clone, Debug)]
pub(crate) struct Conversation {
    pub(crate) id: String,
    /// Its members (user numbers), the creator first.
    pub(crate) members: Vec<usize>,
}

/// What was created.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Summary {
    pub(crate) users: usize,
    pub(crate) direct: usize,
    pub(crate) groups: usize,
    pub(crate) memberships: usize,
    pub(crate) largest_group: usize,
    pub(crate) median_group: usize,
    pub(crate) setup_secs: f64,
}

#[derive(Debug)]
pub(crate) struct Population {
    pub(crate) conversations: Vec<Conversation>,
    pub(crate) summary: Summary,
}

/// The members of each conversation: `direct` random pairs, then groups
/// of log-uniform sizes from [`MIN_GROUP`] to `max_group` (the first one
/// exactly `max_group`).
fn draw(rng: &mut Rng, plan: Plan) -> Vec<Vec<usize>> {
    let direct = (plan.conversations as f64 * plan.direct_share).round() as usize;
    let mut pairs = HashSet::new();
    let mut out = Vec::with_capacity(plan.conversations);
    while out.len() < direct {
        let (a, b) = (rng.below(plan.users), rng.below(plan.users));
        if a != b && pairs.insert((a.min(b), a.max(b))) {
            out.push(vec![a, b]);
        }
    }
    let max = plan.max_group.min(plan.users);
    let (lo, hi) = ((MIN_GROUP as f64).ln(), (max as f64).ln());
    for g in 0..plan.conversations - direct {
        let size = if g == 0 {
            max
        } else {
            ((lo + rng.unit() * (hi - lo)).exp().round() as usize).clamp(MIN_GROUP, max)
        };
        out.push(rng.distinct(size, plan.users));
    }
    out
}

/// Draws the population and creates its conversations.
pub(crate) async fn create(clients: &Arc<Clients>, plan: Plan) -> Result<Population> {
    let start = Instant::now();
    let mut rng = Rng::new(SEED);
    let drawn = draw(&mut rng, plan);
    let permits = Arc::new(Semaphore::new(CREATE_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for (k, members) in drawn.into_iter().enumerate() {
        let (clients, permits) = (clients.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let id = create_one(&clients, k, &members).await?;
            Ok::<_, anyhow::Error>((k, Conversation { id, members }))
        });
    }
    let mut conversations = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        conversations.push(joined.map_err(|e| anyhow!("a creation task failed: {e}"))??);
    }
    conversations.sort_by_key(|(k, _)| *k);
    let conversations: Vec<Conversation> = conversations.into_iter().map(|(_, c)| c).collect();
    let mut sizes: Vec<usize> = conversations
        .iter()
        .filter(|c| !c.id.starts_with("d-"))
        .map(|c| c.members.len())
        .collect();
    sizes.sort_unstable();
    let summary = Summary {
        users: plan.users,
        direct: conversations.len() - sizes.len(),
        groups: sizes.len(),
        memberships: conversations.iter().map(|c| c.members.len()).sum(),
        largest_group: sizes.last().copied().unwrap_or(0),
        median_group: sizes.get(sizes.len() / 2).copied().unwrap_or(0),
        setup_secs: start.elapsed().as_secs_f64(),
    };
    Ok(Population {
        conversations,
        summary,
    })
}

/// Creates one conversation (1:1 for two members) by its first member;
/// returns its id.
async fn create_one(clients: &Clients, k: usize, members: &[usize]) -> Result<String> {
    let mut client = clients.client(k);
    let creator = members[0];
    let conv = if members.len() == 2 {
        let req = pb::CreateDirectRequest {
            peer: user_id(members[1]),
        };
        client.create_direct(clients.request(creator, req)).await
    } else {
        let req = pb::CreateGroupRequest {
            name: format!("group {k}"),
            members: members[1..].iter().map(|&u| user_id(u)).collect(),
        };
        client.create_group(clients.request(creator, req)).await
    };
    let conv = conv.with_context(|| format!("creating conversation {k}"))?;
    Ok(conv.into_inner().conversation_id)
}

/// Creates a group of users `0..size` by user 0: `first_call` members at
/// creation (the bound of one call), then `AddMembers` of as many.
pub(crate) async fn create_big_group(
    clients: &Clients,
    size: usize,
    per_call: usize,
) -> Result<String> {
    let mut client = clients.client(0);
    let first = size.min(per_call);
    let req = pb::CreateGroupRequest {
        name: format!("{size} members"),
        members: (1..first).map(user_id).collect(),
    };
    let id = client
        .create_group(clients.request(0, req))
        .await
        .with_context(|| format!("creating a group of {size}"))?
        .into_inner()
        .conversation_id;
    let mut at = first;
    while at < size {
        let to = (at + per_call).min(size);
        let req = pb::MembersRequest {
            conversation_id: id.clone(),
            users: (at..to).map(user_id).collect(),
        };
        client
            .add_members(clients.request(0, req))
            .await
            .with_context(|| format!("adding members {at}..{to}"))?;
        at = to;
    }
    Ok(id)
}
