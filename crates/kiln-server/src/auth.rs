//! Bearer tokens: a request names its token in exactly one `Authorization: Bearer <token>`
//! header, matched exactly (no trailing space, no second header) and in constant time against
//! every configured token; the request then carries the token's name as its caller. Everything
//! but `/health`, `/openapi.json` and the Pusher endpoint (which has its own signatures) needs one;
//! `/metrics` too, unless it is served on its own address. Piston's routes (`/api/v2/*`) take the
//! token bare as well (`Authorization: <token>`, as Piston's clients send it), and answer a
//! missing one in Piston's `{message}` shape.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// The name of the token a request came with.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// The configured tokens, by name, kept as digests (equal length, so comparing them reveals no
/// token's length).
#[derive(Debug)]
pub struct Tokens(Vec<(String, [u8; 32])>);

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

impl Tokens {
    /// The tokens of `name → token`.
    pub fn new<'a>(tokens: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        Self(
            tokens
                .into_iter()
                .map(|(name, token)| (name.clone(), digest(token.as_bytes())))
                .collect(),
        )
    }

    /// The caller a request's headers name, if exactly one valid bearer token is given.
    pub fn caller(&self, headers: &axum::http::HeaderMap) -> Option<Caller> {
        self.caller_of(headers, false)
    }

    /// The caller a request's headers name; with `bare`, a token without the `Bearer ` scheme
    /// is taken too.
    pub fn caller_of(&self, headers: &axum::http::HeaderMap, bare: bool) -> Option<Caller> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let value = values.next()?;
        if values.next().is_some() {
            // Which of two tokens would it be? Neither.
            return None;
        }
        let value = value.as_bytes();
        let presented = match value.strip_prefix(b"Bearer ") {
            Some(token) => token,
            None if bare => value,
            None => return None,
        };
        self.caller_of_token(presented)
    }

    /// The caller of a token presented bare.
    pub fn caller_of_token(&self, presented: &[u8]) -> Option<Caller> {
        let presented = digest(presented);
        // Every token is compared, each in constant time, so timing tells nothing.
        let mut found = None;
        for (name, want) in &self.0 {
            if bool::from(presented.ct_eq(want)) {
                found = Some(Caller(name.clone()));
            }
        }
        found
    }
}

/// The token of Judge0's header (exactly one) or, failing it, its query parameter.
fn judge0_token(req: &Request) -> Option<Vec<u8>> {
    let mut values = req.headers().get_all("x-auth-token").iter();
    if let Some(v) = values.next() {
        // Which of two tokens would it be? Neither.
        return values.next().is_none().then(|| v.as_bytes().to_vec());
    }
    let query = req.uri().query()?;
    let mut found = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-auth-token"));
    let (_, token) = found.next()?;
    found.next().is_none().then(|| token.into_bytes())
}

/// Paths open without a token (a signed URL's handler checks its signature instead).
fn is_open(path: &str) -> bool {
    matches!(path, "/health" | "/openapi.json")
        || path.starts_with("/app/")
        || path.starts_with("/apps/")
        || path.starts_with("/v1/artifacts/")
        || path.starts_with("/v1/blobs/sha256:")
}

/// The middleware: open paths pass, others need a token.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if is_open(req.uri().path()) {
        return next.run(req).await;
    }
    let piston = crate::piston::is_piston_path(req.uri().path());
    let judge0 = crate::judge0::is_judge0_path(req.uri().path());
    let caller = match judge0.then(|| judge0_token(&req)).flatten() {
        Some(token) => state.tokens.caller_of_token(&token),
        None => state.tokens.caller_of(req.headers(), piston),
    };
    match caller {
        Some(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        None if piston => crate::piston::handlers::unauthorized().into_response(),
        None if judge0 => crate::judge0::handlers::unauthorized().into_response(),
        None => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_token_matches_exactly_once() {
        let cfg = [("ci".to_string(), "secret".to_string())];
        let tokens = Tokens::new(cfg.iter().map(|(a, b)| (a, b)));
        assert_eq!(tokens.caller(&headers(&["Bearer secret"])).unwrap().0, "ci");
        // Item 6 of the hardening pass: a trailing space was accepted, and the first of two
        // headers won.
        for bad in [
            &["Bearer secret "][..],
            &["Bearer  secret"],
            &["bearer secret"],
            &["Bearer secretx"],
            &["Bearer secret", "Bearer secret"],
            &["Bearer secret", "Bearer other"],
            &[],
        ] {
            assert!(tokens.caller(&headers(bad)).is_none(), "{bad:?}");
        }
        // A bare token counts only where asked for (Piston's routes).
        assert!(tokens.caller(&headers(&["secret"])).is_none());
        assert_eq!(
            tokens.caller_of(&headers(&["secret"]), true).unwrap().0,
            "ci"
        );
        assert!(tokens.caller_of(&headers(&["secret "]), true).is_none());
    }
}
