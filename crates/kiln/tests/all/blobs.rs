//! Content-addressed blobs against `kiln serve`, with curl as the client: an upload URL holds
//! only for its hash, token and time; bytes that are not their hash store nothing; a token can
//! neither see nor use another's blob; the quotas refuse what would pass them and the store's
//! disk use stays under them; a job's `files[].ref` gets the exact bytes.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::require_isolation;
use crate::server::{api, curl, wait_state, Reply, Server, TOKEN};

const OTHER: &str = "test-token-other";

fn hash_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Pseudo-random bytes (the same for the same seed).
pub(crate) fn bytes(n: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut block = Sha256::digest([seed]).to_vec();
    while out.len() < n {
        out.extend_from_slice(&block);
        block = Sha256::digest(&block).to_vec();
    }
    out.truncate(n);
    out
}

/// A PUT of `body` to `url` with no token.
fn put(url: &str, body: &[u8]) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-X",
            "PUT",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Reply {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        headers: String::new(),
    }
}

fn as_token(s: &Server, token: &str, path: &str, body: Value) -> Reply {
    curl(
        "POST",
        &format!("{}{path}", s.base),
        Some(token),
        Some(&body.to_string()),
        "application/json",
    )
}

fn check(s: &Server, token: &str, hashes: &[&str]) -> Value {
    let r = as_token(s, token, "/v1/blobs/check", json!({ "hashes": hashes }));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn upload_url(s: &Server, token: &str, hash: &str) -> String {
    let c = check(s, token, &[hash]);
    assert_eq!(c["missing"][0]["hash"], hash, "{c}");
    c["missing"][0]["uploadUrl"].as_str().unwrap().to_string()
}

/// Bytes of the blobs stored under the server's data dir.
fn stored_bytes(data: &Path) -> u64 {
    match std::fs::read_dir(data.join("objects/blobs")) {
        Ok(entries) => entries.map(|e| e.unwrap().metadata().unwrap().len()).sum(),
        Err(_) => 0,
    }
}

/// A server with a second token, `other`, beside the suite's.
fn start(data: &Path, extra: &[&str]) -> Server {
    let mut flags = vec!["--token", "other=test-token-other"];
    flags.extend_from_slice(extra);
    Server::start_in(data, &flags)
}

#[test]
fn upload_urls_hold_only_as_signed_and_wrong_bytes_store_nothing() {
    require_isolation!();
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), &[]);
    let blob = bytes(300 << 10, 1);
    let hash = hash_of(&blob);
    let url = upload_url(&s, TOKEN, &hash);
    assert!(
        url.starts_with(&format!("{}/v1/blobs/{hash}?", s.base)),
        "{url}"
    );

    // Another blob's bytes under this URL: refused, and nothing is stored.
    let wrong = put(&url, &bytes(300 << 10, 2));
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    assert!(wrong.body.contains("hash"), "{}", wrong.body);
    assert_eq!(stored_bytes(data.path()), 0);
    assert_eq!(check(&s, TOKEN, &[&hash])["present"], json!([]));

    // The URL altered in any part it names: its hash, its token, its expiry, its signature.
    let other_hash = hash_of(b"other");
    let (path, query) = url.split_once('?').unwrap();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    let expires: u64 = param("expires").parse().unwrap();
    let signature = param("signature");
    let altered = [
        url.replace(&hash, &other_hash),
        format!(
            "{path}?owner={}&expires={expires}&signature={signature}",
            hex::encode("other")
        ),
        url.replace(
            &format!("expires={expires}"),
            &format!("expires={}", expires + 3600),
        ),
        url.replace(
            &signature,
            &format!(
                "{}{}",
                &signature[..signature.len() - 1],
                if signature.ends_with('0') { '1' } else { '0' }
            ),
        ),
        path.to_string(),
        format!("{path}?owner={}&expires={expires}", param("owner")),
    ];
    for bad in &altered {
        let r = put(bad, &blob);
        assert_eq!(r.status, 403, "{bad}: {}", r.body);
    }
    assert_eq!(stored_bytes(data.path()), 0);

    // As made, it stores the bytes, once.
    let ok = put(&url, &blob);
    assert_eq!(
        (ok.status, ok.json()["bytes"].as_u64()),
        (200, Some(blob.len() as u64)),
        "{}",
        ok.body
    );
    assert_eq!(stored_bytes(data.path()), blob.len() as u64);
    let fin = as_token(&s, TOKEN, "/v1/blobs/finalize", json!({"hashes": [hash]}));
    assert_eq!(
        (fin.status, fin.json()),
        (200, json!({"finalized": [hash]}))
    );
    assert_eq!(check(&s, TOKEN, &[&hash])["present"], json!([hash]));

    // Bad bodies name their field.
    let r = as_token(
        &s,
        TOKEN,
        "/v1/blobs/check",
        json!({"hashes": ["sha256:XYZ"]}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["details"][0]["path"], "hashes.0");
    let r = as_token(
        &s,
        TOKEN,
        "/v1/blobs/finalize",
        json!({"hashes": [other_hash]}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["details"][0]["path"], "hashes.0");
}

#[test]
fn an_upload_url_past_its_expiry_is_refused() {
    require_isolation!();
    let data = tempfile::tempdir().unwrap();
    let conf = data.path().join("kiln.toml");
    std::fs::write(&conf, "[blobs]\nupload_url_ttl_secs = 1\n").unwrap();
    let s = start(data.path(), &["--config", conf.to_str().unwrap()]);
    let blob = bytes(100, 11);
    let url = upload_url(&s, TOKEN, &hash_of(&blob));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = put(&url, &blob);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("expired"), "{}", r.body);
    assert_eq!(stored_bytes(data.path()), 0);
}

#[test]
fn a_token_cannot_see_or_use_another_tokens_blob() {
    require_isolation!();
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), &[]);
    let blob = bytes(1000, 3);
    let hash = hash_of(&blob);
    assert_eq!(put(&upload_url(&s, TOKEN, &hash), &blob).status, 200);
    // The other token is told it is missing, gets its own URL, and cannot use the ref.
    let c = check(&s, OTHER, &[&hash]);
    assert_eq!(c["present"], json!([]), "{c}");
    let job = json!({"language": "python", "autoStart": true, "files": [
        {"name": "main.py", "content": "print(open('x.bin','rb').read()[:4])"},
        {"name": "x.bin", "ref": hash},
    ]});
    let r = as_token(&s, OTHER, "/v1/execute", job.clone());
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["details"][0]["path"], "files.1.ref", "{}", r.body);
    // Its URL is its own: the bytes under the first token's URL do not give it a hold.
    let mine = upload_url(&s, OTHER, &hash);
    assert!(
        mine.contains(&format!("owner={}", hex::encode("other"))),
        "{mine}"
    );
    assert_eq!(put(&mine, &blob).status, 200);
    // Stored once for both.
    assert_eq!(stored_bytes(data.path()), blob.len() as u64);
    let r = as_token(&s, OTHER, "/v1/execute", job);
    assert_eq!(r.status, 202, "{}", r.body);
    // content and ref together, and a ref that is not a hash, are refused.
    let r = api(
        &s,
        "POST",
        "/v1/execute",
        Some(json!({"language": "python", "files": [
            {"name": "main.py", "content": "print(1)", "ref": hash},
            {"name": "y", "ref": "sha256:1234"},
        ]})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let details = r.json()["details"].clone();
    let paths: Vec<&str> = details
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["files.0", "files.1.ref"], "{}", r.body);
}

#[test]
fn a_job_given_files_by_ref_gets_their_exact_bytes() {
    require_isolation!();
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), &[]);
    let big = bytes(300 << 10, 4);
    let huge = bytes(5 << 20, 5);
    for b in [&big, &huge] {
        assert_eq!(put(&upload_url(&s, TOKEN, &hash_of(b)), b).status, 200);
    }
    let program = "import hashlib\nfor n in ('big.bin', 'data/huge.bin'):\n    print(hashlib.sha256(open(n, 'rb').read()).hexdigest())\n";
    let r = api(
        &s,
        "POST",
        "/v1/execute",
        Some(
            json!({"language": "python", "autoStart": true, "collectOutput": true, "files": [
                {"name": "main.py", "content": program},
                {"name": "big.bin", "ref": hash_of(&big)},
                {"name": "data/huge.bin", "ref": hash_of(&huge)},
            ]}),
        ),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["jobId"].as_str().unwrap().to_string();
    wait_state(&s, &id, &["done"]);
    let out = api(&s, "GET", &format!("/v1/jobs/{id}/output"), None).json();
    let want = format!(
        "{}\n{}\n",
        &hash_of(&big)["sha256:".len()..],
        &hash_of(&huge)["sha256:".len()..]
    );
    assert_eq!(out["stdout"], want, "{out}");
    // The inputs are not artifacts.
    assert_eq!(out["artifacts"], json!([]), "{out}");
}

#[test]
fn blob_quotas_refuse_what_would_pass_them_and_disk_use_stays_under() {
    require_isolation!();
    let data = tempfile::tempdir().unwrap();
    let s = start(
        data.path(),
        &[
            "--token-blob-storage-bytes",
            "3000",
            "--blob-storage-bytes",
            "5000",
        ],
    );
    let a = bytes(2000, 6);
    let b = bytes(2000, 7);
    let c = bytes(2000, 8);
    assert_eq!(put(&upload_url(&s, TOKEN, &hash_of(&a)), &a).status, 200);
    // The token's quota: 2000 + 2000 > 3000.
    let r = put(&upload_url(&s, TOKEN, &hash_of(&b)), &b);
    assert_eq!(r.status, 507, "{}", r.body);
    assert!(r.body.contains("quota"), "{}", r.body);
    // Another token may store b; then the store's total (4000) leaves no room for c.
    assert_eq!(put(&upload_url(&s, OTHER, &hash_of(&b)), &b).status, 200);
    let r = put(&upload_url(&s, OTHER, &hash_of(&c)), &c);
    assert_eq!(r.status, 507, "{}", r.body);
    // Equal bytes take no more room: the first token's blob for the other costs its quota only.
    assert_eq!(put(&upload_url(&s, OTHER, &hash_of(&a)), &a).status, 507);
    assert!(stored_bytes(data.path()) <= 5000);
    assert_eq!(stored_bytes(data.path()), 4000);
}

#[test]
fn an_unused_blob_expires_and_a_used_one_stays() {
    require_isolation!();
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), &["--blob-ttl-secs", "2"]);
    let kept = bytes(500, 9);
    let dropped = bytes(500, 10);
    for b in [&kept, &dropped] {
        assert_eq!(put(&upload_url(&s, TOKEN, &hash_of(b)), b).status, 200);
    }
    // Checking a blob restarts its idle clock.
    for _ in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert_eq!(
            check(&s, TOKEN, &[&hash_of(&kept)])["present"],
            json!([hash_of(&kept)])
        );
    }
    let c = check(&s, TOKEN, &[&hash_of(&dropped)]);
    assert_eq!(c["present"], json!([]), "{c}");
    assert_eq!(stored_bytes(data.path()), 500);
}

#[test]
fn a_blob_past_its_size_limit_and_refs_past_the_files_limit_are_413() {
    require_isolation!();
    let data = tempfile::tempdir().unwrap();
    let conf = data.path().join("kiln.toml");
    std::fs::write(
        &conf,
        "max_files_bytes = 3000\n[blobs]\nmax_blob_bytes = 2000\n",
    )
    .unwrap();
    let s = start(data.path(), &["--config", conf.to_str().unwrap()]);
    let over = bytes(2001, 12);
    let r = put(&upload_url(&s, TOKEN, &hash_of(&over)), &over);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["capBytes"], 2000, "{}", r.body);
    // Neither the blob nor a staged file of it is left.
    assert_eq!(stored_bytes(data.path()), 0);
    let staged = std::fs::read_dir(data.path().join("objects/.tmp"))
        .unwrap()
        .count();
    assert_eq!(staged, 0);
    // Two blobs that fit alone but not together in one job.
    let (a, b) = (bytes(2000, 13), bytes(2000, 14));
    for x in [&a, &b] {
        assert_eq!(put(&upload_url(&s, TOKEN, &hash_of(x)), x).status, 200);
    }
    let r = api(
        &s,
        "POST",
        "/v1/execute",
        Some(json!({"language": "python", "files": [
            {"name": "main.py", "content": "print(1)"},
            {"name": "a", "ref": hash_of(&a)},
            {"name": "b", "ref": hash_of(&b)},
        ]})),
    );
    assert_eq!(r.status, 413, "{}", r.body);
}
