//! Escape tests on what the kernel shares between sandboxes and the host: each hostile program
//! hoards a host-wide resource and holds it (until its stdin closes) while the host checks that
//! it, and another sandbox, still get their own. Items S1 to S6 of the hardening pass.

use std::time::Duration;

use kiln_engine::{Engine, EngineConfig, Limits, RunSpec, SandboxShape, Status, Stream};

use crate::common::{kiln_bin, CProgram};
use crate::require_isolation;

/// A C program: `includes`, then `main` holding `body`, which prints `hoarded <n> errno <e>`
/// and then waits for stdin to close.
fn hoarder(name: &str, includes: &str, body: &str) -> CProgram {
    CProgram::build(
        name,
        &format!(
            "#define _GNU_SOURCE\n#include <errno.h>\n#include <fcntl.h>\n#include <signal.h>\n\
             #include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n#include <sys/syscall.h>\n\
             {includes}\nint main(void) {{\n  int n = 0, err = 0;\n{body}\n  \
             printf(\"hoarded %d errno %d\\n\", n, err);\n  fflush(stdout);\n  \
             char c;\n  while (read(0, &c, 1) > 0) {{}}\n  return 0;\n}}\n"
        ),
    )
}

/// `hoarded <n> errno <e>` → (n, e).
fn hoarded(line: &str) -> (u64, i32) {
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[1].parse().unwrap(), words[3].parse().unwrap())
}

#[test]
fn s1_classic_aio_is_refused_and_the_host_keeps_its_aio_contexts() {
    require_isolation!();
    let prog = hoarder(
        "aio",
        "#include <linux/aio_abi.h>",
        "  for (int i = 0; i < 64; i++) { aio_context_t ctx = 0;\n    \
         if (syscall(SYS_io_setup, 4096, &ctx) == 0) n++; else { err = errno; break; } }",
    );
    let mut run = prog.start(&[], &[]);
    let (n, err) = hoarded(&run.wait_line("hoarded"));
    assert_eq!((n, err), (0, libc::ENOSYS), "the sandbox got AIO contexts");
    // The host (root) can still set up a context of 128 events.
    let mut ctx: libc::c_ulong = 0;
    // SAFETY: io_setup writes the new context into ctx, a live local.
    let ret = unsafe { libc::syscall(libc::SYS_io_setup, 128, &mut ctx) };
    assert_eq!(ret, 0, "host io_setup: {}", std::io::Error::last_os_error());
    // SAFETY: destroys the context just made.
    unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
    assert!(run.finish().0.success());
}

/// Whether the host (root) can make an inotify instance and a watch.
fn host_inotify_works() -> Result<(), std::io::Error> {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: inotify_init1 with a flag.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and a mask, on the fd just made.
    let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_CREATE) };
    let result = if wd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: closes the fd made above.
    unsafe { libc::close(fd) };
    result
}

#[test]
fn s2_inotify_instances_are_counted_per_sandbox_not_against_host_root() {
    require_isolation!();
    let prog = hoarder(
        "inotify_instances",
        "#include <sys/inotify.h>",
        "  while (inotify_init1(IN_CLOEXEC) >= 0) n++;\n  err = errno;",
    );
    let mut run = prog.start(&["--allow-inotify"], &[]);
    let (n, err) = hoarded(&run.wait_line("hoarded"));
    assert!(n >= 100, "only {n} instances (errno {err})");
    assert_eq!(err, libc::EMFILE);
    host_inotify_works().expect("host root's inotify while a sandbox holds its instances");
    // Another sandbox has its own count too.
    let mut other = prog.start(&["--allow-inotify"], &[]);
    let (m, _) = hoarded(&other.wait_line("hoarded"));
    assert_eq!(m, n, "the second sandbox got fewer instances");
    assert!(other.finish().0.success());
    assert!(run.finish().0.success());
}

#[test]
fn s2_inotify_watches_are_counted_per_sandbox_not_against_host_root() {
    require_isolation!();
    let prog = hoarder(
        "inotify_watches",
        "#include <sys/inotify.h>\n#include <sys/stat.h>",
        "  char path[64];\n  for (int f = 0; f < 2000; f++) { snprintf(path, sizeof path, \"/tmp/f%d\", f);\n    \
         close(open(path, O_CREAT | O_WRONLY, 0644)); }\n  \
         for (int i = 0; i < 128 && !err; i++) { int fd = inotify_init1(IN_CLOEXEC);\n    \
         if (fd < 0) { err = errno; break; }\n    \
         for (int f = 0; f < 2000; f++) { snprintf(path, sizeof path, \"/tmp/f%d\", f);\n      \
         if (inotify_add_watch(fd, path, IN_MODIFY) < 0) { err = errno; break; } n++; } }",
    );
    let mut run = prog.start(
        &[
            "--allow-inotify",
            "--memory-limit",
            "1G",
            "--wall-limit",
            "60s",
        ],
        &[],
    );
    let (n, err) = hoarded(&run.wait_line("hoarded"));
    let max: u64 = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // It stops at the per-user maximum (its own user's), or holds all it tried.
    assert!(
        (err == libc::ENOSPC && n == max) || (err == 0 && n == 128 * 2000),
        "{n} watches, errno {err}, max {max}"
    );
    host_inotify_works().expect("host root's inotify watches while a sandbox holds its own");
    assert!(run.finish().0.success());
}

#[test]
fn s2_queued_signals_are_counted_per_sandbox_not_against_host_root() {
    require_isolation!();
    let body = "  sigset_t s; sigemptyset(&s); sigaddset(&s, SIGRTMIN); sigprocmask(SIG_BLOCK, &s, 0);\n  \
                union sigval v = {0};\n  while (n < 200000 && sigqueue(getpid(), SIGRTMIN, v) == 0) n++;\n  err = errno;";
    let prog = hoarder("sigqueue", "#include <signal.h>", body);
    let mut run = prog.start(&[], &[]);
    let (n, err) = hoarded(&run.wait_line("hoarded"));
    assert_eq!(err, libc::EAGAIN, "{n} signals");
    assert_eq!(n, kiln_engine::limits::SIGPENDING, "RLIMIT_SIGPENDING");
    // A host process of root's queues signals and makes a POSIX timer (which reserves one).
    let host = CProgram::build(
        "host_sigqueue",
        "#define _GNU_SOURCE\n#include <errno.h>\n#include <signal.h>\n#include <stdio.h>\n#include <time.h>\n#include <unistd.h>\n\
         int main(void) { sigset_t s; sigemptyset(&s); sigaddset(&s, SIGRTMIN); sigprocmask(SIG_BLOCK, &s, 0);\n\
         union sigval v = {0}; int n = 0; while (n < 500 && sigqueue(getpid(), SIGRTMIN, v) == 0) n++;\n\
         timer_t t; struct sigevent ev = {0}; ev.sigev_notify = SIGEV_SIGNAL; ev.sigev_signo = SIGRTMIN;\n\
         int timer = timer_create(CLOCK_MONOTONIC, &ev, &t);\n\
         printf(\"%d %d\\n\", n, timer); return 0; }\n",
    );
    let out = std::process::Command::new(&host.path).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "500 0",
        "host root could not queue signals or make a timer"
    );
    assert!(run.finish().0.success());
}

#[test]
fn s3_an_oom_outside_any_process_rss_kills_a_program_not_the_warden() {
    require_isolation!();
    // tmpfs pages are charged to the sandbox but belong to no process: every process is as small
    // as the warden, and the OOM killer must still pick a program.
    let r = crate::common::sh(
        &["--memory-limit", "48M"],
        "echo before; dd if=/dev/zero of=/tmp/fill bs=1M count=60",
    );
    assert_eq!(r.status(), "memory_limit", "{}", r.json);
    assert_eq!(r.stdout(), "before\n", "{}", r.json);
    assert!(r.json["wallMs"].as_u64().unwrap() > 0, "{}", r.json);
    assert!(
        r.json["memoryBytes"].as_u64().unwrap() > 40 << 20,
        "{}",
        r.json
    );
}

#[test]
fn s5_a_sandbox_gets_few_ptys_and_the_host_and_others_still_get_theirs() {
    require_isolation!();
    let prog = hoarder(
        "ptys",
        "",
        "  while (n < 10000 && posix_openpt(O_RDWR | O_NOCTTY) >= 0) n++;\n  err = errno;",
    );
    let mut run = prog.start(&[], &[]);
    let (n, err) = hoarded(&run.wait_line("hoarded"));
    assert_eq!(
        n,
        u64::from(kiln_engine::limits::DEFAULT_PTYS),
        "errno {err}"
    );
    assert_eq!(err, libc::ENOSPC);
    // SAFETY: posix_openpt with flags; the fd is closed below.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
    assert!(fd >= 0, "host: {}", std::io::Error::last_os_error());
    // SAFETY: closes the fd just opened.
    unsafe { libc::close(fd) };
    let mut other = prog.start(&[], &[]);
    let (m, _) = hoarded(&other.wait_line("hoarded"));
    assert_eq!(m, n, "another sandbox got fewer ptys");
    assert!(other.finish().0.success());
    assert!(run.finish().0.success());
}

/// Pages of `path` in the host's page cache.
fn resident_pages(path: &std::path::Path) -> usize {
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: a shared read-only mapping of the whole file; unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let pages = len.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: vec holds one byte per page of the mapping.
    let ret = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    assert_eq!(ret, 0, "mincore: {}", std::io::Error::last_os_error());
    // SAFETY: unmaps the mapping made above.
    unsafe { libc::munmap(addr, len) };
    vec.iter().filter(|b| **b & 1 != 0).count()
}

#[test]
fn s6_fadvise_dontneed_on_a_host_file_leaves_the_hosts_page_cache_alone() {
    require_isolation!();
    // A host file the sandbox sees through a read-only bind, as it sees /usr.
    let dir = tempfile::tempdir().unwrap();
    let host_file = dir.path().join("shared.bin");
    std::fs::write(&host_file, vec![7u8; 16 << 20]).unwrap();
    let _ = std::fs::read(&host_file).unwrap();
    let before = resident_pages(&host_file);
    assert!(before > 3500, "only {before} pages cached to start with");
    let prog = crate::common::c_main(
        "fadvise",
        "int fd = open(\"/data/shared.bin\", O_RDONLY); if (fd < 0) return 90;\n\
         int r = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); printf(\"fadvise %d\\n\", r); return r;",
    );
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let engine = Engine::new(EngineConfig::new(kiln_bin())).unwrap();
        let binds = [
            (host_file.clone(), "/data/shared.bin".into()),
            (prog.path.clone(), "/data/fadvise".into()),
        ];
        let sandbox = engine
            .sandbox_with_binds(&SandboxShape::default(), &binds)
            .await
            .unwrap();
        let spec = RunSpec::new(vec!["/data/fadvise".into()], Limits::default());
        let mut out = Vec::new();
        let mut sink = |_: Stream, c: &[u8]| out.extend_from_slice(c);
        let r = kiln_engine::runner::run(&sandbox, spec, &mut sink, None).await;
        sandbox.destroy().await.unwrap();
        assert_eq!(
            r.status,
            Status::Ok,
            "{r:?} {}",
            String::from_utf8_lossy(&out)
        );
    });
    std::thread::sleep(Duration::from_millis(50));
    let after = resident_pages(&host_file);
    assert!(
        after * 10 >= before * 9,
        "the sandbox emptied the host's page cache of the file: {before} pages, then {after}"
    );
}
