//! A sandbox's ports end to end against a running `kiln serve`: `python3 -m http.server` and a
//! WebSocket echo server inside, reached through the proxy by curl and a real WebSocket client;
//! and the proxy's walls: never the host's loopback, never another sandbox's port, never a port
//! out of range, never Kiln's token passed on.

use std::process::Command;

use serde_json::{json, Value};

use crate::require_isolation;
use crate::sandbox_util::{new_sandbox as sandbox, start_process};
use crate::server::{api, Server, TOKEN};

fn background(s: &Server, id: &str, cmd: &str) {
    start_process(s, id, json!({ "cmd": cmd }));
}

fn wait_port(s: &Server, id: &str, port: u16) -> Value {
    let r = api(
        s,
        "GET",
        &format!("/v1/sandboxes/{id}/ports/{port}/wait?timeoutMs=20000"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let w = r.json();
    assert_eq!(w["listening"], true, "{w}");
    w
}

#[test]
fn http_server_and_websocket_echo_inside_are_reached_through_the_proxy() {
    require_isolation!();
    let s = Server::start(&["--pool-size", "0"]);
    let id = sandbox(&s);
    let r = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/files/write"),
        Some(json!({"path": "site/hello.txt", "content": "hello from inside\n"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // A WebSocket echo server and a header echo on one port, in the sandbox's own Python.
    let echo_server =
        std::fs::read_to_string(crate::clients::clients_dir().join("ws_echo_server.py")).unwrap();
    let r = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/files/write"),
        Some(json!({"path": "echo.py", "content": echo_server})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    background(
        &s,
        &id,
        "cd site && exec python3 -m http.server 8000 --bind 127.0.0.1",
    );
    background(&s, &id, "exec python3 echo.py 9000");
    assert_eq!(wait_port(&s, &id, 8000)["address"], "127.0.0.1");
    wait_port(&s, &id, 9000);
    let ports = api(&s, "GET", &format!("/v1/sandboxes/{id}/ports"), None).json();
    let listed: Vec<u64> = ports["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert!(listed.contains(&8000) && listed.contains(&9000), "{ports}");

    let r = api(
        &s,
        "GET",
        &format!("/v1/sandboxes/{id}/ports/8000/hello.txt"),
        None,
    );
    assert_eq!((r.status, r.body.as_str()), (200, "hello from inside\n"));
    let r = api(&s, "GET", &format!("/v1/sandboxes/{id}/ports/8000/"), None);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("hello.txt"), "{}", r.body);
    // The program's own statuses come back as they are.
    assert_eq!(
        api(
            &s,
            "GET",
            &format!("/v1/sandboxes/{id}/ports/8000/missing"),
            None
        )
        .status,
        404
    );
    assert_eq!(
        api(
            &s,
            "POST",
            &format!("/v1/sandboxes/{id}/ports/8000/"),
            Some(json!({}))
        )
        .status,
        501
    );

    // The program sees its own path and query, a Host of its own, and never Kiln's token.
    let seen = api(
        &s,
        "GET",
        &format!("/v1/sandboxes/{id}/ports/9000/a/b?x=1&y=2"),
        None,
    )
    .json();
    assert_eq!(seen["path"], "/a/b?x=1&y=2", "{seen}");
    assert_eq!(seen["headers"]["host"], "localhost:9000");
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    assert!(!seen.to_string().contains(TOKEN));

    let url = format!(
        "{}/v1/sandboxes/{id}/ports/9000/echo",
        s.base.replacen("http://", "ws://", 1)
    );
    let out = Command::new(crate::clients::python())
        .arg(crate::clients::clients_dir().join("ws_echo_proxy.py"))
        .args([&url, TOKEN])
        .output()
        .expect("the venv's python (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello\nthrough the proxy\n70000 bytes\n"
    );
}

#[test]
fn the_proxy_reaches_only_the_sandboxs_own_listeners() {
    require_isolation!();
    let s = Server::start(&["--pool-size", "0"]);
    let a = sandbox(&s);
    let b = sandbox(&s);
    // The host listens on its loopback; sandbox b listens on its own.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let host_port = host.local_addr().unwrap().port();
    background(&s, &b, "exec python3 -m http.server 8000 --bind 127.0.0.1");
    wait_port(&s, &b, 8000);
    assert_eq!(
        api(&s, "GET", &format!("/v1/sandboxes/{b}/ports/8000/"), None).status,
        200
    );

    let r = api(
        &s,
        "GET",
        &format!("/v1/sandboxes/{a}/ports/{host_port}/"),
        None,
    );
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        matches!(host.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the host's port was reached"
    );
    let r = api(&s, "GET", &format!("/v1/sandboxes/{a}/ports/8000/"), None);
    assert_eq!(r.status, 502, "{}", r.body);
    let listed = api(&s, "GET", &format!("/v1/sandboxes/{a}/ports"), None).json();
    assert_eq!(listed["ports"], json!([]), "{listed}");
    // Even from inside, the host's loopback is not the sandbox's.
    let r = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{a}/exec"),
        Some(
            json!({"cmd": format!("python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {host_port}), 2)'")}),
        ),
    );
    assert_eq!(r.json()["status"], "nonzero_exit", "{}", r.body);
    for bad in ["0", "65536", "-1", "http", "80.5"] {
        let r = api(&s, "GET", &format!("/v1/sandboxes/{a}/ports/{bad}/"), None);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        let r = api(
            &s,
            "GET",
            &format!("/v1/sandboxes/{a}/ports/{bad}/wait?timeoutMs=10"),
            None,
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    // Another token's sandbox has no ports to reach.
    let other = crate::server::curl(
        "GET",
        &format!("{}/v1/sandboxes/{b}/ports/8000/", s.base),
        Some("wrong-token"),
        None,
        "",
    );
    assert_eq!(other.status, 401);
    let w = api(
        &s,
        "GET",
        &format!("/v1/sandboxes/{a}/ports/8001/wait?timeoutMs=200"),
        None,
    )
    .json();
    assert_eq!(w["listening"], false, "{w}");
}
