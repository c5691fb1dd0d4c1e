//! seccomp-bpf: the syscall allowlist every sandboxed process runs under.
//!
//! The policy is data ([`SeccompPolicy`]): a default-deny allowlist of syscalls, some of them
//! allowed only for certain argument values, plus named families of syscalls that are explicitly
//! denied, each with the errno it gets. [`SeccompPolicy::compile`] turns it into classic BPF with
//! `seccompiler` ahead of fork; the forked child only makes the `seccomp(2)` syscalls
//! ([`CompiledFilter::install`]), right before `execve`.
//!
//! What the filters do, in order of evaluation by the kernel:
//! - a syscall made through another ABI than the native one (on x86_64: the 32-bit `int 0x80` /
//!   `AUDIT_ARCH_I386` entry) kills the whole process with `SIGSYS`: seccompiler checks
//!   `seccomp_data.arch` first. x32 syscalls (native arch, number with bit `0x4000_0000`) match no
//!   entry of the allowlist and get the default errno;
//! - a syscall on the allowlist whose argument conditions hold is allowed;
//! - anything else fails with `EPERM`, except the families that need another errno: `clone3`
//!   gets `ENOSYS` so that glibc falls back to `clone`, whose flags a filter can read (clone3
//!   passes them in memory), classic AIO and `cachestat` get `ENOSYS` as on a kernel without
//!   them, and the xattr writes get `EOPNOTSUPP`, which `cp -a`, `tar` and `rsync` take for "this
//!   filesystem has no xattrs" and carry on silently;
//! - some allowed syscalls are refused for certain arguments only ([`ArgDenial`]): the tty,
//!   console and serial ioctls, and `fadvise64(POSIX_FADV_DONTNEED)`, which becomes a no-op that
//!   reports success (it would empty the page cache of host files seen through the read-only
//!   binds, for every process of the host).
//!
//! The errno overrides are separate, tiny filters installed *after* the allowlist ("this syscall,
//! or this syscall with these arguments: errno X, anything else: allow"). The kernel runs every filter and keeps the strictest action;
//! between two `ERRNO` results it keeps the one of the most recently installed filter, so the
//! override's errno wins over the allowlist's `EPERM` (seccompiler can only emit one match action
//! per filter, hence the split).

mod table;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_args;
#[cfg(test)]
mod tests_toolchains;

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use serde::Serialize;

/// Options that change the policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeccompOptions {
    /// The sandbox has a network: `socket(AF_NETLINK, _, NETLINK_ROUTE)` is allowed too, so that
    /// `getifaddrs`, `ip addr` and glibc's `getaddrinfo(AI_ADDRCONFIG)` see the interfaces.
    /// Without it the sandbox's network namespace only has loopback, and glibc copes with the
    /// netlink socket being refused.
    pub network: bool,
    /// inotify is allowed (long-lived environments, whose dev servers and build tools watch
    /// files). Refused otherwise with `ENOSYS`, as on a kernel without it: a watch on a host inode
    /// shared through the read-only binds would tell when others open that file.
    pub inotify: bool,
}

/// How one syscall argument is compared. Comparisons are on the low 32 bits of the argument,
/// which is exactly what the kernel looks at for the arguments checked here (`int` domains and
/// personalities, the `unsigned int` ioctl request, and clone's flags, of which the kernel keeps
/// only the low 32 bits): setting high bits can neither sneak past a check nor trip one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgOp {
    /// The argument equals the value.
    Eq(u32),
    /// The argument differs from the value.
    Ne(u32),
    /// `argument & mask == value`.
    MaskedEq {
        /// The bits compared.
        mask: u32,
        /// Their expected value.
        value: u32,
    },
}

/// One condition on one argument (0-based index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ArgCond {
    /// Index of the argument, 0 to 5.
    pub arg: u8,
    /// The comparison.
    pub op: ArgOp,
}

/// One allowed syscall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyscallRule {
    /// The syscall's name, as in `man 2`.
    pub name: &'static str,
    /// Its number on this architecture.
    pub nr: i64,
    /// Empty: allowed whatever the arguments. Otherwise allowed when all the conditions of at
    /// least one inner list hold (a disjunction of conjunctions); denied with the default errno
    /// when none does.
    pub any_of: Vec<Vec<ArgCond>>,
}

/// A family of syscalls that is explicitly denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeniedFamily {
    /// Short name of the family (`"mount"`, `"ptrace"`, ...).
    pub family: &'static str,
    /// The syscalls of the family that exist on this architecture, with their numbers.
    pub syscalls: Vec<(&'static str, i64)>,
    /// The errno they fail with.
    pub errno: i32,
}

/// An allowed syscall refused for some argument values, with its own errno. Errno 0 makes the
/// call a no-op that reports success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDenial {
    /// What is refused (`TIOCSETD`, `POSIX_FADV_DONTNEED`).
    pub what: &'static str,
    /// The syscall's name.
    pub name: &'static str,
    /// Its number on this architecture.
    pub nr: i64,
    /// Refused when all of these hold.
    pub when: Vec<ArgCond>,
    /// The errno it fails with; 0: it does nothing and returns 0.
    pub errno: i32,
}

/// The policy as data: which syscalls are allowed (some with argument conditions), which
/// families are explicitly denied, with the errno each gets, and which allowed syscalls are
/// refused for some arguments. Anything neither allowed nor in a family gets the default errno
/// (`EPERM`).
#[derive(Debug, Clone, Serialize)]
pub struct SeccompPolicy {
    arch: &'static str,
    default_errno: i32,
    allowed: Vec<SyscallRule>,
    denied: Vec<DeniedFamily>,
    arg_denials: Vec<ArgDenial>,
}

/// BPF programs ready to install; built before fork. The first is the allowlist, the others the
/// errno overrides.
#[derive(Debug)]
pub struct CompiledFilter {
    programs: Vec<BpfProgram>,
}

/// Errors while compiling a policy.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// No syscall table for this architecture.
    #[error("seccomp: no syscall table for architecture {0}")]
    UnsupportedArch(&'static str),
    /// A syscall appears twice in the allowlist.
    #[error("seccomp: syscall {name} (nr {nr}) is listed twice in the allowlist")]
    Duplicate {
        /// The syscall.
        name: &'static str,
        /// Its number.
        nr: i64,
    },
    /// A syscall is both allowed and in a denied family.
    #[error("seccomp: syscall {name} is both allowed and denied (family {family})")]
    Conflict {
        /// The syscall.
        name: &'static str,
        /// The family that denies it.
        family: &'static str,
    },
    /// An errno that does not fit `SECCOMP_RET_DATA` or is 0.
    #[error("seccomp: invalid errno {errno} for {what}")]
    BadErrno {
        /// The default action or the family it was given to.
        what: &'static str,
        /// The value.
        errno: i32,
    },
    /// seccompiler refused an argument condition.
    #[error("seccomp: syscall {name}: condition on argument {arg}: {source}")]
    Condition {
        /// The syscall.
        name: &'static str,
        /// The argument index.
        arg: u8,
        /// seccompiler's error.
        source: BackendError,
    },
    /// seccompiler refused a rule (a list of conditions).
    #[error("seccomp: syscall {name}: rule: {source}")]
    Rule {
        /// The syscall.
        name: &'static str,
        /// seccompiler's error.
        source: BackendError,
    },
    /// seccompiler could not build or translate a whole filter.
    #[error("seccomp: filter {filter}: {source}")]
    Filter {
        /// Which filter (`allowlist`, `errno N override`).
        filter: String,
        /// seccompiler's error.
        source: BackendError,
    },
}

/// The namespace flags `clone` must not carry. `CLONE_NEWTIME` (0x80) sits in clone's
/// exit-signal byte, where no valid signal sets it, so masking it out costs nothing.
const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWTIME) as u32;

/// `personality(2)` values allowed: `PER_LINUX`, `PER_LINUX | ADDR_NO_RANDOMIZE` (what
/// `setarch -R` and debuggers set, it only affects the caller's own later execs) and the query
/// `0xffffffff`. Not `UNAME26` (0x0020000, a past kernel-memory leak), `READ_IMPLIES_EXEC` nor the
/// 32-bit personalities.
const PERSONALITY_ALLOWED: [u32; 3] = [0, ADDR_NO_RANDOMIZE, 0xffff_ffff];
const ADDR_NO_RANDOMIZE: u32 = 0x0040000;
/// The socket type without `SOCK_NONBLOCK` / `SOCK_CLOEXEC` (the kernel's `SOCK_TYPE_MASK`).
const SOCK_TYPE_MASK: u32 = 0xf;

fn cond(arg: u8, op: ArgOp) -> ArgCond {
    ArgCond { arg, op }
}

fn eq(arg: u8, value: i32) -> ArgCond {
    cond(arg, ArgOp::Eq(value as u32))
}

/// `socket(2)`: AF_UNIX with any type; AF_INET/AF_INET6 only as TCP (stream, protocol 0 or TCP)
/// or UDP/ping (datagram, protocol 0, UDP or ICMP) so no raw, packet, SCTP, DCCP or MPTCP socket
/// and no protocol-module autoload; AF_NETLINK only as NETLINK_ROUTE and only with a network.
/// Every other family (AF_PACKET, AF_ALG, AF_VSOCK, AF_KEY, ...) is refused.
fn socket_rules(network: bool) -> Vec<Vec<ArgCond>> {
    let mut rules = vec![vec![eq(0, libc::AF_UNIX)]];
    for (domain, icmp) in [
        (libc::AF_INET, libc::IPPROTO_ICMP),
        (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    ] {
        let kinds = [
            (libc::SOCK_STREAM, &[0, libc::IPPROTO_TCP][..]),
            (libc::SOCK_DGRAM, &[0, libc::IPPROTO_UDP, icmp][..]),
        ];
        for (ty, protocols) in kinds {
            for &protocol in protocols {
                rules.push(vec![
                    eq(0, domain),
                    cond(
                        1,
                        ArgOp::MaskedEq {
                            mask: SOCK_TYPE_MASK,
                            value: ty as u32,
                        },
                    ),
                    eq(2, protocol),
                ]);
            }
        }
    }
    if network {
        rules.push(vec![eq(0, libc::AF_NETLINK), eq(2, libc::NETLINK_ROUTE)]);
    }
    rules
}

fn checked(sys: table::Sys, any_of: Vec<Vec<ArgCond>>) -> SyscallRule {
    SyscallRule {
        name: sys.name(),
        nr: sys.nr,
        any_of,
    }
}

impl SeccompPolicy {
    /// The default policy for sandboxed programs: broad enough for shells and coreutils, Python,
    /// Node, the JVM, gcc/clang, rustc, Go, Perl, Ruby, PHP, Lua and SQLite (modelled on Docker's
    /// default profile), minus mount, namespaces, ptrace, bpf, perf, modules, kexec, keyrings,
    /// userfaultfd, io_uring, clock setting and the other families of
    /// [`SeccompPolicy::denied_families`].
    ///
    /// `prctl` is allowed whole: its powerful options are gated by capabilities the sandbox does
    /// not have (`PR_SET_MM`, `PR_SET_IO_FLUSHER`), only shrink privileges (`PR_SET_NO_NEW_PRIVS`,
    /// `PR_CAPBSET_DROP`, `PR_SET_SECCOMP`) or touch only the caller (`PR_SET_NAME`,
    /// `PR_SET_PDEATHSIG`, `PR_SET_CHILD_SUBREAPER`...); `PR_SET_PTRACER` is moot with `ptrace`
    /// denied. Likewise `seccomp` and `landlock_*` are allowed: they can only add restrictions.
    pub fn sandbox(opts: SeccompOptions) -> Self {
        let mut allowed: Vec<SyscallRule> = table::allowed()
            .map(|sys| checked(sys, Vec::new()))
            .collect();
        if let Some(clone) = table::CLONE {
            let flags_ok = ArgOp::MaskedEq {
                mask: CLONE_NS_FLAGS,
                value: 0,
            };
            allowed.push(checked(clone, vec![vec![cond(0, flags_ok)]]));
        }
        if let Some(socket) = table::SOCKET {
            allowed.push(checked(socket, socket_rules(opts.network)));
        }
        if let Some(socketpair) = table::SOCKETPAIR {
            allowed.push(checked(socketpair, vec![vec![eq(0, libc::AF_UNIX)]]));
        }
        if let Some(ioctl) = table::IOCTL {
            // Refused for the requests of `IOCTL_DENIED` by a filter of its own.
            allowed.push(checked(ioctl, Vec::new()));
        }
        if opts.inotify {
            allowed.extend(table::INOTIFY.iter().map(|&sys| checked(sys, Vec::new())));
        }
        if let Some(personality) = table::PERSONALITY {
            let values = PERSONALITY_ALLOWED
                .iter()
                .map(|&p| vec![cond(0, ArgOp::Eq(p))])
                .collect();
            allowed.push(checked(personality, values));
        }
        allowed.sort_by_key(|rule| rule.nr);

        let default_errno = libc::EPERM;
        let mut denied: Vec<DeniedFamily> = table::DENIED_FAMILIES
            .iter()
            .map(|&(family, names)| DeniedFamily {
                family,
                syscalls: names
                    .iter()
                    .filter_map(|&name| table::denied_nr(name).map(|nr| (name, nr)))
                    .collect(),
                errno: table::family_errno(family).unwrap_or(default_errno),
            })
            .filter(|family| !family.syscalls.is_empty())
            .collect();
        if !opts.inotify && !table::INOTIFY.is_empty() {
            denied.push(DeniedFamily {
                family: "inotify",
                syscalls: table::INOTIFY.iter().map(|s| (s.name(), s.nr)).collect(),
                errno: libc::ENOSYS,
            });
        }
        Self {
            arch: std::env::consts::ARCH,
            default_errno,
            allowed,
            denied,
            arg_denials: arg_denials(),
        }
    }

    /// Changes the errno of everything denied without a specific errno (`EPERM` by default).
    pub fn with_default_errno(mut self, errno: i32) -> Self {
        for family in &mut self.denied {
            if family.errno == self.default_errno {
                family.errno = errno;
            }
        }
        for denial in &mut self.arg_denials {
            if denial.errno == self.default_errno {
                denial.errno = errno;
            }
        }
        self.default_errno = errno;
        self
    }

    /// The names of the allowed syscalls (some only with certain arguments, see
    /// [`SeccompPolicy::rules`]), by syscall number.
    pub fn allowed_syscalls(&self) -> impl Iterator<Item = &str> {
        self.allowed.iter().map(|rule| rule.name)
    }

    /// The allowlist with its argument conditions.
    pub fn rules(&self) -> &[SyscallRule] {
        &self.allowed
    }

    /// The explicitly denied families present on this architecture, with their errnos.
    pub fn denied(&self) -> &[DeniedFamily] {
        &self.denied
    }

    /// The allowed syscalls that are refused for some arguments.
    pub fn arg_denials(&self) -> &[ArgDenial] {
        &self.arg_denials
    }

    /// The errno of syscalls that are neither allowed nor in a family with its own errno.
    pub fn default_errno(&self) -> i32 {
        self.default_errno
    }

    /// The explicitly denied families and their syscalls, by name (names that do not exist on the
    /// running architecture are left out of [`SeccompPolicy::denied`]). Beyond these, anything
    /// not allowed is denied, as are `clone` with namespace flags, the socket families and types
    /// refused by the `socket` rule, other personalities, the [`SeccompPolicy::arg_denials`], and
    /// every syscall made through the 32-bit entry (which kills the process).
    pub fn denied_families() -> &'static [(&'static str, &'static [&'static str])] {
        table::DENIED_FAMILIES
    }

    /// Builds the BPF programs (allocates; do it before fork).
    pub fn compile(&self) -> Result<CompiledFilter, SeccompError> {
        if !table::SUPPORTED {
            return Err(SeccompError::UnsupportedArch(self.arch));
        }
        let arch = TargetArch::try_from(self.arch)
            .map_err(|_| SeccompError::UnsupportedArch(self.arch))?;
        let default_errno = errno_data("the default action", self.default_errno)?;

        let mut allowlist: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for rule in &self.allowed {
            if allowlist.insert(rule.nr, to_seccompiler(rule)?).is_some() {
                return Err(SeccompError::Duplicate {
                    name: rule.name,
                    nr: rule.nr,
                });
            }
        }
        let mut overrides: BTreeMap<u32, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
        for family in &self.denied {
            let errno = errno_data(family.family, family.errno)?;
            for &(name, nr) in &family.syscalls {
                if allowlist.contains_key(&nr) {
                    return Err(SeccompError::Conflict {
                        name,
                        family: family.family,
                    });
                }
                if errno != default_errno {
                    overrides.entry(errno).or_default().insert(nr, Vec::new());
                }
            }
        }
        // Always a filter of their own, whatever the errno: the allowlist lets these syscalls
        // through.
        for denial in &self.arg_denials {
            let errno = u32::try_from(denial.errno)
                .ok()
                .filter(|e| *e <= 4095)
                .ok_or(SeccompError::BadErrno {
                    what: denial.what,
                    errno: denial.errno,
                })?;
            let rule = SyscallRule {
                name: denial.name,
                nr: denial.nr,
                any_of: vec![denial.when.clone()],
            };
            overrides
                .entry(errno)
                .or_default()
                .entry(denial.nr)
                .or_default()
                .extend(to_seccompiler(&rule)?);
        }

        let mut programs = vec![build(
            "allowlist".to_owned(),
            allowlist,
            SeccompAction::Errno(default_errno),
            SeccompAction::Allow,
            arch,
        )?];
        for (errno, syscalls) in overrides {
            programs.push(build(
                format!("errno {errno} override"),
                syscalls,
                SeccompAction::Allow,
                SeccompAction::Errno(errno),
                arch,
            )?);
        }
        Ok(CompiledFilter { programs })
    }
}

/// `ioctl(2)` requests refused in every sandbox, by the low 32 bits of the request (what the
/// kernel reads): tty input injection and line-discipline changes (on a kernel with
/// `dev.tty.ldisc_autoload=1` a new line discipline loads a module, and several have had root
/// exploits), the console and virtual-terminal families, and the serial-port configuration.
#[rustfmt::skip]
const IOCTL_DENIED: &[(&str, ArgOp)] = &[
    ("TIOCSTI", ArgOp::Eq(0x5412)),
    ("TIOCLINUX", ArgOp::Eq(0x541C)),
    ("TIOCCONS", ArgOp::Eq(0x541D)),
    ("TIOCGSERIAL", ArgOp::Eq(0x541E)),
    ("TIOCSSERIAL", ArgOp::Eq(0x541F)),
    ("TIOCSETD", ArgOp::Eq(0x5423)),
    ("TIOCVHANGUP", ArgOp::Eq(0x5437)),
    ("TIOCSERCONFIG", ArgOp::Eq(0x5453)),
    ("TIOCSERGWILD", ArgOp::Eq(0x5454)),
    ("TIOCSERSWILD", ArgOp::Eq(0x5455)),
    ("TIOCSLCKTRMIOS", ArgOp::Eq(0x5457)),
    ("TIOCSERGSTRUCT", ArgOp::Eq(0x5458)),
    ("TIOCSERGETLSR", ArgOp::Eq(0x5459)),
    ("TIOCSERGETMULTI", ArgOp::Eq(0x545A)),
    ("TIOCSERSETMULTI", ArgOp::Eq(0x545B)),
    ("TIOCMIWAIT", ArgOp::Eq(0x545C)),
    ("TIOCGICOUNT", ArgOp::Eq(0x545D)),
    // KDSETMODE, KDSKBMODE, KDSETKEYCODE, PIO_FONT and the rest of the console's 0x4Bxx.
    ("console KD*", ArgOp::MaskedEq { mask: 0xFFFF_FF00, value: 0x4B00 }),
    // VT_ACTIVATE, VT_SETMODE, VT_DISALLOCATE and the rest of 0x56xx.
    ("virtual terminal VT_*", ArgOp::MaskedEq { mask: 0xFFFF_FF00, value: 0x5600 }),
];

/// `POSIX_FADV_DONTNEED` (the same value on x86_64 and aarch64).
const POSIX_FADV_DONTNEED: i32 = 4;

fn arg_denials() -> Vec<ArgDenial> {
    let mut out = Vec::new();
    if let Some(ioctl) = table::IOCTL {
        out.extend(IOCTL_DENIED.iter().map(|&(what, op)| ArgDenial {
            what,
            name: ioctl.name(),
            nr: ioctl.nr,
            when: vec![cond(1, op)],
            errno: libc::EPERM,
        }));
    }
    if let Some(fadvise) = table::FADVISE {
        out.push(ArgDenial {
            what: "POSIX_FADV_DONTNEED",
            name: fadvise.name(),
            nr: fadvise.nr,
            when: vec![eq(3, POSIX_FADV_DONTNEED)],
            errno: 0,
        });
    }
    out
}

fn errno_data(what: &'static str, errno: i32) -> Result<u32, SeccompError> {
    match u32::try_from(errno) {
        Ok(e) if (1..=4095).contains(&e) => Ok(e),
        _ => Err(SeccompError::BadErrno { what, errno }),
    }
}

fn to_seccompiler(rule: &SyscallRule) -> Result<Vec<SeccompRule>, SeccompError> {
    rule.any_of
        .iter()
        .map(|conds| {
            let conds = conds
                .iter()
                .map(|c| {
                    let (op, value) = match c.op {
                        ArgOp::Eq(v) => (SeccompCmpOp::Eq, v),
                        ArgOp::Ne(v) => (SeccompCmpOp::Ne, v),
                        ArgOp::MaskedEq { mask, value } => {
                            (SeccompCmpOp::MaskedEq(u64::from(mask)), value)
                        }
                    };
                    SeccompCondition::new(c.arg, SeccompCmpArgLen::Dword, op, u64::from(value))
                        .map_err(|source| SeccompError::Condition {
                            name: rule.name,
                            arg: c.arg,
                            source,
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            SeccompRule::new(conds).map_err(|source| SeccompError::Rule {
                name: rule.name,
                source,
            })
        })
        .collect()
}

fn build(
    filter: String,
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, SeccompError> {
    SeccompFilter::new(rules, mismatch, matched, arch)
        .and_then(BpfProgram::try_from)
        .map_err(|source| SeccompError::Filter { filter, source })
}

// The kernel reads seccompiler's instructions as its own `struct sock_filter`.
const _: () = assert!(
    size_of::<seccompiler::sock_filter>() == size_of::<libc::sock_filter>()
        && align_of::<seccompiler::sock_filter>() == align_of::<libc::sock_filter>()
);

impl CompiledFilter {
    /// Installs the filters on the calling thread. Async-signal-safe: it is called in a freshly
    /// forked child, so it does not allocate, lock or log, only `seccomp(SECCOMP_SET_MODE_FILTER)`
    /// syscalls. The caller has already set no_new_privs (or holds `CAP_SYS_ADMIN`). Returns the
    /// raw errno on failure; the filters installed before a failure stay, so the caller must give
    /// up (`_exit`) rather than exec. Install it last, right before `execve`: afterwards only
    /// allowlisted syscalls work.
    pub fn install(&self) -> io::Result<()> {
        for program in &self.programs {
            install_program(program)?;
        }
        Ok(())
    }

    /// The BPF programs, in installation order (the allowlist first).
    pub fn programs(&self) -> &[BpfProgram] {
        &self.programs
    }
}

fn install_program(program: &[seccompiler::sock_filter]) -> io::Result<()> {
    let Ok(len) = u16::try_from(program.len()) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `fprog` describes `len` initialised instructions that outlive the call, laid out as
    // the kernel's `struct sock_filter` (asserted above); the kernel only reads them (it copies the
    // program) and keeps no pointer into our memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &raw const fprog,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
