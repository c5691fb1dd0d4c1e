//! What every handler shares.

use std::sync::Arc;

use kiln_core::functions::FunctionService;
use kiln_core::sandbox::SandboxService;
use kiln_core::JobService;
use kiln_pusher::Realtime;

use crate::auth::Tokens;
use crate::config::ServerConfig;

/// Everything a handler needs.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Settings.
    pub cfg: Arc<ServerConfig>,
    /// Jobs.
    pub service: Arc<JobService>,
    /// Sandboxes.
    pub sandboxes: Arc<SandboxService>,
    /// Function calls and codelets.
    pub functions: Arc<FunctionService>,
    /// The Pusher endpoint (signs channel auth).
    pub realtime: Realtime,
    /// The bearer tokens.
    pub tokens: Arc<Tokens>,
}
