//! The HTTP layer in-process, with `Router::oneshot` and no root: every error path of the routes
//! (400, 401, 404, 405, 409, 413, 415, 429), each with the one JSON error shape. The service
//! behind it has no sandboxes: jobs here are admitted and wait for their start, and never run.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use kiln_core::executor::NoSandboxes;
use kiln_core::log::{LocalEventLog, LocalLogConfig};
use kiln_core::queue::FairQueue;
use kiln_core::sandbox::SandboxService;
use kiln_core::store::SqliteStore;
use kiln_core::JobService;
use kiln_lang::Catalog;
use kiln_pusher::{NoEvents, Realtime, RealtimeConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::auth::Tokens;
use crate::config::ServerConfig;
use crate::state::AppState;

pub(crate) const TOKEN: &str = "t0ken";

pub(crate) struct App {
    router: Router,
    _dir: tempfile::TempDir,
}

pub(crate) async fn app(cfg: ServerConfig) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = cfg;
    cfg.tokens.insert("ci".into(), TOKEN.into());
    cfg.tokens.insert("other".into(), "0ther".into());
    cfg.tokens.insert("third".into(), "th1rd".into());
    let store = Arc::new(SqliteStore::open(&dir.path().join("jobs.db")).unwrap());
    let log = Arc::new(
        LocalEventLog::open(LocalLogConfig {
            dir: dir.path().join("logs"),
            memory_budget: 1 << 20,
            window_bytes: 1 << 16,
        })
        .unwrap(),
    );
    let catalog = Arc::new(Catalog::embedded().unwrap());
    let sandboxes = SandboxService::start(
        cfg.sandboxes.service(),
        cfg.service().admission,
        catalog.clone(),
        Arc::new(NoSandboxes),
    );
    let functions = Arc::new(kiln_core::functions::FunctionService::new(
        Arc::new(NoSandboxes),
        catalog.clone(),
        cfg.functions.service(),
    ));
    let objects: Arc<dyn kiln_core::objects::ObjectStore> =
        Arc::new(kiln_core::objects::DiskObjects::open(&dir.path().join("objects")).unwrap());
    let blobs = Arc::new(
        kiln_core::blobs::BlobService::open(cfg.blobs.service(), objects.clone())
            .await
            .unwrap(),
    );
    let service = JobService::start(
        cfg.service(),
        Arc::new(NoSandboxes),
        catalog,
        Arc::new(FairQueue::new()),
        log,
        store,
        objects,
    )
    .await
    .unwrap();
    let realtime = Realtime::new(
        RealtimeConfig {
            app_id: "1".into(),
            app_key: "k".into(),
            app_secret: "s".into(),
            activity_timeout_secs: 120,
            max_message_bytes: 10 << 10,
        },
        Arc::new(NoEvents),
    );
    let cfg = Arc::new(cfg);
    let state = AppState {
        tokens: Arc::new(Tokens::new(cfg.tokens.iter())),
        compat: Default::default(),
        blobs,
        links: crate::links::Links::new(b"test key", None, "http://kiln.test"),
        cfg,
        service,
        sandboxes,
        functions,
        realtime,
    };
    App {
        router: crate::app::router(state),
        _dir: dir,
    }
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: Value,
}

pub(crate) async fn call(app: &App, req: Request<Body>) -> Answer {
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status}: not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Answer {
        status,
        headers,
        body,
    }
}

pub(crate) fn request(
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

fn python(content: &str) -> Value {
    json!({"language": "python", "files": [{"name": "main.py", "content": content}]})
}

/// Every error body has the one shape: an `error` string, and only the documented extras.
pub(crate) fn assert_shape(a: &Answer) {
    let obj = a.body.as_object().unwrap_or_else(|| panic!("{}", a.body));
    assert!(obj["error"].is_string(), "{}", a.body);
    for key in obj.keys() {
        assert!(
            ["error", "details", "retryAfterMs", "capBytes"].contains(&key.as_str()),
            "{key} in {}",
            a.body
        );
    }
}

#[tokio::test]
async fn item6_and_14_unauthorised_and_unknown_routes_and_methods_are_json() {
    let app = app(ServerConfig::default()).await;
    let a = call(&app, request("GET", "/v1/languages", None, None)).await;
    assert_eq!(
        (a.status, a.body.clone()),
        (StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}))
    );
    // Item 6 of the hardening pass: a trailing space, and a second header, are not a token.
    for headers in [
        vec![format!("Bearer {TOKEN} ")],
        vec![format!("Bearer {TOKEN}"), format!("Bearer {TOKEN}")],
    ] {
        let mut req = request("GET", "/v1/languages", None, None);
        for h in headers {
            req.headers_mut()
                .append(header::AUTHORIZATION, h.parse().unwrap());
        }
        assert_eq!(call(&app, req).await.status, StatusCode::UNAUTHORIZED);
    }
    // /metrics needs a token on the main address.
    assert_eq!(
        call(&app, request("GET", "/metrics", None, None))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let a = call(&app, request("GET", "/v1/nope", Some(TOKEN), None)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_shape(&a);
    let a = call(&app, request("DELETE", "/v1/execute", Some(TOKEN), None)).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_shape(&a);
    let a = call(&app, request("GET", "/health", None, None)).await;
    assert_eq!(a.body, json!({"status": "ok"}));
}

#[tokio::test]
async fn item5_11_and_14_bad_bodies_are_400_415_and_413_naming_the_field() {
    let app = app(ServerConfig {
        max_body_bytes: 1 << 20,
        max_files_bytes: 1000,
        ..ServerConfig::default()
    })
    .await;
    let mut req = request("POST", "/v1/execute", Some(TOKEN), None);
    *req.body_mut() = Body::from("{not json");
    req.headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    let a = call(&app, req).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON body"),
        "{}",
        a.body
    );
    let mut req = request("POST", "/v1/execute", Some(TOKEN), None);
    *req.body_mut() = Body::from("language=python");
    req.headers_mut()
        .insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    let a = call(&app, req).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_shape(&a);
    let cases = [
        (
            json!({"language": "python", "files": [{"name": "/etc/passwd", "content": "1"}]}),
            "files.0.name",
            "relative",
        ),
        (
            json!({"language": "python", "files": [{"name": "a\u{1b}b", "content": "1"}]}),
            "files.0.name",
            "control",
        ),
        (
            json!({"language": "python", "files": [{"name": "a", "content": "1"}, {"name": "a/b", "content": "1"}]}),
            "files.1.name",
            "\"a\"",
        ),
        (
            json!({"language": "python", "files": [{"name": "a", "content": 7}]}),
            "files.0.content",
            "string",
        ),
        (
            json!({"language": "python", "files": [{"name": "a", "content": "!", "encoding": "base64"}]}),
            "files.0.content",
            "base64",
        ),
        (
            json!({"language": "python", "files": [{"name": "a", "content": "1"}], "limits": {"cpuMs": 0}}),
            "limits.cpuMs",
            "at least 1",
        ),
        (
            json!({"language": "python", "files": [{"name": "a", "content": "1"}], "limits": {"openFiles": 1u64 << 40}}),
            "limits.openFiles",
            "at most",
        ),
        (
            json!({"language": "python", "files": [{"name": "a", "content": "1"}], "limits": {"fileSizeKb": 1u64 << 54}}),
            "limits.fileSizeKb",
            "at most",
        ),
        (
            json!({"language": "python", "files": [{"name": "a", "content": "1"}], "args": ["a\u{0}b"]}),
            "args.0",
            "NUL",
        ),
        (
            json!({"language": "python", "files": [{"name": "a", "content": "1"}], "args": ["x".repeat(70 << 10)]}),
            "args",
            "limit",
        ),
        (
            json!({"language": "python", "files": []}),
            "files",
            "at least one",
        ),
    ];
    for (body, path, why) in cases {
        let a = call(
            &app,
            request("POST", "/v1/execute", Some(TOKEN), Some(body.clone())),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
        assert_eq!(a.body["error"], "Validation error", "{body}");
        assert_eq!(a.body["details"][0]["path"], path, "{body}: {}", a.body);
        assert!(
            a.body["details"][0]["message"]
                .as_str()
                .unwrap()
                .contains(why),
            "{body}: {}",
            a.body
        );
        assert_shape(&a);
    }
    let a = call(
        &app,
        request(
            "POST",
            "/v1/execute",
            Some(TOKEN),
            Some(json!({"language": "cobol", "files": [{"name": "a", "content": "1"}]})),
        ),
    )
    .await;
    assert_eq!(
        (a.status, a.body.clone()),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "Unknown language \"cobol\". Check GET /v1/languages."})
        )
    );
    let a = call(
        &app,
        request(
            "POST",
            "/v1/execute",
            Some(TOKEN),
            Some(python(&"x".repeat(2000))),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_shape(&a);
    let big = "x".repeat(2 << 20);
    let a = call(
        &app,
        request("POST", "/v1/execute", Some(TOKEN), Some(python(&big))),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_shape(&a);
}

#[tokio::test]
async fn item14_unknown_and_foreign_jobs_are_404_and_a_finished_one_refuses_a_start() {
    let app = app(ServerConfig {
        warmup_ms: 100,
        ..ServerConfig::default()
    })
    .await;
    let long = "x".repeat(5000);
    let a = call(
        &app,
        request("GET", &format!("/v1/jobs/{long}"), Some(TOKEN), None),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // Item 14: an echoed id is cut.
    assert!(a.body["error"].as_str().unwrap().len() < 200, "{}", a.body);
    let a = call(
        &app,
        request("POST", "/v1/execute", Some(TOKEN), Some(python("print(1)"))),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let id = a.body["jobId"].as_str().unwrap().to_string();
    // Another token sees nothing of it.
    for (method, path) in [
        ("GET", format!("/v1/jobs/{id}")),
        ("POST", format!("/v1/jobs/{id}/kill")),
        ("POST", format!("/v1/jobs/{id}/start")),
    ] {
        let a = call(&app, request(method, &path, Some("0ther"), None)).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
    }
    // Its start never comes: it expires, as its own verdict.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let a = call(
        &app,
        request("GET", &format!("/v1/jobs/{id}"), Some(TOKEN), None),
    )
    .await;
    assert_eq!(a.body["state"], "error", "{}", a.body);
    let a = call(
        &app,
        request("POST", &format!("/v1/jobs/{id}/start"), Some(TOKEN), None),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert_shape(&a);
    let a = call(
        &app,
        request(
            "POST",
            &format!("/v1/jobs/{id}/stdin"),
            Some(TOKEN),
            Some(json!({"chunk": "x"})),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
}

#[tokio::test]
async fn item2_and_13_queue_token_quota_and_stdin_caps_are_429_and_413() {
    let app = app(ServerConfig {
        capacity: 1,
        queue_depth: 3,
        token_queue_depth: 2,
        token_awaiting_start: 2,
        ..ServerConfig::default()
    })
    .await;
    let exec =
        |token: &'static str| request("POST", "/v1/execute", Some(token), Some(python("print(1)")));
    let first = call(&app, exec(TOKEN)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(call(&app, exec(TOKEN)).await.status, StatusCode::ACCEPTED);
    // The token's quota: its third waiting job is refused while another token's is admitted.
    let a = call(&app, exec(TOKEN)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    assert_eq!(a.body["retryAfterMs"], 1000);
    assert_eq!(a.headers[header::RETRY_AFTER], "1");
    assert_shape(&a);
    assert_eq!(call(&app, exec("0ther")).await.status, StatusCode::ACCEPTED);
    assert_eq!(call(&app, exec("0ther")).await.status, StatusCode::ACCEPTED);
    // The queue itself (capacity 1 + depth 3) is full now, for a third token too.
    let a = call(&app, exec("th1rd")).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .starts_with("Executor at capacity (queue depth 4"),
        "{}",
        a.body
    );
    // Stdin: one frame larger than the pending cap can never succeed: 413, not 429.
    let id = first.body["jobId"].as_str().unwrap();
    let huge = "y".repeat((64 << 10) + 1);
    let a = call(
        &app,
        request(
            "POST",
            &format!("/v1/jobs/{id}/stdin"),
            Some(TOKEN),
            Some(json!({"chunk": huge})),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert_eq!(a.body["capBytes"], 65536);
    let big = "y".repeat(40 << 10);
    let stdin = |chunk: &str| {
        request(
            "POST",
            &format!("/v1/jobs/{id}/stdin"),
            Some(TOKEN),
            Some(json!({"chunk": chunk})),
        )
    };
    assert_eq!(call(&app, stdin(&big)).await.status, StatusCode::OK);
    let a = call(&app, stdin(&big)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.body["capBytes"], 65536);
    assert_shape(&a);
    let a = call(
        &app,
        request(
            "POST",
            &format!("/v1/jobs/{id}/stdin"),
            Some(TOKEN),
            Some(json!({"chnk": "x"})),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_shape(&a);
}

#[tokio::test]
async fn item11_a_job_whose_start_never_came_is_expired_not_an_internal_error() {
    let app = app(ServerConfig {
        warmup_ms: 50,
        ..ServerConfig::default()
    })
    .await;
    let a = call(
        &app,
        request("POST", "/v1/execute", Some(TOKEN), Some(python("print(1)"))),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let id = a.body["jobId"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let a = call(
            &app,
            request("GET", &format!("/v1/jobs/{id}"), Some(TOKEN), None),
        )
        .await;
        if a.body["state"] == "error" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", a.body);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Its events end with the verdict of its own...
    let resp = app
        .router
        .clone()
        .oneshot(request(
            "GET",
            &format!("/v1/jobs/{id}/events"),
            Some(TOKEN),
            None,
        ))
        .await
        .unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let sse = String::from_utf8_lossy(&bytes);
    let usage = sse
        .lines()
        .skip_while(|l| *l != "event: usage")
        .nth(1)
        .and_then(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no usage event in {sse}"));
    let usage: Value = serde_json::from_str(usage).unwrap();
    assert_eq!(usage["status"], "expired", "{usage}");
    // ...and the metrics count it as such, not as Kiln's failure.
    let resp = app
        .router
        .clone()
        .oneshot(request("GET", "/metrics", Some(TOKEN), None))
        .await
        .unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let metrics = String::from_utf8_lossy(&bytes);
    assert!(
        metrics.contains(r#"kiln_jobs_finished_total{state="error",verdict="expired"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains("internal_error"), "{metrics}");
}

#[tokio::test]
async fn sandbox_routes_refuse_bad_requests_unknown_ids_and_strangers() {
    let app = app(ServerConfig::default()).await;
    let a = call(&app, request("GET", "/v1/sandboxes", None, None)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_shape(&a);
    let a = call(&app, request("GET", "/v1/sandboxes", Some(TOKEN), None)).await;
    assert_eq!(
        (a.status, &a.body),
        (StatusCode::OK, &json!({"sandboxes": []}))
    );
    // Every bad field of a creation is named.
    let a = call(
        &app,
        request(
            "POST",
            "/v1/sandboxes",
            Some(TOKEN),
            Some(json!({"limits": {"memoryMb": 1u64 << 40, "cpus": -1}, "env": {"A=B": "x"},
                        "cwd": "rel", "files": [{"name": "../x", "content": "1"}], "timeoutSecs": 0})),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_shape(&a);
    let paths: Vec<&str> = a.body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["timeoutSecs"], "{}", a.body);
    let a = call(
        &app,
        request(
            "POST",
            "/v1/sandboxes",
            Some(TOKEN),
            Some(
                json!({"limits": {"memoryMb": 1u64 << 40, "cpus": -1}, "env": {"A=B": "x"},
                        "cwd": "rel", "files": [{"name": "../x", "content": "1"}]}),
            ),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let paths: Vec<&str> = a.body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    for want in [
        "limits.memoryMb",
        "limits.cpus",
        "env.A=B",
        "cwd",
        "files.0.name",
    ] {
        assert!(paths.contains(&want), "{want} not in {}", a.body);
    }
    let a = call(
        &app,
        request(
            "POST",
            "/v1/sandboxes",
            Some(TOKEN),
            Some(json!({"language": "cobol"})),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let a = call(
        &app,
        request(
            "POST",
            "/v1/sandboxes",
            Some(TOKEN),
            Some(json!({"network": "host"})),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_shape(&a);
    // Unknown and malformed ids are 404 on every route.
    let real_looking = format!("sbx_{}", "0".repeat(32));
    for id in [real_looking.as_str(), "nope", "sbx_..%2F..", "sbx_ZZ"] {
        for (method, path, body) in [
            ("GET", format!("/v1/sandboxes/{id}"), None),
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
            let a = call(&app, request(method, &path, Some(TOKEN), body)).await;
            assert_eq!(
                a.status,
                StatusCode::NOT_FOUND,
                "{method} {path}: {}",
                a.body
            );
            assert_shape(&a);
        }
    }
    // A command needs one of cmd and argv; a bad one is named before any sandbox is looked for.
    for body in [
        json!({}),
        json!({"cmd": "x", "argv": ["x"]}),
        json!({"cmd": "x", "timeoutMs": 0}),
    ] {
        let path = format!("/v1/sandboxes/{real_looking}/exec");
        let a = call(
            &app,
            request("POST", &path, Some(TOKEN), Some(body.clone())),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
        assert_shape(&a);
    }
    let a = call(
        &app,
        request(
            "POST",
            &format!("/v1/sandboxes/{real_looking}/exec"),
            Some(TOKEN),
            Some(json!({"cmd": "true", "timeoutMs": 1u64 << 40})),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.body["details"][0]["path"], "timeoutMs");
    // Without an engine, creating is Kiln's failure, said as such.
    let a = call(
        &app,
        request("POST", "/v1/sandboxes", Some(TOKEN), Some(json!({}))),
    )
    .await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", a.body);
    assert_shape(&a);
}

#[tokio::test]
async fn channel_auth_refusals() {
    let app = app(ServerConfig::default()).await;
    let a = call(
        &app,
        request(
            "POST",
            "/v1/channel-auth",
            Some(TOKEN),
            Some(json!({"socket_id": "1.2", "channel_name": "private-other"})),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_shape(&a);
    let a = call(
        &app,
        request(
            "POST",
            "/v1/channel-auth",
            Some(TOKEN),
            Some(json!({"socket_id": "x", "channel_name": "private-run-1"})),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = call(
        &app,
        request("POST", "/v1/channel-auth", Some(TOKEN), Some(json!({}))),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_shape(&a);
}
