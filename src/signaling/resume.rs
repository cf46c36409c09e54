//! Resume tokens: single-use secrets that let a dropped peer take back its
//! place. Only a SHA-256 of each secret is kept, compared in constant time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::PeerId;
use crate::protocol::RoomName;

/// How long a spent or expired token is remembered, so that a late attempt
/// is counted as `expired` rather than `invalid`.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// The lookup half of a token (public, random) — never the secret.
pub type TokenId = [u8; 12];

/// A freshly issued token: its id, and the text sent in `welcome`.
pub struct IssuedToken {
    pub id: TokenId,
    pub text: String,
}

/// What redeeming a token gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Redeemed {
    /// The token (`token` is its id) was valid: take back this peer id in
    /// this room, from the connection whose session id is `session_id`.
    Valid {
        token: TokenId,
        peer_id: PeerId,
        room: RoomName,
        session_id: Arc<str>,
    },
    /// A real token, but spent, or its grace period is over.
    Expired,
    /// Not a token this server issued (or its connection never joined a room).
    Invalid,
}

enum State {
    /// Issued; `binding` is set while its connection is in a room, and
    /// `expires` once that connection has dropped.
    Live {
        secret_hash: [u8; 32],
        binding: Option<(PeerId, RoomName, Arc<str>)>,
        expires: Option<Instant>,
    },
    /// Spent or expired at this instant.
    Gone(Instant),
}

/// Every outstanding resume token. Touched on connect, join and disconnect,
/// never on the relay path.
#[derive(Default)]
pub struct ResumeTokens {
    entries: Mutex<HashMap<TokenId, State>>,
}

impl ResumeTokens {
    /// Issues a token of 96 bits of id and 256 bits of secret.
    pub fn issue(&self) -> IssuedToken {
        let mut rng = rand::rng();
        let mut id = [0u8; 12];
        rng.fill_bytes(&mut id);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let text = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(id),
            URL_SAFE_NO_PAD.encode(secret)
        );
        self.entries.lock().insert(
            id,
            State::Live {
                secret_hash: Sha256::digest(secret).into(),
                binding: None,
                expires: None,
            },
        );
        IssuedToken { id, text }
    }

    /// Records which peer and room the token would take back, and the
    /// session id of the connection holding it (the `resumedFrom` of a
    /// resume). Returns the SHA-256 of the token's secret (what the store
    /// keeps), or `None` for a token no longer live.
    pub fn bind(
        &self,
        id: &TokenId,
        peer_id: PeerId,
        room: RoomName,
        session_id: Arc<str>,
    ) -> Option<[u8; 32]> {
        match self.entries.lock().get_mut(id) {
            Some(State::Live {
                binding,
                secret_hash,
                ..
            }) => {
                *binding = Some((peer_id, room, session_id));
                Some(*secret_hash)
            }
            _ => None,
        }
    }

    /// Puts back a token a previous run of the server issued, from the
    /// hash of its secret: bound to its peer and room, valid until `expires`.
    pub fn restore(
        &self,
        id: TokenId,
        secret_hash: [u8; 32],
        binding: (PeerId, RoomName, Arc<str>),
        expires: Instant,
    ) {
        self.entries.lock().insert(
            id,
            State::Live {
                secret_hash,
                binding: Some(binding),
                expires: Some(expires),
            },
        );
    }

    /// The connection left its room on purpose: nothing to resume any more.
    pub fn unbind(&self, id: &TokenId) {
        if let Some(State::Live { binding, .. }) = self.entries.lock().get_mut(id) {
            *binding = None;
        }
    }

    /// The token's connection dropped: it stays valid until `expires`.
    pub fn arm(&self, id: &TokenId, expires: Instant) {
        if let Some(State::Live { expires: e, .. }) = self.entries.lock().get_mut(id) {
            *e = Some(expires);
        }
    }

    /// Forgets a token whose connection ended with nothing to resume.
    pub fn revoke(&self, id: &TokenId) {
        self.entries.lock().remove(id);
    }

    /// Marks a token expired (its grace ended without a resume).
    pub fn expire(&self, id: &TokenId) {
        if let Some(state) = self.entries.lock().get_mut(id) {
            *state = State::Gone(Instant::now());
        }
    }

    /// Spends a token. Valid only once, only while bound to a room, only
    /// before its expiry.
    pub fn redeem(&self, text: &str) -> Redeemed {
        let Some((id, secret)) = decode(text) else {
            return Redeemed::Invalid;
        };
        let now = Instant::now();
        let mut entries = self.entries.lock();
        let Some(state) = entries.get_mut(&id) else {
            return Redeemed::Invalid;
        };
        let outcome = match state {
            State::Gone(_) => return Redeemed::Expired,
            State::Live {
                secret_hash,
                binding,
                expires,
            } => {
                let hash: [u8; 32] = Sha256::digest(secret).into();
                if !bool::from(hash.ct_eq(secret_hash)) {
                    return Redeemed::Invalid;
                }
                match (binding.take(), *expires) {
                    (Some(_), Some(at)) if at <= now => Redeemed::Expired,
                    (Some((peer_id, room, session_id)), _) => Redeemed::Valid {
                        token: id,
                        peer_id,
                        room,
                        session_id,
                    },
                    (None, _) => Redeemed::Invalid,
                }
            }
        };
        *state = State::Gone(now);
        outcome
    }

    /// Drops tombstones older than ten minutes and tokens long expired.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.entries.lock().retain(|_, state| match state {
            State::Gone(at) => now.duration_since(*at) < TOMBSTONE_TTL,
            State::Live {
                expires: Some(at), ..
            } => now.saturating_duration_since(*at) < TOMBSTONE_TTL,
            State::Live { .. } => true,
        });
    }

    /// Tokens and tombstones held (for tests and gauges).
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn decode(text: &str) -> Option<(TokenId, [u8; 32])> {
    let (id, secret) = text.split_once('.')?;
    let id: TokenId = URL_SAFE_NO_PAD.decode(id).ok()?.try_into().ok()?;
    let secret: [u8; 32] = URL_SAFE_NO_PAD.decode(secret).ok()?.try_into().ok()?;
    Some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomName {
        RoomName::parse("r").unwrap()
    }

    #[test]
    fn a_token_works_once() {
        let tokens = ResumeTokens::default();
        let t = tokens.issue();
        tokens.bind(&t.id, "p_1".into(), room(), "S1".into());
        tokens.arm(&t.id, Instant::now() + Duration::from_secs(5));
        assert_eq!(
            tokens.redeem(&t.text),
            Redeemed::Valid {
                token: t.id,
                peer_id: "p_1".into(),
                room: room(),
                session_id: "S1".into(),
            }
        );
        assert_eq!(tokens.redeem(&t.text), Redeemed::Expired);
    }

    #[test]
    fn a_restored_token_works_once_from_its_hash() {
        let tokens = ResumeTokens::default();
        let t = tokens.issue();
        let hash = tokens
            .bind(&t.id, "p_1".into(), room(), "S1".into())
            .expect("a live token");
        // A new server knows only the id and the hash.
        let restarted = ResumeTokens::default();
        restarted.restore(
            t.id,
            hash,
            ("p_1".into(), room(), "S1".into()),
            Instant::now() + Duration::from_secs(5),
        );
        let (id, _) = t.text.split_once('.').unwrap();
        let forged = format!("{id}.{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert_eq!(restarted.redeem(&forged), Redeemed::Invalid);
        assert!(matches!(restarted.redeem(&t.text), Redeemed::Valid { .. }));
        assert_eq!(restarted.redeem(&t.text), Redeemed::Expired);
        let late = ResumeTokens::default();
        late.restore(
            t.id,
            hash,
            ("p_1".into(), room(), "S1".into()),
            Instant::now() - Duration::from_millis(1),
        );
        assert_eq!(late.redeem(&t.text), Redeemed::Expired);
    }

    #[test]
    fn unbound_forged_and_late_tokens_fail() {
        let tokens = ResumeTokens::default();
        let t = tokens.issue();
        assert_eq!(tokens.redeem(&t.text), Redeemed::Invalid, "never joined");
        let t = tokens.issue();
        tokens.bind(&t.id, "p_1".into(), room(), "S1".into());
        let (id, _) = t.text.split_once('.').unwrap();
        let forged = format!("{id}.{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert_eq!(tokens.redeem(&forged), Redeemed::Invalid);
        assert_eq!(tokens.redeem("garbage"), Redeemed::Invalid);
        tokens.arm(&t.id, Instant::now() - Duration::from_millis(1));
        assert_eq!(tokens.redeem(&t.text), Redeemed::Expired);
        let t = tokens.issue();
        tokens.bind(&t.id, "p_2".into(), room(), "S2".into());
        tokens.expire(&t.id);
        assert_eq!(tokens.redeem(&t.text), Redeemed::Expired);
    }

    #[test]
    fn tokens_carry_at_least_128_random_bits() {
        let tokens = ResumeTokens::default();
        let t = tokens.issue();
        let (_, secret) = decode(&t.text).unwrap();
        assert_eq!(secret.len() * 8, 256);
    }
}
