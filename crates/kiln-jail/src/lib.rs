//! kiln-jail owns everything Kiln does to the Linux kernel to isolate a program: the namespaces a
//! sandbox is born in, its tmpfs root entered by pivot_root, its cgroups (v1 and v2, detected per
//! controller) with their limits and accounting, the rlimits, capability drop, no_new_privs,
//! Landlock and seccomp-bpf applied to every process, the host uids each sandbox maps onto, and
//! the warden, the single-threaded PID 1 that runs inside each sandbox and spawns processes on
//! request over a control socket. It is synchronous and knows nothing of tokio or HTTP;
//! `kiln-engine` drives it.

pub mod cgroup;
pub mod exec;
pub mod landlock;
pub mod protocol;
pub mod rootfs;
pub mod sandbox;
pub mod seccomp;
pub mod uids;
pub mod warden;
