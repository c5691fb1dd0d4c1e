//! A small HTTP/1.1 client for the commands that talk to a running `kiln serve`: one connection
//! per request, the bearer token on each, JSON or raw bodies, and a streamed answer for SSE.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Where the server is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct Client {
    /// `host:port`.
    authority: String,
    /// The path prefix of the base URL (usually empty).
    prefix: String,
    token: Option<String>,
}

impl Client {
    /// A client for `base` (`http://host:port`) with `token`.
    pub fn new(base: &str, token: Option<String>) -> Result<Self> {
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("the server URL must start with http:// (got {base})"))?;
        let (authority, prefix) = match rest.split_once('/') {
            Some((a, p)) => (a.to_string(), format!("/{}", p.trim_end_matches('/'))),
            None => (rest.to_string(), String::new()),
        };
        let prefix = if prefix == "/" { String::new() } else { prefix };
        Ok(Self {
            authority,
            prefix,
            token,
        })
    }

    /// The WebSocket URL of `path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}{path}", self.authority, self.prefix)
    }

    /// The token's header value.
    pub fn bearer(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// Sends a request and hands back the answer's status and streaming body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("connect to {}", self.authority))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header("host", &self.authority);
        if let Some(b) = self.bearer() {
            req = req.header("authorization", b);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(Full::new(body)).context("build the request")?;
        sender
            .send_request(req)
            .await
            .with_context(|| format!("{method} {path}"))
    }

    /// A JSON request; a non-2xx answer is an error with the server's message.
    pub async fn json(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let (ct, bytes) = match body {
            Some(b) => (Some("application/json"), Bytes::from(b.to_string())),
            None => (None, Bytes::new()),
        };
        let answer = self.send(method, path, ct, bytes).await?;
        let status = answer.status();
        let bytes = answer.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{}", error_message(status.as_u16(), &value, &bytes));
        }
        Ok(value)
    }
}

/// The server's error in words.
pub fn error_message(status: u16, value: &Value, raw: &[u8]) -> String {
    let mut msg = value["error"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned());
    if let Some(details) = value["details"].as_array() {
        for d in details {
            msg.push_str(&format!(
                "\n  {}: {}",
                d["path"].as_str().unwrap_or(""),
                d["message"].as_str().unwrap_or("")
            ));
        }
    }
    format!("{status}: {msg}")
}

/// Reads SSE events (name, data) from a streaming body, calling `each` for every one.
pub async fn read_sse(
    body: Incoming,
    mut each: impl FnMut(&str, &str) -> Result<()>,
) -> Result<()> {
    let mut body = body;
    let mut pending = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("read the event stream")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.push_str(&String::from_utf8_lossy(data));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            let mut name = "message";
            let mut payload = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v;
                } else if let Some(v) = line.strip_prefix("data: ") {
                    payload.push_str(v);
                }
            }
            if !payload.is_empty() {
                each(name, &payload)?;
            }
        }
    }
    Ok(())
}
