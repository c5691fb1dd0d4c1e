//! The server's settings, with their defaults. `kiln serve` fills them from a TOML file, then
//! `KILN_*` environment variables, then flags (later wins).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kiln_core::admission::AdmissionRules;
use kiln_core::blobs::BlobConfig;
use kiln_core::control::StdinCaps;
use kiln_core::functions::FunctionsConfig;
use kiln_core::sandbox::{SandboxConfig, SandboxLimits};
use kiln_core::{MaxLimits, ServiceConfig};
use serde::Deserialize;

/// Every setting of `kiln serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where `/metrics` is also served without a token (on the main address it needs one).
    pub metrics_listen: Option<SocketAddr>,
    /// Where the job database, the job logs (and a generated token) live.
    pub data_dir: PathBuf,
    /// Bearer tokens by name. Empty: one is generated and printed once.
    pub tokens: BTreeMap<String, String>,
    /// Runs at once.
    pub capacity: usize,
    /// Jobs that may wait (for their start or a run slot) beyond the `capacity` that can run at
    /// once; past it `POST /v1/execute` answers 429.
    pub queue_depth: usize,
    /// Jobs one token may have waiting (for their start or a run slot).
    pub token_queue_depth: usize,
    /// Jobs one token may have waiting for their start.
    pub token_awaiting_start: usize,
    /// Ready sandboxes kept warm.
    pub pool_size: usize,
    /// How long a job waits for `POST /start` before it expires.
    pub warmup_ms: u64,
    /// How long a finished job's record and events are kept.
    pub result_ttl_secs: u64,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most files per job.
    pub max_files: usize,
    /// Largest total of all files' decoded bytes (413 past it).
    pub max_files_bytes: usize,
    /// Longest file name (a relative path).
    pub max_file_name_len: usize,
    /// Most program arguments per job.
    pub max_args: usize,
    /// Largest total of a job's arguments, in bytes.
    pub max_args_bytes: usize,
    /// Stdin frames per job per second (429 past it).
    pub stdin_frames_per_sec: u32,
    /// Stdin bytes accepted but not yet handed to the program (429 past it; 413 for one frame
    /// larger than it).
    pub stdin_pending_bytes: usize,
    /// Bytes of job events held in memory, all jobs together; past it, programs' output waits
    /// for the disk.
    pub output_memory_bytes: u64,
    /// Bytes of its latest events each job keeps in memory for its readers.
    pub output_window_bytes: u64,
    /// Bytes of job events kept on disk, all tokens together (admission reserves against it).
    pub output_storage_bytes: u64,
    /// Bytes of job events one token may keep on disk.
    pub token_output_storage_bytes: u64,
    /// Connections open at once, all clients together.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send a request's head (the first, and each next one on a
    /// kept-alive connection).
    pub header_timeout_ms: u64,
    /// How long a connection may move no byte in either direction before it is closed.
    pub idle_timeout_ms: u64,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Upper bounds of the limits clients ask for.
    pub max_limits: MaxLimits,
    /// The embedded Pusher endpoint's app id, key and secret.
    pub pusher: PusherConfig,
    /// Long-lived sandboxes.
    pub sandboxes: SandboxSettings,
    /// Function calls and codelets.
    pub functions: FunctionSettings,
    /// The Judge0 face.
    pub judge0: Judge0Settings,
    /// Content-addressed blobs (`/v1/blobs`).
    pub blobs: BlobSettings,
    /// Span export.
    pub telemetry: TelemetrySettings,
    /// The address clients reach this server by (`https://kiln.example.com`), the base of the
    /// signed URLs it hands out (blob uploads, artifacts). Unset: the request's `Host` header,
    /// and for channel events, which have no request, the listen address.
    pub public_url: Option<String>,
    /// How long a graceful shutdown waits for admitted jobs.
    pub drain_secs: u64,
}

/// Span export over OTLP.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct TelemetrySettings {
    /// A collector's OTLP/HTTP address (`http://collector:4318`); spans go to its
    /// `/v1/traces`. Unset: no export.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` the spans carry.
    pub service_name: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "kiln".into(),
        }
    }
}

/// Content-addressed blobs: uploaded once, then given to jobs by `files[].ref`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct BlobSettings {
    /// How long a token's blob is kept unused (checks, uploads and jobs that use it restart
    /// the clock).
    pub ttl_secs: u64,
    /// The largest blob.
    pub max_blob_bytes: u64,
    /// Bytes of blobs stored, all tokens together.
    pub storage_bytes: u64,
    /// Bytes of blobs one token may hold.
    pub token_storage_bytes: u64,
    /// How long an upload URL works.
    pub upload_url_ttl_secs: u64,
}

impl Default for BlobSettings {
    fn default() -> Self {
        let d = BlobConfig::default();
        Self {
            ttl_secs: d.ttl.as_secs(),
            max_blob_bytes: d.max_blob_bytes,
            storage_bytes: d.storage_bytes,
            token_storage_bytes: d.owner_storage_bytes,
            upload_url_ttl_secs: 900,
        }
    }
}

impl BlobSettings {
    /// The blob store's configuration.
    pub fn service(&self) -> BlobConfig {
        BlobConfig {
            ttl: Duration::from_secs(self.ttl_secs),
            max_blob_bytes: self.max_blob_bytes,
            storage_bytes: self.storage_bytes,
            owner_storage_bytes: self.token_storage_bytes,
        }
    }
}

/// The Judge0 face (`/judge0`, and optionally the root of a listener of its own).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Judge0Settings {
    /// Also serve the Judge0 routes at the root of this address, for clients that cannot take a
    /// path prefix (Judge0's own port is 2358).
    pub listen: Option<SocketAddr>,
    /// Take `wait=true` (Judge0's `ENABLE_WAIT_RESULT`); when off, `{"error":"wait not allowed"}`.
    pub allow_wait: bool,
    /// Take `compiler_options` (Judge0's `ENABLE_COMPILER_OPTIONS`), for the languages whose
    /// compile command has `{options}`. The options run the compiler, which has the compile
    /// stage's larger limits, with what a client chose.
    pub compiler_options: bool,
    /// Take `callback_url` (Judge0's `ENABLE_CALLBACKS`): the server PUTs the finished submission
    /// there, so a client can make it send requests to any `http://` address it reaches.
    pub callbacks: bool,
    /// Tries of a callback before it is given up (Judge0's `CALLBACKS_MAX_TRIES`).
    pub callback_tries: u32,
    /// How long one try may take, ms (Judge0's `CALLBACKS_TIMEOUT`).
    pub callback_timeout_ms: u64,
    /// Take `additional_files` (Judge0's `ENABLE_ADDITIONAL_FILES`).
    pub additional_files: bool,
    /// The most bytes `additional_files` may extract to (Judge0's `MAX_EXTRACT_SIZE`, KB).
    pub max_extract_kb: u64,
}

impl Default for Judge0Settings {
    fn default() -> Self {
        Self {
            listen: None,
            allow_wait: true,
            compiler_options: true,
            callbacks: true,
            callback_tries: 3,
            callback_timeout_ms: 5000,
            additional_files: true,
            max_extract_kb: 10240,
        }
    }
}

/// Function calls and codelets (`/v1/functions/call`, `/v1/codelets/run`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct FunctionSettings {
    /// Calls and codelets running at once; more wait their turn.
    pub capacity: usize,
    /// A call's timeout unless it asks for another, ms.
    pub timeout_ms: u64,
    /// The longest timeout a call may ask for, ms.
    pub max_timeout_ms: u64,
    /// A call's memory unless it asks for more, MiB.
    pub memory_mb: u64,
    /// The most memory a call may ask for, MiB.
    pub max_memory_mb: u64,
    /// The most bytes of stdout and of stderr a call's result keeps (each).
    pub output_kept_bytes: usize,
    /// The most bytes a call may print in all before it is stopped.
    pub output_limit_bytes: u64,
    /// The largest value a call may return, bytes.
    pub max_result_bytes: usize,
    /// The most virtual files per call.
    pub max_files: usize,
    /// The largest total of a call's virtual files, bytes.
    pub max_files_bytes: usize,
    /// Host directories under which HTTP calls may mount directories (none: no mounts).
    pub mount_roots: Vec<std::path::PathBuf>,
    /// The largest file a mount loads, bytes.
    pub mount_max_file_bytes: u64,
    /// The most bytes a mount loads in all.
    pub mount_max_total_bytes: u64,
    /// The most files a mount loads.
    pub mount_max_files: usize,
}

impl Default for FunctionSettings {
    fn default() -> Self {
        let d = FunctionsConfig::default();
        Self {
            capacity: d.capacity,
            timeout_ms: d.default_timeout_ms,
            max_timeout_ms: d.max_timeout_ms,
            memory_mb: d.default_memory_mb,
            max_memory_mb: d.max_memory_mb,
            output_kept_bytes: d.output_kept_bytes,
            output_limit_bytes: d.output_limit_bytes,
            max_result_bytes: d.max_result_bytes,
            max_files: d.max_files,
            max_files_bytes: d.max_files_bytes,
            mount_roots: d.mount_roots,
            mount_max_file_bytes: d.mount_limits.max_file_size,
            mount_max_total_bytes: d.mount_limits.max_total_size,
            mount_max_files: d.mount_limits.max_files,
        }
    }
}

impl FunctionSettings {
    /// The function service's configuration.
    pub fn service(&self) -> FunctionsConfig {
        FunctionsConfig {
            capacity: self.capacity,
            default_timeout_ms: self.timeout_ms,
            max_timeout_ms: self.max_timeout_ms,
            default_memory_mb: self.memory_mb,
            max_memory_mb: self.max_memory_mb,
            output_kept_bytes: self.output_kept_bytes,
            output_limit_bytes: self.output_limit_bytes,
            max_result_bytes: self.max_result_bytes,
            max_files: self.max_files,
            max_files_bytes: self.max_files_bytes,
            mount_roots: self.mount_roots.clone(),
            mount_limits: kiln_workload::mount::MountLimits {
                max_file_size: self.mount_max_file_bytes,
                max_total_size: self.mount_max_total_bytes,
                max_files: self.mount_max_files,
            },
            shape: Default::default(),
        }
    }
}

/// Long-lived sandboxes (`/v1/sandboxes`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct SandboxSettings {
    /// Sandboxes alive at once, all tokens together.
    pub max_sandboxes: usize,
    /// Sandboxes one token may have alive at once.
    pub max_per_token: usize,
    /// Ready sandboxes of the default shape kept once the first sandbox is made (0: none), so a
    /// creation takes one instead of building it.
    pub pool_size: usize,
    /// Memory of a sandbox that asks for none, MiB (its files count too).
    pub memory_mb: u64,
    /// Processes and threads of a sandbox that asks for none.
    pub pids: u64,
    /// Size of `/workspace` of a sandbox that asks for none, MiB.
    pub disk_mb: u64,
    /// The most memory a sandbox may ask for, MiB.
    pub max_memory_mb: u64,
    /// The most processes a sandbox may ask for.
    pub max_pids: u64,
    /// The largest `/workspace` a sandbox may ask for, MiB.
    pub max_disk_mb: u64,
    /// The most CPUs a sandbox may ask for.
    pub max_cpus: f64,
    /// Lifetime of a sandbox that asks for none, seconds.
    pub timeout_secs: u64,
    /// The longest lifetime, from creation, however it is extended.
    pub max_timeout_secs: u64,
    /// How long a sandbox may go without a call, unless it asks otherwise.
    pub idle_timeout_secs: u64,
    /// How long a command may run unless it asks otherwise, ms.
    pub exec_timeout_ms: u64,
    /// The longest a command may ask for, ms.
    pub max_exec_timeout_ms: u64,
    /// stdout plus stderr a command's result keeps, bytes.
    pub exec_output_bytes: u64,
    /// Background processes a sandbox keeps, running and ended.
    pub max_processes: usize,
    /// Bytes of output each background process keeps (the newest).
    pub process_log_bytes: usize,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        let d = SandboxConfig::default();
        Self {
            max_sandboxes: d.max_sandboxes,
            max_per_token: d.max_per_owner,
            pool_size: 2,
            memory_mb: d.default_limits.memory_mb,
            pids: d.default_limits.pids,
            disk_mb: d.default_limits.disk_mb,
            max_memory_mb: d.max_limits.memory_mb,
            max_pids: d.max_limits.pids,
            max_disk_mb: d.max_limits.disk_mb,
            max_cpus: d.max_limits.cpus.unwrap_or(64.0),
            timeout_secs: d.default_lifetime.as_secs(),
            max_timeout_secs: d.max_lifetime.as_secs(),
            idle_timeout_secs: d.default_idle.as_secs(),
            exec_timeout_ms: d.default_exec_timeout.as_millis() as u64,
            max_exec_timeout_ms: d.max_exec_timeout.as_millis() as u64,
            exec_output_bytes: d.exec_output_bytes,
            max_processes: d.max_processes,
            process_log_bytes: d.process_log_bytes,
        }
    }
}

impl SandboxSettings {
    /// The sandbox service's configuration.
    pub fn service(&self) -> SandboxConfig {
        SandboxConfig {
            max_sandboxes: self.max_sandboxes,
            max_per_owner: self.max_per_token,
            default_limits: SandboxLimits {
                memory_mb: self.memory_mb,
                pids: self.pids,
                disk_mb: self.disk_mb,
                cpus: None,
            },
            max_limits: SandboxLimits {
                memory_mb: self.max_memory_mb,
                pids: self.max_pids,
                disk_mb: self.max_disk_mb,
                cpus: Some(self.max_cpus),
            },
            default_lifetime: Duration::from_secs(self.timeout_secs),
            max_lifetime: Duration::from_secs(self.max_timeout_secs),
            default_idle: Duration::from_secs(self.idle_timeout_secs),
            default_exec_timeout: Duration::from_millis(self.exec_timeout_ms),
            max_exec_timeout: Duration::from_millis(self.max_exec_timeout_ms),
            exec_output_bytes: self.exec_output_bytes,
            max_processes: self.max_processes.max(1),
            process_log_bytes: self.process_log_bytes.max(1),
            ..SandboxConfig::default()
        }
    }
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
    /// Bytes of job events that may wait for one WebSocket whose client reads slower than the
    /// job writes. The rest waits in the job's log; a socket that takes nothing for the pong
    /// timeout (30 s) is closed with 4100.
    pub socket_queue_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            metrics_listen: None,
            data_dir: PathBuf::from("kiln-data"),
            tokens: BTreeMap::new(),
            capacity: 8,
            queue_depth: 256,
            token_queue_depth: 64,
            token_awaiting_start: 32,
            pool_size: 4,
            warmup_ms: 30_000,
            result_ttl_secs: 3600,
            max_body_bytes: 10 << 20,
            max_files: 64,
            max_files_bytes: 8 << 20,
            max_file_name_len: 255,
            max_args: 1024,
            max_args_bytes: 64 << 10,
            stdin_frames_per_sec: 30,
            stdin_pending_bytes: 64 << 10,
            output_memory_bytes: 64 << 20,
            output_window_bytes: 256 << 10,
            output_storage_bytes: 4 << 30,
            token_output_storage_bytes: 1 << 30,
            max_connections: 2048,
            max_connections_per_ip: 512,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            max_header_bytes: 16 << 10,
            max_limits: MaxLimits::default(),
            pusher: PusherConfig::default(),
            sandboxes: SandboxSettings::default(),
            functions: FunctionSettings::default(),
            judge0: Judge0Settings::default(),
            blobs: BlobSettings::default(),
            telemetry: TelemetrySettings::default(),
            public_url: None,
            drain_secs: 30,
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
            socket_queue_bytes: 256 << 10,
        }
    }
}

/// A configuration file that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl ServerConfig {
    /// Parses a TOML configuration file's text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// How long results are kept.
    pub fn result_ttl(&self) -> Duration {
        Duration::from_secs(self.result_ttl_secs)
    }

    /// The job service's settings.
    pub fn service(&self) -> ServiceConfig {
        ServiceConfig {
            capacity: self.capacity.max(1),
            queue_depth: self.capacity.max(1) + self.queue_depth,
            owner_queue_depth: self.token_queue_depth,
            owner_awaiting_start: self.token_awaiting_start,
            warmup: Duration::from_millis(self.warmup_ms),
            result_ttl: self.result_ttl(),
            keep_in_memory: Duration::from_secs(60),
            stdin: StdinCaps {
                frames_per_sec: self.stdin_frames_per_sec,
                pending_bytes: self.stdin_pending_bytes,
            },
            storage_bytes: self.output_storage_bytes,
            owner_storage_bytes: self.token_output_storage_bytes,
            admission: AdmissionRules {
                max_files: self.max_files,
                max_files_bytes: self.max_files_bytes,
                max_file_name_len: self.max_file_name_len,
                max_args: self.max_args,
                max_args_bytes: self.max_args_bytes,
                max_limits: self.max_limits,
            },
            drain: Duration::from_secs(self.drain_secs),
        }
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
