//! The one verdict every run ends with, and the facts that go with it.

use serde::{Deserialize, Serialize};

/// How a run ended. Exactly one per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Exited with code 0.
    Ok,
    /// Exited with another code.
    NonzeroExit,
    /// Killed by a signal Kiln did not send.
    Signaled,
    /// Used more CPU time than allowed.
    TimeLimit,
    /// Ran longer than the wall-clock limit.
    WallTimeLimit,
    /// Neither wrote output nor got input for too long.
    IdleTimeLimit,
    /// Ran out of memory.
    MemoryLimit,
    /// Wrote more output than allowed.
    OutputLimit,
    /// The compile stage failed.
    CompileError,
    /// A client killed it.
    Killed,
    /// Kiln failed.
    InternalError,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NonzeroExit => "nonzero_exit",
            Status::Signaled => "signaled",
            Status::TimeLimit => "time_limit",
            Status::WallTimeLimit => "wall_time_limit",
            Status::IdleTimeLimit => "idle_time_limit",
            Status::MemoryLimit => "memory_limit",
            Status::OutputLimit => "output_limit",
            Status::CompileError => "compile_error",
            Status::Killed => "killed",
            Status::InternalError => "internal_error",
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// The verdict.
    pub status: Status,
    /// The exit code, when the program exited.
    pub exit_code: Option<i32>,
    /// The signal name (`SIGKILL`), when a signal ended it.
    pub signal: Option<String>,
    /// CPU time of everything the run started, in ms.
    pub cpu_ms: u64,
    /// Wall-clock time from spawn to exit, in ms.
    pub wall_ms: u64,
    /// Peak memory of the sandbox, in bytes.
    pub memory_bytes: u64,
    /// Whether output was cut at the cap.
    pub truncated: bool,
    /// What went wrong, for `internal_error` and spawn failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The name of a signal number (`SIGKILL`), or `SIG<n>`.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("SIG{sig}"),
    };
    name.to_string()
}

/// Why the engine itself ended a run, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// CPU clock.
    Cpu,
    /// Wall clock.
    Wall,
    /// Idle clock.
    Idle,
    /// Output cap.
    Output,
    /// A client.
    Client,
}

/// Everything the verdict is decided from.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Exit code.
    pub code: Option<i32>,
    /// Terminating signal.
    pub signal: Option<i32>,
    /// Why the engine killed it, if it did.
    pub killed_for: Option<KillReason>,
    /// OOM kills in the sandbox during the run.
    pub oom_kills: u64,
    /// The warden died before it reported the exit (so code and signal are unknown).
    pub warden_lost: bool,
}

/// Decides the one status. The engine's own reason wins, then the kernel's memory and CPU limits,
/// then how the program ended.
pub fn decide(o: &Outcome) -> Status {
    match o.killed_for {
        Some(KillReason::Client) => return Status::Killed,
        Some(KillReason::Output) => return Status::OutputLimit,
        Some(KillReason::Cpu) => return Status::TimeLimit,
        Some(KillReason::Wall) => return Status::WallTimeLimit,
        Some(KillReason::Idle) => return Status::IdleTimeLimit,
        None => {}
    }
    if o.oom_kills > 0 && o.code != Some(0) {
        return Status::MemoryLimit;
    }
    if o.warden_lost {
        return Status::InternalError;
    }
    match (o.code, o.signal) {
        (_, Some(libc::SIGXCPU)) => Status::TimeLimit,
        (Some(0), _) => Status::Ok,
        (Some(_), _) => Status::NonzeroExit,
        (None, Some(_)) => Status::Signaled,
        (None, None) => Status::InternalError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(code: Option<i32>, signal: Option<i32>) -> Outcome {
        Outcome {
            code,
            signal,
            killed_for: None,
            oom_kills: 0,
            warden_lost: false,
        }
    }

    #[test]
    fn every_status_is_decided() {
        assert_eq!(decide(&outcome(Some(0), None)), Status::Ok);
        assert_eq!(decide(&outcome(Some(3), None)), Status::NonzeroExit);
        assert_eq!(
            decide(&outcome(None, Some(libc::SIGSEGV))),
            Status::Signaled
        );
        assert_eq!(
            decide(&outcome(None, Some(libc::SIGXCPU))),
            Status::TimeLimit
        );
        let oom = Outcome {
            oom_kills: 1,
            ..outcome(None, Some(libc::SIGKILL))
        };
        assert_eq!(decide(&oom), Status::MemoryLimit);
        // The warden killed by the OOM killer too: still the program's memory.
        let lost = Outcome {
            warden_lost: true,
            ..outcome(None, None)
        };
        assert_eq!(decide(&lost), Status::InternalError);
        assert_eq!(
            decide(&Outcome {
                oom_kills: 2,
                ..lost
            }),
            Status::MemoryLimit
        );
        for (reason, status) in [
            (KillReason::Client, Status::Killed),
            (KillReason::Output, Status::OutputLimit),
            (KillReason::Cpu, Status::TimeLimit),
            (KillReason::Wall, Status::WallTimeLimit),
            (KillReason::Idle, Status::IdleTimeLimit),
        ] {
            let o = Outcome {
                killed_for: Some(reason),
                ..outcome(None, Some(libc::SIGKILL))
            };
            assert_eq!(decide(&o), status);
        }
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(64), "SIG64");
    }

    #[test]
    fn status_serializes_snake_case() {
        let s = serde_json::to_string(&Status::WallTimeLimit).unwrap();
        assert_eq!(s, "\"wall_time_limit\"");
        assert_eq!(Status::MemoryLimit.as_str(), "memory_limit");
    }
}
