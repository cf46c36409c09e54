//! `/api/sessions`: a page of sessions by filter, and one session with its
//! events.

use std::ops::Bound;

use crate::analytics::codec::{decode_events, decode_session};
use crate::analytics::event::{EventKind, SessionRecord, StoredEvent};
use crate::analytics::keys;
use crate::analytics::store::{Store, Tree, scan_prefix};
use crate::protocol::{Protocol, peer_of_session, session_of_peer};

/// Filters of `GET /api/sessions`, already validated.
#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    pub room: Option<String>,
    pub peer: Option<String>,
    /// Only sessions of this wire protocol.
    pub protocol: Option<Protocol>,
    /// `connectedAt >= since` (unix ms).
    pub since_ms: Option<u64>,
    /// `connectedAt < until` (unix ms).
    pub until_ms: Option<u64>,
    pub limit: usize,
    /// Only sessions ordered before this session id (the previous page's last).
    pub cursor: Option<u128>,
}

/// One page of sessions, newest first.
#[derive(Debug)]
pub struct SessionPage {
    pub sessions: Vec<SessionRecord>,
    /// The id to pass as the next cursor, when more rows may follow.
    pub next_cursor: Option<u128>,
}

/// Sessions matching `filter`, newest first (by `connectedAt`, then id).
pub fn list_sessions(store: &dyn Store, filter: &SessionFilter) -> anyhow::Result<SessionPage> {
    let Some((lo, hi)) = id_range(filter) else {
        return Ok(empty_page());
    };
    let want = filter.limit + 1;
    let keep = |s: &SessionRecord| {
        filter
            .room
            .as_ref()
            .is_none_or(|room| s.room.as_ref() == Some(room))
            && filter.protocol.is_none_or(|p| s.protocol == p)
    };
    let mut rows = match (&filter.peer, &filter.room) {
        (None, None) => scan_sessions(store, (lo, hi), want, &keep)?,
        (Some(peer), _) => {
            // The peer index is the narrower one: a peer has few sessions.
            let mut rows = scan_index(store, Tree::ByPeer, peer, (lo, hi), want, &keep)?;
            add_first_session(store, peer, (lo, hi), &mut rows, want, &keep)?;
            rows
        }
        (None, Some(room)) => scan_index(store, Tree::ByRoom, room, (lo, hi), want, &keep)?,
    };
    let next_cursor = if rows.len() > filter.limit {
        rows.truncate(filter.limit);
        rows.last().map(|(id, _)| *id)
    } else {
        None
    };
    Ok(SessionPage {
        sessions: rows.into_iter().map(|(_, s)| s).collect(),
        next_cursor,
    })
}

/// The session ids a filter's page may hold, `[lo, hi]`; `None` if none.
fn id_range(filter: &SessionFilter) -> Option<(u128, u128)> {
    let lo = filter.since_ms.map_or(0, keys::first_id_at);
    let mut hi = match filter.until_ms {
        Some(0) => return None,
        Some(until) => keys::last_id_at(until - 1),
        None => u128::MAX,
    };
    if let Some(cursor) = filter.cursor {
        hi = hi.min(cursor.checked_sub(1)?);
    }
    (lo <= hi).then_some((lo, hi))
}

/// Up to `want` sessions with ids in `[lo, hi]` that `keep` keeps, newest
/// first.
fn scan_sessions(
    store: &dyn Store,
    (lo, hi): (u128, u128),
    want: usize,
    keep: &dyn Fn(&SessionRecord) -> bool,
) -> anyhow::Result<Vec<(u128, SessionRecord)>> {
    let mut rows = Vec::with_capacity(want.min(1024));
    let mut failure = None;
    store.scan(
        Tree::Sessions,
        Bound::Included(&keys::session_key(lo)),
        Bound::Included(&keys::session_key(hi)),
        true,
        &mut |k, v| {
            match (keys::decode_session_key(k), decode_session(k, v)) {
                (Some(id), Ok(s)) if keep(&s) => rows.push((id, s)),
                (Some(_), Ok(_)) => {}
                (_, Err(e)) => {
                    failure = Some(e);
                    return false;
                }
                (None, _) => {}
            }
            rows.len() < want
        },
    )?;
    failure.map_or(Ok(rows), Err)
}

/// Up to `want` sessions that the index `tree` lists under `name`, with
/// ids in `range`, that `keep` keeps, newest first.
fn scan_index(
    store: &dyn Store,
    tree: Tree,
    name: &str,
    (lo, hi): (u128, u128),
    want: usize,
    keep: &dyn Fn(&SessionRecord) -> bool,
) -> anyhow::Result<Vec<(u128, SessionRecord)>> {
    let mut rows = Vec::with_capacity(want.min(1024));
    let mut failure = None;
    store.scan(
        tree,
        Bound::Included(&keys::index_key(name, lo)),
        Bound::Included(&keys::index_key(name, hi)),
        true,
        &mut |k, _| {
            let Some((_, id)) = keys::decode_index_key(k) else {
                return true;
            };
            match read_session(store, id) {
                Ok(Some(s)) if keep(&s) => rows.push((id, s)),
                Ok(_) => {}
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            }
            rows.len() < want
        },
    )?;
    failure.map_or(Ok(rows), Err)
}

/// A peer's first session has no index entry (schema v4): it is the
/// session its id was made for. Adds it to `rows` (newest first, at most
/// `want`) when it matches; stores written before v4 also have the entry,
/// so it may be found twice.
fn add_first_session(
    store: &dyn Store,
    peer: &str,
    (lo, hi): (u128, u128),
    rows: &mut Vec<(u128, SessionRecord)>,
    want: usize,
    keep: &dyn Fn(&SessionRecord) -> bool,
) -> anyhow::Result<()> {
    let Some(first) = session_of_peer(peer) else {
        return Ok(());
    };
    if !(lo..=hi).contains(&first) || rows.iter().any(|(id, _)| *id == first) {
        return Ok(());
    }
    if let Some(s) = read_session(store, first)?
        && s.peer_id == peer
        && keep(&s)
    {
        let at = rows.partition_point(|(id, _)| *id > first);
        rows.insert(at, (first, s));
        rows.truncate(want);
    }
    Ok(())
}

/// The record of session `id`, if the store has it.
fn read_session(store: &dyn Store, id: u128) -> anyhow::Result<Option<SessionRecord>> {
    let key = keys::session_key(id);
    match store.get(Tree::Sessions, &key)? {
        Some(v) => Ok(Some(decode_session(&key, &v)?)),
        None => Ok(None),
    }
}

fn empty_page() -> SessionPage {
    SessionPage {
        sessions: Vec::new(),
        next_cursor: None,
    }
}

/// One session and its events in time order.
pub fn session_with_events(
    store: &dyn Store,
    id: u128,
) -> anyhow::Result<Option<(SessionRecord, Vec<StoredEvent>)>> {
    let key = keys::session_key(id);
    let Some(value) = store.get(Tree::Sessions, &key)? else {
        return Ok(None);
    };
    let mut record = decode_session(&key, &value)?;
    // The first batch's events are in the record (schema v5), the later
    // ones in `events` records.
    let mut events = std::mem::take(&mut record.events);
    let mut failure = None;
    scan_prefix(store, Tree::Events, &key, false, &mut |_, v| {
        match decode_events(v) {
            Ok(group) => events.extend(group),
            Err(e) => {
                failure = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    // From schema v4 the connect is not stored when the record holds all
    // it says: the time, the address, the user agent, and the peer id
    // (made from the session id; the record's own until a resume).
    if !events
        .iter()
        .any(|e| matches!(e.kind, EventKind::Connect { .. }))
    {
        let resumed = events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Resume { .. }));
        let peer = if resumed {
            peer_of_session(id)
        } else {
            record.peer_id.clone()
        };
        events.insert(
            0,
            StoredEvent {
                at: record.connected_at,
                kind: EventKind::Connect {
                    peer,
                    remote_addr: record.remote_addr.clone(),
                    user_agent: record.user_agent.clone(),
                    connections: 0,
                    protocol: record.protocol,
                },
            },
        );
    }
    // Groups are in key order (their first event's time); a stable sort
    // by time puts every event where a key of its own would have.
    events.sort_by_key(|e| e.at);
    Ok(Some((record, events)))
}
