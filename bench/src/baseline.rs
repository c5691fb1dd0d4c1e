//! The baselines Kiln is compared with: a bare fork+exec, bwrap and unshare(1).

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// bwrap with every namespace it can unshare, the host root read-only, a fresh /dev and /proc: the
/// closest ready-made equivalent of what a Kiln sandbox sets up.
const BWRAP: &[&str] = &[
    "bwrap",
    "--unshare-all",
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
];

/// unshare(1) with user, PID, mount, network, IPC and UTS namespaces; `--fork` because a new PID
/// namespace only applies to children.
const UNSHARE: &[&str] = &["unshare", "-Upfmni", "--fork"];

/// The command prefixes that work on this host (a missing tool is `None`).
#[derive(Debug, Clone)]
pub struct Baselines {
    pub bwrap: Option<Vec<String>>,
    pub unshare: Option<Vec<String>>,
}

/// Finds out which baselines can run here, saying why one cannot.
pub fn detect() -> Baselines {
    let version = Command::new("bwrap")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let bwrap = if version.is_ok_and(|s| s.success()) {
        working(&[own(BWRAP)], "bwrap")
    } else {
        println!("bwrap: not installed (scripts/setup installs bubblewrap); skipping bwrap");
        None
    };
    // As root, `-U` alone leaves the child unmapped (nobody), which is enough for /bin/true; `-r`
    // maps root in case a kernel or policy insists on a mapping.
    let with_root_map = [own(UNSHARE), vec!["-r".to_string()]].concat();
    let unshare = working(&[own(UNSHARE), with_root_map], "unshare");
    Baselines { bwrap, unshare }
}

fn own(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The first prefix under which `/bin/true` succeeds.
fn working(candidates: &[Vec<String>], name: &str) -> Option<Vec<String>> {
    let mut last_err = None;
    for prefix in candidates {
        match run(prefix, &["/bin/true"]) {
            Ok(()) => return Some(prefix.clone()),
            Err(e) => last_err = Some(e),
        }
    }
    let why = last_err.map_or_else(String::new, |e| format!("{e:#}"));
    println!("{name}: cannot run /bin/true here ({why}); skipping {name}");
    None
}

/// Spawns `prefix ++ argv` and waits for it; an unsuccessful exit is an error. stdout and stderr
/// are inherited so a failing tool explains itself; stdin is closed like a Kiln run's.
pub fn run(prefix: &[String], argv: &[&str]) -> Result<()> {
    let mut all = prefix
        .iter()
        .map(String::as_str)
        .chain(argv.iter().copied());
    let program = all.next().context("empty command")?;
    let status = Command::new(program)
        .args(all)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("spawn {program}"))?;
    if !status.success() {
        bail!("{program} exited with {status}");
    }
    Ok(())
}
