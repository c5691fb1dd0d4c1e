//! Accounting files: parsing, and the cheap CPU-time counter polled while a sandbox runs.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use super::fsutil;
use super::parent::Group;
use super::{CgroupError, CgroupVersion, Controller};

/// Which file counts the group's CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CpuSource {
    /// v1 `cpuacct.usage`: one number, nanoseconds.
    CpuacctUsage,
    /// v2 `cpu.stat`: flat keyed, `usage_usec`. A core file, present without the cpu controller.
    CpuStat,
}

/// The CPU-time file of a group, opened once and re-read with pread: the engine polls it every
/// few milliseconds to enforce wall/CPU deadlines, and an open+read+close per poll would be three
/// syscalls and a path walk instead of one.
#[derive(Debug)]
pub(crate) struct CpuCounter {
    source: CpuSource,
    path: PathBuf,
    // Opened on first use so a fixture test can write the file after `create`.
    file: OnceLock<File>,
}

impl CpuCounter {
    /// Picks the counter for a sandbox's groups: v1 cpuacct if there is one (it is what the
    /// kernel charges on hosts where cpu is v1), else the unified group's `cpu.stat`.
    pub(crate) fn for_groups(groups: &[Group]) -> Option<CpuCounter> {
        let (source, path) = if let Some(g) = groups
            .iter()
            .find(|g| g.version == CgroupVersion::V1 && g.has(Controller::Cpuacct))
        {
            (CpuSource::CpuacctUsage, g.dir.join("cpuacct.usage"))
        } else {
            let g = groups.iter().find(|g| g.version == CgroupVersion::V2)?;
            (CpuSource::CpuStat, g.dir.join("cpu.stat"))
        };
        Some(CpuCounter {
            source,
            path,
            file: OnceLock::new(),
        })
    }

    pub(crate) fn read(&self) -> Result<Duration, CgroupError> {
        let file = match self.file.get() {
            Some(file) => file,
            None => {
                let file = File::open(&self.path).map_err(|source| CgroupError::Open {
                    path: self.path.clone(),
                    source,
                })?;
                // A concurrent first call may have won; either file is fine.
                let _ = self.file.set(file);
                self.file.get().ok_or_else(|| CgroupError::Open {
                    path: self.path.clone(),
                    source: std::io::Error::other("counter file vanished"),
                })?
            }
        };
        let mut buf = [0u8; 4096];
        let mut len = 0;
        while len < buf.len() {
            let n = file
                .read_at(&mut buf[len..], len as u64)
                .map_err(|source| CgroupError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            len += n;
        }
        let text = std::str::from_utf8(&buf[..len]).map_err(|_| CgroupError::Parse {
            path: self.path.clone(),
            reason: "not UTF-8".into(),
        })?;
        match self.source {
            CpuSource::CpuacctUsage => {
                Ok(Duration::from_nanos(fsutil::parse_u64(&self.path, text)?))
            }
            CpuSource::CpuStat => {
                let usec = keyed_value(&self.path, text, "usage_usec")?;
                Ok(Duration::from_micros(usec))
            }
        }
    }
}

/// The value of `key` in a flat keyed file (`key value` per line: `cpu.stat`, `memory.events`,
/// v1 `memory.oom_control`). Every line must have that shape, so a file that is not what we
/// think it is fails loudly instead of reading as zero.
pub(crate) fn keyed_value(path: &Path, text: &str, key: &str) -> Result<u64, CgroupError> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let (Some(k), Some(v), None) = (words.next(), words.next(), words.next()) else {
            return Err(CgroupError::Parse {
                path: path.to_path_buf(),
                reason: format!("expected `key value`, found {line:?}"),
            });
        };
        let v = v.parse::<u64>().map_err(|_| CgroupError::Parse {
            path: path.to_path_buf(),
            reason: format!("value of {k} is not a number: {v:?}"),
        })?;
        if k == key {
            found = Some(v);
        }
    }
    found.ok_or_else(|| CgroupError::Parse {
        path: path.to_path_buf(),
        reason: format!("no {key} field"),
    })
}

/// OOM kills in the group: v1 `memory.oom_control` `oom_kill` (Linux 4.13), v2 `memory.events`
/// `oom_kill`. Zero if the sandbox has no memory controller.
pub(crate) fn oom_kills(groups: &[Group]) -> Result<u64, CgroupError> {
    let Some(g) = groups.iter().find(|g| g.has(Controller::Memory)) else {
        return Ok(0);
    };
    let path = match g.version {
        CgroupVersion::V1 => g.dir.join("memory.oom_control"),
        CgroupVersion::V2 => g.dir.join("memory.events"),
    };
    let text = fsutil::read(&path)?;
    keyed_value(&path, &text, "oom_kill")
}

/// Peak memory use: v1 `memory.max_usage_in_bytes`, v2 `memory.peak` (Linux 5.19).
pub(crate) fn memory_peak(groups: &[Group]) -> Result<Option<u64>, CgroupError> {
    let Some(g) = groups.iter().find(|g| g.has(Controller::Memory)) else {
        return Ok(None);
    };
    let file = match g.version {
        CgroupVersion::V1 => "memory.max_usage_in_bytes",
        CgroupVersion::V2 => "memory.peak",
    };
    fsutil::read_u64_optional(&g.dir.join(file))
}

/// Memory in use now: v1 `memory.usage_in_bytes`, v2 `memory.current`.
pub(crate) fn memory_current(groups: &[Group]) -> Result<Option<u64>, CgroupError> {
    let Some(g) = groups.iter().find(|g| g.has(Controller::Memory)) else {
        return Ok(None);
    };
    let file = match g.version {
        CgroupVersion::V1 => "memory.usage_in_bytes",
        CgroupVersion::V2 => "memory.current",
    };
    fsutil::read_u64_optional(&g.dir.join(file))
}

/// Peak task count (`pids.peak`, Linux 6.1 on v2, later backported to v1 as well).
pub(crate) fn pids_peak(groups: &[Group]) -> Result<Option<u64>, CgroupError> {
    let Some(g) = groups.iter().find(|g| g.has(Controller::Pids)) else {
        return Ok(None);
    };
    fsutil::read_u64_optional(&g.dir.join("pids.peak"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/fake/memory.events")
    }

    #[test]
    fn keyed_files() {
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(p(), oom_control, "oom_kill").unwrap(), 3);
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(p(), events, "oom_kill").unwrap(), 1);
        let cpu_stat = "usage_usec 250123\nuser_usec 200000\nsystem_usec 50123\n\
                        nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n";
        assert_eq!(keyed_value(p(), cpu_stat, "usage_usec").unwrap(), 250_123);
    }

    #[test]
    fn malformed_keyed_files_name_the_path() {
        for (text, needle) in [
            ("oom_kill x\n", "not a number"),
            ("oom_kill\n", "expected `key value`"),
            ("oom_kill 1 2\n", "expected `key value`"),
            ("oom 1\n", "no oom_kill field"),
            ("", "no oom_kill field"),
        ] {
            let err = keyed_value(p(), text, "oom_kill").unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("/fake/memory.events"), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn single_numbers() {
        assert_eq!(fsutil::parse_u64(p(), "123456789\n").unwrap(), 123_456_789);
        let err = fsutil::parse_u64(p(), "max\n").unwrap_err();
        assert!(err.to_string().contains("/fake/memory.events"), "{err}");
    }
}
