//! Who may read `/api/*` and `/dashboard`: with `--api-token`, whoever
//! presents it; without, loopback clients only.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warp::Filter;
use warp::http::StatusCode;

use crate::http::{ApiError, ClientAddr};
use crate::signaling::Hub;

/// The access rule, as a filter that extracts nothing.
pub fn access(hub: Arc<Hub>) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::ext::optional::<ClientAddr>())
        .and_then(move |auth: Option<String>, addr: Option<ClientAddr>| {
            let verdict = authorize(hub.config.api_token.as_deref(), auth.as_deref(), addr);
            async move { verdict.map_err(warp::reject::custom) }
        })
        .untuple_one()
}

/// With a token: `Authorization: Bearer <token>`, compared in constant time
/// (of the SHA-256 of both, so that not even the length leaks). Without
/// one: loopback clients only.
pub fn authorize(
    token: Option<&str>,
    header: Option<&str>,
    addr: Option<ClientAddr>,
) -> Result<(), ApiError> {
    match token {
        Some(expected) => {
            let given = header.map(presented_token).unwrap_or_default();
            let given = given.as_str();
            let a = Sha256::digest(given.as_bytes());
            let b = Sha256::digest(expected.as_bytes());
            if bool::from(a.ct_eq(&b)) && !given.is_empty() {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "send Authorization: Bearer <api token>",
                ))
            }
        }
        None => match addr {
            Some(ClientAddr(a)) if a.ip().is_loopback() => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "without --api-token the API answers loopback clients only",
            )),
        },
    }
}

/// The token an `Authorization` header presents: `Bearer <token>`, or (for
/// a browser opening /dashboard) `Basic` with the token as the password.
fn presented_token(header: &str) -> String {
    let Some((scheme, value)) = header.split_once(' ') else {
        return String::new();
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        return value.trim().to_string();
    }
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        if let Some((_, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return password.to_string();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Option<ClientAddr> {
        Some(ClientAddr(text.parse().unwrap()))
    }

    #[test]
    fn the_access_rule() {
        let ok = |r: Result<(), ApiError>| r.map_err(|e| e.status.as_u16());
        assert_eq!(ok(authorize(None, None, addr("127.0.0.1:9"))), Ok(()));
        assert_eq!(ok(authorize(None, None, addr("[::1]:9"))), Ok(()));
        assert_eq!(ok(authorize(None, None, addr("192.0.2.1:9"))), Err(403));
        assert_eq!(ok(authorize(None, None, None)), Err(403));
        let t = Some("s3cret");
        assert_eq!(ok(authorize(t, None, addr("127.0.0.1:9"))), Err(401));
        assert_eq!(
            ok(authorize(t, Some("Bearer nope"), addr("127.0.0.1:9"))),
            Err(401)
        );
        assert_eq!(
            ok(authorize(t, Some("s3cret"), addr("127.0.0.1:9"))),
            Err(401)
        );
        assert_eq!(ok(authorize(t, Some("Basic s3cret"), None)), Err(401));
        assert_eq!(
            ok(authorize(t, Some("Bearer s3cret"), addr("192.0.2.1:9"))),
            Ok(())
        );
        assert_eq!(ok(authorize(Some(""), Some("Bearer "), None)), Err(401));
        // "user:s3cret" and "user:nope" in Basic.
        assert_eq!(
            ok(authorize(
                t,
                Some("Basic dXNlcjpzM2NyZXQ="),
                addr("192.0.2.1:9")
            )),
            Ok(())
        );
        assert_eq!(
            ok(authorize(
                t,
                Some("Basic dXNlcjpub3Bl"),
                addr("127.0.0.1:9")
            )),
            Err(401)
        );
        assert_eq!(
            ok(authorize(t, Some("Basic !!!"), addr("127.0.0.1:9"))),
            Err(401)
        );
    }
}
