//! Publishing every job event to an external Pusher-compatible server (soketi, sockudo, Pusher)
//! through its signed HTTP events API, when the operator configures one: each admitted job is
//! followed from its first event. Plain `http://` over a kept-alive connection; events are sent in
//! order, and one that cannot be delivered is logged and dropped rather than holding back the
//! rest.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use std::sync::Arc;

use futures_util::StreamExt;
use kiln_core::JobService;
use kiln_pusher::{signed_events_request, AppEvent, RealtimeConfig};
use tokio::sync::mpsc;

/// Events waiting to be sent, all jobs together; a job's follower waits when it is full.
const BACKLOG: usize = 1024;

/// Why an external server URL is not usable.
#[derive(Debug, thiserror::Error)]
#[error("external Pusher URL {url:?}: {reason}")]
pub struct UrlError {
    url: String,
    reason: &'static str,
}

/// Where to send: `host:port` from an `http://host:port` URL (no path: the path is signed).
pub fn parse_url(url: &str) -> Result<String, UrlError> {
    let err = |reason| UrlError {
        url: url.to_string(),
        reason,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| err("only http:// is supported"))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(err("must be http://host:port without a path"));
    }
    Ok(if rest.contains(':') {
        rest.to_string()
    } else {
        format!("{rest}:80")
    })
}

/// Follows every job `service` admits from now on and sends its events to the server at
/// `authority` (`host:port`), artifact URLs signed by `links`.
pub fn start(
    service: Arc<JobService>,
    links: crate::links::Links,
    authority: String,
    cfg: RealtimeConfig,
) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    let sender = tokio::spawn(send_all(rx, authority, cfg));
    let mut admitted = service.admissions();
    tokio::spawn(async move {
        loop {
            let id = match admitted.recv().await {
                Ok(id) => id,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "external Pusher forwarding missed new jobs");
                    continue;
                }
                Err(_) => break,
            };
            let Some(mut feed) = crate::realtime::channel_feed(&service, &links, &id, Some(0))
            else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(event) = feed.next().await {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            });
        }
        sender.abort();
    })
}

/// Sends every event of `rx`, in order.
pub async fn send_all(mut rx: mpsc::Receiver<AppEvent>, authority: String, cfg: RealtimeConfig) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    while let Some(event) = rx.recv().await {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (path, body) = signed_events_request(&cfg, &event, ts);
        // One retry on a fresh connection: a kept-alive one may have been closed meanwhile.
        for attempt in 0..2 {
            if conn.is_none() {
                conn = TcpStream::connect(&authority)
                    .await
                    .ok()
                    .map(BufReader::new);
            }
            let Some(c) = conn.as_mut() else { break };
            match tokio::time::timeout(Duration::from_secs(5), post(c, &authority, &path, &body))
                .await
            {
                Ok(Ok(200)) => break,
                Ok(Ok(status)) => {
                    tracing::warn!(status, channel = %event.channel, "external Pusher refused an event");
                    break;
                }
                _ => {
                    conn = None;
                    if attempt == 1 {
                        tracing::warn!(channel = %event.channel, "external Pusher unreachable; event dropped");
                    }
                }
            }
        }
    }
}

/// One POST on a kept-alive HTTP/1.1 connection; returns the status.
async fn post(
    conn: &mut BufReader<TcpStream>,
    host: &str,
    path: &str,
    body: &str,
) -> std::io::Result<u16> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(req.as_bytes()).await?;
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        conn.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut rest = vec![0u8; length];
    conn.read_exact(&mut rest).await?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_pusher::{NoEvents, Realtime};

    fn cfg() -> RealtimeConfig {
        RealtimeConfig {
            app_id: "ext".into(),
            app_key: "ext-key".into(),
            app_secret: "ext-secret".into(),
            activity_timeout_secs: 120,
            max_message_bytes: 10 * 1024,
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:6001").unwrap(),
            "127.0.0.1:6001"
        );
        assert_eq!(parse_url("http://soketi/").unwrap(), "soketi:80");
        assert!(parse_url("https://x").is_err());
        assert!(parse_url("http://x/apps").is_err());
    }

    /// Events sent arrive on another Pusher-protocol server through its signed HTTP API (here: a
    /// second Kiln realtime endpoint standing in for soketi).
    #[tokio::test]
    async fn events_reach_the_external_server() {
        let external = Realtime::new(cfg(), Arc::new(NoEvents));
        let mut seen = external.published();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = external.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let (tx, rx) = mpsc::channel(8);
        let _fwd = tokio::spawn(send_all(rx, addr.to_string(), cfg()));
        for i in 0..3 {
            tx.send(AppEvent {
                channel: "private-run-x".into(),
                name: "stdout".into(),
                data: serde_json::json!({"chunk": format!("line {i}"), "seq": i}),
            })
            .await
            .unwrap();
        }
        for i in 0..3 {
            let e = tokio::time::timeout(Duration::from_secs(5), seen.recv())
                .await
                .expect("forwarded in time")
                .unwrap();
            assert_eq!(e.channel, "private-run-x");
            assert_eq!(e.name, "stdout");
            // The HTTP API carries data as a JSON string, as every Pusher SDK sends it.
            let data: serde_json::Value =
                serde_json::from_str(e.data.as_str().expect("string data")).unwrap();
            assert_eq!(data["seq"], i);
        }
    }
}
