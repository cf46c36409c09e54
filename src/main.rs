//! `chatsubo`: parse the configuration, start logging, serve until SIGTERM
//! or SIGINT.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clap::error::ErrorKind;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use chatsubo::Config;

fn main() -> ExitCode {
    let config = match Config::try_parse() {
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
    if let Err(message) = config.validate() {
        eprintln!("chatsubo: {message}");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(cause = ?err, "chatsubo stopped with an error");
            eprintln!("chatsubo: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
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
