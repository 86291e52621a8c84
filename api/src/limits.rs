//! Every bound on input, in one place. docs/grpc.md lists them for clients.
//! A request past a bound is refused with `INVALID_ARGUMENT` (or
//! `RESOURCE_EXHAUSTED` for rates and pools) and changes nothing.

/// Longest user, device or conversation id, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Longest `client_msg_id`, in bytes.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 64;
/// Longest text of a message (or caption), in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most per-device ciphertexts in one message.
pub const MAX_CIPHERTEXTS: usize = 256;
/// Largest ciphertext body, in bytes.
pub const MAX_CIPHERTEXT_BYTES: usize = 64 * 1024;
/// Largest whole message content, in bytes.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;
/// Longest group name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Most members of a group.
pub const MAX_GROUP_MEMBERS: u32 = 10_000;
/// Most members one create or add call names (add more in several calls).
pub const MAX_MEMBERS_PER_CALL: usize = 1_000;
/// Longest reaction, in bytes (an emoji sequence).
pub const MAX_EMOJI_BYTES: usize = 32;
/// Most messages one history page returns.
pub const MAX_PAGE: u32 = 200;
/// Messages a history page returns when no limit is asked.
pub const DEFAULT_PAGE: u32 = 50;
/// Most inbox entries one call returns.
pub const MAX_INBOX: u32 = 500;
/// Most users one presence query names.
pub const MAX_PRESENCE_USERS: usize = 500;
/// Unread counts stop here (shown as "999+"): counting is a scan.
pub const MAX_UNREAD_COUNT: u64 = 999;
/// Longest key (identity, prekey, signature, one-time key), in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Most one-time prekeys one publish uploads.
pub const MAX_ONE_TIME_KEYS_PER_CALL: usize = 200;
/// Most one-time prekeys a device holds.
pub const MAX_ONE_TIME_KEYS_PER_DEVICE: u64 = 2_000;
/// Most devices whose bundles one claim returns.
pub const MAX_DEVICES_PER_USER: usize = 16;
/// Longest push webhook URL or token, in bytes.
pub const MAX_PUSH_FIELD_BYTES: usize = 1024;
/// Events a subscription may be behind (replay plus queue) before it is
/// told to resync through Inbox and History instead.
pub const MAX_REPLAY_EVENTS: usize = 200_000;
/// Events queued for one live subscriber; a subscriber that falls this far
/// behind is disconnected with its resume token.
pub const SUBSCRIBER_QUEUE: usize = 1024;
/// Live subscriptions one node serves at once.
pub const MAX_SUBSCRIBERS: usize = 100_000;
/// Writes per second a user may make (token bucket refill rate).
pub const WRITES_PER_SECOND: f64 = 50.0;
/// Writes a user may burst above the rate.
pub const WRITE_BURST: f64 = 100.0;
