//! A minimal HTTP/1.1 client for the http section: one keep-alive connection per `Conn`, opened
//! once and reused for every request (reopened only after it broke), and a reader of
//! server-sent events.
//!
//! hyper's low-level connection API rather than a pooled client: the bench decides which requests
//! share a connection, and how many connections each measurement opens is a fact it reports.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One keep-alive connection to the server, with its bearer token.
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    auth: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// TCP connections this `Conn` has opened (1 when keep-alive held throughout).
    pub opened: usize,
}

impl Conn {
    pub fn new(addr: SocketAddr, token: &str) -> Result<Self> {
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            auth: HeaderValue::from_str(&format!("Bearer {token}"))?,
            sender: None,
            opened: 0,
        })
    }

    /// A `Conn` to the same server with the same token, not connected yet.
    pub fn unconnected(&self) -> Self {
        Self {
            addr: self.addr,
            host: self.host.clone(),
            auth: self.auth.clone(),
            sender: None,
            opened: 0,
        }
    }

    /// Opens the connection now if it is not open, so that a timed request does not pay for it.
    pub async fn connect(&mut self) -> Result<()> {
        if self.sender.as_ref().is_some_and(|s| !s.is_closed()) {
            return Ok(());
        }
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect to {}", self.addr))?;
        // Requests are small writes answered at once: Nagle's algorithm would only add delay.
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        // The connection's I/O runs in its own task; it ends when `sender` is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        self.opened += 1;
        Ok(())
    }

    /// Forgets the connection (after an error or a timeout left it in an unknown state); the next
    /// request opens a new one.
    pub fn reset(&mut self) {
        self.sender = None;
    }

    /// Sends a request and returns once the response's headers arrived; the caller must read the
    /// body to its end before the next request (hyper reuses the connection only then).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        json: Option<Bytes>,
    ) -> Result<Response<Incoming>> {
        self.connect().await?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.auth.clone());
        if json.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(json.unwrap_or_default()))?;
        let sender = self.sender.as_mut().context("not connected")?;
        let sent = async {
            sender.ready().await?;
            sender.send_request(req).await
        }
        .await;
        match sent {
            Ok(resp) => Ok(resp),
            Err(e) => {
                self.reset();
                Err(e).with_context(|| format!("{method} {path}"))
            }
        }
    }

    /// A request whose whole response is read; returns the status and the body as JSON (`Null`
    /// for a body that is not JSON).
    pub async fn json(
        &mut self,
        method: Method,
        path: &str,
        json: Option<Bytes>,
    ) -> Result<(StatusCode, Value)> {
        let (status, body) = self.whole(method, path, json).await?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// `GET path` as plain text (for `/metrics`).
    pub async fn text(&mut self, path: &str) -> Result<(StatusCode, String)> {
        let (status, body) = self.whole(Method::GET, path, None).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// A request and its whole body; a body that breaks off drops the connection.
    async fn whole(
        &mut self,
        method: Method,
        path: &str,
        json: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let resp = self.send(method, path, json).await?;
        let status = resp.status();
        match resp.into_body().collect().await {
            Ok(b) => Ok((status, b.to_bytes())),
            Err(e) => {
                self.reset();
                Err(e).with_context(|| format!("read the body of {path}"))
            }
        }
    }
}

/// One server-sent event.
#[derive(Debug)]
pub struct Event {
    pub name: String,
    pub data: String,
}

/// Reads the events of an SSE response body as they arrive.
#[derive(Debug)]
pub struct Events {
    body: Incoming,
    buf: Vec<u8>,
}

impl Events {
    pub fn new(body: Incoming) -> Self {
        Self {
            body,
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` once the stream ended. Comments (keep-alives) are skipped.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        loop {
            if let Some(event) = self.take_buffered() {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                Some(frame) => {
                    if let Ok(data) = frame.context("read the event stream")?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                None if self.buf.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                None => bail!(
                    "the event stream ended inside an event: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Parses the first complete event in the buffer, dropping comment-only blocks.
    fn take_buffered(&mut self) -> Option<Event> {
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            if let Some(event) = parse_event(&String::from_utf8_lossy(&block)) {
                return Some(event);
            }
        }
        None
    }
}

/// One event block (`event:` and `data:` lines); `None` when it has no data (a comment).
fn parse_event(block: &str) -> Option<Event> {
    let mut name = String::from("message");
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = value.to_string(),
            "data" => data.push(value),
            _ => {}
        }
    }
    (!data.is_empty()).then(|| Event {
        name,
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_comments() {
        let e = parse_event("event: stdout\ndata: {\"chunk\":\"hello\\n\"}\n\n").unwrap();
        assert_eq!(e.name, "stdout");
        assert_eq!(e.data, "{\"chunk\":\"hello\\n\"}");
        assert!(parse_event(":\n\n").is_none());
        let e = parse_event("data: a\ndata: b\n\n").unwrap();
        assert_eq!((e.name.as_str(), e.data.as_str()), ("message", "a\nb"));
    }
}
