//! chaos: crash cycles under load. The workload owns the server: it puts
//! `clients` peers in rooms, has them relay at a steady rate, and each cycle
//! kills the server with SIGKILL, starts it again on the same data directory
//! and port, and has every client reconnect and resume with its latest
//! resume token (docs/protocol.md, "Resuming"). At the end it checks the
//! store against every welcome the clients got, then stops the server with
//! SIGTERM and starts it once more, which must find nothing to recover.
//!
//! `driver` runs it from start to report; `cycle` is one kill and comeback;
//! `crowd`, `client` and `churner` are the simulated clients and the short
//! sessions besides them; `store` is the check of `/api/sessions`;
//! `graceful` is the last stop and start; `summary` is the lines under the
//! table; `args` is the flags.

mod args;
mod churner;
mod client;
mod crowd;
mod cycle;
mod driver;
mod graceful;
mod store;
mod summary;

pub use args::ChaosArgs;
pub use driver::run;

use std::time::Duration;

use crate::server::{Server, ServerSpec};

/// Tries to start the server before giving up on a cycle.
const START_ATTEMPTS: usize = 3;
/// Time a start has to answer `/health` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the server and waits until it is ready, up to [`START_ATTEMPTS`]
/// times; each failed try is noted in `errors`.
async fn start_server(spec: &ServerSpec, errors: &mut Vec<String>) -> Option<(Server, Duration)> {
    for _ in 0..START_ATTEMPTS {
        match spec.start() {
            Ok(mut server) => match server.wait_ready(READY_TIMEOUT).await {
                Ok(ready) => return Some((server, ready)),
                Err(err) => errors.push(err),
            },
            Err(err) => errors.push(err),
        }
    }
    None
}
