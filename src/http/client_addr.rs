//! Where a request comes from: the peer of its TCP connection, unless that
//! peer is a trusted reverse proxy (`--trusted-proxy`) and the request names
//! the client in `X-Forwarded-For` (else `Forwarded`). Nobody else's
//! forwarding headers are read: a client cannot claim another address.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use warp::http::HeaderMap;
use warp::http::header::{FORWARDED, HeaderName};

/// The client's address, put on each request by the accept loop: the
/// peer's, or the one a trusted proxy forwarded (then with port 0).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The address a request from `peer` comes from. Through trusted proxies it
/// is the right-most forwarded address that is not itself a trusted proxy
/// (each proxy appends the address it got the request from, so everything
/// left of that is the client's own claim); where an entry cannot be read,
/// the one to its right.
pub fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> ClientAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip.to_canonical()));
    if trusted.is_empty() || !is_trusted(peer.ip()) {
        return ClientAddr(peer);
    }
    let chain = if headers.contains_key(X_FORWARDED_FOR) {
        forwarded_for(headers)
    } else {
        forwarded(headers)
    };
    let mut client = None;
    for hop in chain.iter().rev() {
        let Some(ip) = hop else { break };
        client = Some(*ip);
        if !is_trusted(*ip) {
            break;
        }
    }
    match client {
        Some(ip) => ClientAddr(SocketAddr::new(ip.to_canonical(), 0)),
        None => ClientAddr(peer),
    }
}

/// The addresses of every `X-Forwarded-For` header, in order; `None` for
/// an entry that is not an address.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(|entry| address(entry.trim()))
        .collect()
}

/// The `for=` addresses of every `Forwarded` header (RFC 7239), in order.
fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(FORWARDED)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("for=?").split(','))
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, value)| address(value.trim().trim_matches('"')))
        })
        .collect()
}

/// An address as proxies write it: `192.0.2.7`, `192.0.2.7:4711`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn address(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use warp::http::HeaderValue;

    use super::*;

    fn from(peer: &str, headers: &[(&str, &str)], trusted: &[&str]) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        client_addr(peer.parse().unwrap(), &map, &trusted)
            .0
            .ip()
            .to_string()
    }

    const XFF: &str = "x-forwarded-for";

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let proxy = ["127.0.0.1/32"];
        assert_eq!(
            from("127.0.0.1:9", &[(XFF, "203.0.113.7")], &proxy),
            "203.0.113.7"
        );
        assert_eq!(
            from("192.0.2.1:9", &[(XFF, "203.0.113.7")], &proxy),
            "192.0.2.1"
        );
        assert_eq!(
            from("127.0.0.1:9", &[(XFF, "203.0.113.7")], &[]),
            "127.0.0.1"
        );
        assert_eq!(from("127.0.0.1:9", &[], &proxy), "127.0.0.1");
        assert_eq!(
            from("[::ffff:127.0.0.1]:9", &[(XFF, "203.0.113.7")], &proxy),
            "203.0.113.7"
        );
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let proxies = ["127.0.0.1/32", "10.0.0.0/8"];
        // The client's own claim (left) is passed over.
        let chain = [(XFF, "198.51.100.1, 203.0.113.7, 10.1.2.3")];
        assert_eq!(from("127.0.0.1:9", &chain, &proxies), "203.0.113.7");
        // Two headers are one list.
        let two = [(XFF, "198.51.100.1"), (XFF, "203.0.113.7:5555")];
        assert_eq!(from("127.0.0.1:9", &two, &proxies), "203.0.113.7");
        // Every hop trusted: the left-most.
        let all = [(XFF, "10.9.9.9, 10.1.1.1")];
        assert_eq!(from("127.0.0.1:9", &all, &proxies), "10.9.9.9");
        // An entry that is not an address stops the walk at its right.
        let junk = [(XFF, "203.0.113.7, unknown, 10.1.1.1")];
        assert_eq!(from("127.0.0.1:9", &junk, &proxies), "10.1.1.1");
        let only_junk = [(XFF, "garbage")];
        assert_eq!(from("127.0.0.1:9", &only_junk, &proxies), "127.0.0.1");
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let proxy = ["127.0.0.1/32"];
        let rfc = [(
            "forwarded",
            r#"for=198.51.100.1;proto=https, For="[2001:db8:cafe::17]:4711";by=127.0.0.1"#,
        )];
        assert_eq!(from("127.0.0.1:9", &rfc, &proxy), "2001:db8:cafe::17");
        let hidden = [("forwarded", "for=_hidden")];
        assert_eq!(from("127.0.0.1:9", &hidden, &proxy), "127.0.0.1");
        // X-Forwarded-For, which the shipped proxy configuration sets, wins.
        let both = [("forwarded", "for=198.51.100.1"), (XFF, "203.0.113.7")];
        assert_eq!(from("127.0.0.1:9", &both, &proxy), "203.0.113.7");
    }
}
