//! Pusher signatures: channel auth (`<key>:<hex hmac>`), the signed HTTP API (auth_version 1.0,
//! both checking incoming requests and signing requests to an external server).
//!
//! Every HMAC is HMAC-SHA256 keyed with the app secret and rendered as lowercase hex. Comparisons
//! of anything derived from the secret are constant-time, so response timing leaks nothing about
//! the expected value.

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use serde::Serialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::protocol::encode_data;
use super::RealtimeConfig;
use crate::AppEvent as Event;

/// How far `auth_timestamp` may be from the server's clock (the spec's 10 minutes), which bounds
/// how long a captured request can be replayed.
pub(crate) const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// Lowercase hex HMAC-SHA256 of `message` keyed with `secret`.
pub(crate) fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Lowercase hex MD5 of `body`: the HTTP API's `body_md5`.
pub(crate) fn md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Constant-time equality of two strings (their lengths are not secret).
pub(crate) fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The `auth` a subscriber must present: over `socket_id:channel` for private channels and
/// `socket_id:channel:channel_data` for presence channels.
pub(crate) fn channel_auth(
    config: &RealtimeConfig,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let message = match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    };
    format!(
        "{}:{}",
        config.app_key,
        hmac_hex(&config.app_secret, &message)
    )
}

/// `METHOD\nPATH\nQS` where QS is every parameter but `auth_signature`, keys lower-cased, sorted,
/// joined as `k=v` with values *not* URL-escaped (what the Pusher libraries sign).
pub(crate) fn string_to_sign(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("auth_signature"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    pairs.sort_unstable();
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{method}\n{path}\n{}", query.join("&"))
}

/// Why a signed HTTP API request was refused (all are answered with 401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestAuthError {
    /// A required query parameter is absent.
    #[error("missing query parameter {0}")]
    Missing(&'static str),
    /// A query parameter appears more than once, which would make the signed string ambiguous.
    #[error("query parameter {0} given more than once")]
    Duplicate(String),
    /// `auth_key` is not this app's key.
    #[error("auth_key {0:?} is not this app's key")]
    WrongKey(String),
    /// Only auth_version 1.0 exists.
    #[error("auth_version {0:?} is not supported (expected 1.0)")]
    Version(String),
    /// `auth_timestamp` is not a number of seconds.
    #[error("auth_timestamp {0:?} is not a unix time in seconds")]
    Timestamp(String),
    /// `auth_timestamp` is too far from the server clock.
    #[error("Timestamp expired or too far in the future ({skew} s from the server clock; at most {MAX_CLOCK_SKEW_SECS} s)")]
    Expired {
        /// The distance from the server clock, in seconds.
        skew: u64,
    },
    /// `body_md5` does not match the body received.
    #[error("body_md5 does not match the request body")]
    BodyMd5,
    /// The signature is wrong.
    #[error("Invalid API signature")]
    Signature,
}

/// Checks a signed HTTP API request: key, version, timestamp window, body MD5 and signature.
/// `params` are the decoded query pairs, `path` the request path as the client signed it.
pub(crate) fn verify_request(
    config: &RealtimeConfig,
    method: &str,
    path: &str,
    params: &[(String, String)],
    body: &[u8],
    now_secs: u64,
) -> Result<(), RequestAuthError> {
    let mut seen: Vec<String> = Vec::with_capacity(params.len());
    for (k, _) in params {
        let key = k.to_ascii_lowercase();
        if seen.contains(&key) {
            return Err(RequestAuthError::Duplicate(key));
        }
        seen.push(key);
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };

    let key = get("auth_key").ok_or(RequestAuthError::Missing("auth_key"))?;
    if key != config.app_key {
        return Err(RequestAuthError::WrongKey(key.to_owned()));
    }
    let version = get("auth_version").ok_or(RequestAuthError::Missing("auth_version"))?;
    if version != "1.0" {
        return Err(RequestAuthError::Version(version.to_owned()));
    }
    let ts = get("auth_timestamp").ok_or(RequestAuthError::Missing("auth_timestamp"))?;
    let ts: u64 = ts
        .parse()
        .map_err(|_| RequestAuthError::Timestamp(ts.to_owned()))?;
    let skew = now_secs.abs_diff(ts);
    if skew > MAX_CLOCK_SKEW_SECS {
        return Err(RequestAuthError::Expired { skew });
    }
    // The MD5 binds the body to the signature; a GET may carry md5("") (the python SDK does).
    match get("body_md5") {
        Some(given) if !given.eq_ignore_ascii_case(&md5_hex(body)) => {
            return Err(RequestAuthError::BodyMd5)
        }
        None if !body.is_empty() => return Err(RequestAuthError::Missing("body_md5")),
        _ => {}
    }
    let given = get("auth_signature").ok_or(RequestAuthError::Missing("auth_signature"))?;
    let expected = hmac_hex(&config.app_secret, &string_to_sign(method, path, params));
    if !ct_eq(&given.to_ascii_lowercase(), &expected) {
        return Err(RequestAuthError::Signature);
    }
    Ok(())
}

/// The body of a trigger, in the field order the Pusher SDKs use.
#[derive(Serialize)]
struct TriggerBody<'a> {
    name: &'a str,
    channel: &'a str,
    data: std::borrow::Cow<'a, str>,
}

/// A signed `POST /apps/{app_id}/events` for an external Pusher-compatible server (soketi,
/// sockudo, Pusher). Returns the path with its query, and the JSON body
/// `{"name","channel","data":<string>}`; the caller prefixes its base URL (which must not add a
/// path, since the path is part of what is signed) and sends it with `Content-Type:
/// application/json`. `data` follows the SDK convention: a JSON string is sent as it is, any other
/// value JSON-encoded.
pub fn signed_events_request(
    cfg: &RealtimeConfig,
    event: &Event,
    timestamp: u64,
) -> (String, String) {
    let body = TriggerBody {
        name: &event.name,
        channel: &event.channel,
        data: encode_data(&event.data),
    };
    let body = serde_json::to_string(&body).expect("a struct of strings always serialises");
    let path = format!("/apps/{}/events", cfg.app_id);
    let mut params: Vec<(String, String)> = vec![
        ("auth_key".into(), cfg.app_key.clone()),
        ("auth_timestamp".into(), timestamp.to_string()),
        ("auth_version".into(), "1.0".into()),
        ("body_md5".into(), md5_hex(body.as_bytes())),
    ];
    let signature = hmac_hex(&cfg.app_secret, &string_to_sign("POST", &path, &params));
    params.push(("auth_signature".into(), signature));
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    (format!("{path}?{}", query.join("&")), body)
}

/// Escapes everything but RFC 3986 unreserved characters. The signature covers the raw values, so
/// the query must carry them through URL decoding unchanged.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
