//! Authentication: `authorization: Bearer <JWT>` on every call.
//!
//! A token is checked against one configured key — an HS256 shared secret,
//! or an Ed25519 (EdDSA) or RSA (RS256) public key in PEM — and must carry
//! `sub` (the user id) and `exp`; `device` names the device (default
//! `default`). Both ids must be valid ids (`crate::validate::id`). Anything
//! else is `UNAUTHENTICATED` before a handler runs.
//!
//! `missive token` mints HS256 tokens for development with
//! [`Auth::mint`].
//!
//! A client sends the same token with every call (a gateway's link carries
//! one per request), and checking one — base64, two JSON documents, the
//! signature — costs more than many a call's own work. Tokens that verified
//! are remembered by their BLAKE3 hash with their expiry, in a bounded
//! cache; a remembered token is still refused once it expires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::validate;

/// The device a token names when it names none.
pub const DEFAULT_DEVICE: &str = "default";

/// Who is calling, from a verified token; put in each request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub device: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    exp: u64,
}

/// A token cannot be verified.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing `authorization: Bearer <token>`")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("bad key: {0}")]
    Key(String),
    #[error("this key only verifies; minting needs the HS256 secret")]
    CannotMint,
}

/// Seconds of clock skew allowed on `exp`.
const LEEWAY_SECS: u64 = 30;

/// Verified tokens remembered per generation; at most twice this many are
/// held.
const VERIFIED_PER_GENERATION: usize = 16_384;

/// The configured key.
#[derive(Clone)]
pub struct Auth {
    decoding: DecodingKey,
    /// Only for an HS256 secret: the same key signs.
    encoding: Option<EncodingKey>,
    validation: Validation,
    verified: Arc<Verified>,
}

/// Tokens that verified, by the BLAKE3 hash of the token, with the caller
/// and `exp` they carry. Two generations: when the newer fills, the older
/// is dropped and the newer takes its place, so a token in use stays (a hit
/// in the older moves it to the newer) and memory stays bounded.
#[derive(Debug, Default)]
struct Verified {
    generations: Mutex<[Generation; 2]>,
}

/// Token hash → (caller, `exp`).
type Generation = HashMap<[u8; 32], (Caller, u64)>;

impl Verified {
    fn get(&self, key: &[u8; 32], now: u64) -> Option<Caller> {
        let mut g = self.generations.lock().ok()?;
        let (caller, exp) = match g[0].get(key) {
            Some(hit) => hit.clone(),
            None => {
                let hit = g[1].remove(key)?;
                Self::insert(&mut g, *key, hit.clone());
                hit
            }
        };
        // As jsonwebtoken's check: expired once `exp` is more than the
        // leeway in the past.
        (exp >= now.saturating_sub(LEEWAY_SECS)).then_some(caller)
    }

    fn put(&self, key: [u8; 32], caller: Caller, exp: u64) {
        if let Ok(mut g) = self.generations.lock() {
            Self::insert(&mut g, key, (caller, exp));
        }
    }

    fn insert(g: &mut [Generation; 2], key: [u8; 32], v: (Caller, u64)) {
        if g[0].len() >= VERIFIED_PER_GENERATION {
            g[1] = std::mem::take(&mut g[0]);
        }
        g[0].insert(key, v);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.generations
            .lock()
            .map(|g| g[0].len() + g[1].len())
            .unwrap_or(0)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// HS256 with a shared secret (at least 32 bytes: shorter HMAC secrets
    /// can be brute-forced from one token).
    pub fn hs256(secret: &[u8]) -> Result<Auth, AuthError> {
        if secret.len() < 32 {
            return Err(AuthError::Key(
                "an HS256 secret must be at least 32 bytes".into(),
            ));
        }
        Ok(Auth {
            decoding: DecodingKey::from_secret(secret),
            encoding: Some(EncodingKey::from_secret(secret)),
            validation: validation(Algorithm::HS256),
            verified: Arc::default(),
        })
    }

    /// EdDSA (Ed25519) with a public key in PEM.
    pub fn ed25519_pem(pem: &[u8]) -> Result<Auth, AuthError> {
        Ok(Auth {
            decoding: DecodingKey::from_ed_pem(pem).map_err(|e| AuthError::Key(e.to_string()))?,
            encoding: None,
            validation: validation(Algorithm::EdDSA),
            verified: Arc::default(),
        })
    }

    /// RS256 with an RSA public key in PEM.
    pub fn rs256_pem(pem: &[u8]) -> Result<Auth, AuthError> {
        Ok(Auth {
            decoding: DecodingKey::from_rsa_pem(pem).map_err(|e| AuthError::Key(e.to_string()))?,
            encoding: None,
            validation: validation(Algorithm::RS256),
            verified: Arc::default(),
        })
    }

    /// Verifies a token and returns its caller.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let key = *blake3::hash(token.as_bytes()).as_bytes();
        if let Some(caller) = self.verified.get(&key, unix_now()) {
            return Ok(caller);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let device = data
            .claims
            .device
            .unwrap_or_else(|| DEFAULT_DEVICE.to_owned());
        validate::id("user", &data.claims.sub)
            .and_then(|()| validate::id("device", &device))
            .map_err(|r| AuthError::Invalid(r.message))?;
        let caller = Caller {
            user: data.claims.sub,
            device,
        };
        self.verified.put(key, caller.clone(), data.claims.exp);
        Ok(caller)
    }

    /// Verifies the `authorization` metadata value.
    pub fn verify_header(&self, value: Option<&str>) -> Result<Caller, AuthError> {
        let token = value
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(AuthError::Missing)?;
        self.verify(token.trim())
    }

    /// A token for `user` on `device`, valid for `ttl_secs`.
    pub fn mint(
        &self,
        user: &str,
        device: Option<&str>,
        ttl_secs: u64,
    ) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::CannotMint)?;
        validate::id("user", user).map_err(|r| AuthError::Invalid(r.message))?;
        if let Some(d) = device {
            validate::id("device", d).map_err(|r| AuthError::Invalid(r.message))?;
        }
        let now = unix_now();
        let claims = Claims {
            sub: user.to_owned(),
            device: device.map(str::to_owned),
            exp: now + ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// A tonic interceptor that verifies each call and stores its [`Caller`].
    pub fn interceptor(
        &self,
    ) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone + use<>
    {
        let auth = self.clone();
        move |mut req: tonic::Request<()>| {
            let header = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            let caller = auth
                .verify_header(header)
                .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
            req.extensions_mut().insert(caller);
            Ok(req)
        }
    }
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.set_required_spec_claims(&["exp", "sub"]);
    v.leeway = LEEWAY_SECS;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a development secret of 32+ bytes!!";

    #[test]
    fn minted_tokens_verify_and_name_the_device() {
        let auth = Auth::hs256(SECRET).expect("secret");
        let t = auth.mint("alice", Some("phone"), 60).expect("mint");
        assert_eq!(
            auth.verify(&t).expect("verify"),
            Caller {
                user: "alice".into(),
                device: "phone".into()
            }
        );
        let t = auth.mint("bob", None, 60).expect("mint");
        assert_eq!(auth.verify(&t).expect("verify").device, DEFAULT_DEVICE);
    }

    #[test]
    fn wrong_key_expired_and_garbage_are_refused() {
        let auth = Auth::hs256(SECRET).expect("secret");
        let other = Auth::hs256(b"another secret, also 32+ bytes long").expect("secret");
        let t = other.mint("alice", None, 60).expect("mint");
        assert!(auth.verify(&t).is_err());
        assert!(auth.verify("not.a.token").is_err());
        assert!(matches!(auth.verify_header(None), Err(AuthError::Missing)));
        assert!(matches!(
            auth.verify_header(Some("Basic abc")),
            Err(AuthError::Missing)
        ));
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "alice".into(),
                device: None,
                exp: 1,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .expect("encode");
        assert!(auth.verify(&expired).is_err());
        assert!(Auth::hs256(b"short").is_err());
    }

    #[test]
    fn a_remembered_token_is_refused_once_it_expires() {
        let auth = Auth::hs256(SECRET).expect("secret");
        let t = auth.mint("alice", None, 60).expect("mint");
        let key = *blake3::hash(t.as_bytes()).as_bytes();
        assert_eq!(auth.verify(&t).expect("verify").user, "alice");
        let now = unix_now();
        assert!(auth.verified.get(&key, now).is_some(), "remembered");
        // Within the leeway after `exp`, still accepted; past it, refused.
        assert!(auth.verified.get(&key, now + 60 + LEEWAY_SECS).is_some());
        assert!(auth.verified.get(&key, now + 62 + LEEWAY_SECS).is_none());
        // A token that fails is not remembered, and a forged one does not
        // match a remembered one.
        let forged = format!("{t}x");
        assert!(auth.verify(&forged).is_err());
        assert_eq!(auth.verified.len(), 1);
    }

    #[test]
    fn the_cache_of_verified_tokens_is_bounded() {
        let v = Verified::default();
        let caller = Caller {
            user: "u".into(),
            device: "d".into(),
        };
        for i in 0..(3 * VERIFIED_PER_GENERATION as u64) {
            let key = *blake3::hash(&i.to_le_bytes()).as_bytes();
            v.put(key, caller.clone(), u64::MAX);
        }
        assert!(v.len() <= 2 * VERIFIED_PER_GENERATION);
        // The latest is there, the first long gone.
        let last = (3 * VERIFIED_PER_GENERATION as u64) - 1;
        assert!(
            v.get(blake3::hash(&last.to_le_bytes()).as_bytes(), 0)
                .is_some()
        );
        assert!(
            v.get(blake3::hash(&0u64.to_le_bytes()).as_bytes(), 0)
                .is_none()
        );
    }
}
