//! kiln-engine owns running programs in sandboxes from async code: it creates sandboxes through
//! `kiln-jail` off the async threads, talks to each sandbox's warden over its control socket, streams
//! a process's stdin, stdout and stderr, enforces the wall, CPU and idle clocks and the output cap,
//! turns how a run ended into exactly one verdict with its accounting, and keeps a warm pool of ready
//! sandboxes that are each used once.

mod control;
pub mod engine;
pub mod files;
pub mod limits;
pub mod pool;
pub mod process;
pub mod program;
pub mod runner;
pub mod verdict;

pub use engine::{Engine, EngineConfig, EngineError, Sandbox};
pub use limits::{Limits, Network};
pub use process::Process;
pub use program::{run_program, Program, ProgramResult};
pub use runner::{OutputSink, Phase, RunSpec, StdinSource, Stream};
pub use verdict::{RunResult, Status};
