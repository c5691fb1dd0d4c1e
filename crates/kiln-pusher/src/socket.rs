//! One WebSocket connection, from the handshake to the close.
//!
//! Each socket has two tasks. The session (this module's loop) reads the client, follows the
//! feeds of its channels, keeps the activity clock and queues frames; the writer drains the queue
//! to the network. The queue is bounded, so a client that stops reading costs a fixed amount of
//! memory:
//! - app events take room in a byte budget (`send_queue_bytes`; a small event counts as a share
//!   of it, so their number is bounded too). With none left, the session holds the next
//!   event and stops reading its feeds, which then wait (a feed reads from where the application
//!   keeps its events; nothing piles up for the socket). The socket is closed with 4100 (the client
//!   backs off and reconnects) when no slot frees for a pong timeout, or when it falls behind the
//!   events published on the endpoint itself by more than their backlog.
//! - everything else (replies, other sockets' client events, presence notices) uses the rest of
//!   the queue; when even that is full the socket is closed with 4100 at once.
//!
//! Keeping a share of the queue for replies means a pong is never refused just because a burst of
//! job output is waiting.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use super::auth::{channel_auth, ct_eq};
use super::hub::{Closing, Hub, Outbound, Peer};
use super::protocol::{
    self, code, encode_data, valid_channel_name, ChannelKind, ClientMessage, MemberData,
    SubscribeData, MAX_NAME_LEN,
};
use crate::AppEvent as Event;

/// Events of a socket's feeds that may wait for it, all its channels together.
const FEED_BACKLOG: usize = 16;

/// How long the writer may take to flush a closing socket before it is simply dropped.
const WRITER_GRACE: Duration = Duration::from_secs(5);
/// The same for a socket killed for being too slow: its writer is most likely stuck on a full
/// network buffer, and waiting longer would only hold its memory.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// Channels one socket may be subscribed to at once; subscriptions cost server memory, and the
/// code-runner client needs one.
pub(crate) const MAX_CHANNELS_PER_SOCKET: usize = 100;

/// What the upgrade request said.
#[derive(Debug)]
pub(crate) struct Handshake {
    /// The `{appKey}` path segment.
    pub(crate) app_key: String,
    /// The `protocol` query parameter, if any.
    pub(crate) protocol: Option<String>,
}

/// Why a connection is refused right after the upgrade, per the spec's codes.
fn refusal(hub: &Hub, handshake: &Handshake) -> Option<Closing> {
    if handshake.app_key != hub.config.app_key {
        let message = format!("App key {} does not exist.", handshake.app_key);
        return Some(Closing::new(code::APP_NOT_FOUND, message));
    }
    let Some(protocol) = &handshake.protocol else {
        return Some(Closing::new(code::NO_PROTOCOL, "No protocol version given"));
    };
    match protocol.parse::<u32>() {
        Ok(4..=7) => None,
        _ => Some(Closing::new(
            code::UNSUPPORTED_PROTOCOL,
            format!("Unsupported protocol version {protocol:?} (supported: 4 to 7)"),
        )),
    }
}

/// A fresh socket id: two random decimal numbers. It is the only thing a channel signature binds
/// to a connection, so it comes from the OS CSPRNG (through uuid v4) and cannot be guessed.
fn new_socket_id() -> String {
    let bits = uuid::Uuid::new_v4().as_u128();
    let high = (bits >> 64) as u64;
    let low = bits as u64;
    format!("{}.{}", high.max(1), low.max(1))
}

/// Serves one upgraded connection until it closes.
pub(crate) async fn serve(hub: Arc<Hub>, ws: WebSocket, handshake: Handshake) {
    let open = hub.open_socket();
    // Following the published events before anything is sent means none published after the
    // client could have subscribed is missed.
    let triggers = hub.triggers.subscribe();
    let (sink, stream) = ws.split();
    let queue_len = hub.options.send_queue_len.max(2);
    let (tx, rx) = mpsc::channel(queue_len);
    let (kill_tx, kill_rx) = watch::channel(None);
    let peer = Peer::new(tx, kill_tx);
    let mut writer = tokio::spawn(write_loop(sink, rx, kill_rx.clone()));

    if let Some(closing) = refusal(&hub, &handshake) {
        tracing::debug!(code = closing.code, reason = %closing.message, "realtime connection refused");
        peer.close(closing);
    } else {
        let (feed_tx, feed_rx) = mpsc::channel(FEED_BACKLOG);
        let socket_id = new_socket_id();
        let activity = hub.config.activity_timeout_secs.max(1);
        peer.send(protocol::connection_established(&socket_id, activity));
        tracing::debug!(socket_id, "realtime connection established");
        let session = Session {
            hub: Arc::clone(&hub),
            conn: open.conn,
            socket_id,
            peer: peer.clone(),
            subscriptions: HashMap::new(),
            activity: Duration::from_secs(activity),
            pong_wait: Duration::from_secs(hub.options.pong_timeout_secs.max(1)),
            last_seen: Instant::now(),
            ping_sent: None,
            room: EventRoom::new(hub.options.send_queue_bytes, queue_len - queue_len / 4),
            waiting: None,
            feeds: HashMap::new(),
            feed_tx,
        };
        session
            .run(stream, triggers, feed_rx, kill_rx.clone())
            .await;
    }

    // The writer ends once every handle to the queue is gone (the session left its rooms).
    drop(peer);
    let killed = kill_rx.borrow().is_some();
    let grace = if killed { KILL_GRACE } else { WRITER_GRACE };
    if timeout(grace, &mut writer).await.is_err() {
        writer.abort();
    }
    drop(open);
}

/// A connected socket's protocol state.
struct Session {
    hub: Arc<Hub>,
    conn: u64,
    socket_id: String,
    peer: Peer,
    subscriptions: HashMap<String, ChannelKind>,
    activity: Duration,
    pong_wait: Duration,
    last_seen: Instant,
    ping_sent: Option<Instant>,
    /// What app events may still take of the queue (the rest of it is kept for replies).
    room: EventRoom,
    /// An event for this socket, waiting for room since the instant given. If none frees within
    /// the pong timeout, the client counts as not reading and is dropped.
    waiting: Option<Waiting>,
    /// Per subscribed channel with a feed, the task that forwards it into `feed_tx`.
    feeds: HashMap<String, JoinHandle<()>>,
    feed_tx: mpsc::Sender<Arc<Event>>,
}

type Flow = ControlFlow<()>;

impl Session {
    async fn run(
        mut self,
        mut stream: SplitStream<WebSocket>,
        mut triggers: broadcast::Receiver<Arc<Event>>,
        mut feeds: mpsc::Receiver<Arc<Event>>,
        mut kill: watch::Receiver<Option<Closing>>,
    ) {
        loop {
            let idle_at = match self.ping_sent {
                Some(sent) => sent + self.pong_wait,
                None => self.last_seen + self.activity,
            };
            let stalled_at = self.waiting.as_ref().map(|w| w.since + self.pong_wait);
            let flow = tokio::select! {
                biased;
                _ = kill.changed() => Flow::Break(()),
                () = self.peer.closed() => Flow::Break(()),
                // Timers come before the events so a steady stream of them cannot starve them.
                () = tokio::time::sleep_until(idle_at) => self.on_idle(),
                () = tokio::time::sleep_until(stalled_at.unwrap_or(idle_at)), if stalled_at.is_some() => {
                    self.too_slow("Client is not reading")
                }
                message = stream.next() => self.on_message(message),
                slot = self.room.wait(self.waiting.as_ref().map_or(0, |w| w.cost)), if self.waiting.is_some() => {
                    self.deliver_waiting(slot)
                }
                event = triggers.recv(), if self.waiting.is_none() => self.on_event(event),
                Some(event) = feeds.recv(), if self.waiting.is_none() => self.on_event(Ok(event)),
            };
            if flow.is_break() {
                break;
            }
        }
        for channel in self.subscriptions.keys() {
            self.hub.leave(channel, self.conn);
        }
        for feed in self.feeds.values() {
            feed.abort();
        }
        tracing::debug!(socket_id = self.socket_id, "realtime connection ended");
    }

    fn send(&self, frame: axum::extract::ws::Utf8Bytes) -> Flow {
        if self.peer.send(frame) {
            Flow::Continue(())
        } else {
            Flow::Break(())
        }
    }

    /// Non-fatal `pusher:error`.
    fn error(&self, code: u16, message: &str, channel: Option<&str>) -> Flow {
        self.send(protocol::error(code, message, channel))
    }

    /// Fatal `pusher:error`, then close with the same code.
    fn fail(&self, code: u16, message: impl Into<String>) -> Flow {
        self.peer.close(Closing::new(code, message));
        Flow::Break(())
    }

    fn on_idle(&mut self) -> Flow {
        if self.ping_sent.is_some() {
            return self.fail(code::PONG_TIMEOUT, "Pong reply not received in time");
        }
        self.ping_sent = Some(Instant::now());
        self.send(protocol::ping())
    }

    /// An event: queued if the socket is subscribed and a slot is free, held otherwise. While one
    /// is held the feeds are not read, so they wait where the events are kept.
    fn on_event(&mut self, event: Result<Arc<Event>, RecvError>) -> Flow {
        match event {
            Ok(event) if self.subscriptions.contains_key(&event.channel) => {
                let frame =
                    protocol::channel_event(&event.name, &event.channel, &encode_data(&event.data));
                let cost = self.room.cost(frame.len());
                match self.room.take(cost) {
                    Some(slot) => self.queue_event(frame, slot),
                    None => {
                        self.waiting = Some(Waiting {
                            channel: event.channel.clone(),
                            frame,
                            cost,
                            since: Instant::now(),
                        });
                        Flow::Continue(())
                    }
                }
            }
            // Nothing subscribed, nothing lost.
            Ok(_) | Err(RecvError::Lagged(_)) if self.subscriptions.is_empty() => {
                Flow::Continue(())
            }
            Ok(_) => Flow::Continue(()),
            Err(RecvError::Lagged(missed)) => {
                self.too_slow(&format!("Client too slow: {missed} events were lost"))
            }
            Err(RecvError::Closed) => Flow::Break(()),
        }
    }

    fn deliver_waiting(&mut self, slot: Option<OwnedSemaphorePermit>) -> Flow {
        match (self.waiting.take(), slot) {
            // Unsubscribed meanwhile: the event is no longer the client's.
            (Some(w), Some(slot)) if self.subscriptions.contains_key(&w.channel) => {
                self.queue_event(w.frame, slot)
            }
            _ => Flow::Continue(()),
        }
    }

    fn queue_event(&self, frame: Utf8Bytes, slot: OwnedSemaphorePermit) -> Flow {
        if self.peer.send_event(frame, Some(slot)) {
            Flow::Continue(())
        } else {
            Flow::Break(())
        }
    }

    /// Drops a socket that cannot keep up. What is still queued is stale by then, so it is
    /// skipped; the client backs off (4100), reconnects and resynchronises.
    fn too_slow(&self, reason: &str) -> Flow {
        tracing::warn!(
            socket_id = self.socket_id,
            reason,
            "realtime client too slow; closing"
        );
        self.peer.kill(Closing::new(code::OVER_CAPACITY, reason));
        Flow::Break(())
    }

    fn on_message(&mut self, message: Option<Result<Message, axum::Error>>) -> Flow {
        let message = match message {
            Some(Ok(message)) => message,
            // A read error (including a frame over the hard size cap) leaves the stream unusable.
            Some(Err(_)) | None => return Flow::Break(()),
        };
        // Any traffic proves the client alive, which is all a ping would ask.
        self.last_seen = Instant::now();
        self.ping_sent = None;
        match message {
            Message::Text(text) => self.on_text(text.as_str()),
            Message::Binary(bytes) => match std::str::from_utf8(&bytes) {
                Ok(text) => self.on_text(text),
                Err(_) => self.error(
                    code::INVALID_MESSAGE,
                    "Binary frames must hold UTF-8 JSON",
                    None,
                ),
            },
            Message::Ping(_) | Message::Pong(_) => Flow::Continue(()),
            Message::Close(_) => Flow::Break(()),
        }
    }

    fn on_text(&mut self, text: &str) -> Flow {
        let max = self.hub.config.max_message_bytes;
        if text.len() > max {
            let message = format!("Message of {} bytes exceeds {max} bytes", text.len());
            return self.fail(code::MESSAGE_TOO_LARGE, message);
        }
        let message: ClientMessage = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(e) => {
                return self.error(
                    code::INVALID_MESSAGE,
                    &format!("Invalid message: {e}"),
                    None,
                )
            }
        };
        match message.event.as_str() {
            "pusher:ping" => self.send(protocol::pong()),
            "pusher:pong" => Flow::Continue(()),
            "pusher:subscribe" => self.subscribe(message.data),
            "pusher:unsubscribe" => self.unsubscribe(message.data),
            name if name.starts_with("client-") => {
                self.client_event(name, message.channel.as_deref(), &message.data)
            }
            name => self.error(
                code::INVALID_MESSAGE,
                &format!("Unsupported event {name:?}"),
                None,
            ),
        }
    }

    fn subscribe(&mut self, data: Value) -> Flow {
        let request = match SubscribeData::parse(data) {
            Ok(request) => request,
            Err(e) => {
                let message = format!("Invalid pusher:subscribe data: {e}");
                return self.error(code::INVALID_MESSAGE, &message, None);
            }
        };
        let channel = request.channel.as_str();
        let refuse = |kind: &str, message: &str, status: u16| {
            self.send(protocol::subscription_error(channel, kind, message, status))
        };
        if channel.len() > MAX_NAME_LEN {
            let message = format!("Channel name longer than {MAX_NAME_LEN} characters");
            return refuse("LimitReached", &message, 4009);
        }
        if !valid_channel_name(channel) {
            let message = "Channel names may only contain letters, digits and -_=@,.;";
            return refuse("InvalidChannelName", message, 400);
        }
        let kind = ChannelKind::of(channel);
        let member = match kind {
            ChannelKind::Public => None,
            ChannelKind::Private | ChannelKind::Presence => {
                let channel_data = match (kind, request.channel_data.as_deref()) {
                    (ChannelKind::Presence, None) => {
                        let message = "Presence channels need channel_data";
                        return refuse("AuthError", message, 401);
                    }
                    (ChannelKind::Presence, data) => data,
                    _ => None,
                };
                let expected =
                    channel_auth(&self.hub.config, &self.socket_id, channel, channel_data);
                let given = request.auth.as_deref().unwrap_or_default();
                if !ct_eq(given, &expected) {
                    return refuse("AuthError", "The connection is unauthorized.", 401);
                }
                match channel_data.map(MemberData::parse) {
                    None => None,
                    Some(Some(member)) => Some(member),
                    Some(None) => {
                        let message = "channel_data must be a JSON object with a user_id";
                        return refuse("BadChannelData", message, 400);
                    }
                }
            }
        };
        if !self.subscriptions.contains_key(channel)
            && self.subscriptions.len() >= MAX_CHANNELS_PER_SOCKET
        {
            let message = format!("At most {MAX_CHANNELS_PER_SOCKET} channels per connection");
            return refuse("LimitReached", &message, 4100);
        }
        let joined = self
            .hub
            .join(channel, self.conn, &self.peer, member.as_ref());
        let data = match joined {
            Ok(snapshot) => snapshot.unwrap_or_else(|| "{}".to_owned()),
            Err(full) => return refuse("LimitReached", &full.to_string(), 4100),
        };
        self.subscriptions.insert(request.channel.clone(), kind);
        // The feed starts before the client learns it is subscribed: nothing published after
        // that is missed.
        if !self.feeds.contains_key(&request.channel) {
            if let Some(mut feed) = self.hub.source.subscribe(&request.channel) {
                let tx = self.feed_tx.clone();
                let task = tokio::spawn(async move {
                    while let Some(event) = feed.next().await {
                        if tx.send(Arc::new(event)).await.is_err() {
                            return;
                        }
                    }
                });
                self.feeds.insert(request.channel.clone(), task);
            }
        }
        self.send(protocol::subscription_succeeded(&request.channel, data))
    }

    fn unsubscribe(&mut self, data: Value) -> Flow {
        match SubscribeData::parse(data) {
            Ok(request) => {
                if self.subscriptions.remove(&request.channel).is_some() {
                    self.hub.leave(&request.channel, self.conn);
                }
                if let Some(feed) = self.feeds.remove(&request.channel) {
                    feed.abort();
                }
                Flow::Continue(())
            }
            Err(e) => {
                let message = format!("Invalid pusher:unsubscribe data: {e}");
                self.error(code::INVALID_MESSAGE, &message, None)
            }
        }
    }

    fn client_event(&mut self, name: &str, channel: Option<&str>, data: &Value) -> Flow {
        let reject = |message: &str| self.error(code::CLIENT_EVENT_REJECTED, message, channel);
        if !self.hub.options.client_events {
            return reject("The app does not have client messaging enabled.");
        }
        let Some(channel) = channel else {
            return reject("Client events need a channel");
        };
        match self.subscriptions.get(channel) {
            None => return reject("Client events need a subscription to the channel"),
            Some(kind) if !kind.is_authenticated() => {
                return reject("Client events are only allowed on private and presence channels")
            }
            Some(_) => {}
        }
        if name.len() > MAX_NAME_LEN {
            return reject("Event name too long");
        }
        let user = self.hub.user_of(channel, self.conn);
        let frame = protocol::client_event(name, channel, data, user.as_deref());
        self.hub.relay(channel, self.conn, &frame);
        Flow::Continue(())
    }
}

/// An app event's frame that waits for room in the socket's queue.
#[derive(Debug)]
struct Waiting {
    channel: String,
    frame: Utf8Bytes,
    /// What it takes of the room.
    cost: u32,
    since: Instant,
}

/// The share of a socket's queue its app events may take: at most `bytes` of frames and at most
/// `frames` of them. A frame costs its length, and at least `bytes / frames`, so a run of small
/// frames meets the count bound and large ones the byte bound; a frame larger than the whole
/// budget costs all of it (it goes alone).
#[derive(Debug)]
struct EventRoom {
    permits: Arc<Semaphore>,
    bytes: u32,
    min_cost: u32,
}

impl EventRoom {
    fn new(bytes: usize, frames: usize) -> Self {
        let bytes = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        let frames = u32::try_from(frames.max(1)).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(bytes as usize)),
            bytes,
            min_cost: (bytes / frames).max(1),
        }
    }

    fn cost(&self, frame_len: usize) -> u32 {
        u32::try_from(frame_len)
            .unwrap_or(u32::MAX)
            .clamp(self.min_cost, self.bytes)
    }

    fn take(&self, cost: u32) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_many_owned(cost).ok()
    }

    /// Waits until `cost` is free. (Cancelled by the session's other branches, it only loses its
    /// place in line, which the session does not need.)
    async fn wait(&self, cost: u32) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits)
            .acquire_many_owned(cost)
            .await
            .ok()
    }
}

/// Drains the queue to the network. A kill skips whatever is still queued.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Outbound>,
    mut kill: watch::Receiver<Option<Closing>>,
) {
    let mut kill_open = true;
    loop {
        let next = tokio::select! {
            biased;
            changed = kill.changed(), if kill_open => match changed {
                Ok(()) => match kill.borrow_and_update().clone() {
                    Some(closing) => Outbound::Close(closing),
                    None => continue,
                },
                Err(_) => {
                    kill_open = false;
                    continue;
                }
            },
            item = queue.recv() => match item {
                Some(item) => item,
                None => {
                    // The session ended on the client's close or a read error.
                    let _ = timeout(WRITER_GRACE, sink.close()).await;
                    return;
                }
            },
        };
        match next {
            Outbound::Frame(text, _slot) => {
                if sink.send(Message::Text(text)).await.is_err() {
                    return;
                }
            }
            Outbound::Close(closing) => {
                let _ = timeout(WRITER_GRACE, send_close(&mut sink, &closing)).await;
                return;
            }
        }
    }
}

/// `pusher:error` first (pysher acts on the event, not the close code), then the close frame.
async fn send_close(
    sink: &mut SplitSink<WebSocket, Message>,
    closing: &Closing,
) -> Result<(), axum::Error> {
    let error = protocol::error(closing.code, &closing.message, None);
    sink.send(Message::Text(error)).await?;
    // A close reason may hold at most 123 bytes.
    let mut end = closing.message.len().min(123);
    while !closing.message.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code: closing.code,
        reason: closing.message[..end].into(),
    };
    sink.send(Message::Close(Some(frame))).await
}

#[cfg(test)]
mod tests {
    use super::EventRoom;

    #[test]
    fn app_events_are_bounded_in_bytes_and_in_number() {
        let room = EventRoom::new(64 << 10, 192);
        // Small frames: the count bound.
        assert_eq!(room.cost(10), (64 << 10) / 192);
        let small: Vec<_> = std::iter::from_fn(|| room.take(room.cost(10))).collect();
        assert_eq!(small.len(), 192);
        drop(small);
        // Large frames: the byte bound.
        let large: Vec<_> = std::iter::from_fn(|| room.take(room.cost(8 << 10))).collect();
        assert_eq!(large.len(), 8);
        drop(large);
        // A frame over the whole budget still goes, alone.
        let huge = room
            .take(room.cost(1 << 20))
            .expect("an empty queue takes any frame");
        assert!(room.take(room.cost(10)).is_none());
        drop(huge);
        assert!(room.take(room.cost(10)).is_some());
    }
}
