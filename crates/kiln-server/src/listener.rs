//! Accepting connections, with their limits: a cap on open connections in all and per client
//! address, a time limit for sending each request's head, and an idle limit for a connection
//! that moves no byte either way. A connection's first request head is read and checked here
//! before hyper sees it, so a malformed or oversized one gets the same JSON error body as every
//! other refusal, and a client that sends half a request line is closed at the header timeout.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::error::raw_response;

/// The most headers a request may have.
const MAX_HEADERS: usize = 100;
/// How long a graceful shutdown waits for open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a connection may do.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_per_ip: usize,
    /// Time to send a request head.
    pub header_timeout: Duration,
    /// Time a connection may move no byte.
    pub idle_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
}

/// Counts a client address's open connections while alive.
struct PerIp {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for PerIp {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("per-ip lock");
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// How long a refused connection is read (and dropped) after its answer, so closing it does not
/// reset it before the client reads the answer.
const REFUSAL_LINGER: Duration = Duration::from_millis(200);

/// Refused connections lingering at once. Past it a refusal closes at once: a flood of
/// connections beyond the caps must not hold descriptors for its answers.
const MAX_LINGERING: usize = 256;

static LINGERING: Semaphore = Semaphore::const_new(MAX_LINGERING);

/// Refuses a connection with a short JSON answer, without waiting on a slow client.
fn refuse(stream: TcpStream, status: StatusCode, error: &str) {
    let _ = stream.try_write(&raw_response(status, error, Some(1000)));
    let Ok(lingering) = LINGERING.try_acquire() else {
        return;
    };
    tokio::spawn(async move {
        let _lingering = lingering;
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish (up
/// to a few seconds).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of fds and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refuse(
                stream,
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many connections; retry shortly",
            );
            continue;
        };
        let ip = peer.ip();
        let guard = {
            let mut counts = per_ip.lock().expect("per-ip lock");
            let n = counts.entry(ip).or_default();
            if *n >= limits.max_per_ip {
                drop(counts);
                refuse(
                    stream,
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many connections from this address",
                );
                continue;
            }
            *n += 1;
            PerIp {
                counts: per_ip.clone(),
                ip,
            }
        };
        let watcher = graceful.watcher();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _guard = guard;
            connection(stream, peer, app, limits, watcher).await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    Ok(())
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    let head = match first_head(&mut stream, &limits).await {
        Ok(head) => head,
        Err(Some((status, error))) => {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                stream.write_all(&raw_response(status, error, None)),
            )
            .await;
            return;
        }
        Err(None) => return,
    };
    let activity = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let io = Tracked {
        inner: Rewind {
            prefix: head,
            inner: stream,
        },
        activity: activity.clone(),
        started,
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192) * 4);
    let service = TowerToHyperService::new(app);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let conn = watcher.watch(conn.into_owned());
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        () = idle(&activity, started, limits.idle_timeout) => {
            tracing::debug!(%peer, "idle connection closed");
        }
    }
}

/// Resolves once no byte has moved for `limit`.
async fn idle(activity: &AtomicU64, started: Instant, limit: Duration) {
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let quiet = started.elapsed().saturating_sub(last);
        if quiet >= limit {
            return;
        }
        tokio::time::sleep(limit - quiet).await;
    }
}

/// Reads the first request head: `Ok` with what was read (the head, perhaps more) when it is
/// whole and well formed; `Err(Some(answer))` to refuse it; `Err(None)` when the client went
/// away.
async fn first_head(
    stream: &mut TcpStream,
    limits: &ConnectionLimits,
) -> Result<Bytes, Option<(StatusCode, &'static str)>> {
    let mut buf = BytesMut::with_capacity(4096);
    let read = async {
        loop {
            let n = stream.read_buf(&mut buf).await.map_err(|_| None)?;
            if n == 0 {
                return Err(None);
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(_)) => return Ok(()),
                Ok(httparse::Status::Partial) if buf.len() > limits.max_header_bytes => {
                    return Err(Some((
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "Request head too large",
                    )))
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(Some((
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "Too many request headers",
                    )))
                }
                Err(_) => return Err(Some((StatusCode::BAD_REQUEST, "Malformed HTTP request"))),
            }
        }
    };
    match tokio::time::timeout(limits.header_timeout, read).await {
        Ok(Ok(())) if buf.len() > limits.max_header_bytes => Err(Some((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Request head too large",
        ))),
        Ok(Ok(())) => Ok(buf.freeze()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Some((
            StatusCode::REQUEST_TIMEOUT,
            "The request head did not arrive in time",
        ))),
    }
}

/// A stream that replays bytes already read from it first.
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream that notes when a byte last moved, for the idle limit.
struct Tracked {
    inner: Rewind,
    activity: Arc<AtomicU64>,
    started: Instant,
}

impl Tracked {
    fn touch(&self) {
        self.activity
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
