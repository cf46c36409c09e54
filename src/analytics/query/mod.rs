//! The queries behind `/api`. Each one scans a key range chosen so that its
//! cost follows the rows it returns (or, for aggregates, the rows inside
//! the asked time range), never the whole history.

mod aggregates;
mod sessions;

pub use aggregates::{Stats, all_room_totals, churn_by_bucket, room_totals, session_stats};
pub use sessions::{SessionFilter, SessionPage, list_sessions, session_with_events};
