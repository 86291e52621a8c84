//! The key directory over gRPC: each device publishes its identity key,
//! signed prekey and one-time prekeys; a claim returns one bundle per
//! device of the user, each taking one one-time prekey, which nobody else
//! ever gets — not even under concurrent claims; an empty pool falls back
//! to the device's last-resort key.

use std::collections::HashSet;

use crate::support::*;
use missive_proto::v1 as pb;
use tonic::Code;

fn otk(id: u64) -> pb::OneTimeKey {
    pb::OneTimeKey {
        key_id: id,
        public_key: format!("otk-{id}").into_bytes(),
    }
}

fn keys(
    identity: &str,
    one_time: impl IntoIterator<Item = u64>,
    last_resort: Option<u64>,
) -> pb::PublishKeys {
    pb::PublishKeys {
        identity_key: format!("identity-{identity}").into_bytes(),
        signed_prekey_id: 7,
        signed_prekey: format!("spk-{identity}").into_bytes(),
        signed_prekey_signature: format!("sig-{identity}").into_bytes(),
        one_time_keys: one_time.into_iter().map(otk).collect(),
        last_resort_key: last_resort.map(otk),
    }
}

async fn claim(c: &mut Client, user: &str) -> Vec<pb::KeyBundle> {
    c.claim_keys(pb::ClaimKeys {
        user: user.to_owned(),
    })
    .await
    .expect("claim keys")
    .into_inner()
    .bundles
}

/// (device, one-time key id, last resort) of each bundle.
fn taken(bundles: &[pb::KeyBundle]) -> Vec<(String, Option<u64>, bool)> {
    bundles
        .iter()
        .map(|b| {
            (
                b.device.clone(),
                b.one_time_key.as_ref().map(|k| k.key_id),
                b.last_resort,
            )
        })
        .collect()
}

fn t(device: &str, key: Option<u64>, last_resort: bool) -> (String, Option<u64>, bool) {
    (device.to_owned(), key, last_resort)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_takes_one_bundle_per_device_then_falls_back_to_the_last_resort_key() {
    let cluster = Cluster::one().await;
    let mut phone = cluster.client("alice", "phone");
    let mut laptop = cluster.client("alice", "laptop");
    let mut bob = cluster.client("bob", "phone");

    phone
        .publish_keys(keys("phone", 1..=3, Some(900)))
        .await
        .expect("publish from the phone");
    laptop
        .publish_keys(keys("laptop", [101, 102], None))
        .await
        .expect("publish from the laptop");

    let first = claim(&mut bob, "alice").await;
    assert_eq!(
        taken(&first),
        [t("laptop", Some(101), false), t("phone", Some(1), false)]
    );
    for b in &first {
        assert_eq!(b.user, "alice");
        assert_eq!(
            b.identity_key,
            format!("identity-{}", b.device).into_bytes()
        );
        assert_eq!(b.signed_prekey_id, 7);
        assert_eq!(b.signed_prekey, format!("spk-{}", b.device).into_bytes());
        assert_eq!(
            b.signed_prekey_signature,
            format!("sig-{}", b.device).into_bytes()
        );
        let k = b.one_time_key.as_ref().expect("a one-time key");
        assert_eq!(k.public_key, format!("otk-{}", k.key_id).into_bytes());
    }
    assert_eq!(
        taken(&claim(&mut bob, "alice").await),
        [t("laptop", Some(102), false), t("phone", Some(2), false)]
    );
    // The laptop's pool is empty and it has no last-resort key: its bundle
    // comes without a one-time key.
    assert_eq!(
        taken(&claim(&mut bob, "alice").await),
        [t("laptop", None, false), t("phone", Some(3), false)]
    );
    // The phone's pool is empty: its last-resort key, again and again.
    for _ in 0..2 {
        assert_eq!(
            taken(&claim(&mut bob, "alice").await),
            [t("laptop", None, false), t("phone", Some(900), true)]
        );
    }

    // New one-time keys refill the pool; a publish without a last-resort
    // key keeps the one the device had.
    phone
        .publish_keys(keys("phone", [4], None))
        .await
        .expect("refill");
    assert_eq!(
        taken(&claim(&mut bob, "alice").await)[1],
        t("phone", Some(4), false)
    );
    assert_eq!(
        taken(&claim(&mut bob, "alice").await)[1],
        t("phone", Some(900), true)
    );
    // A new last-resort key replaces the old one.
    phone
        .publish_keys(keys("phone", [], Some(901)))
        .await
        .expect("rotate the last-resort key");
    assert_eq!(
        taken(&claim(&mut bob, "alice").await)[1],
        t("phone", Some(901), true)
    );

    assert_code(
        bob.claim_keys(pb::ClaimKeys {
            user: "nobody".into(),
        })
        .await,
        Code::NotFound,
        "claiming keys of a user who published none",
    );
    let mut bad = keys("phone", [5], None);
    bad.identity_key.clear();
    assert_code(
        phone.publish_keys(bad).await,
        Code::InvalidArgument,
        "an empty identity key",
    );
    assert_code(
        phone.publish_keys(keys("phone", 1000..1201, None)).await,
        Code::InvalidArgument,
        "more than 200 one-time keys in one call",
    );
    // Neither refused publish added a key.
    assert_eq!(
        taken(&claim(&mut bob, "alice").await)[1],
        t("phone", Some(901), true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_keys_are_never_handed_out_twice_under_concurrent_claims() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    alice
        .publish_keys(keys("phone", 1..=10, Some(999)))
        .await
        .expect("publish");

    // Twenty claimers at once against ten one-time keys.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut c = cluster.client(&format!("claimer{i}"), "d");
        tasks.push(tokio::spawn(async move { claim(&mut c, "alice").await }));
    }
    let mut one_time = Vec::new();
    let mut last_resort = 0;
    for task in tasks {
        let bundles = task.await.expect("claim task");
        assert_eq!(bundles.len(), 1, "alice has one device");
        let b = &bundles[0];
        let k = b
            .one_time_key
            .as_ref()
            .expect("a key, one-time or last-resort");
        if b.last_resort {
            assert_eq!(k.key_id, 999);
            last_resort += 1;
        } else {
            one_time.push(k.key_id);
        }
    }
    let distinct: HashSet<u64> = one_time.iter().copied().collect();
    assert_eq!(
        one_time.len(),
        10,
        "ten claims got one-time keys: {one_time:?}"
    );
    assert_eq!(
        distinct,
        (1..=10).collect(),
        "each one-time key went to one claimer"
    );
    assert_eq!(last_resort, 10);
}
