//! A sandbox's files for its owner: each call runs on a blocking thread as the sandbox's user,
//! through [`kiln_engine::tree::Tree`], whose paths resolve inside the sandbox's root whatever
//! the sandboxed code planted.

use kiln_engine::tree::{Entry, Listing, SandboxPath, Tree, TreeError};

use super::{SandboxError, SandboxId, SandboxService};

impl SandboxService {
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
        let live = self.live(owner, id)?;
        live.touch();
        tokio::task::spawn_blocking(move || {
            let guard = live.sandbox.blocking_read();
            let sandbox = guard.as_ref().ok_or(SandboxError::NotFound)?;
            let tree = sandbox.tree().map_err(SandboxError::File)?;
            op(&tree).map_err(SandboxError::File)
        })
        .await
        .map_err(|e| SandboxError::Internal(format!("a file operation panicked: {e}")))?
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
