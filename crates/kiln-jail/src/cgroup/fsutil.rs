//! File helpers shared by the v1 and v2 code. They know the one difference between a kernel
//! cgroupfs and the plain-file fixture trees used in tests: the kernel creates a group's control
//! files by itself on mkdir, a fixture does not, so in `Mode::Simulated` writes create their file
//! and removal deletes directories with their contents.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::CgroupError;

/// Whether paths point at a real cgroupfs or at a fixture tree of plain files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A kernel cgroup filesystem.
    Kernel,
    /// Plain files standing in for kernel files (tests).
    Simulated,
}

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a file that older kernels or absent controllers may not have.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn open_for_write(mode: Mode, path: &Path, append: bool) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true);
    if mode == Mode::Simulated {
        opts.create(true);
        if append {
            opts.append(true);
        } else {
            opts.truncate(true);
        }
    }
    opts.open(path)
}

/// Writes `value` in a single write, as the kernel parses each write(2) on its own.
pub(crate) fn write(mode: Mode, path: &Path, value: &str) -> Result<(), CgroupError> {
    write_inner(mode, path, value, false).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// Like `write`, but a missing file (feature absent on this kernel) is reported as `Ok(false)`.
pub(crate) fn write_optional(mode: Mode, path: &Path, value: &str) -> Result<bool, CgroupError> {
    match write_inner(mode, path, value, false) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CgroupError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        }),
    }
}

fn write_inner(mode: Mode, path: &Path, value: &str, append: bool) -> std::io::Result<()> {
    let mut file = open_for_write(mode, path, append)?;
    let n = file.write(value.as_bytes())?;
    if n != value.len() {
        return Err(std::io::Error::new(ErrorKind::WriteZero, "short write"));
    }
    Ok(())
}

/// Moves `pid` into the group whose `cgroup.procs` is `procs`. A fixture file accumulates the
/// pids, one per line, the way the kernel file would list them.
pub(crate) fn write_pid(mode: Mode, procs: &Path, pid: i32) -> Result<(), CgroupError> {
    let value = if mode == Mode::Simulated {
        format!("{pid}\n")
    } else {
        pid.to_string()
    };
    write_inner(mode, procs, &value, true).map_err(|source| CgroupError::Write {
        path: procs.to_path_buf(),
        value,
        source,
    })
}

/// Opens `cgroup.procs` for later pid writes (see `SandboxCgroup::open_procs_files`).
pub(crate) fn open_procs(mode: Mode, procs: &Path) -> Result<File, CgroupError> {
    open_for_write(mode, procs, true).map_err(|source| CgroupError::Open {
        path: procs.to_path_buf(),
        source,
    })
}

/// Creates a directory; `Ok(false)` if it already existed.
pub(crate) fn mkdir(path: &Path) -> Result<bool, CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::Mkdir {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads a `cgroup.procs`; a group that no longer exists has no members.
pub(crate) fn read_pids(procs: &Path) -> Result<Vec<i32>, CgroupError> {
    let Some(text) = read_optional(procs)? else {
        return Ok(Vec::new());
    };
    parse_pids(procs, &text)
}

pub(crate) fn parse_pids(path: &Path, text: &str) -> Result<Vec<i32>, CgroupError> {
    text.split_whitespace()
        .map(|word| {
            word.parse::<i32>().map_err(|_| CgroupError::Parse {
                path: path.to_path_buf(),
                reason: format!("not a pid: {word:?}"),
            })
        })
        .collect()
}

/// Names of the sub-directories (child groups) of `dir`; none if `dir` does not exist.
pub(crate) fn subdirs(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Removes a group and any groups nested in it (a sandbox may have made its own), retrying the
/// transient EBUSY the kernel returns while just-exited tasks are still being released.
/// A group that is already gone counts as removed.
pub(crate) fn rmdir_tree(mode: Mode, dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    if mode == Mode::Simulated {
        return match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(CgroupError::Rmdir {
                path: dir.to_path_buf(),
                source: e,
            }),
            _ => Ok(()),
        };
    }
    for child in subdirs(dir)? {
        rmdir_tree(mode, &dir.join(child), deadline)?;
    }
    let mut pause = Duration::from_micros(500);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(CgroupError::Rmdir {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Parses a whole file holding one unsigned number (`cpuacct.usage`, `memory.peak`, ...).
pub(crate) fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    let word = text.trim();
    word.parse::<u64>().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        reason: format!("expected a number, found {word:?}"),
    })
}

/// Reads an optional single-number file; `None` if this kernel does not have it.
pub(crate) fn read_u64_optional(path: &Path) -> Result<Option<u64>, CgroupError> {
    read_optional(path)?
        .map(|text| parse_u64(path, &text))
        .transpose()
}
