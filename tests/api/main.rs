//! Integration tests: the real server on 127.0.0.1:0, real sockets.

mod analytics;
mod cli;
mod helpers;
mod hostile;
mod http;
mod logs;
mod metrics;
mod migration;
mod restart;
mod signaling;
mod storage;
mod traces;
