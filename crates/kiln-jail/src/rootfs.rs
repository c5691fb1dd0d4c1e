//! The sandbox's root filesystem. The warden builds it right after it starts, inside its new user and
//! mount namespaces: a fresh tmpfs becomes `/`, the host's system dirs are bound read-only, `/etc` is
//! generated, `/proc` is new, `/dev` is minimal, `/tmp` and `/workspace` are size-limited tmpfs, and
//! `pivot_root` leaves the host's tree behind. Then the root itself is made read-only.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::protocol::WardenConfig;

/// Where the new root is assembled before `pivot_root`; hidden from the host by the private mount
/// namespace.
const STAGING: &str = "/tmp";

/// Host system dirs bound read-only when they are real directories (on merged-usr hosts `/bin` and
/// friends are symlinks and become the same symlinks inside).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// Host `/etc` entries some programs need, bound read-only when present.
const ETC_BINDS: &[&str] = &[
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ld.so.conf.d",
    "/etc/java-17-openjdk",
    "/etc/mono",
    "/etc/php",
    "/etc/perl",
    "/etc/python3",
    "/etc/python3.11",
];
/// Host `/etc` files copied into the generated `/etc`.
const ETC_COPIES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/localtime",
    "/etc/mime.types",
];
/// Device nodes bound from the host (a user namespace cannot mknod).
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// `/proc` files hidden behind an empty file: Docker's masked list (`keys`, `timer_list`,
/// `sched_debug`, `latency_stats`, `timer_stats`; the last three exist only on some kernels), and
/// those a sandbox's user can read that describe the host rather than the sandbox: its kernel
/// command line and configuration, its disks, partitions and swap, the file locks of every host
/// process, the modules it loaded (where it has modules), and its interrupt counts (a timing side
/// channel). Files only the host's root can read and that Docker covers for containers running as
/// root (`kcore`, `kmsg`, `slabinfo`) need no cover: no sandbox user is the host's root. Each
/// cover is a mount, which a sandbox pays for when it is made and again when it ends, so the list
/// holds what matters.
const PROC_MASKED_FILES: &[&str] = &[
    "cmdline",
    "config.gz",
    "diskstats",
    "partitions",
    "swaps",
    "locks",
    "interrupts",
    "modules",
    "keys",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "timer_stats",
];
/// `/proc` directories hidden behind an empty one: Docker's (`acpi`, `asound`, `scsi`) and the
/// host-wide pressure stall information.
const PROC_MASKED_DIRS: &[&str] = &["acpi", "asound", "scsi", "pressure"];
/// The host's boot id, replaced by one of the sandbox's own.
const BOOT_ID: &str = "sys/kernel/random/boot_id";

/// An error while building the root, with the step and path.
#[derive(Debug, thiserror::Error)]
#[error("rootfs: {step} {path}: {source}")]
pub struct RootfsError {
    /// What was being done.
    pub step: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// The errno.
    #[source]
    pub source: io::Error,
}

impl RootfsError {
    /// The errno, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

fn ctx<T>(step: &'static str, path: &Path, r: io::Result<T>) -> Result<T, RootfsError> {
    r.map_err(|source| RootfsError {
        step,
        path: path.to_path_buf(),
        source,
    })
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn sys_mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = src.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype
        .map(CString::new)
        .transpose()
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let data = data
        .map(CString::new)
        .transpose()
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            ptr(&src),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Binds `src` at `target` read-only (plus nosuid and nodev), recursively.
fn bind_ro(src: &Path, target: &Path) -> Result<(), RootfsError> {
    ctx(
        "bind",
        target,
        sys_mount(Some(src), target, None, libc::MS_BIND | libc::MS_REC, None),
    )?;
    ro_remount(target, libc::MS_NOSUID | libc::MS_NODEV)
}

/// Makes an existing bind mount read-only, keeping the flags the kernel locked on it.
fn ro_remount(target: &Path, extra: libc::c_ulong) -> Result<(), RootfsError> {
    let locked = ctx("statvfs", target, statvfs_flags(target))?;
    ctx(
        "remount read-only",
        target,
        sys_mount(
            None,
            target,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | extra | locked,
            None,
        ),
    )
}

/// The mount flags that must be kept on a remount inside a user namespace.
fn statvfs_flags(path: &Path) -> io::Result<libc::c_ulong> {
    let c = cstr(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: c is a valid C string and st is writable memory of the right type.
    let ret = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled st.
    let st = unsafe { st.assume_init() };
    let keep = libc::ST_NOSUID | libc::ST_NODEV | libc::ST_NOEXEC | libc::ST_NOATIME;
    let mut flags = 0;
    let map = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    for (st_flag, ms_flag) in map {
        if st.f_flag & st_flag != 0 && (keep & st_flag != 0 || st_flag == libc::ST_RELATIME) {
            flags |= ms_flag;
        }
    }
    Ok(flags)
}

fn tmpfs(target: &Path, options: &str, flags: libc::c_ulong) -> Result<(), RootfsError> {
    ctx(
        "mount tmpfs",
        target,
        sys_mount(
            Some(Path::new("tmpfs")),
            target,
            Some("tmpfs"),
            flags,
            Some(options),
        ),
    )
}

fn mkdir(path: &Path, mode: u32) -> Result<(), RootfsError> {
    ctx("mkdir", path, fs::create_dir_all(path))?;
    ctx(
        "chmod",
        path,
        fs::set_permissions(path, fs::Permissions::from_mode(mode)),
    )
}

/// The directories a volume may not be in or over: the system's and the sandbox's own.
const RESERVED_TOPS: &[&str] = &[
    "bin",
    "dev",
    "etc",
    "lib",
    "lib32",
    "lib64",
    "libx32",
    "proc",
    "sbin",
    "sys",
    "tmp",
    "usr",
    "workspace",
];

/// Where `volume` goes under `root`: an absolute path of plain names, not in a reserved top.
fn volume_path(root: &Path, volume: &Path) -> Result<PathBuf, RootfsError> {
    use std::path::Component;
    let refused = || RootfsError {
        step: "check volume path",
        path: volume.to_path_buf(),
        source: io::Error::from_raw_os_error(libc::EINVAL),
    };
    let mut names = Vec::new();
    for (i, c) in volume.components().enumerate() {
        match c {
            Component::RootDir if i == 0 => {}
            Component::Normal(name) => names.push(name),
            _ => return Err(refused()),
        }
    }
    let top = names.first().ok_or_else(refused)?;
    if RESERVED_TOPS
        .iter()
        .any(|r| std::ffi::OsStr::new(r) == *top)
    {
        return Err(refused());
    }
    Ok(names.iter().fold(root.to_path_buf(), |p, n| p.join(n)))
}

/// Makes `path` and its missing parents under `root` (mode 0755).
fn mkdir_all(root: &Path, path: &Path) -> Result<(), RootfsError> {
    let mut missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| *p != root && !p.exists())
        .collect();
    missing.reverse();
    for dir in missing {
        mkdir(dir, 0o755)?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<(), RootfsError> {
    ctx("write", path, fs::write(path, text))
}

/// Builds the whole root and enters it. Runs in the warden, in its own mount namespace.
pub fn build(cfg: &WardenConfig) -> Result<(), RootfsError> {
    // Nothing done here may propagate back to the host.
    ctx(
        "make / private",
        Path::new("/"),
        sys_mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        ),
    )?;
    // Bind sources are opened before the staging tmpfs hides anything under it, and bound from their
    // /proc/self/fd links.
    let extra: Vec<(OwnedFd, PathBuf)> = cfg
        .ro_binds
        .iter()
        .map(|(src, dst)| {
            let fd = ctx(
                "open bind source",
                src,
                rustix::fs::open(
                    src,
                    rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(io::Error::from),
            )?;
            Ok((fd, dst.clone()))
        })
        .collect::<Result<_, RootfsError>>()?;

    let root = Path::new(STAGING);
    tmpfs(root, "mode=0755,size=16m", libc::MS_NOSUID | libc::MS_NODEV)?;

    for dir in SYSTEM_DIRS {
        let host = Path::new(dir);
        let inside = root.join(&dir[1..]);
        match fs::symlink_metadata(host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = ctx("readlink", host, fs::read_link(host))?;
                ctx("symlink", &inside, symlink(&target, &inside))?;
            }
            Ok(m) if m.is_dir() => {
                mkdir(&inside, 0o755)?;
                bind_ro(host, &inside)?;
            }
            _ => {}
        }
    }

    build_etc(root, cfg)?;
    build_dev(root, cfg.ptys_max)?;

    let proc_dir = root.join("proc");
    mkdir(&proc_dir, 0o555)?;
    ctx(
        "mount proc",
        &proc_dir,
        sys_mount(
            Some(Path::new("proc")),
            &proc_dir,
            Some("proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        ),
    )?;
    // Kernel tunables stay readable but never writable, whatever the uid.
    let proc_sys = proc_dir.join("sys");
    bind_ro(&proc_sys, &proc_sys)?;
    mask_proc(root, &proc_dir)?;

    let ids = format!("uid={},gid={}", cfg.sandbox_uid, cfg.sandbox_gid);
    let tmp = root.join("tmp");
    mkdir(&tmp, 0o1777)?;
    tmpfs(
        &tmp,
        &format!("mode=1777,size={},nr_inodes=65536", cfg.tmp_bytes.max(4096)),
        libc::MS_NOSUID | libc::MS_NODEV,
    )?;
    let workspace = root.join("workspace");
    mkdir(&workspace, 0o755)?;
    tmpfs(
        &workspace,
        &format!(
            "mode=0755,{ids},size={},nr_inodes=65536",
            cfg.workspace_bytes.max(4096)
        ),
        libc::MS_NOSUID | libc::MS_NODEV,
    )?;

    for volume in &cfg.volumes {
        let inside = volume_path(root, volume)?;
        mkdir_all(root, &inside)?;
        tmpfs(
            &inside,
            &format!(
                "mode=0755,{ids},size={},nr_inodes=65536",
                cfg.workspace_bytes.max(4096)
            ),
            libc::MS_NOSUID | libc::MS_NODEV,
        )?;
    }

    for (fd, dst) in &extra {
        let inside = root.join(dst.strip_prefix("/").unwrap_or(dst));
        let src = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        if fs::metadata(&src).map(|m| m.is_dir()).unwrap_or(true) {
            mkdir(&inside, 0o755)?;
        } else {
            if let Some(parent) = inside.parent() {
                mkdir(parent, 0o755)?;
            }
            ctx("create bind target", &inside, fs::write(&inside, b""))?;
        }
        bind_ro(&src, &inside)?;
    }
    drop(extra);

    enter(root)?;
    // The root tmpfs holds only mount points, symlinks and the generated /etc: freeze it.
    ro_remount(Path::new("/"), libc::MS_NOSUID | libc::MS_NODEV)?;
    Ok(())
}

fn build_etc(root: &Path, cfg: &WardenConfig) -> Result<(), RootfsError> {
    let etc = root.join("etc");
    mkdir(&etc, 0o755)?;
    let (uid, gid) = (cfg.sandbox_uid, cfg.sandbox_gid);
    write_file(
        &etc.join("passwd"),
        &format!(
            "root:x:0:0:root:/root:/bin/sh\nsandbox:x:{uid}:{gid}:sandbox:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
    )?;
    write_file(
        &etc.join("group"),
        &format!("root:x:0:\nsandbox:x:{gid}:\nnogroup:x:65534:\n"),
    )?;
    write_file(
        &etc.join("hosts"),
        &format!(
            "127.0.0.1\tlocalhost {0}\n::1\tlocalhost ip6-localhost ip6-loopback {0}\n",
            cfg.hostname
        ),
    )?;
    write_file(&etc.join("hostname"), &format!("{}\n", cfg.hostname))?;
    write_file(
        &etc.join("nsswitch.conf"),
        "passwd: files\ngroup: files\nhosts: files dns\n",
    )?;
    if cfg.network {
        if let Ok(text) = fs::read_to_string("/etc/resolv.conf") {
            write_file(&etc.join("resolv.conf"), &text)?;
        }
    }
    for file in ETC_COPIES {
        let host = Path::new(file);
        if host.is_file() {
            let inside = root.join(&file[1..]);
            ctx("copy", &inside, fs::copy(host, &inside))?;
        }
    }
    for dir in ETC_BINDS {
        let host = Path::new(dir);
        if host.is_dir() {
            let inside = root.join(&dir[1..]);
            mkdir(&inside, 0o755)?;
            bind_ro(host, &inside)?;
        }
    }
    Ok(())
}

/// Hides the host-describing parts of `/proc` (see [`PROC_MASKED_FILES`]): each is covered by a
/// bind of an empty file or directory, and the boot id by a file of the sandbox's own. The covers
/// are made in the root's tmpfs and unlinked once bound: the binds keep them alive, nothing can
/// reach them by a path, and a directory that is gone takes no new entries; the files are the
/// sandbox root's and read-only to everyone. (No tmpfs of their own: each superblock is work for
/// the kernel at creation and at the end.) Per-process files (`/proc/<pid>/mountinfo`, `uid_map`)
/// come and go with the processes and cannot be covered.
fn mask_proc(root: &Path, proc_dir: &Path) -> Result<(), RootfsError> {
    let covers = root.join(".proc-masks");
    mkdir(&covers, 0o700)?;
    let empty_file = covers.join("empty");
    write_read_only(&empty_file, "")?;
    let empty_dir = covers.join("empty.d");
    mkdir(&empty_dir, 0o555)?;
    let boot_id = covers.join("boot_id");
    write_read_only(&boot_id, &format!("{}\n", random_uuid()))?;
    let masks = PROC_MASKED_FILES
        .iter()
        .map(|f| (*f, &empty_file))
        .chain(PROC_MASKED_DIRS.iter().map(|d| (*d, &empty_dir)))
        .chain(std::iter::once((BOOT_ID, &boot_id)));
    for (name, cover) in masks {
        let target = proc_dir.join(name);
        // Only what this kernel has; a file must cover a file and a directory a directory.
        let Ok(meta) = fs::symlink_metadata(&target) else {
            continue;
        };
        if meta.is_dir() != cover.is_dir() {
            continue;
        }
        ctx(
            "mask",
            &target,
            sys_mount(Some(cover), &target, None, libc::MS_BIND, None),
        )?;
    }
    for file in [&empty_file, &boot_id] {
        ctx("unlink a /proc cover", file, fs::remove_file(file))?;
    }
    ctx(
        "remove a /proc cover",
        &empty_dir,
        fs::remove_dir(&empty_dir),
    )?;
    ctx(
        "remove the /proc covers' dir",
        &covers,
        fs::remove_dir(&covers),
    )
}

/// Writes a file that nobody may write again (mode 0444).
fn write_read_only(path: &Path, text: &str) -> Result<(), RootfsError> {
    write_file(path, text)?;
    ctx(
        "chmod",
        path,
        fs::set_permissions(path, fs::Permissions::from_mode(0o444)),
    )
}

/// A random version-4 UUID in its usual text form, as `/proc/sys/kernel/random/boot_id` reads.
fn random_uuid() -> String {
    let mut b = [0u8; 16];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn build_dev(root: &Path, ptys_max: u32) -> Result<(), RootfsError> {
    let dev = root.join("dev");
    mkdir(&dev, 0o755)?;
    tmpfs(
        &dev,
        "mode=0755,size=64k,nr_inodes=64",
        libc::MS_NOSUID | libc::MS_NOEXEC,
    )?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let inside = dev.join(name);
        ctx("create device", &inside, fs::write(&inside, b""))?;
        ctx(
            "bind device",
            &inside,
            sys_mount(Some(&host), &inside, None, libc::MS_BIND, None),
        )?;
    }
    let pts = dev.join("pts");
    mkdir(&pts, 0o755)?;
    ctx(
        "mount devpts",
        &pts,
        sys_mount(
            Some(Path::new("devpts")),
            &pts,
            Some("devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(&format!(
                "newinstance,ptmxmode=0666,mode=620,max={}",
                ptys_max.max(1)
            )),
        ),
    )?;
    ctx(
        "symlink",
        &dev.join("ptmx"),
        symlink("pts/ptmx", dev.join("ptmx")),
    )?;
    let shm = dev.join("shm");
    mkdir(&shm, 0o1777)?;
    tmpfs(
        &shm,
        "mode=1777,size=64m",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    )?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let link = dev.join(name);
        ctx("symlink", &link, symlink(target, &link))?;
    }
    // The /dev tmpfs itself becomes read-only; the bound nodes keep their own flags.
    ro_remount(&dev, libc::MS_NOSUID | libc::MS_NOEXEC)
}

/// `pivot_root` into `root` and detach the host's tree.
fn enter(root: &Path) -> Result<(), RootfsError> {
    ctx("chdir", root, std::env::set_current_dir(root))?;
    ctx(
        "pivot_root",
        root,
        rustix::process::pivot_root(".", ".").map_err(io::Error::from),
    )?;
    ctx(
        "detach old root",
        root,
        rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH).map_err(io::Error::from),
    )?;
    ctx("chdir", Path::new("/"), std::env::set_current_dir("/"))
}
