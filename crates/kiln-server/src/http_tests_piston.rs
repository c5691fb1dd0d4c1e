//! Piston's routes in-process: every refusal is Piston's status with a `{message}` naming the
//! field, given before any sandbox is asked for; the token is taken bare or as `Bearer`; the
//! routes answer under a trailing slash too. (Jobs that run are `crates/kiln/tests/all/piston.rs`.)

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};

use crate::config::ServerConfig;
use crate::http_tests::{app, assert_shape, call, request, Answer, TOKEN};

/// Piston's error body: a `message` string and nothing else.
fn assert_piston_shape(a: &Answer) {
    let obj = a.body.as_object().unwrap_or_else(|| panic!("{}", a.body));
    assert!(obj["message"].is_string(), "{}", a.body);
    assert_eq!(obj.len(), 1, "{}", a.body);
}

fn python(patch: Value) -> Value {
    let mut body = json!({"language": "python", "version": "*",
        "files": [{"content": "print(input())"}]});
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            body.as_object_mut().unwrap().remove(k);
        } else {
            body[k] = v.clone();
        }
    }
    body
}

fn bare(method: &str, uri: &str, token: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, token)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn piston_execute_refuses_bad_fields_with_pistons_messages() {
    let app = app(ServerConfig::default()).await;
    for (patch, message) in [
        (
            json!({"language": null}),
            "language is required as a string",
        ),
        (json!({"version": null}), "version is required as a string"),
        (json!({"files": null}), "files is required as an array"),
        (
            json!({"files": [{"name": "a.py"}]}),
            "files[0].content is required as a string",
        ),
        (json!({"language": "cobol"}), "cobol-* runtime is unknown"),
        (json!({"version": "0.1"}), "python-0.1 runtime is unknown"),
        (json!({"version": "^3"}), "python-^3 runtime is unknown"),
        (
            json!({"run_timeout": -5}),
            "run_timeout must be non-negative",
        ),
        (
            json!({"compile_cpu_time": -1}),
            "compile_cpu_time must be non-negative",
        ),
        (
            json!({"files": [{"content": "!!", "encoding": "base64"}]}),
            "files[0].content is not valid base64",
        ),
        (
            json!({"files": [{"content": "6", "encoding": "hex"}]}),
            "files[0].content is not valid hex",
        ),
        (
            json!({"files": [{"content": "aGk=", "encoding": "base64"}]}),
            "files must include at least one utf8 encoded file",
        ),
        (json!({"language": 5}), "language: invalid type"),
        (json!({"args": "x"}), "args: invalid type"),
        (json!({"run_timeout": "1s"}), "run_timeout: invalid type"),
        (
            json!({"files": [{"name": "../x.py", "content": ""}]}),
            "files.0.name",
        ),
    ] {
        let a = call(
            &app,
            request(
                "POST",
                "/api/v2/execute",
                Some(TOKEN),
                Some(python(patch.clone())),
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{patch}: {}", a.body);
        assert_piston_shape(&a);
        let got = a.body["message"].as_str().unwrap();
        assert!(got.contains(message), "{patch}: {got:?} lacks {message:?}");
    }
    // Not JSON at all, and JSON of another media type.
    let mut req = request("POST", "/api/v2/execute", Some(TOKEN), None);
    req.headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    *req.body_mut() = Body::from("{not json");
    let a = call(&app, req).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_piston_shape(&a);
    let mut req = request(
        "POST",
        "/api/v2/execute",
        Some(TOKEN),
        Some(python(json!({}))),
    );
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    let a = call(&app, req).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", a.body);
    assert_eq!(
        a.body["message"],
        "requests must be of type application/json"
    );
}

#[tokio::test]
async fn piston_routes_take_bare_and_bearer_tokens_and_trailing_slashes() {
    let app = app(ServerConfig::default()).await;
    let a = call(&app, request("GET", "/api/v2/runtimes", None, None)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_piston_shape(&a);
    let a = call(&app, bare("GET", "/api/v2/runtimes", "wrong")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    for req in [
        request("GET", "/api/v2/runtimes", Some(TOKEN), None),
        request("GET", "/api/v2/runtimes/", Some(TOKEN), None),
        bare("GET", "/api/v2/runtimes", TOKEN),
        bare("GET", "/api/v2/runtimes/", TOKEN),
    ] {
        let a = call(&app, req).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let list = a.body.as_array().unwrap();
        for r in list {
            assert!(r["language"].is_string() && r["version"].is_string(), "{r}");
            assert!(r["aliases"].is_array(), "{r}");
            assert!(
                r.get("runtime").is_none_or(Value::is_string),
                "runtime is a string or absent: {r}"
            );
        }
        let names: Vec<&str> = list.iter().filter_map(|r| r["language"].as_str()).collect();
        // Kiln's names are Piston's in this list.
        assert!(
            !names.contains(&"cpp") && !names.contains(&"sqlite"),
            "{names:?}"
        );
    }
    // The bare token is Piston's only: the rest of the API keeps `Bearer`.
    let a = call(&app, bare("GET", "/v1/languages", TOKEN)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_shape(&a);
    // A trailing slash and a bare token reach execute's checks too.
    let mut req = request(
        "POST",
        "/api/v2/execute/",
        None,
        Some(python(json!({"language": null}))),
    );
    req.headers_mut()
        .insert(header::AUTHORIZATION, TOKEN.parse().unwrap());
    let a = call(&app, req).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.body["message"], "language is required as a string");
}

#[tokio::test]
async fn piston_packages_are_listed_and_never_installed() {
    let app = app(ServerConfig::default()).await;
    let a = call(&app, request("GET", "/api/v2/packages", Some(TOKEN), None)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    for p in a.body.as_array().unwrap() {
        assert_eq!(p["installed"], true, "{p}");
        assert!(
            p["language"].is_string() && p["language_version"].is_string(),
            "{p}"
        );
    }
    for (method, path) in [
        ("POST", "/api/v2/packages"),
        ("DELETE", "/api/v2/packages"),
        ("POST", "/api/v2/packages/"),
    ] {
        let body = json!({"language": "python", "version": "3.x"});
        let a = call(&app, request(method, path, Some(TOKEN), Some(body))).await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{method} {path}: {}",
            a.body
        );
        assert_piston_shape(&a);
        let m = a.body["message"].as_str().unwrap();
        assert!(m.contains("operating system"), "{m}");
    }
    // The WebSocket route wants an upgrade.
    let a = call(&app, request("GET", "/api/v2/connect", Some(TOKEN), None)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_piston_shape(&a);
}
