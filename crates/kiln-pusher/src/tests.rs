//! Unit tests: signatures against the documented Pusher vectors, the HTTP API request check, and
//! the wire helpers. The WebSocket behaviour is tested end to end in `ws_tests`.

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use serde_json::{json, Value};
use sha2::Sha256;

use super::auth::{md5_hex, string_to_sign, verify_request, RequestAuthError};
use super::protocol::{self, encode_data, valid_channel_name, ChannelKind, MemberData};
use super::{signed_events_request, AppEvent as Event, NoEvents, Realtime, RealtimeConfig};

/// The credentials of the Pusher documentation's examples.
fn doc_config() -> RealtimeConfig {
    RealtimeConfig {
        app_id: "3".into(),
        app_key: "278d425bdf160c739803".into(),
        app_secret: "7ad3773142a6692b25b8".into(),
        activity_timeout_secs: 120,
        max_message_bytes: 10 * 1024,
    }
}

fn hmac_sha256_hex(key: &str, message: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn sign_matches_the_documented_private_channel_vector() {
    let realtime = Realtime::new(doc_config(), std::sync::Arc::new(NoEvents));
    assert_eq!(
        realtime.sign("1234.1234", "private-foobar"),
        "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    );
}

#[test]
fn sign_presence_matches_the_documented_vector() {
    let realtime = Realtime::new(doc_config(), std::sync::Arc::new(NoEvents));
    let channel_data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
    assert_eq!(
        realtime.sign_presence("1234.1234", "presence-foobar", channel_data),
        "278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
    );
}

#[test]
fn request_signature_matches_the_documented_http_vector() {
    let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    assert_eq!(md5_hex(body.as_bytes()), "ec365a775a4cd0599faeb73354201b6f");
    let params = pairs(
        "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f",
    );
    let to_sign = string_to_sign("POST", "/apps/3/events", &params);
    assert_eq!(
        hmac_sha256_hex("7ad3773142a6692b25b8", &to_sign),
        "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
    );
    let mut signed = params.clone();
    signed.push((
        "auth_signature".into(),
        "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c".into(),
    ));
    let cfg = doc_config();
    let verify = |params: &[(String, String)], body: &str, now| {
        verify_request(&cfg, "POST", "/apps/3/events", params, body.as_bytes(), now)
    };
    assert_eq!(verify(&signed, body, 1353088179 + 30), Ok(()));
    assert_eq!(
        verify(&signed, body, 1353088179 + 601),
        Err(RequestAuthError::Expired { skew: 601 })
    );
    assert_eq!(
        verify(&signed, &body.replace("foo", "bar"), 1353088179),
        Err(RequestAuthError::BodyMd5)
    );
    let mut forged = signed.clone();
    forged.last_mut().unwrap().1 = "00".repeat(32);
    assert_eq!(
        verify(&forged, body, 1353088179),
        Err(RequestAuthError::Signature)
    );
    let mut doubled = signed.clone();
    doubled.push(("auth_key".into(), "278d425bdf160c739803".into()));
    assert!(matches!(
        verify(&doubled, body, 1353088179),
        Err(RequestAuthError::Duplicate(_))
    ));
}

#[test]
fn signed_events_request_is_signed_over_the_sorted_query_and_body_md5() {
    let cfg = doc_config();
    let event = Event {
        channel: "private-run-abc".into(),
        name: "stdout".into(),
        data: json!({"chunk": "hi\n", "seq": 0}),
    };
    let (path_and_query, body) = signed_events_request(&cfg, &event, 1_700_000_000);
    let (path, query) = path_and_query.split_once('?').unwrap();
    assert_eq!(path, "/apps/3/events");

    let body_json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body_json,
        json!({"name": "stdout", "channel": "private-run-abc", "data": "{\"chunk\":\"hi\\n\",\"seq\":0}"})
    );

    let params = pairs(query);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(get("auth_key"), "278d425bdf160c739803");
    assert_eq!(get("auth_timestamp"), "1700000000");
    assert_eq!(get("auth_version"), "1.0");
    assert_eq!(get("body_md5"), hex::encode(Md5::digest(body.as_bytes())));
    let to_sign = format!(
        "POST\n/apps/3/events\nauth_key={}&auth_timestamp=1700000000&auth_version=1.0&body_md5={}",
        get("auth_key"),
        get("body_md5")
    );
    assert_eq!(
        get("auth_signature"),
        hmac_sha256_hex("7ad3773142a6692b25b8", &to_sign)
    );
    // Kiln's own checker accepts what it signs.
    assert_eq!(
        verify_request(&cfg, "POST", path, &params, body.as_bytes(), 1_700_000_100),
        Ok(())
    );
}

#[test]
fn string_data_is_published_verbatim() {
    let cfg = doc_config();
    let raw = r#"{"chunk": "py\n", "seq": 0}"#;
    let event = Event {
        channel: "c".into(),
        name: "stdout".into(),
        data: Value::String(raw.into()),
    };
    let (_, body) = signed_events_request(&cfg, &event, 1);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["data"], raw);
    assert_eq!(encode_data(&json!({"a": 1})), r#"{"a":1}"#);
    assert_eq!(encode_data(&json!("plain")), "plain");
}

#[test]
fn socket_ids_have_the_pusher_shape() {
    for ok in ["1234.1234", "0.0", "18446744073709551615.1"] {
        assert!(Realtime::valid_socket_id(ok), "{ok}");
    }
    for bad in [
        "", ".", "1.", ".1", "1234", "1.2.3", "a.1", "1.1 ", "-1.2", "１.2",
    ] {
        assert!(!Realtime::valid_socket_id(bad), "{bad:?}");
    }
}

#[test]
fn channel_kinds_use_anchored_prefixes() {
    assert_eq!(ChannelKind::of("private-run-x"), ChannelKind::Private);
    assert_eq!(ChannelKind::of("private-encrypted-x"), ChannelKind::Private);
    assert_eq!(ChannelKind::of("presence-room"), ChannelKind::Presence);
    assert_eq!(ChannelKind::of("foo-private-x"), ChannelKind::Public);
    assert_eq!(ChannelKind::of("news"), ChannelKind::Public);
}

#[test]
fn channel_names_follow_the_pusher_rules() {
    assert!(valid_channel_name("private-run-abc_1=@,.;"));
    assert!(valid_channel_name(&"a".repeat(200)));
    assert!(!valid_channel_name(&"a".repeat(201)));
    assert!(!valid_channel_name(""));
    assert!(!valid_channel_name("with space"));
    assert!(!valid_channel_name("#server-to-user-1"));
    assert!(!valid_channel_name("é"));
}

#[test]
fn member_data_accepts_string_and_numeric_ids() {
    let m = MemberData::parse(r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#).unwrap();
    assert_eq!(m.user_id, "10");
    assert_eq!(m.user_info, json!({"name": "Mr. Channels"}));
    let m = MemberData::parse(r#"{"user_id":"u1"}"#).unwrap();
    assert_eq!((m.user_id.as_str(), m.user_info), ("u1", Value::Null));
    for bad in [
        r#"{"user_info":{}}"#,
        r#"{"user_id":""}"#,
        r#"{"user_id":null}"#,
        "[]",
        "x",
    ] {
        assert_eq!(MemberData::parse(bad), None, "{bad}");
    }
}

#[test]
fn frames_always_carry_data_and_use_strings_where_clients_need_them() {
    let parse =
        |f: axum::extract::ws::Utf8Bytes| -> Value { serde_json::from_str(f.as_str()).unwrap() };
    let established = parse(protocol::connection_established("1.2", 120));
    let inner: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
    assert_eq!(inner, json!({"socket_id": "1.2", "activity_timeout": 120}));
    assert_eq!(
        parse(protocol::pong()),
        json!({"event": "pusher:pong", "data": {}})
    );
    assert_eq!(
        parse(protocol::error(4001, "no", None)),
        json!({"event": "pusher:error", "data": {"code": 4001, "message": "no"}})
    );
    assert_eq!(
        parse(protocol::subscription_succeeded("c", "{}".into())),
        json!({"event": "pusher_internal:subscription_succeeded", "channel": "c", "data": "{}"})
    );
    let removed = parse(protocol::member_removed("presence-r", "7"));
    assert_eq!(removed["data"], r#"{"user_id":"7"}"#);
}
