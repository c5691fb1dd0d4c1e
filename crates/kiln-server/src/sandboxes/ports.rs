//! The port routes of a sandbox: its listeners, a wait for one, and a proxy of HTTP and
//! WebSocket to a port on the sandbox's own loopback (its program listens there; nothing needs
//! to bind 0.0.0.0). The connection is made inside the sandbox's network namespace, so the host's
//! loopback and other sandboxes' ports are out of reach. Kiln's bearer token is not passed on.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hyper_util::rt::TokioIo;
use kiln_core::sandbox::SandboxId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::handlers::{parse_id, refused};
use crate::auth::Caller;
use crate::body::QueryParams;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The longest a wait for a port may ask for.
const MAX_WAIT_MS: u64 = 300_000;

/// A listener.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PortWire {
    /// The port.
    pub port: u16,
    /// The address it is bound to inside the sandbox.
    pub address: String,
}

/// `GET /v1/sandboxes/{id}/ports`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PortList {
    /// The TCP listeners of its programs.
    pub ports: Vec<PortWire>,
}

/// `GET …/ports/{port}/wait`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PortWait {
    /// The port.
    pub port: u16,
    /// Whether something listens on it now.
    pub listening: bool,
    /// Where, if it does.
    pub address: Option<String>,
}

/// `?timeoutMs=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WaitQuery {
    /// How long to wait, ms (default 30000, at most 300000).
    pub timeout_ms: Option<u64>,
}

/// A port in 1..=65535, else a 400 naming it.
fn port(raw: &str) -> Result<u16, ApiError> {
    raw.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::field("port", "must be a TCP port, 1 to 65535"))
}

/// `GET /v1/sandboxes/{id}/ports`: what its programs listen on.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/ports", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = PortList), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<PortList>, ApiError> {
    let sid = parse_id(&id)?;
    let listeners = state
        .sandboxes
        .listeners(&caller.0, &sid)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(PortList {
        ports: listeners
            .into_iter()
            .map(|l| PortWire {
                port: l.port,
                address: l.address,
            })
            .collect(),
    }))
}

/// `GET /v1/sandboxes/{id}/ports/{port}/wait?timeoutMs=`: answers once something listens on
/// the port, or at the timeout with `listening: false`.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/ports/{port}/wait", security(("bearer" = [])),
    params(("id" = String, Path), ("port" = u16, Path), ("timeoutMs" = Option<u64>, Query)),
    responses((status = 200, body = PortWait), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn wait(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, raw_port)): Path<(String, String)>,
    QueryParams(q): QueryParams<WaitQuery>,
) -> Result<Json<PortWait>, ApiError> {
    let sid = parse_id(&id)?;
    let port = port(&raw_port)?;
    let timeout = q.timeout_ms.unwrap_or(30_000);
    if timeout > MAX_WAIT_MS {
        return Err(ApiError::field("timeoutMs", "must be at most 300000"));
    }
    let found = state
        .sandboxes
        .wait_port(&caller.0, &sid, port, Duration::from_millis(timeout))
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(PortWait {
        port,
        listening: found.is_some(),
        address: found.map(|l| l.address),
    }))
}

/// Headers of one hop, never passed on (RFC 9110 §7.6.1), and Kiln's own token.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "authorization",
];

/// `ANY /v1/sandboxes/{id}/ports/{port}/{path}`: the request, passed to `port` on the
/// sandbox's loopback as `/{path}` (with its query), and its answer back; a WebSocket upgrade
/// is passed through both ways. 502 when nothing listens there.
#[utoipa::path(method(get, post, put, patch, delete, head, options), path = "/v1/sandboxes/{id}/ports/{port}/{*path}", security(("bearer" = [])),
    params(("id" = String, Path), ("port" = u16, Path), ("path" = String, Path)),
    responses((status = 200, description = "The program's answer, whatever it is (every method is passed on)"),
        (status = 400, body = ErrorBody, description = "A port out of range"), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "Nothing listens on the port in the sandbox")))]
pub async fn proxy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, raw_port, path)): Path<(String, String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    forward(state, caller, &id, &raw_port, &path, req).await
}

/// `ANY /v1/sandboxes/{id}/ports/{port}/`: as the proxy, for the program's `/`.
#[utoipa::path(method(get, post, put, patch, delete, head, options), path = "/v1/sandboxes/{id}/ports/{port}/", security(("bearer" = [])),
    params(("id" = String, Path), ("port" = u16, Path)),
    responses((status = 200, description = "The program's answer to `/`"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn proxy_root(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, raw_port)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    forward(state, caller, &id, &raw_port, "", req).await
}

fn bad_gateway(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, message)
}

async fn forward(
    state: AppState,
    caller: Caller,
    id: &str,
    raw_port: &str,
    path: &str,
    mut req: Request,
) -> Result<Response, ApiError> {
    let sid: SandboxId = parse_id(id)?;
    let port = port(raw_port)?;
    let stream = state
        .sandboxes
        .connect(&caller.0, &sid, port)
        .await
        .map_err(|e| refused(e, Some(id)))?;
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let target = format!("/{path}{query}");
    let (parts, body) = req.into_parts();
    let mut out = hyper::Request::builder()
        .method(parts.method)
        .uri(target.as_str());
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != header::HOST && name != header::UPGRADE {
            out = out.header(name, value);
        }
    }
    out = out.header(header::HOST, format!("localhost:{port}"));
    if let Some(proto) = &upgrade {
        out = out
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, proto.as_str());
    }
    let out = out
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| bad_gateway(format!("the program on port {port} did not talk HTTP: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "a proxied connection ended");
        }
    });
    let mut answer = sender
        .send_request(out)
        .await
        .map_err(|e| bad_gateway(format!("the program on port {port} failed to answer: {e}")))?;

    if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(bad_gateway("the program switched protocols unasked"));
        };
        let program_upgrade = hyper::upgrade::on(&mut answer);
        tokio::spawn(async move {
            match (client_upgrade.await, program_upgrade.await) {
                (Ok(client), Ok(program)) => {
                    let mut client = TokioIo::new(client);
                    let mut program = TokioIo::new(program);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut program).await;
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(error = %e, "a proxied upgrade failed")
                }
            }
        });
        let (parts, _) = answer.into_parts();
        let mut response = Response::from_parts(parts, Body::empty());
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        return Ok(response);
    }
    let (mut parts, body) = answer.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(HeaderName::from_static(name));
    }
    Ok(Response::from_parts(parts, Body::new(body)).into_response())
}
