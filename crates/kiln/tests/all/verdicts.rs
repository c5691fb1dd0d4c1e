//! One test per verdict the engine can reach, and the accounting that comes with a run.

use std::time::Duration;

use kiln_engine::{Engine, EngineConfig, Limits, RunSpec, Status, StdinSource, Stream};

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
        let sandbox = engine.sandbox(&Limits::default()).await.unwrap();
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
        let sandbox = engine.sandbox(&Limits::default()).await.unwrap();
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
