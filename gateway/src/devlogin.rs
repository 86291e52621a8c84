//! Development login: `POST /dev/login` with `{"user":"alice"}` answers a
//! token for that user, so the web app can be tried without a login
//! service (docs/protocol.md, "Development login").
//!
//! The gateway holds no key: it answers only when it was given a
//! [`Minter`] (`Gateway::with_dev_login`), and `missive serve` gives it one
//! only when it runs on loopback with the public development secret, where
//! anyone could mint the same tokens anyway. Otherwise the route answers
//! 404, as if it did not exist.

use std::fmt;
use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

/// Mints a token for a user name (already checked); the error is shown to
/// the client.
pub type Minter = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// Largest request body read; a user name is at most 64 bytes.
pub const MAX_BODY_BYTES: usize = 1024;

/// Bytes of a user name, as ChatService's ids.
const MAX_USER_BYTES: usize = 64;

/// A [`Minter`] that can sit in a `Debug` struct.
#[derive(Clone)]
pub struct DevLogin(pub Minter);

impl fmt::Debug for DevLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DevLogin(<minter>)")
    }
}

/// A user name: 1 to 64 bytes of letters, digits and `. _ - @`, the rule of
/// ChatService's user ids, so a minted token is never refused for its name.
pub fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > MAX_USER_BYTES {
        return Err(format!("a user name is 1 to {MAX_USER_BYTES} bytes"));
    }
    if !user
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
    {
        return Err("a user name may only hold letters, digits and . _ - @".into());
    }
    Ok(())
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [
            (CONTENT_TYPE, "application/json"),
            // A token is never cached.
            (CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    answer(status, json!({ "code": code, "message": message }))
}

/// Serves `POST /dev/login`.
pub async fn login(login: Option<&DevLogin>, body: Body) -> Response {
    let Some(DevLogin(mint)) = login else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "development login is off",
        );
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("a login request is at most {MAX_BODY_BYTES} bytes"),
        );
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Login {
        user: String,
    }
    let user = match serde_json::from_slice::<Login>(&bytes) {
        Ok(l) => l.user,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("expected {{\"user\":\"…\"}}: {e}"),
            );
        }
    };
    if let Err(why) = check_user(&user) {
        return error(StatusCode::BAD_REQUEST, "invalid_argument", &why);
    }
    match mint(&user) {
        Ok(token) => answer(StatusCode::OK, json!({ "token": token, "user": user })),
        Err(why) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_follow_the_id_rule() {
        assert!(check_user("alice").is_ok());
        assert!(check_user("a.b_c-d@e").is_ok());
        assert!(check_user(&"a".repeat(64)).is_ok());
        assert!(check_user(&"a".repeat(65)).is_err());
        assert!(check_user("").is_err());
        assert!(check_user("al ice").is_err());
        assert!(check_user("alice/../x").is_err());
    }
}
