//! The in-process event bus: every event of every job, published once and fanned out to whoever
//! listens (the Pusher endpoint, SSE streams). Slow listeners lag and are told so; publishers never
//! wait.

use std::sync::Arc;

use tokio::sync::broadcast;

/// How many events a listener may fall behind before it loses some.
const CAPACITY: usize = 4096;

/// One event on one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The channel, e.g. `private-run-<jobId>`.
    pub channel: String,
    /// The event name, e.g. `stdout`.
    pub name: String,
    /// The payload (sent to Pusher clients as a JSON-encoded string).
    pub data: serde_json::Value,
}

/// The bus.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    /// A new bus.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self { tx }
    }

    /// Publishes an event to every current listener.
    pub fn publish(&self, event: Event) {
        let _ = self.tx.send(Arc::new(event));
    }

    /// Listens to every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
