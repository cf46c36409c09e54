//! The contract's identifiers: a peer id is `p_` and the session id (a
//! ULID) of the connection it was made for, so that either can be found
//! from the other without an index.

/// The peer id made for session `id`: `p_` and the session id.
pub fn peer_of_session(id: u128) -> String {
    format!("p_{}", ulid::Ulid(id))
}

/// The session a peer id was made for ([`peer_of_session`]'s inverse);
/// `None` for any other text.
pub fn session_of_peer(peer: &str) -> Option<u128> {
    let ulid = peer.strip_prefix("p_")?;
    Some(ulid::Ulid::from_string(ulid).ok()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_id_names_its_session() {
        let id = ulid::Ulid::from_parts(1_000, 42).0;
        let peer = peer_of_session(id);
        assert!(peer.starts_with("p_") && peer.len() == 28, "{peer}");
        assert_eq!(session_of_peer(&peer), Some(id));
        assert_eq!(session_of_peer("p_nope"), None);
        assert_eq!(session_of_peer("01JD0000000000000000000000"), None);
    }
}
