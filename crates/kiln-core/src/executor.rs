//! What runs a job's program: the engine's sandboxes ([`kiln_engine::Engine`]), or for tests of
//! the layers above that never start a job, nothing at all ([`NoSandboxes`]).

use async_trait::async_trait;
use kiln_engine::{Engine, EngineError, OutputSink};
use kiln_workload::program::ProgramError;
use kiln_workload::{run_program, Program, ProgramResult};

/// Runs programs.
#[async_trait]
pub trait Executor: Send + Sync + std::fmt::Debug {
    /// Runs `program` to its result, its output into `sink`; `kill` ends it as `killed`.
    async fn run(
        &self,
        program: Program,
        sink: &mut (dyn OutputSink + '_),
        kill: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> Result<ProgramResult, ProgramError>;

    /// Warm sandboxes ready now.
    fn pool_ready(&self) -> usize;
}

#[async_trait]
impl Executor for Engine {
    async fn run(
        &self,
        program: Program,
        sink: &mut (dyn OutputSink + '_),
        kill: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> Result<ProgramResult, ProgramError> {
        run_program(self, program, sink, kill).await
    }

    fn pool_ready(&self) -> usize {
        Engine::pool_ready(self)
    }
}

/// An executor without sandboxes: every run fails as Kiln's own error. For tests of the HTTP
/// and domain layers that run as an unprivileged user and never start a job.
#[derive(Debug, Default)]
pub struct NoSandboxes;

#[async_trait]
impl Executor for NoSandboxes {
    async fn run(
        &self,
        _program: Program,
        _sink: &mut (dyn OutputSink + '_),
        _kill: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> Result<ProgramResult, ProgramError> {
        Err(ProgramError::Engine(EngineError::Warden(
            "this service has no sandboxes".into(),
        )))
    }

    fn pool_ready(&self) -> usize {
        0
    }
}
