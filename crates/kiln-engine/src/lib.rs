//! kiln-engine owns sandboxes and their processes from async code: it creates sandboxes through
//! `kiln-jail` off the async threads, talks to each sandbox's warden over its control socket,
//! streams a process's stdin, stdout and stderr, enforces the wall, CPU and idle clocks and the
//! output cap, accounts each run (by the sandbox's group, or by a group of the process's own when
//! several run at once), turns how a run ended into exactly one verdict, and keeps a warm pool of
//! ready sandboxes that are each used once. It knows nothing of languages: what runs is
//! `kiln-workload`'s.

mod control;
pub mod engine;
pub mod files;
pub mod limits;
pub mod net;
pub mod pool;
pub mod process;
pub mod pty;
pub mod runner;
pub mod tree;
pub mod verdict;

pub use engine::{Engine, EngineConfig, EngineError, Sandbox};
pub use limits::{Accounting, LimitOverrides, Limits, Network, SandboxShape};
pub use process::Process;
pub use pty::TtySize;
pub use runner::{OutputSink, Phase, RunCommand, RunSpec, SinkWait, StdinSource, Stream};
pub use verdict::{RunResult, Status};
