//! `pump`'s deadlines, all kept by one timer: the heartbeat, the end of a
//! read pause and the join deadline.

use std::time::Duration;

use tokio::time::Instant;

/// `pump`'s deadlines, all kept by its one timer.
pub(super) struct Deadlines {
    /// When the next heartbeat is due.
    pub(super) beat: Instant,
    /// The end of a read pause (reads wait until then).
    pub(super) paused_until: Option<Instant>,
    /// When a connection that has not joined yet is closed.
    pub(super) join: Option<Instant>,
}

/// What was due when `pump`'s timer fired.
pub(super) struct Fired {
    pub(super) join_timeout: bool,
    pub(super) beat: bool,
}

impl Deadlines {
    /// The deadlines of a connection accepted at `connected_at`: the first
    /// heartbeat an interval from now, and the join deadline, if any.
    pub(super) fn start(
        interval: Duration,
        join_timeout: Option<Duration>,
        connected_at: std::time::Instant,
    ) -> Self {
        Deadlines {
            beat: Instant::now() + interval,
            paused_until: None,
            join: join_timeout.map(|timeout| Instant::from_std(connected_at) + timeout),
        }
    }

    /// The soonest deadline still to come.
    pub(super) fn next(&self, joined: bool) -> Instant {
        let join = self.join.filter(|_| !joined);
        [self.paused_until, join]
            .into_iter()
            .flatten()
            .fold(self.beat, std::cmp::min)
    }

    /// Settles every deadline that has passed: a pause that is over ends,
    /// and a due heartbeat is moved an interval on from now (like tokio's
    /// `MissedTickBehavior::Delay`).
    pub(super) fn fire(&mut self, now: Instant, joined: bool, interval: Duration) -> Fired {
        if self.paused_until.is_some_and(|until| now >= until) {
            self.paused_until = None;
        }
        let beat = now >= self.beat;
        if beat {
            self.beat = now + interval;
        }
        Fired {
            join_timeout: self.join.is_some_and(|at| !joined && now >= at),
            beat,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_timer_keeps_the_heartbeat_the_read_pause_and_the_join_deadline() {
        let interval = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut d = Deadlines {
            beat: at(10),
            paused_until: Some(at(2)),
            join: Some(at(5)),
        };
        assert_eq!(d.next(false), at(2), "the pause ends first");

        let fired = d.fire(at(2), false, interval);
        assert!(!fired.beat && !fired.join_timeout);
        assert_eq!(d.paused_until, None, "the pause is over");
        assert_eq!(d.next(false), at(5), "then the join deadline");
        assert_eq!(d.next(true), at(10), "which a joined peer does not have");

        assert!(d.fire(at(5), false, interval).join_timeout);
        assert!(!d.fire(at(5), true, interval).join_timeout);

        // A heartbeat fired late is due again an interval after it fired.
        let fired = d.fire(at(12), true, interval);
        assert!(fired.beat && !fired.join_timeout);
        assert_eq!(d.beat, at(22));
        assert_eq!(d.next(true), at(22));
        assert!(
            !d.fire(at(12), true, interval).beat,
            "not twice for one interval"
        );
    }
}
