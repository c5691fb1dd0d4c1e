//! kiln-server owns Kiln's HTTP face: the code-runner job API (`/v1/*`) with bearer tokens, the job
//! queue and its capacity, the events of each job fanned out to the embedded Pusher-protocol
//! WebSocket endpoint and to SSE, and the job records persisted in SQLite.

pub mod api;
pub mod bus;
pub mod config;
pub mod forward;
pub mod job;
pub mod manager;
pub mod metrics;
pub mod openapi;
pub mod realtime;
pub mod server;
pub mod store;
pub mod validate;
pub mod wire;
