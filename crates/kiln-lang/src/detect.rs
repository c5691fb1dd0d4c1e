//! Finding a toolchain and reading its real version. The command runs on the host with the same
//! `PATH` and a clean environment, because sandboxes see the host's `/usr` read-only: the binary
//! found here is the one a sandbox runs.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::definition::VersionSpec;

/// The `PATH` programs get inside a sandbox.
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How long a version command may take (a JVM or R can take a while to start).
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a toolchain is not usable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DetectError {
    /// The command is not on the sandbox's PATH.
    #[error("{0} is not installed")]
    NotInstalled(String),
    /// The command ran but its output had no version.
    #[error("{command} printed no version matching {regex:?}: {output:?}")]
    NoVersion {
        /// The command.
        command: String,
        /// The regex.
        regex: String,
        /// What it printed (the start of it).
        output: String,
    },
    /// The command could not be run or did not finish.
    #[error("{command}: {reason}")]
    Failed {
        /// The command.
        command: String,
        /// What went wrong.
        reason: String,
    },
}

/// Finds `program` on [`SANDBOX_PATH`].
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    SANDBOX_PATH
        .split(':')
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
}

/// Runs the version command and extracts the version.
pub fn version(spec: &VersionSpec) -> Result<String, DetectError> {
    let program = &spec.command[0];
    let path = which(program).ok_or_else(|| DetectError::NotInstalled(program.clone()))?;
    let command = spec.command.join(" ");
    let failed = |reason: String| DetectError::Failed {
        command: command.clone(),
        reason,
    };
    let mut child = Command::new(&path)
        .args(&spec.command[1..])
        .env_clear()
        .env("PATH", SANDBOX_PATH)
        .env("HOME", "/tmp")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > VERSION_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!("no answer in {VERSION_TIMEOUT:?}")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(failed(e.to_string())),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let re = regex::Regex::new(&spec.regex).map_err(|e| failed(e.to_string()))?;
    re.captures(&text)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_string())
        .ok_or_else(|| DetectError::NoVersion {
            command,
            regex: spec.regex.clone(),
            output: text.chars().take(200).collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_reads_a_version() {
        assert!(which("sh").is_some());
        assert!(which("no-such-toolchain-kiln").is_none());
        let spec = VersionSpec {
            command: vec!["sh".into(), "-c".into(), "echo tool 1.2.3".into()],
            regex: r"tool (\d+\.\d+\.\d+)".into(),
        };
        assert_eq!(version(&spec).unwrap(), "1.2.3");
        let missing = VersionSpec {
            command: vec!["no-such-toolchain-kiln".into()],
            regex: "(x)".into(),
        };
        assert!(matches!(
            version(&missing),
            Err(DetectError::NotInstalled(_))
        ));
        let silent = VersionSpec {
            command: vec!["true".into()],
            regex: r"(\d+)".into(),
        };
        assert!(matches!(
            version(&silent),
            Err(DetectError::NoVersion { .. })
        ));
    }
}
