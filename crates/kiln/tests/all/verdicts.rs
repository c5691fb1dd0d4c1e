//! One test per verdict the engine can reach, and the accounting that comes with a run.

use std::time::Duration;

use kiln_engine::{
    Engine, EngineConfig, Limits, RunSpec, SandboxShape, Status, StdinSource, Stream,
};

use crate::common::{c_main, kiln_bin, sh};
use crate::require_isolation;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn engine() -> Engine {
    Engine::new(EngineConfig::new(kiln_bin())).expect("engine")
}

#[test]
fn ok_nonzero_and_signaled() {
    require_isolation!();
    let r = sh(&[], "echo out; echo err >&2");
    assert_eq!(r.status(), "ok", "{}", r.json);
    assert_eq!((r.stdout(), r.stderr()), ("out\n", "err\n"));
    assert_eq!(r.output.status.code(), Some(0));

    let r = sh(&[], "exit 7");
    assert_eq!(r.status(), "nonzero_exit", "{}", r.json);
    assert_eq!(r.exit_code(), Some(7));
    assert_eq!(
        r.output.status.code(),
        Some(7),
        "kiln exec mirrors the exit code"
    );

    let r = sh(&[], "kill -SEGV $$");
    assert_eq!(r.status(), "signaled", "{}", r.json);
    assert_eq!(r.json["signal"], "SIGSEGV");
    assert_eq!(r.output.status.code(), Some(128 + libc::SIGSEGV));
}

#[test]
fn a_client_kill_ends_as_killed() {
    require_isolation!();
    runtime().block_on(async {
        let engine = engine();
        let sandbox = engine.sandbox(&SandboxShape::default()).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = tx.send(());
        });
        let spec = RunSpec::new(vec!["/bin/sleep".into(), "30".into()], Limits::default());
        let mut sink = |_: Stream, _: &[u8]| {};
        let r = kiln_engine::runner::run(&sandbox, spec, &mut sink, Some(rx)).await;
        sandbox.destroy().await.unwrap();
        assert_eq!(r.status, Status::Killed, "{r:?}");
        assert_eq!(r.signal.as_deref(), Some("SIGKILL"));
        assert!(r.wall_ms < 5000, "{r:?}");
    });
}

#[test]
fn a_program_that_cannot_start_is_an_internal_error_with_a_reason() {
    require_isolation!();
    let r = crate::common::kiln_exec(&[], &["/no/such/program"]);
    assert_eq!(r.status(), "internal_error", "{}", r.json);
    let message = r.json["message"].as_str().unwrap_or("");
    assert!(message.contains("No such file"), "{}", r.json);
}

#[test]
fn live_stdin_is_echoed_line_by_line() {
    require_isolation!();
    runtime().block_on(async {
        let engine = engine();
        let sandbox = engine.sandbox(&SandboxShape::default()).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut spec = RunSpec::new(vec!["/bin/cat".into()], Limits::default());
        spec.stdin = StdinSource::Live(rx);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel();
        let feeder = tokio::spawn(async move {
            for line in ["one\n", "two\n"] {
                tx.send(line.as_bytes().to_vec()).await.unwrap();
                // Each line comes back before the next is sent: stdin is live, not buffered.
                let echoed: Vec<u8> = out_rx.recv().await.unwrap();
                assert_eq!(echoed, line.as_bytes());
            }
        });
        let mut sink = move |s: Stream, c: &[u8]| {
            if s == Stream::Stdout {
                let _ = out_tx.send(c.to_vec());
            }
        };
        let r = kiln_engine::runner::run(&sandbox, spec, &mut sink, None).await;
        feeder.await.unwrap();
        sandbox.destroy().await.unwrap();
        assert_eq!(r.status, Status::Ok, "{r:?}");
    });
}

#[test]
fn cpu_time_of_a_300ms_busy_loop_is_accounted_within_15_percent() {
    require_isolation!();
    let prog = c_main(
        "busy300",
        "struct timespec t; do { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); } while (t.tv_sec * 1000 + t.tv_nsec / 1000000 < 300); return 0;",
    );
    let r = prog.run(&[], &[]);
    assert_eq!(r.status(), "ok", "{}", r.json);
    let cpu = r.json["cpuMs"].as_u64().unwrap();
    assert!(
        (255..=345).contains(&cpu),
        "cpuMs {cpu} not within 15% of 300"
    );
}

#[test]
fn peak_memory_of_a_100mb_allocation_is_accounted_within_10_percent() {
    require_isolation!();
    let prog = c_main(
        "alloc100",
        "size_t n = 100u << 20; volatile char *p = malloc(n); for (size_t i = 0; i < n; i += 4096) p[i] = 1; usleep(50000); return p[n / 2] == 1 ? 0 : 1;",
    );
    let r = prog.run(&["--memory-limit", "512M"], &[]);
    assert_eq!(r.status(), "ok", "{}", r.json);
    let peak = r.json["memoryBytes"].as_u64().unwrap() as f64;
    let want = (100u64 << 20) as f64;
    assert!(
        (peak - want).abs() <= want * 0.10,
        "peak {:.1} MiB not within 10% of 100 MiB",
        peak / (1 << 20) as f64
    );
}

#[test]
fn two_processes_at_once_in_one_sandbox_each_get_their_own_cpu_time_and_verdict() {
    require_isolation!();
    runtime().block_on(async {
        let engine = engine();
        let shape = SandboxShape {
            accounting: kiln_engine::Accounting::PerProcess,
            ..SandboxShape::default()
        };
        let total = Limits {
            memory_bytes: Some(512 << 20),
            pids: Some(128),
            ..Limits::default()
        };
        let sandbox = engine.create(&shape, &total, &[]).await.unwrap();
        let burner = RunSpec::new(
            vec!["/bin/sh".into(), "-c".into(), "while :; do :; done".into()],
            Limits {
                cpu_time: Some(Duration::from_millis(800)),
                wall_time: Some(Duration::from_secs(10)),
                ..Limits::default()
            },
        );
        let sleeper = RunSpec::new(
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "sleep 1.5; echo slept".into(),
            ],
            Limits::default(),
        );
        let (mut burn_out, mut sleep_out) = (Vec::new(), Vec::new());
        let mut burn_sink = |_: Stream, c: &[u8]| burn_out.extend_from_slice(c);
        let mut sleep_sink = |_: Stream, c: &[u8]| sleep_out.extend_from_slice(c);
        let (burned, slept) = tokio::join!(
            kiln_engine::runner::run(&sandbox, burner, &mut burn_sink, None),
            kiln_engine::runner::run(&sandbox, sleeper, &mut sleep_sink, None),
        );
        sandbox.destroy().await.unwrap();
        assert_eq!(burned.status, Status::TimeLimit, "{burned:?}");
        assert!(
            (750..1300).contains(&burned.cpu_ms),
            "the burner's own CPU: {burned:?}"
        );
        assert_eq!(slept.status, Status::Ok, "{slept:?}");
        assert_eq!(String::from_utf8_lossy(&sleep_out), "slept\n");
        // The sleeper ran beside the burner the whole time; none of the burner's CPU is its.
        assert!(slept.cpu_ms < 100, "the sleeper was charged: {slept:?}");
        assert!(slept.wall_ms >= 1500, "{slept:?}");
    });
}

#[test]
fn killing_a_process_of_a_shared_sandbox_takes_its_daemons_and_nothing_else() {
    require_isolation!();
    runtime().block_on(async {
        let engine = engine();
        let shape = SandboxShape {
            accounting: kiln_engine::Accounting::PerProcess,
            ..SandboxShape::default()
        };
        let sandbox = engine.create(&shape, &Limits::default(), &[]).await.unwrap();
        let neighbour = RunSpec::new(
            vec!["/bin/sh".into(), "-c".into(), "sleep 2; echo neighbour".into()],
            Limits::default(),
        );
        let daemoniser = RunSpec::new(
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "(setsid sh -c 'exec sleep 43' </dev/null >/dev/null 2>&1 &); sleep 30".into(),
            ],
            Limits::default(),
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = tx.send(());
        });
        let mut out = Vec::new();
        let mut sink = |_: Stream, c: &[u8]| out.extend_from_slice(c);
        let mut none = |_: Stream, _: &[u8]| {};
        let (killed, other) = tokio::join!(
            kiln_engine::runner::run(&sandbox, daemoniser, &mut none, Some(rx)),
            kiln_engine::runner::run(&sandbox, neighbour, &mut sink, None),
        );
        assert_eq!(killed.status, Status::Killed, "{killed:?}");
        assert_eq!(other.status, Status::Ok, "{other:?}");
        assert_eq!(String::from_utf8_lossy(&out), "neighbour\n");
        let check = RunSpec::new(
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done | grep -c 'slee[p] 43'".into(),
            ],
            Limits::default(),
        );
        let mut found = Vec::new();
        let mut sink = |_: Stream, c: &[u8]| found.extend_from_slice(c);
        kiln_engine::runner::run(&sandbox, check, &mut sink, None).await;
        sandbox.destroy().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&found), "0\n", "the daemon survived its kill");
    });
}
