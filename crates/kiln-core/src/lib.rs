//! kiln-core is the service core: the domain every API face shares. It owns jobs (their states,
//! admission with its quotas, their lifecycle, their outcomes as domain types) and their events,
//! behind traits for what a cluster must swap: the run queue ([`queue::JobQueue`]), the event log
//! with its replay ([`log::EventLog`]), the record store ([`store::JobStore`]) and job control
//! ([`control::JobControl`]), each with an implementation for one machine (a fair in-process
//! queue, files with a memory window, SQLite, an in-process registry). It knows no wire shape:
//! the code-runner contract, and later faces, project its types in `kiln-server`. It also owns
//! long-lived sandboxes ([`sandbox::SandboxService`]: their caps, lifetimes, commands and
//! reclaim), made by a [`sandbox::SandboxHost`]. Content-addressed blobs ([`blobs::BlobService`])
//! and jobs' artifacts live in an [`objects::ObjectStore`]; a job's W3C trace context
//! ([`trace::TraceContext`]) rides with it to its span.

pub mod admission;
pub mod artifacts;
pub mod blobs;
pub mod control;
pub mod event;
pub mod executor;
pub mod functions;
pub mod job;
pub mod log;
pub mod metrics;
pub mod objects;
pub mod queue;
pub mod sandbox;
pub mod service;
pub mod sink;
pub mod store;
pub mod trace;

pub use admission::{AdmissionError, FieldError, FileInput, JobRequest, LimitRequest, MaxLimits};
pub use event::{EventRecord, JobEvent, OutputStream, Stage};
pub use job::{JobId, JobOutcome, JobRecord, JobSpec, JobState, OutputEncoding, Verdict};
pub use service::{ControlError, EventStream, JobService, ServiceConfig};
