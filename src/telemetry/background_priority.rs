//! Trace export yields the CPU to signaling.
//!
//! Exporting spans costs CPU (turning them into protobuf, gRPC), and on a
//! small container the export threads share cores with the runtime that
//! relays. Under Linux's default policy the batch thread, woken for each
//! batch of spans, held the core for milliseconds in the middle of the
//! relays, and their latency showed it.
//!
//! So the export threads (the SDK's batch thread and `otlp-export`) run
//! under `SCHED_IDLE`: they get a core only when nothing else wants it. On
//! a core that relays are saturating, the export queue fills and its spans
//! are dropped and counted (`chatsubo_spans_dropped_total{reason="queue_full"}`),
//! as the telemetry contract allows; the relays are not delayed.
//!
//! A thread may always lower its own policy, also in an unprivileged
//! container; if the kernel refuses anyway, the thread runs on as it was.

use std::cell::Cell;

thread_local! {
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Puts the calling thread under `SCHED_IDLE`, once per thread (later
/// calls are a thread-local read). Linux only; elsewhere it does nothing.
pub fn yield_to_signaling() {
    LOWERED.with(|lowered| {
        if !lowered.replace(true) {
            lower_this_thread();
        }
    });
}

#[cfg(target_os = "linux")]
fn lower_this_thread() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(
            event = "export_priority_unchanged",
            error = %std::io::Error::last_os_error(),
            "the trace export thread keeps its scheduling policy"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_thread() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's scheduling policy (`SCHED_*`).
    fn policy_of_this_thread() -> i32 {
        // SAFETY: no arguments but the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn a_lowered_thread_runs_under_sched_idle_and_others_do_not() {
        let lowered = std::thread::spawn(|| {
            yield_to_signaling();
            yield_to_signaling();
            policy_of_this_thread()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, libc::SCHED_IDLE);
        let other = std::thread::spawn(policy_of_this_thread).join().unwrap();
        assert_eq!(other, libc::SCHED_OTHER);
    }
}
