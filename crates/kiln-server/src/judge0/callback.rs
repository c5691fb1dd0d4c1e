//! Judge0's `callback_url`: when a submission is over, the server PUTs its default fields
//! (base64-encoded, as Judge0 always sends them) as JSON to the address the client gave. A try
//! that cannot connect, times out or gets a 5xx is tried again, up to `[judge0] callback_tries`
//! with a growing pause; any other answer ends it. Only `http://` addresses are taken.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use bytes::Bytes;
use hyper_util::rt::TokioIo;

/// Why a callback address was refused: the message of Judge0's 422 under `callback_url`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not `http://host[:port][/path]`.
    #[error("is not a valid URL")]
    Invalid,
    /// Another scheme.
    #[error("must be an http:// URL (Kiln sends callbacks without TLS)")]
    Scheme,
}

/// Where a callback goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host, as given (a name or an address; IPv6 without its brackets).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The path and query, from `/`.
    pub path: String,
    /// The `Host` header.
    pub authority: String,
}

impl Target {
    /// Parses `http://host[:port][/path][?query]`.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let uri: axum::http::Uri = url.trim().parse().map_err(|_| TargetError::Invalid)?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(TargetError::Scheme),
            None => return Err(TargetError::Invalid),
        }
        let authority = uri.authority().ok_or(TargetError::Invalid)?;
        if authority.as_str().contains('@') {
            return Err(TargetError::Invalid);
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(TargetError::Invalid);
        }
        Ok(Self {
            host,
            port: authority.port_u16().unwrap_or(80),
            path: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
            authority: authority.as_str().to_string(),
        })
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How one try ended.
#[derive(Debug)]
enum Try {
    /// An answer that ends the callback.
    Answered(StatusCode),
    /// Worth another try.
    Failed(String),
}

async fn put_once(target: &Target, body: Bytes, timeout: Duration) -> Try {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        // The connection's task ends with this try, however the try ends.
        let conn = AbortOnDrop(tokio::spawn(conn));
        let request = Request::builder()
            .method(Method::PUT)
            .uri(&target.path)
            .header(header::HOST, &target.authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "Kiln (Judge0 callback)")
            .body(Body::from(body))
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        drop(conn);
        Ok::<_, String>(response.status())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(status)) if status.is_server_error() => Try::Failed(format!("answered {status}")),
        Ok(Ok(status)) => Try::Answered(status),
        Ok(Err(e)) => Try::Failed(e),
        Err(_) => Try::Failed(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// PUTs `body` to `target`, trying up to `tries` times; the status that ended it, or the last
/// failure.
pub async fn deliver(
    target: &Target,
    body: Bytes,
    tries: u32,
    timeout: Duration,
) -> Result<StatusCode, String> {
    let mut last = String::from("no try was made");
    for n in 0..tries.max(1) {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(500 * u64::from(n))).await;
        }
        match put_once(target, body.clone(), timeout).await {
            Try::Answered(status) => return Ok(status),
            Try::Failed(why) => {
                tracing::debug!(host = %target.host, port = target.port, try_ = n + 1, %why, "judge0 callback failed");
                last = why;
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_addresses_are_taken() {
        let t = Target::parse("http://127.0.0.1:9000/hook?id=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 9000, "/hook?id=1")
        );
        let t = Target::parse("http://[::1]/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert_eq!(Target::parse("http://example.test").unwrap().path, "/");
        assert_eq!(
            Target::parse("https://example.test/x"),
            Err(TargetError::Scheme)
        );
        for bad in [
            "",
            "not a url",
            "/relative",
            "http://user:pw@host/",
            "ftp:/x",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_failing_receiver_is_tried_again_then_given_up() {
        // Nothing listens there: every try fails, and the last failure is reported.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let target = Target::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let started = std::time::Instant::now();
        let err = deliver(
            &target,
            Bytes::from_static(b"{}"),
            2,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(err.starts_with("connect"), "{err}");
        // One pause between the two tries.
        assert!(started.elapsed() >= Duration::from_millis(500));
    }
}
