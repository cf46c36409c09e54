//! The ICE servers handed to every peer: STUN urls as they are, TURN urls
//! with time-limited credentials made from coturn's shared secret
//! (`use-auth-secret`). The secret is read once, at start, from a file or
//! the environment, never from the command line (it would show in `ps`).

use std::fmt;
use std::path::PathBuf;

use clap::Args;

/// The environment variable that may hold the TURN secret itself.
pub const TURN_SECRET_VAR: &str = "CHATSUBO_TURN_SECRET";

#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "ICE servers (STUN and TURN)")]
pub struct IceConfig {
    /// A TURN server handed to every peer with credentials that expire
    /// (coturn's use-auth-secret), e.g. turn:turn.example.org:3478?transport=udp;
    /// repeatable (comma-separated in the variable). Needs the shared secret
    /// (--turn-secret-file or CHATSUBO_TURN_SECRET). Set --allowed-origin
    /// too: without it any web site can get credentials for your relay.
    #[arg(long = "turn-url", env = "CHATSUBO_TURN_URL", value_name = "URL",
          value_delimiter = ',', value_parser = parse_turn_url)]
    pub turn_urls: Vec<String>,

    /// A file holding coturn's static-auth-secret, read once at start
    /// (surrounding white space trimmed). Instead, the secret itself may be
    /// in the variable CHATSUBO_TURN_SECRET; never on the command line.
    #[arg(
        long = "turn-secret-file",
        env = "CHATSUBO_TURN_SECRET_FILE",
        value_name = "PATH"
    )]
    pub turn_secret_file: Option<PathBuf>,

    /// Seconds a TURN credential stays valid; clients ask for fresh ones
    /// (`ice-servers`) before it ends.
    #[arg(long = "turn-ttl-secs", env = "CHATSUBO_TURN_TTL_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub turn_ttl_secs: u64,

    /// A STUN server handed to every peer (no credentials), e.g.
    /// stun:stun.example.org:3478; repeatable (comma-separated in the variable).
    #[arg(long = "stun-url", env = "CHATSUBO_STUN_URL", value_name = "URL",
          value_delimiter = ',', value_parser = parse_stun_url)]
    pub stun_urls: Vec<String>,

    /// The shared secret, once read ([`IceConfig::load_secret`]).
    #[arg(skip)]
    pub turn_secret: Option<TurnSecret>,
}

/// coturn's shared secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct TurnSecret(String);

impl TurnSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        TurnSecret(secret.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TurnSecret(redacted)")
    }
}

impl IceConfig {
    /// Reads the TURN secret once, when TURN urls are configured: from
    /// `--turn-secret-file`, else from `CHATSUBO_TURN_SECRET`. The error is
    /// one line and never holds the secret.
    pub fn load_secret(&mut self) -> Result<(), String> {
        if self.turn_urls.is_empty() || self.turn_secret.is_some() {
            return Ok(());
        }
        let from_env = std::env::var(TURN_SECRET_VAR).ok();
        let secret = match (&self.turn_secret_file, from_env) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "give the TURN secret once: --turn-secret-file or {TURN_SECRET_VAR}, not both"
                ));
            }
            (Some(path), None) => std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read --turn-secret-file {}: {err}", path.display()))?
                .trim()
                .to_string(),
            (None, Some(text)) => text.trim().to_string(),
            (None, None) => {
                return Err(format!(
                    "--turn-url needs coturn's shared secret: --turn-secret-file PATH or {TURN_SECRET_VAR}"
                ));
            }
        };
        if secret.is_empty() {
            return Err(match &self.turn_secret_file {
                Some(path) => format!("--turn-secret-file {} is empty", path.display()),
                None => format!("{TURN_SECRET_VAR} is empty"),
            });
        }
        self.turn_secret = Some(TurnSecret(secret));
        Ok(())
    }
}

fn parse_turn_url(text: &str) -> Result<String, String> {
    parse_ice_url(text, &["turn:", "turns:"], true)
}

fn parse_stun_url(text: &str) -> Result<String, String> {
    parse_ice_url(text, &["stun:", "stuns:"], false)
}

/// `scheme:host[:port]` (RFC 7064, RFC 7065), for TURN with an optional
/// `?transport=udp|tcp`.
fn parse_ice_url(text: &str, schemes: &[&str], transport: bool) -> Result<String, String> {
    let url = text.trim();
    let kinds = schemes.join(" or ");
    let wrong = || {
        format!(
            "'{text}' is not a {kinds} url (such as {}example.org:3478)",
            schemes[0]
        )
    };
    let rest = schemes
        .iter()
        .find_map(|s| {
            url.get(..s.len())
                .filter(|p| p.eq_ignore_ascii_case(s))
                .map(|_| &url[s.len()..])
        })
        .ok_or_else(wrong)?;
    let (authority, query) = match rest.split_once('?') {
        Some((authority, query)) => (authority, Some(query)),
        None => (rest, None),
    };
    match query {
        None => {}
        Some("transport=udp" | "transport=tcp") if transport => {}
        Some(_) => return Err(wrong()),
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(wrong)?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok {
        Ok(url.to_string())
    } else {
        Err(wrong())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_urls_are_checked() {
        for good in [
            "turn:turn.example.org:3478?transport=udp",
            "turns:turn.example.org:5349?transport=tcp",
            "turn:127.0.0.1:3478",
            "TURN:[2001:db8::1]:3478",
            "turn:turn.example.org",
        ] {
            assert!(parse_turn_url(good).is_ok(), "{good}");
        }
        for bad in [
            "stun:stun.example.org",
            "http://turn.example.org",
            "turn:",
            "turn:host:0",
            "turn:host:99999",
            "turn:host?transport=sctp",
            "turn:ho st:3478",
            "turn:[::1:3478",
        ] {
            assert!(parse_turn_url(bad).is_err(), "{bad}");
        }
        assert!(parse_stun_url("stun:stun.example.org:3478").is_ok());
        assert!(parse_stun_url("stuns:stun.example.org").is_ok());
        assert!(parse_stun_url("stun:host?transport=udp").is_err());
        assert!(parse_stun_url("turn:host").is_err());
    }

    #[test]
    fn the_secret_is_read_once_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "  s3cret-value\n").unwrap();
        let mut config = IceConfig {
            turn_urls: vec!["turn:127.0.0.1:3478".into()],
            turn_secret_file: Some(file.clone()),
            ..IceConfig::default()
        };
        config.load_secret().unwrap();
        assert_eq!(
            config.turn_secret.as_ref().unwrap().as_bytes(),
            b"s3cret-value"
        );
        assert!(!format!("{config:?}").contains("s3cret"));
        // Read once: the file going away later changes nothing.
        std::fs::remove_file(&file).unwrap();
        config.load_secret().unwrap();

        let mut missing = IceConfig {
            turn_urls: vec!["turn:127.0.0.1:3478".into()],
            turn_secret_file: Some(dir.path().join("nope")),
            ..IceConfig::default()
        };
        let err = missing.load_secret().unwrap_err();
        assert!(err.contains("cannot read --turn-secret-file"), "{err}");
        std::fs::write(&file, " \n").unwrap();
        let mut empty = IceConfig {
            turn_urls: vec!["turn:127.0.0.1:3478".into()],
            turn_secret_file: Some(file),
            ..IceConfig::default()
        };
        assert!(empty.load_secret().unwrap_err().contains("is empty"));
        // No TURN urls: nothing to read.
        assert!(IceConfig::default().load_secret().is_ok());
    }
}
