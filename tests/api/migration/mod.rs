//! Schema migrations: a store written in an older layout (made with sled
//! directly, as that version wrote it) is upgraded at open, a file per
//! schema step; a store from a newer version is refused. Also the v2
//! `resume` tree's encoding.

mod resume_encoding;
mod v0_to_v1;
mod v1_to_v2;
mod v2_to_v3;
mod v3_to_v4;
mod v4_to_v5;
mod versions;

use chatsubo::analytics::{self, SledOptions};

/// Runs `open` until it stops failing for a lock a handle dropped just
/// before still holds: sled's I/O threads may keep the file for a moment
/// after its `Db` is dropped, and an open then fails with `WouldBlock`.
fn when_unlocked<T, E: std::fmt::Debug>(mut open: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(e)
                if std::time::Instant::now() < deadline
                    && format!("{e:?}").contains("WouldBlock") =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The store in `dir`, opened as chatsubo opens it.
fn open_store(dir: &std::path::Path) -> analytics::SledStore {
    when_unlocked(|| analytics::SledStore::open(dir, &options())).unwrap()
}

/// The store options every migration test opens with.
fn options() -> SledOptions {
    SledOptions {
        cache_bytes: 8 << 20,
        flush_every_ms: 500,
    }
}
