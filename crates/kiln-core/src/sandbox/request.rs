//! What a client asks of a sandbox, as any face hands it to the domain, and the checks that turn
//! it into what runs or into refusals naming each field.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{SandboxConfig, SandboxLimits};
use crate::admission::{check_file_names, AdmissionRules, FieldError, FileInput};

/// Limits a sandbox asks for; unset ones take the server's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SandboxLimitRequest {
    /// Memory, MiB.
    pub memory_mb: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// Size of `/workspace`, MiB.
    pub disk_mb: Option<u64>,
    /// CPUs' worth of time.
    pub cpus: Option<f64>,
}

/// A request for a sandbox.
#[derive(Debug, Clone, Default)]
pub struct SandboxRequest {
    /// A language whose toolchain the sandbox needs (its extra mounts), if any; every
    /// sandbox sees the host's system directories.
    pub language: Option<String>,
    /// Environment every command gets.
    pub env: BTreeMap<String, String>,
    /// Where commands run unless they say otherwise (default `/workspace`).
    pub cwd: Option<String>,
    /// What it may use.
    pub limits: SandboxLimitRequest,
    /// How long it lives, seconds.
    pub lifetime_secs: Option<u64>,
    /// How long it may go without a call, seconds.
    pub idle_timeout_secs: Option<u64>,
    /// Files written to `/workspace` before it is handed over.
    pub files: Vec<FileInput>,
    /// The owner's labels.
    pub metadata: BTreeMap<String, String>,
}

/// A command to run to completion.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// The program and its arguments (a shell command line is `["/bin/sh", "-c", line]`).
    pub argv: Vec<String>,
    /// Where it runs; default the sandbox's.
    pub cwd: Option<String>,
    /// Environment over the sandbox's.
    pub env: BTreeMap<String, String>,
    /// All of its stdin (then EOF).
    pub stdin: Vec<u8>,
    /// How long it may run.
    pub timeout_ms: Option<u64>,
}

/// A checked sandbox request.
#[derive(Debug, Clone)]
pub(crate) struct SandboxPlan {
    pub(crate) language: Option<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: String,
    pub(crate) limits: SandboxLimits,
    pub(crate) lifetime: Duration,
    pub(crate) idle: Duration,
    pub(crate) files: Vec<FileInput>,
    pub(crate) metadata: BTreeMap<String, String>,
}

/// `value` (or `default`), refused when 0 or over `max`.
pub(crate) fn bounded(
    value: Option<u64>,
    default: u64,
    max: u64,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> u64 {
    match value {
        Some(0) => {
            errors.push(FieldError::new(field, "must be at least 1"));
            default
        }
        Some(v) if v > max => {
            errors.push(FieldError::new(field, format!("must be at most {max}")));
            default
        }
        Some(v) => v,
        None => default,
    }
}

/// An environment variable's name and value: a name of letters, digits and `_` not starting
/// with a digit (what a shell can export), a value without NUL.
pub(crate) fn check_env(
    env: &BTreeMap<String, String>,
    max: usize,
    field: &str,
    errors: &mut Vec<FieldError>,
) {
    if env.len() > max {
        errors.push(FieldError::new(
            field,
            format!("must hold at most {max} variables"),
        ));
    }
    for (name, value) in env {
        let path = format!("{field}.{name}");
        let good_name = !name.is_empty()
            && name.len() <= 255
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !good_name {
            errors.push(FieldError::new(
                path,
                "names must be 1-255 letters, digits or _, not starting with a digit",
            ));
        } else if value.contains('\0') {
            errors.push(FieldError::new(path, "must not contain a NUL character"));
        }
    }
}

/// A working directory: absolute, normal (no `.`, `..` or empty components), no NUL.
pub(crate) fn check_cwd(cwd: &str, field: &str, errors: &mut Vec<FieldError>) {
    let normal = cwd.starts_with('/')
        && cwd.len() <= 4096
        && !cwd.contains('\0')
        && (cwd == "/"
            || cwd[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."));
    if !normal {
        errors.push(FieldError::new(
            field,
            "must be an absolute path inside the sandbox without `.`, `..` or empty components",
        ));
    }
}

impl SandboxRequest {
    /// Checks the request against the server's rules.
    pub(crate) fn plan(
        self,
        cfg: &SandboxConfig,
        rules: &AdmissionRules,
    ) -> Result<SandboxPlan, Vec<FieldError>> {
        let mut errors = Vec::new();
        let (d, m) = (&cfg.default_limits, &cfg.max_limits);
        let l = &self.limits;
        let cpus = match (l.cpus, m.cpus) {
            (Some(c), _) if !(c.is_finite() && c >= 0.01) => {
                errors.push(FieldError::new(
                    "limits.cpus",
                    "must be a number of at least 0.01",
                ));
                d.cpus
            }
            (Some(c), Some(max)) if c > max => {
                errors.push(FieldError::new(
                    "limits.cpus",
                    format!("must be at most {max}"),
                ));
                d.cpus
            }
            (Some(c), _) => Some(c),
            (None, _) => d.cpus,
        };
        let limits = SandboxLimits {
            memory_mb: bounded(
                l.memory_mb,
                d.memory_mb,
                m.memory_mb,
                "limits.memoryMb",
                &mut errors,
            ),
            pids: bounded(l.pids, d.pids, m.pids, "limits.pids", &mut errors),
            disk_mb: bounded(
                l.disk_mb,
                d.disk_mb,
                m.disk_mb,
                "limits.diskMb",
                &mut errors,
            ),
            cpus,
        };
        let max_life = cfg.max_lifetime.as_secs();
        let lifetime = bounded(
            self.lifetime_secs,
            cfg.default_lifetime.as_secs(),
            max_life,
            "timeoutSecs",
            &mut errors,
        );
        let idle = bounded(
            self.idle_timeout_secs,
            cfg.default_idle.as_secs(),
            max_life,
            "idleTimeoutSecs",
            &mut errors,
        );
        check_env(&self.env, cfg.max_env, "env", &mut errors);
        let cwd = self.cwd.unwrap_or_else(|| "/workspace".into());
        check_cwd(&cwd, "cwd", &mut errors);
        check_file_names(rules, &self.files, &mut errors);
        let bytes: usize = self.files.iter().map(|f| f.content.len()).sum();
        if bytes > rules.max_files_bytes {
            errors.push(FieldError::new(
                "files",
                format!(
                    "total {bytes} bytes, over the {}-byte limit",
                    rules.max_files_bytes
                ),
            ));
        }
        if self.metadata.len() > cfg.max_metadata {
            errors.push(FieldError::new(
                "metadata",
                format!("must hold at most {} entries", cfg.max_metadata),
            ));
        }
        for (k, v) in &self.metadata {
            let max = cfg.max_metadata_bytes;
            if k.is_empty() || k.len() > max || v.len() > max {
                errors.push(FieldError::new(
                    format!("metadata.{k}"),
                    format!("keys must be 1-{max} bytes and values at most {max}"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(SandboxPlan {
            language: self.language,
            env: self.env,
            cwd,
            limits,
            lifetime: Duration::from_secs(lifetime),
            idle: Duration::from_secs(idle),
            files: self.files,
            metadata: self.metadata,
        })
    }
}

impl ExecRequest {
    /// Checks the command; returns its timeout.
    pub(crate) fn check(&self, cfg: &SandboxConfig) -> Result<Duration, Vec<FieldError>> {
        let mut errors = self.field_errors(cfg);
        let timeout = bounded(
            self.timeout_ms,
            cfg.default_exec_timeout.as_millis() as u64,
            cfg.max_exec_timeout.as_millis() as u64,
            "timeoutMs",
            &mut errors,
        );
        if errors.is_empty() {
            Ok(Duration::from_millis(timeout))
        } else {
            Err(errors)
        }
    }

    /// Checks a background process: its timeout, if it has one, is at most the longest
    /// lifetime (a process ends with its sandbox anyway).
    pub(crate) fn check_background(
        &self,
        cfg: &SandboxConfig,
    ) -> Result<Option<Duration>, Vec<FieldError>> {
        let mut errors = self.field_errors(cfg);
        let max = cfg.max_lifetime.as_millis() as u64;
        let timeout = self
            .timeout_ms
            .map(|t| bounded(Some(t), max, max, "timeoutMs", &mut errors));
        if errors.is_empty() {
            Ok(timeout.map(Duration::from_millis))
        } else {
            Err(errors)
        }
    }

    fn field_errors(&self, cfg: &SandboxConfig) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.argv.is_empty() || self.argv[0].is_empty() {
            errors.push(FieldError::new(
                "argv",
                "must name a program (or give `cmd`)",
            ));
        }
        for (i, a) in self.argv.iter().enumerate() {
            if a.contains('\0') {
                errors.push(FieldError::new(
                    format!("argv.{i}"),
                    "must not contain a NUL character",
                ));
            }
        }
        let bytes: usize = self.argv.iter().map(|a| a.len() + 1).sum();
        if bytes > 128 << 10 {
            errors.push(FieldError::new(
                "argv",
                format!("total {bytes} bytes, over the 131072-byte limit"),
            ));
        }
        if let Some(cwd) = &self.cwd {
            check_cwd(cwd, "cwd", &mut errors);
        }
        check_env(&self.env, cfg.max_env, "env", &mut errors);
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_of_a_sandbox_is_named() {
        let cfg = SandboxConfig::default();
        let request = SandboxRequest {
            env: [
                ("1X".to_string(), "a".to_string()),
                ("OK".into(), "a\0b".into()),
            ]
            .into(),
            cwd: Some("/workspace/../etc".into()),
            limits: SandboxLimitRequest {
                memory_mb: Some(0),
                pids: Some(1 << 40),
                disk_mb: None,
                cpus: Some(f64::NAN),
            },
            lifetime_secs: Some(10 << 20),
            files: vec![FileInput {
                name: "../x".into(),
                content: vec![],
            }],
            ..SandboxRequest::default()
        };
        let errors = request.plan(&cfg, &AdmissionRules::default()).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "limits.memoryMb",
            "limits.pids",
            "limits.cpus",
            "timeoutSecs",
            "env.1X",
            "env.OK",
            "cwd",
            "files.0.name",
        ] {
            assert!(paths.contains(&want), "{want} not in {paths:?}");
        }
    }

    #[test]
    fn commands_are_checked() {
        let cfg = SandboxConfig::default();
        let bad = ExecRequest {
            argv: vec!["sh".into(), "a\0".into()],
            cwd: Some("relative".into()),
            timeout_ms: Some(0),
            ..ExecRequest::default()
        };
        let errors = bad.check(&cfg).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["argv.1", "cwd", "timeoutMs"]);
        let good = ExecRequest {
            argv: vec!["true".into()],
            ..ExecRequest::default()
        };
        assert_eq!(good.check(&cfg).unwrap(), Duration::from_secs(60));
    }
}
