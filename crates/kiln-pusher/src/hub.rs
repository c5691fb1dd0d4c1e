//! State shared by every socket of the endpoint: who is subscribed to which channel (so client
//! events and presence notices reach the other sockets), presence member lists, and the handle
//! through which one socket's task queues frames for another.
//!
//! The application's events do not pass through here: each socket follows the feeds of its own
//! channels. Events published on the endpoint (the HTTP API's triggers) go out on a broadcast that
//! each socket filters by its channels. The lock is a plain mutex because nothing done under it
//! waits: frames are queued with `try_send`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit};

use super::protocol::{self, code, MemberData};
use super::{AppEvent, EventSource, RealtimeConfig, RealtimeOptions};

/// Published events a socket may fall behind by before it is dropped as too slow.
const TRIGGER_BACKLOG: usize = 1024;

/// Members a presence channel may hold (soketi's default; Pusher's is also 100).
pub(crate) const MAX_PRESENCE_MEMBERS: usize = 100;

/// Why and how a socket is being closed: a `pusher:error` with this code, then a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Closing {
    /// The Pusher code, used for both the error event and the close frame.
    pub(crate) code: u16,
    /// Human-readable reason.
    pub(crate) message: String,
}

impl Closing {
    /// A closing with `code` and `message`.
    pub(crate) fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What a socket's writer task is asked to do.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Send a text frame. An app event carries the permit of its queue slot, freed once written.
    Frame(Utf8Bytes, Option<OwnedSemaphorePermit>),
    /// Send `pusher:error` and close the socket.
    Close(Closing),
}

/// The handle to one socket's outgoing queue.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    tx: mpsc::Sender<Outbound>,
    kill: Arc<watch::Sender<Option<Closing>>>,
}

impl Peer {
    /// A handle over the socket's queue and its kill switch (watched by the writer, which then
    /// skips whatever is still queued).
    pub(crate) fn new(tx: mpsc::Sender<Outbound>, kill: watch::Sender<Option<Closing>>) -> Self {
        Self {
            tx,
            kill: Arc::new(kill),
        }
    }

    /// Queues a frame. A full queue means the client stopped reading, so the socket is dropped
    /// instead of letting it hold memory; returns whether the frame was queued.
    pub(crate) fn send(&self, frame: Utf8Bytes) -> bool {
        self.push(Outbound::Frame(frame, None))
    }

    /// Queues an app event holding one of the socket's app-event slots.
    pub(crate) fn send_event(&self, frame: Utf8Bytes, slot: Option<OwnedSemaphorePermit>) -> bool {
        self.push(Outbound::Frame(frame, slot))
    }

    fn push(&self, item: Outbound) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.kill(Closing::new(
                    code::OVER_CAPACITY,
                    "Send queue full: the client is not reading fast enough",
                ));
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Closes the socket after what is already queued; if the queue is full, at once.
    pub(crate) fn close(&self, closing: Closing) {
        if let Err(TrySendError::Full(Outbound::Close(closing))) =
            self.tx.try_send(Outbound::Close(closing))
        {
            self.kill(closing);
        }
    }

    /// Closes the socket at once, skipping queued frames. The first reason given wins.
    pub(crate) fn kill(&self, closing: Closing) {
        self.kill.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(closing);
            true
        });
    }

    /// Resolves once the writer has gone (the client is gone or the socket was closed).
    pub(crate) async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// A presence member: what it declared and how many of its sockets are in the channel.
#[derive(Debug)]
struct Member {
    info: Value,
    sockets: usize,
}

/// One occupied channel.
#[derive(Debug, Default)]
struct Room {
    /// Socket number → its handle and, on presence channels, its user id.
    peers: HashMap<u64, (Peer, Option<String>)>,
    /// Presence only; ordered so snapshots are stable.
    members: BTreeMap<String, Member>,
}

impl Room {
    fn others(&self, me: u64) -> impl Iterator<Item = &Peer> {
        self.peers
            .iter()
            .filter(move |(conn, _)| **conn != me)
            .map(|(_, (peer, _))| peer)
    }

    /// `{"presence":{"ids","hash","count"}}` as a JSON string.
    fn presence_snapshot(&self) -> String {
        let ids: Vec<&String> = self.members.keys().collect();
        let hash: serde_json::Map<String, Value> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.info.clone()))
            .collect();
        json!({"presence": {"ids": ids, "hash": hash, "count": ids.len()}}).to_string()
    }
}

/// A presence channel is full.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("presence channel {channel} already has {MAX_PRESENCE_MEMBERS} members")]
pub(crate) struct MemberLimit {
    /// The channel.
    pub(crate) channel: String,
}

/// The shared state.
#[derive(Debug)]
pub(crate) struct Hub {
    /// The endpoint's settings.
    pub(crate) config: RealtimeConfig,
    /// The less common settings.
    pub(crate) options: RealtimeOptions,
    /// Where the application's events come from.
    pub(crate) source: Arc<dyn EventSource>,
    /// Events published on the endpoint itself.
    pub(crate) triggers: broadcast::Sender<Arc<AppEvent>>,
    open: AtomicUsize,
    next_conn: AtomicU64,
    rooms: Mutex<HashMap<String, Room>>,
}

impl Hub {
    /// Empty state over `source`.
    pub(crate) fn new(
        config: RealtimeConfig,
        options: RealtimeOptions,
        source: Arc<dyn EventSource>,
    ) -> Self {
        Self {
            config,
            options,
            source,
            triggers: broadcast::channel(TRIGGER_BACKLOG).0,
            open: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            rooms: Mutex::new(HashMap::new()),
        }
    }

    /// Sends a published event to the sockets subscribed to its channel.
    pub(crate) fn publish(&self, event: AppEvent) {
        let _ = self.triggers.send(Arc::new(event));
    }

    /// Open sockets.
    pub(crate) fn open_sockets(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a socket as open until the guard drops; also numbers it.
    pub(crate) fn open_socket(self: &Arc<Self>) -> OpenSocket {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenSocket {
            hub: Arc::clone(self),
            conn: self.next_conn.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        // A panic elsewhere cannot leave a room half-updated in a way later calls would trip on.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds socket `conn` to `channel`. For presence (`member` set) it announces a new user to the
    /// others and returns the snapshot for the joiner. Joining twice changes nothing.
    pub(crate) fn join(
        &self,
        channel: &str,
        conn: u64,
        peer: &Peer,
        member: Option<&MemberData>,
    ) -> Result<Option<String>, MemberLimit> {
        let mut rooms = self.rooms();
        let room = rooms.entry(channel.to_owned()).or_default();
        if !room.peers.contains_key(&conn) {
            if let Some(m) = member {
                let is_new = !room.members.contains_key(&m.user_id);
                if is_new && room.members.len() >= MAX_PRESENCE_MEMBERS {
                    if room.peers.is_empty() {
                        rooms.remove(channel);
                    }
                    return Err(MemberLimit {
                        channel: channel.to_owned(),
                    });
                }
                room.members
                    .entry(m.user_id.clone())
                    .or_insert_with(|| Member {
                        info: m.user_info.clone(),
                        sockets: 0,
                    })
                    .sockets += 1;
                if is_new {
                    let frame = protocol::member_added(channel, &m.user_id, &m.user_info);
                    for other in room.others(conn) {
                        other.send(frame.clone());
                    }
                }
            }
            let user = member.map(|m| m.user_id.clone());
            room.peers.insert(conn, (peer.clone(), user));
        }
        Ok(member.map(|_| room.presence_snapshot()))
    }

    /// Removes socket `conn` from `channel`, announcing a presence user's departure once its last
    /// socket has left.
    pub(crate) fn leave(&self, channel: &str, conn: u64) {
        let mut rooms = self.rooms();
        let Some(room) = rooms.get_mut(channel) else {
            return;
        };
        if let Some((_, Some(user))) = room.peers.remove(&conn) {
            if let Some(member) = room.members.get_mut(&user) {
                member.sockets -= 1;
                if member.sockets == 0 {
                    room.members.remove(&user);
                    let frame = protocol::member_removed(channel, &user);
                    for other in room.others(conn) {
                        other.send(frame.clone());
                    }
                }
            }
        }
        if room.peers.is_empty() {
            rooms.remove(channel);
        }
    }

    /// The presence user id socket `conn` joined `channel` as.
    pub(crate) fn user_of(&self, channel: &str, conn: u64) -> Option<String> {
        self.rooms().get(channel)?.peers.get(&conn)?.1.clone()
    }

    /// Sends `frame` to every socket in `channel` but `from`.
    pub(crate) fn relay(&self, channel: &str, from: u64, frame: &Utf8Bytes) {
        if let Some(room) = self.rooms().get(channel) {
            for other in room.others(from) {
                other.send(frame.clone());
            }
        }
    }
}

/// An open socket's place in the count.
#[derive(Debug)]
pub(crate) struct OpenSocket {
    hub: Arc<Hub>,
    /// The socket's number, unique for the hub's lifetime (never shown to clients).
    pub(crate) conn: u64,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::Relaxed);
    }
}
