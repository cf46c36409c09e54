//! What the server tells its operators: the metrics registry (and, with the
//! observability work, logging and trace export).

pub mod metrics;

pub use metrics::Metrics;
