//! Pseudo-terminals for sandboxed processes. The pair comes from the sandbox's own devpts (its
//! `max=` bounds them, and the process sees its terminal at `/dev/pts/N` as it would anywhere),
//! opened from the host through the sandbox's root as the sandbox's user; the host keeps the
//! master, the process gets the slave as its stdio and controlling terminal.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustix::fs::{Mode, OFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::engine::{io_err, EngineError, Sandbox};
use crate::files::{open_in_root, AsSandboxUser};

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TtySize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl Default for TtySize {
    fn default() -> Self {
        Self { rows: 24, cols: 80 }
    }
}

/// The host's end of a sandbox's pseudo-terminal, non-blocking and registered with tokio.
#[derive(Debug)]
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    /// Sets the terminal's size (the process gets `SIGWINCH`).
    pub fn resize(&self, size: TtySize) -> Result<(), EngineError> {
        let ws = rustix::termios::Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(self.fd.get_ref(), ws)
            .map_err(|e| io_err("set the terminal's size")(e.into()))
    }

    fn poll_read_into(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match rustix::io::read(self.fd.get_ref(), unfilled) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
                Err(rustix::io::Errno::INTR) => {}
                // Every slave fd closed: the terminal's end of file.
                Err(rustix::io::Errno::IO) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    fn poll_write_from(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match rustix::io::write(self.fd.get_ref(), data) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }
}

/// Reading the terminal's output.
#[derive(Debug)]
pub struct PtyReader(pub(crate) Arc<PtyMaster>);

/// Typing into the terminal.
#[derive(Debug)]
pub struct PtyWriter(pub(crate) Arc<PtyMaster>);

impl AsyncRead for PtyReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.poll_read_into(cx, buf)
    }
}

impl AsyncWrite for PtyWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_write_from(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Sandbox {
    /// A new pseudo-terminal of the sandbox's own devpts, of `size`: the master (for the host)
    /// and the slave (for the process, to be dropped once it is spawned: while the host holds
    /// it, the master never reads the end of file). Blocking only briefly (an open, ioctls).
    pub fn open_pty(&self, size: TtySize) -> Result<(Arc<PtyMaster>, OwnedFd), EngineError> {
        let root = self.open_root()?;
        let master = {
            // The slave is created owned by the opener: the sandbox's user, as a terminal it
            // opened itself would be.
            let (uid, gid) = self.host_ids();
            let _identity = AsSandboxUser::enter(uid, gid);
            open_in_root(
                &root,
                "/dev/pts/ptmx",
                OFlags::RDWR | OFlags::NOCTTY,
                Mode::empty(),
            )
            .map_err(|e| io_err("open the sandbox's /dev/pts/ptmx")(e.into()))?
        };
        rustix::pty::unlockpt(&master).map_err(|e| io_err("unlockpt")(e.into()))?;
        let slave = rustix::pty::ioctl_tiocgptpeer(
            &master,
            rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY,
        )
        .map_err(|e| io_err("open the terminal's slave")(e.into()))?;
        rustix::fs::fcntl_setfl(&master, OFlags::NONBLOCK)
            .map_err(|e| io_err("terminal nonblock")(e.into()))?;
        // SAFETY: the OwnedFd moves into the AsyncFd, which owns it from then on, so the raw fd
        // stays open and names this terminal for as long as it is registered.
        let fd = unsafe { AsyncFd::register(master) }
            .map_err(|e| io_err("register the terminal")(e.into_parts().1))?;
        let master = PtyMaster { fd };
        master.resize(size)?;
        Ok((Arc::new(master), slave))
    }
}
