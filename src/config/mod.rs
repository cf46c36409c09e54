//! Every setting of the server: its flag, its environment variable and its
//! default, in one place. `chatsubo --help` prints this table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

mod adapters;
mod edge;
mod ice;

pub use adapters::AdaptersConfig;
pub use edge::EdgeConfig;
pub use ice::{IceConfig, TURN_SECRET_VAR, TurnSecret};

/// Chatsubo: a WebRTC signaling server with session history, metrics, logs and traces.
///
/// Every flag can also be set by an environment variable named
/// `CHATSUBO_<FLAG>` (for example `CHATSUBO_MAX_ROOM_SIZE=6`).
#[derive(Parser, Debug, Clone)]
#[command(name = "chatsubo", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on for WebSocket signaling and HTTP.
    #[arg(long, env = "CHATSUBO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory of the embedded session store.
    #[arg(long, env = "CHATSUBO_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Directory of the rotated JSON log files.
    #[arg(long, env = "CHATSUBO_LOG_DIR", default_value = "./logs")]
    pub log_dir: PathBuf,

    /// How often the log file rotates: hourly or daily.
    #[arg(long, env = "CHATSUBO_LOG_ROTATION", value_enum, default_value_t = LogRotation::Daily)]
    pub log_rotation: LogRotation,

    /// Rotated log files kept in --log-dir; older ones are deleted.
    #[arg(long, env = "CHATSUBO_LOG_MAX_FILES", default_value_t = 14,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub log_max_files: u32,

    /// Log filter (`info`, `debug`, `chatsubo=debug,warn`, …). Default `info`;
    /// when this flag is absent, `RUST_LOG` is used if set.
    #[arg(long, env = "CHATSUBO_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// OTLP collector to export traces to (gRPC unless
    /// OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf); falls back to
    /// OTEL_EXPORTER_OTLP_ENDPOINT. No traces are exported when neither is set.
    #[arg(long, env = "CHATSUBO_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Most peers in one room (peers inside their resume grace included).
    #[arg(long, env = "CHATSUBO_MAX_ROOM_SIZE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_room_size: u32,

    /// Seconds a dropped peer keeps its place and can resume (fractions allowed).
    #[arg(long, env = "CHATSUBO_RESUME_GRACE_SECS", default_value = "30",
          value_parser = parse_seconds)]
    pub resume_grace_secs: Duration,

    /// Interval of WebSocket pings; a peer silent for two intervals is dropped.
    #[arg(long, env = "CHATSUBO_HEARTBEAT_INTERVAL_MS", default_value_t = 15000,
          value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub heartbeat_interval_ms: u64,

    /// Largest message accepted, in bytes, after reassembly of fragments.
    #[arg(long, env = "CHATSUBO_MAX_MESSAGE_BYTES", default_value_t = 65536,
          value_parser = clap::value_parser!(u64).range(1024..=16_777_216))]
    pub max_message_bytes: u64,

    /// Bearer token required by /api/* and /dashboard; without it they answer loopback clients only.
    #[arg(long, env = "CHATSUBO_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Messages per second each connection may send, sustained (token bucket refill).
    #[arg(long, env = "CHATSUBO_RATE_LIMIT_PER_SEC", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_per_sec: u32,

    /// Messages each connection may send in a burst (token bucket size).
    #[arg(long, env = "CHATSUBO_RATE_LIMIT_BURST", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_burst: u32,

    /// Most open WebSocket connections in total.
    #[arg(long, env = "CHATSUBO_MAX_CONNECTIONS", default_value_t = 10000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Most open WebSocket connections from one client address.
    #[arg(long, env = "CHATSUBO_MAX_CONNECTIONS_PER_IP", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections_per_ip: u32,

    /// Most open HTTP connections not (yet) upgraded to WebSocket; more are
    /// answered 503 and closed at once. Upgraded connections do not count here.
    #[arg(long, env = "CHATSUBO_MAX_HTTP_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_http_connections: u32,

    /// Kilobytes of kernel receive buffer of each client socket (`SO_RCVBUF`,
    /// set on the listener and inherited; 0: the kernel's autotuning, which
    /// may grow it to `net.ipv4.tcp_rmem`'s maximum). Bounds what a client
    /// can park unread in the server's kernel, and what closing its socket
    /// has to free.
    #[arg(long, env = "CHATSUBO_SOCKET_RECV_BUFFER_KB", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(0..=65_536))]
    pub socket_recv_buffer_kb: u32,

    /// Milliseconds a client has to send a request's headers, counted from
    /// the connection's start (or from the end of its previous request);
    /// slower clients are disconnected (slowloris guard).
    #[arg(long, env = "CHATSUBO_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10000,
          value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub http_header_timeout_ms: u64,

    /// Milliseconds an accepted WebSocket upgrade has to complete before the
    /// connection is dropped and its place given back.
    #[arg(long, env = "CHATSUBO_WS_HANDSHAKE_TIMEOUT_MS", default_value_t = 10000,
          value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub ws_handshake_timeout_ms: u64,

    /// Seconds a WebSocket connection may stay open without ever joining a
    /// room before it is closed with 1008 (fractions allowed; 0: never).
    /// A connection that joined once and then left is not closed by this rule.
    #[arg(long, env = "CHATSUBO_JOIN_TIMEOUT_SECS", default_value = "30",
          value_parser = parse_seconds)]
    pub join_timeout_secs: Duration,

    /// Days of session history kept; older sessions, events and counters are deleted in the background.
    #[arg(long, env = "CHATSUBO_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub retention_days: u32,

    /// Megabytes of page cache of the session store.
    #[arg(long, env = "CHATSUBO_STORE_CACHE_MB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub store_cache_mb: u64,

    /// Milliseconds between flushes of the session store: the most history a kill -9 can lose.
    #[arg(long, env = "CHATSUBO_FLUSH_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub flush_interval_ms: u64,

    /// Analytics events waiting for the store before new ones are dropped (and counted).
    #[arg(long, env = "CHATSUBO_ANALYTICS_QUEUE", default_value_t = 65536,
          value_parser = clap::value_parser!(u64).range(16..=10_000_000))]
    pub analytics_queue: u64,

    #[command(flatten)]
    pub edge: EdgeConfig,

    #[command(flatten)]
    pub ice: IceConfig,

    #[command(flatten)]
    pub adapters: AdaptersConfig,
}

/// How often the log file rotates.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogRotation {
    Hourly,
    Daily,
}

impl Config {
    /// The defaults, as if started with no flags and no environment.
    pub fn defaults() -> Self {
        // Parse with an empty environment view: clap reads `env` itself, so
        // build from the argument defaults directly.
        let mut cmd = <Self as clap::CommandFactory>::command();
        for arg in cmd
            .get_arguments()
            .map(|a| a.get_id().clone())
            .collect::<Vec<_>>()
        {
            cmd = cmd.mut_arg(arg, |a| a.env(None::<&str>));
        }
        let matches = cmd.get_matches_from(["chatsubo"]);
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).expect("defaults parse")
    }

    /// The heartbeat interval as a duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// The resume grace period.
    pub fn resume_grace(&self) -> Duration {
        self.resume_grace_secs
    }

    /// The time a client has to send a request's headers.
    pub fn http_header_timeout(&self) -> Duration {
        Duration::from_millis(self.http_header_timeout_ms)
    }

    /// The time an accepted WebSocket upgrade has to complete.
    pub fn ws_handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.ws_handshake_timeout_ms)
    }

    /// How long a connection may stay without joining; `None`: forever.
    pub fn join_timeout(&self) -> Option<Duration> {
        (!self.join_timeout_secs.is_zero()).then_some(self.join_timeout_secs)
    }

    /// The receive buffer to ask for on client sockets; `None`: the kernel's.
    pub fn socket_recv_buffer(&self) -> Option<u32> {
        (self.socket_recv_buffer_kb > 0).then_some(self.socket_recv_buffer_kb * 1024)
    }

    /// The largest accepted message in bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes as usize
    }

    /// [`Config::validate`], then reads what the configuration names (the
    /// TURN secret): what a server needs before it starts. One line on error.
    pub fn prepare(&mut self) -> Result<(), String> {
        self.validate()?;
        self.ice.load_secret()
    }

    /// Checks the rules that join several flags; the message is one line.
    pub fn validate(&self) -> Result<(), String> {
        if self.rate_limit_burst < 1 {
            return Err("--rate-limit-burst must be at least 1".into());
        }
        if self.max_connections_per_ip > self.max_connections {
            return Err(format!(
                "--max-connections-per-ip ({}) cannot exceed --max-connections ({})",
                self.max_connections_per_ip, self.max_connections
            ));
        }
        Ok(())
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("'{text}' must be between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_table() {
        let c = Config::defaults();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.log_dir, PathBuf::from("./logs"));
        assert_eq!(c.log_rotation, LogRotation::Daily);
        assert_eq!(c.log_max_files, 14);
        assert_eq!(c.log_level, None);
        assert_eq!(c.otlp_endpoint, None);
        assert_eq!(c.max_room_size, 10);
        assert_eq!(c.resume_grace(), Duration::from_secs(30));
        assert_eq!(c.heartbeat_interval_ms, 15000);
        assert_eq!(c.max_message_bytes, 65536);
        assert_eq!(c.api_token, None);
        assert_eq!(c.rate_limit_per_sec, 50);
        assert_eq!(c.rate_limit_burst, 200);
        assert_eq!(c.max_connections, 10000);
        assert_eq!(c.max_connections_per_ip, 256);
        assert_eq!(c.retention_days, 30);
        assert_eq!(c.store_cache_mb, 64);
        assert_eq!(c.flush_interval_ms, 1000);
        assert_eq!(c.analytics_queue, 65536);
        assert_eq!(c.max_http_connections, 4096);
        assert_eq!(c.socket_recv_buffer_kb, 64);
        assert_eq!(c.http_header_timeout(), Duration::from_secs(10));
        assert_eq!(c.ws_handshake_timeout(), Duration::from_secs(10));
        assert_eq!(c.join_timeout(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::try_parse_from(["chatsubo", "--max-room-size", "0"]).is_err());
        assert!(Config::try_parse_from(["chatsubo", "--resume-grace-secs", "-1"]).is_err());
        assert!(Config::try_parse_from(["chatsubo", "--listen", "nowhere"]).is_err());
        assert!(Config::try_parse_from(["chatsubo", "--retention-days", "0"]).is_err());
        assert!(Config::try_parse_from(["chatsubo", "--store-cache-mb", "x"]).is_err());
        assert!(Config::try_parse_from(["chatsubo", "--flush-interval-ms", "5"]).is_err());
        assert!(Config::try_parse_from(["chatsubo", "--analytics-queue", "1"]).is_err());
        assert!(Config::try_parse_from(["chatsubo", "--http-header-timeout-ms", "0"]).is_err());
        assert!(Config::try_parse_from(["chatsubo", "--max-http-connections", "0"]).is_err());
        let c = Config::try_parse_from(["chatsubo", "--join-timeout-secs", "0"]).unwrap();
        assert_eq!(c.join_timeout(), None);
        let c = Config::try_parse_from(["chatsubo", "--resume-grace-secs", "0.25"]).unwrap();
        assert_eq!(c.resume_grace(), Duration::from_millis(250));
        let c = Config::try_parse_from([
            "chatsubo",
            "--max-connections",
            "10",
            "--max-connections-per-ip",
            "20",
        ])
        .unwrap();
        assert!(c.validate().is_err());
    }
}
