//! A user's own state, in the user's partition: presence transitions, the
//! key directory for end-to-end encryption, push targets.

use std::ops::ControlFlow;

use super::tables::Tables;
use super::{Applied, Ctx, Outcome, unchanged};
use crate::error::Rejected;
use crate::limits::{
    MAX_DEVICES_PER_USER, MAX_ONE_TIME_KEYS_PER_CALL, MAX_ONE_TIME_KEYS_PER_DEVICE,
};
use crate::store::{StoreError, keys};
use crate::validate;
use missive_proto::v1 as pb;
use missive_proto::v1::chat_event::Kind;

pub(super) fn presence(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::SetPresence,
) -> Result<Outcome, StoreError> {
    let session = keys::pair(ctx.actor, &c.node.to_string());
    if c.online {
        t.presence_sessions
            .insert(&session, &ctx.now_ms.to_be_bytes())?;
    } else {
        t.presence_sessions.remove(&session)?;
    }
    // Online while any node holds a session.
    let online = t.presence_sessions.count_prefix(&keys::prefix(ctx.actor))? > 0;
    let key = ctx.actor.as_bytes();
    let old: pb::PresenceRecord = t.presence.get(key)?.unwrap_or_default();
    if old.online == online && old.last_seen_ms != 0 {
        return Ok(unchanged("", ctx));
    }
    // Online: seen now. Offline: last seen at the transition.
    let record = pb::PresenceRecord {
        online,
        last_seen_ms: ctx.now_ms,
    };
    t.presence.put(key, &record)?;
    Ok(Ok(Applied {
        reply: pb::ChatReply {
            timestamp_ms: ctx.now_ms,
            ..Default::default()
        },
        event: Some(pb::ChatEvent {
            conversation_id: String::new(),
            seq: 0,
            timestamp_ms: ctx.now_ms,
            actor: ctx.actor.to_owned(),
            kind: Some(Kind::Presence(pb::PresenceChanged {
                user: ctx.actor.to_owned(),
                online,
                last_seen_ms: ctx.now_ms,
            })),
        }),
    }))
}

pub(super) fn publish_keys(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::PublishKeys,
) -> Result<Outcome, StoreError> {
    let checks = validate::key("identity key", &c.identity_key)
        .and_then(|()| validate::key("signed prekey", &c.signed_prekey))
        .and_then(|()| validate::key("signed prekey signature", &c.signed_prekey_signature));
    if let Err(r) = checks {
        return Ok(Err(r));
    }
    if c.one_time_keys.len() > MAX_ONE_TIME_KEYS_PER_CALL {
        return Ok(Err(Rejected::invalid(format!(
            "at most {MAX_ONE_TIME_KEYS_PER_CALL} one-time keys per call"
        ))));
    }
    for k in c.one_time_keys.iter().chain(c.last_resort_key.as_ref()) {
        if let Err(r) = validate::key("one-time key", &k.public_key) {
            return Ok(Err(r));
        }
    }
    let device_key = keys::pair(ctx.actor, ctx.device);
    let existing: Option<pb::DeviceKeysRecord> = t.device_keys.get(&device_key)?;
    if existing.is_none() {
        let devices = t.device_keys.count_prefix(&keys::prefix(ctx.actor))?;
        if devices as usize >= MAX_DEVICES_PER_USER {
            return Ok(Err(Rejected::exhausted(format!(
                "a user has at most {MAX_DEVICES_PER_USER} devices with keys"
            ))));
        }
    }
    let pool = keys::prefix2(ctx.actor, ctx.device);
    let held = t.one_time_keys.count_prefix(&pool)?;
    if held + c.one_time_keys.len() as u64 > MAX_ONE_TIME_KEYS_PER_DEVICE {
        return Ok(Err(Rejected::exhausted(format!(
            "a device holds at most {MAX_ONE_TIME_KEYS_PER_DEVICE} one-time keys"
        ))));
    }
    let record = pb::DeviceKeysRecord {
        identity_key: c.identity_key.clone(),
        signed_prekey_id: c.signed_prekey_id,
        signed_prekey: c.signed_prekey.clone(),
        signed_prekey_signature: c.signed_prekey_signature.clone(),
        last_resort_key: c
            .last_resort_key
            .clone()
            .or_else(|| existing.and_then(|e| e.last_resort_key)),
    };
    t.device_keys.put(&device_key, &record)?;
    for k in &c.one_time_keys {
        t.one_time_keys.insert(
            &keys::numbered(ctx.actor, ctx.device, k.key_id),
            &k.public_key,
        )?;
    }
    Ok(unchanged("", ctx))
}

pub(super) fn claim_keys(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::ClaimKeys,
) -> Result<Outcome, StoreError> {
    if let Err(r) = validate::id("user", &c.user) {
        return Ok(Err(r));
    }
    let mut devices = Vec::new();
    t.device_keys.scan_prefix(&keys::prefix(&c.user), |k, v| {
        let device = String::from_utf8_lossy(keys::last_part(k)).into_owned();
        let record: pb::DeviceKeysRecord = crate::store::decode("device_keys", k, v)?;
        devices.push((device, record));
        Ok(ControlFlow::Continue(()))
    })?;
    if devices.is_empty() {
        return Ok(Err(Rejected::not_found("the user has published no keys")));
    }
    let mut bundles = Vec::with_capacity(devices.len());
    for (device, record) in devices {
        // The lowest key id first; removing it in this transaction is what
        // makes a one-time key go to one claimer only.
        let mut first = None;
        t.one_time_keys
            .scan_prefix(&keys::prefix2(&c.user, &device), |k, v| {
                first = Some((k.to_vec(), v.to_vec()));
                Ok(ControlFlow::Break(()))
            })?;
        let (one_time_key, last_resort) = match first {
            Some((k, public_key)) => {
                t.one_time_keys.remove(&k)?;
                (
                    Some(pb::OneTimeKey {
                        key_id: keys::seq_of(&k),
                        public_key,
                    }),
                    false,
                )
            }
            None => (
                record.last_resort_key.clone(),
                record.last_resort_key.is_some(),
            ),
        };
        bundles.push(pb::KeyBundle {
            user: c.user.clone(),
            device,
            identity_key: record.identity_key,
            signed_prekey_id: record.signed_prekey_id,
            signed_prekey: record.signed_prekey,
            signed_prekey_signature: record.signed_prekey_signature,
            one_time_key,
            last_resort,
        });
    }
    Ok(Ok(Applied {
        reply: pb::ChatReply {
            timestamp_ms: ctx.now_ms,
            bundles,
            ..Default::default()
        },
        event: None,
    }))
}

pub(super) fn set_push_target(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::SetPushTarget,
) -> Result<Outcome, StoreError> {
    if let Err(r) = validate::push_target(c) {
        return Ok(Err(r));
    }
    let key = keys::pair(ctx.actor, ctx.device);
    if c.url.is_empty() {
        t.push_targets.remove(&key)?;
    } else {
        t.push_targets.put(
            &key,
            &pb::PushTargetRecord {
                url: c.url.clone(),
                token: c.token.clone(),
            },
        )?;
    }
    Ok(unchanged("", ctx))
}
