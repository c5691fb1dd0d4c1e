//! Signed URLs: the links Kiln hands out that work without a bearer token, because the URL itself
//! is the right. A blob's upload URL (`PUT /v1/blobs/<hash>`) names the hash and the token the
//! upload is for; an artifact's URL (`GET /v1/artifacts/<job>/<n>/<name>`) names the job, the
//! artifact and its name. Both carry an expiry (Unix seconds) and an HMAC-SHA256 over the method,
//! the path, what they name and the expiry, with a key only the server knows: changing any of
//! them, or using the URL after its expiry, is refused.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use kiln_core::blobs::BlobHash;
use kiln_core::job::ArtifactInfo;
use kiln_core::JobId;
use sha2::Sha256;

/// Why a signed URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// A part is missing or malformed.
    #[error("the URL is not a signed Kiln URL: {0}")]
    Malformed(&'static str),
    /// The signature does not match what the URL names.
    #[error("the URL's signature does not match it")]
    BadSignature,
    /// Its time is over.
    #[error("the URL expired")]
    Expired,
}

/// The query of a signed URL.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Signed {
    /// Unix seconds after which it is refused.
    pub expires: Option<String>,
    /// Hex HMAC-SHA256.
    pub signature: Option<String>,
    /// The token an upload is for (hex of its name).
    pub owner: Option<String>,
}

/// Makes and checks signed URLs.
#[derive(Clone)]
pub struct Links {
    key: std::sync::Arc<[u8]>,
    /// The configured base (`public_url`), if any.
    public: Option<String>,
    /// The base when neither it nor a request says: the listen address.
    fallback: String,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").finish_non_exhaustive()
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A path segment, percent-encoded but for the unreserved characters.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Links {
    /// Links signed with `key`, under `public` (else a request's host, else `fallback`).
    pub fn new(key: &[u8], public: Option<&str>, fallback: &str) -> Self {
        Self {
            key: key.into(),
            public: public.map(|p| p.trim_end_matches('/').to_string()),
            fallback: fallback.trim_end_matches('/').to_string(),
        }
    }

    /// The base of the URLs made for a request with `headers` (or for no request).
    pub fn base(&self, headers: Option<&axum::http::HeaderMap>) -> String {
        if let Some(p) = &self.public {
            return p.clone();
        }
        let host = headers
            .and_then(|h| h.get(axum::http::header::HOST))
            .and_then(|v| v.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            });
        match host {
            Some(h) => format!("http://{h}"),
            None => self.fallback.clone(),
        }
    }

    fn sign(&self, message: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(message.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn verify(&self, message: &str, q: &Signed, now: u64) -> Result<(), LinkError> {
        let expires = q
            .expires
            .as_deref()
            .ok_or(LinkError::Malformed("no expiry"))?;
        let signature = q
            .signature
            .as_deref()
            .ok_or(LinkError::Malformed("no signature"))?;
        let given = hex::decode(signature).map_err(|_| LinkError::Malformed("signature"))?;
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(format!("{message}\n{expires}").as_bytes());
        // Constant-time: the comparison tells nothing of how much of a guess was right.
        mac.verify_slice(&given)
            .map_err(|_| LinkError::BadSignature)?;
        let expires: u64 = expires
            .parse()
            .map_err(|_| LinkError::Malformed("expiry"))?;
        if now > expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }

    fn upload_message(hash: &BlobHash, owner_hex: &str) -> String {
        format!("PUT\n/v1/blobs/{hash}\n{owner_hex}")
    }

    /// The URL under `base` that uploads blob `hash` for `owner` until `expires`.
    pub fn upload_url(&self, base: &str, hash: &BlobHash, owner: &str, expires: u64) -> String {
        let owner_hex = hex::encode(owner.as_bytes());
        let signature = self.sign(&format!(
            "{}\n{expires}",
            Self::upload_message(hash, &owner_hex)
        ));
        format!("{base}/v1/blobs/{hash}?owner={owner_hex}&expires={expires}&signature={signature}")
    }

    /// The token an upload URL for `hash` is for, if its signature holds and it has not expired.
    pub fn check_upload(&self, hash: &BlobHash, q: &Signed, now: u64) -> Result<String, LinkError> {
        let owner_hex = q.owner.as_deref().ok_or(LinkError::Malformed("no owner"))?;
        self.verify(&Self::upload_message(hash, owner_hex), q, now)?;
        hex::decode(owner_hex)
            .ok()
            .and_then(|o| String::from_utf8(o).ok())
            .ok_or(LinkError::Malformed("owner"))
    }

    fn artifact_message(job: &str, index: u32, name: &str) -> String {
        format!("GET\n/v1/artifacts/{job}/{index}\n{name}")
    }

    /// The URL under `base` that reads artifact `a` of `job` until `expires`.
    pub fn artifact_url(&self, base: &str, job: &JobId, a: &ArtifactInfo, expires: u64) -> String {
        let signature = self.sign(&format!(
            "{}\n{expires}",
            Self::artifact_message(job.as_str(), a.index, &a.name)
        ));
        let name: Vec<String> = a.name.split('/').map(encode_segment).collect();
        format!(
            "{base}/v1/artifacts/{job}/{}/{}?expires={expires}&signature={signature}",
            a.index,
            name.join("/")
        )
    }

    /// Whether a URL for artifact `index` named `name` of `job` holds and has not expired.
    pub fn check_artifact(
        &self,
        job: &str,
        index: u32,
        name: &str,
        q: &Signed,
        now: u64,
    ) -> Result<(), LinkError> {
        self.verify(&Self::artifact_message(job, index, name), q, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(url: &str) -> Signed {
        serde_urlencoded::from_str(url.split_once('?').unwrap().1).unwrap()
    }

    #[test]
    fn an_upload_url_holds_only_as_made_and_until_it_expires() {
        let links = Links::new(b"key", None, "http://k");
        let hash = BlobHash::of(b"x");
        let other = BlobHash::of(b"y");
        let url = links.upload_url("http://k", &hash, "ci", 1000);
        assert!(url.starts_with(&format!("http://k/v1/blobs/{hash}?owner=6369&")));
        let q = query(&url);
        assert_eq!(links.check_upload(&hash, &q, 999).unwrap(), "ci");
        assert_eq!(links.check_upload(&hash, &q, 1001), Err(LinkError::Expired));
        assert_eq!(
            links.check_upload(&other, &q, 999),
            Err(LinkError::BadSignature)
        );
        let later = Signed {
            expires: Some("2000".into()),
            ..q.clone()
        };
        assert_eq!(
            links.check_upload(&hash, &later, 999),
            Err(LinkError::BadSignature)
        );
        let someone = Signed {
            owner: Some(hex::encode("other")),
            ..q.clone()
        };
        assert_eq!(
            links.check_upload(&hash, &someone, 999),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            Links::new(b"another key", None, "http://k").check_upload(&hash, &q, 999),
            Err(LinkError::BadSignature)
        );
        let unsigned = Signed {
            signature: None,
            ..q
        };
        assert!(matches!(
            links.check_upload(&hash, &unsigned, 999),
            Err(LinkError::Malformed(_))
        ));
    }

    #[test]
    fn an_artifact_url_names_its_job_index_and_name() {
        let links = Links::new(b"key", None, "http://k");
        let job = JobId("j1".into());
        let a = ArtifactInfo {
            index: 1,
            name: "data/out put.csv".into(),
            mime_type: "text/csv".into(),
            bytes: 3,
        };
        let url = links.artifact_url("http://k", &job, &a, 50);
        assert!(
            url.starts_with("http://k/v1/artifacts/j1/1/data/out%20put.csv?expires=50&"),
            "{url}"
        );
        let q = query(&url);
        links
            .check_artifact("j1", 1, "data/out put.csv", &q, 50)
            .unwrap();
        for (job, index, name) in [
            ("j2", 1, "data/out put.csv"),
            ("j1", 0, "data/out put.csv"),
            ("j1", 1, "data/other.csv"),
        ] {
            assert_eq!(
                links.check_artifact(job, index, name, &q, 50),
                Err(LinkError::BadSignature)
            );
        }
        assert_eq!(
            links.check_artifact("j1", 1, "data/out put.csv", &q, 51),
            Err(LinkError::Expired)
        );
    }
}
