//! `chatsubo-loadgen`: Chatsubo's load generator. It speaks Chatsubo's
//! protocol and, for side-by-side runs, matchbox_server's and
//! peerjs-server's, and runs one workload (idle, relay or churn) against a
//! server on this machine, or one that starts its own Chatsubo server
//! (chaos: kill -9 cycles; flood: one room flooding), printing a table and
//! writing JSON. It exits non-zero when a workload's hard expectation fails.
//!
//! It is built to run on one core (`taskset -c 1`): a current-thread
//! runtime, Nagle off, relays fed and flushed in batches per socket.

mod client;
mod http;
mod protocols;
mod report;
mod server;
mod stats;
mod workloads;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use stats::Proc;
use workloads::Target;

/// Load generator for Chatsubo, matchbox_server and peerjs-server.
#[derive(Parser, Debug)]
#[command(name = "chatsubo-loadgen", version, about)]
struct Args {
    /// Protocol the server speaks: chatsubo, matchbox or peerjs.
    #[arg(long, default_value = "chatsubo")]
    protocol: String,
    /// Path the protocol's endpoints sit under: `/matchbox` or `/peerjs`
    /// to load Chatsubo's adapters with the matchbox or peerjs protocol.
    #[arg(long, default_value = "")]
    path_prefix: String,
    /// The server's address; loopback only.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The server's process id, for its CPU time and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's name in reports (default: the protocol's name).
    #[arg(long)]
    label: Option<String>,
    /// Where to write the JSON results.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runtime threads: 1 is a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// N joined connections in rooms; server memory per connection.
    Idle(workloads::idle::IdleArgs),
    /// Open-loop relays at stepped rates; latency and CPU per message.
    Relay(workloads::relay::RelayArgs),
    /// Connect, welcome, join, close, repeated by many workers.
    Churn(workloads::churn::ChurnArgs),
    /// kill -9 cycles of its own server under load; resumes and the store checked.
    Chaos(workloads::chaos::ChaosArgs),
    /// One room floods, the others relay; their latency in both phases.
    Flood(workloads::flood::FloodArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        eprintln!("chatsubo-loadgen: only loopback addresses are allowed as targets");
        return ExitCode::from(2);
    }
    let Some(protocol) = protocols::by_name(&args.protocol, &args.path_prefix) else {
        eprintln!(
            "chatsubo-loadgen: unknown protocol '{}' with path prefix '{}' (one of {}; chatsubo takes none)",
            args.protocol,
            args.path_prefix,
            protocols::NAMES.join(", ")
        );
        return ExitCode::from(2);
    };
    if let Some(pid) = args.server_pid
        && Proc::Pid(pid).sample().is_none()
    {
        eprintln!("chatsubo-loadgen: no process {pid} to watch");
        return ExitCode::from(2);
    }
    client::epoch();
    let target = Arc::new(Target {
        label: args.label.clone().unwrap_or_else(|| args.protocol.clone()),
        protocol,
        addr: args.addr,
        server: args.server_pid.map(Proc::Pid),
        run_id: format!("{:x}", std::process::id()),
    });
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = runtime.expect("tokio runtime");
    let workload = args.workload;
    let report = runtime.block_on(async move {
        let run = async move {
            match workload {
                Workload::Idle(w) => workloads::idle::run(target, w).await,
                Workload::Relay(w) => workloads::relay::run(target, w).await,
                Workload::Churn(w) => workloads::churn::run(target, w).await,
                Workload::Chaos(w) => workloads::chaos::run(target, w).await,
                Workload::Flood(w) => workloads::flood::run(target, w).await,
            }
        };
        // Interrupted, the workload is dropped: a server it started is killed.
        tokio::select! {
            report = run => Some(report),
            signal = stop_signal() => {
                eprintln!("chatsubo-loadgen: {signal}: stopping");
                None
            }
        }
    });
    // Drop the connections' tasks before reporting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    let Some(mut report) = report else {
        return ExitCode::from(130);
    };
    report.set("loadgen_threads", serde_json::json!(args.threads));
    report.print_table();
    if let Some(path) = &args.json {
        if let Err(err) = report.write_json(path) {
            eprintln!("chatsubo-loadgen: cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
        println!("  JSON: {}", path.display());
    }
    if report.failures().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// SIGINT or SIGTERM, by name.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
