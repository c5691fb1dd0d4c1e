//! `/v1/sandboxes` end to end against a running `kiln serve`, over real HTTP with curl: the
//! lifecycle, commands (their own verdicts side by side), reclaim, isolation between sandboxes
//! and between tokens, and 200 sandboxes at once.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::require_isolation;
use crate::server::{api, curl, sandbox_cgroups, Reply, Server};

const OTHER: &str = "other-token-456";

/// A server without pools, so that every warden it has is a live sandbox's.
fn start(extra: &[&str]) -> Server {
    let mut args = vec![
        "--pool-size",
        "0",
        "--sandbox-pool-size",
        "0",
        "--token",
        "other=other-token-456",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn create(s: &Server, body: Value) -> Value {
    let r = api(s, "POST", "/v1/sandboxes", Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

fn exec(s: &Server, id: &str, body: Value) -> Reply {
    api(s, "POST", &format!("/v1/sandboxes/{id}/exec"), Some(body))
}

fn sh(s: &Server, id: &str, cmd: &str) -> Value {
    let r = exec(s, id, json!({"cmd": cmd}));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// The server's wardens: one per live sandbox.
fn wardens(server_pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
            after.split_whitespace().nth(1) == Some(&server_pid.to_string())
        })
        .count()
}

fn other(s: &Server, method: &str, path: &str, body: Option<Value>) -> Reply {
    let b = body.map(|b| b.to_string());
    curl(
        method,
        &format!("{}{path}", s.base),
        Some(OTHER),
        b.as_deref(),
        "application/json",
    )
}

#[test]
fn a_sandbox_lives_across_commands_and_leaves_nothing_when_deleted() {
    require_isolation!();
    let s = start(&[]);
    let pid = s.child.id();
    let sbx = create(
        &s,
        json!({
            "env": {"GREETING": "hello"},
            "files": [{"name": "data/in.txt", "content": "from the files\n"}],
            "metadata": {"user": "ada"},
            "limits": {"memoryMb": 256, "pids": 64, "diskMb": 32},
            "timeoutSecs": 120
        }),
    );
    let id = sbx["sandboxId"].as_str().unwrap().to_string();
    assert!(id.starts_with("sbx_"), "{sbx}");
    assert_eq!(sbx["state"], "running");
    assert_eq!(sbx["cwd"], "/workspace");
    assert_eq!(sbx["metadata"]["user"], "ada");
    assert_eq!(sbx["limits"]["memoryMb"], 256);
    let lifetime = sbx["expiresAtMs"].as_i64().unwrap() - sbx["createdAtMs"].as_i64().unwrap();
    assert_eq!(lifetime, 120_000);

    // The files, the environment and the home are there; what one command writes the next sees.
    let r = sh(&s, &id, "cat data/in.txt; echo $GREETING $HOME; pwd; id -u");
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(
        r["stdout"],
        "from the files\nhello /workspace\n/workspace\n1000\n"
    );
    assert_eq!(sh(&s, &id, "echo kept > state.txt")["exitCode"], 0);
    assert_eq!(sh(&s, &id, "cat /workspace/state.txt")["stdout"], "kept\n");
    // argv, cwd, env and stdin of a command of its own.
    let r = exec(
        &s,
        &id,
        json!({"argv": ["sh", "-c", "pwd; echo $GREETING; cat"], "cwd": "/tmp",
               "env": {"GREETING": "own"}, "stdin": "typed in"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["stdout"], "/tmp\nown\ntyped in");
    // Exit codes, stderr, a timeout, and a program that is not there.
    let r = sh(&s, &id, "echo oops >&2; exit 3");
    assert_eq!(
        (r["status"].as_str(), r["exitCode"].as_i64()),
        (Some("nonzero_exit"), Some(3))
    );
    assert_eq!(r["stderr"], "oops\n");
    let r = exec(&s, &id, json!({"cmd": "sleep 10", "timeoutMs": 300})).json();
    assert_eq!(r["status"], "wall_time_limit", "{r}");
    assert_eq!(r["timedOut"], true);
    assert!(r["wallMs"].as_u64().unwrap() < 2000, "{r}");
    let r = exec(&s, &id, json!({"argv": ["no-such-program"]}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("could not start"),
        "{}",
        r.body
    );

    // get, list, extend.
    let got = api(&s, "GET", &format!("/v1/sandboxes/{id}"), None).json();
    assert_eq!(got["sandboxId"], id);
    assert!(got["lastActiveAtMs"].as_i64() >= sbx["lastActiveAtMs"].as_i64());
    let listed = api(&s, "GET", "/v1/sandboxes", None).json();
    assert_eq!(listed["sandboxes"].as_array().unwrap().len(), 1);
    let before = got["expiresAtMs"].as_i64().unwrap();
    let r = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/timeout"),
        Some(json!({"timeoutSecs": 600})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["expiresAtMs"].as_i64().unwrap() > before + 400_000);

    // Another token sees none of it: not the sandbox, its processes, its files or its ports.
    let bg = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/processes"),
        Some(json!({"cmd": "sleep 30"})),
    );
    assert_eq!(bg.status, 201, "{}", bg.body);
    let bg = bg.json()["processId"].as_u64().unwrap();
    for (method, path, body) in [
        ("GET", format!("/v1/sandboxes/{id}"), None),
        ("GET", format!("/v1/sandboxes/{id}/processes"), None),
        (
            "GET",
            format!("/v1/sandboxes/{id}/processes/{bg}/logs"),
            None,
        ),
        (
            "POST",
            format!("/v1/sandboxes/{id}/processes/{bg}/kill"),
            None,
        ),
        (
            "POST",
            format!("/v1/sandboxes/{id}/processes/{bg}/stdin"),
            Some(json!({"data": "x"})),
        ),
        (
            "GET",
            format!("/v1/sandboxes/{id}/files?path=/workspace"),
            None,
        ),
        (
            "GET",
            format!("/v1/sandboxes/{id}/files/content?path=data/in.txt"),
            None,
        ),
        (
            "POST",
            format!("/v1/sandboxes/{id}/files/write"),
            Some(json!({"path": "x", "content": "x"})),
        ),
        ("GET", format!("/v1/sandboxes/{id}/ports"), None),
        ("GET", format!("/v1/sandboxes/{id}/ports/8000/"), None),
        (
            "POST",
            format!("/v1/sandboxes/{id}/code/run"),
            Some(json!({"language": "python", "code": "1"})),
        ),
        ("DELETE", format!("/v1/sandboxes/{id}"), None),
        (
            "POST",
            format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"cmd": "true"})),
        ),
        (
            "POST",
            format!("/v1/sandboxes/{id}/timeout"),
            Some(json!({"timeoutSecs": 5})),
        ),
    ] {
        let r = other(&s, method, &path, body);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
    }
    assert_eq!(
        other(&s, "GET", "/v1/sandboxes", None).json()["sandboxes"],
        json!([])
    );

    assert_eq!(
        api(
            &s,
            "GET",
            &format!("/v1/sandboxes/{id}/processes/{bg}"),
            None
        )
        .json()["state"],
        "running",
        "another token's kill reached it"
    );

    // Deleting it takes its processes, its cgroups, its mounts and its warden.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(wardens(pid), 1);
    assert_eq!(sandbox_cgroups(pid), 1);
    let r = api(&s, "DELETE", &format!("/v1/sandboxes/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        api(&s, "GET", &format!("/v1/sandboxes/{id}"), None).status,
        404
    );
    assert_eq!(
        api(&s, "DELETE", &format!("/v1/sandboxes/{id}"), None).status,
        404
    );
    assert_eq!(wardens(pid), 0);
    assert_eq!(sandbox_cgroups(pid), 0);
    // Its mounts lived in its own namespace and died with it; the host's are as they were.
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        host_mounts
    );
}

#[test]
fn commands_run_side_by_side_each_with_its_own_verdict_and_figures() {
    require_isolation!();
    let s = start(&[]);
    let id = create(&s, json!({}))["sandboxId"]
        .as_str()
        .unwrap()
        .to_string();
    let burner = {
        let (base, id) = (s.base.clone(), id.clone());
        std::thread::spawn(move || {
            let body = json!({"cmd": "while :; do :; done", "timeoutMs": 1500}).to_string();
            curl(
                "POST",
                &format!("{base}/v1/sandboxes/{id}/exec"),
                Some(crate::server::TOKEN),
                Some(&body),
                "application/json",
            )
            .json()
        })
    };
    let hog = {
        let (base, id) = (s.base.clone(), id.clone());
        std::thread::spawn(move || {
            // Grows until the sandbox's memory stops it.
            let body =
                json!({"cmd": "python3 -c 'a = []\nwhile True: a.append(bytearray(1 << 20))'"})
                    .to_string();
            curl(
                "POST",
                &format!("{base}/v1/sandboxes/{id}/exec"),
                Some(crate::server::TOKEN),
                Some(&body),
                "application/json",
            )
            .json()
        })
    };
    let slept = sh(&s, &id, "sleep 1; echo slept");
    let burned = burner.join().unwrap();
    let hogged = hog.join().unwrap();
    assert_eq!(slept["status"], "ok", "{slept}");
    assert_eq!(slept["stdout"], "slept\n");
    assert!(
        slept["cpuMs"].as_u64().unwrap() < 200,
        "the sleeper's own CPU: {slept}"
    );
    assert_eq!(burned["status"], "wall_time_limit", "{burned}");
    // Its own CPU time, not the sandbox's: on a loaded 2-core machine it may get little of its
    // 1.5 s, but far more than the sleeper beside it.
    let burned_ms = burned["cpuMs"].as_u64().unwrap();
    assert!(
        burned_ms > 100 && burned_ms > 4 * slept["cpuMs"].as_u64().unwrap(),
        "{burned} beside {slept}"
    );
    assert_eq!(hogged["status"], "memory_limit", "{hogged}");
    // The sandbox survives its commands' ends.
    assert_eq!(sh(&s, &id, "echo alive")["stdout"], "alive\n");
}

#[test]
fn idle_and_expired_sandboxes_are_reclaimed() {
    require_isolation!();
    let s = start(&[]);
    let pid = s.child.id();
    let idle = create(&s, json!({"idleTimeoutSecs": 1}))["sandboxId"]
        .as_str()
        .unwrap()
        .to_string();
    let short = create(&s, json!({"timeoutSecs": 2}))["sandboxId"]
        .as_str()
        .unwrap()
        .to_string();
    let kept = create(&s, json!({"idleTimeoutSecs": 30}))["sandboxId"]
        .as_str()
        .unwrap()
        .to_string();
    // A command longer than the idle timeout keeps its sandbox alive while it runs.
    let r = exec(&s, &idle, json!({"cmd": "sleep 2; echo done"})).json();
    assert_eq!(r["stdout"], "done\n", "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let gone = [&idle, &short]
            .iter()
            .all(|id| api(&s, "GET", &format!("/v1/sandboxes/{id}"), None).status == 404);
        if gone {
            break;
        }
        assert!(Instant::now() < deadline, "not reclaimed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        api(&s, "GET", &format!("/v1/sandboxes/{kept}"), None).status,
        200
    );
    assert_eq!(wardens(pid), 1);
    assert_eq!(sandbox_cgroups(pid), 1);
}

#[test]
fn one_sandbox_sees_nothing_of_another() {
    require_isolation!();
    let s = start(&[]);
    let a = create(&s, json!({}))["sandboxId"]
        .as_str()
        .unwrap()
        .to_string();
    let b = create(&s, json!({}))["sandboxId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sh(&s, &a, "echo secret > mine.txt")["exitCode"], 0);
    let long = {
        let (base, a) = (s.base.clone(), a.clone());
        std::thread::spawn(move || {
            let body = json!({"cmd": "exec sleep 3"}).to_string();
            curl(
                "POST",
                &format!("{base}/v1/sandboxes/{a}/exec"),
                Some(crate::server::TOKEN),
                Some(&body),
                "application/json",
            )
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let r = sh(
        &s,
        &b,
        "ls -A /workspace; cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c 'slee[p] 3'; \
         find / -path /proc -prune -o -path /usr -prune -o -path /sys -prune -o -name mine.txt -print | wc -l",
    );
    assert_eq!(r["stdout"], "0\n0\n", "{r}");
    // The same look from inside the first finds both.
    let r = sh(
        &s,
        &a,
        "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c 'slee[p] 3'; ls /workspace",
    );
    assert_eq!(r["stdout"], "1\nmine.txt\n", "{r}");
    // Nor through the API: each sandbox's files and processes are its own.
    let stat = api(
        &s,
        "GET",
        &format!("/v1/sandboxes/{b}/files/stat?path=mine.txt"),
        None,
    );
    assert_eq!(stat.status, 404, "{}", stat.body);
    let procs = api(&s, "GET", &format!("/v1/sandboxes/{b}/processes"), None).json();
    assert!(
        procs["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["argv"].to_string().contains("cmdline")),
        "{procs}"
    );
    assert_eq!(long.join().unwrap().status, 200);
}

#[test]
fn two_hundred_sandboxes_at_once_each_run_a_command_then_all_go() {
    require_isolation!();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[sandboxes]\nmax_per_token = 200\nmax_sandboxes = 200\nmemory_mb = 64\n",
    )
    .unwrap();
    let s = start(&["--config", config.path().to_str().unwrap()]);
    let pid = s.child.id();
    let ids: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..50)
                        .map(|_| {
                            create(&s, json!({}))["sandboxId"]
                                .as_str()
                                .unwrap()
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(ids.len(), 200);
    // The cap holds.
    let r = api(&s, "POST", "/v1/sandboxes", Some(json!({})));
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(wardens(pid), 200);
    std::thread::scope(|scope| {
        for chunk in ids.chunks(50) {
            let s = &s;
            scope.spawn(move || {
                for id in chunk {
                    let r = sh(s, id, "echo $((6 * 7))");
                    assert_eq!(r["stdout"], "42\n", "{id}: {r}");
                }
            });
        }
    });
    std::thread::scope(|scope| {
        for chunk in ids.chunks(50) {
            let s = &s;
            scope.spawn(move || {
                for id in chunk {
                    let r = api(s, "DELETE", &format!("/v1/sandboxes/{id}"), None);
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            });
        }
    });
    assert_eq!(wardens(pid), 0);
    assert_eq!(sandbox_cgroups(pid), 0);
}

/// The server's gauge `name`.
fn gauge(s: &Server, name: &str) -> u64 {
    let text = api(s, "GET", "/metrics", None).body;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn a_pooled_sandbox_gets_the_limits_it_asked_for_and_the_pool_refills() {
    require_isolation!();
    let s = Server::start(&["--pool-size", "0", "--sandbox-pool-size", "3"]);
    // The pool starts with the first sandbox, which is built as asked.
    let first = create(&s, json!({}))["sandboxId"]
        .as_str()
        .unwrap()
        .to_string();
    let filled = |want: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while gauge(&s, "kiln_sandbox_pool_ready") < want {
            assert!(Instant::now() < deadline, "the pool never held {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    filled(3);
    // With three ready and nobody else creating, this one is taken from the pool: it must get
    // its own limits, not the pool's.
    let id = create(&s, json!({"limits": {"memoryMb": 64, "pids": 40}}))["sandboxId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(gauge(&s, "kiln_sandboxes"), 2);
    let hog = sh(
        &s,
        &id,
        "python3 -c 'a = []\nwhile True: a.append(bytearray(1 << 20))'",
    );
    assert_eq!(hog["status"], "memory_limit", "{hog}");
    // Stopped near its 64 MiB (its peak counts the interpreter's mapped files), far below the
    // 512 MiB a sandbox gets by default.
    assert!(hog["memoryBytes"].as_u64().unwrap() < 128 << 20, "{hog}");
    let forks = sh(
        &s,
        &id,
        "n=0; while [ $n -lt 60 ]; do sleep 5 & n=$((n+1)); done 2>/dev/null; jobs -p | wc -l",
    );
    let started: u64 = forks["stdout"]
        .as_str()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(started < 40, "60 sleeps under a 40-process limit: {forks}");
    let df = sh(
        &s,
        &id,
        "df -m /workspace | tail -1 | tr -s ' ' | cut -d' ' -f2",
    );
    assert_eq!(df["stdout"], "256\n", "{df}");
    filled(3);
    for id in [&first, &id] {
        assert_eq!(
            api(&s, "DELETE", &format!("/v1/sandboxes/{id}"), None).status,
            200
        );
    }
    assert_eq!(gauge(&s, "kiln_sandboxes"), 0);
}
