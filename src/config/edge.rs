//! The HTTP edge: which `Host` names `/api/*` and `/dashboard` answer
//! without a token, which proxies' forwarded client addresses are believed,
//! and which web pages may open `/ws`.

use clap::Args;
use ipnet::IpNet;

#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "HTTP edge (behind a proxy, DNS rebinding, origins)")]
pub struct EdgeConfig {
    /// A `Host` name (with or without a port) that /api/* and /dashboard
    /// answer without --api-token, besides localhost and loopback addresses;
    /// repeatable (comma-separated in the variable). Other names get 403:
    /// a DNS-rebinding page cannot read the history through your browser.
    #[arg(long = "allowed-host", env = "CHATSUBO_ALLOWED_HOST", value_name = "NAME",
          value_delimiter = ',', value_parser = parse_host)]
    pub allowed_hosts: Vec<String>,

    /// A reverse proxy (an address or a CIDR such as 127.0.0.1/32) whose
    /// X-Forwarded-For (else Forwarded) header names the real client: that
    /// address then counts for the per-address cap, the history and the
    /// logs. Repeatable. Everyone else's forwarding headers are ignored.
    #[arg(long = "trusted-proxy", env = "CHATSUBO_TRUSTED_PROXY", value_name = "CIDR",
          value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<IpNet>,

    /// An origin (scheme://host[:port]) whose pages may open /ws;
    /// repeatable. When any is set, a browser upgrade from another origin
    /// gets 403 before the WebSocket opens; clients that send no Origin
    /// (native apps) are served. Without it any web site may use this
    /// server, and the TURN credentials it hands out.
    #[arg(long = "allowed-origin", env = "CHATSUBO_ALLOWED_ORIGIN", value_name = "ORIGIN",
          value_delimiter = ',', value_parser = parse_origin)]
    pub allowed_origins: Vec<String>,
}

/// A host name or address, with an optional port, lower-cased.
fn parse_host(text: &str) -> Result<String, String> {
    let host = text.trim().to_ascii_lowercase();
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if ok {
        Ok(host)
    } else {
        Err(format!(
            "'{text}' is not a host name (such as chat.example.org)"
        ))
    }
}

/// An address (a /32 or /128) or a CIDR block.
fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| format!("'{text}' is not an address or a CIDR block (such as 127.0.0.1/32)"))
}

/// `scheme://host[:port]` as browsers send it in `Origin`: lower-cased,
/// http or https, no path.
fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim().to_ascii_lowercase();
    let wrong = || {
        format!(
            "'{text}' is not an origin (scheme://host[:port], such as https://chat.example.org)"
        )
    };
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(wrong)?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => (host, Some(port)),
        _ => (rest, None),
    };
    if parse_host(host).is_err() || host.contains('/') {
        return Err(wrong());
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(wrong());
    }
    Ok(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_cidrs_and_origins_are_checked_and_normalised() {
        assert_eq!(
            parse_host("Chat.Example.org:8443").unwrap(),
            "chat.example.org:8443"
        );
        assert!(parse_host("evil example").is_err());
        assert!(parse_host("").is_err());
        assert_eq!(parse_cidr("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("localhost").is_err());
        assert_eq!(
            parse_origin("HTTPS://Chat.Example.org").unwrap(),
            "https://chat.example.org"
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "chat.example.org",
            "ftp://x",
            "https://x/path",
            "https://x:port",
            "https://",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
