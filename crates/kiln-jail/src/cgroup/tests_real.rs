//! Tests against the real cgroup hierarchies of the machine. They need root and a writable
//! /sys/fs/cgroup; elsewhere they print `skipped: <reason>`, unless KILN_REQUIRE_ISOLATION=1
//! (CI), where a missing prerequisite is a failure.

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{CgroupLayout, CgroupLimits, CgroupParent, CpuQuota, SandboxCgroup};

const MIB: u64 = 1024 * 1024;

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    if let Err(e) = rustix::fs::access("/sys/fs/cgroup", rustix::fs::Access::WRITE_OK) {
        return Some(format!("/sys/fs/cgroup is not writable: {e}"));
    }
    None
}

/// The real layout, or `None` (after printing why) when this machine cannot run the test.
fn real_layout() -> Option<CgroupLayout> {
    let reason = match skip_reason() {
        None => match CgroupLayout::detect() {
            Ok(layout) => return Some(layout),
            Err(e) => format!("no usable cgroups: {e}"),
        },
        Some(reason) => reason,
    };
    if std::env::var("KILN_REQUIRE_ISOLATION").as_deref() == Ok("1") {
        panic!("KILN_REQUIRE_ISOLATION=1 but {reason}");
    }
    println!("skipped: {reason}");
    None
}

/// Kiln's parent group for one test, removed (with any sandbox left in it) when the test ends,
/// even by a panic.
struct TestParent(Option<CgroupParent>);

impl TestParent {
    fn new(layout: &CgroupLayout) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "kiln-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        TestParent(Some(layout.prepare(&name).expect("prepare")))
    }
}

impl std::ops::Deref for TestParent {
    type Target = CgroupParent;
    fn deref(&self) -> &CgroupParent {
        self.0.as_ref().expect("parent")
    }
}

impl Drop for TestParent {
    fn drop(&mut self) {
        if let Some(parent) = self.0.take() {
            let dirs = parent.dirs();
            let result = parent.remove();
            if !std::thread::panicking() {
                result.expect("remove parent");
                for dir in dirs {
                    assert!(!dir.exists(), "{} left behind", dir.display());
                }
            }
        }
    }
}

/// A shell that waits for a line on stdin before running `script`, so it can be attached first.
struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Held {
    fn spawn(script: &str) -> Held {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("read x; {script}"))
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let stdin = child.stdin.take();
        Held { child, stdin }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn release(&mut self) {
        let mut stdin = self.stdin.take().expect("released twice");
        stdin.write_all(b"go\n").expect("release");
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn limits() -> CgroupLimits {
    CgroupLimits {
        memory_bytes: Some(64 * MIB),
        pids_max: Some(16),
        ..CgroupLimits::default()
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn remove_and_check(sb: SandboxCgroup) {
    let dirs = sb.dirs();
    sb.remove().expect("remove");
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn real_memory_hog_is_oom_killed() {
    let Some(layout) = real_layout() else { return };
    let parent = TestParent::new(&layout);
    let sb = parent.create("hog", &limits()).expect("create");
    let mut held = Held::spawn("head -c 200M /dev/zero | tail");
    sb.attach(held.pid()).expect("attach");
    assert!(sb.pids().expect("pids").contains(&held.pid()));
    held.release();
    let status = held.wait();
    assert!(!status.success(), "the hog survived: {status}");
    let oom = sb.oom_kills().expect("oom_kills");
    assert!(oom >= 1, "no OOM kill recorded ({status})");
    let stats = sb.stats().expect("stats");
    assert!(stats.oom_kills >= 1);
    if let Some(peak) = stats.memory_peak_bytes {
        assert!(peak <= 64 * MIB, "peak {peak} above the limit");
        assert!(peak >= 32 * MIB, "peak {peak}: the hog never grew");
    }
    sb.kill().expect("kill");
    remove_and_check(sb);
}

#[test]
fn real_busy_loop_is_accounted() {
    let Some(layout) = real_layout() else { return };
    let parent = TestParent::new(&layout);
    let sb = parent.create("busy", &limits()).expect("create");
    let mut held = Held::spawn("while :; do :; done");
    sb.attach(held.pid()).expect("attach");
    let before = sb.cpu_usage().expect("cpu");
    held.release();
    // On an idle machine 200 ms of wall time is enough; a loaded CI runner (parallel builds and
    // tests) may give the loop less, so poll the counter, as the engine does, with a generous cap.
    let start = Instant::now();
    let mut last = before;
    let used = loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = sb.cpu_usage().expect("cpu");
        assert!(now >= last, "CPU time went backwards: {last:?} -> {now:?}");
        last = now;
        if now - before >= Duration::from_millis(150) || start.elapsed() > Duration::from_secs(5) {
            break now - before;
        }
    };
    assert!(
        used >= Duration::from_millis(150),
        "only {used:?} of CPU in {:?}",
        start.elapsed()
    );
    sb.kill().expect("kill");
    let status = held.wait();
    assert!(!status.success());
    assert!(sb.stats().expect("stats").cpu_ns >= 150_000_000);
    remove_and_check(sb);
}

#[test]
fn real_cpu_quota_throttles() {
    let Some(layout) = real_layout() else { return };
    let parent = TestParent::new(&layout);
    let throttled = CgroupLimits {
        cpu_quota: Some(CpuQuota {
            quota_us: 10_000,
            period_us: 100_000,
        }),
        ..limits()
    };
    let sb = parent.create("quota", &throttled).expect("create");
    let mut held = Held::spawn("while :; do :; done");
    sb.attach(held.pid()).expect("attach");
    held.release();
    std::thread::sleep(Duration::from_millis(500));
    let used = sb.cpu_usage().expect("cpu");
    // 10 % of 500 ms is 50 ms; a period's worth of slack on either side.
    assert!(
        used <= Duration::from_millis(160),
        "{used:?}: quota not applied"
    );
    sb.kill().expect("kill");
    held.wait();
    remove_and_check(sb);
}

fn kill_tree(layout: &CgroupLayout) {
    let parent = TestParent::new(layout);
    let sb = parent.create("tree", &limits()).expect("create");
    let mut held = Held::spawn("sleep 100 & sleep 100 & (sleep 100 &); sleep 100");
    sb.attach(held.pid()).expect("attach");
    held.release();
    wait_until("the sleeps", Duration::from_secs(5), || {
        sb.pids().expect("pids").len() >= 5
    });
    let members = sb.pids().expect("pids");
    sb.kill().expect("kill");
    held.wait();
    wait_until("the group to empty", Duration::from_secs(2), || {
        sb.pids().expect("pids").is_empty()
    });
    for pid in members {
        let status = format!("/proc/{pid}/status");
        // Orphaned sleeps are reaped by init; a zombie is dead enough.
        if let Ok(text) = std::fs::read_to_string(&status) {
            assert!(
                !text.contains("State:\tS") || !text.contains("Name:\tsleep"),
                "pid {pid} survived"
            );
        }
    }
    remove_and_check(sb);
}

#[test]
fn real_kill_process_tree() {
    let Some(layout) = real_layout() else { return };
    kill_tree(&layout);
}

/// The fallback without `cgroup.kill`: the same host seen without its unified mount, so the v1
/// freezer is used (freeze, SIGKILL every member, thaw).
#[test]
fn real_kill_process_tree_with_v1_freezer() {
    let Some(_) = real_layout() else { return };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    if !mountinfo.contains(" - cgroup cgroup ") || !mountinfo.contains("freezer") {
        println!("skipped: no v1 freezer here");
        return;
    }
    let v1_only: String = mountinfo
        .lines()
        .filter(|l| !l.contains(" - cgroup2 "))
        .map(|l| format!("{l}\n"))
        .collect();
    let layout = CgroupLayout::from_proc(&v1_only, &cgroup, None).expect("layout");
    assert!(layout.unified_own_dir().is_none());
    kill_tree(&layout);
}

#[test]
fn real_cpuset_pinning() {
    let Some(layout) = real_layout() else { return };
    let parent = TestParent::new(&layout);
    let pinned = CgroupLimits {
        cpuset_cpus: Some("0".into()),
        ..limits()
    };
    let sb = parent.create("pinned", &pinned).expect("create");
    let mut held = Held::spawn("exit 0");
    // On v1 this is the attach that fails with ENOSPC if cpuset.cpus/mems were not filled in.
    sb.attach(held.pid()).expect("attach to the cpuset group");
    let status = std::fs::read_to_string(format!("/proc/{}/status", held.pid())).expect("status");
    assert!(
        status.contains("Cpus_allowed_list:\t0\n"),
        "not pinned: {status}"
    );
    held.release();
    assert!(held.wait().success());
    remove_and_check(sb);
}

#[test]
fn real_sweep_and_drop() {
    let Some(layout) = real_layout() else { return };
    let parent = TestParent::new(&layout);
    let sb = parent.create("leak", &limits()).expect("create");
    let mut held = Held::spawn("sleep 100");
    sb.attach(held.pid()).expect("attach");
    held.release();
    // A crash: the handle is gone, the group and its process stay.
    std::mem::forget(sb);
    assert_eq!(parent.children().expect("children"), vec!["leak"]);
    assert_eq!(parent.sweep().expect("sweep"), 1);
    assert!(parent.children().expect("children").is_empty());
    assert!(!held.wait().success());

    let sb = parent.create("dropped", &limits()).expect("create");
    let dirs = sb.dirs();
    let mut held = Held::spawn("sleep 100");
    sb.attach(held.pid()).expect("attach");
    drop(sb);
    assert!(!held.wait().success());
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind by drop", dir.display());
    }
}

/// create + attach + remove of one group, 100 times; prints the timings.
#[test]
fn real_create_attach_remove_timing() {
    let Some(layout) = real_layout() else { return };
    let parent = TestParent::new(&layout);
    const N: u32 = 100;
    let (mut create, mut attach, mut kill, mut remove) = Default::default();
    let add = |total: &mut Duration, start: Instant| *total += start.elapsed();
    for i in 0..N {
        let mut child = Command::new("sleep").arg("100").spawn().expect("spawn");
        let t = Instant::now();
        let sb = parent.create(&format!("t{i}"), &limits()).expect("create");
        add(&mut create, t);
        let t = Instant::now();
        sb.attach(child.id() as i32).expect("attach");
        add(&mut attach, t);
        let t = Instant::now();
        sb.kill().expect("kill");
        child.wait().expect("wait");
        add(&mut kill, t);
        let t = Instant::now();
        sb.remove().expect("remove");
        add(&mut remove, t);
    }
    let per = |d: Duration| d / N;
    println!(
        "cgroup timings over {N} groups on {}: create {:?}, attach {:?}, kill+reap {:?}, \
         remove {:?} (create+attach+remove {:?})",
        describe_host(&layout),
        per(create),
        per(attach),
        per(kill),
        per(remove),
        per(create + attach + remove),
    );
}

fn describe_host(layout: &CgroupLayout) -> String {
    let placements: Vec<String> = layout
        .describe()
        .iter()
        .map(|p| format!("{}:{:?}", p.controller, p.version))
        .collect();
    let unified = layout
        .unified_own_dir()
        .map(Path::display)
        .map(|d| format!(", unified at {d}"))
        .unwrap_or_default();
    format!("[{}]{unified}", placements.join(" "))
}
