//! Real tests of the policy: each case forks a child that sets no_new_privs, installs the compiled
//! filters and makes raw syscalls; the parent reads the child's exit code (the errno it got) or
//! the signal that killed it. After fork the child only makes raw syscalls and `_exit`s: no
//! allocation, no locks, no test-harness output (other test threads may hold those locks).
//!
//! Denials are checked twice: with the real policy (`EPERM`) and with the same policy whose
//! default errno is a sentinel no syscall returns by itself (`ENOTNAM`), which proves it is the
//! filter, and not the kernel's own permission checks, that refused the call.

use std::time::{Duration, Instant};

use super::*;

/// Child exit codes besides errnos (which are below 134).
pub(super) const SUCCEEDED: i32 = 200;
const NNP_FAILED: i32 = 201;
const INSTALL_FAILED: i32 = 202;
const PANICKED: i32 = 203;
/// The default errno of the sentinel policies.
pub(super) const SENTINEL: i32 = libc::ENOTNAM;
/// Every argument of a denied syscall: an invalid pointer, fd, length and flag set at once, so
/// that the call would fail harmlessly even if the filter let it through (these tests may run as
/// root).
pub(super) const POISON: u64 = u64::MAX;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Exited(i32),
    Signaled(i32),
}

/// The sandbox policy, compiled, optionally with the sentinel as default errno.
pub(super) fn filter(network: bool, sentinel: bool) -> CompiledFilter {
    let policy = SeccompPolicy::sandbox(SeccompOptions {
        network,
        inotify: false,
    });
    let policy = if sentinel {
        policy.with_default_errno(SENTINEL)
    } else {
        policy
    };
    policy.compile().expect("the sandbox policy compiles")
}

/// A raw syscall; `Err(errno)` on failure.
pub(super) fn raw(nr: i64, args: [u64; 6]) -> Result<i64, i32> {
    // SAFETY: the callers in these tests pass integers, the POISON value (rejected by the kernel as
    // a pointer, fd, length or flag set) or pointers to live, large-enough buffers; fork-like
    // syscalls are run without CLONE_VM (the child gets its own copy of the memory) and their
    // children `_exit` at once (`fork_result`).
    let ret = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    if ret == -1 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(ret)
    }
}

/// A syscall's result as a child exit code: the errno, or `SUCCEEDED`.
pub(super) fn code(result: Result<i64, i32>) -> i32 {
    match result {
        Ok(_) => SUCCEEDED,
        Err(errno) => errno,
    }
}

/// Like [`code`] for calls that may create a process: the new child exits at once, the caller
/// reaps it and reports `SUCCEEDED`.
fn fork_result(result: Result<i64, i32>) -> i32 {
    match result {
        Ok(0) => exit_now(0),
        Ok(pid) => {
            let _ = raw(libc::SYS_wait4, [pid as u64, 0, 0, 0, 0, 0]);
            SUCCEEDED
        }
        Err(errno) => errno,
    }
}

pub(super) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process without running any user-space code.
    unsafe { libc::_exit(code) }
}

fn fork() -> libc::pid_t {
    // SAFETY: the child only makes raw syscalls and `_exit`s (see `run_child`), which is what
    // is safe after fork in a multi-threaded process.
    unsafe { libc::fork() }
}

/// `_exit`s the child if its body panics instead of unwinding into the test harness.
struct ExitOnUnwind;

impl Drop for ExitOnUnwind {
    fn drop(&mut self) {
        exit_now(PANICKED)
    }
}

/// Forks; the child becomes a session leader without core dumps, installs `filter` (if any)
/// and `_exit`s with what `body` returns. Returns how the child ended.
pub(super) fn run_child(filter: Option<&CompiledFilter>, body: impl FnOnce() -> i32) -> Outcome {
    run_child_timeout(filter, Duration::from_secs(60), body)
}

/// [`run_child`] that kills the child's process group after `timeout`.
pub(super) fn run_child_timeout(
    filter: Option<&CompiledFilter>,
    timeout: Duration,
    body: impl FnOnce() -> i32,
) -> Outcome {
    let pid = fork();
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let guard = ExitOnUnwind;
        let _ = raw(libc::SYS_setsid, [0; 6]);
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let limit = std::ptr::from_ref(&no_core) as u64;
        let _ = raw(
            libc::SYS_prlimit64,
            [0, libc::RLIMIT_CORE as u64, limit, 0, 0, 0],
        );
        if let Some(filter) = filter {
            let nnp = libc::PR_SET_NO_NEW_PRIVS as u64;
            if raw(libc::SYS_prctl, [nnp, 1, 0, 0, 0, 0]).is_err() {
                exit_now(NNP_FAILED);
            }
            if filter.install().is_err() {
                exit_now(INSTALL_FAILED);
            }
        }
        let code = body();
        std::mem::forget(guard);
        exit_now(code);
    }
    wait_for(pid, timeout)
}

fn wait_for(pid: libc::pid_t, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut status = 0i32;
    let status_ptr = std::ptr::from_mut(&mut status) as u64;
    loop {
        match raw(
            libc::SYS_wait4,
            [pid as u64, status_ptr, libc::WNOHANG as u64, 0, 0, 0],
        ) {
            Ok(0) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(0) => {
                let group = (-pid) as u64;
                let _ = raw(libc::SYS_kill, [group, libc::SIGKILL as u64, 0, 0, 0, 0]);
                let _ = raw(libc::SYS_wait4, [pid as u64, status_ptr, 0, 0, 0, 0]);
                panic!("child {pid} still running after {timeout:?}: killed");
            }
            Ok(_) => break,
            Err(libc::EINTR) => {}
            Err(errno) => panic!("wait4({pid}): errno {errno}"),
        }
    }
    if libc::WIFEXITED(status) {
        Outcome::Exited(libc::WEXITSTATUS(status))
    } else {
        Outcome::Signaled(libc::WTERMSIG(status))
    }
}

// ----- The policy as data. -----

#[test]
fn policy_compiles_within_bpf_limits() {
    for (network, inotify) in [(false, false), (true, true)] {
        let policy = SeccompPolicy::sandbox(SeccompOptions { network, inotify });
        let compiled = policy.compile().expect("compiles");
        assert_eq!(
            compiled.programs().len(),
            5,
            "allowlist, then the overrides: the no-op (errno 0), EPERM, ENOSYS and EOPNOTSUPP"
        );
        for program in compiled.programs() {
            assert!(
                !program.is_empty() && program.len() < 4096,
                "{}",
                program.len()
            );
        }
        if cfg!(target_arch = "x86_64") {
            let count = policy.allowed_syscalls().count();
            assert!(count > 250, "only {count} syscalls allowed");
        }
    }
}

#[test]
fn allowlist_has_no_x32_or_duplicate_numbers() {
    let policy = SeccompPolicy::sandbox(SeccompOptions {
        network: true,
        inotify: false,
    });
    let mut seen = std::collections::BTreeSet::new();
    for rule in policy.rules() {
        assert!(
            (0..0x4000_0000).contains(&rule.nr),
            "{}: {}",
            rule.name,
            rule.nr
        );
        assert!(seen.insert(rule.nr), "{} twice", rule.name);
    }
    for name in [
        "clone3",
        "ptrace",
        "mount",
        "unshare",
        "bpf",
        "io_uring_setup",
        "io_setup",
        "cachestat",
        "inotify_init1",
        "setxattr",
    ] {
        assert!(
            policy.allowed_syscalls().all(|n| n != name),
            "{name} allowed"
        );
    }
    for name in [
        "read", "execve", "clone", "socket", "ioctl", "futex", "rseq", "vfork",
    ] {
        assert!(
            policy.allowed_syscalls().any(|n| n == name),
            "{name} missing"
        );
    }
}

#[test]
fn denied_families_resolve_and_are_not_allowed() {
    let policy = SeccompPolicy::sandbox(SeccompOptions {
        network: true,
        inotify: true,
    });
    for &(family, names) in SeccompPolicy::denied_families() {
        let resolved = policy.denied().iter().find(|f| f.family == family);
        if cfg!(target_arch = "x86_64") {
            let resolved = resolved.unwrap_or_else(|| panic!("family {family} missing"));
            let got: Vec<_> = resolved.syscalls.iter().map(|s| s.0).collect();
            assert_eq!(got, names, "family {family}: a name has no number");
        }
        for name in names {
            assert!(policy.allowed_syscalls().all(|n| n != *name), "{name}");
        }
    }
}

#[test]
fn a_syscall_both_allowed_and_denied_is_an_error() {
    let mut policy = SeccompPolicy::sandbox(SeccompOptions::default());
    let read = policy.rules()[0].clone();
    policy.denied[0].syscalls.push((read.name, read.nr));
    assert!(matches!(
        policy.compile(),
        Err(SeccompError::Conflict { .. })
    ));
}

// ----- Denied families: one test each. -----

fn assert_family_denied(family: &str) {
    let policy = SeccompPolicy::sandbox(SeccompOptions::default());
    assert_policy_denies(&policy, family);
}

fn assert_policy_denies(policy: &SeccompPolicy, family: &str) {
    let Some(fam) = policy.denied().iter().find(|f| f.family == family).cloned() else {
        if cfg!(target_arch = "x86_64") {
            panic!("no family {family}");
        }
        return;
    };
    let normal = policy.compile().expect("compiles");
    let sentinel = policy
        .clone()
        .with_default_errno(SENTINEL)
        .compile()
        .expect("compiles");
    let expected_sentinel = if fam.errno == libc::EPERM {
        SENTINEL
    } else {
        fam.errno
    };
    for &(name, nr) in &fam.syscalls {
        let call = || fork_result(raw(nr, [POISON; 6]));
        let got = run_child(Some(&normal), call);
        assert_eq!(got, Outcome::Exited(fam.errno), "{family}: {name}");
        let got = run_child(Some(&sentinel), call);
        assert_eq!(
            got,
            Outcome::Exited(expected_sentinel),
            "{family}: {name} (sentinel)"
        );
    }
}

macro_rules! family_tests {
    ($($test:ident => $family:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                assert_family_denied($family);
            }
        )*
        const TESTED_FAMILIES: &[&str] = &[$($family),*];
    };
}

family_tests! {
    denied_mount => "mount",
    denied_namespaces => "namespaces",
    denied_clone3 => "clone3",
    denied_ptrace => "ptrace",
    denied_bpf => "bpf",
    denied_perf => "perf",
    denied_modules => "modules",
    denied_kexec_reboot => "kexec-reboot",
    denied_keyring => "keyring",
    denied_userfaultfd => "userfaultfd",
    denied_io_uring => "io_uring",
    denied_aio => "aio",
    denied_cachestat => "cachestat",
    denied_swap => "swap",
    denied_clock_set => "clock-set",
    denied_host_identity => "host-identity",
    denied_acct_quota => "acct-quota",
    denied_syslog => "syslog",
    denied_fs_handles => "fs-handles",
    denied_fanotify => "fanotify",
    denied_x86_io => "x86-io",
    denied_legacy => "legacy",
    denied_xattr_write => "xattr-write",
}

#[test]
fn every_denied_family_has_a_test() {
    let families: Vec<_> = SeccompPolicy::denied_families()
        .iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(families, TESTED_FAMILIES);
}

#[test]
fn inotify_is_refused_unless_asked_for() {
    let refused = SeccompPolicy::sandbox(SeccompOptions::default());
    assert_policy_denies(&refused, "inotify");
    let allowed = SeccompPolicy::sandbox(SeccompOptions {
        network: false,
        inotify: true,
    });
    assert!(allowed.denied().iter().all(|f| f.family != "inotify"));
    let filter = allowed.with_default_errno(SENTINEL).compile().unwrap();
    let call = || match raw(
        libc::SYS_inotify_init1,
        [libc::IN_CLOEXEC as u64, 0, 0, 0, 0, 0],
    ) {
        Ok(fd) => code(raw(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0])),
        Err(errno) => errno,
    };
    assert_eq!(run_child(Some(&filter), call), Outcome::Exited(SUCCEEDED));
}

// ----- Entry points and process creation. -----

#[test]
fn x32_syscalls_are_denied() {
    let getpid_x32 = libc::SYS_getpid | 0x4000_0000;
    let call = || code(raw(getpid_x32, [0; 6]));
    assert_eq!(
        run_child(Some(&filter(false, false)), call),
        Outcome::Exited(libc::EPERM)
    );
    assert_eq!(
        run_child(Some(&filter(false, true)), call),
        Outcome::Exited(SENTINEL)
    );
}

/// i386 `getpid` (20) through `int 0x80`; `r8`-`r11` are clobbered by that entry.
#[cfg(target_arch = "x86_64")]
fn int80_getpid() -> i64 {
    let ret: i64;
    // SAFETY: i386 getpid takes no argument and touches no memory; the registers the 32-bit entry
    // may clobber are declared, and no stack is used.
    unsafe {
        core::arch::asm!(
            "int 0x80",
            inlateout("rax") 20i64 => ret,
            lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(target_arch = "x86_64")]
#[test]
fn int80_entry_kills_the_process() {
    let call = || match (int80_getpid(), raw(libc::SYS_getpid, [0; 6])) {
        (pid, Ok(native)) if pid == native => 0,
        _ => 1,
    };
    let unfiltered = run_child(None, call);
    if unfiltered != Outcome::Exited(0) {
        eprintln!("skipped: no IA-32 emulation here ({unfiltered:?})");
        return;
    }
    let got = run_child(Some(&filter(false, false)), call);
    assert_eq!(got, Outcome::Signaled(libc::SIGSYS));
}

#[test]
fn clone3_gets_enosys_even_with_valid_args() {
    // struct clone_args (v2, 88 bytes): flags 0, exit_signal SIGCHLD: a plain fork.
    let mut args = [0u64; 11];
    args[4] = libc::SIGCHLD as u64;
    let args_ptr = args.as_ptr() as u64;
    let call = || fork_result(raw(libc::SYS_clone3, [args_ptr, 88, 0, 0, 0, 0]));
    for sentinel in [false, true] {
        let got = run_child(Some(&filter(false, sentinel)), call);
        assert_eq!(got, Outcome::Exited(libc::ENOSYS), "sentinel: {sentinel}");
    }
}

#[test]
fn clone_with_namespace_flags_is_denied() {
    let flags = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWCGROUP,
        libc::CLONE_NEWTIME,
        libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID,
    ];
    let normal = filter(false, false);
    let sentinel = filter(false, true);
    for flag in flags {
        let word = (flag | libc::SIGCHLD) as u64;
        for clone_flags in [word, word | (1 << 32)] {
            let call = || fork_result(raw(libc::SYS_clone, [clone_flags, 0, 0, 0, 0, 0]));
            assert_eq!(run_child(Some(&normal), call), Outcome::Exited(libc::EPERM));
            let got = run_child(Some(&sentinel), call);
            assert_eq!(
                got,
                Outcome::Exited(SENTINEL),
                "clone flags {clone_flags:#x}"
            );
        }
    }
}

#[test]
fn unshare_newuser_is_denied() {
    let call = || {
        code(raw(
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        ))
    };
    assert_eq!(
        run_child(Some(&filter(false, false)), call),
        Outcome::Exited(libc::EPERM)
    );
    assert_eq!(
        run_child(Some(&filter(false, true)), call),
        Outcome::Exited(SENTINEL)
    );
}

#[test]
fn fork_and_plain_clone_are_allowed() {
    let thread_like =
        (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
    let mut tid = 0i32;
    let tid_ptr = std::ptr::from_mut(&mut tid) as u64;
    let call = || {
        if fork_result(raw(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0])) != SUCCEEDED {
            return 1;
        }
        if fork_result(raw(libc::SYS_clone, [thread_like, 0, 0, tid_ptr, 0, 0])) != SUCCEEDED {
            return 2;
        }
        #[cfg(target_arch = "x86_64")]
        if fork_result(raw(libc::SYS_fork, [0; 6])) != SUCCEEDED {
            return 3;
        }
        0
    };
    assert_eq!(
        run_child(Some(&filter(false, true)), call),
        Outcome::Exited(0)
    );
}

// ----- Everyday syscalls keep working. -----

#[test]
fn everyday_syscalls_are_allowed() {
    let path = c"/proc/self/stat";
    let call = || {
        let mut buf = [0u8; 64];
        let buf_ptr = buf.as_mut_ptr() as u64;
        if raw(libc::SYS_getpid, [0; 6]).is_err() {
            return 1;
        }
        let at_fdcwd = libc::AT_FDCWD as u64;
        let flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
        let open = raw(
            libc::SYS_openat,
            [at_fdcwd, path.as_ptr() as u64, flags, 0, 0, 0],
        );
        let Ok(fd) = open else { return 2 };
        if !matches!(raw(libc::SYS_read, [fd as u64, buf_ptr, 64, 0, 0, 0]), Ok(n) if n > 0) {
            return 3;
        }
        if raw(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0]).is_err() {
            return 4;
        }
        let mut fds = [0i32; 2];
        let fds_ptr = fds.as_mut_ptr() as u64;
        if raw(
            libc::SYS_pipe2,
            [fds_ptr, libc::O_CLOEXEC as u64, 0, 0, 0, 0],
        )
        .is_err()
        {
            return 5;
        }
        let (r, w) = (fds[0] as u64, fds[1] as u64);
        if raw(libc::SYS_write, [w, c"x".as_ptr() as u64, 1, 0, 0, 0]) != Ok(1) {
            return 6;
        }
        if raw(libc::SYS_read, [r, buf_ptr, 1, 0, 0, 0]) != Ok(1) || buf[0] != b'x' {
            return 7;
        }
        if raw(libc::SYS_getrandom, [buf_ptr, 16, 0, 0, 0, 0]) != Ok(16) {
            return 8;
        }
        let mut ts = [0i64; 2];
        let ts_ptr = ts.as_mut_ptr() as u64;
        let monotonic = libc::CLOCK_MONOTONIC as u64;
        if raw(libc::SYS_clock_gettime, [monotonic, ts_ptr, 0, 0, 0, 0]).is_err() {
            return 9;
        }
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let map_flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let Ok(addr) = raw(libc::SYS_mmap, [0, 4096, prot, map_flags, POISON, 0]) else {
            return 10;
        };
        if raw(libc::SYS_munmap, [addr as u64, 4096, 0, 0, 0, 0]).is_err() {
            return 11;
        }
        let name = c"kiln-test".as_ptr() as u64;
        if raw(
            libc::SYS_prctl,
            [libc::PR_SET_NAME as u64, name, 0, 0, 0, 0],
        )
        .is_err()
        {
            return 12;
        }
        if raw(libc::SYS_sched_getaffinity, [0, 64, buf_ptr, 0, 0, 0]).is_err() {
            return 13;
        }
        let mut uts = [0u8; 6 * 65];
        if raw(libc::SYS_uname, [uts.as_mut_ptr() as u64, 0, 0, 0, 0, 0]).is_err() {
            return 14;
        }
        let tty_size = u64::from(libc::TIOCGWINSZ as u32);
        if raw(libc::SYS_ioctl, [POISON, tty_size, buf_ptr, 0, 0, 0]) != Err(libc::EBADF) {
            return 15;
        }
        0
    };
    assert_eq!(
        run_child(Some(&filter(false, true)), call),
        Outcome::Exited(0)
    );
}
