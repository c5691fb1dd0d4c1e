//! `kiln doctor`: checks each thing Kiln needs from the host and, for each one that fails, says what
//! breaks and how to fix it.

use kiln_engine::{Engine, EngineConfig, Limits, RunSpec, Stream};
use kiln_jail::cgroup::CgroupLayout;

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    fix: &'static str,
}

/// Checks whose failure weakens a layer Kiln does not depend on alone: a warning, not a failure.
const ADVISORY: &[&str] = &["landlock", "tty line disciplines"];

fn print(c: &Check) {
    let mark = match (c.ok, ADVISORY.contains(&c.name)) {
        (true, _) => "ok  ",
        (false, true) => "WARN",
        (false, false) => "FAIL",
    };
    println!("[{mark}] {}: {}", c.name, c.detail);
    if !c.ok {
        println!("       fix: {}", c.fix);
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Runs every check; returns 0 when all pass.
pub async fn run() -> i32 {
    let mut checks = Vec::new();
    // SAFETY: geteuid has no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    checks.push(Check {
        name: "privileges",
        ok: euid == 0,
        detail: format!("effective uid {euid}"),
        fix: "run kiln as root (it maps every sandbox to an unprivileged uid range and needs to write cgroups)",
    });
    let userns = read_trim("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    checks.push(Check {
        name: "user namespaces",
        ok: userns.parse::<u64>().is_ok_and(|n| n > 0),
        detail: format!("max_user_namespaces = {userns}"),
        fix: "sysctl -w user.max_user_namespaces=65536 (and enable CONFIG_USER_NS)",
    });
    let seccomp = read_trim("/proc/sys/kernel/seccomp/actions_avail");
    checks.push(Check {
        name: "seccomp",
        ok: seccomp
            .as_deref()
            .is_some_and(|a| a.contains("errno") && a.contains("kill_process")),
        detail: seccomp.unwrap_or_else(|| "no /proc/sys/kernel/seccomp".into()),
        fix: "use a kernel built with CONFIG_SECCOMP_FILTER=y",
    });
    let abi = kiln_jail::landlock::abi_version();
    checks.push(Check {
        name: "landlock",
        ok: abi.is_some(),
        detail: abi.map_or("not available (the other layers still hold)".into(), |v| format!("ABI {v}")),
        fix: "boot with lsm=landlock,... on a kernel with CONFIG_SECURITY_LANDLOCK=y (optional: a second wall)",
    });
    let ldisc = read_trim("/proc/sys/dev/tty/ldisc_autoload");
    checks.push(Check {
        name: "tty line disciplines",
        ok: ldisc.as_deref() != Some("1"),
        detail: match ldisc.as_deref() {
            Some("1") => "dev.tty.ldisc_autoload = 1: setting a tty's line discipline loads its module on demand".into(),
            Some(v) => format!("dev.tty.ldisc_autoload = {v}"),
            None => "no dev.tty.ldisc_autoload (kernel before 5.1)".into(),
        },
        fix: "sysctl -w dev.tty.ldisc_autoload=0 (sandboxes cannot set line disciplines, TIOCSETD is refused, but the host's other users can, and several line-discipline modules have had root exploits)",
    });
    match CgroupLayout::detect() {
        Ok(layout) => {
            let placements = layout.describe();
            let detail = placements
                .iter()
                .map(|p| {
                    format!(
                        "{}={:?} at {}",
                        p.controller.name(),
                        p.version,
                        p.own_dir.display()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let has = |name: &str| placements.iter().any(|p| p.controller.name() == name);
            checks.push(Check {
                name: "cgroups",
                ok: has("memory") && has("pids"),
                detail: format!(
                    "{detail}; unified hierarchy: {}",
                    layout
                        .unified_own_dir()
                        .map_or("none".into(), |p| p.display().to_string())
                ),
                fix: "mount the memory and pids controllers (cgroup v1) or cgroup2 with them enabled; without them memory and process limits are not enforced",
            });
        }
        Err(e) => checks.push(Check {
            name: "cgroups",
            ok: false,
            detail: e.to_string(),
            fix: "mount cgroup2 at /sys/fs/cgroup (or the v1 controllers) and run kiln as root",
        }),
    }
    checks.push(sandbox_check().await);
    for c in &checks {
        print(c);
    }
    let failed = checks
        .iter()
        .filter(|c| !c.ok && !ADVISORY.contains(&c.name))
        .count();
    if failed == 0 {
        println!("kiln doctor: this host can run sandboxes");
        0
    } else {
        println!("kiln doctor: {failed} check(s) failed");
        1
    }
}

async fn sandbox_check() -> Check {
    let fail = |detail: String| Check {
        name: "warden and a sandboxed run",
        ok: false,
        detail,
        fix: "fix the checks above first; run with KILN_LOG=debug for details",
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(format!("cannot locate the kiln binary: {e}")),
    };
    let engine = match Engine::new(EngineConfig::new(exe)) {
        Ok(e) => e,
        Err(e) => return fail(format!("host setup: {e}")),
    };
    let sandbox = match engine.sandbox(&kiln_engine::SandboxShape::default()).await {
        Ok(s) => s,
        Err(e) => return fail(format!("creating a sandbox: {e}")),
    };
    let abi = sandbox.landlock_abi();
    let mut out = Vec::new();
    let mut sink = |s: Stream, c: &[u8]| {
        if s == Stream::Stdout {
            out.extend_from_slice(c)
        }
    };
    let spec = RunSpec::new(
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo sandboxed as $(id -u)".into(),
        ],
        Limits::default(),
    );
    let result = kiln_engine::runner::run(&sandbox, spec, &mut sink, None).await;
    let _ = sandbox.destroy().await;
    let text = String::from_utf8_lossy(&out).trim().to_string();
    if result.status == kiln_engine::Status::Ok && text == "sandboxed as 1000" {
        Check {
            name: "warden and a sandboxed run",
            ok: true,
            detail: format!(
                "{text}, {} ms wall, landlock {}",
                result.wall_ms,
                abi.map_or("off".into(), |v| format!("ABI {v}"))
            ),
            fix: "",
        }
    } else {
        fail(format!(
            "run ended {:?}: {text:?} {:?}",
            result.status, result.message
        ))
    }
}
