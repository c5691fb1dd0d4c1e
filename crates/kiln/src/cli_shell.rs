//! `kiln sandbox shell`: a shell in a sandbox on this terminal. The shell runs on a terminal of
//! the sandbox's own, attached over its WebSocket; this terminal is put in raw mode (restored on
//! the way out) so every key goes to the sandbox, and its size follows this one's.

use std::io::Write;
use std::os::fd::AsFd;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use crate::cli_http::Client;
use crate::cli_sandbox::{connect_terminal, next_message, send, text};

/// Puts stdin's terminal in raw mode until dropped.
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enter() -> Self {
        let stdin = std::io::stdin();
        let Ok(saved) = rustix::termios::tcgetattr(stdin.as_fd()) else {
            return Self(None);
        };
        let mut raw = saved.clone();
        raw.make_raw();
        let set =
            rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, &raw);
        Self(set.ok().map(|()| saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin().as_fd(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}

fn size() -> (u16, u16) {
    rustix::termios::tcgetwinsize(std::io::stdout().as_fd())
        .ok()
        .filter(|w| w.ws_row > 0 && w.ws_col > 0)
        .map_or((24, 80), |w| (w.ws_row, w.ws_col))
}

/// Runs `shell` in sandbox `id` on this terminal; returns its exit code.
pub async fn shell(c: &Client, id: &str, shell: &str) -> Result<i32> {
    let (rows, cols) = size();
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
    let p = c
        .json(
            "POST",
            &format!("/v1/sandboxes/{id}/processes"),
            Some(json!({"argv": [shell, "-i"], "tty": {"rows": rows, "cols": cols}, "env": {"TERM": term}})),
        )
        .await?;
    let pid = p["processId"]
        .as_u64()
        .context("the server gave no process id")?;
    let mut ws =
        connect_terminal(c, &format!("/v1/sandboxes/{id}/processes/{pid}/terminal")).await?;
    let _raw = RawMode::enter();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("watch the terminal's size")?;
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 4096];
    let mut stdin_open = true;
    loop {
        tokio::select! {
            m = next_message(&mut ws) => match m {
                Some(Message::Binary(data)) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&data)?;
                    out.flush()?;
                }
                Some(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    if v["type"] == "exit" {
                        return Ok(v["exitCode"].as_i64().map_or(128 + 9, |c| c as i32));
                    }
                }
                Some(_) => {}
                None => return Ok(1),
            },
            n = stdin.read(&mut buf), if stdin_open => match n {
                Ok(0) | Err(_) => {
                    // No more input (a pipe): the shell reads the end of file as ^D would give.
                    stdin_open = false;
                    send(&mut ws, text(json!({"type": "input", "data": "\u{4}"}))).await?;
                }
                Ok(n) => send(&mut ws, Message::Binary(buf[..n].to_vec().into())).await?,
            },
            _ = winch.recv() => {
                let (rows, cols) = size();
                send(&mut ws, text(json!({"type": "resize", "rows": rows, "cols": cols}))).await?;
            }
        }
    }
}
