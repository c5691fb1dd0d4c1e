//! `kiln sandbox …`: long-lived sandboxes of a running `kiln serve`, from the command line.
//! Every command takes `--json` to print the server's answer as it is.

use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::cli_http::{error_message, read_sse, Client};

/// `kiln sandbox`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// The server's URL.
    #[arg(
        long,
        env = "KILN_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// The API token.
    #[arg(long, env = "KILN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print the server's JSON answer.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: SandboxCommand,
}

#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// Make a sandbox; prints its id.
    Create {
        /// A language whose toolchain it needs.
        #[arg(long)]
        language: Option<String>,
        /// Its lifetime, seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Its memory, MiB.
        #[arg(long)]
        memory_mb: Option<u64>,
        /// Environment, `KEY=value` (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
    },
    /// List your sandboxes.
    Ls,
    /// Run a command in a sandbox (streamed), exiting with its exit code.
    Exec {
        /// The sandbox.
        id: String,
        /// Start it in the background and print its process id.
        #[arg(long)]
        background: bool,
        /// Its working directory.
        #[arg(long)]
        cwd: Option<String>,
        /// Its timeout, ms.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// The program and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        argv: Vec<String>,
    },
    /// List a sandbox's processes.
    Ps {
        /// The sandbox.
        id: String,
    },
    /// Print a process's output (`--follow`: then follow it to its end).
    Logs {
        /// The sandbox.
        id: String,
        /// The process id.
        pid: u64,
        /// Follow it live.
        #[arg(long, short)]
        follow: bool,
    },
    /// Kill a process and its whole tree, or send it a signal.
    Kill {
        /// The sandbox.
        id: String,
        /// The process id.
        pid: u64,
        /// A signal instead of the kill (`TERM`, `INT`, ...).
        #[arg(long, short)]
        signal: Option<String>,
    },
    /// Copy a file in or out: `kiln sandbox cp ./local ID:/path` or `cp ID:/path ./local`.
    Cp {
        /// From.
        src: String,
        /// To.
        dst: String,
    },
    /// Open a shell in the sandbox in this terminal.
    Shell {
        /// The sandbox.
        id: String,
        /// The shell.
        #[arg(long, default_value = "/bin/bash")]
        shell: String,
    },
    /// Delete sandboxes.
    Rm {
        /// The sandboxes.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// Runs `kiln sandbox`; returns the exit code.
pub async fn run(args: SandboxArgs) -> i32 {
    match dispatch(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln sandbox: {e:#}");
            1
        }
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn env_map(env: &[String]) -> Result<serde_json::Map<String, Value>> {
    env.iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("--env {kv:?} is not KEY=value"))?;
            Ok((k.to_string(), Value::String(v.to_string())))
        })
        .collect()
}

async fn dispatch(args: SandboxArgs) -> Result<i32> {
    let c = Client::new(&args.server, args.token.clone())?;
    let as_json = args.json;
    match args.command {
        SandboxCommand::Create {
            language,
            timeout,
            memory_mb,
            env,
        } => {
            let mut body = json!({"env": env_map(&env)?});
            if let Some(l) = language {
                body["language"] = l.into();
            }
            if let Some(t) = timeout {
                body["timeoutSecs"] = t.into();
            }
            if let Some(m) = memory_mb {
                body["limits"] = json!({ "memoryMb": m });
            }
            let v = c.json("POST", "/v1/sandboxes", Some(body)).await?;
            if as_json {
                print_json(&v);
            } else {
                println!("{}", v["sandboxId"].as_str().unwrap_or_default());
            }
            Ok(0)
        }
        SandboxCommand::Ls => {
            let v = c.json("GET", "/v1/sandboxes", None).await?;
            if as_json {
                print_json(&v);
            } else {
                println!("{:<37} {:>8} {:>9}  LANGUAGE", "ID", "RUNNING", "EXPIRES");
                let now = now_ms();
                for s in v["sandboxes"].as_array().into_iter().flatten() {
                    let left = (s["expiresAtMs"].as_i64().unwrap_or(0) - now).max(0) / 1000;
                    println!(
                        "{:<37} {:>8} {:>8}s  {}",
                        s["sandboxId"].as_str().unwrap_or(""),
                        s["running"],
                        left,
                        s["language"].as_str().unwrap_or("-")
                    );
                }
            }
            Ok(0)
        }
        SandboxCommand::Exec {
            id,
            background,
            cwd,
            timeout_ms,
            argv,
        } => exec(&c, &id, background, cwd, timeout_ms, argv, as_json).await,
        SandboxCommand::Ps { id } => {
            let v = c
                .json("GET", &format!("/v1/sandboxes/{id}/processes"), None)
                .await?;
            if as_json {
                print_json(&v);
            } else {
                println!(
                    "{:>5} {:>6} {:<8} {:>5}  COMMAND",
                    "ID", "PID", "STATE", "EXIT"
                );
                for p in v["processes"].as_array().into_iter().flatten() {
                    let argv: Vec<&str> = p["argv"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    println!(
                        "{:>5} {:>6} {:<8} {:>5}  {}",
                        p["processId"],
                        p["pid"],
                        p["state"].as_str().unwrap_or(""),
                        p["exitCode"].as_i64().map_or("-".into(), |c| c.to_string()),
                        argv.join(" ")
                    );
                }
            }
            Ok(0)
        }
        SandboxCommand::Logs { id, pid, follow } => {
            let path = format!("/v1/sandboxes/{id}/processes/{pid}/logs");
            if !follow {
                let v = c.json("GET", &path, None).await?;
                if as_json {
                    print_json(&v);
                } else {
                    print!("{}", v["stdout"].as_str().unwrap_or(""));
                    eprint!("{}", v["stderr"].as_str().unwrap_or(""));
                }
                return Ok(0);
            }
            stream_events(&c, "GET", &format!("{path}?follow=true"), None, as_json).await
        }
        SandboxCommand::Kill { id, pid, signal } => {
            let v = match signal {
                Some(sig) => {
                    c.json(
                        "POST",
                        &format!("/v1/sandboxes/{id}/processes/{pid}/signal"),
                        Some(json!({ "signal": sig })),
                    )
                    .await?
                }
                None => {
                    c.json(
                        "POST",
                        &format!("/v1/sandboxes/{id}/processes/{pid}/kill"),
                        None,
                    )
                    .await?
                }
            };
            if as_json {
                print_json(&v);
            } else {
                println!("{} {}", v["processId"], v["state"].as_str().unwrap_or(""));
            }
            Ok(0)
        }
        SandboxCommand::Cp { src, dst } => copy(&c, &src, &dst, as_json).await,
        SandboxCommand::Shell { id, shell } => crate::cli_shell::shell(&c, &id, &shell).await,
        SandboxCommand::Rm { ids } => {
            let mut out = Vec::new();
            for id in &ids {
                c.json("DELETE", &format!("/v1/sandboxes/{id}"), None)
                    .await
                    .with_context(|| format!("delete {id}"))?;
                out.push(json!({"sandboxId": id, "deleted": true}));
                if !as_json {
                    println!("{id}");
                }
            }
            if as_json {
                print_json(&Value::Array(out));
            }
            Ok(0)
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn exec(
    c: &Client,
    id: &str,
    background: bool,
    cwd: Option<String>,
    timeout_ms: Option<u64>,
    argv: Vec<String>,
    as_json: bool,
) -> Result<i32> {
    let mut body = json!({ "argv": argv });
    if let Some(cwd) = cwd {
        body["cwd"] = cwd.into();
    }
    if let Some(t) = timeout_ms {
        body["timeoutMs"] = t.into();
    }
    if background {
        let v = c
            .json("POST", &format!("/v1/sandboxes/{id}/processes"), Some(body))
            .await?;
        if as_json {
            print_json(&v);
        } else {
            println!("{}", v["processId"]);
        }
        return Ok(0);
    }
    if as_json {
        let v = c
            .json("POST", &format!("/v1/sandboxes/{id}/exec"), Some(body))
            .await?;
        print_json(&v);
        return Ok(v["exitCode"].as_i64().map_or(1, |c| c as i32));
    }
    stream_events(
        c,
        "POST",
        &format!("/v1/sandboxes/{id}/exec/stream"),
        Some(body),
        false,
    )
    .await
}

/// Streams a process's SSE events to stdout and stderr; the exit code is the process's.
async fn stream_events(
    c: &Client,
    method: &str,
    path: &str,
    body: Option<Value>,
    as_json: bool,
) -> Result<i32> {
    let (ct, bytes) = match body {
        Some(b) => (Some("application/json"), Bytes::from(b.to_string())),
        None => (None, Bytes::new()),
    };
    let answer = c.send(method, path, ct, bytes).await?;
    let status = answer.status();
    if !status.is_success() {
        let raw = answer.into_body().collect().await?.to_bytes();
        let v: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        bail!("{}", error_message(status.as_u16(), &v, &raw));
    }
    let mut code = 1;
    read_sse(answer.into_body(), |name, data| {
        let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        if as_json {
            println!("{}", json!({"event": name, "data": v}));
            if name == "exit" {
                code = v["exitCode"].as_i64().map_or(1, |c| c as i32);
            }
            return Ok(());
        }
        match name {
            "stdout" => {
                let mut out = std::io::stdout().lock();
                out.write_all(v["data"].as_str().unwrap_or("").as_bytes())?;
                out.flush()?;
            }
            "stderr" => {
                let mut err = std::io::stderr().lock();
                err.write_all(v["data"].as_str().unwrap_or("").as_bytes())?;
            }
            "exit" => {
                code = match (v["exitCode"].as_i64(), v["signal"].as_str()) {
                    (Some(c), _) => c as i32,
                    (None, Some(sig)) => {
                        eprintln!("kiln sandbox: ended by {sig} ({})", v["status"]);
                        128 + 9
                    }
                    _ => 1,
                };
            }
            _ => {}
        }
        Ok(())
    })
    .await?;
    Ok(code)
}

/// `ID:/path` → (id, path).
fn remote(spec: &str) -> Option<(&str, &str)> {
    let (id, path) = spec.split_once(':')?;
    id.starts_with("sbx_").then_some((id, path))
}

fn query(path: &str) -> String {
    path.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_./~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn copy(c: &Client, src: &str, dst: &str, as_json: bool) -> Result<i32> {
    match (remote(src), remote(dst)) {
        (None, Some((id, path))) => {
            let mut data = Vec::new();
            tokio::fs::File::open(src)
                .await
                .with_context(|| format!("open {src}"))?
                .read_to_end(&mut data)
                .await?;
            let answer = c
                .send(
                    "PUT",
                    &format!("/v1/sandboxes/{id}/files/content?path={}", query(path)),
                    Some("application/octet-stream"),
                    Bytes::from(data),
                )
                .await?;
            let status = answer.status();
            let raw = answer.into_body().collect().await?.to_bytes();
            let v: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("{}", error_message(status.as_u16(), &v, &raw));
            }
            if as_json {
                print_json(&v);
            }
            Ok(0)
        }
        (Some((id, path)), None) => {
            let answer = c
                .send(
                    "GET",
                    &format!("/v1/sandboxes/{id}/files/content?path={}", query(path)),
                    None,
                    Bytes::new(),
                )
                .await?;
            let status = answer.status();
            if !status.is_success() {
                let raw = answer.into_body().collect().await?.to_bytes();
                let v: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                bail!("{}", error_message(status.as_u16(), &v, &raw));
            }
            let mut out = tokio::fs::File::create(dst)
                .await
                .with_context(|| format!("create {dst}"))?;
            let mut body = answer.into_body();
            let mut written = 0u64;
            while let Some(frame) = body.frame().await {
                if let Some(data) = frame?.data_ref() {
                    tokio::io::AsyncWriteExt::write_all(&mut out, data).await?;
                    written += data.len() as u64;
                }
            }
            // tokio's file hands writes to a blocking thread: without the flush, the last of
            // them may still be in flight when the process exits.
            tokio::io::AsyncWriteExt::flush(&mut out).await?;
            if as_json {
                print_json(&json!({"path": dst, "size": written}));
            }
            Ok(0)
        }
        _ => bail!("one of the two must be ID:/path in a sandbox, the other a local file"),
    }
}

/// Connects the terminal's WebSocket.
pub async fn connect_terminal(
    c: &Client,
    path: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let mut req = c.ws_url(path).into_client_request()?;
    if let Some(b) = c.bearer() {
        req.headers_mut().insert("authorization", b.parse()?);
    }
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .context("open the terminal's WebSocket")?;
    Ok(ws)
}

/// Sends a message, as text or bytes.
pub fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

/// Reads the next message, `None` at the end.
pub async fn next_message<S>(ws: &mut S) -> Option<Message>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    ws.next().await.and_then(Result::ok)
}

/// Sends a message.
pub async fn send<S>(ws: &mut S, m: Message) -> Result<()>
where
    S: SinkExt<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    ws.send(m).await.map_err(Into::into)
}
