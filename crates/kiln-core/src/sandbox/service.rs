//! The sandbox service: creation within the caps, lifetime and idle reclaim, deletion that leaves
//! nothing behind. Commands (`exec.rs`), processes, files, ports and the runtime helpers are the
//! service's methods in modules of their own.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kiln_engine::{Accounting, Limits, Sandbox, SandboxShape};
use kiln_lang::Catalog;
use tokio::sync::RwLock;

use super::process::ProcessTable;
use super::request::SandboxPlan;
use super::{
    SandboxConfig, SandboxError, SandboxHost, SandboxId, SandboxInfo, SandboxLimits, SandboxRequest,
};
use crate::admission::{AdmissionRules, FieldError};
use crate::job::now_ms;

/// How often lifetimes and idle timeouts are checked.
const RECLAIM_TICK: Duration = Duration::from_secs(1);
/// Open files per process in a sandbox.
const OPEN_FILES: u64 = 4096;
/// Stack per process.
const STACK_BYTES: u64 = 8 << 20;
/// Size of a sandbox's `/tmp` (its memory limit bounds it too).
const TMP_BYTES: u64 = 256 << 20;

/// The shape of a sandbox whose `/workspace` holds `disk_mb`.
fn shape(disk_mb: u64) -> SandboxShape {
    SandboxShape {
        tmp_bytes: TMP_BYTES,
        workspace_bytes: disk_mb << 20,
        // Long-lived environments run tools that watch files; see the README on inotify.
        inotify: true,
        accounting: Accounting::PerProcess,
        ..SandboxShape::default()
    }
}

/// A live sandbox.
#[derive(Debug)]
pub(super) struct Live {
    id: SandboxId,
    owner: String,
    language: Option<String>,
    version: Option<String>,
    pub(super) env: BTreeMap<String, String>,
    pub(super) cwd: String,
    pub(super) limits: SandboxLimits,
    metadata: BTreeMap<String, String>,
    created_at_ms: i64,
    expires_at_ms: AtomicI64,
    idle: Duration,
    last_active_ms: AtomicI64,
    /// Commands and background processes running now.
    pub(super) running: AtomicUsize,
    /// Taken (to be destroyed) by deletion; commands hold it shared while they run.
    pub(super) sandbox: RwLock<Option<Sandbox>>,
    /// Its background processes.
    pub(super) processes: Mutex<ProcessTable>,
}

impl Live {
    pub(super) fn touch(&self) {
        self.last_active_ms.store(now_ms(), Ordering::SeqCst);
    }

    fn info(&self) -> SandboxInfo {
        SandboxInfo {
            id: self.id.clone(),
            owner: self.owner.clone(),
            language: self.language.clone(),
            version: self.version.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            limits: self.limits,
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms.load(Ordering::SeqCst),
            idle_timeout_secs: self.idle.as_secs(),
            last_active_at_ms: self.last_active_ms.load(Ordering::SeqCst),
            running: self.running.load(Ordering::SeqCst),
            metadata: self.metadata.clone(),
        }
    }

    /// Whether it is past its lifetime, or idle (no command running) past its idle timeout.
    fn due(&self, now: i64) -> bool {
        let idle_ms = i64::try_from(self.idle.as_millis()).unwrap_or(i64::MAX);
        now >= self.expires_at_ms.load(Ordering::SeqCst)
            || (self.running.load(Ordering::SeqCst) == 0
                && now.saturating_sub(self.last_active_ms.load(Ordering::SeqCst)) >= idle_ms)
    }
}

#[derive(Debug, Default)]
struct Registry {
    live: HashMap<SandboxId, Arc<Live>>,
    /// Sandboxes being made, per owner: they count against the caps already.
    making: HashMap<String, usize>,
}

impl Registry {
    fn owned(&self, owner: &str) -> usize {
        self.live.values().filter(|l| l.owner == owner).count()
            + self.making.get(owner).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.live.len() + self.making.values().sum::<usize>()
    }
}

/// The sandboxes of this server.
#[derive(Debug)]
pub struct SandboxService {
    pub(super) cfg: SandboxConfig,
    rules: AdmissionRules,
    catalog: Arc<Catalog>,
    host: Arc<dyn SandboxHost>,
    registry: Mutex<Registry>,
    accepting: AtomicBool,
}

/// A slot against the caps while a sandbox is being made; given back if making it fails.
struct Making<'a> {
    service: &'a SandboxService,
    owner: String,
}

impl Drop for Making<'_> {
    fn drop(&mut self) {
        let mut r = self.service.registry.lock().expect("sandbox registry lock");
        if let Some(n) = r.making.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                r.making.remove(&self.owner);
            }
        }
    }
}

/// `base` with `over`'s variables set (`KEY=value` each).
pub(super) fn environment(base: Vec<String>, over: &[&BTreeMap<String, String>]) -> Vec<String> {
    let mut env: BTreeMap<String, String> = base
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    for layer in over {
        for (k, v) in *layer {
            env.insert(k.clone(), v.clone());
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

impl SandboxService {
    /// The service, with its reclaimer. Needs a tokio runtime.
    pub fn start(
        cfg: SandboxConfig,
        rules: AdmissionRules,
        catalog: Arc<Catalog>,
        host: Arc<dyn SandboxHost>,
    ) -> Arc<Self> {
        let service = Arc::new(Self {
            cfg,
            rules,
            catalog,
            host,
            registry: Mutex::new(Registry::default()),
            accepting: AtomicBool::new(true),
        });
        let weak = Arc::downgrade(&service);
        tokio::spawn(reclaim_loop(weak));
        service
    }

    /// The shape of a sandbox that asks for the default disk: what an engine's pool of
    /// long-lived sandboxes should hold for creation to take one.
    pub fn pooled_shape(cfg: &SandboxConfig) -> SandboxShape {
        shape(cfg.default_limits.disk_mb)
    }

    /// The settings.
    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    /// Ready sandboxes the host keeps for creations.
    pub fn pooled(&self) -> usize {
        self.host.pooled()
    }

    /// Sandboxes alive now.
    pub fn count(&self) -> usize {
        self.registry
            .lock()
            .expect("sandbox registry lock")
            .live
            .len()
    }

    fn reserve(&self, owner: &str) -> Result<Making<'_>, SandboxError> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(SandboxError::ShuttingDown);
        }
        let mut r = self.registry.lock().expect("sandbox registry lock");
        let owned = r.owned(owner);
        if owned >= self.cfg.max_per_owner {
            return Err(SandboxError::OwnerFull {
                owner: owner.to_string(),
                alive: owned,
                cap: self.cfg.max_per_owner,
            });
        }
        let total = r.total();
        if total >= self.cfg.max_sandboxes {
            return Err(SandboxError::Full {
                alive: total,
                cap: self.cfg.max_sandboxes,
            });
        }
        *r.making.entry(owner.to_string()).or_default() += 1;
        Ok(Making {
            service: self,
            owner: owner.to_string(),
        })
    }

    /// Makes a sandbox for `owner`.
    pub async fn create(
        &self,
        owner: &str,
        request: SandboxRequest,
    ) -> Result<SandboxInfo, SandboxError> {
        let plan = request
            .plan(&self.cfg, &self.rules)
            .map_err(SandboxError::Invalid)?;
        let (language, version, binds) = self.language(&plan)?;
        let making = self.reserve(owner)?;
        let shape = shape(plan.limits.disk_mb);
        let total = self.total_limits(&plan.limits);
        let sandbox = self
            .host
            .create(&shape, &total, &binds)
            .await
            .map_err(|e| SandboxError::Internal(format!("creating the sandbox: {e}")))?;
        let files = plan.files;
        let (sandbox, written) = tokio::task::spawn_blocking(move || {
            let written = files
                .iter()
                .try_for_each(|f| {
                    sandbox
                        .write_file(&f.name, &f.content, 0o644)
                        .map_err(|e| (f.name.clone(), e))
                })
                .map_err(|(path, e)| SandboxError::Write {
                    path,
                    message: e.to_string(),
                });
            (sandbox, written)
        })
        .await
        .map_err(|e| SandboxError::Internal(format!("writing the files panicked: {e}")))?;
        if let Err(e) = written {
            if let Err(d) = sandbox.destroy().await {
                tracing::warn!(error = %d, "destroying a sandbox whose files failed");
            }
            return Err(e);
        }
        let now = now_ms();
        let lifetime = i64::try_from(plan.lifetime.as_millis()).unwrap_or(i64::MAX);
        let live = Arc::new(Live {
            id: SandboxId::new(),
            owner: owner.to_string(),
            language,
            version,
            env: plan.env,
            cwd: plan.cwd,
            limits: plan.limits,
            metadata: plan.metadata,
            created_at_ms: now,
            expires_at_ms: AtomicI64::new(now.saturating_add(lifetime)),
            idle: plan.idle,
            last_active_ms: AtomicI64::new(now),
            running: AtomicUsize::new(0),
            sandbox: RwLock::new(Some(sandbox)),
            processes: Mutex::new(ProcessTable::default()),
        });
        let info = live.info();
        {
            let mut r = self.registry.lock().expect("sandbox registry lock");
            r.live.insert(live.id.clone(), live);
        }
        drop(making);
        tracing::info!(sandbox = %info.id, owner, "sandbox created");
        Ok(info)
    }

    /// The language's name, version and mounts, when one is asked for.
    #[expect(
        clippy::type_complexity,
        reason = "a private triple, named at its one caller"
    )]
    fn language(
        &self,
        plan: &SandboxPlan,
    ) -> Result<(Option<String>, Option<String>, Vec<(PathBuf, PathBuf)>), SandboxError> {
        let Some(name) = &plan.language else {
            return Ok((None, None, Vec::new()));
        };
        let unknown = || SandboxError::UnknownLanguage(name.clone());
        let found = self.catalog.find(name).ok_or_else(unknown)?;
        let version = found.version.as_ref().map_err(|_| unknown())?;
        Ok((
            Some(found.language.name.clone()),
            Some(version.clone()),
            found.language.mounts.clone(),
        ))
    }

    /// What all of a sandbox's processes together may use.
    pub(super) fn total_limits(&self, l: &SandboxLimits) -> Limits {
        Limits {
            wall_time: None,
            cpu_time: None,
            idle_time: None,
            memory_bytes: Some(l.memory_mb << 20),
            pids: Some(l.pids),
            output_bytes: None,
            file_size_bytes: Some(l.disk_mb << 20),
            open_files: Some(OPEN_FILES),
            stack_bytes: Some(STACK_BYTES),
            cpus: l.cpus,
        }
    }

    pub(super) fn live(&self, owner: &str, id: &SandboxId) -> Result<Arc<Live>, SandboxError> {
        let r = self.registry.lock().expect("sandbox registry lock");
        r.live
            .get(id)
            .filter(|l| l.owner == owner)
            .cloned()
            .ok_or(SandboxError::NotFound)
    }

    /// One of `owner`'s sandboxes.
    pub fn get(&self, owner: &str, id: &SandboxId) -> Result<SandboxInfo, SandboxError> {
        Ok(self.live(owner, id)?.info())
    }

    /// `owner`'s sandboxes, oldest first.
    pub fn list(&self, owner: &str) -> Vec<SandboxInfo> {
        let r = self.registry.lock().expect("sandbox registry lock");
        let mut all: Vec<SandboxInfo> = r
            .live
            .values()
            .filter(|l| l.owner == owner)
            .map(|l| l.info())
            .collect();
        all.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        all
    }

    /// Sets a sandbox's end to `secs` from now (never past its maximum lifetime).
    pub fn extend(
        &self,
        owner: &str,
        id: &SandboxId,
        secs: u64,
    ) -> Result<SandboxInfo, SandboxError> {
        let max = self.cfg.max_lifetime.as_secs();
        if secs == 0 || secs > max {
            return Err(SandboxError::Invalid(vec![FieldError::new(
                "timeoutSecs",
                format!("must be 1 to {max}"),
            )]));
        }
        let live = self.live(owner, id)?;
        let max_ms = i64::try_from(self.cfg.max_lifetime.as_millis()).unwrap_or(i64::MAX);
        let want = now_ms().saturating_add(secs as i64 * 1000);
        let cap = live.created_at_ms.saturating_add(max_ms);
        live.expires_at_ms.store(want.min(cap), Ordering::SeqCst);
        live.touch();
        Ok(live.info())
    }

    /// Deletes one of `owner`'s sandboxes: its processes are killed and it is removed.
    pub async fn delete(&self, owner: &str, id: &SandboxId) -> Result<(), SandboxError> {
        let live = {
            let mut r = self.registry.lock().expect("sandbox registry lock");
            match r.live.get(id) {
                Some(l) if l.owner == owner => r.live.remove(id),
                _ => None,
            }
        }
        .ok_or(SandboxError::NotFound)?;
        destroy(&live).await;
        tracing::info!(sandbox = %id, owner, "sandbox deleted");
        Ok(())
    }

    /// Deletes the sandboxes past their lifetime or idle timeout; returns how many.
    pub async fn reclaim(&self) -> usize {
        let now = now_ms();
        let due: Vec<Arc<Live>> = {
            let mut r = self.registry.lock().expect("sandbox registry lock");
            let ids: Vec<SandboxId> = r
                .live
                .values()
                .filter(|l| l.due(now))
                .map(|l| l.id.clone())
                .collect();
            ids.iter().filter_map(|id| r.live.remove(id)).collect()
        };
        for live in &due {
            tracing::info!(sandbox = %live.id, owner = live.owner, "sandbox reclaimed");
            destroy(live).await;
        }
        due.len()
    }

    /// Stops making sandboxes and deletes every one (shutdown).
    pub async fn shutdown(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        let all: Vec<Arc<Live>> = {
            let mut r = self.registry.lock().expect("sandbox registry lock");
            r.live.drain().map(|(_, l)| l).collect()
        };
        for live in &all {
            destroy(live).await;
        }
    }
}

/// Kills a sandbox's processes (so running commands end at once), waits for them to let go of
/// it, and removes it.
async fn destroy(live: &Live) {
    if let Some(sandbox) = live.sandbox.read().await.as_ref() {
        sandbox.kill_all();
    }
    let taken = live.sandbox.write().await.take();
    if let Some(sandbox) = taken {
        if let Err(e) = sandbox.destroy().await {
            tracing::warn!(sandbox = %live.id, error = %e, "destroying a sandbox");
        }
    }
}

async fn reclaim_loop(service: Weak<SandboxService>) {
    let mut tick = tokio::time::interval(RECLAIM_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        service.reclaim().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::NoSandboxes;
    use crate::sandbox::ExecRequest;

    fn service(cfg: SandboxConfig) -> Arc<SandboxService> {
        SandboxService::start(
            cfg,
            AdmissionRules::default(),
            Arc::new(Catalog::embedded().unwrap()),
            Arc::new(NoSandboxes),
        )
    }

    #[tokio::test]
    async fn without_an_engine_creation_fails_as_kilns_error_and_frees_its_slot() {
        let s = service(SandboxConfig {
            max_per_owner: 1,
            ..SandboxConfig::default()
        });
        for _ in 0..3 {
            let e = s.create("a", SandboxRequest::default()).await.unwrap_err();
            assert!(matches!(e, SandboxError::Internal(_)), "{e}");
        }
        assert_eq!(s.count(), 0);
        let e = s
            .create(
                "a",
                SandboxRequest {
                    language: Some("cobol".into()),
                    ..SandboxRequest::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, SandboxError::UnknownLanguage(_)), "{e}");
        let id = SandboxId::new();
        assert!(matches!(
            s.get("a", &id).unwrap_err(),
            SandboxError::NotFound
        ));
        assert!(matches!(
            s.exec(
                "a",
                &id,
                ExecRequest {
                    argv: vec!["true".into()],
                    ..ExecRequest::default()
                }
            )
            .await
            .unwrap_err(),
            SandboxError::NotFound
        ));
    }

    #[test]
    fn commands_get_the_defaults_then_the_sandboxs_then_their_own_variables() {
        let sandbox: BTreeMap<String, String> = [
            ("A".into(), "sandbox".into()),
            ("HOME".into(), "/home".into()),
        ]
        .into();
        let own: BTreeMap<String, String> = [("A".into(), "own".into())].into();
        let env = environment(
            vec!["PATH=/bin".into(), "HOME=/workspace".into()],
            &[&sandbox, &own],
        );
        assert_eq!(env, ["A=own", "HOME=/home", "PATH=/bin"]);
    }
}
