//! Who may read `/api/*` and `/dashboard`: with `--api-token`, whoever
//! presents it; without, loopback clients only, and only under a loopback
//! `Host` name or one of `--allowed-host` (so that a DNS-rebinding page
//! cannot read the history through the operator's browser or tunnel).

use std::net::IpAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warp::Filter;
use warp::http::StatusCode;

use crate::http::{ApiError, ClientAddr};
use crate::signaling::Hub;

/// The access rule, as a filter that extracts nothing. Every refusal is
/// counted by why: `token`, `host` or `address`.
pub fn access(hub: Arc<Hub>) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::header::optional::<String>("host"))
        .and(warp::ext::optional::<ClientAddr>())
        .and_then(
            move |auth: Option<String>, host: Option<String>, addr: Option<ClientAddr>| {
                let token = hub.config.api_token.as_deref();
                let verdict = match token {
                    Some(_) => authorize(token, auth.as_deref(), addr).map_err(|e| ("token", e)),
                    None => check_host(host.as_deref(), &hub.config.edge.allowed_hosts)
                        .map_err(|e| ("host", e))
                        .and_then(|()| authorize(None, None, addr).map_err(|e| ("address", e))),
                };
                let verdict = verdict.map_err(|(reason, err)| {
                    hub.metrics
                        .edge
                        .api_refusals
                        .with_label_values(&[reason])
                        .inc();
                    warp::reject::custom(err)
                });
                async move { verdict }
            },
        )
        .untuple_one()
}

/// Without a token, the `Host` a request names must be this machine's
/// (`localhost`, 127.0.0.0/8, `[::1]`, any port) or one of `allowed`.
pub fn check_host(host: Option<&str>, allowed: &[String]) -> Result<(), ApiError> {
    let host = host.unwrap_or("").trim().to_ascii_lowercase();
    let name = host_name(&host);
    let listed = allowed
        .iter()
        .any(|a| *a == host || (!a.contains(':') || a.ends_with(']')) && a == name);
    if !name.is_empty() && (is_loopback_name(name) || listed) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        format!(
            "without --api-token the API answers only under a loopback Host; \
             to reach it as {host:?}, start chatsubo with --allowed-host {name}"
        ),
    ))
}

/// The name part of a `Host` value: without its port, brackets kept.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) if after_name(&host[end + 1..]) => &host[..=end],
            _ => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, _)) if after_name(&host[name.len()..]) => name,
        _ => host,
    }
}

/// Whether `rest` may follow a host name: nothing, or `:` and a port.
fn after_name(rest: &str) -> bool {
    rest.is_empty()
        || rest
            .strip_prefix(':')
            .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

fn is_loopback_name(name: &str) -> bool {
    if name == "localhost" {
        return true;
    }
    let literal = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    literal
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
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
    fn only_loopback_or_listed_host_names_pass_without_a_token() {
        let ok = |host: Option<&str>, allowed: &[&str]| {
            let allowed: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            check_host(host, &allowed).is_ok()
        };
        for good in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.9.9.9:1",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(ok(Some(good), &[]), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[::1].evil.example",
            "10.0.0.1",
            "",
            ":8080",
        ] {
            assert!(!ok(Some(bad), &[]), "{bad}");
        }
        assert!(!ok(None, &[]));
        assert!(ok(Some("chat.example.org:8443"), &["chat.example.org"]));
        assert!(ok(Some("chat.example.org"), &["chat.example.org"]));
        assert!(ok(
            Some("chat.example.org:8443"),
            &["chat.example.org:8443"]
        ));
        assert!(!ok(
            Some("chat.example.org:9999"),
            &["chat.example.org:8443"]
        ));
        assert!(!ok(Some("chat.example.org.evil"), &["chat.example.org"]));
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
