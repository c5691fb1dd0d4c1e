//! Putting the service together: the data directory, the job store (and recovery of jobs a
//! previous process left unfinished), tokens, the engine and its pool, the routes, and a graceful
//! shutdown that stops accepting, drains the running jobs, then stops.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kiln_engine::{Engine, EngineConfig};
use kiln_lang::Catalog;

use crate::api::{self, AppState};
use crate::bus::Bus;
use crate::config::ServerConfig;
use crate::job::now_ms;
use crate::manager::JobManager;
use crate::realtime::{Realtime, RealtimeConfig};
use crate::store::Store;

/// How often expired job records are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory or a file in it.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The job store.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The engine (cgroups, the warden binary).
    #[error("engine: {0}")]
    Engine(#[from] kiln_engine::EngineError),
    /// The language catalog.
    #[error("languages: {0}")]
    Languages(#[from] kiln_lang::DefinitionError),
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
    /// A generated token, when none was configured and it was made just now (print it once).
    pub new_token: Option<String>,
}

/// Runs the service until `shutdown` completes; `on_start` learns the address.
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
    let store = Arc::new(Store::open(&cfg.data_dir.join("jobs.db"))?);
    let ttl_ms = cfg.result_ttl().as_millis() as i64;
    let recovered = store.recover(now_ms(), now_ms() + ttl_ms)?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "jobs left unfinished by the previous server are now `error`"
        );
    }
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
    let engine = Engine::new(engine_cfg)?;
    let bus = Bus::new();
    let realtime = Realtime::new(
        RealtimeConfig {
            app_id: cfg.pusher.app_id.clone(),
            app_key: cfg.pusher.app_key.clone(),
            app_secret: cfg.pusher.app_secret.clone(),
            activity_timeout_secs: 120,
            max_message_bytes: 10 * 1024,
        },
        bus.clone(),
    );
    let forwarder = match &cfg.pusher.external_url {
        Some(url) => {
            let authority = crate::forward::parse_url(url).map_err(|e| ServeError::Io {
                path: url.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            let rc = RealtimeConfig {
                app_id: cfg.pusher.app_id.clone(),
                app_key: cfg.pusher.app_key.clone(),
                app_secret: cfg.pusher.app_secret.clone(),
                activity_timeout_secs: 120,
                max_message_bytes: 10 * 1024,
            };
            Some(crate::forward::start(&bus, authority, rc))
        }
        None => None,
    };
    let cfg = Arc::new(cfg);
    let jobs = JobManager::start(cfg.clone(), engine, bus, store.clone());
    let state = AppState::new(cfg.clone(), jobs.clone(), catalog, realtime.clone());
    let app = api::router(state).merge(realtime.router());
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| ServeError::Io {
            path: cfg.listen.to_string(),
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| ServeError::Io {
        path: cfg.listen.to_string(),
        source: e,
    })?;
    let purger = tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_EVERY);
        loop {
            tick.tick().await;
            let s = store.clone();
            let _ = tokio::task::spawn_blocking(move || s.purge_expired(now_ms())).await;
        }
    });
    on_start(Started { addr, new_token });
    tracing::info!(%addr, "kiln serve: listening");
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    tracing::info!("kiln serve: draining running jobs");
    jobs.drain().await;
    purger.abort();
    if let Some(f) = forwarder {
        f.abort();
    }
    result.map_err(|e| ServeError::Io {
        path: addr.to_string(),
        source: e,
    })
}
