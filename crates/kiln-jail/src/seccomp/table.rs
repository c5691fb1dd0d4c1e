//! The syscall tables behind [`super::SeccompPolicy::sandbox`]: what is allowed without argument
//! checks, the syscalls allowed with checks (their rules are in `mod.rs`), and the explicitly
//! denied families. Numbers come from `libc::SYS_*`; the few syscalls newer than the `libc` crate
//! get their number here, from the kernel's syscall tables.

/// A syscall of the running architecture.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sys {
    /// The `libc` constant's name, `SYS_` and all.
    ident: &'static str,
    pub(super) nr: i64,
}

impl Sys {
    /// A syscall the `libc` crate does not know, by name and number.
    const fn new(name: &'static str, nr: i64) -> Self {
        Self { ident: name, nr }
    }

    /// The syscall's name, e.g. `read` or `_sysctl`.
    pub(super) fn name(self) -> &'static str {
        self.ident.strip_prefix("SYS_").unwrap_or(self.ident)
    }
}

/// `sys![SYS_read, SYS_write]`: a table of [`Sys`] from `libc` constants.
macro_rules! sys {
    ($($id:ident),* $(,)?) => {
        &[$(Sys { ident: stringify!($id), nr: libc::$id }),*]
    };
}

/// Whether this architecture has tables (and therefore a policy).
pub(super) const SUPPORTED: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Allowed whatever the arguments, on every supported architecture.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[rustfmt::skip]
const ALLOWED_COMMON: &[Sys] = sys![
    // File I/O.
    SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_pread64, SYS_pwrite64, SYS_preadv, SYS_pwritev,
    SYS_preadv2, SYS_pwritev2, SYS_lseek, SYS_openat, SYS_openat2, SYS_close, SYS_close_range,
    SYS_dup, SYS_dup3, SYS_fcntl, SYS_flock, SYS_fsync, SYS_fdatasync, SYS_sync, SYS_syncfs,
    SYS_sync_file_range, SYS_truncate, SYS_ftruncate, SYS_fallocate, SYS_fadvise64, SYS_readahead,
    SYS_sendfile, SYS_copy_file_range, SYS_splice, SYS_tee, SYS_vmsplice,
    // Metadata and directories. Extended attributes: read only.
    SYS_newfstatat, SYS_fstat, SYS_statx, SYS_statfs, SYS_fstatfs, SYS_faccessat, SYS_faccessat2,
    SYS_getdents64, SYS_getcwd, SYS_chdir, SYS_fchdir, SYS_mkdirat, SYS_mknodat, SYS_unlinkat,
    SYS_renameat2, SYS_linkat, SYS_symlinkat, SYS_readlinkat, SYS_fchmod, SYS_fchmodat, SYS_fchown,
    SYS_fchownat, SYS_utimensat, SYS_umask, SYS_getxattr, SYS_lgetxattr, SYS_fgetxattr,
    SYS_listxattr, SYS_llistxattr, SYS_flistxattr,
    // Pipes, polling, event fds.
    SYS_pipe2, SYS_eventfd2, SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait, SYS_epoll_pwait2,
    SYS_ppoll, SYS_pselect6, SYS_signalfd4, SYS_timerfd_create, SYS_timerfd_settime,
    SYS_timerfd_gettime, SYS_memfd_create,
    // Memory (mlock is bounded by RLIMIT_MEMLOCK and the cgroup).
    SYS_brk, SYS_mmap, SYS_munmap, SYS_mprotect, SYS_mremap, SYS_madvise, SYS_mincore, SYS_msync,
    SYS_mlock, SYS_mlock2, SYS_munlock, SYS_mlockall, SYS_munlockall, SYS_mbind, SYS_get_mempolicy,
    SYS_set_mempolicy, SYS_set_mempolicy_home_node, SYS_pkey_alloc, SYS_pkey_free,
    SYS_pkey_mprotect, SYS_remap_file_pages, SYS_membarrier, SYS_mseal,
    // Processes and threads (clone is checked; clone3 gets ENOSYS).
    SYS_execve, SYS_execveat, SYS_exit, SYS_exit_group, SYS_wait4, SYS_waitid, SYS_kill, SYS_tkill,
    SYS_tgkill, SYS_getpid, SYS_getppid, SYS_gettid, SYS_setpgid, SYS_getpgid, SYS_setsid,
    SYS_getsid, SYS_set_tid_address, SYS_set_robust_list, SYS_get_robust_list, SYS_rseq, SYS_futex,
    SYS_futex_waitv, SYS_prctl, SYS_pidfd_open, SYS_pidfd_send_signal, SYS_restart_syscall,
    SYS_seccomp, SYS_landlock_create_ruleset, SYS_landlock_add_rule, SYS_landlock_restrict_self,
    SYS_capget, SYS_capset, SYS_prlimit64, SYS_getrusage, SYS_getpriority, SYS_setpriority,
    SYS_ioprio_get, SYS_ioprio_set, SYS_getcpu, SYS_uname, SYS_sysinfo, SYS_times, SYS_getrandom,
    // Scheduling (real-time classes need RLIMIT_RTPRIO or CAP_SYS_NICE).
    SYS_sched_yield, SYS_sched_getaffinity, SYS_sched_setaffinity, SYS_sched_getparam,
    SYS_sched_setparam, SYS_sched_getscheduler, SYS_sched_setscheduler, SYS_sched_get_priority_max,
    SYS_sched_get_priority_min, SYS_sched_rr_get_interval, SYS_sched_getattr, SYS_sched_setattr,
    // Signals.
    SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_rt_sigpending, SYS_rt_sigtimedwait,
    SYS_rt_sigqueueinfo, SYS_rt_tgsigqueueinfo, SYS_rt_sigsuspend, SYS_sigaltstack,
    // Time (reading it; setting it is denied).
    SYS_clock_gettime, SYS_clock_getres, SYS_clock_nanosleep, SYS_nanosleep, SYS_gettimeofday,
    SYS_getitimer, SYS_setitimer, SYS_timer_create, SYS_timer_settime, SYS_timer_gettime,
    SYS_timer_getoverrun, SYS_timer_delete,
    // Credentials (changing them needs capabilities the sandbox lacks).
    SYS_getuid, SYS_geteuid, SYS_getgid, SYS_getegid, SYS_getresuid, SYS_getresgid, SYS_getgroups,
    SYS_setuid, SYS_setgid, SYS_setreuid, SYS_setregid, SYS_setresuid, SYS_setresgid,
    SYS_setgroups, SYS_setfsuid, SYS_setfsgid,
    // Sockets (socket and socketpair are checked).
    SYS_connect, SYS_accept, SYS_accept4, SYS_bind, SYS_listen, SYS_getsockname, SYS_getpeername,
    SYS_sendto, SYS_recvfrom, SYS_sendmsg, SYS_recvmsg, SYS_sendmmsg, SYS_recvmmsg, SYS_shutdown,
    SYS_setsockopt, SYS_getsockopt,
    // SysV and POSIX IPC (the sandbox has its own IPC namespace).
    SYS_shmget, SYS_shmat, SYS_shmctl, SYS_shmdt, SYS_semget, SYS_semop, SYS_semctl,
    SYS_semtimedop, SYS_msgget, SYS_msgsnd, SYS_msgrcv, SYS_msgctl, SYS_mq_open, SYS_mq_unlink,
    SYS_mq_timedsend, SYS_mq_timedreceive, SYS_mq_notify, SYS_mq_getsetattr,
];

/// Allowed, x86_64 only: the legacy syscalls the generic table dropped, and x86 TLS.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const ALLOWED_ARCH: &[Sys] = sys![
    SYS_open, SYS_creat, SYS_stat, SYS_lstat, SYS_access, SYS_poll, SYS_select, SYS_pipe, SYS_dup2,
    SYS_pause, SYS_alarm, SYS_fork, SYS_vfork, SYS_getdents, SYS_rename, SYS_renameat, SYS_mkdir,
    SYS_rmdir, SYS_link, SYS_unlink, SYS_symlink, SYS_readlink, SYS_chmod, SYS_chown, SYS_lchown,
    SYS_utime, SYS_utimes, SYS_futimesat, SYS_mknod, SYS_getpgrp, SYS_time, SYS_epoll_create, SYS_epoll_wait, SYS_signalfd, SYS_eventfd, SYS_getrlimit, SYS_setrlimit,
    SYS_fchmodat2, SYS_arch_prctl, SYS_set_thread_area, SYS_get_thread_area,
];

/// Allowed, aarch64 only.
#[cfg(target_arch = "aarch64")]
const ALLOWED_ARCH: &[Sys] = &[Sys::new("fchmodat2", 452)];

#[cfg(target_arch = "x86_64")]
const IO_PGETEVENTS: i64 = 333;
#[cfg(target_arch = "aarch64")]
const IO_PGETEVENTS: i64 = 292;

/// inotify: allowed only in sandboxes that ask for it (long-lived environments whose tools watch
/// files). Elsewhere it is refused: a watch on a host inode that the read-only binds share tells
/// when the host or another sandbox opens that file.
#[cfg(target_arch = "x86_64")]
pub(super) const INOTIFY: &[Sys] = sys![
    SYS_inotify_init,
    SYS_inotify_init1,
    SYS_inotify_add_watch,
    SYS_inotify_rm_watch,
];
#[cfg(target_arch = "aarch64")]
pub(super) const INOTIFY: &[Sys] = sys![
    SYS_inotify_init1,
    SYS_inotify_add_watch,
    SYS_inotify_rm_watch
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(super) const INOTIFY: &[Sys] = &[];

/// Allowed syscalls newer than the `libc` crate's tables. Same numbers in the x86_64 and the
/// generic (aarch64) tables unless noted.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const ALLOWED_NEW: &[Sys] = &[
    // glibc allocates shadow stacks for threads with it when CET/GCS is on.
    Sys::new("map_shadow_stack", 453),
    Sys::new("futex_wake", 454),
    Sys::new("futex_wait", 455),
    Sys::new("futex_requeue", 456),
    Sys::new("getxattrat", 464),
    Sys::new("listxattrat", 465),
    // The kernel's uretprobe trampoline calls it; outside the trampoline it just kills the caller.
    #[cfg(target_arch = "x86_64")]
    Sys::new("uretprobe", 335),
];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ALLOWED_COMMON: &[Sys] = &[];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ALLOWED_ARCH: &[Sys] = &[];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ALLOWED_NEW: &[Sys] = &[];

/// Every syscall allowed without argument checks.
pub(super) fn allowed() -> impl Iterator<Item = Sys> {
    ALLOWED_COMMON
        .iter()
        .chain(ALLOWED_ARCH)
        .chain(ALLOWED_NEW)
        .copied()
}

/// The syscalls allowed with argument checks, or allowed but refused for some arguments (their
/// rules are in `mod.rs`). ioctl and fadvise64 are allowed whole and refused by argument.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod checked {
    use super::Sys;
    pub(in super::super) const CLONE: Option<Sys> = Some(Sys::new("clone", libc::SYS_clone));
    pub(in super::super) const SOCKET: Option<Sys> = Some(Sys::new("socket", libc::SYS_socket));
    pub(in super::super) const SOCKETPAIR: Option<Sys> =
        Some(Sys::new("socketpair", libc::SYS_socketpair));
    pub(in super::super) const IOCTL: Option<Sys> = Some(Sys::new("ioctl", libc::SYS_ioctl));
    pub(in super::super) const FADVISE: Option<Sys> =
        Some(Sys::new("fadvise64", libc::SYS_fadvise64));
    pub(in super::super) const PERSONALITY: Option<Sys> =
        Some(Sys::new("personality", libc::SYS_personality));
}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod checked {
    use super::Sys;
    pub(in super::super) const CLONE: Option<Sys> = None;
    pub(in super::super) const SOCKET: Option<Sys> = None;
    pub(in super::super) const SOCKETPAIR: Option<Sys> = None;
    pub(in super::super) const IOCTL: Option<Sys> = None;
    pub(in super::super) const FADVISE: Option<Sys> = None;
    pub(in super::super) const PERSONALITY: Option<Sys> = None;
}
pub(super) use checked::{CLONE, FADVISE, IOCTL, PERSONALITY, SOCKET, SOCKETPAIR};

/// The explicitly denied families. Everything not allowed is denied anyway; these are listed so
/// that tests prove each one and `kiln doctor` can show them.
#[rustfmt::skip]
pub(super) static DENIED_FAMILIES: &[(&str, &[&str])] = &[
    ("mount", &[
        "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "open_tree_attr",
        "fsopen", "fsmount", "fsconfig", "fspick", "mount_setattr",
    ]),
    ("namespaces", &["unshare", "setns"]),
    ("clone3", &["clone3"]),
    ("ptrace", &[
        "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "process_mrelease",
        "pidfd_getfd", "kcmp",
    ]),
    ("bpf", &["bpf"]),
    ("perf", &["perf_event_open"]),
    ("modules", &[
        "init_module", "finit_module", "delete_module", "create_module", "get_kernel_syms",
        "query_module",
    ]),
    ("kexec-reboot", &["kexec_load", "kexec_file_load", "reboot"]),
    ("keyring", &["keyctl", "add_key", "request_key"]),
    ("userfaultfd", &["userfaultfd"]),
    ("io_uring", &["io_uring_setup", "io_uring_enter", "io_uring_register"]),
    // Every io_setup takes from the host-wide fs.aio-max-nr, which one sandbox could drain.
    ("aio", &[
        "io_setup", "io_destroy", "io_submit", "io_getevents", "io_cancel", "io_pgetevents",
    ]),
    // Tells which pages of a host file are cached: which files the host and other sandboxes use.
    ("cachestat", &["cachestat"]),
    ("swap", &["swapon", "swapoff"]),
    ("clock-set", &["settimeofday", "clock_settime", "clock_adjtime", "adjtimex"]),
    ("host-identity", &["sethostname", "setdomainname"]),
    ("acct-quota", &["acct", "quotactl", "quotactl_fd"]),
    ("syslog", &["syslog"]),
    ("fs-handles", &["name_to_handle_at", "open_by_handle_at"]),
    ("fanotify", &["fanotify_init", "fanotify_mark"]),
    ("x86-io", &["iopl", "ioperm", "modify_ldt"]),
    ("legacy", &[
        "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl", "lookup_dcookie", "vhangup",
    ]),
    ("xattr-write", &[
        "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
        "setxattrat", "removexattrat",
    ]),
];

/// Families that fail with another errno than the policy's default.
pub(super) fn family_errno(family: &str) -> Option<i32> {
    match family {
        // glibc (and Go, and libuv) fall back to clone(2) on ENOSYS only.
        "clone3" => Some(libc::ENOSYS),
        // As on a kernel built without them: programs fall back to threads and plain reads.
        "aio" | "cachestat" => Some(libc::ENOSYS),
        // "No xattrs on this filesystem": cp -a, tar and rsync carry on without a warning.
        "xattr-write" => Some(libc::EOPNOTSUPP),
        _ => None,
    }
}

/// The numbers of the denied syscalls on this architecture.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[rustfmt::skip]
const DENIED_COMMON: &[Sys] = sys![
    SYS_mount, SYS_umount2, SYS_pivot_root, SYS_chroot, SYS_move_mount, SYS_open_tree, SYS_fsopen,
    SYS_fsmount, SYS_fsconfig, SYS_fspick, SYS_mount_setattr, SYS_unshare, SYS_setns, SYS_clone3,
    SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_process_madvise,
    SYS_process_mrelease, SYS_pidfd_getfd, SYS_kcmp, SYS_bpf, SYS_perf_event_open, SYS_init_module,
    SYS_finit_module, SYS_delete_module, SYS_kexec_load, SYS_kexec_file_load, SYS_reboot,
    SYS_keyctl, SYS_add_key, SYS_request_key, SYS_userfaultfd, SYS_io_uring_setup,
    SYS_io_uring_enter, SYS_io_uring_register, SYS_swapon, SYS_swapoff, SYS_settimeofday,
    SYS_clock_settime, SYS_clock_adjtime, SYS_adjtimex, SYS_sethostname, SYS_setdomainname,
    SYS_acct, SYS_quotactl, SYS_quotactl_fd, SYS_syslog, SYS_name_to_handle_at,
    SYS_open_by_handle_at, SYS_fanotify_init, SYS_fanotify_mark, SYS_nfsservctl,
    SYS_lookup_dcookie, SYS_vhangup, SYS_setxattr, SYS_lsetxattr, SYS_fsetxattr, SYS_removexattr,
    SYS_lremovexattr, SYS_fremovexattr, SYS_io_setup, SYS_io_destroy, SYS_io_submit,
    SYS_io_getevents, SYS_io_cancel,
];

#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const DENIED_ARCH: &[Sys] = sys![
    SYS_iopl, SYS_ioperm, SYS_modify_ldt, SYS_uselib, SYS_ustat, SYS_sysfs, SYS__sysctl,
];
#[cfg(not(target_arch = "x86_64"))]
const DENIED_ARCH: &[Sys] = &[];

/// Denied syscalls newer (or older) than the `libc` crate's tables.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const DENIED_EXTRA: &[Sys] = &[
    Sys::new("io_pgetevents", IO_PGETEVENTS),
    Sys::new("cachestat", 451),
    Sys::new("setxattrat", 463),
    Sys::new("removexattrat", 466),
    Sys::new("open_tree_attr", 467),
    // Removed in Linux 2.6, still reserved in the x86_64 table.
    #[cfg(target_arch = "x86_64")]
    Sys::new("create_module", 174),
    #[cfg(target_arch = "x86_64")]
    Sys::new("get_kernel_syms", 177),
    #[cfg(target_arch = "x86_64")]
    Sys::new("query_module", 178),
];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const DENIED_COMMON: &[Sys] = &[];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const DENIED_EXTRA: &[Sys] = &[];

/// The number of a denied syscall, `None` when it does not exist on this architecture.
pub(super) fn denied_nr(name: &str) -> Option<i64> {
    DENIED_COMMON
        .iter()
        .chain(DENIED_ARCH)
        .chain(DENIED_EXTRA)
        .find(|sys| sys.name() == name)
        .map(|sys| sys.nr)
}
