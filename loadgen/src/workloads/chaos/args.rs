//! The flags of the chaos workload, and how the report records them.

use serde_json::{Value, json};

use crate::server::ServerArgs;

/// Settings of the chaos workload.
#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// kill -9 cycles.
    #[arg(long, default_value_t = 20)]
    pub cycles: usize,
    /// Clients (peers), in rooms of `room_size`.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Peers per room.
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Relays a second, all clients together, each to a random room mate.
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// Seconds of load after everyone is back (and before the first kill),
    /// to which up to `kill_jitter_secs` is added at random. Longer than
    /// the flush window, so that every resume is on disk when the kill comes.
    #[arg(long, default_value_t = 3.0)]
    pub load_secs: f64,
    /// Most seconds added at random to each load phase (the kill lands
    /// anywhere in the server's flush and alive-marker cycles).
    #[arg(long, default_value_t = 1.0)]
    pub kill_jitter_secs: f64,
    /// The server's --resume-grace-secs.
    #[arg(long, default_value_t = 30.0)]
    pub resume_grace_secs: f64,
    /// The server's --flush-interval-ms: what a kill -9 may lose.
    #[arg(long, default_value_t = 1000)]
    pub flush_interval_ms: u64,
    /// Seconds every client has to be back after a start (less than the grace).
    #[arg(long, default_value_t = 20.0)]
    pub resume_timeout_secs: f64,
    /// Milliseconds between a client's connection attempts while the server
    /// is away, plus up to as much again at random.
    #[arg(long, default_value_t = 50)]
    pub retry_ms: u64,
    /// Bytes of each relay's data.
    #[arg(long, default_value_t = 400)]
    pub payload_bytes: usize,
    /// Connections being opened at once for the first joins.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Short sessions a second besides the clients (connect, join, close,
    /// in rooms of their own), so that sessions are also welcomed in the
    /// last moments before each kill and the flush window is checked at
    /// its edge; 0: none.
    #[arg(long, default_value_t = 100)]
    pub churn_rate: u32,
}

/// The settings as the report's `args`.
pub fn json_args(args: &ChaosArgs) -> Value {
    json!({
        "cycles": args.cycles,
        "clients": args.clients,
        "room_size": args.room_size,
        "rate": args.rate,
        "load_secs": args.load_secs,
        "kill_jitter_secs": args.kill_jitter_secs,
        "resume_grace_secs": args.resume_grace_secs,
        "flush_interval_ms": args.flush_interval_ms,
        "resume_timeout_secs": args.resume_timeout_secs,
        "retry_ms": args.retry_ms,
        "payload_bytes": args.payload_bytes,
        "churn_rate": args.churn_rate,
        "server_cpu": args.server.server_cpu,
    })
}
