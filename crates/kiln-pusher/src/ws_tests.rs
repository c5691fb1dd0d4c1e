//! End-to-end tests over real sockets: an axum server on 127.0.0.1:0 serving
//! [`Realtime::router`], driven by a tokio-tungstenite client speaking the Pusher wire format the
//! way pusher-js and pysher do.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use tokio::sync::broadcast;

use super::{
    signed_events_request, AppEvent as Event, ChannelFeed, EventSource, Realtime, RealtimeConfig,
    RealtimeOptions,
};

/// The application's events for the tests: a broadcast per channel, followed from the moment a
/// socket subscribes.
#[derive(Debug, Default)]
struct TestSource {
    channels: Mutex<HashMap<String, broadcast::Sender<Event>>>,
}

impl TestSource {
    fn sender(&self, channel: &str) -> broadcast::Sender<Event> {
        self.channels
            .lock()
            .unwrap()
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(1 << 16).0)
            .clone()
    }
}

impl EventSource for TestSource {
    fn subscribe(&self, channel: &str) -> Option<ChannelFeed> {
        let rx = self.sender(channel).subscribe();
        Some(
            stream::unfold(rx, |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(event) => return Some((event, rx)),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            })
            .boxed(),
        )
    }
}

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const KEY: &str = "test-key";
const WAIT: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    realtime: Realtime,
    source: Arc<TestSource>,
}

fn config() -> RealtimeConfig {
    RealtimeConfig {
        app_id: "42".into(),
        app_key: KEY.into(),
        app_secret: "test-secret".into(),
        activity_timeout_secs: 120,
        max_message_bytes: 10 * 1024,
    }
}

async fn start_with(config: RealtimeConfig, options: RealtimeOptions) -> Server {
    let source = Arc::new(TestSource::default());
    let realtime = Realtime::with_options(config, options, source.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = realtime.router();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        addr,
        realtime,
        source,
    }
}

async fn start() -> Server {
    start_with(config(), RealtimeOptions::default()).await
}

fn url(addr: SocketAddr, key: &str, query: &str) -> String {
    format!("ws://{addr}/app/{key}?{query}")
}

async fn connect_raw(addr: SocketAddr, key: &str, query: &str) -> Client {
    let (client, _) = tokio_tungstenite::connect_async(url(addr, key, query))
        .await
        .unwrap();
    client
}

/// Connects like pusher-js and returns the client with its socket id.
async fn connect(server: &Server) -> (Client, String) {
    let mut client = connect_raw(
        server.addr,
        KEY,
        "protocol=7&client=js&version=8.6.0&flash=false",
    )
    .await;
    let established = recv(&mut client).await;
    assert_eq!(established["event"], "pusher:connection_established");
    let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
    let socket_id = data["socket_id"].as_str().unwrap().to_owned();
    (client, socket_id)
}

/// The next WebSocket message that is not a transport-level ping or pong.
async fn next_message(client: &mut Client) -> Message {
    loop {
        let message = timeout(WAIT, futures_util::StreamExt::next(client))
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("read error");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// The next Pusher frame, parsed.
async fn recv(client: &mut Client) -> Value {
    match next_message(client).await {
        Message::Text(text) => serde_json::from_str(text.as_str()).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn send(client: &mut Client, frame: Value) {
    futures_util::SinkExt::send(client, Message::text(frame.to_string()))
        .await
        .unwrap();
}

/// Expects `pusher:error` with `code`, then a close frame with the same code.
async fn expect_fatal(client: &mut Client, code: u16) {
    let error = recv(client).await;
    assert_eq!(error["event"], "pusher:error", "{error}");
    assert_eq!(error["data"]["code"], code, "{error}");
    match next_message(client).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), code),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Pings and expects the pong next: proves nothing else was queued before it.
async fn expect_nothing_pending(client: &mut Client) {
    send(client, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(recv(client).await["event"], "pusher:pong");
}

async fn subscribe(client: &mut Client, data: Value) -> Value {
    send(client, json!({"event": "pusher:subscribe", "data": data})).await;
    recv(client).await
}

fn publish(source: &TestSource, channel: &str, name: &str, data: Value) {
    let _ = source.sender(channel).send(Event {
        channel: channel.into(),
        name: name.into(),
        data,
    });
}

#[tokio::test]
async fn connection_established_data_is_a_string_with_socket_id_and_timeout() {
    let server = start().await;
    let mut client = connect_raw(server.addr, KEY, "protocol=7&client=js&version=8.6.0").await;
    let frame = recv(&mut client).await;
    assert_eq!(frame["event"], "pusher:connection_established");
    let data: Value =
        serde_json::from_str(frame["data"].as_str().expect("data is a string")).unwrap();
    assert!(Realtime::valid_socket_id(
        data["socket_id"].as_str().unwrap()
    ));
    assert_eq!(data["activity_timeout"], 120);
    assert_eq!(server.realtime.connections(), 1);
    drop(client);
    timeout(WAIT, async {
        while server.realtime.connections() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("connection count returns to 0");
}

#[tokio::test]
async fn wrong_app_key_and_bad_protocols_are_refused_with_their_codes() {
    let server = start().await;
    let mut client = connect_raw(server.addr, "nope", "protocol=7").await;
    expect_fatal(&mut client, 4001).await;
    let mut client = connect_raw(server.addr, KEY, "protocol=3").await;
    expect_fatal(&mut client, 4007).await;
    let mut client = connect_raw(server.addr, KEY, "protocol=8").await;
    expect_fatal(&mut client, 4007).await;
    let mut client = connect_raw(server.addr, KEY, "client=js").await;
    expect_fatal(&mut client, 4008).await;
    // pysher's URL: protocol 6.
    let mut client = connect_raw(server.addr, KEY, "client=Pysher&version=1.0.8&protocol=6").await;
    assert_eq!(
        recv(&mut client).await["event"],
        "pusher:connection_established"
    );
}

#[tokio::test]
async fn ping_gets_pong_whatever_the_data() {
    let server = start().await;
    let (mut client, _) = connect(&server).await;
    send(&mut client, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        recv(&mut client).await,
        json!({"event": "pusher:pong", "data": {}})
    );
    // pysher sends data "".
    send(&mut client, json!({"event": "pusher:ping", "data": ""})).await;
    assert_eq!(recv(&mut client).await["event"], "pusher:pong");
}

#[tokio::test]
async fn private_channels_need_the_right_auth() {
    let server = start().await;
    let (mut client, socket_id) = connect(&server).await;
    let channel = "private-run-abc";

    let wrong = server.realtime.sign("1.1", channel);
    let frame = subscribe(&mut client, json!({"channel": channel, "auth": wrong})).await;
    assert_eq!(frame["event"], "pusher:subscription_error");
    assert_eq!(frame["channel"], channel);
    assert_eq!(frame["data"]["type"], "AuthError");
    assert_eq!(frame["data"]["status"], 401);

    let frame = subscribe(&mut client, json!({"channel": channel, "auth": ""})).await;
    assert_eq!(frame["event"], "pusher:subscription_error");

    let auth = server.realtime.sign(&socket_id, channel);
    let frame = subscribe(&mut client, json!({"channel": channel, "auth": auth})).await;
    assert_eq!(
        frame,
        json!({"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"})
    );
    // Public channels need nothing (pysher omits auth).
    let frame = subscribe(&mut client, json!({"channel": "news"})).await;
    assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
    expect_nothing_pending(&mut client).await;
}

#[tokio::test]
async fn app_events_arrive_in_order_only_on_subscribed_channels_until_unsubscribed() {
    let server = start().await;
    let (mut client, socket_id) = connect(&server).await;
    let channel = "private-run-1";
    let auth = server.realtime.sign(&socket_id, channel);
    let frame = subscribe(&mut client, json!({"channel": channel, "auth": auth})).await;
    assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");

    for seq in 0..20 {
        publish(
            &server.source,
            "private-run-other",
            "stdout",
            json!({"chunk": "no", "seq": seq}),
        );
        publish(
            &server.source,
            channel,
            "stdout",
            json!({"chunk": "hi\n", "seq": seq}),
        );
    }
    for seq in 0..20 {
        let frame = recv(&mut client).await;
        assert_eq!(frame["event"], "stdout");
        assert_eq!(frame["channel"], channel);
        let data = frame["data"].as_str().expect("data is a JSON string");
        let data: Value = serde_json::from_str(data).unwrap();
        assert_eq!(data, json!({"chunk": "hi\n", "seq": seq}));
    }
    expect_nothing_pending(&mut client).await;

    send(
        &mut client,
        json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}),
    )
    .await;
    expect_nothing_pending(&mut client).await;
    publish(
        &server.source,
        channel,
        "stdout",
        json!({"chunk": "late", "seq": 99}),
    );
    expect_nothing_pending(&mut client).await;
}

#[tokio::test]
async fn malformed_and_unknown_messages_get_errors_and_the_socket_survives() {
    let server = start().await;
    let (mut client, _) = connect(&server).await;
    for bad in [
        "{not json",
        "[1,2]",
        r#"{"data":{}}"#,
        r#"{"event":"pusher:frobnicate"}"#,
        r#"{"event":"pusher:subscribe","data":{}}"#,
    ] {
        futures_util::SinkExt::send(&mut client, Message::text(bad))
            .await
            .unwrap();
        let frame = recv(&mut client).await;
        assert_eq!(frame["event"], "pusher:error", "{bad}");
        assert_eq!(frame["data"]["code"], 4300, "{bad}");
    }
    let frame = subscribe(&mut client, json!({"channel": "bad name!"})).await;
    assert_eq!(frame["event"], "pusher:subscription_error");
    expect_nothing_pending(&mut client).await;
}

#[tokio::test]
async fn oversize_messages_close_the_socket_with_4009() {
    let server = start().await;
    let (mut client, _) = connect(&server).await;
    let big = json!({"event": "pusher:ping", "data": "x".repeat(11 * 1024)});
    send(&mut client, big).await;
    expect_fatal(&mut client, 4009).await;
}

#[tokio::test]
async fn idle_clients_are_pinged_then_closed_without_a_pong() {
    let config = RealtimeConfig {
        activity_timeout_secs: 1,
        ..config()
    };
    let options = RealtimeOptions {
        pong_timeout_secs: 1,
        ..RealtimeOptions::default()
    };
    let server = start_with(config, options).await;
    let (mut client, _) = connect(&server).await;
    assert_eq!(
        recv(&mut client).await,
        json!({"event": "pusher:ping", "data": {}})
    );
    send(&mut client, json!({"event": "pusher:pong", "data": {}})).await;
    // Answered: the next ping comes a full activity timeout later, and then silence closes.
    assert_eq!(recv(&mut client).await["event"], "pusher:ping");
    expect_fatal(&mut client, 4201).await;
}

#[tokio::test]
async fn presence_channels_share_members() {
    let server = start().await;
    let channel = "presence-room";
    let join = |socket_id: &str, user: Value| {
        let data = user.to_string();
        let auth = server.realtime.sign_presence(socket_id, channel, &data);
        json!({"channel": channel, "auth": auth, "channel_data": data})
    };
    let (mut alice, alice_id) = connect(&server).await;
    let frame = subscribe(
        &mut alice,
        join(
            &alice_id,
            json!({"user_id": "a", "user_info": {"name": "Alice"}}),
        ),
    )
    .await;
    assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
    let snapshot: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        snapshot,
        json!({"presence": {"ids": ["a"], "hash": {"a": {"name": "Alice"}}, "count": 1}})
    );

    let (mut bob, bob_id) = connect(&server).await;
    // A signature over other channel_data is refused.
    let mut forged = join(&bob_id, json!({"user_id": 7}));
    forged["channel_data"] = json!(json!({"user_id": "a"}).to_string());
    assert_eq!(
        subscribe(&mut bob, forged).await["event"],
        "pusher:subscription_error"
    );
    let frame = subscribe(&mut bob, join(&bob_id, json!({"user_id": 7}))).await;
    let snapshot: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
    assert_eq!(snapshot["presence"]["count"], 2);
    assert_eq!(snapshot["presence"]["hash"]["7"], Value::Null);

    let added = recv(&mut alice).await;
    assert_eq!(added["event"], "pusher_internal:member_added");
    assert_eq!(added["channel"], channel);
    let member: Value = serde_json::from_str(added["data"].as_str().unwrap()).unwrap();
    assert_eq!(member, json!({"user_id": "7", "user_info": null}));

    drop(bob);
    let removed = recv(&mut alice).await;
    assert_eq!(removed["event"], "pusher_internal:member_removed");
    assert_eq!(removed["data"], r#"{"user_id":"7"}"#);
    expect_nothing_pending(&mut alice).await;
}

#[tokio::test]
async fn client_events_are_refused_unless_enabled_then_relayed_to_others_only() {
    let channel = "private-chat";
    for enabled in [false, true] {
        let options = RealtimeOptions {
            client_events: enabled,
            ..RealtimeOptions::default()
        };
        let server = start_with(config(), options).await;
        let (mut a, a_id) = connect(&server).await;
        let (mut b, b_id) = connect(&server).await;
        for (client, id) in [(&mut a, &a_id), (&mut b, &b_id)] {
            let auth = server.realtime.sign(id, channel);
            subscribe(client, json!({"channel": channel, "auth": auth})).await;
        }
        let event = json!({"event": "client-typing", "channel": channel, "data": {"who": "a"}});
        send(&mut a, event.clone()).await;
        if enabled {
            assert_eq!(recv(&mut b).await, event);
        } else {
            let frame = recv(&mut a).await;
            assert_eq!(frame["event"], "pusher:error");
            assert_eq!(frame["data"]["code"], 4301);
        }
        expect_nothing_pending(&mut a).await;
        expect_nothing_pending(&mut b).await;
    }
}

/// A minimal HTTP/1.1 POST; returns the status and body.
async fn http_post(addr: SocketAddr, path_and_query: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test]
async fn signed_http_events_reach_subscribers_and_unsigned_ones_do_not() {
    let server = start().await;
    let (mut client, _) = connect(&server).await;
    subscribe(&mut client, json!({"channel": "news"})).await;

    // Data given as a string (as every SDK sends it) reaches clients byte for byte.
    let raw = r#"{"chunk": "py\n", "seq": 0}"#;
    let event = Event {
        channel: "news".into(),
        name: "stdout".into(),
        data: Value::String(raw.into()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (path, body) = signed_events_request(&config(), &event, now);
    assert_eq!(
        http_post(server.addr, &path, &body).await,
        (200, "{}".into())
    );
    assert_eq!(
        recv(&mut client).await,
        json!({"event": "stdout", "channel": "news", "data": raw})
    );

    let tampered = body.replace("stdout", "stderr");
    let (status, _) = http_post(server.addr, &path, &tampered).await;
    assert_eq!(status, 401);
    let (stale_path, stale_body) = signed_events_request(&config(), &event, now - 3600);
    assert_eq!(
        http_post(server.addr, &stale_path, &stale_body).await.0,
        401
    );
    let wrong_app = path.replace("/apps/42/", "/apps/43/");
    assert_eq!(http_post(server.addr, &wrong_app, &body).await.0, 404);
    expect_nothing_pending(&mut client).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_without_stalling_others() {
    let options = RealtimeOptions {
        send_queue_len: 16,
        // Also how long a socket may go without taking a single frame.
        pong_timeout_secs: 1,
        ..RealtimeOptions::default()
    };
    let server = start_with(config(), options).await;
    let (mut fast, _) = connect(&server).await;
    subscribe(&mut fast, json!({"channel": "flood"})).await;
    // A tiny receive window makes the server's writes to this client block early.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(
        url(server.addr, KEY, "protocol=7"),
        MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    recv(&mut slow).await;
    subscribe(&mut slow, json!({"channel": "flood"})).await;
    assert_eq!(server.realtime.connections(), 2);

    let chunk = "x".repeat(4096);
    let mut seq = 0u64;
    while seq < 12_000 && server.realtime.connections() == 2 {
        for _ in 0..64 {
            publish(
                &server.source,
                "flood",
                "stdout",
                json!({"chunk": chunk, "seq": seq}),
            );
            seq += 1;
        }
        // The fast client keeps up, in order, while the slow one falls behind.
        for expected in seq - 64..seq {
            let frame = recv(&mut fast).await;
            let data: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
            assert_eq!(data["seq"], expected);
        }
    }
    timeout(WAIT, async {
        while server.realtime.connections() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the slow client is dropped");
    eprintln!("slow client dropped after {seq} events");
    expect_nothing_pending(&mut fast).await;
}
