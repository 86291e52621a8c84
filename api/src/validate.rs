//! Stateless checks of what a client sent: ids, content, sizes. Checks that
//! need the projections (membership, roles, existence) are made by apply.

use missive_proto::v1 as pb;

use crate::error::Rejected;
use crate::limits::*;

/// A user, device or conversation id: 1..=64 bytes of `A-Z a-z 0-9 . _ - @`.
/// No NUL, no separator, nothing that needs escaping in a URL or a log line.
pub fn id(what: &str, v: &str) -> Result<(), Rejected> {
    if v.is_empty() || v.len() > MAX_ID_BYTES {
        return Err(Rejected::invalid(format!(
            "{what} must be 1 to {MAX_ID_BYTES} bytes, got {}",
            v.len()
        )));
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
    {
        return Err(Rejected::invalid(format!(
            "{what} {v:?} may only hold letters, digits and . _ - @"
        )));
    }
    Ok(())
}

/// A message's content: exactly one of text, ciphertexts or media (media may
/// carry a caption in `text`), within the size bounds.
pub fn content(c: Option<&pb::Content>) -> Result<(), Rejected> {
    let Some(c) = c else {
        return Err(Rejected::invalid("a message needs content"));
    };
    if c.text.len() > MAX_TEXT_BYTES {
        return Err(Rejected::invalid(format!(
            "text is {} bytes; the limit is {MAX_TEXT_BYTES}",
            c.text.len()
        )));
    }
    if c.ciphertexts.len() > MAX_CIPHERTEXTS {
        return Err(Rejected::invalid(format!(
            "{} ciphertexts; the limit is {MAX_CIPHERTEXTS}",
            c.ciphertexts.len()
        )));
    }
    let mut total = c.text.len();
    for ct in &c.ciphertexts {
        id("ciphertext user", &ct.user)?;
        id("ciphertext device", &ct.device)?;
        if ct.body.is_empty() || ct.body.len() > MAX_CIPHERTEXT_BYTES {
            return Err(Rejected::invalid(format!(
                "a ciphertext must be 1 to {MAX_CIPHERTEXT_BYTES} bytes"
            )));
        }
        total += ct.body.len();
    }
    if total > MAX_CONTENT_BYTES {
        return Err(Rejected::invalid(format!(
            "content is {total} bytes; the limit is {MAX_CONTENT_BYTES}"
        )));
    }
    let kinds = [
        !c.text.is_empty() && c.media.is_none(),
        !c.ciphertexts.is_empty(),
        c.media.is_some(),
    ];
    match kinds.iter().filter(|k| **k).count() {
        0 => {
            return Err(Rejected::invalid(
                "a message needs text, ciphertexts or media",
            ));
        }
        1 => {}
        _ => {
            return Err(Rejected::invalid(
                "a message is text, ciphertexts or media, not several",
            ));
        }
    }
    if !c.ciphertexts.is_empty() && !c.text.is_empty() {
        return Err(Rejected::invalid(
            "an encrypted message carries no plain text",
        ));
    }
    if let Some(m) = &c.media {
        id("media id", &m.media_id)?;
        if m.mime_type.is_empty() || m.mime_type.len() > 128 || m.name.len() > MAX_NAME_BYTES {
            return Err(Rejected::invalid(
                "media needs a mime type (at most 128 bytes) and a name of at most 256",
            ));
        }
    }
    Ok(())
}

/// A group name.
pub fn name(v: &str) -> Result<(), Rejected> {
    if v.len() > MAX_NAME_BYTES || v.chars().any(char::is_control) {
        return Err(Rejected::invalid(format!(
            "a name is at most {MAX_NAME_BYTES} bytes, without control characters"
        )));
    }
    Ok(())
}

/// A list of users named in one call: valid, no duplicates, within the bound.
pub fn users(v: &[String]) -> Result<(), Rejected> {
    if v.len() > MAX_MEMBERS_PER_CALL {
        return Err(Rejected::invalid(format!(
            "{} users in one call; the limit is {MAX_MEMBERS_PER_CALL}",
            v.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for u in v {
        id("user", u)?;
        if !seen.insert(u.as_str()) {
            return Err(Rejected::invalid(format!("user {u:?} is named twice")));
        }
    }
    Ok(())
}

/// A key of the key directory.
pub fn key(what: &str, v: &[u8]) -> Result<(), Rejected> {
    if v.is_empty() || v.len() > MAX_KEY_BYTES {
        return Err(Rejected::invalid(format!(
            "{what} must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A push webhook: http(s), bounded.
pub fn push_target(t: &pb::SetPushTarget) -> Result<(), Rejected> {
    if t.url.is_empty() {
        return Ok(());
    }
    if t.url.len() > MAX_PUSH_FIELD_BYTES || t.token.len() > MAX_PUSH_FIELD_BYTES {
        return Err(Rejected::invalid(format!(
            "push url and token are at most {MAX_PUSH_FIELD_BYTES} bytes"
        )));
    }
    if t.url.starts_with("https://") {
        // See crate::push::webhook: the notifier speaks plain HTTP to a
        // bridge next to the cluster.
        return Err(Rejected::invalid(
            "https push urls are not supported: point the target at an http:// bridge \
             on the cluster's private network",
        ));
    }
    if !t.url.starts_with("http://") {
        return Err(Rejected::invalid("a push url starts with http://"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_separators_and_oversize() {
        assert!(id("user", "alice").is_ok());
        assert!(id("user", "a.b_c-d@e").is_ok());
        assert!(id("user", "").is_err());
        assert!(id("user", "a\0b").is_err());
        assert!(id("user", "a b").is_err());
        assert!(id("user", &"x".repeat(65)).is_err());
    }

    #[test]
    fn content_is_exactly_one_kind() {
        let text = pb::Content {
            text: "hi".into(),
            ..Default::default()
        };
        assert!(content(Some(&text)).is_ok());
        assert!(content(Some(&pb::Content::default())).is_err());
        assert!(content(None).is_err());
        let too_long = pb::Content {
            text: "x".repeat(MAX_TEXT_BYTES + 1),
            ..Default::default()
        };
        assert!(content(Some(&too_long)).is_err());
        let both = pb::Content {
            text: "hi".into(),
            ciphertexts: vec![pb::Ciphertext {
                user: "bob".into(),
                device: "d1".into(),
                body: vec![1],
            }],
            ..Default::default()
        };
        assert!(content(Some(&both)).is_err());
    }
}
