//! `chatsubo`: parse the configuration, start logging and trace export,
//! serve until SIGTERM or SIGINT, then flush spans and log lines.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clap::error::ErrorKind;
use tokio::signal::unix::{SignalKind, signal};

use chatsubo::Config;

/// jemalloc: a connection's life is many small allocations freed soon
/// after, often on another thread (frames, log lines, store records),
/// which it serves for less than glibc's allocator at about the same
/// memory per idle connection (mimalloc was as fast and took a fifth more).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let mut config = match Config::try_parse() {
        Ok(config) => config,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            err.exit()
        }
        Err(err) => {
            // One line, no usage dump: clap's first line names the flag and value.
            let text = err.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("chatsubo: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    if let Err(message) = config.prepare() {
        eprintln!("chatsubo: {message}");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The gRPC exporter's channel runs on this runtime: build it inside.
    let telemetry = {
        let _inside = runtime.enter();
        match chatsubo::telemetry::init(&config) {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("chatsubo: {err:#}");
                return ExitCode::FAILURE;
            }
        }
    };
    let (result, _log_writers) = runtime.block_on(async {
        let result = serve(config).await;
        if let Err(err) = &result {
            chatsubo::telemetry::log_server_error("chatsubo stopped with an error", err.as_ref());
        }
        // Spans still queued are exported before the process ends; the log
        // writers flush when `_log_writers` drops, at the end of main.
        (result, telemetry.shutdown().await)
    });
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chatsubo: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = chatsubo::server::bind(config.listen, config.socket_recv_buffer())
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    chatsubo::run(listener, config, shutdown_signal()).await
}

async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!(event = "signal", signal = "SIGTERM", "SIGTERM received"),
        _ = int.recv() => tracing::info!(event = "signal", signal = "SIGINT", "SIGINT received"),
    }
}
