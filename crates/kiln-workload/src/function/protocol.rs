//! The host's side of `kiln-call/1` (`docs/functions.md`): a socket pair whose sandbox end
//! becomes the harness's fd 3, frames of a 4-byte big-endian length and a payload, the call
//! written while the answers are read (a 1 MiB argument does not fit a socket's buffer), and the
//! answers checked against the call's id.

use std::os::fd::OwnedFd;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Why the channel could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("the call channel: {step}: {source}")]
pub struct ChannelError {
    /// What was being done.
    pub step: &'static str,
    /// The error.
    #[source]
    pub source: std::io::Error,
}

/// A connected pair: the host's end, and the end the harness gets as fd 3.
pub fn channel() -> Result<(UnixStream, OwnedFd), ChannelError> {
    let err = |step| move |source| ChannelError { step, source };
    let (host, sandbox) = std::os::unix::net::UnixStream::pair().map_err(err("socketpair"))?;
    host.set_nonblocking(true).map_err(err("set nonblocking"))?;
    let host = UnixStream::from_std(host).map_err(err("register"))?;
    Ok((host, OwnedFd::from(sandbox)))
}

/// `payload` as one frame.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A random call id (128 bits, hex).
pub fn call_id() -> String {
    let mut bytes = [0u8; 16];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        // Unreachable on Linux ≥ 3.17; the id only has to differ from what a program prints.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = nanos.to_le_bytes();
    }
    hex::encode(bytes)
}

/// What came back on the channel.
#[derive(Debug, Default)]
pub struct Answers {
    /// The log frames (codelets), in order, as many as were kept.
    pub logs: Vec<Value>,
    /// The result frame with the call's id, if exactly one came.
    pub result: Option<Value>,
    /// Why the channel is not to be believed, if it is not: a frame too large, not JSON, with
    /// another id, or a second result.
    pub corrupted: Option<String>,
}

/// Writes `call` (a whole frame) and reads answers until end-of-file, keeping at most
/// `max_logs` log frames and refusing frames over `max_frame` bytes. Returns once the harness's
/// end is closed (every process holding it has exited).
pub async fn exchange(
    stream: UnixStream,
    call: Vec<u8>,
    id: &str,
    max_frame: usize,
    max_logs: usize,
) -> Answers {
    let (mut read, mut write) = stream.into_split();
    let writer = async move {
        // A harness that dies before reading all of it is the run's verdict, not an error here.
        let _ = write.write_all(&call).await;
        let _ = write.shutdown().await;
    };
    let reader = async {
        let mut answers = Answers::default();
        loop {
            let mut len = [0u8; 4];
            // The end between frames is the clean end; inside a length it is not.
            match read.read(&mut len[..1]).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    answers.corrupted = Some(format!("reading the channel failed: {e}"));
                    break;
                }
            }
            if read.read_exact(&mut len[1..]).await.is_err() {
                answers.corrupted = Some("the channel ended inside a frame".into());
                break;
            }
            let len = u32::from_be_bytes(len) as usize;
            if len > max_frame {
                answers.corrupted = Some(format!(
                    "a frame of {len} bytes is over the limit of {max_frame}"
                ));
                break;
            }
            let mut payload = vec![0u8; len];
            if read.read_exact(&mut payload).await.is_err() {
                answers.corrupted = Some("the channel ended inside a frame".into());
                break;
            }
            if let Err(why) = take(&mut answers, &payload, id, max_logs) {
                answers.corrupted = Some(why);
                break;
            }
        }
        answers
    };
    let ((), answers) = tokio::join!(writer, reader);
    answers
}

fn take(answers: &mut Answers, payload: &[u8], id: &str, max_logs: usize) -> Result<(), String> {
    let value: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        // JavaScript's JSON escapes a lone surrogate as `\udXXX`, which is no Unicode text: it
        // is read as U+FFFD rather than losing the frame.
        Err(e) => serde_json::from_slice(&without_lone_surrogates(payload))
            .map_err(|_| format!("a frame is not JSON: {e}"))?,
    };
    match value.get("type").and_then(Value::as_str) {
        Some("log") => {
            if answers.logs.len() < max_logs {
                answers.logs.push(value);
            }
            Ok(())
        }
        Some("result") => {
            if value.get("id").and_then(Value::as_str) != Some(id) {
                return Err("a result frame carries another call's id".into());
            }
            if answers.result.is_some() {
                return Err("a second result frame came".into());
            }
            answers.result = Some(value);
            Ok(())
        }
        other => Err(format!("a frame of unknown type {other:?}")),
    }
}

/// `payload` with every `\u` escape of a surrogate that is not half of a pair replaced by
/// `\ufffd` (an escaped backslash is skipped, so the text `\\ud800` stays as it is).
fn without_lone_surrogates(payload: &[u8]) -> Vec<u8> {
    let escape = |at: usize| -> Option<u16> {
        let hex = payload.get(at + 2..at + 6)?;
        if payload.get(at..at + 2)? != b"\\u" {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let mut out = Vec::with_capacity(payload.len());
    let mut i = 0;
    while i < payload.len() {
        if payload[i] != b'\\' {
            out.push(payload[i]);
            i += 1;
            continue;
        }
        match escape(i) {
            Some(0xD800..=0xDBFF)
                if escape(i + 6).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) =>
            {
                out.extend_from_slice(&payload[i..i + 12]);
                i += 12;
            }
            Some(0xD800..=0xDFFF) => {
                out.extend_from_slice(b"\\ufffd");
                i += 6;
            }
            _ => {
                let end = (i + 2).min(payload.len());
                out.extend_from_slice(&payload[i..end]);
                i = end;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(frames: Vec<Vec<u8>>) -> Answers {
        let (host, sandbox) = channel().expect("channel");
        let sandbox = std::os::unix::net::UnixStream::from(sandbox);
        let peer = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut s = sandbox;
            let mut call = Vec::new();
            s.read_to_end(&mut call).expect("read call");
            for f in frames {
                s.write_all(&f).expect("write");
            }
            call
        });
        let big = vec![b'x'; 2 << 20];
        let answers = exchange(host, frame(&big), "abc", 1 << 20, 2).await;
        let call = peer.join().expect("peer");
        assert_eq!(call.len(), big.len() + 4, "the whole call arrives");
        answers
    }

    #[tokio::test]
    async fn a_result_with_the_calls_id_is_taken_and_logs_are_capped() {
        let log = frame(br#"{"type":"log","level":"info","message":"m"}"#);
        let result = frame(br#"{"type":"result","id":"abc","success":true,"result":1}"#);
        let a = answer(vec![log.clone(), log.clone(), log, result]).await;
        assert!(a.corrupted.is_none(), "{:?}", a.corrupted);
        assert_eq!(a.logs.len(), 2);
        assert_eq!(a.result.expect("result")["result"], 1);
    }

    #[tokio::test]
    async fn forged_second_and_foreign_results_corrupt_the_channel() {
        let ok = frame(br#"{"type":"result","id":"abc","success":true}"#);
        let a = answer(vec![ok.clone(), ok]).await;
        assert!(a.corrupted.expect("corrupted").contains("second"));
        let other = frame(br#"{"type":"result","id":"zzz","success":true}"#);
        let a = answer(vec![other]).await;
        assert!(a.corrupted.expect("corrupted").contains("another"));
        let a = answer(vec![b"\xff\xff\xff\xff".to_vec()]).await;
        assert!(a.corrupted.expect("corrupted").contains("over the limit"));
        let a = answer(vec![frame(b"not json")]).await;
        assert!(a.corrupted.expect("corrupted").contains("not JSON"));
        let lone = frame(br#"{"type":"result","id":"abc","success":true,"result":"a\ud800b\\ud800\ud83d\ude00"}"#);
        let a = answer(vec![lone]).await;
        assert!(a.corrupted.is_none(), "{:?}", a.corrupted);
        assert_eq!(
            a.result.expect("result")["result"],
            "a\u{fffd}b\\ud800\u{1f600}"
        );
        let a = answer(vec![b"\x00\x00".to_vec()]).await;
        assert!(a.corrupted.expect("corrupted").contains("inside a frame"));
    }
}
