//! The `chatsubo` binary's command line: help and refused values.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a run of the binary gave.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `chatsubo` with these arguments and environment (and no other
/// CHATSUBO_ variables), killing it if it has not exited within 20 s.
fn chatsubo(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatsubo"));
    for (name, _) in std::env::vars() {
        if name.starts_with("CHATSUBO_") {
            cmd.env_remove(name);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    cmd.current_dir(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run chatsubo");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("chatsubo {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[test]
fn help_lists_every_flag_with_its_default_and_environment_variable() {
    let run = chatsubo(&["--help"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let help = run.stdout;
    for (flag, default) in [
        ("--listen", Some("127.0.0.1:8080")),
        ("--data-dir", Some("./data")),
        ("--log-dir", Some("./logs")),
        ("--max-room-size", Some("10")),
        ("--resume-grace-secs", Some("30")),
        ("--heartbeat-interval-ms", Some("15000")),
        ("--max-message-bytes", Some("65536")),
        ("--api-token", None),
        ("--rate-limit-per-sec", Some("50")),
        ("--rate-limit-burst", Some("200")),
        ("--max-connections", Some("10000")),
        ("--max-connections-per-ip", Some("256")),
    ] {
        // The flag's own block: from its line to the next flag.
        let start = help
            .find(&format!("{flag} "))
            .unwrap_or_else(|| panic!("{flag} missing from:\n{help}"));
        let rest = &help[start..];
        let end = ["\n      --", "\n  -"]
            .iter()
            .filter_map(|next| rest[2..].find(next))
            .min()
            .map_or(rest.len(), |i| i + 2);
        let block = &rest[..end];
        let var = format!(
            "CHATSUBO_{}",
            flag.trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase()
        );
        assert!(
            block.contains(&format!("[env: {var}=]")) || block.contains(&format!("[env: {var}]")),
            "{var} not shown for {flag}:\n{block}"
        );
        if let Some(default) = default {
            assert!(
                block.contains(&format!("[default: {default}]")),
                "default {default} not shown for {flag}:\n{block}"
            );
        }
    }
}

/// A refused configuration: exactly one line on stderr, exit code 2.
fn assert_refused(run: &Run, mentions: &str) {
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got:\n{}", run.stderr);
    assert!(lines[0].contains(mentions), "{}", lines[0]);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn a_bad_flag_value_is_one_line_and_exit_code_2() {
    assert_refused(&chatsubo(&["--max-room-size", "0"], &[]), "max-room-size");
    assert_refused(
        &chatsubo(&["--heartbeat-interval-ms", "often"], &[]),
        "heartbeat-interval-ms",
    );
    assert_refused(
        &chatsubo(&["--resume-grace-secs=-1"], &[]),
        "resume-grace-secs",
    );
    assert_refused(&chatsubo(&["--no-such-flag"], &[]), "--no-such-flag");
}

#[test]
fn a_bad_environment_value_is_one_line_and_exit_code_2() {
    assert_refused(&chatsubo(&[], &[("CHATSUBO_LISTEN", "nowhere")]), "nowhere");
    assert_refused(
        &chatsubo(&[], &[("CHATSUBO_MAX_MESSAGE_BYTES", "12")]),
        "max-message-bytes",
    );
}

#[test]
fn contradicting_flags_are_one_line_and_exit_code_2() {
    assert_refused(
        &chatsubo(
            &["--max-connections", "10", "--max-connections-per-ip", "20"],
            &[],
        ),
        "--max-connections-per-ip",
    );
}

#[test]
fn a_bad_ice_configuration_is_one_line_and_exit_code_2_and_never_shows_the_secret() {
    let turn = "turn:127.0.0.1:3478";
    assert_refused(
        &chatsubo(&["--turn-url", turn], &[]),
        "CHATSUBO_TURN_SECRET",
    );
    assert_refused(
        &chatsubo(
            &[
                "--turn-url",
                turn,
                "--turn-secret-file",
                "/nonexistent/secret",
            ],
            &[],
        ),
        "cannot read --turn-secret-file",
    );
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "  \n").unwrap();
    let empty = empty.to_str().unwrap();
    assert_refused(
        &chatsubo(&["--turn-url", turn, "--turn-secret-file", empty], &[]),
        "is empty",
    );
    assert_refused(
        &chatsubo(&["--turn-url", turn], &[("CHATSUBO_TURN_SECRET", " ")]),
        "CHATSUBO_TURN_SECRET is empty",
    );
    assert_refused(&chatsubo(&["--turn-url", "http://t:3478"], &[]), "turn-url");
    assert_refused(&chatsubo(&["--stun-url", "turn:t:3478"], &[]), "stun-url");
    assert_refused(
        &chatsubo(&[], &[("CHATSUBO_TURN_URL", "turn:ok:3478,nope")]),
        "nope",
    );
    assert_refused(&chatsubo(&["--turn-ttl-secs", "0"], &[]), "turn-ttl-secs");
    // Both sources of the secret: refused, and the secret is not echoed.
    let file = dir.path().join("secret");
    std::fs::write(&file, "file-SECRET-1").unwrap();
    let run = chatsubo(
        &[
            "--turn-url",
            turn,
            "--turn-secret-file",
            file.to_str().unwrap(),
        ],
        &[("CHATSUBO_TURN_SECRET", "env-SECRET-2")],
    );
    assert_refused(&run, "not both");
    assert!(!run.stderr.contains("SECRET-"), "{}", run.stderr);
}

#[test]
fn help_names_the_ice_flags_and_warns_about_origins() {
    let run = chatsubo(&["--help"], &[]);
    for flag in [
        "--turn-url",
        "--turn-secret-file",
        "--turn-ttl-secs",
        "--stun-url",
        "--allowed-origin",
        "--allowed-host",
        "--trusted-proxy",
        "CHATSUBO_TURN_SECRET",
    ] {
        assert!(run.stdout.contains(flag), "{flag} missing from --help");
    }
    assert!(run.stdout.contains("[default: 86400]"));
    assert!(
        run.stdout.contains("any web site can get credentials"),
        "--help says that TURN without --allowed-origin is open to any site"
    );
}
