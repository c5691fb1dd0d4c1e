//! The command line: bad flags are exit 2 with a message, `kiln doctor` passes on a capable host.

use std::process::Command;

use crate::common::kiln_bin;
use crate::require_isolation;

#[test]
fn bad_flags_exit_2_with_a_clear_message() {
    for args in [
        vec!["exec", "--bogus", "--", "/bin/true"],
        vec!["exec", "--memory-limit", "lots", "--", "/bin/true"],
        vec!["exec", "--time-limit", "2y", "--", "/bin/true"],
        vec!["exec", "--network", "host", "--", "/bin/true"],
        vec!["exec"],
    ] {
        let out = Command::new(kiln_bin()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
}

#[test]
fn a_bad_file_argument_names_the_file() {
    require_isolation!();
    let out = Command::new(kiln_bin())
        .args(["exec", "--file", "/no/such/file", "--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file"));
}

#[test]
fn doctor_passes_on_this_host() {
    require_isolation!();
    let out = Command::new(kiln_bin()).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("sandboxed as 1000"), "{text}");
    assert!(text.contains("this host can run sandboxes"), "{text}");
}

#[test]
fn live_output_and_the_summary_line() {
    require_isolation!();
    let out = Command::new(kiln_bin())
        .args(["exec", "--", "/bin/sh", "-c", "echo hello; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("kiln: nonzero_exit (exit 3)"), "{err}");
}
