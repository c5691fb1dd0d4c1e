//! The process routes of a sandbox: streamed exec, background processes (start, list, stdin,
//! signals, kill, wait, logs replayed then followed) and a process's terminal over a WebSocket.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::stream::{self, Stream};
use futures_util::{SinkExt, StreamExt};
use kiln_core::sandbox::{ProcessEvent, ProcessFollower, SandboxId};

use super::handlers::{parse_id, refused};
use super::process_wire::{
    process, sse_events, LogsQuery, OutputText, ProcessList, ProcessLogs, ProcessWire,
    SignalRequest, StartProcess, StdinWrite, TtySizeWire, WaitQuery,
};
use super::wire::ExecCommand;
use crate::auth::Caller;
use crate::body::{JsonBody, QueryParams};
use crate::coderunner::handlers::Ok;
use crate::coderunner::request::OutputEncodingName;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The longest a wait may ask for.
const MAX_WAIT: Duration = Duration::from_secs(300);

type EventStream = std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>>;
type Events = Sse<axum::response::sse::KeepAliveStream<EventStream>>;

/// A follower's events as SSE; `guard` lives as long as the stream.
fn sse<G: Send + 'static>(
    follower: ProcessFollower,
    encoding: OutputEncodingName,
    guard: G,
) -> Events {
    let text = OutputText::new(encoding);
    let events = stream::unfold(
        (follower, text, guard),
        |(mut follower, mut text, guard)| async move {
            let event = follower.next().await?;
            let batch: Vec<Result<SseEvent, Infallible>> = sse_events(event, &mut text)
                .into_iter()
                .map(|(name, data)| Ok(SseEvent::default().event(name).data(data)))
                .collect();
            Some((stream::iter(batch), (follower, text, guard)))
        },
    )
    .flatten();
    let events: EventStream = Box::pin(events);
    Sse::new(events).keep_alive(KeepAlive::default())
}

fn ids(id: &str, pid: &str) -> Result<(SandboxId, u64), ApiError> {
    let sid = parse_id(id)?;
    let pid = pid.parse::<u64>().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Process not found: {}", crate::error::echo(pid)),
        )
    })?;
    Ok((sid, pid))
}

/// `POST /v1/sandboxes/{id}/exec/stream`: runs a command and streams it as SSE (`stdout`,
/// `stderr`, `exit`, `end`). Closing the stream kills it.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec/stream", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = ExecCommand,
    responses((status = 200, content_type = "text/event-stream",
        description = "`stdout` and `stderr` ({data, offset}), then `exit` (the process, with its verdict), then `end`"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn exec_stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ExecCommand>,
) -> Result<Events, ApiError> {
    let sid = parse_id(&id)?;
    let (request, encoding) = body.into_domain()?;
    let (follower, kill) = state
        .sandboxes
        .exec_stream(&caller.0, &sid, request)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(sse(follower, encoding, kill))
}

/// `POST /v1/sandboxes/{id}/processes`: starts a process in the background. It outlives this
/// request and every stream that follows it.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = StartProcess,
    responses((status = 201, body = ProcessWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "As many processes running as the sandbox keeps")))]
pub async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<StartProcess>,
) -> Result<(StatusCode, Json<ProcessWire>), ApiError> {
    let sid = parse_id(&id)?;
    let request = body.into_domain()?;
    let info = state
        .sandboxes
        .spawn(&caller.0, &sid, request)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok((StatusCode::CREATED, Json(process(info))))
}

/// `GET /v1/sandboxes/{id}/processes`.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = ProcessList), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ProcessList>, ApiError> {
    let sid = parse_id(&id)?;
    let all = state
        .sandboxes
        .processes(&caller.0, &sid)
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(ProcessList {
        processes: all.into_iter().map(process).collect(),
    }))
}

/// `GET /v1/sandboxes/{id}/processes/{pid}`.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}", security(("bearer" = [])),
    params(("id" = String, Path), ("pid" = u64, Path)),
    responses((status = 200, body = ProcessWire), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, pid)): Path<(String, String)>,
) -> Result<Json<ProcessWire>, ApiError> {
    let (sid, pid) = ids(&id, &pid)?;
    let info = state
        .sandboxes
        .process(&caller.0, &sid, pid)
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(process(info)))
}

/// `POST /v1/sandboxes/{id}/processes/{pid}/stdin`: writes to its stdin (types into its
/// terminal); `eof` closes it.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/stdin", security(("bearer" = [])),
    params(("id" = String, Path), ("pid" = u64, Path)), request_body = StdinWrite,
    responses((status = 200, body = Ok), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Its stdin is closed, or it ended")))]
pub async fn stdin(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, pid)): Path<(String, String)>,
    JsonBody(body): JsonBody<StdinWrite>,
) -> Result<Json<Ok>, ApiError> {
    let (sid, pid) = ids(&id, &pid)?;
    let bytes = body.bytes()?;
    if !bytes.is_empty() {
        state
            .sandboxes
            .write_stdin(&caller.0, &sid, pid, bytes)
            .await
            .map_err(|e| refused(e, Some(&id)))?;
    }
    if body.eof {
        state
            .sandboxes
            .close_stdin(&caller.0, &sid, pid)
            .map_err(|e| refused(e, Some(&id)))?;
    }
    Ok(Json(Ok::yes()))
}

/// `POST /v1/sandboxes/{id}/processes/{pid}/signal`: sends a signal to its process group.
/// `SIGKILL` kills it and everything it started, daemons included.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/signal", security(("bearer" = [])),
    params(("id" = String, Path), ("pid" = u64, Path)), request_body = SignalRequest,
    responses((status = 200, body = ProcessWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn signal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, pid)): Path<(String, String)>,
    JsonBody(body): JsonBody<SignalRequest>,
) -> Result<Json<ProcessWire>, ApiError> {
    let (sid, pid) = ids(&id, &pid)?;
    let signal = body.number()?;
    let info = state
        .sandboxes
        .signal(&caller.0, &sid, pid, signal)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(process(info)))
}

/// `POST /v1/sandboxes/{id}/processes/{pid}/kill`: kills it and its whole tree (daemons that
/// left its session included) and answers once it has ended.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/kill", security(("bearer" = [])),
    params(("id" = String, Path), ("pid" = u64, Path)),
    responses((status = 200, body = ProcessWire), (status = 404, body = ErrorBody)))]
pub async fn kill(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, pid)): Path<(String, String)>,
) -> Result<Json<ProcessWire>, ApiError> {
    let (sid, pid) = ids(&id, &pid)?;
    let info = state
        .sandboxes
        .kill(&caller.0, &sid, pid)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(process(info)))
}

/// `POST /v1/sandboxes/{id}/processes/{pid}/resize`: its terminal's new size.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/resize", security(("bearer" = [])),
    params(("id" = String, Path), ("pid" = u64, Path)), request_body = TtySizeWire,
    responses((status = 200, body = Ok), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn resize(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, pid)): Path<(String, String)>,
    JsonBody(body): JsonBody<TtySizeWire>,
) -> Result<Json<Ok>, ApiError> {
    let (sid, pid) = ids(&id, &pid)?;
    let size = body.checked("size")?;
    state
        .sandboxes
        .resize(&caller.0, &sid, pid, size)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(Ok::yes()))
}

/// `GET /v1/sandboxes/{id}/processes/{pid}/wait?timeoutMs=`: answers when it ends, or at the
/// timeout with it still `running`.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/wait", security(("bearer" = [])),
    params(("id" = String, Path), ("pid" = u64, Path),
        ("timeoutMs" = Option<u64>, Query, description = "Default 30000, at most 300000")),
    responses((status = 200, body = ProcessWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn wait(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, pid)): Path<(String, String)>,
    QueryParams(query): QueryParams<WaitQuery>,
) -> Result<Json<ProcessWire>, ApiError> {
    let (sid, pid) = ids(&id, &pid)?;
    let timeout = Duration::from_millis(query.timeout_ms.unwrap_or(30_000));
    if timeout > MAX_WAIT {
        return Err(ApiError::field("timeoutMs", "must be at most 300000"));
    }
    let info = state
        .sandboxes
        .wait(&caller.0, &sid, pid, timeout)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(process(info)))
}

/// `GET /v1/sandboxes/{id}/processes/{pid}/logs`: its output as kept (the newest
/// `process_log_bytes`); with `follow=true`, an SSE stream of it, then of what comes, then
/// `exit` and `end`.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/logs", security(("bearer" = [])),
    params(("id" = String, Path), ("pid" = u64, Path),
        ("follow" = Option<bool>, Query), ("offset" = Option<u64>, Query), ("encoding" = Option<String>, Query)),
    responses((status = 200, body = ProcessLogs, description = "Without follow; with it, text/event-stream: \
        `stdout`, `stderr` ({data, offset}), `dropped` ({bytes} the log let go), `exit`, `end`"),
        (status = 404, body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, pid)): Path<(String, String)>,
    QueryParams(query): QueryParams<LogsQuery>,
) -> Result<Response, ApiError> {
    let (sid, pid) = ids(&id, &pid)?;
    let encoding = query.encoding.unwrap_or(OutputEncodingName::Utf8);
    let offset = query.offset.unwrap_or(0);
    if query.follow.unwrap_or(false) {
        let follower = state
            .sandboxes
            .follow(&caller.0, &sid, pid, offset)
            .map_err(|e| refused(e, Some(&id)))?;
        return Ok(sse(follower, encoding, ()).into_response());
    }
    let (read, info) = state
        .sandboxes
        .logs(&caller.0, &sid, pid, offset)
        .map_err(|e| refused(e, Some(&id)))?;
    let mut text = OutputText::new(encoding);
    let (mut out, mut err) = (String::new(), String::new());
    for c in &read.chunks {
        match c.stream {
            kiln_engine::Stream::Stderr => err.push_str(&text.chunk(c)),
            _ => out.push_str(&text.chunk(c)),
        }
    }
    out.push_str(&text.finish(kiln_engine::Stream::Stdout));
    err.push_str(&text.finish(kiln_engine::Stream::Stderr));
    Ok(Json(ProcessLogs {
        stdout: out,
        stderr: err,
        skipped_bytes: read.skipped,
        next_offset: read.next,
        process: process(info),
    })
    .into_response())
}

/// `GET /v1/sandboxes/{id}/processes/{pid}/terminal` (WebSocket): a process's terminal. What it
/// printed so far comes first, then its output as it comes, as binary messages; binary messages
/// from the client are typed in. Text messages are JSON: `{"type":"input","data":"ls\r"}`,
/// `{"type":"resize","rows":40,"cols":120}`, `{"type":"signal","signal":"SIGINT"}`. When the
/// process ends the server sends `{"type":"exit", …the process…}` and closes. Leaving leaves
/// it running.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/terminal", security(("bearer" = [])),
    params(("id" = String, Path), ("pid" = u64, Path)),
    responses((status = 101, description = "A WebSocket of the terminal's bytes"),
        (status = 400, body = ErrorBody, description = "Not a WebSocket request, or a process without a terminal"),
        (status = 404, body = ErrorBody)))]
pub async fn terminal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, pid)): Path<(String, String)>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (sid, pid) = ids(&id, &pid)?;
    let info = state
        .sandboxes
        .process(&caller.0, &sid, pid)
        .map_err(|e| refused(e, Some(&id)))?;
    if !info.tty {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "The process has no terminal: start it with `tty`",
        ));
    }
    let ws = ws.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let follower = state
        .sandboxes
        .follow(&caller.0, &sid, pid, 0)
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(ws.on_upgrade(move |socket| attach(socket, follower, state, caller, sid, pid)))
}

/// A control message of the terminal's WebSocket.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum TerminalMessage {
    Input { data: String },
    Resize { rows: u16, cols: u16 },
    Signal { signal: serde_json::Value },
}

async fn attach(
    socket: WebSocket,
    mut follower: ProcessFollower,
    state: AppState,
    caller: Caller,
    sid: SandboxId,
    pid: u64,
) {
    let (mut tx, mut rx) = socket.split();
    let service = state.sandboxes.clone();
    loop {
        tokio::select! {
            event = follower.next() => match event {
                Some(ProcessEvent::Output(chunk)) => {
                    if tx.send(Message::Binary(chunk.data.into())).await.is_err() {
                        return;
                    }
                }
                Some(ProcessEvent::Skipped(_)) => {}
                Some(ProcessEvent::Exited(info)) => {
                    let mut body = serde_json::to_value(process(info)).unwrap_or_default();
                    body["type"] = "exit".into();
                    let _ = tx.send(Message::Text(body.to_string().into())).await;
                    let _ = tx.send(Message::Close(None)).await;
                    return;
                }
                None => return,
            },
            message = rx.next() => {
                let typed = match message {
                    Some(Ok(Message::Binary(bytes))) => Some(bytes.to_vec()),
                    Some(Ok(Message::Text(text))) => {
                        match serde_json::from_str::<TerminalMessage>(&text) {
                            Ok(TerminalMessage::Input { data }) => Some(data.into_bytes()),
                            Ok(TerminalMessage::Resize { rows, cols }) => {
                                if let Ok(size) = (TtySizeWire { rows, cols }).checked("size") {
                                    let _ = service.resize(&caller.0, &sid, pid, size).await;
                                }
                                None
                            }
                            Ok(TerminalMessage::Signal { signal }) => {
                                if let Ok(n) = (SignalRequest { signal }).number() {
                                    let _ = service.signal(&caller.0, &sid, pid, n).await;
                                }
                                None
                            }
                            Err(e) => {
                                let body = serde_json::json!({"type": "error", "message": e.to_string()});
                                let _ = tx.send(Message::Text(body.to_string().into())).await;
                                None
                            }
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                };
                if let Some(bytes) = typed {
                    // A refusal means it ended or its sandbox went: the follower brings the end.
                    let _ = service.write_stdin(&caller.0, &sid, pid, bytes).await;
                }
            }
        }
    }
}
