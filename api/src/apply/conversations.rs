//! Conversations: create (direct and group), members, roles.

use std::collections::BTreeSet;

use missive_proto::v1 as pb;
use missive_proto::v1::chat_event::Kind;
use missive_proto::v1::{ConversationKind, Role};

use super::tables::Tables;
use super::{Applied, Ctx, Outcome, append_event, event_reply, unchanged};
use crate::error::Rejected;
use crate::ids;
use crate::limits::MAX_GROUP_MEMBERS;
use crate::store::StoreError;
use crate::validate;

pub(super) fn create(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::CreateConversation,
) -> Result<Outcome, StoreError> {
    if let Err(r) = validate::users(&c.members).and_then(|()| validate::name(&c.name)) {
        return Ok(Err(r));
    }
    let kind = ConversationKind::try_from(c.kind).unwrap_or(ConversationKind::Unspecified);
    let others: BTreeSet<&str> = c
        .members
        .iter()
        .map(String::as_str)
        .filter(|m| *m != ctx.actor)
        .collect();
    match kind {
        ConversationKind::Direct => {
            let [peer] = others.iter().copied().collect::<Vec<_>>()[..] else {
                return Ok(Err(Rejected::invalid(
                    "a direct conversation has exactly one other member",
                )));
            };
            if c.conversation_id != ids::direct_id(ctx.actor, peer) {
                return Ok(Err(Rejected::invalid(
                    "a direct conversation's id is derived from its members",
                )));
            }
            if t.conversation(&c.conversation_id)?.is_some() {
                // The same pair always gets the same conversation.
                return Ok(unchanged(&c.conversation_id, ctx));
            }
        }
        ConversationKind::Group => {
            if !ids::is_group_id(&c.conversation_id) {
                return Ok(Err(Rejected::invalid("not a group id")));
            }
            if others.len() as u32 + 1 > MAX_GROUP_MEMBERS {
                return Ok(Err(Rejected::invalid(format!(
                    "a group has at most {MAX_GROUP_MEMBERS} members"
                ))));
            }
            if t.conversation(&c.conversation_id)?.is_some() {
                return Ok(Err(Rejected::exists("the conversation exists")));
            }
        }
        ConversationKind::Unspecified => {
            return Ok(Err(Rejected::invalid(
                "a conversation is direct or a group",
            )));
        }
    }
    let conv = c.conversation_id.as_str();
    let creator_role = if kind == ConversationKind::Group {
        Role::Admin
    } else {
        Role::Member
    };
    let mut members = vec![pb::Member {
        user: ctx.actor.to_owned(),
        role: creator_role as i32,
    }];
    members.extend(others.iter().map(|u| pb::Member {
        user: (*u).to_owned(),
        role: Role::Member as i32,
    }));
    let mut head = pb::ConversationRecord {
        kind: kind as i32,
        name: c.name.clone(),
        created_ms: ctx.now_ms,
        created_by: ctx.actor.to_owned(),
        last_seq: 0,
        last_message_seq: 0,
        last_activity_ms: ctx.now_ms,
        member_count: members.len() as u32,
    };
    let event = append_event(
        t,
        ctx,
        conv,
        &mut head,
        Kind::ConversationCreated(pb::Conversation {
            conversation_id: conv.to_owned(),
            kind: kind as i32,
            name: c.name.clone(),
            members: members.clone(),
            created_ms: ctx.now_ms,
            last_seq: 1,
        }),
    )?;
    for m in &members {
        t.put_member(
            conv,
            &m.user,
            &pb::MemberRecord {
                role: m.role,
                joined_seq: event.seq,
                ..Default::default()
            },
        )?;
    }
    t.put_conversation(conv, &head)?;
    Ok(Ok(Applied {
        reply: event_reply(&event),
        event: Some(event),
    }))
}

pub(super) fn change_members(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::ChangeMembers,
) -> Result<Outcome, StoreError> {
    if let Err(r) = validate::users(&c.add).and_then(|()| validate::users(&c.remove)) {
        return Ok(Err(r));
    }
    let conv = c.conversation_id.as_str();
    let Some(mut head) = t.conversation(conv)? else {
        return Ok(Err(Rejected::not_found("no such conversation")));
    };
    let Some(me) = t.active_member(conv, ctx.actor)? else {
        return Ok(Err(Rejected::denied("not a member of the conversation")));
    };
    if head.kind != ConversationKind::Group as i32 {
        return Ok(Err(Rejected::precondition(
            "a direct conversation's members never change",
        )));
    }
    let admin = me.role == Role::Admin as i32;
    let only_self_leaves = c.add.is_empty() && c.remove.iter().all(|u| u == ctx.actor);
    if !admin && !only_self_leaves {
        return Ok(Err(Rejected::denied(
            "only an admin adds or removes others",
        )));
    }
    let mut added = Vec::new();
    for u in &c.add {
        if t.active_member(conv, u)?.is_none() {
            added.push(u.clone());
        }
    }
    let mut removed = Vec::new();
    for u in &c.remove {
        if t.active_member(conv, u)?.is_some() && !c.add.contains(u) {
            removed.push(u.clone());
        }
    }
    let count = head.member_count as u64 + added.len() as u64 - removed.len() as u64;
    if count > MAX_GROUP_MEMBERS as u64 {
        return Ok(Err(Rejected::exhausted(format!(
            "a group has at most {MAX_GROUP_MEMBERS} members"
        ))));
    }
    if added.is_empty() && removed.is_empty() {
        return Ok(unchanged(conv, ctx));
    }
    added.sort();
    removed.sort();
    let event = append_event(
        t,
        ctx,
        conv,
        &mut head,
        Kind::MembersChanged(pb::MembersChanged {
            added: added
                .iter()
                .map(|u| pb::Member {
                    user: u.clone(),
                    role: Role::Member as i32,
                })
                .collect(),
            removed: removed.clone(),
        }),
    )?;
    for u in &added {
        // A member who comes back keeps its old watermarks: they only move
        // forward.
        let old = t.member(conv, u)?.unwrap_or_default();
        t.put_member(
            conv,
            u,
            &pb::MemberRecord {
                role: Role::Member as i32,
                joined_seq: event.seq,
                left_seq: 0,
                ..old
            },
        )?;
    }
    for u in &removed {
        if let Some(mut m) = t.member(conv, u)? {
            m.left_seq = event.seq;
            t.put_member(conv, u, &m)?;
        }
    }
    head.member_count = count as u32;
    t.put_conversation(conv, &head)?;
    Ok(Ok(Applied {
        reply: event_reply(&event),
        event: Some(event),
    }))
}

pub(super) fn set_role(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::SetRole,
) -> Result<Outcome, StoreError> {
    if let Err(r) = validate::id("user", &c.user) {
        return Ok(Err(r));
    }
    let role = Role::try_from(c.role).unwrap_or(Role::Unspecified);
    if role == Role::Unspecified {
        return Ok(Err(Rejected::invalid("a role is member or admin")));
    }
    let conv = c.conversation_id.as_str();
    let Some(mut head) = t.conversation(conv)? else {
        return Ok(Err(Rejected::not_found("no such conversation")));
    };
    let Some(me) = t.active_member(conv, ctx.actor)? else {
        return Ok(Err(Rejected::denied("not a member of the conversation")));
    };
    if head.kind != ConversationKind::Group as i32 {
        return Ok(Err(Rejected::precondition(
            "a direct conversation has no roles",
        )));
    }
    if me.role != Role::Admin as i32 {
        return Ok(Err(Rejected::denied("only an admin sets roles")));
    }
    let Some(mut target) = t.active_member(conv, &c.user)? else {
        return Ok(Err(Rejected::not_found("the user is not a member")));
    };
    if target.role == role as i32 {
        return Ok(unchanged(conv, ctx));
    }
    let event = append_event(
        t,
        ctx,
        conv,
        &mut head,
        Kind::RoleChanged(pb::RoleChanged {
            user: c.user.clone(),
            role: role as i32,
        }),
    )?;
    target.role = role as i32;
    t.update_member(conv, &c.user, &target)?;
    t.put_conversation(conv, &head)?;
    Ok(Ok(Applied {
        reply: event_reply(&event),
        event: Some(event),
    }))
}
