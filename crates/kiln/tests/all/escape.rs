//! Escape tests: each runs a hostile program in a real sandbox and passes only if the attack fails
//! and the right verdict comes back.

use std::net::TcpListener;
use std::time::Duration;

use crate::common::{c_main, kiln_exec_env, python, sh};
use crate::require_isolation;

#[test]
fn fork_bomb_is_contained_by_the_pids_limit() {
    require_isolation!();
    let bomb = c_main(
        "forkbomb",
        "for (;;) { pid_t p = fork(); if (p < 0) { usleep(1000); } }",
    );
    let r = bomb.run(
        &[
            "--pids-limit",
            "32",
            "--time-limit",
            "1s",
            "--wall-limit",
            "3s",
        ],
        &[],
    );
    assert!(
        matches!(r.status(), "time_limit" | "wall_time_limit"),
        "fork bomb verdict {}: {}",
        r.status(),
        r.json
    );
    // The host can still fork.
    assert!(std::process::Command::new("/bin/true")
        .status()
        .unwrap()
        .success());
}

#[test]
fn thread_bomb_is_contained_by_the_pids_limit() {
    require_isolation!();
    let bomb = crate::common::CProgram::build(
        "threadbomb",
        r#"#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static void *spin(void *a) { (void)a; for (;;) pause(); return 0; }
int main(void) {
  int made = 0, failed = 0;
  for (int i = 0; i < 100000; i++) { pthread_t t; if (pthread_create(&t, 0, spin, 0) == 0) made++; else failed++; }
  printf("made=%d failed=%d\n", made, failed);
  return 0;
}
"#,
    );
    let r = bomb.run(&["--pids-limit", "32", "--wall-limit", "10s"], &[]);
    assert_eq!(r.status(), "ok", "{}", r.json);
    let made: u32 = r
        .stdout()
        .trim()
        .split(['=', ' '])
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(made < 32, "made {made} threads with a pids limit of 32");
}

#[test]
fn memory_bomb_ends_as_memory_limit() {
    require_isolation!();
    let bomb = c_main(
        "membomb",
        "for (;;) { char *p = malloc(1 << 20); if (!p) return 3; memset(p, 1, 1 << 20); }",
    );
    let r = bomb.run(&["--memory-limit", "64M"], &[]);
    assert_eq!(r.status(), "memory_limit", "{}", r.json);
    assert_eq!(r.json["signal"], "SIGKILL");
}

#[test]
fn filling_tmp_and_workspace_stops_at_their_size() {
    require_isolation!();
    for dir in ["/tmp", "/workspace"] {
        let r = sh(
            &["--memory-limit", "512M", "--file-size-limit", "1G"],
            &format!("head -c 300M /dev/zero > {dir}/fill; echo rc=$?; ls -l {dir}/fill"),
        );
        assert_eq!(r.status(), "ok", "{dir}: {}", r.json);
        assert!(r.stdout().contains("rc=1"), "{dir}: {}", r.json);
        assert!(
            r.stderr().contains("No space left on device"),
            "{dir}: {}",
            r.json
        );
    }
}

#[test]
fn output_flood_is_cut_at_the_cap() {
    require_isolation!();
    let r = kiln_exec_env(&["--output-limit", "64K"], &["/usr/bin/yes", "flood"], &[]);
    assert_eq!(r.status(), "output_limit", "{}", r.json);
    assert_eq!(r.json["truncated"], true);
    assert_eq!(r.stdout().len(), 64 * 1024);
}

#[test]
fn busy_loop_ends_as_time_limit() {
    require_isolation!();
    let r = sh(
        &["--time-limit", "500ms", "--wall-limit", "5s"],
        "while :; do :; done",
    );
    assert_eq!(r.status(), "time_limit", "{}", r.json);
    let cpu = r.json["cpuMs"].as_u64().unwrap();
    assert!((450..1500).contains(&cpu), "cpu {cpu} ms");
}

#[test]
fn sleep_ends_as_wall_time_limit() {
    require_isolation!();
    let r = sh(&["--wall-limit", "700ms"], "sleep 30");
    assert_eq!(r.status(), "wall_time_limit", "{}", r.json);
    let wall = r.json["wallMs"].as_u64().unwrap();
    assert!((650..3000).contains(&wall), "wall {wall} ms");
}

#[test]
fn silence_ends_as_idle_time_limit() {
    require_isolation!();
    let r = sh(
        &["--idle-limit", "500ms", "--wall-limit", "10s"],
        "echo hi; sleep 30",
    );
    assert_eq!(r.status(), "idle_time_limit", "{}", r.json);
    assert_eq!(r.stdout(), "hi\n");
}

#[test]
fn host_loopback_listener_is_unreachable() {
    require_isolation!();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = python(
        &[],
        &format!(
            "import socket\ntry:\n socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')\nexcept OSError as e:\n print('refused', e.errno)"
        ),
    );
    assert!(r.stdout().starts_with("refused"), "{}", r.json);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        listener.accept().is_err(),
        "the host listener got a connection"
    );
}

#[test]
fn dns_does_not_resolve() {
    require_isolation!();
    let r = python(
        &[],
        "import socket\ntry:\n print(socket.getaddrinfo('example.com', 80)); print('resolved')\nexcept OSError as e:\n print('failed', e)",
    );
    assert!(r.stdout().starts_with("failed"), "{}", r.json);
}

#[test]
fn raw_and_packet_sockets_are_denied() {
    require_isolation!();
    let r = python(
        &[],
        "import socket\nfor fam, typ, proto in [(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), (socket.AF_PACKET, socket.SOCK_RAW, 0), (socket.AF_NETLINK, socket.SOCK_RAW, 0)]:\n try:\n  socket.socket(fam, typ, proto); print('opened')\n except OSError as e:\n  print('denied', e.errno)",
    );
    assert_eq!(r.stdout(), "denied 1\ndenied 1\ndenied 1\n", "{}", r.json);
}

#[test]
fn host_files_are_not_there() {
    require_isolation!();
    let exe = crate::common::kiln_bin();
    let manifest = env!("CARGO_MANIFEST_DIR");
    let r = sh(
        &[],
        &format!(
            "for p in /etc/shadow /root {} {manifest} /home /sys; do if [ -e \"$p\" ]; then echo \"visible $p\"; fi; done; cat /etc/shadow; echo done",
            exe.display()
        ),
    );
    assert_eq!(r.stdout(), "done\n", "{}", r.json);
}

#[test]
fn read_only_paths_cannot_be_written() {
    require_isolation!();
    let r = sh(
        &[],
        "for p in /usr/x /bin/x /etc/x /x /dev/x /proc/x /lib/x; do if touch $p 2>/dev/null; then echo \"wrote $p\"; fi; done; echo done",
    );
    assert_eq!(r.stdout(), "done\n", "{}", r.json);
}

#[test]
fn privileged_syscalls_fail() {
    require_isolation!();
    let cases: &[(&str, &str)] = &[
        (
            "ptrace",
            "return ptrace(PTRACE_ATTACH, 1, 0, 0) == 0 ? 0 : errno;",
        ),
        (
            "mount",
            "return mount(\"none\", \"/tmp\", \"tmpfs\", 0, 0) == 0 ? 0 : errno;",
        ),
        (
            "unshare_user",
            "return unshare(CLONE_NEWUSER) == 0 ? 0 : errno;",
        ),
        (
            "module",
            "return syscall(SYS_finit_module, 0, \"\", 0) == 0 ? 0 : errno;",
        ),
        ("bpf", "return syscall(SYS_bpf, 0, 0, 0) == 0 ? 0 : errno;"),
        (
            "io_uring",
            "return syscall(SYS_io_uring_setup, 1, malloc(256)) >= 0 ? 0 : errno;",
        ),
        (
            "keyctl",
            "return syscall(SYS_keyctl, 0, 0, 0, 0, 0) >= 0 ? 0 : errno;",
        ),
    ];
    for (name, body) in cases {
        let prog = c_main(name, body);
        let r = prog.run(&[], &[]);
        assert_eq!(r.status(), "nonzero_exit", "{name}: {}", r.json);
        assert_eq!(
            r.exit_code(),
            Some(libc::EPERM as i64),
            "{name}: {}",
            r.json
        );
    }
}

#[test]
fn kill_all_spares_the_host() {
    require_isolation!();
    let mut sentinel = std::process::Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let r = sh(&[], "kill -9 -1; echo after");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        sentinel.try_wait().unwrap().is_none(),
        "a host process died: {}",
        r.json
    );
    sentinel.kill().unwrap();
    sentinel.wait().unwrap();
}

#[test]
fn setuid_binaries_give_nothing() {
    require_isolation!();
    let r = sh(
        &[],
        "ls -l /usr/bin/su /usr/bin/mount | cut -c1-10; /usr/bin/su -c 'id -u' root; /usr/bin/mount -t tmpfs none /tmp && echo mounted; id -u",
    );
    assert!(!r.stdout().contains("mounted"), "{}", r.json);
    assert!(r.stdout().trim_end().ends_with("1000"), "{}", r.json);
    assert!(!r.stdout().lines().any(|l| l.trim() == "0"), "{}", r.json);
}

#[test]
fn proc_sys_and_sys_are_not_writable() {
    require_isolation!();
    let r = sh(
        &[],
        "echo 1 > /proc/sys/kernel/sysrq && echo wrote-sysrq; echo x > /proc/sys/kernel/hostname && echo wrote-hostname; echo 1 > /sys/kernel/mm/ksm/run && echo wrote-sys; echo done",
    );
    assert_eq!(r.stdout(), "done\n", "{}", r.json);
}

#[test]
fn double_forked_daemon_is_gone_after_the_run() {
    require_isolation!();
    let marker = format!("{}.{}", 40 + std::process::id() % 50, std::process::id());
    let r = sh(
        &[],
        &format!("(setsid sh -c 'exec sleep {marker}' </dev/null >/dev/null 2>&1 &) ; sleep 0.2; echo started"),
    );
    assert_eq!(r.stdout(), "started\n", "{}", r.json);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            assert!(!cmd.contains(&marker), "daemon survived: {cmd:?}");
        }
    }
}

#[test]
fn server_environment_is_not_visible() {
    require_isolation!();
    let r = kiln_exec_env(&[], &["/usr/bin/env"], &[("KILN_TEST_SECRET", "hunter2")]);
    assert_eq!(r.status(), "ok", "{}", r.json);
    assert!(!r.stdout().contains("hunter2"), "{}", r.stdout());
    assert!(r.stdout().contains("HOME=/workspace"), "{}", r.stdout());
}

#[test]
fn s7_inotify_is_refused_unless_the_run_asks_for_it() {
    require_isolation!();
    let body = "int fd = inotify_init1(IN_CLOEXEC); printf(\"%d %d\\n\", fd >= 0, fd < 0 ? errno : 0); return 0;";
    let prog = crate::common::CProgram::build(
        "inotify",
        &format!(
            "#include <errno.h>\n#include <stdio.h>\n#include <sys/inotify.h>\nint main(void) {{ {body} }}\n"
        ),
    );
    let r = prog.run(&[], &[]);
    assert_eq!(r.stdout(), format!("0 {}\n", libc::ENOSYS), "{}", r.json);
    let r = prog.run(&["--allow-inotify"], &[]);
    assert_eq!(r.stdout(), "1 0\n", "{}", r.json);
}

#[test]
fn s8_proc_shows_nothing_of_the_host() {
    require_isolation!();
    let masked =
        "/proc/cmdline /proc/config.gz /proc/diskstats /proc/partitions /proc/kcore /proc/modules \
                  /proc/keys /proc/timer_list /proc/sched_debug /proc/interrupts /proc/locks \
                  /proc/swaps /proc/kmsg /proc/slabinfo";
    let r = sh(
        &[],
        &format!(
            "for f in {masked}; do if [ -e $f ] && [ -n \"$(head -c 1 $f 2>/dev/null)\" ]; then echo \"shows $f\"; fi; done; \
             for d in /proc/pressure /proc/acpi /proc/scsi; do \
             if [ -n \"$(ls -A $d 2>/dev/null)\" ]; then echo \"shows $d\"; fi; done; \
             echo 1 > /proc/sysrq-trigger 2>/dev/null && echo wrote-sysrq; \
             echo x > /proc/cmdline 2>/dev/null && echo wrote-a-cover; \
             echo x > /proc/sys/kernel/random/boot_id 2>/dev/null && echo wrote-the-boot-id; \
             touch /proc/acpi/x 2>/dev/null && echo wrote-in-a-covered-dir; \
             ls -a / | grep -q proc-masks && echo the-covers-show; \
             cat /proc/sys/kernel/random/boot_id"
        ),
    );
    assert_eq!(r.status(), "ok", "{}", r.json);
    let lines: Vec<&str> = r.stdout().lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stdout());
    let host_boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(lines[0].len(), 36, "{}", lines[0]);
    assert_ne!(lines[0], host_boot_id.trim(), "the host's boot id");
    // What a program needs of /proc is still there.
    let r = sh(&[], "head -c 9 /proc/cpuinfo >/dev/null && grep -c MemTotal /proc/meminfo && cut -d' ' -f2 /proc/self/stat");
    assert_eq!(r.stdout(), "1\n(cut)\n", "{}", r.json);
}

#[test]
fn s9_tty_line_discipline_and_console_ioctls_are_refused() {
    require_isolation!();
    let body = r#"int m = posix_openpt(O_RDWR | O_NOCTTY); if (m < 0) return 90;
grantpt(m); unlockpt(m); int s = open(ptsname(m), O_RDWR | O_NOCTTY); if (s < 0) return 91;
int ldisc = 13; /* N_HDLC */
int setd = ioctl(s, TIOCSETD, &ldisc) < 0 ? errno : 0;
int kd = ioctl(s, 0x4B3A /* KDSETMODE */, 1) < 0 ? errno : 0;
int vt = ioctl(s, 0x5606 /* VT_ACTIVATE */, 1) < 0 ? errno : 0;
int sti = ioctl(s, TIOCSTI, "x") < 0 ? errno : 0;
struct winsize w; int ws = ioctl(s, TIOCGWINSZ, &w) < 0 ? errno : 0;
printf("%d %d %d %d %d\n", setd, kd, vt, sti, ws); return 0;"#;
    let prog = crate::common::CProgram::build(
        "ioctls",
        &format!(
            "#define _GNU_SOURCE\n#include <errno.h>\n#include <fcntl.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <sys/ioctl.h>\n#include <termios.h>\nint main(void) {{ {body} }}\n"
        ),
    );
    let r = prog.run(&[], &[]);
    let eperm = libc::EPERM;
    assert_eq!(
        r.stdout(),
        format!("{eperm} {eperm} {eperm} {eperm} 0\n"),
        "{}",
        r.json
    );
}
