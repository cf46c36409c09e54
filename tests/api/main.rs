//! Integration tests: the real server on 127.0.0.1:0, real sockets. A
//! module per surface of the server; a folder has a file per part, listed
//! in its mod.rs.

mod helpers;

// The signaling protocol, and clients that abuse the connection.
mod hostile;
mod signaling;

// Foreign clients, unmodified, on the protocols the server also speaks.
mod adapters;

// What is stored and how it lasts: the /api answers, schema migrations,
// restarts on the same data directory, a store that fails.
mod analytics;
mod migration;
mod restart;
mod storage;

// Operating the server: its command line, HTTP surface, logs, metrics and
// traces.
mod cli;
mod edge;
mod http;
mod logs;
mod metrics;
mod traces;
