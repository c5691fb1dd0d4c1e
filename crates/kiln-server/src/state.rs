//! What every handler shares.

use std::sync::Arc;

use kiln_core::blobs::BlobService;
use kiln_core::functions::FunctionService;
use kiln_core::sandbox::SandboxService;
use kiln_core::JobService;
use kiln_pusher::Realtime;

use crate::auth::Tokens;
use crate::config::ServerConfig;
use crate::links::Links;

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
    /// Submissions through the compatible APIs.
    pub compat: Arc<CompatCounts>,
    /// Content-addressed blobs.
    pub blobs: Arc<BlobService>,
    /// Signs and checks the URLs that need no token.
    pub links: Links,
}

/// Jobs admitted through each compatible API (they are jobs like any other; these say which face
/// they came through).
#[derive(Debug, Default)]
pub struct CompatCounts {
    /// Through Judge0's routes, each run of `number_of_runs` counted.
    pub judge0: std::sync::atomic::AtomicU64,
    /// Through Piston's `execute` and `connect`.
    pub piston: std::sync::atomic::AtomicU64,
}

impl CompatCounts {
    /// Their lines of `/metrics`.
    pub fn render(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        format!(
            "# HELP kiln_compat_submissions_total Jobs admitted through a compatible API.\n\
             # TYPE kiln_compat_submissions_total counter\n\
             kiln_compat_submissions_total{{api=\"judge0\"}} {}\n\
             kiln_compat_submissions_total{{api=\"piston\"}} {}\n",
            self.judge0.load(Relaxed),
            self.piston.load(Relaxed),
        )
    }
}
