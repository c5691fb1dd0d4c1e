//! Several Kiln processes on one host: each has host uids of its own (item S10 of the hardening
//! pass) and leaves the others' sandboxes alone when it starts, whatever PID namespace they run
//! in (item 4).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::{kiln_bin, Background};
use crate::require_isolation;
use crate::server::Server;

/// The host uids a `uid_map` maps onto.
fn host_uids(uid_map: &[String]) -> Vec<u64> {
    uid_map
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// `start..end` of each range of `/etc/subuid` and `/etc/subgid`.
fn subordinate_ranges() -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let parts: Vec<&str> = line.split(':').collect();
            if let [_, start, count] = parts[..] {
                if let (Ok(s), Ok(c)) = (start.parse::<u64>(), count.parse::<u64>()) {
                    out.push((s, s + c));
                }
            }
        }
    }
    out
}

#[test]
fn s10_two_kiln_processes_never_give_sandboxes_the_same_host_uids() {
    require_isolation!();
    let script = "cat /proc/self/uid_map; echo mapped; cat >/dev/null";
    let mut runs: Vec<Background> = (0..2)
        .map(|_| Background::start(&[], &["/bin/sh", "-c", script]))
        .collect();
    let mut seen = Vec::new();
    for run in &mut runs {
        let mut map = Vec::new();
        loop {
            let line = run.wait_line("");
            if line == "mapped" {
                break;
            }
            map.push(line);
        }
        seen.push(host_uids(&map));
    }
    assert_eq!(seen[0].len(), 2, "{seen:?}");
    assert!(
        seen[0].iter().all(|u| !seen[1].contains(u)),
        "two Kiln processes share host uids: {seen:?}"
    );
    let subordinate = subordinate_ranges();
    for uid in seen.iter().flatten() {
        assert!(
            !subordinate.iter().any(|&(s, e)| (s..e).contains(uid)),
            "host uid {uid} is in a subordinate range {subordinate:?}"
        );
        assert!(*uid >= 0x7000_0000, "host uid {uid} outside Kiln's range");
    }
    for run in runs {
        assert!(run.finish().0.success());
    }
}

#[test]
fn item4_a_kiln_in_its_own_pid_namespace_keeps_its_sandbox_while_another_starts() {
    require_isolation!();
    let mut inner = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(kiln_bin())
        .args(["exec", "--wall-limit", "30s", "--", "/bin/sh", "-c"])
        .arg("echo started; sleep 3; echo alive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare");
    let mut lines = BufReader::new(inner.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    // A server starting now sweeps the cgroups of dead Kiln processes; the inner one lives.
    let server = Server::start(&[]);
    drop(server);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = inner.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut inner.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(rest, ["alive"], "{stderr}");
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("kiln: ok"), "{stderr}");
}
