//! A sandbox's files and ports for its owner. File calls run on a blocking thread as the
//! sandbox's user, through [`kiln_engine::tree::Tree`], whose paths resolve inside the sandbox's
//! root whatever the sandboxed code planted; ports are its loopback's listeners, connected to
//! from inside its network namespace.

use std::time::Duration;

use kiln_engine::net::Listener;
use kiln_engine::tree::{Entry, Listing, SandboxPath, Tree, TreeError};

use super::{SandboxError, SandboxId, SandboxService};

/// How often a wait for a port looks again.
const PORT_POLL: Duration = Duration::from_millis(25);

impl SandboxService {
    /// Runs `op` on one of `owner`'s sandboxes on a blocking thread, holding it shared.
    async fn blocking<T, F>(&self, owner: &str, id: &SandboxId, op: F) -> Result<T, SandboxError>
    where
        T: Send + 'static,
        F: FnOnce(&kiln_engine::Sandbox) -> Result<T, SandboxError> + Send + 'static,
    {
        let live = self.live(owner, id)?;
        live.touch();
        tokio::task::spawn_blocking(move || {
            let guard = live.sandbox.blocking_read();
            op(guard.as_ref().ok_or(SandboxError::NotFound)?)
        })
        .await
        .map_err(|e| SandboxError::Internal(format!("a blocking sandbox call panicked: {e}")))?
    }

    /// Runs `op` on one of `owner`'s sandboxes' tree.
    pub async fn with_tree<T, F>(
        &self,
        owner: &str,
        id: &SandboxId,
        op: F,
    ) -> Result<T, SandboxError>
    where
        T: Send + 'static,
        F: FnOnce(&Tree) -> Result<T, TreeError> + Send + 'static,
    {
        self.blocking(owner, id, |sandbox| {
            let tree = sandbox.tree()?;
            Ok(op(&tree)?)
        })
        .await
    }

    /// A file's facts.
    pub async fn stat(
        &self,
        owner: &str,
        id: &SandboxId,
        path: SandboxPath,
    ) -> Result<Entry, SandboxError> {
        self.with_tree(owner, id, move |t| t.stat(&path)).await
    }

    /// A directory's entries, `depth` levels down.
    pub async fn list_files(
        &self,
        owner: &str,
        id: &SandboxId,
        path: SandboxPath,
        depth: u32,
    ) -> Result<Listing, SandboxError> {
        self.with_tree(owner, id, move |t| t.list(&path, depth))
            .await
    }

    /// Opens a regular file to read (and its size).
    pub async fn open_read(
        &self,
        owner: &str,
        id: &SandboxId,
        path: SandboxPath,
    ) -> Result<(std::fs::File, u64), SandboxError> {
        self.with_tree(owner, id, move |t| t.open_read(&path)).await
    }

    /// Creates or truncates a regular file to write, making its parents.
    pub async fn open_write(
        &self,
        owner: &str,
        id: &SandboxId,
        path: SandboxPath,
        mode: u32,
    ) -> Result<std::fs::File, SandboxError> {
        self.with_tree(owner, id, move |t| t.open_write(&path, mode))
            .await
    }

    /// `mkdir -p`.
    pub async fn mkdir(
        &self,
        owner: &str,
        id: &SandboxId,
        path: SandboxPath,
    ) -> Result<Entry, SandboxError> {
        self.with_tree(owner, id, move |t| t.mkdir_all(&path)).await
    }

    /// `mv`.
    pub async fn rename(
        &self,
        owner: &str,
        id: &SandboxId,
        from: SandboxPath,
        to: SandboxPath,
    ) -> Result<Entry, SandboxError> {
        self.with_tree(owner, id, move |t| t.rename(&from, &to))
            .await
    }

    /// `rm` (`-r` with `recursive`).
    pub async fn remove(
        &self,
        owner: &str,
        id: &SandboxId,
        path: SandboxPath,
        recursive: bool,
    ) -> Result<(), SandboxError> {
        self.with_tree(owner, id, move |t| t.remove(&path, recursive))
            .await
    }
}

impl SandboxService {
    /// The TCP listeners of one of `owner`'s sandboxes.
    pub async fn listeners(
        &self,
        owner: &str,
        id: &SandboxId,
    ) -> Result<Vec<Listener>, SandboxError> {
        self.blocking(owner, id, |sandbox| {
            sandbox
                .listeners()
                .map_err(|e| SandboxError::Internal(e.to_string()))
        })
        .await
    }

    /// Waits up to `timeout` for a listener on `port`; the listener, if one came.
    pub async fn wait_port(
        &self,
        owner: &str,
        id: &SandboxId,
        port: u16,
        timeout: Duration,
    ) -> Result<Option<Listener>, SandboxError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self
                .listeners(owner, id)
                .await?
                .into_iter()
                .find(|l| l.port == port);
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                return Ok(found);
            }
            tokio::time::sleep(PORT_POLL).await;
        }
    }

    /// A connection to `port` on the sandbox's own loopback.
    pub async fn connect(
        &self,
        owner: &str,
        id: &SandboxId,
        port: u16,
    ) -> Result<tokio::net::TcpStream, SandboxError> {
        let live = self.live(owner, id)?;
        live.touch();
        let guard = live.sandbox.read().await;
        let sandbox = guard.as_ref().ok_or(SandboxError::NotFound)?;
        sandbox.connect(port).await.map_err(|e| match e {
            kiln_engine::EngineError::Io { source, .. }
                if matches!(
                    source.raw_os_error(),
                    Some(libc::ECONNREFUSED | libc::ETIMEDOUT | libc::ENETUNREACH)
                ) =>
            {
                SandboxError::PortClosed(port)
            }
            e => SandboxError::Internal(e.to_string()),
        })
    }
}
