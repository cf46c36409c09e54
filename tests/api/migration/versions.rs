//! The schema version itself: a new store starts at the current one, and a
//! store from a newer version is refused and left as it is.

use chatsubo::analytics;

use super::{options, when_unlocked};

#[test]
fn a_new_store_starts_at_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recovered) = analytics::open(dir.path(), &options()).unwrap();
    assert_eq!(recovered.closed, 0);
    assert_eq!(
        analytics::layout::read_version(&*store).unwrap(),
        Some(analytics::layout::SCHEMA_VERSION)
    );
}

#[test]
fn a_store_from_a_newer_version_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(analytics::layout::VERSION_KEY, &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = match when_unlocked(|| analytics::open(dir.path(), &options())) {
        Ok(_) => panic!("a v99 store must be refused"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("schema version 99"), "{err}");
    assert!(err.contains("newer"), "{err}");
    // Nothing was rewritten.
    let db = when_unlocked(|| sled::open(dir.path())).unwrap();
    let v = db
        .open_tree("meta")
        .unwrap()
        .get(analytics::layout::VERSION_KEY)
        .unwrap()
        .unwrap();
    assert_eq!(v.as_ref(), 99u32.to_be_bytes());
}
