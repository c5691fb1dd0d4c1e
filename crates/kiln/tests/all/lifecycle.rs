//! Sandboxes do not see each other, leave nothing behind, and the pool hands each out once.

use kiln_engine::{Engine, EngineConfig, Limits, RunSpec, SandboxShape, Status, Stream};

use crate::common::kiln_bin;
use crate::require_isolation;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn run_sh(sandbox: &kiln_engine::Sandbox, script: &str) -> (kiln_engine::RunResult, String) {
    let spec = RunSpec::new(
        vec!["/bin/sh".into(), "-c".into(), script.into()],
        Limits::default(),
    );
    let mut out = Vec::new();
    let mut sink = |s: Stream, c: &[u8]| {
        if s == Stream::Stdout {
            out.extend_from_slice(c)
        }
    };
    let r = kiln_engine::runner::run(sandbox, spec, &mut sink, None).await;
    (r, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn another_sandboxs_files_and_processes_are_invisible() {
    require_isolation!();
    runtime().block_on(async {
        let engine = Engine::new(EngineConfig::new(kiln_bin())).unwrap();
        let a = engine.sandbox(&SandboxShape::default()).await.unwrap();
        let b = engine.sandbox(&SandboxShape::default()).await.unwrap();
        a.write_file("secret-a.txt", b"only for a", 0o600).unwrap();
        let marker = "sleep 41.5";
        let a_run = tokio::spawn(async move {
            let r = run_sh(&a, &format!("{marker} & echo started; wait")).await;
            a.destroy().await.unwrap();
            r
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (r, out) = run_sh(
            &b,
            "find /workspace /tmp /dev/shm /proc/[0-9]*/root/ -maxdepth 3 -name 'secret-a*' 2>/dev/null; ls /workspace; for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done | grep -c . ; grep -l 41.5 /proc/[0-9]*/cmdline 2>/dev/null; echo end",
        )
        .await;
        b.destroy().await.unwrap();
        a_run.abort();
        assert_eq!(r.status, Status::Ok, "{r:?} {out}");
        let lines: Vec<&str> = out.lines().collect();
        // No file found, an empty workspace, only b's own few processes, and no sleep of a's.
        assert_eq!(lines.last(), Some(&"end"), "{out}");
        assert!(!out.contains("secret-a"), "{out}");
        let procs: usize = lines[0].trim().parse().unwrap_or(99);
        assert!(procs <= 6, "b sees {procs} processes: {out}");
    });
}

#[test]
fn a_thousand_runs_leave_no_cgroup_or_process_behind() {
    require_isolation!();
    runtime().block_on(async {
        let mut cfg = EngineConfig::new(kiln_bin());
        let group = format!("kiln-test-{}", std::process::id());
        cfg.cgroup_name = group.clone();
        cfg.pool_size = 4;
        let engine = Engine::new(cfg).unwrap();
        let mut tasks = Vec::new();
        for worker in 0..4 {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..250 {
                    let sandbox = engine.sandbox(&SandboxShape::default()).await.unwrap();
                    let script = if i % 50 == 0 {
                        "sleep 30 & exit 0"
                    } else {
                        "exit 0"
                    };
                    let (r, _) = run_sh(&sandbox, script).await;
                    assert_eq!(r.status, Status::Ok, "worker {worker} run {i}: {r:?}");
                    sandbox.destroy().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let parent = engine.jail().cgroup_parent();
        let children = parent.children().unwrap();
        // Only the pool's sandboxes remain: 4 ready and at most 2 being made.
        assert!(
            children.len() <= 6,
            "{} cgroups left: {children:?}",
            children.len()
        );
        let dirs = parent.dirs();
        drop(engine);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let left = processes_in(&group);
        assert!(left.is_empty(), "processes left in {group}: {left:?}");
        for dir in dirs {
            // The engine's instance group goes with it; if it is still there, it is empty.
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let subdirs: Vec<_> = entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.path())
                .collect();
            assert!(
                subdirs.is_empty(),
                "cgroups left after the engine: {subdirs:?}"
            );
        }
    });
}

/// Host pids whose cgroup path mentions `group`.
fn processes_in(group: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("cgroup")).is_ok_and(|c| c.contains(group))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}
