//! `kiln serve`: the HTTP service. Settings come from a TOML file (`--config`), then `KILN_*`
//! environment variables, then flags; each later source wins.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use kiln_engine::EngineConfig;
use kiln_server::config::ServerConfig;

/// Flags of `kiln serve` (each also read from the environment variable shown).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML configuration file (see README).
    #[arg(long, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "KILN_LISTEN")]
    listen: Option<SocketAddr>,
    /// Also serve /metrics here, without a token (on the main address it needs one)
    #[arg(long, env = "KILN_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Also serve the Judge0 API at the root of this address (`[judge0] listen`), for clients
    /// that cannot take the `/judge0` prefix
    #[arg(long, env = "KILN_JUDGE0_LISTEN")]
    judge0_listen: Option<SocketAddr>,
    /// Directory of the job database and generated secrets [default: kiln-data]
    #[arg(long, env = "KILN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A bearer token, NAME=TOKEN (repeat, or comma-separate in KILN_TOKENS).
    #[arg(long = "token", env = "KILN_TOKENS", value_delimiter = ',')]
    tokens: Vec<String>,
    /// Runs at once [default: 8]
    #[arg(long, env = "KILN_CAPACITY")]
    capacity: Option<usize>,
    /// Jobs that may wait beyond those running before 429 [default: 256]
    #[arg(long, env = "KILN_QUEUE_DEPTH")]
    queue_depth: Option<usize>,
    /// Jobs one token may have waiting, for their start or a slot [default: 64]
    #[arg(long, env = "KILN_TOKEN_QUEUE_DEPTH")]
    token_queue_depth: Option<usize>,
    /// Jobs one token may have waiting for their start [default: 32]
    #[arg(long, env = "KILN_TOKEN_AWAITING_START")]
    token_awaiting_start: Option<usize>,
    /// Connections open at once [default: 2048]
    #[arg(long, env = "KILN_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connections open at once from one client address [default: 512]
    #[arg(long, env = "KILN_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Time to send a request head, in ms [default: 10000]
    #[arg(long, env = "KILN_HEADER_TIMEOUT_MS")]
    header_timeout_ms: Option<u64>,
    /// Time a connection may move no byte, in ms [default: 300000]
    #[arg(long, env = "KILN_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
    /// Bytes of job events held in memory, all jobs together [default: 67108864]
    #[arg(long, env = "KILN_OUTPUT_MEMORY_BYTES")]
    output_memory_bytes: Option<u64>,
    /// Warm sandboxes kept ready [default: 4]
    #[arg(long, env = "KILN_POOL_SIZE")]
    pool_size: Option<usize>,
    /// Ready long-lived sandboxes kept once the first is made (`[sandboxes] pool_size`) [default: 2]
    #[arg(long, env = "KILN_SANDBOX_POOL_SIZE")]
    sandbox_pool_size: Option<usize>,
    /// A host directory under which function calls may mount directories (`[functions]
    /// mount_roots`; repeat, or comma-separate in KILN_FUNCTION_MOUNT_ROOTS) [default: none]
    #[arg(
        long = "function-mount-root",
        env = "KILN_FUNCTION_MOUNT_ROOTS",
        value_delimiter = ','
    )]
    function_mount_roots: Vec<PathBuf>,
    /// How long a job waits for its start, in ms [default: 30000]
    #[arg(long, env = "KILN_WARMUP_MS")]
    warmup_ms: Option<u64>,
    /// How long finished jobs are kept, in seconds [default: 3600]
    #[arg(long, env = "KILN_RESULT_TTL_SECS")]
    result_ttl_secs: Option<u64>,
    /// The Pusher app id of the HTTP events API [default: 1]
    #[arg(long, env = "KILN_PUSHER_APP_ID")]
    pusher_app_id: Option<String>,
    /// The Pusher app key clients connect with [default: kiln-key]
    #[arg(long, env = "KILN_PUSHER_APP_KEY")]
    pusher_app_key: Option<String>,
    /// Also publish events to this external Pusher-compatible server (http://host:port)
    #[arg(long, env = "KILN_PUSHER_EXTERNAL_URL")]
    pusher_external_url: Option<String>,
    /// The Pusher app secret [default: generated, kept in the data dir]
    #[arg(long, env = "KILN_PUSHER_APP_SECRET", hide_env_values = true)]
    pusher_app_secret: Option<String>,
    /// The address clients reach this server by, the base of its signed URLs (`public_url`)
    /// [default: the request's Host]
    #[arg(long, env = "KILN_PUBLIC_URL")]
    public_url: Option<String>,
    /// Bytes of blobs stored, all tokens together (`[blobs] storage_bytes`) [default: 2 GiB]
    #[arg(long, env = "KILN_BLOB_STORAGE_BYTES")]
    blob_storage_bytes: Option<u64>,
    /// Bytes of blobs one token may hold (`[blobs] token_storage_bytes`) [default: 512 MiB]
    #[arg(long, env = "KILN_TOKEN_BLOB_STORAGE_BYTES")]
    token_blob_storage_bytes: Option<u64>,
    /// How long an unused blob is kept, in seconds (`[blobs] ttl_secs`) [default: 3600]
    #[arg(long, env = "KILN_BLOB_TTL_SECS")]
    blob_ttl_secs: Option<u64>,
    /// Export spans to this OTLP/HTTP collector, http://host:4318 (`[telemetry]
    /// otlp_endpoint`) [default: off]
    #[arg(long, env = "KILN_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// `kiln serve`'s settings: its file, then the environment and flags.
pub fn load(args: ServeArgs) -> anyhow::Result<ServerConfig> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--config {}", path.display()))?;
            ServerConfig::from_toml(&text).with_context(|| format!("{}", path.display()))?
        }
        None => ServerConfig::default(),
    };
    macro_rules! take {
        ($($field:ident),*) => { $(if let Some(v) = args.$field { cfg.$field = v; })* };
    }
    take!(
        listen,
        data_dir,
        capacity,
        queue_depth,
        token_queue_depth,
        token_awaiting_start,
        max_connections,
        max_connections_per_ip,
        header_timeout_ms,
        idle_timeout_ms,
        output_memory_bytes,
        pool_size,
        warmup_ms,
        result_ttl_secs
    );
    if let Some(n) = args.sandbox_pool_size {
        cfg.sandboxes.pool_size = n;
    }
    if !args.function_mount_roots.is_empty() {
        cfg.functions.mount_roots = args.function_mount_roots.clone();
    }
    if let Some(m) = args.metrics_listen {
        cfg.metrics_listen = Some(m);
    }
    if let Some(j) = args.judge0_listen {
        cfg.judge0.listen = Some(j);
    }
    if let Some(e) = args.otlp_endpoint {
        cfg.telemetry.otlp_endpoint = Some(e);
    }
    if let Some(u) = args.public_url {
        cfg.public_url = Some(u);
    }
    if let Some(b) = args.blob_storage_bytes {
        cfg.blobs.storage_bytes = b;
    }
    if let Some(b) = args.token_blob_storage_bytes {
        cfg.blobs.token_storage_bytes = b;
    }
    if let Some(s) = args.blob_ttl_secs {
        cfg.blobs.ttl_secs = s;
    }
    if let Some(id) = args.pusher_app_id {
        cfg.pusher.app_id = id;
    }
    if let Some(key) = args.pusher_app_key {
        cfg.pusher.app_key = key;
    }
    if let Some(url) = args.pusher_external_url {
        cfg.pusher.external_url = Some(url);
    }
    if let Some(secret) = args.pusher_app_secret {
        cfg.pusher.app_secret = secret;
    }
    for t in &args.tokens {
        let (name, token) = t
            .split_once('=')
            .with_context(|| format!("--token {t:?}: expected NAME=TOKEN"))?;
        anyhow::ensure!(!token.is_empty(), "--token {name}: the token is empty");
        cfg.tokens.insert(name.to_string(), token.to_string());
    }
    anyhow::ensure!(cfg.capacity >= 1, "capacity must be at least 1");
    Ok(cfg)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// How often the server hands freed heap memory back to the system.
const HEAP_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// glibc's malloc keeps what a thread freed in that thread's arena for reuse, however large: after
/// a burst (output queued for many subscribers, a flood of requests) the server would hold its
/// peak for good. A thread of its own trims the heap now and then, off the async threads.
fn trim_heap_periodically() {
    #[cfg(target_env = "gnu")]
    {
        let spawned = std::thread::Builder::new()
            .name("kiln-heap-trim".into())
            .spawn(|| loop {
                std::thread::sleep(HEAP_TRIM_INTERVAL);
                trim_heap();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the heap trimmer; freed memory stays with the process");
        }
    }
}

#[cfg(target_env = "gnu")]
fn trim_heap() {
    // SAFETY: malloc_trim takes every arena's lock before touching it, so it may run while other
    // threads allocate; it only returns free pages and leaves every live allocation in place.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs `kiln serve` with `cfg`.
pub async fn run(cfg: ServerConfig) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("kiln serve: locating the kiln binary: {e}");
            return 1;
        }
    };
    trim_heap_periodically();
    let on_start = |s: kiln_server::server::Started| {
        if let Some(token) = &s.new_token {
            eprintln!(
                "kiln serve: generated an API token (shown once; kept in the data dir): {token}"
            );
        }
        if let Some(m) = s.metrics_addr {
            eprintln!("kiln serve: metrics on http://{m}/metrics");
        }
        if let Some(j) = s.judge0_addr {
            eprintln!("kiln serve: the Judge0 API at the root of http://{j}");
        }
        eprintln!("kiln serve: listening on http://{}", s.addr);
    };
    match kiln_server::server::serve(cfg, EngineConfig::new(exe), on_start, shutdown_signal()).await
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kiln serve: {e}");
            1
        }
    }
}
