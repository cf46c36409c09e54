//! A real coturn beside the server (Debian package coturn, started by
//! tests/coturn/run.sh with its own configuration file and the secret file
//! the server reads): the TURN credentials of a real `welcome` get an
//! allocation from `turnutils_uclient`; a wrong password and an expired
//! username are refused, and fresh credentials from `ice-servers` work again.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::*;

const SECRET: &str = "coturn-test-secret-5d1e";

/// coturn on 127.0.0.1, until dropped.
struct Coturn {
    child: Child,
    dir: TempDir,
    port: u16,
}

impl Coturn {
    /// coturn on a free port, with a relay port range of its own and the
    /// shared secret in `dir/turn-secret` (also the server's
    /// `--turn-secret-file`).
    async fn start() -> Coturn {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("turn-secret"), format!("{SECRET}\n")).unwrap();
        let port = free_port();
        // 100 relay ports below the kernel's ephemeral range (32768 and
        // up), picked by the listening port so that parallel runs differ.
        let min = 20_000 + (port % 100) * 100;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/coturn/run.sh");
        let child = Command::new("bash")
            .arg(&script)
            .arg(dir.path().join("coturn"))
            .arg(port.to_string())
            .arg(dir.path().join("turn-secret"))
            .args([min, min + 99].map(|p| p.to_string()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bash runs tests/coturn/run.sh");
        let mut coturn = Coturn { child, dir, port };
        let deadline = Instant::now() + PATIENCE * 2;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = coturn.child.try_wait() {
                panic!(
                    "coturn exited ({status}): is the Debian package coturn installed \
                     (scripts/test.sh installs it)? Its log: {}",
                    coturn.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "coturn did not listen: {}",
                coturn.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        coturn
    }

    fn secret_file(&self) -> PathBuf {
        self.dir.path().join("turn-secret")
    }

    fn log(&self) -> String {
        ["turnserver.log", "turnserver.out"]
            .map(|name| {
                std::fs::read_to_string(self.dir.path().join("coturn").join(name))
                    .unwrap_or_else(|e| format!("(no {name}: {e})"))
            })
            .join("\n")
    }

    /// A Chatsubo handing out this coturn, credentials valid `ttl` s.
    async fn chatsubo(&self, ttl: u64) -> TestApp {
        let (url, file) = (self.url(), self.secret_file());
        spawn_app_with(move |c| {
            c.ice.turn_urls = vec![url];
            c.ice.turn_secret_file = Some(file);
            c.ice.turn_ttl_secs = ttl;
            c.ice.load_secret().unwrap();
        })
        .await
    }

    fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// `turnutils_uclient` (two clients relaying to each other through
    /// allocations of their own) with these credentials, for at most 60 s:
    /// its exit code (0: allocated and relayed, 255: refused; `None`:
    /// killed) and its output.
    async fn uclient(&self, username: &str, password: &str) -> (Option<i32>, String) {
        let out = tempfile::NamedTempFile::new_in(self.dir.path()).unwrap();
        let file = out.reopen().unwrap();
        let mut cmd = Command::new("turnutils_uclient");
        cmd.args(["-y", "-n", "2", "-m", "1", "-p", &self.port.to_string()])
            .args(["-u", username, "-w", password, "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let code = tokio::task::spawn_blocking(move || {
            let mut child = cmd
                .spawn()
                .expect("turnutils_uclient (Debian package coturn) runs");
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            child.wait().unwrap().code()
        })
        .await
        .unwrap();
        (code, std::fs::read_to_string(out.path()).unwrap())
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The username and password of the TURN entry of an `iceServers` array.
fn turn_credentials(servers: &Value, url: &str) -> (String, String) {
    let turn = servers
        .as_array()
        .and_then(|all| all.iter().find(|s| s["urls"] == json!([url])))
        .unwrap_or_else(|| panic!("no TURN entry for {url} in {servers}"));
    (
        turn["username"].as_str().unwrap().to_string(),
        turn["credential"].as_str().unwrap().to_string(),
    )
}

/// Waits until coturn counts `username` as expired: it accepts a username
/// through the second its expiry names.
async fn until_expired(username: &str) {
    let expiry: u64 = username.split_once(':').unwrap().0.parse().unwrap();
    let after = UNIX_EPOCH + Duration::from_secs(expiry + 1) + Duration::from_millis(100);
    if let Ok(wait) = after.duration_since(SystemTime::now()) {
        assert!(
            wait < Duration::from_secs(5),
            "a 1 s credential lasts {wait:?}"
        );
        tokio::time::sleep(wait).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_allocates_with_the_welcome_credentials_and_refuses_a_wrong_password() {
    let coturn = Coturn::start().await;
    let app = coturn.chatsubo(600).await;
    let c = app.client().await;
    let (user, pass) = turn_credentials(&c.welcome["iceServers"], &coturn.url());

    let (code, output) = coturn.uclient(&user, &pass).await;
    assert_eq!(code, Some(0), "the welcome's credentials: {output}");
    assert!(output.contains("Total lost packets 0"), "{output}");

    // A well-formed password made with another secret.
    let wrong = chatsubo::signaling::turn_credential(b"not-the-secret", &user);
    let (code, output) = coturn.uclient(&user, &wrong).await;
    assert_eq!(code, Some(255), "a wrong password: {output}");
    // The password is bound to the username: another peer's name with it fails.
    let (expiry, _) = user.split_once(':').unwrap();
    let (code, output) = coturn.uclient(&format!("{expiry}:p_other"), &pass).await;
    assert_eq!(
        code,
        Some(255),
        "a username the password was not made for: {output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_refuses_an_expired_username_and_takes_fresh_ones_from_ice_servers() {
    let coturn = Coturn::start().await;
    let app = coturn.chatsubo(1).await;
    let mut c = app.client().await;
    let (user, pass) = turn_credentials(&c.welcome["iceServers"], &coturn.url());
    until_expired(&user).await;

    let (code, output) = coturn.uclient(&user, &pass).await;
    assert_eq!(code, Some(255), "an expired username: {output}");

    c.send(json!({"type":"ice-servers"})).await;
    let answer = c.recv_type("ice-servers").await;
    let (fresh_user, fresh_pass) = turn_credentials(&answer["iceServers"], &coturn.url());
    assert_ne!(fresh_user, user);
    let (code, output) = coturn.uclient(&fresh_user, &fresh_pass).await;
    assert_eq!(
        code,
        Some(0),
        "fresh credentials from ice-servers: {output}"
    );
}
