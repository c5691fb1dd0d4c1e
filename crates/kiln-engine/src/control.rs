//! The async side of a warden's control socket: requests go out one at a time under a lock, and a
//! reader task routes each reply to the request that is waiting for it and each exit report to the
//! process it belongs to.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use kiln_jail::protocol::{self, ExitStatus, ProtocolError, Reply, Request};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

/// A reply, with the exit receiver already registered when it is `Spawned`.
#[derive(Debug)]
pub(crate) enum Answer {
    Reply(Reply),
    Spawned {
        pid: i32,
        exit: oneshot::Receiver<ExitStatus>,
    },
}

#[derive(Debug, Default)]
struct Routes {
    pending: VecDeque<oneshot::Sender<Answer>>,
    exits: HashMap<i32, oneshot::Sender<ExitStatus>>,
    closed: bool,
}

/// One warden's control channel.
#[derive(Debug)]
pub(crate) struct Control {
    fd: Arc<AsyncFd<OwnedFd>>,
    routes: Arc<Mutex<Routes>>,
    send_lock: tokio::sync::Mutex<()>,
    reader: tokio::task::JoinHandle<()>,
}

/// The warden is gone or the socket broke.
#[derive(Debug, thiserror::Error)]
#[error("the sandbox's warden is gone")]
pub struct WardenGone;

impl Control {
    pub(crate) fn new(fd: OwnedFd) -> std::io::Result<Self> {
        rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK)?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it until it is dropped, so the
        // raw fd stays open and always names the same socket.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        let fd = Arc::new(fd);
        let routes = Arc::new(Mutex::new(Routes::default()));
        let reader = tokio::spawn(read_loop(fd.clone(), routes.clone()));
        Ok(Self {
            fd,
            routes,
            send_lock: tokio::sync::Mutex::new(()),
            reader,
        })
    }

    /// Sends a request (with fds) and waits for its answer.
    pub(crate) async fn request(
        &self,
        req: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Answer, WardenGone> {
        let rx = {
            let _guard = self.send_lock.lock().await;
            let (tx, rx) = oneshot::channel();
            {
                let mut routes = self.routes.lock().expect("routes lock");
                if routes.closed {
                    return Err(WardenGone);
                }
                routes.pending.push_back(tx);
            }
            loop {
                let mut ready = self.fd.writable().await.map_err(|_| WardenGone)?;
                match protocol::send(self.fd.get_ref().as_fd(), req, fds) {
                    Ok(()) => break,
                    Err(ProtocolError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::WouldBlock =>
                    {
                        ready.clear_ready();
                    }
                    Err(_) => return Err(WardenGone),
                }
            }
            rx
        };
        rx.await.map_err(|_| WardenGone)
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop(fd: Arc<AsyncFd<OwnedFd>>, routes: Arc<Mutex<Routes>>) {
    let mut buf = Vec::new();
    loop {
        let Ok(mut ready) = fd.readable().await else {
            break;
        };
        match protocol::recv::<Reply>(fd.get_ref().as_fd(), &mut buf) {
            Ok((reply, _fds)) => route(&routes, reply),
            Err(e) if protocol::is_would_block(&e) => ready.clear_ready(),
            Err(ProtocolError::Decode(e)) => {
                tracing::warn!(error = %e, "undecodable message from a warden");
            }
            Err(_) => break,
        }
    }
    let mut r = routes.lock().expect("routes lock");
    r.closed = true;
    r.pending.clear();
    r.exits.clear();
}

fn route(routes: &Mutex<Routes>, reply: Reply) {
    let mut r = routes.lock().expect("routes lock");
    match reply {
        Reply::Exited { pid, status } => {
            if let Some(tx) = r.exits.remove(&pid) {
                let _ = tx.send(status);
            }
        }
        Reply::Spawned { pid } => {
            let (tx, rx) = oneshot::channel();
            r.exits.insert(pid, tx);
            if let Some(waiter) = r.pending.pop_front() {
                let _ = waiter.send(Answer::Spawned { pid, exit: rx });
            }
        }
        other => {
            if let Some(waiter) = r.pending.pop_front() {
                let _ = waiter.send(Answer::Reply(other));
            }
        }
    }
}
