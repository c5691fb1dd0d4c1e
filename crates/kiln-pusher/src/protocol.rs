//! The Pusher Channels wire format (protocol 7, which protocol 6 matches for everything used here):
//! the frames the server sends, the messages clients send, channel names and kinds, and the codes.
//!
//! Every frame the server sends carries a `data` key, because pysher indexes `params['data']`
//! unconditionally and would drop the message otherwise.

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `pusher:error` / close codes. 4000–4099 tell clients not to reconnect unchanged, 4100–4199 to
/// back off, 4200–4299 to reconnect at once, and 4300–4399 are errors that close nothing.
pub(crate) mod code {
    /// The app key in the path is not this server's.
    pub(crate) const APP_NOT_FOUND: u16 = 4001;
    /// The `protocol` query parameter is outside 4..=7 or not a number.
    pub(crate) const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// The `protocol` query parameter is missing.
    pub(crate) const NO_PROTOCOL: u16 = 4008;
    /// A client message exceeded `max_message_bytes`.
    pub(crate) const MESSAGE_TOO_LARGE: u16 = 4009;
    /// The socket fell too far behind; the client should reconnect after a back-off.
    pub(crate) const OVER_CAPACITY: u16 = 4100;
    /// The client answered no server ping in time.
    pub(crate) const PONG_TIMEOUT: u16 = 4201;
    /// A message the server cannot use (bad JSON, unknown event, missing fields). Non-fatal, and
    /// deliberately outside 4000–4099 because pysher disconnects for good on those.
    pub(crate) const INVALID_MESSAGE: u16 = 4300;
    /// A client event was refused (disabled, wrong channel, not subscribed). Non-fatal.
    pub(crate) const CLIENT_EVENT_REJECTED: u16 = 4301;
}

/// Channel names longer than this are refused (soketi and the Pusher HTTP libraries agree on 200).
pub(crate) const MAX_NAME_LEN: usize = 200;

/// What a channel's name prefix makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelKind {
    /// No prefix: anyone may subscribe.
    Public,
    /// `private-*` (including `private-encrypted-*`, whose auth is signed the same way).
    Private,
    /// `presence-*`: private plus a member list.
    Presence,
}

impl ChannelKind {
    /// The kind of `channel`. Anchored prefixes only: soketi's unanchored match would make
    /// `foo-private-x` private.
    pub(crate) fn of(channel: &str) -> Self {
        if channel.starts_with("presence-") {
            Self::Presence
        } else if channel.starts_with("private-") {
            Self::Private
        } else {
            Self::Public
        }
    }

    /// Whether subscribing needs a signature (and so client events may be allowed).
    pub(crate) fn is_authenticated(self) -> bool {
        self != Self::Public
    }
}

/// Whether `name` is a legal channel name: `[-a-zA-Z0-9_=@,.;]+`, at most [`MAX_NAME_LEN`].
pub(crate) fn valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=@,.;".contains(&b))
}

/// The string an event's `data` becomes on the wire. A JSON string is sent verbatim, as the Pusher
/// server SDKs do (and as the HTTP API received it); anything else is JSON-encoded.
pub(crate) fn encode_data(data: &Value) -> std::borrow::Cow<'_, str> {
    match data {
        Value::String(s) => s.as_str().into(),
        other => other.to_string().into(),
    }
}

/// A message from a client: `{"event", "channel"?, "data"?}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ClientMessage {
    /// The event name.
    pub(crate) event: String,
    /// Set on client events.
    #[serde(default)]
    pub(crate) channel: Option<String>,
    /// Any JSON; pysher sends `""` where pusher-js sends `{}`.
    #[serde(default)]
    pub(crate) data: Value,
}

/// The `data` of `pusher:subscribe` and `pusher:unsubscribe`.
#[derive(Debug, Deserialize)]
pub(crate) struct SubscribeData {
    /// The channel name.
    pub(crate) channel: String,
    /// `"<key>:<hex signature>"`; pusher-js sends `""` on public channels, pysher omits it.
    #[serde(default)]
    pub(crate) auth: Option<String>,
    /// Presence only: the exact JSON string the signature covers.
    #[serde(default)]
    pub(crate) channel_data: Option<String>,
}

impl SubscribeData {
    /// Reads the subscribe payload. Both reference clients send an object; a JSON string holding
    /// the object is accepted too, since older clients double-encoded `data`.
    pub(crate) fn parse(data: Value) -> Result<Self, serde_json::Error> {
        match data {
            Value::String(s) => serde_json::from_str(&s),
            other => serde_json::from_value(other),
        }
    }
}

/// One server → client frame. Field order puts `event` first, which helps anyone reading logs.
#[derive(Serialize)]
struct Frame<'a, D: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: D,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

fn frame<D: Serialize>(
    event: &str,
    channel: Option<&str>,
    data: D,
    user_id: Option<&str>,
) -> Utf8Bytes {
    let frame = Frame {
        event,
        channel,
        data,
        user_id,
    };
    serde_json::to_string(&frame)
        .expect("frames hold only strings and JSON values, which always serialise")
        .into()
}

/// `pusher:connection_established`; `data` is a JSON string because pysher `json.loads` it.
pub(crate) fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> Utf8Bytes {
    let data = json!({"socket_id": socket_id, "activity_timeout": activity_timeout_secs});
    frame(
        "pusher:connection_established",
        None,
        data.to_string(),
        None,
    )
}

/// `pusher:error` with `data` as an object: pysher reads `data['code']` from a dict.
pub(crate) fn error(code: u16, message: &str, channel: Option<&str>) -> Utf8Bytes {
    frame(
        "pusher:error",
        channel,
        json!({"code": code, "message": message}),
        None,
    )
}

/// `pusher:ping` from the server after the client went quiet.
pub(crate) fn ping() -> Utf8Bytes {
    frame("pusher:ping", None, json!({}), None)
}

/// `pusher:pong`, the answer to a client's ping.
pub(crate) fn pong() -> Utf8Bytes {
    frame("pusher:pong", None, json!({}), None)
}

/// `pusher_internal:subscription_succeeded`; `data` is `"{}"` or the presence snapshot string.
pub(crate) fn subscription_succeeded(channel: &str, data: String) -> Utf8Bytes {
    frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        data,
        None,
    )
}

/// `pusher:subscription_error` scoped to the channel (soketi's form): pusher-js then fires the
/// channel's own `pusher:subscription_error` handler and the connection stays open.
pub(crate) fn subscription_error(
    channel: &str,
    kind: &str,
    message: &str,
    status: u16,
) -> Utf8Bytes {
    let data = json!({"type": kind, "error": message, "status": status});
    frame("pusher:subscription_error", Some(channel), data, None)
}

/// An app event (from the bus or the HTTP API) with its `data` already encoded as a string.
pub(crate) fn channel_event(name: &str, channel: &str, data: &str) -> Utf8Bytes {
    frame(name, Some(channel), data, None)
}

/// A relayed client event: `data` is forwarded as the sender gave it; presence adds `user_id`.
pub(crate) fn client_event(
    name: &str,
    channel: &str,
    data: &Value,
    user_id: Option<&str>,
) -> Utf8Bytes {
    frame(name, Some(channel), data, user_id)
}

/// `pusher_internal:member_added` with the member as a JSON string.
pub(crate) fn member_added(channel: &str, user_id: &str, user_info: &Value) -> Utf8Bytes {
    let data = json!({"user_id": user_id, "user_info": user_info});
    frame(
        "pusher_internal:member_added",
        Some(channel),
        data.to_string(),
        None,
    )
}

/// `pusher_internal:member_removed` with `{"user_id"}` as a JSON string.
pub(crate) fn member_removed(channel: &str, user_id: &str) -> Utf8Bytes {
    let data = json!({ "user_id": user_id });
    frame(
        "pusher_internal:member_removed",
        Some(channel),
        data.to_string(),
        None,
    )
}

/// A presence member as the subscriber's `channel_data` declares it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemberData {
    /// `user_id`, stringified when it was a number (member lists are keyed by string).
    pub(crate) user_id: String,
    /// `user_info`, `null` when absent.
    pub(crate) user_info: Value,
}

impl MemberData {
    /// Reads `channel_data`: a JSON object with a non-empty string or numeric `user_id`.
    pub(crate) fn parse(channel_data: &str) -> Option<Self> {
        let Value::Object(mut map) = serde_json::from_str(channel_data).ok()? else {
            return None;
        };
        let user_id = match map.remove("user_id")? {
            Value::String(s) if !s.is_empty() => s,
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let user_info = map.remove("user_info").unwrap_or(Value::Null);
        Some(Self { user_id, user_info })
    }
}
