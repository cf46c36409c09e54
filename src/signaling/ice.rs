//! The `iceServers` every peer gets in `welcome` and on `ice-servers`: the
//! STUN urls, and the TURN urls with a credential of coturn's REST API
//! scheme (`use-auth-secret`): `username` = `<expiry unix seconds>:<peer
//! id>`, `credential` = base64(HMAC-SHA1(shared secret, username)). Made
//! fresh for each answer; never logged, traced or stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::value::RawValue;
use sha1::Sha1;

use crate::config::{IceConfig, TurnSecret};

/// The ICE servers of this server, and what their credentials are made of.
pub struct IceServers {
    stun: Vec<String>,
    turn: Vec<String>,
    secret: Option<TurnSecret>,
    ttl: Duration,
}

/// One `RTCIceServer`, as the browser's `RTCPeerConnection` takes it.
#[derive(Serialize)]
struct IceServer<'a> {
    urls: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<String>,
}

impl IceServers {
    /// The servers `config` names; `None` when it names none. TURN urls
    /// are handed out only with the secret ([`IceConfig::load_secret`]).
    pub fn new(config: &IceConfig) -> Option<Self> {
        let turn = match &config.turn_secret {
            Some(_) => config.turn_urls.clone(),
            None => Vec::new(),
        };
        if config.stun_urls.is_empty() && turn.is_empty() {
            return None;
        }
        Some(IceServers {
            stun: config.stun_urls.clone(),
            turn,
            secret: config.turn_secret.clone(),
            ttl: Duration::from_secs(config.turn_ttl_secs),
        })
    }

    /// The `iceServers` array for `peer_id`, with TURN credentials valid
    /// for the configured lifetime from now.
    pub fn for_peer(&self, peer_id: &str) -> Box<RawValue> {
        let json = self.for_peer_at(peer_id, SystemTime::now());
        RawValue::from_string(json).expect("ICE servers are JSON")
    }

    /// The same, as JSON text, with credentials valid from `now`.
    pub fn for_peer_at(&self, peer_id: &str, now: SystemTime) -> String {
        let mut servers = Vec::with_capacity(2);
        if !self.stun.is_empty() {
            servers.push(IceServer {
                urls: &self.stun,
                username: None,
                credential: None,
            });
        }
        if let (false, Some(secret)) = (self.turn.is_empty(), &self.secret) {
            let expiry = (now + self.ttl)
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let username = format!("{expiry}:{peer_id}");
            let credential = turn_credential(secret.as_bytes(), &username);
            servers.push(IceServer {
                urls: &self.turn,
                username: Some(username),
                credential: Some(credential),
            });
        }
        serde_json::to_string(&servers).expect("ICE servers always serialise")
    }
}

/// coturn's REST API password for `username`: base64(HMAC-SHA1(secret, username)).
pub fn turn_credential(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_is_coturns_hmac_sha1_of_the_username() {
        // What openssl computes for coturn's REST API scheme:
        // printf '%s' "1765090800:p_7Hk2" | openssl dgst -binary -sha1 -hmac 's3cret' | base64
        assert_eq!(
            turn_credential(b"s3cret", "1765090800:p_7Hk2"),
            "uIjGH3BwHPAvl6fXsIeOoDlWvFo="
        );
        // RFC 2202's first HMAC-SHA1 test case, in base64.
        assert_eq!(
            turn_credential(&[0x0b; 20], "Hi There"),
            STANDARD.encode(hex::decode("b617318655057264e28bc0b6fb378c8ef146be00").unwrap())
        );
    }

    #[test]
    fn servers_are_stun_then_turn_with_an_expiring_username() {
        let config = IceConfig {
            stun_urls: vec!["stun:stun.example.org:3478".into()],
            turn_urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
            turn_ttl_secs: 600,
            turn_secret: Some(TurnSecret::new("s3cret")),
            ..IceConfig::default()
        };
        let ice = IceServers::new(&config).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_765_090_200);
        let json: serde_json::Value =
            serde_json::from_str(&ice.for_peer_at("p_7Hk2", now)).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"urls": ["stun:stun.example.org:3478"]},
                {"urls": ["turn:turn.example.org:3478?transport=udp"],
                 "username": "1765090800:p_7Hk2",
                 "credential": turn_credential(b"s3cret", "1765090800:p_7Hk2")}
            ])
        );
        assert!(!ice.for_peer_at("p_1", now).contains("s3cret"));
    }

    #[test]
    fn nothing_configured_is_none_and_turn_needs_its_secret() {
        assert!(IceServers::new(&IceConfig::default()).is_none());
        let no_secret = IceConfig {
            turn_urls: vec!["turn:t:3478".into()],
            ..IceConfig::default()
        };
        assert!(IceServers::new(&no_secret).is_none());
    }
}
