//! The argument checks: socket domains, types and protocols, socketpair, ioctl and personality.
//! Same method as `tests.rs`: forked children under the filter, with the sentinel policy telling
//! the filter's refusals apart from the kernel's.

use super::tests::{code, filter, raw, run_child, Outcome, POISON, SENTINEL, SUCCEEDED};
use super::ADDR_NO_RANDOMIZE;

/// `(domain, type, protocol, allowed without network, allowed with network)`.
#[rustfmt::skip]
const SOCKET_CASES: &[(i32, i32, i32, bool, bool)] = &[
    (libc::AF_UNIX, libc::SOCK_STREAM, 0, true, true),
    (libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0, true, true),
    (libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, true, true),
    (libc::AF_INET, libc::SOCK_STREAM, 0, true, true),
    (libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, libc::IPPROTO_TCP, true, true),
    (libc::AF_INET, libc::SOCK_DGRAM, 0, true, true),
    (libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::IPPROTO_UDP, true, true),
    (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP, true, true),
    (libc::AF_INET6, libc::SOCK_STREAM, 0, true, true),
    (libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6, true, true),
    (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP, false, false),
    (libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW, false, false),
    (libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6, false, false),
    (libc::AF_INET, 10 /* SOCK_PACKET */, 0, false, false),
    (libc::AF_INET, libc::SOCK_SEQPACKET, 0, false, false),
    (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP, false, false),
    (libc::AF_INET, libc::SOCK_STREAM, 262 /* IPPROTO_MPTCP */, false, false),
    (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDPLITE, false, false),
    (libc::AF_INET, 6 /* SOCK_DCCP */, 33 /* IPPROTO_DCCP */, false, false),
    (libc::AF_PACKET, libc::SOCK_RAW, 0x0300 /* htons(ETH_P_ALL) */, false, false),
    (libc::AF_PACKET, libc::SOCK_DGRAM, 0, false, false),
    (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE, false, true),
    (libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE, false, true),
    (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT, false, false),
    (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_KOBJECT_UEVENT, false, false),
    (libc::AF_NETLINK, libc::SOCK_RAW, 4 /* NETLINK_SOCK_DIAG */, false, false),
    (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_GENERIC, false, false),
    (libc::AF_ALG, libc::SOCK_SEQPACKET, 0, false, false),
    (libc::AF_KEY, libc::SOCK_RAW, 2, false, false),
    (libc::AF_VSOCK, libc::SOCK_STREAM, 0, false, false),
    (libc::AF_XDP, libc::SOCK_RAW, 0, false, false),
    (libc::AF_BLUETOOTH, libc::SOCK_RAW, 0, false, false),
];

#[test]
fn socket_domains_types_and_protocols() {
    let filters = [
        (false, filter(false, true), filter(false, false)),
        (true, filter(true, true), filter(true, false)),
    ];
    for &(domain, ty, protocol, without_net, with_net) in SOCKET_CASES {
        let call = || match raw(
            libc::SYS_socket,
            [domain as u64, ty as u64, protocol as u64, 0, 0, 0],
        ) {
            Ok(fd) => code(raw(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0])),
            Err(errno) => errno,
        };
        for (network, sentinel, normal) in &filters {
            let expected = if *network { with_net } else { without_net };
            let got = run_child(Some(sentinel), call);
            let what = format!("socket({domain}, {ty:#x}, {protocol}), network {network}");
            assert_eq!(
                got != Outcome::Exited(SENTINEL),
                expected,
                "{what}: {got:?}"
            );
            if !expected {
                let got = run_child(Some(normal), call);
                assert_eq!(got, Outcome::Exited(libc::EPERM), "{what}");
            }
        }
    }
}

#[test]
fn socketpair_only_unix() {
    let sentinel = filter(true, true);
    for (domain, allowed) in [
        (libc::AF_UNIX, true),
        (libc::AF_INET, false),
        (libc::AF_NETLINK, false),
    ] {
        let call = || {
            let mut sv = [0i32; 2];
            let sv_ptr = sv.as_mut_ptr() as u64;
            code(raw(
                libc::SYS_socketpair,
                [domain as u64, libc::SOCK_STREAM as u64, 0, sv_ptr, 0, 0],
            ))
        };
        let got = run_child(Some(&sentinel), call);
        if allowed {
            assert_eq!(got, Outcome::Exited(SUCCEEDED), "socketpair({domain})");
        } else {
            assert_eq!(got, Outcome::Exited(SENTINEL), "socketpair({domain})");
        }
    }
}

#[test]
fn ioctl_tty_console_and_serial_requests_are_denied() {
    let tiocsti = u64::from(libc::TIOCSTI as u32);
    let cases = [
        (tiocsti, false),
        (u64::from(libc::TIOCLINUX as u32), false),
        // The kernel reads the request as an unsigned int: high bits must not get it through.
        (tiocsti | (1 << 32), false),
        (0x5423 /* TIOCSETD */, false),
        (0x5423 | (1 << 40), false),
        (0x541D /* TIOCCONS */, false),
        (0x541F /* TIOCSSERIAL */, false),
        (0x545C /* TIOCMIWAIT */, false),
        (0x4B3A /* KDSETMODE */, false),
        (0x4B45 /* KDSKBMODE */, false),
        (0x5606 /* VT_ACTIVATE */, false),
        (u64::from(libc::TIOCGWINSZ as u32), true),
        (u64::from(libc::TIOCSWINSZ as u32), true),
        (u64::from(libc::FIONREAD as u32), true),
        (u64::from(libc::TCGETS as u32), true),
        (0x5424 /* TIOCGETD */, true),
        (u64::from(libc::TIOCGPGRP as u32), true),
    ];
    let sentinel = filter(false, true);
    let normal = filter(false, false);
    let c = c"x".as_ptr() as u64;
    for (request, allowed) in cases {
        // fd -1: even if let through, TIOCSTI could not inject anything.
        let call = || code(raw(libc::SYS_ioctl, [POISON, request, c, 0, 0, 0]));
        let expected = if allowed { libc::EBADF } else { SENTINEL };
        let got = run_child(Some(&sentinel), call);
        assert_eq!(got, Outcome::Exited(expected), "ioctl request {request:#x}");
        if !allowed {
            assert_eq!(run_child(Some(&normal), call), Outcome::Exited(libc::EPERM));
        }
    }
}

#[test]
fn fadvise_dontneed_is_a_no_op() {
    // On an invalid fd the kernel answers EBADF: a 0 proves the filter answered instead.
    let normal = filter(false, false);
    for (advice, expected) in [
        (libc::POSIX_FADV_DONTNEED, SUCCEEDED),
        (libc::POSIX_FADV_WILLNEED, libc::EBADF),
        (libc::POSIX_FADV_SEQUENTIAL, libc::EBADF),
    ] {
        let call = || {
            code(raw(
                libc::SYS_fadvise64,
                [POISON, 0, 0, advice as u64, 0, 0],
            ))
        };
        assert_eq!(
            run_child(Some(&normal), call),
            Outcome::Exited(expected),
            "advice {advice}"
        );
    }
}

#[test]
fn personality_only_linux_and_no_randomize() {
    let cases = [
        (0xffff_ffffu64, true),
        (0, true),
        (u64::from(ADDR_NO_RANDOMIZE), true),
        (0x0020000, false), // UNAME26
        (0x0008, false),    // PER_LINUX32
        (0x0400000, false), // READ_IMPLIES_EXEC
        (u64::from(ADDR_NO_RANDOMIZE) | 0x0008, false),
    ];
    let sentinel = filter(false, true);
    for (persona, allowed) in cases {
        let call = || code(raw(libc::SYS_personality, [persona, 0, 0, 0, 0, 0]));
        let expected = if allowed { SUCCEEDED } else { SENTINEL };
        let got = run_child(Some(&sentinel), call);
        assert_eq!(got, Outcome::Exited(expected), "personality({persona:#x})");
    }
}
