//! A process running in a sandbox: its stdio pipes, its exit, and signals to it or its group.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use kiln_jail::cgroup::SandboxCgroup;
use kiln_jail::protocol::{ExitStatus, Reply, Request};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::control::{Answer, Control};
use crate::engine::EngineError;
use crate::pty::{PtyMaster, PtyReader, PtyWriter, TtySize};

/// Where a process's input goes.
pub type Input = Box<dyn AsyncWrite + Send + Sync + Unpin>;
/// Where a process's output comes from.
pub type Output = Box<dyn AsyncRead + Send + Sync + Unpin>;

/// The host's ends of a process's stdio.
#[derive(Debug)]
pub(crate) enum HostStdio {
    /// stdin's write end, stdout's and stderr's read ends.
    Pipes([OwnedFd; 3]),
    /// A terminal's master: stdin and stdout both (and stderr, which the process shares).
    Tty(Arc<PtyMaster>),
}

/// A process in a sandbox.
pub struct Process {
    pid: i32,
    /// The write end of its stdin (its terminal, when it has one).
    pub stdin: Option<Input>,
    /// The read end of its stdout (its terminal, when it has one).
    pub stdout: Option<Output>,
    /// The read end of its stderr (none on a terminal: it is the terminal too).
    pub stderr: Option<Output>,
    tty: Option<Arc<PtyMaster>>,
    exit: Option<oneshot::Receiver<ExitStatus>>,
    status: Option<ExitStatus>,
    control: Arc<Control>,
    /// Its own group, in a sandbox that accounts each process on its own.
    group: Option<Arc<SandboxCgroup>>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .field("tty", &self.tty.is_some())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Process {
    pub(crate) fn new(
        pid: i32,
        stdio: HostStdio,
        exit: oneshot::Receiver<ExitStatus>,
        control: Arc<Control>,
        group: Option<SandboxCgroup>,
    ) -> std::io::Result<Self> {
        let (stdin, stdout, stderr, tty): (Input, Output, Option<Output>, _) = match stdio {
            HostStdio::Pipes([stdin, stdout, stderr]) => (
                Box::new(pipe::Sender::from_owned_fd(stdin)?),
                Box::new(pipe::Receiver::from_owned_fd(stdout)?),
                Some(Box::new(pipe::Receiver::from_owned_fd(stderr)?)),
                None,
            ),
            HostStdio::Tty(master) => (
                Box::new(PtyWriter(master.clone())),
                Box::new(PtyReader(master.clone())),
                None,
                Some(master),
            ),
        };
        Ok(Self {
            pid,
            stdin: Some(stdin),
            stdout: Some(stdout),
            stderr,
            tty,
            exit: Some(exit),
            status: None,
            control,
            group: group.map(Arc::new),
        })
    }

    /// Its own group (with everything it started), when the sandbox accounts each process on its
    /// own.
    pub fn group(&self) -> Option<Arc<SandboxCgroup>> {
        self.group.clone()
    }

    /// Sets its terminal's size; a process without one has nothing to resize.
    pub fn resize(&self, size: TtySize) -> Result<(), EngineError> {
        match &self.tty {
            Some(master) => master.resize(size),
            None => Ok(()),
        }
    }

    /// Its pid inside the sandbox.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` to the process, or to its whole process group.
    pub async fn signal(&self, signal: i32, group: bool) -> Result<(), EngineError> {
        let req = Request::Signal {
            pid: self.pid,
            signal,
            group,
        };
        match self.control.request(&req, &[]).await? {
            Answer::Reply(Reply::Signalled) => Ok(()),
            Answer::Reply(Reply::Failed { message, .. }) => Err(EngineError::Warden(message)),
            other => Err(EngineError::Warden(format!("unexpected answer {other:?}"))),
        }
    }

    /// Kills the process and everything it started: its whole group when it has one (daemons
    /// that left its session included), else its process group.
    pub async fn kill(&self) -> Result<(), EngineError> {
        match &self.group {
            Some(group) => {
                let group = Arc::clone(group);
                tokio::task::spawn_blocking(move || group.kill())
                    .await
                    .map_err(|e| EngineError::Warden(format!("kill panicked: {e}")))?
                    .map_err(|e| EngineError::Sandbox(e.into()))
            }
            None => self.signal(libc::SIGKILL, true).await,
        }
    }

    /// Removes the process's own group once its processes are gone (in the background).
    pub fn release_group(&mut self) {
        if let Some(group) = self.group.take() {
            tokio::task::spawn_blocking(move || {
                if let Ok(group) = Arc::try_unwrap(group) {
                    if let Err(e) = group.remove() {
                        tracing::warn!(error = %e, "removing a process's cgroup");
                    }
                }
            });
        }
    }

    /// Waits for the process to end.
    pub async fn wait(&mut self) -> Result<ExitStatus, EngineError> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let rx = self.exit.as_mut().ok_or(EngineError::WardenGone)?;
        let status = rx.await.map_err(|_| EngineError::WardenGone)?;
        self.exit = None;
        self.status = Some(status);
        Ok(status)
    }

    /// Takes the exit receiver, for callers that select on it.
    pub(crate) fn take_exit(&mut self) -> Option<oneshot::Receiver<ExitStatus>> {
        self.exit.take()
    }
}
