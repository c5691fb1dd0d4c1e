//! The function and codelet routes in-process: every refusal is a 400 naming its field (or a
//! 413 for a body past the limit), in the one error shape, before any sandbox is asked for.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::config::ServerConfig;
use crate::http_tests::{app, assert_shape, call, request, TOKEN};

fn python_call(patch: Value) -> Value {
    let mut body = json!({"language": "python", "code": "def f(): return 1", "functionName": "f"});
    for (k, v) in patch.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn function_calls_refuse_bad_fields_by_name() {
    let app = app(ServerConfig::default()).await;
    for (patch, field) in [
        (json!({"language": "cobol"}), "language"),
        (json!({"args": {"a": 1}}), "args"),
        (json!({"kwargs": "x"}), "kwargs"),
        (json!({"files": {"../up": "x"}}), "files"),
        (json!({"files": {"/abs": "x"}}), "files"),
        (json!({"files": {"ok": {"base64": "!!"}}}), "files"),
        (json!({"workdir": "/usr"}), "workdir"),
        (json!({"workdir": "/tmp/.kiln"}), "workdir"),
        (json!({"timeoutMs": 10_000_000}), "timeoutMs"),
        (json!({"limits": {"memoryMb": 0}}), "limits.memoryMb"),
        (json!({"functionName": "  "}), "functionName"),
        (json!({"schema": {"params": [{"name": ""}]}}), "schema"),
        (json!({"schema": {"params": [], "bogus": 1}}), "schema"),
        (json!({"mount": {"dirs": {"/data": "/"}}}), "mount"),
        (json!({"mount": {"dirs": {"relative": "/"}}}), "mount"),
        (json!({"mount": {"nope": 1}}), "mount"),
        (json!({"unknownField": 1}), "unknownField"),
    ] {
        let a = call(
            &app,
            request(
                "POST",
                "/v1/functions/call",
                Some(TOKEN),
                Some(python_call(patch.clone())),
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{patch}: {}", a.body);
        assert_shape(&a);
        assert!(
            a.body.to_string().contains(field),
            "{patch}: {} lacks {field}",
            a.body
        );
    }
    let a = call(
        &app,
        request(
            "POST",
            "/v1/functions/call",
            None,
            Some(python_call(json!({}))),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn codelets_and_manual_syncs_refuse_bad_fields_by_name() {
    let app = app(ServerConfig::default()).await;
    for (body, field) in [
        (
            json!({"source": {"type": "url", "code": "x"}}),
            "source.type",
        ),
        (
            json!({"source": {"type": "string", "code": "x", "export_name": "not an id"}}),
            "export_name",
        ),
        (
            json!({"source": {"type": "string", "code": "x"}, "options": {"timeout_ms": 0}}),
            "timeout_ms",
        ),
        (
            json!({"source": {"type": "string", "code": "x"}, "options": {"globals": [1]}}),
            "globals",
        ),
        (json!({"source": {"type": "string"}}), "code"),
    ] {
        let a = call(
            &app,
            request("POST", "/v1/codelets/run", Some(TOKEN), Some(body.clone())),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
        assert_shape(&a);
        assert!(
            a.body.to_string().contains(field),
            "{body}: {} lacks {field}",
            a.body
        );
    }
    for (body, field) in [
        (
            json!({"changes": [], "mount": {"dirs": {"/w": "/etc"}}}),
            "mount",
        ),
        (
            json!({"changes": [{"path": 1}], "mount": {"dirs": {}}}),
            "changes.0",
        ),
        (
            json!({"changes": [], "mount": {"dirs": {}}, "onError": "explode"}),
            "onError",
        ),
    ] {
        let a = call(
            &app,
            request(
                "POST",
                "/v1/functions/sync",
                Some(TOKEN),
                Some(body.clone()),
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
        assert_shape(&a);
        assert!(
            a.body.to_string().contains(field),
            "{body}: {} lacks {field}",
            a.body
        );
    }
}
