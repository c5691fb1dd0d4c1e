//! kiln-pusher is an embedded Pusher Channels server (protocol 7, and 6 for pysher): pusher-js
//! and pysher clients connect over `GET /app/{appKey}` WebSockets and subscribe to channels; the
//! Pusher server SDKs publish through the signed HTTP events API. It knows nothing of what the
//! events mean: the application hands it an [`EventSource`], which it asks for one channel's
//! events when a socket subscribes to that channel, so each socket follows only its own
//! channels. [`signed_events_request`] covers the other direction: publishing to an external
//! Pusher-compatible server.
//!
//! - `protocol`: frames, channel names and codes.
//! - `auth`: channel and HTTP API signatures.
//! - `hub`: state shared between sockets (rooms, presence members, triggered events).
//! - `socket`: one connection's session and writer.
//! - `http_api`: the trigger routes.

mod auth;
mod http_api;
mod hub;
mod protocol;
mod socket;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod ws_tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use futures_util::stream::BoxStream;

pub use auth::signed_events_request;

use hub::Hub;
use socket::Handshake;

/// One event on one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct AppEvent {
    /// The channel, e.g. `private-run-<jobId>`.
    pub channel: String,
    /// The event name, e.g. `stdout`.
    pub name: String,
    /// The payload, sent to clients as a JSON-encoded string (a string is sent as it is).
    pub data: serde_json::Value,
}

/// A channel's events, in order.
pub type ChannelFeed = BoxStream<'static, AppEvent>;

/// Where the application's events come from.
pub trait EventSource: Send + Sync + fmt::Debug + 'static {
    /// The events of `channel` from now on, for a socket that has just subscribed to it; `None`
    /// when the application has none for that channel.
    fn subscribe(&self, channel: &str) -> Option<ChannelFeed>;
}

/// An application with no events of its own: sockets receive only what the HTTP API publishes.
#[derive(Debug, Default)]
pub struct NoEvents;

impl EventSource for NoEvents {
    fn subscribe(&self, _channel: &str) -> Option<ChannelFeed> {
        None
    }
}

/// Settings of the embedded Pusher endpoint.
#[derive(Clone)]
pub struct RealtimeConfig {
    /// The app id in HTTP API paths (`/apps/{appId}/…`); the python SDK wants it numeric.
    pub app_id: String,
    /// The public app key in WebSocket paths and in every `auth` string.
    pub app_key: String,
    /// The secret all signatures are keyed with.
    pub app_secret: String,
    /// Seconds of client silence before the server pings; also sent to clients in the handshake
    /// (pusher-js pings after the smaller of this and its own 120 s). Usually 120.
    pub activity_timeout_secs: u64,
    /// Largest client message accepted, and largest event `data` on the HTTP API (Pusher's own
    /// limit is 10 KiB).
    pub max_message_bytes: usize,
}

// Written out so the secret never reaches a log line.
impl fmt::Debug for RealtimeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealtimeConfig")
            .field("app_id", &self.app_id)
            .field("app_key", &self.app_key)
            .field("app_secret", &"<redacted>")
            .field("activity_timeout_secs", &self.activity_timeout_secs)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

/// Less common settings; [`Default`] suits production.
#[derive(Debug, Clone)]
pub struct RealtimeOptions {
    /// Seconds to wait for any client traffic after a server ping before closing with 4201.
    /// Default 30 (pusher-js's and pysher's own pong timeout).
    pub pong_timeout_secs: u64,
    /// Whether `client-*` events on private and presence channels are relayed to the channel's
    /// other sockets. Default off: code-runner clients never send them.
    pub client_events: bool,
    /// Frames that may wait for one socket before it counts as too slow. Default 256; app events
    /// may take three quarters of them, the rest is kept for replies.
    pub send_queue_len: usize,
    /// Bytes of app-event frames that may wait for one socket. Default 256 KiB. A socket whose
    /// client stops reading holds at most this much (and the frame its writer is sending); the
    /// events after it wait in the event source, not in the socket.
    pub send_queue_bytes: usize,
}

impl Default for RealtimeOptions {
    fn default() -> Self {
        Self {
            pong_timeout_secs: 30,
            client_events: false,
            send_queue_len: 256,
            send_queue_bytes: 256 << 10,
        }
    }
}

/// The Pusher endpoint. Cheap to clone; every clone shares the same sockets.
#[derive(Debug, Clone)]
pub struct Realtime {
    hub: Arc<Hub>,
}

impl Realtime {
    /// An endpoint serving the events of `source`. Spawns nothing until a client connects, so it
    /// may be built outside a runtime.
    pub fn new(config: RealtimeConfig, source: Arc<dyn EventSource>) -> Self {
        Self::with_options(config, RealtimeOptions::default(), source)
    }

    /// [`Realtime::new`] with non-default [`RealtimeOptions`].
    pub fn with_options(
        config: RealtimeConfig,
        options: RealtimeOptions,
        source: Arc<dyn EventSource>,
    ) -> Self {
        Self {
            hub: Arc::new(Hub::new(config, options, source)),
        }
    }

    /// Publishes an event to the sockets subscribed to its channel now (what the HTTP events API
    /// does for a trigger).
    pub fn publish(&self, event: AppEvent) {
        self.hub.publish(event);
    }

    /// The events published on the endpoint from now on (by [`Realtime::publish`] or the HTTP
    /// events API).
    pub fn published(&self) -> tokio::sync::broadcast::Receiver<Arc<AppEvent>> {
        self.hub.triggers.subscribe()
    }

    /// `GET /app/{appKey}` (the WebSocket; query `protocol=7&client=js&version=..`),
    /// `POST /apps/{appId}/events` and `POST /apps/{appId}/batch_events` (signed Pusher HTTP API;
    /// accepted events go to the channels' sockets). The state is applied, so it can be merged.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/app/{app_key}", get(upgrade))
            .route("/apps/{app_id}/events", post(http_api::post_events))
            .route(
                "/apps/{app_id}/batch_events",
                post(http_api::post_batch_events),
            )
            .with_state(Arc::clone(&self.hub))
    }

    /// The `auth` for a private channel subscription:
    /// `"<appKey>:" + hex(HMAC_SHA256(secret, "<socket_id>:<channel>"))`.
    pub fn sign(&self, socket_id: &str, channel: &str) -> String {
        auth::channel_auth(&self.hub.config, socket_id, channel, None)
    }

    /// The `auth` for a presence channel subscription, signed over
    /// `"<socket_id>:<channel>:<channel_data>"` (`channel_data` exactly as the client will send it).
    pub fn sign_presence(&self, socket_id: &str, channel: &str, channel_data: &str) -> String {
        auth::channel_auth(&self.hub.config, socket_id, channel, Some(channel_data))
    }

    /// Whether `socket_id` has the Pusher shape `\d+\.\d+` (ASCII digits only).
    pub fn valid_socket_id(socket_id: &str) -> bool {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        socket_id
            .split_once('.')
            .is_some_and(|(a, b)| digits(a) && digits(b))
    }

    /// Number of open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.hub.open_sockets()
    }
}

/// Upgrades, with a frame cap above `max_message_bytes` so a message a little too large still
/// gets a readable 4009 rather than a dropped connection.
async fn upgrade(
    State(hub): State<Arc<Hub>>,
    Path(app_key): Path<String>,
    Query(mut query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let cap = hub
        .config
        .max_message_bytes
        .saturating_mul(2)
        .saturating_add(16 * 1024);
    let handshake = Handshake {
        app_key,
        protocol: query.remove("protocol"),
    };
    ws.max_message_size(cap)
        .max_frame_size(cap)
        .on_upgrade(move |socket| socket::serve(hub, socket, handshake))
}
