//! Piston v2's `/api/v2/connect` WebSocket: an `init` (the execute fields) within a second, then
//! the job's `runtime`, `stage`, `data` and `exit` messages as its events come, and the client's
//! stdin (`data`), `signal` and `kill` handed to the job service's live controls, the same ones
//! the code-runner face's live jobs use. Every frame is JSON text; misuse closes the socket with
//! Piston's codes (4000–4005), the end with 4999. A socket that goes away takes its job with it.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use kiln_core::control::StdinRefusal;
use kiln_core::{ControlError, JobEvent, JobId, JobOutcome, OutputStream, Stage, Verdict};
use kiln_engine::Status;
use serde::{Deserialize, Serialize};

use super::handlers::submit;
use super::project;
use super::wire::{PistonError, PistonExecute, PistonMessage};
use crate::auth::Caller;
use crate::state::AppState;

/// How long a socket may take to send its `init`.
const INIT_TIMEOUT: Duration = Duration::from_secs(1);

const ALREADY_INITIALIZED: (u16, &str) = (4000, "Already Initialized");
const INIT_TIMED_OUT: (u16, &str) = (4001, "Initialization Timeout");
const NOTIFIED_ERROR: (u16, &str) = (4002, "Notified Error");
const NOT_INITIALIZED: (u16, &str) = (4003, "Not yet Initialized");
const STDIN_ONLY: (u16, &str) = (4004, "Can only write to stdin");
const INVALID_SIGNAL: (u16, &str) = (4005, "Invalid signal");
const JOB_COMPLETED: (u16, &str) = (4999, "Job Completed");

/// The signal names Piston accepts.
const SIGNALS: &[&str] = &[
    "SIGABRT",
    "SIGALRM",
    "SIGBUS",
    "SIGCHLD",
    "SIGCLD",
    "SIGCONT",
    "SIGEMT",
    "SIGFPE",
    "SIGHUP",
    "SIGILL",
    "SIGINFO",
    "SIGINT",
    "SIGIO",
    "SIGIOT",
    "SIGKILL",
    "SIGLOST",
    "SIGPIPE",
    "SIGPOLL",
    "SIGPROF",
    "SIGPWR",
    "SIGQUIT",
    "SIGSEGV",
    "SIGSTKFLT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGSYS",
    "SIGTERM",
    "SIGTRAP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGUNUSED",
    "SIGURG",
    "SIGUSR1",
    "SIGUSR2",
    "SIGVTALRM",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGWINCH",
];

/// Signals whose default action does not end a process: the job service can only end a job, so
/// these are accepted and have no effect.
const HARMLESS: &[&str] = &[
    "SIGCHLD", "SIGCLD", "SIGCONT", "SIGURG", "SIGWINCH", "SIGSTOP", "SIGTSTP", "SIGTTIN",
    "SIGTTOU", "SIGINFO",
];

/// A client's message.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    /// The submission (`stdin` is ignored: it comes as `data`).
    Init(Box<PistonExecute>),
    /// Bytes for a stream; only `stdin` may be written.
    Data { stream: String, data: String },
    /// A signal by name.
    Signal { signal: String },
    /// Ends the job.
    Kill,
}

/// A server's message.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerMessage<'a> {
    Runtime {
        language: &'a str,
        version: &'a str,
    },
    Stage {
        stage: &'a str,
    },
    Data {
        stream: &'a str,
        data: &'a str,
    },
    Exit {
        stage: &'a str,
        code: Option<i32>,
        signal: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Error {
        message: &'a str,
    },
}

type Tx = SplitSink<WebSocket, Message>;

/// `GET /api/v2/connect` (WebSocket).
#[utoipa::path(get, path = "/api/v2/connect", tag = "piston", security(("bearer" = [])),
    responses((status = 101, description = "Piston's interactive protocol: `init`, then `runtime`, `stage`, `data` and `exit` messages; the client's `data` (stdin), `signal` and `kill`; closed with 4999 when the job is over, 4000–4005 on misuse"),
        (status = 400, body = PistonMessage, description = "Not a WebSocket request"),
        (status = 401, body = PistonMessage)))]
pub async fn connect(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, PistonError> {
    let ws = ws.map_err(|e| PistonError::bad(e.body_text()))?;
    Ok(ws.on_upgrade(move |socket| session(socket, state, caller)))
}

async fn send(tx: &mut Tx, m: &ServerMessage<'_>) -> bool {
    let text = serde_json::to_string(m).expect("server messages always serialise");
    tx.send(Message::Text(text.into())).await.is_ok()
}

async fn close(tx: &mut Tx, (code, reason): (u16, &str)) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tx.send(Message::Close(Some(frame))).await;
    let _ = tx.close().await;
}

/// Tells the client what went wrong, then closes with 4002.
async fn notify(tx: &mut Tx, message: &str) {
    send(tx, &ServerMessage::Error { message }).await;
    close(tx, NOTIFIED_ERROR).await;
}

/// The next client message, or why there is none: `Err(None)` for a socket that went away,
/// `Err(Some(text))` for a frame that is not one of Piston's messages.
async fn next_message(rx: &mut SplitStream<WebSocket>) -> Result<ClientMessage, Option<String>> {
    loop {
        match rx.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).map_err(|e| Some(e.to_string()))
            }
            Some(Ok(Message::Binary(_))) => {
                return Err(Some("messages are JSON text frames".into()))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(None),
        }
    }
}

async fn session(socket: WebSocket, state: AppState, caller: Caller) {
    let (mut tx, mut rx) = socket.split();
    let init = match tokio::time::timeout(INIT_TIMEOUT, next_message(&mut rx)).await {
        Err(_) => return close(&mut tx, INIT_TIMED_OUT).await,
        Ok(Ok(ClientMessage::Init(init))) => init,
        Ok(Ok(_)) => return close(&mut tx, NOT_INITIALIZED).await,
        Ok(Err(Some(e))) => return notify(&mut tx, &e).await,
        Ok(Err(None)) => return,
    };
    let id = match start(&state, &caller, *init) {
        Ok(id) => id,
        Err(e) => return notify(&mut tx, &e.message).await,
    };
    let Some(record) = state.service.record_of(&caller.0, &id).await else {
        return notify(&mut tx, "the job is gone").await;
    };
    let language = super::handlers::piston_language(&state, &record.language);
    let runtime = ServerMessage::Runtime {
        language: &language,
        version: &record.version,
    };
    if !send(&mut tx, &runtime).await {
        return kill(&state, &caller, &id).await;
    }
    let mut events = state.service.events(&id, 0);
    let mut compiling = false;
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else {
                    return close(&mut tx, JOB_COMPLETED).await;
                };
                match &event.event {
                    JobEvent::Stage(Stage::Queued) => continue,
                    JobEvent::Stage(Stage::Compiling) => {
                        compiling = true;
                        send(&mut tx, &ServerMessage::Stage { stage: "compile" }).await;
                    }
                    JobEvent::Stage(Stage::Running) => {
                        if compiling {
                            // The run stage starts only after a clean compile.
                            let exit = ServerMessage::Exit {
                                stage: "compile",
                                code: Some(0),
                                signal: None,
                                error: None,
                            };
                            send(&mut tx, &exit).await;
                        }
                        send(&mut tx, &ServerMessage::Stage { stage: "run" }).await;
                    }
                    JobEvent::Output { stream, bytes, .. } => {
                        // The compiler's two streams come as one; its diagnostics are stderr's.
                        let stream = match stream {
                            OutputStream::Stdout => "stdout",
                            OutputStream::Stderr | OutputStream::Compile => "stderr",
                        };
                        let data = String::from_utf8_lossy(bytes);
                        if !send(&mut tx, &ServerMessage::Data { stream, data: &data }).await {
                            return kill(&state, &caller, &id).await;
                        }
                    }
                    // Piston has no artifacts (and Kiln keeps none for its jobs).
                    JobEvent::Artifact(_) => {}
                    JobEvent::Finished(outcome) => {
                        send(&mut tx, &exit_of(outcome)).await;
                        return close(&mut tx, JOB_COMPLETED).await;
                    }
                }
            }
            message = next_message(&mut rx) => {
                let refusal = match message {
                    Ok(ClientMessage::Init(_)) => Some(ALREADY_INITIALIZED),
                    Ok(ClientMessage::Data { stream, data }) if stream == "stdin" => {
                        match state.service.stdin(&caller.0, &id, data.into_bytes()) {
                            Err(ControlError::Stdin(
                                e @ (StdinRefusal::Rate
                                | StdinRefusal::Pending { .. }
                                | StdinRefusal::TooLarge { .. }),
                            )) => {
                                // Dropping input silently would hand the program a different
                                // stdin than was sent.
                                kill(&state, &caller, &id).await;
                                return notify(&mut tx, &format!("stdin refused: {e}")).await;
                            }
                            // Over, or its stdin closed: its end is on its way as an event.
                            _ => None,
                        }
                    }
                    Ok(ClientMessage::Data { .. }) => Some(STDIN_ONLY),
                    Ok(ClientMessage::Signal { signal }) if SIGNALS.contains(&signal.as_str()) => {
                        if !HARMLESS.contains(&signal.as_str()) {
                            kill(&state, &caller, &id).await;
                        }
                        None
                    }
                    Ok(ClientMessage::Signal { .. }) => Some(INVALID_SIGNAL),
                    Ok(ClientMessage::Kill) => {
                        kill(&state, &caller, &id).await;
                        None
                    }
                    Err(Some(e)) => {
                        kill(&state, &caller, &id).await;
                        return notify(&mut tx, &e).await;
                    }
                    Err(None) => return kill(&state, &caller, &id).await,
                };
                if let Some(code) = refusal {
                    kill(&state, &caller, &id).await;
                    return close(&mut tx, code).await;
                }
            }
        }
    }
}

/// Checks and admits an `init`: a live job, its stdin open for the client's messages.
fn start(state: &AppState, caller: &Caller, init: PistonExecute) -> Result<JobId, PistonError> {
    let mut sub = project::submission(init, state.service.catalog(), true)?;
    submit(state, caller, &mut sub)
}

async fn kill(state: &AppState, caller: &Caller, id: &JobId) {
    // A job that is over already is killed all the same: nothing happens.
    let _ = state.service.kill(&caller.0, id).await;
}

/// The `exit` message of a finished job: the run's, or the compiler's when it failed.
fn exit_of(o: &JobOutcome) -> ServerMessage<'static> {
    match (&o.run, &o.compile) {
        (Some(run), _) => ServerMessage::Exit {
            stage: "run",
            code: run.exit_code,
            signal: run.signal.clone(),
            error: None,
        },
        (None, Some(compile)) => ServerMessage::Exit {
            stage: "compile",
            code: compile.exit_code,
            signal: compile.signal.clone(),
            error: None,
        },
        (None, None) => ServerMessage::Exit {
            stage: "run",
            code: None,
            signal: matches!(o.verdict, Verdict::Run(Status::Killed)).then(|| "SIGKILL".into()),
            error: Some(o.message.clone().unwrap_or_else(|| "did not run".into())),
        },
    }
}
