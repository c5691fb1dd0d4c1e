//! The blob and artifact routes in-process: the bodies' refusals name their field, an upload URL
//! is made under the request's host and works only as made, wrong bytes are refused, `files[].ref`
//! to a blob the token does not hold is a 400 naming the file, an invalid `traceparent` field is
//! a 400 while an invalid header is ignored, and artifact URLs that were not signed are refused.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::ServerConfig;
use crate::http_tests::{app, assert_shape, call, request, TOKEN};

fn hash_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn put(uri: &str, body: &'static [u8]) -> Request<Body> {
    Request::builder()
        .method("PUT")
        .uri(uri)
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn a_check_answers_upload_urls_under_the_requests_host_that_work_only_as_made() {
    let app = app(ServerConfig::default()).await;
    let bytes: &'static [u8] = b"the blob's bytes";
    let hash = hash_of(bytes);
    let mut req = request(
        "POST",
        "/v1/blobs/check",
        Some(TOKEN),
        Some(json!({"hashes": [hash, hash]})),
    );
    req.headers_mut()
        .insert(header::HOST, "kiln.example:8080".parse().unwrap());
    let a = call(&app, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["present"], json!([]));
    // Asked twice, answered once.
    assert_eq!(a.body["missing"].as_array().unwrap().len(), 1, "{}", a.body);
    let url = a.body["missing"][0]["uploadUrl"].as_str().unwrap();
    let path = url
        .strip_prefix("http://kiln.example:8080")
        .unwrap_or_else(|| panic!("{url}"))
        .to_string();

    let a = call(&app, put(&path, b"other bytes")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_shape(&a);
    let tampered = path.replace("expires=", "expires=1");
    let a = call(&app, put(&tampered, bytes)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    let a = call(&app, put(&path, bytes)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body, json!({"hash": hash, "bytes": bytes.len()}));

    let check = |token: &'static str| {
        request(
            "POST",
            "/v1/blobs/check",
            Some(token),
            Some(json!({"hashes": [hash_of(bytes)]})),
        )
    };
    assert_eq!(
        call(&app, check(TOKEN)).await.body["present"],
        json!([hash])
    );
    // Another token is told it is missing.
    assert_eq!(call(&app, check("0ther")).await.body["present"], json!([]));
    let a = call(
        &app,
        request(
            "POST",
            "/v1/blobs/finalize",
            Some("0ther"),
            Some(json!({"hashes": [hash]})),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["details"][0]["path"], "hashes.0", "{}", a.body);
}

#[tokio::test]
async fn blob_bodies_and_refs_are_refused_by_field() {
    let app = app(ServerConfig::default()).await;
    for (body, field) in [
        (json!({"hashes": ["sha256:00"]}), "hashes.0"),
        (
            json!({"hashes": [format!("sha256:{}", "A".repeat(64))]}),
            "hashes.0",
        ),
        (json!({"hashes": vec![hash_of(b"x"); 1025]}), "hashes"),
    ] {
        let a = call(
            &app,
            request("POST", "/v1/blobs/check", Some(TOKEN), Some(body)),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
        assert_eq!(a.body["details"][0]["path"], field, "{}", a.body);
    }
    let a = call(
        &app,
        request("POST", "/v1/blobs/check", None, Some(json!({"hashes": []}))),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    let job = |file: serde_json::Value| json!({"language": "python", "files": [{"name": "main.py", "content": "print(1)"}, file]});
    for (file, field) in [
        (
            json!({"name": "d.bin", "ref": hash_of(b"never uploaded")}),
            "files.1.ref",
        ),
        (json!({"name": "d.bin", "ref": "sha256:zz"}), "files.1.ref"),
        (
            json!({"name": "d.bin", "ref": hash_of(b"x"), "content": "x"}),
            "files.1",
        ),
        (json!({"name": "d.bin"}), "files.1.content"),
    ] {
        let a = call(
            &app,
            request("POST", "/v1/execute", Some(TOKEN), Some(job(file))),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
        assert_eq!(a.body["details"][0]["path"], field, "{}", a.body);
    }
}

#[tokio::test]
async fn a_traceparent_field_must_be_valid_and_a_header_that_is_not_is_ignored() {
    let app = app(ServerConfig::default()).await;
    let body = |tp: &str| {
        json!({"language": "python", "traceparent": tp,
               "files": [{"name": "main.py", "content": "print(1)"}]})
    };
    let a = call(
        &app,
        request("POST", "/v1/execute", Some(TOKEN), Some(body("00-zz"))),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.body["details"][0]["path"], "traceparent");
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let a = call(
        &app,
        request("POST", "/v1/execute", Some(TOKEN), Some(body(good))),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let mut req = request(
        "POST",
        "/v1/execute",
        Some(TOKEN),
        Some(json!({"language": "python", "files": [{"name": "main.py", "content": "print(1)"}]})),
    );
    req.headers_mut()
        .insert("traceparent", "not-a-trace".parse().unwrap());
    assert_eq!(call(&app, req).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn artifact_urls_need_their_signature() {
    let app = app(ServerConfig::default()).await;
    for uri in [
        "/v1/artifacts/j/0/a.txt",
        "/v1/artifacts/j/0/a.txt?expires=99999999999&signature=00",
        "/v1/artifacts/j/0/a.txt?expires=x&signature=zz",
    ] {
        let a = call(&app, request("GET", uri, None, None)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{uri}: {}", a.body);
        assert_shape(&a);
    }
    // Signed, but for a job that has no such artifact.
    let links = crate::links::Links::new(b"test key", None, "http://kiln.test");
    let info = kiln_core::job::ArtifactInfo {
        index: 0,
        name: "a.txt".into(),
        mime_type: "text/plain".into(),
        bytes: 1,
    };
    let url = links.artifact_url("", &kiln_core::JobId("j".into()), &info, u64::MAX / 2);
    let a = call(&app, request("GET", &url, None, None)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
}
