//! What makes sandboxes for the sandbox service: the engine, or for tests of the layers above
//! that never create one, nothing ([`crate::executor::NoSandboxes`]).

use std::path::PathBuf;

use async_trait::async_trait;
use kiln_engine::{Engine, EngineError, Limits, Sandbox, SandboxShape};

use crate::executor::NoSandboxes;

/// Makes long-lived sandboxes.
#[async_trait]
pub trait SandboxHost: Send + Sync + std::fmt::Debug {
    /// A new sandbox of `shape` whose processes together may use `total`, with `ro_binds`
    /// (host path, path inside) mounted read-only.
    async fn create(
        &self,
        shape: &SandboxShape,
        total: &Limits,
        ro_binds: &[(PathBuf, PathBuf)],
    ) -> Result<Sandbox, EngineError>;

    /// Ready sandboxes it keeps for creations (none unless it pools them).
    fn pooled(&self) -> usize {
        0
    }
}

#[async_trait]
impl SandboxHost for Engine {
    async fn create(
        &self,
        shape: &SandboxShape,
        total: &Limits,
        ro_binds: &[(PathBuf, PathBuf)],
    ) -> Result<Sandbox, EngineError> {
        Engine::create(self, shape, total, ro_binds).await
    }

    fn pooled(&self) -> usize {
        self.environments_ready()
    }
}

#[async_trait]
impl SandboxHost for NoSandboxes {
    async fn create(
        &self,
        _shape: &SandboxShape,
        _total: &Limits,
        _ro_binds: &[(PathBuf, PathBuf)],
    ) -> Result<Sandbox, EngineError> {
        Err(EngineError::Warden("this service has no sandboxes".into()))
    }
}
