//! Integration tests: the real server on 127.0.0.1:0, real sockets. A
//! module per surface of the server; a folder has a file per part, listed
//! in its mod.rs.

mod helpers;

// The signaling protocol, and clients that abuse the connection; the TURN
// credentials it hands out, against a real coturn.
mod hostile;
mod signaling;
mod turn;

// The protocols the server also speaks (PeerJS, matchbox), with their
// own clients, unmodified.
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
