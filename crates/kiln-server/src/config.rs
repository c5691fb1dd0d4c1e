//! The server's settings, with their defaults. `kiln serve` fills them from a TOML file, then
//! `KILN_*` environment variables, then flags (later wins).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Every setting of `kiln serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the job database (and a generated token) live.
    pub data_dir: PathBuf,
    /// Bearer tokens by name. Empty: one is generated and printed once.
    pub tokens: BTreeMap<String, String>,
    /// Runs at once (sandboxes in use, including jobs waiting for their start).
    pub capacity: usize,
    /// Jobs waiting for a free slot; past it `POST /v1/execute` answers 429.
    pub queue_depth: usize,
    /// Ready sandboxes kept warm.
    pub pool_size: usize,
    /// How long a claimed job waits for `POST /start` before its slot is reclaimed.
    pub warmup_ms: u64,
    /// How long a finished job's record and output are kept.
    pub result_ttl_secs: u64,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most files per job.
    pub max_files: usize,
    /// Largest total of all files' decoded bytes (413 past it).
    pub max_files_bytes: usize,
    /// Longest file name (a relative path).
    pub max_file_name_len: usize,
    /// Stdin frames per job per second (429 past it).
    pub stdin_frames_per_sec: u32,
    /// Stdin bytes accepted but not yet handed to the program (429 past it).
    pub stdin_pending_bytes: usize,
    /// Upper bounds that clients' limits are clamped to.
    pub max_limits: MaxLimits,
    /// The embedded Pusher endpoint's app id, key and secret.
    pub pusher: PusherConfig,
    /// How long a graceful shutdown waits for running jobs.
    pub drain_secs: u64,
}

/// Upper bounds for clients' limits.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct MaxLimits {
    /// Wall time, ms.
    pub wall_time_ms: u64,
    /// CPU time, ms.
    pub cpu_ms: u64,
    /// Idle time, ms.
    pub idle_ms: u64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Processes.
    pub pids: u64,
    /// Output, KiB.
    pub output_kb: u64,
}

/// The embedded Pusher endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct PusherConfig {
    /// App id.
    pub app_id: String,
    /// App key (public: clients connect to `/app/<key>`).
    pub app_key: String,
    /// App secret (signs channel auth). Empty: generated at start.
    pub app_secret: String,
    /// Also publish every event to this external Pusher-compatible server (`http://host:port`),
    /// through its signed HTTP events API with the same app id, key and secret.
    pub external_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            data_dir: PathBuf::from("kiln-data"),
            tokens: BTreeMap::new(),
            capacity: 8,
            queue_depth: 256,
            pool_size: 4,
            warmup_ms: 30_000,
            result_ttl_secs: 3600,
            max_body_bytes: 10 << 20,
            max_files: 64,
            max_files_bytes: 8 << 20,
            max_file_name_len: 255,
            stdin_frames_per_sec: 30,
            stdin_pending_bytes: 64 << 10,
            max_limits: MaxLimits::default(),
            pusher: PusherConfig::default(),
            drain_secs: 30,
        }
    }
}

impl Default for MaxLimits {
    fn default() -> Self {
        Self {
            wall_time_ms: 120_000,
            cpu_ms: 60_000,
            idle_ms: 120_000,
            memory_mb: 2048,
            pids: 256,
            output_kb: 16 << 10,
        }
    }
}

impl Default for PusherConfig {
    fn default() -> Self {
        Self {
            // Numeric, as Pusher's server SDKs insist.
            app_id: "1".into(),
            app_key: "kiln-key".into(),
            app_secret: String::new(),
            external_url: None,
        }
    }
}

impl ServerConfig {
    /// Parses a TOML configuration file's text.
    pub fn from_toml(text: &str) -> Result<Self, toml_error::Error> {
        toml_error::parse(text)
    }

    /// The warm-up window.
    pub fn warmup(&self) -> Duration {
        Duration::from_millis(self.warmup_ms)
    }

    /// How long results are kept.
    pub fn result_ttl(&self) -> Duration {
        Duration::from_secs(self.result_ttl_secs)
    }
}

/// Parsing errors of the configuration file.
pub mod toml_error {
    /// A configuration file that does not parse.
    #[derive(Debug, thiserror::Error)]
    #[error("configuration: {0}")]
    pub struct Error(String);

    pub(super) fn parse(text: &str) -> Result<super::ServerConfig, Error> {
        toml::from_str(text).map_err(|e| Error(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_settings_override_defaults_and_unknown_keys_are_refused() {
        let cfg = ServerConfig::from_toml(
            "listen = \"0.0.0.0:9000\"\ncapacity = 2\n[tokens]\nci = \"s3cret\"\n[max_limits]\nmemory_mb = 512\n",
        )
        .unwrap();
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.capacity, 2);
        assert_eq!(cfg.tokens["ci"], "s3cret");
        assert_eq!(cfg.max_limits.memory_mb, 512);
        assert_eq!(cfg.max_limits.pids, 256);
        let err = ServerConfig::from_toml("capacityy = 2")
            .unwrap_err()
            .to_string();
        assert!(err.contains("capacityy"), "{err}");
    }
}
