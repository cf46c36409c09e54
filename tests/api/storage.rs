//! The store failing for real: the data directory on a small tmpfs that is
//! filled up. Signaling goes on, /health says degraded with 503, errors
//! are counted, and the store recovers by itself once space returns.
//!
//! Needs root (mount). Without it the test fails with a clear message,
//! unless CHATSUBO_SKIP_MOUNT_TESTS is set.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `4m`); `None` when mount tests are
    /// skipped on purpose.
    fn mount(size: &str) -> Option<Tmpfs> {
        if std::env::var_os("CHATSUBO_SKIP_MOUNT_TESTS").is_some() {
            eprintln!("CHATSUBO_SKIP_MOUNT_TESTS is set: skipping a test that mounts a tmpfs");
            return None;
        }
        let parent = tempfile::tempdir().expect("temp dir");
        let path = parent.path().join("data");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs as the data directory and needs root (or CAP_SYS_ADMIN); \
             mount said: {}. Run as root, or set CHATSUBO_SKIP_MOUNT_TESTS=1 to skip it.",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Some(Tmpfs {
            path,
            _parent: parent,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a server task not yet gone): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Writes a filler file until the file system is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xA5u8; 16 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
    path
}

/// The server with its data directory on `tmpfs`, flushing every 50 ms.
async fn spawn_on(tmpfs: &Tmpfs) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.data_dir = tmpfs.path.clone();
    config.flush_interval_ms = 50;
    spawn_with_config(config, dir).await
}

async fn health(app: &TestApp) -> (u16, Value) {
    let res = app.get("/health").await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// Opens sessions in `room` (connect, join, leave) until `done` says so,
/// or fails after 30 s.
async fn churn_until(app: &TestApp, room: &str, what: &str, done: impl AsyncCheck) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        let c = app.joined(room, &format!("n{n}")).await;
        c.close().await;
        n += 1;
        if done.check(app).await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached after {n} sessions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

trait AsyncCheck {
    async fn check(&self, app: &TestApp) -> bool;
}

struct Degraded;
impl AsyncCheck for Degraded {
    async fn check(&self, app: &TestApp) -> bool {
        health(app).await.0 == 503
    }
}

struct Healthy;
impl AsyncCheck for Healthy {
    async fn check(&self, app: &TestApp) -> bool {
        health(app).await.0 == 200
    }
}

/// Two peers of `room` relay an offer both ways.
async fn relay_works(app: &TestApp, room: &str) {
    let mut a = app.joined(room, "a").await;
    let mut b = app.joined(room, "b").await;
    a.recv_type("peer-joined").await;
    b.send(json!({"type":"offer","to":a.peer_id(),"data":{"sdp":"x"}}))
        .await;
    let offer = a.recv_type("offer").await;
    assert_eq!(offer["from"], b.peer_id());
    a.send(json!({"type":"answer","to":b.peer_id(),"data":{"sdp":"y"}}))
        .await;
    b.recv_type("answer").await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_health_keeps_signaling_and_recovers_by_itself() {
    let Some(tmpfs) = Tmpfs::mount("4m") else {
        return;
    };
    let app = spawn_on(&tmpfs).await;
    let (status, body) = health(&app).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("healthy")));
    relay_works(&app, "before").await;

    let filler = fill(&tmpfs.path);
    churn_until(&app, "filling", "health degraded", Degraded).await;
    let (status, body) = health(&app).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["storage"], "error");
    let errors = app.metric("chatsubo_storage_errors_total").await;
    eprintln!("storage errors while full: {errors}");
    assert!(errors >= 1.0);
    // Signaling goes on while the store fails.
    relay_works(&app, "during").await;

    std::fs::remove_file(&filler).unwrap();
    churn_until(&app, "after", "health back to healthy", Healthy).await;
    let (_, body) = health(&app).await;
    eprintln!(
        "recovered; storage errors: {}",
        app.metric("chatsubo_storage_errors_total").await
    );
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["storage"], "ok");

    // New sessions are stored again.
    let c = app.joined("stored-again", "zed").await;
    let session = c.welcome["sessionId"].as_str().unwrap().to_string();
    c.close().await;
    stored_session_until(&app, &session, Duration::from_secs(15), |body| {
        body["room"] == "stored-again"
    })
    .await;
    app.stop().await;
    drop(tmpfs);
}

/// Polls `/api/sessions/{session}` until `done` holds for it. The session
/// row can be written a batch before its join event, and a session not
/// written yet is a 404.
async fn stored_session_until(
    app: &TestApp,
    session: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let res = app.get(&format!("/api/sessions/{session}")).await;
        let status = res.status();
        let body: Value = if status == 200 {
            res.json().await.unwrap()
        } else {
            Value::Null
        };
        if done(&body) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "session {session} was not stored as expected: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `mount -o remount,<mode>`; whether it worked.
fn remount(path: &Path, mode: &str) -> bool {
    Command::new("mount")
        .args(["-o", &format!("remount,{mode}")])
        .arg(path)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_directory_degrades_health_and_recovers_when_writable() {
    let Some(tmpfs) = Tmpfs::mount("4m") else {
        return;
    };
    let app = spawn_on(&tmpfs).await;
    relay_works(&app, "before").await;

    // Linux refuses to remount a file system read-only while a file on it
    // is open for writing, as the store's files are. A write failure makes
    // the store close its files; the remount is made in that window.
    let filler = fill(&tmpfs.path);
    churn_until(&app, "filling", "health degraded", Degraded).await;
    std::fs::remove_file(&filler).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !remount(&tmpfs.path, "ro") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "could not remount the data directory read-only"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Read-only: writes keep failing, health stays degraded, signaling goes on.
    let errors = app.metric("chatsubo_storage_errors_total").await;
    churn_until(&app, "read-only", "more storage errors", MoreErrors(errors)).await;
    let (status, body) = health(&app).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("degraded")));
    relay_works(&app, "during").await;

    assert!(remount(&tmpfs.path, "rw"), "remount rw");
    churn_until(&app, "after", "health back to healthy", Healthy).await;
    app.stop().await;
    drop(tmpfs);
}

struct MoreErrors(f64);
impl AsyncCheck for MoreErrors {
    async fn check(&self, app: &TestApp) -> bool {
        app.metric("chatsubo_storage_errors_total").await > self.0
    }
}

/// The data directory is read-only when the server starts: it serves
/// anyway, degraded, and opens the store once the directory is writable;
/// a session from the degraded time is stored then (its events waited in
/// the writer's retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_read_only_at_start_serves_degraded_then_opens_the_store() {
    let Some(tmpfs) = Tmpfs::mount("8m") else {
        return;
    };
    assert!(remount(&tmpfs.path, "ro"), "remount ro");
    let app = spawn_on(&tmpfs).await;
    let (status, body) = health(&app).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("degraded")));
    assert_eq!(body["storage"], "error");
    assert!(app.metric("chatsubo_storage_errors_total").await >= 1.0);
    relay_works(&app, "read-only-start").await;
    let early = app.joined("early", "ann").await;
    let session = early.welcome["sessionId"].as_str().unwrap().to_string();
    early.close().await;

    assert!(remount(&tmpfs.path, "rw"), "remount rw");
    churn_until(&app, "writable", "health back to healthy", Healthy).await;
    stored_session_until(&app, &session, Duration::from_secs(20), |body| {
        body["room"] == "early" && !body["endedAt"].is_null()
    })
    .await;
    app.stop().await;
    drop(tmpfs);
}
