//! Putting the service together on one machine: the data directory, the job records (and the
//! recovery of jobs a previous process left unfinished), the job logs, tokens, the engine and its
//! pool, the job service, the routes, the listeners with their limits, and a graceful shutdown
//! that stops accepting, drains the admitted jobs, then stops.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kiln_core::blobs::BlobService;
use kiln_core::functions::FunctionService;
use kiln_core::job::{expiry, now_ms};
use kiln_core::log::{LocalEventLog, LocalLogConfig};
use kiln_core::objects::{DiskObjects, ObjectStore};
use kiln_core::queue::FairQueue;
use kiln_core::sandbox::SandboxService;
use kiln_core::store::{JobStore, SqliteStore};
use kiln_core::JobService;
use kiln_engine::{Engine, EngineConfig};
use kiln_lang::Catalog;
use kiln_pusher::{Realtime, RealtimeConfig, RealtimeOptions};

use crate::auth::Tokens;
use crate::config::ServerConfig;
use crate::links::Links;
use crate::listener::ConnectionLimits;
use crate::realtime::JobEvents;
use crate::state::AppState;

/// How often expired job records (and their logs) are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory or a file in it, or an address.
    #[error("{path}: {source}")]
    Io {
        /// The path or address.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The job store.
    #[error(transparent)]
    Store(#[from] kiln_core::store::StoreError),
    /// The job logs.
    #[error(transparent)]
    Log(#[from] kiln_core::log::LogError),
    /// The engine (cgroups, the warden binary).
    #[error("engine: {0}")]
    Engine(#[from] kiln_engine::EngineError),
    /// The language catalog.
    #[error("languages: {0}")]
    Languages(#[from] kiln_lang::DefinitionError),
    /// The object store (blobs, artifacts).
    #[error(transparent)]
    Objects(#[from] kiln_core::objects::ObjectError),
    /// The blob store.
    #[error("blobs: {0}")]
    Blobs(#[from] kiln_core::blobs::BlobError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A secret kept in the data directory: read if it exists, else generated and written (mode 0600).
/// Returns it and whether it was just made.
fn secret_file(path: &Path) -> Result<(String, bool), ServeError> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok((s, false));
        }
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(secret.as_bytes()).map_err(io(path))?;
    Ok((secret, true))
}

/// What a started service tells its caller.
#[derive(Debug, Clone)]
pub struct Started {
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    /// The metrics address, when there is one.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The address serving Judge0's routes at its root, when there is one.
    pub judge0_addr: Option<std::net::SocketAddr>,
    /// A generated token, when none was configured and it was made just now (print it once).
    pub new_token: Option<String>,
}

fn realtime_config(cfg: &ServerConfig) -> RealtimeConfig {
    RealtimeConfig {
        app_id: cfg.pusher.app_id.clone(),
        app_key: cfg.pusher.app_key.clone(),
        app_secret: cfg.pusher.app_secret.clone(),
        activity_timeout_secs: 120,
        max_message_bytes: 10 * 1024,
    }
}

/// A listener beside the main one, serving `app` until `stop` changes; its task and address.
async fn side_listener(
    addr: std::net::SocketAddr,
    app: axum::Router,
    limits: ConnectionLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<SideListener, ServeError> {
    let l = bind(addr).await?;
    let bound = l.local_addr().ok();
    let task = tokio::spawn(crate::listener::serve(l, app, limits, async move {
        let _ = stop.changed().await;
    }));
    Ok((Some(task), bound))
}

/// A side listener's task and address.
type SideListener = (
    Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    Option<std::net::SocketAddr>,
);

async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Io {
            path: addr.to_string(),
            source: e,
        })
}

/// Runs the service until `shutdown` completes; `on_start` learns the addresses.
pub async fn serve(
    mut cfg: ServerConfig,
    engine_cfg: EngineConfig,
    on_start: impl FnOnce(Started),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(io(&cfg.data_dir))?;
    // Job outputs, tokens and the Pusher secret live here: the service's user only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&cfg.data_dir))?;
    }
    let mut new_token = None;
    if cfg.tokens.is_empty() {
        let path = cfg.data_dir.join("token");
        let (token, made) = secret_file(&path)?;
        if made {
            new_token = Some(token.clone());
        }
        cfg.tokens.insert("default".into(), token);
    }
    if cfg.pusher.app_secret.is_empty() {
        cfg.pusher.app_secret = secret_file(&cfg.data_dir.join("pusher-secret"))?.0;
    }
    let store = Arc::new(SqliteStore::open(&cfg.data_dir.join("jobs.db"))?);
    let recovered = store
        .recover(now_ms(), expiry(now_ms(), cfg.result_ttl()))
        .await?;
    if !recovered.is_empty() {
        tracing::warn!(
            recovered = recovered.len(),
            "jobs left unfinished by the previous server are now `error`"
        );
    }
    let log = Arc::new(LocalEventLog::open(LocalLogConfig {
        dir: cfg.data_dir.join("logs"),
        memory_budget: cfg.output_memory_bytes,
        window_bytes: cfg.output_window_bytes,
    })?);
    let catalog = Arc::new(Catalog::embedded()?);
    {
        // Detection runs the toolchains once; do it before the first request needs it.
        let c = catalog.clone();
        tokio::task::spawn_blocking(move || c.detected().len())
            .await
            .unwrap_or(0);
    }
    let mut engine_cfg = engine_cfg;
    engine_cfg.pool_size = cfg.pool_size;
    engine_cfg.environment_pool_size = cfg.sandboxes.pool_size;
    engine_cfg.environment_pool_shape = SandboxService::pooled_shape(&cfg.sandboxes.service());
    let engine = Arc::new(Engine::new(engine_cfg)?);
    let sandboxes = SandboxService::start(
        cfg.sandboxes.service(),
        cfg.service().admission,
        catalog.clone(),
        engine.clone(),
    );
    let functions = Arc::new(FunctionService::new(
        engine.clone(),
        catalog.clone(),
        cfg.functions.service(),
    ));
    let objects: Arc<dyn ObjectStore> = Arc::new(DiskObjects::open(&cfg.data_dir.join("objects"))?);
    let blobs = Arc::new(BlobService::open(cfg.blobs.service(), objects.clone()).await?);
    let service = JobService::start(
        cfg.service(),
        engine,
        catalog,
        Arc::new(FairQueue::new()),
        log,
        store,
        objects,
    )
    .await?;
    let listener = bind(cfg.listen).await?;
    let addr = listener.local_addr().map_err(|e| ServeError::Io {
        path: cfg.listen.to_string(),
        source: e,
    })?;
    let links = {
        let key = secret_file(&cfg.data_dir.join("url-secret"))?.0;
        let host = match addr.ip() {
            ip if ip.is_unspecified() => {
                std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
            }
            _ => addr,
        };
        Links::new(
            key.as_bytes(),
            cfg.public_url.as_deref(),
            &format!("http://{host}"),
        )
    };
    let realtime = Realtime::with_options(
        realtime_config(&cfg),
        RealtimeOptions {
            send_queue_bytes: cfg.pusher.socket_queue_bytes,
            ..RealtimeOptions::default()
        },
        Arc::new(JobEvents::new(service.clone(), links.clone())),
    );
    let forwarder = match &cfg.pusher.external_url {
        Some(url) => {
            let authority = crate::forward::parse_url(url).map_err(|e| ServeError::Io {
                path: url.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            Some(crate::forward::start(
                service.clone(),
                links.clone(),
                authority,
                realtime_config(&cfg),
            ))
        }
        None => None,
    };
    let cfg = Arc::new(cfg);
    let state = AppState {
        cfg: cfg.clone(),
        service: service.clone(),
        sandboxes: sandboxes.clone(),
        functions,
        realtime,
        tokens: Arc::new(Tokens::new(cfg.tokens.iter())),
        compat: Default::default(),
        blobs: blobs.clone(),
        links,
    };
    let limits = ConnectionLimits {
        max_connections: cfg.max_connections,
        max_per_ip: cfg.max_connections_per_ip,
        header_timeout: Duration::from_millis(cfg.header_timeout_ms),
        idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
        max_header_bytes: cfg.max_header_bytes,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (metrics_task, metrics_addr) = match cfg.metrics_listen {
        Some(m) => {
            let app = crate::app::metrics_router(state.clone());
            side_listener(m, app, limits, stop_rx.clone()).await?
        }
        None => (None, None),
    };
    // One application for every listener, so that they share the faces' state (the Judge0
    // submissions among it).
    let app = crate::app::router(state);
    let (judge0_task, judge0_addr) = match cfg.judge0.listen {
        Some(j) => {
            let app = crate::app::judge0_root_router(app.clone());
            side_listener(j, app, limits, stop_rx.clone()).await?
        }
        None => (None, None),
    };
    let purger = {
        let service = service.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PURGE_EVERY);
            loop {
                tick.tick().await;
                service.purge_expired().await;
            }
        })
    };
    let reaper = {
        let blobs = blobs.clone();
        let every = (blobs.config().ttl / 4).clamp(Duration::from_millis(250), PURGE_EVERY);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                blobs.reap().await;
            }
        })
    };
    on_start(Started {
        addr,
        metrics_addr,
        judge0_addr,
        new_token,
    });
    tracing::info!(%addr, "kiln serve: listening");
    let result = crate::listener::serve(listener, app, limits, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    })
    .await;
    tracing::info!("kiln serve: draining admitted jobs");
    sandboxes.shutdown().await;
    service.drain().await;
    purger.abort();
    reaper.abort();
    for t in [metrics_task, judge0_task].into_iter().flatten() {
        let _ = t.await;
    }
    if let Some(f) = forwarder {
        f.abort();
    }
    result.map_err(|e| ServeError::Io {
        path: addr.to_string(),
        source: e,
    })
}
