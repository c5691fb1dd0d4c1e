//! Judge0's routes in-process: the refusals are Judge0's statuses and shapes (422
//! `{"field": [...]}`, 400 `{"error"}`), given before any sandbox is asked for; the token is taken
//! from `X-Auth-Token` (header or query) or as `Bearer`; the catalog routes answer Judge0's ids.
//! (Jobs that run are `crates/kiln/tests/all/judge0.rs`.)

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};

use crate::config::ServerConfig;
use crate::http_tests::{app, assert_shape, call, request, Answer, TOKEN};

/// Judge0's `{"error"}` body: one string and nothing else (404 adds `status`).
fn assert_judge0_error(a: &Answer) {
    let obj = a.body.as_object().unwrap_or_else(|| panic!("{}", a.body));
    assert!(obj["error"].is_string(), "{}", a.body);
    if a.status != StatusCode::NOT_FOUND {
        assert_shape(a);
    }
    assert!(
        obj.keys().all(|k| k == "error" || k == "status"),
        "{}",
        a.body
    );
}

fn post(uri: &str, body: Value) -> Request<Body> {
    request("POST", uri, Some(TOKEN), Some(body))
}

#[tokio::test]
async fn judge0_create_refuses_bad_fields_with_judge0s_422() {
    let app = app(ServerConfig::default()).await;
    for (body, field, message) in [
        (
            json!({"source_code": "print(1)"}),
            "language_id",
            "can't be blank",
        ),
        (
            json!({"source_code": "print(1)", "language_id": 999}),
            "language_id",
            "language with id 999 doesn't exist",
        ),
        (json!({"language_id": 71}), "source_code", "can't be blank"),
        (
            json!({"source_code": "x", "language_id": "abc"}),
            "language_id",
            "is not a number",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "wall_time_limit": 150}),
            "wall_time_limit",
            "must be less than or equal to 20",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "memory_limit": 100}),
            "memory_limit",
            "must be greater than or equal to 2048",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "number_of_runs": 21}),
            "number_of_runs",
            "must be less than or equal to 20",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "compiler_options": "-O2"}),
            "compiler_options",
            "only allowed for compiled languages",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "callback_url": "https://example.test/hook"}),
            "callback_url",
            "must be an http:// URL",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "callback_url": "hook"}),
            "callback_url",
            "is not a valid URL",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "additional_files": "!!!"}),
            "additional_files",
            "is not valid base64",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "additional_files": "aGVsbG8="}),
            "additional_files",
            "is not a valid zip archive",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "enable_network": true}),
            "enable_network",
            "not allowed",
        ),
    ] {
        let a = call(&app, post("/judge0/submissions", body.clone())).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            a.body
        );
        let got = a.body[field][0]
            .as_str()
            .unwrap_or_else(|| panic!("{body}: {}", a.body));
        assert!(got.contains(message), "{body}: {got:?} lacks {message:?}");
    }
    // Bad base64 names its field.
    let a = call(
        &app,
        post(
            "/judge0/submissions?base64_encoded=true",
            json!({"source_code": "!!!", "language_id": 71}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(a.body["source_code"][0].is_string(), "{}", a.body);
    // Unknown fields in the query are Judge0's 400.
    let a = call(
        &app,
        post(
            "/judge0/submissions?wait=true&fields=stdout,nope",
            json!({"source_code": "x", "language_id": 71}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.body["error"], "invalid fields: [nope]");
    // Not JSON.
    let mut req = post("/judge0/submissions", json!({}));
    *req.body_mut() = Body::from("{not json");
    let a = call(&app, req).await;
    assert!(a.status.is_client_error(), "{}", a.body);
    // Wait switched off.
    let app = app_without_wait().await;
    let a = call(
        &app,
        post(
            "/judge0/submissions?wait=true",
            json!({"source_code": "x", "language_id": 71}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.body, json!({"error": "wait not allowed"}));
}

async fn app_without_wait() -> crate::http_tests::App {
    app(ServerConfig {
        judge0: crate::config::Judge0Settings {
            allow_wait: false,
            ..Default::default()
        },
        ..ServerConfig::default()
    })
    .await
}

#[tokio::test]
async fn judge0_batches_and_tokens_are_checked() {
    let app = app(ServerConfig::default()).await;
    let a = call(
        &app,
        post("/judge0/submissions/batch", json!({"submissions": []})),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(
        a.body["error"],
        "there should be at least one submission in a batch"
    );
    let many: Vec<Value> = (0..21).map(|_| json!({"language_id": 71})).collect();
    let a = call(
        &app,
        post("/judge0/submissions/batch", json!({"submissions": many})),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.body["error"]
        .as_str()
        .unwrap()
        .contains("less than or equal to 20"));
    // None valid: 422 with each item's fields.
    let a = call(
        &app,
        post(
            "/judge0/submissions/batch",
            json!({"submissions": [{"language_id": 999, "source_code": "x"}, {"source_code": "x"}]}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(a.body[0]["language_id"][0]
        .as_str()
        .unwrap()
        .contains("999"));
    assert_eq!(a.body[1]["language_id"][0], "can't be blank");
    // Unknown tokens: 404 alone, null in a batch.
    let unknown = "d85cd024-1548-4165-96c7-7bc88673f194";
    let a = call(
        &app,
        request(
            "GET",
            &format!("/judge0/submissions/{unknown}"),
            Some(TOKEN),
            None,
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    assert_judge0_error(&a);
    let a = call(
        &app,
        request(
            "GET",
            &format!("/judge0/submissions/batch?tokens={unknown}"),
            Some(TOKEN),
            None,
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body, json!({"submissions": [null]}));
    let a = call(
        &app,
        request(
            "DELETE",
            &format!("/judge0/submissions/{unknown}"),
            Some(TOKEN),
            None,
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    let a = call(
        &app,
        request("GET", "/judge0/submissions?fields=bogus", Some(TOKEN), None),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_judge0_error(&a);
}

#[tokio::test]
async fn judge0_takes_x_auth_token_and_answers_its_catalog() {
    let app = app(ServerConfig::default()).await;
    let get = |uri: &str, header: Option<&str>| {
        let mut b = Request::builder().method("GET").uri(uri.to_string());
        if let Some(h) = header {
            b = b.header("X-Auth-Token", h);
        }
        b.body(Body::empty()).unwrap()
    };
    let a = call(&app, get("/judge0/about", None)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    assert_judge0_error(&a);
    let a = call(&app, get("/judge0/about", Some("wrong"))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    let a = call(&app, get("/judge0/about", Some(TOKEN))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["version"], "1.13.1");
    let a = call(
        &app,
        get(&format!("/judge0/about?X-Auth-Token={TOKEN}"), None),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = call(&app, request("GET", "/judge0/statuses", Some(TOKEN), None)).await;
    let statuses = a.body.as_array().unwrap();
    assert_eq!(statuses.len(), 14);
    assert_eq!(statuses[2], json!({"id": 3, "description": "Accepted"}));
    assert_eq!(
        statuses[10],
        json!({"id": 11, "description": "Runtime Error (NZEC)"})
    );
    let a = call(
        &app,
        request("GET", "/judge0/config_info", Some(TOKEN), None),
    )
    .await;
    for key in [
        "enable_wait_result",
        "max_submission_batch_size",
        "max_wall_time_limit",
        "use_docs_as_homepage",
        "enable_network",
    ] {
        assert!(a.body.get(key).is_some(), "{key} missing: {}", a.body);
    }
    let a = call(&app, request("GET", "/judge0/languages", Some(TOKEN), None)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let langs = a.body.as_array().unwrap();
    if let Some(py) = langs.iter().find(|l| l["id"] == 71) {
        assert!(py["name"].as_str().unwrap().starts_with("Python ("), "{py}");
        let a = call(
            &app,
            request("GET", "/judge0/languages/71", Some(TOKEN), None),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["is_archived"], false);
    }
    for id in ["999", "abc"] {
        let a = call(
            &app,
            request("GET", &format!("/judge0/languages/{id}"), Some(TOKEN), None),
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    }
}
