//! A user's own state, in the user's partition: presence transitions, the
//! key directory for end-to-end encryption, push targets.

use missive_proto::v1 as pb;
use missive_proto::v1::chat_event::Kind;
use redb::ReadableTable;

use super::tables::{Tables, count_prefix, get, put};
use super::{Applied, Ctx, Outcome, unchanged};
use crate::error::Rejected;
use crate::limits::{
    MAX_DEVICES_PER_USER, MAX_ONE_TIME_KEYS_PER_CALL, MAX_ONE_TIME_KEYS_PER_DEVICE,
};
use crate::store::{StoreError, keys};
use crate::validate;

pub(super) fn presence(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::SetPresence,
) -> Result<Outcome, StoreError> {
    let session = keys::pair(ctx.actor, &c.node.to_string());
    if c.online {
        t.presence_sessions
            .insert(session.as_slice(), ctx.now_ms.to_be_bytes().as_slice())?;
    } else {
        t.presence_sessions.remove(session.as_slice())?;
    }
    // Online while any node holds a session.
    let online = count_prefix(&t.presence_sessions, &keys::prefix(ctx.actor))? > 0;
    let key = ctx.actor.as_bytes();
    let old: pb::PresenceRecord = get(&t.presence, "presence", key)?.unwrap_or_default();
    if old.online == online && old.last_seen_ms != 0 {
        return Ok(unchanged("", ctx));
    }
    // Online: seen now. Offline: last seen at the transition.
    let record = pb::PresenceRecord {
        online,
        last_seen_ms: ctx.now_ms,
    };
    put(&mut t.presence, key, &record)?;
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
    let existing: Option<pb::DeviceKeysRecord> = get(&t.device_keys, "device_keys", &device_key)?;
    if existing.is_none() {
        let devices = count_prefix(&t.device_keys, &keys::prefix(ctx.actor))?;
        if devices as usize >= MAX_DEVICES_PER_USER {
            return Ok(Err(Rejected::exhausted(format!(
                "a user has at most {MAX_DEVICES_PER_USER} devices with keys"
            ))));
        }
    }
    let pool = keys::prefix2(ctx.actor, ctx.device);
    let held = count_prefix(&t.one_time_keys, &pool)?;
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
    put(&mut t.device_keys, &device_key, &record)?;
    for k in &c.one_time_keys {
        t.one_time_keys.insert(
            keys::numbered(ctx.actor, ctx.device, k.key_id).as_slice(),
            k.public_key.as_slice(),
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
    let prefix = keys::prefix(&c.user);
    let end = keys::prefix_end(&prefix);
    let mut devices = Vec::new();
    for row in t.device_keys.range(prefix.as_slice()..end.as_slice())? {
        let (k, v) = row?;
        let device = String::from_utf8_lossy(keys::last_part(k.value())).into_owned();
        let record: pb::DeviceKeysRecord =
            crate::store::decode("device_keys", k.value(), v.value())?;
        devices.push((device, record));
    }
    if devices.is_empty() {
        return Ok(Err(Rejected::not_found("the user has published no keys")));
    }
    let mut bundles = Vec::with_capacity(devices.len());
    for (device, record) in devices {
        let pool = keys::prefix2(&c.user, &device);
        let pool_end = keys::prefix_end(&pool);
        // The lowest key id first; removing it in this transaction is what
        // makes a one-time key go to one claimer only.
        let first = t
            .one_time_keys
            .range(pool.as_slice()..pool_end.as_slice())?
            .next()
            .transpose()?
            .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()));
        let (one_time_key, last_resort) = match first {
            Some((k, public_key)) => {
                t.one_time_keys.remove(k.as_slice())?;
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
        t.push_targets.remove(key.as_slice())?;
    } else {
        put(
            &mut t.push_targets,
            &key,
            &pb::PushTargetRecord {
                url: c.url.clone(),
                token: c.token.clone(),
            },
        )?;
    }
    Ok(unchanged("", ctx))
}
