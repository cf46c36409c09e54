//! Limits on what one client can take: connections in total and per address,
//! a per-connection message rate, and a per-room relay budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, QuantaClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;

/// Rate-limited messages allowed within [`ABUSE_WINDOW`] before the
/// connection is closed with 1008.
pub const ABUSE_STRIKES: u32 = 50;
/// The window in which strikes are counted.
pub const ABUSE_WINDOW: Duration = Duration::from_secs(10);
/// Longest a rate-limited connection goes unread after one of its first
/// [`STRIKES_PER_DOUBLING`] strikes in the window.
pub const MAX_READ_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause of all, reached by a connection that keeps striking. Chosen
/// so that [`ABUSE_STRIKES`] strikes always fit in [`ABUSE_WINDOW`] (at most
/// 10 × 50 + 10 × 100 + 30 × 150 ms = 6 s), so that abuse still ends in 1008.
pub const MAX_ABUSE_PAUSE: Duration = Duration::from_millis(150);
/// Strikes in the window after which the pause doubles (up to three times).
pub const STRIKES_PER_DOUBLING: u32 = 10;

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerAddress,
}

impl Refused {
    pub const ALL: [Refused; 2] = [Refused::Total, Refused::PerAddress];

    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerAddress => "per_ip",
        }
    }
}

#[derive(Default)]
struct Counts {
    total: u32,
    by_address: HashMap<IpAddr, u32>,
}

/// Open-connection caps, total and per client address. IPv6 addresses are
/// grouped by their /64 prefix, since one client commonly holds a whole /64.
pub struct ConnectionLimits {
    max_total: u32,
    max_per_address: u32,
    counts: Mutex<Counts>,
}

/// Held for the life of a connection; gives its place back on drop.
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    key: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: u32, max_per_address: u32) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_address,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Takes a place for a connection from `address`, or says which cap is full.
    pub fn try_acquire(self: &Arc<Self>, address: IpAddr) -> Result<ConnectionPermit, Refused> {
        let key = address_key(address);
        let mut counts = self.counts.lock();
        if counts.total >= self.max_total {
            return Err(Refused::Total);
        }
        let per = counts.by_address.entry(key).or_insert(0);
        if *per >= self.max_per_address {
            return Err(Refused::PerAddress);
        }
        *per += 1;
        counts.total += 1;
        Ok(ConnectionPermit {
            limits: self.clone(),
            key,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> u32 {
        self.counts.lock().total
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock();
        counts.total -= 1;
        if let Some(per) = counts.by_address.get_mut(&self.key) {
            *per -= 1;
            if *per == 0 {
                counts.by_address.remove(&self.key);
            }
        }
    }
}

fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// What the rate limiter says of one inbound message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the rate: answer `RATE_LIMITED`, and read nothing more from
    /// the connection for this long (until its next token, at most
    /// [`MAX_READ_PAUSE`]; doubled after every [`STRIKES_PER_DOUBLING`]
    /// strikes in the window, up to [`MAX_ABUSE_PAUSE`]): a flood then waits
    /// in the client's socket instead of costing the server a parse and an
    /// answer per message, and a flooder that goes on is read ever less
    /// often until it is closed.
    Limited(Duration, Over),
    /// Over the rate too often: close the connection with 1008.
    Abuse,
}

/// Which limit a message went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    /// The connection's own rate.
    Connection,
    /// The relay budget of its room, shared by all of the room's members.
    Room,
}

/// The clock of every connection's bucket. Making a `QuantaClock` runs
/// `cpuid`, which traps to the hypervisor on a VM: once per process, not
/// once per connection.
static CLOCK: LazyLock<QuantaClock> = LazyLock::new(QuantaClock::default);

/// A per-connection token bucket plus a count of recent violations.
pub struct Throttle {
    bucket: DefaultDirectRateLimiter,
    /// Time for one token to come back.
    interval: Duration,
    strikes: u32,
    window_start: Instant,
}

impl Throttle {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let quota = quota(per_second, burst);
        Throttle {
            bucket: RateLimiter::direct_with_clock(quota, CLOCK.clone()),
            interval: quota.replenish_interval(),
            strikes: 0,
            window_start: Instant::now(),
        }
    }

    /// Takes one message from the connection's bucket and, for a relay,
    /// one from its room's budget. Going over either is a strike; a strike
    /// over the room's budget pauses reading for at least one of the
    /// connection's own intervals, so that a member cannot be answered
    /// faster than its own rate.
    pub fn check(&mut self, room: Option<&RoomBudget>) -> Verdict {
        let (wait, over) = match self.bucket.check() {
            Ok(()) => match room.map(RoomBudget::check) {
                None | Some(Ok(())) => return Verdict::Allow,
                Some(Err(wait)) => (wait.max(self.interval), Over::Room),
            },
            Err(not_until) => (
                not_until.wait_time_from(self.bucket.clock().now()),
                Over::Connection,
            ),
        };
        let now = Instant::now();
        if now.duration_since(self.window_start) > ABUSE_WINDOW {
            self.window_start = now;
            self.strikes = 0;
        }
        self.strikes += 1;
        if self.strikes > ABUSE_STRIKES {
            Verdict::Abuse
        } else {
            Verdict::Limited(read_pause(wait, self.strikes), over)
        }
    }
}

/// How long to leave a connection unread after its `strike`th strike in the
/// window, when its next token is `wait` away: a client that slips over its
/// rate now and then waits for one token; one that keeps flooding is read
/// ever less often (its reads, refusals and reconnects are what a flood
/// costs the other rooms).
fn read_pause(wait: Duration, strike: u32) -> Duration {
    let first = wait.min(MAX_READ_PAUSE);
    let doublings = (strike.saturating_sub(1) / STRIKES_PER_DOUBLING).min(3);
    // `first` is at most MAX_READ_PAUSE, below the cap: never shortened.
    (first * (1 << doublings)).min(MAX_ABUSE_PAUSE)
}

/// What all the seats of one room may relay together: the per-connection
/// rate and burst times the room's size. A room whose members each keep to
/// their own rate never meets it; a member who reconnects, though, brings a
/// fresh per-connection burst each time, and the room's budget is what
/// stops a flood made of reconnects from costing more than a full room of
/// flooders that stay connected.
pub struct RoomBudget {
    bucket: DefaultDirectRateLimiter,
    per_second: u32,
    burst: u32,
}

impl RoomBudget {
    /// One connection's `per_second` and `burst`, times the room's `seats`.
    pub fn new(per_second: u32, burst: u32, seats: u32) -> Self {
        let per_second = per_second.saturating_mul(seats);
        let burst = burst.saturating_mul(seats);
        RoomBudget {
            bucket: RateLimiter::direct_with_clock(quota(per_second, burst), CLOCK.clone()),
            per_second,
            burst,
        }
    }

    /// Takes one relay from the budget, or says how long until the next.
    pub fn check(&self) -> Result<(), Duration> {
        self.bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.bucket.clock().now()))
    }

    /// Relays a second the room's peers may make together.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Relays the room's peers may make at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// A token bucket's quota; zero counts as one.
fn quota(per_second: u32, burst: u32) -> Quota {
    let per_second = NonZeroU32::new(per_second.max(1)).expect("non-zero");
    let burst = NonZeroU32::new(burst.max(1)).expect("non-zero");
    Quota::per_second(per_second).allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_release() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = limits.try_acquire(a).unwrap();
        let _p2 = limits.try_acquire(a).unwrap();
        assert_eq!(limits.try_acquire(a).err(), Some(Refused::PerAddress));
        let _p3 = limits.try_acquire(b).unwrap();
        assert_eq!(limits.try_acquire(b).err(), Some(Refused::Total));
        drop(p1);
        assert!(limits.try_acquire(a).is_ok());
    }

    #[test]
    fn ipv6_is_grouped_by_prefix() {
        let limits = ConnectionLimits::new(10, 1);
        let _p = limits.try_acquire("2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(
            limits.try_acquire("2001:db8::2".parse().unwrap()).err(),
            Some(Refused::PerAddress)
        );
        assert!(
            limits
                .try_acquire("2001:db8:0:1::1".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn throttle_allows_the_burst_then_limits_then_calls_abuse() {
        let mut t = Throttle::new(1, 5);
        for _ in 0..5 {
            assert_eq!(t.check(None), Verdict::Allow);
        }
        for strike in 1..=ABUSE_STRIKES {
            match t.check(None) {
                Verdict::Limited(pause, Over::Connection) => {
                    let most = if strike <= STRIKES_PER_DOUBLING {
                        MAX_READ_PAUSE
                    } else {
                        MAX_ABUSE_PAUSE
                    };
                    assert!(
                        pause > Duration::ZERO && pause <= most,
                        "{strike}: {pause:?}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(t.check(None), Verdict::Abuse);
    }

    #[test]
    fn the_pause_grows_with_the_strikes_and_abuse_still_fits_the_window() {
        let ms = Duration::from_millis;
        // At the default 50 a second a token is 20 ms away.
        assert_eq!(read_pause(ms(20), 1), ms(20));
        assert_eq!(read_pause(ms(20), 10), ms(20));
        assert_eq!(read_pause(ms(20), 11), ms(40));
        assert_eq!(read_pause(ms(20), 21), ms(80));
        assert_eq!(read_pause(ms(20), 31), ms(150));
        assert_eq!(read_pause(ms(20), 50), ms(150));
        // A token close by is still waited for in full; a far one is capped.
        assert_eq!(read_pause(ms(1), 45), ms(8));
        assert_eq!(read_pause(Duration::from_secs(1), 1), MAX_READ_PAUSE);
        assert_eq!(read_pause(Duration::from_secs(1), 50), MAX_ABUSE_PAUSE);
        // However slow the rate, the strikes that end in 1008 fit the window.
        for wait in [ms(1), ms(20), ms(50), Duration::from_secs(60)] {
            let all: Duration = (1..=ABUSE_STRIKES).map(|s| read_pause(wait, s)).sum();
            assert!(all < ABUSE_WINDOW, "{wait:?}: {all:?}");
        }
    }

    #[test]
    fn a_fresh_connection_brings_no_fresh_burst_to_a_spent_room() {
        let room = RoomBudget::new(1, 3, 2);
        let (mut first, mut second, mut third) = (
            Throttle::new(1, 3),
            Throttle::new(1, 3),
            Throttle::new(1, 3),
        );
        for _ in 0..3 {
            assert_eq!(first.check(Some(&room)), Verdict::Allow);
            assert_eq!(second.check(Some(&room)), Verdict::Allow);
        }
        // The third has a full bucket of its own; the room has none left.
        // Its pause is at least its own interval (one second), capped.
        assert_eq!(
            third.check(Some(&room)),
            Verdict::Limited(MAX_READ_PAUSE, Over::Room)
        );
        // Messages that relay nothing do not touch the room's budget.
        assert_eq!(third.check(None), Verdict::Allow);
    }

    #[test]
    fn a_room_budget_is_its_seats_times_one_connection() {
        let budget = RoomBudget::new(1, 3, 4);
        for _ in 0..12 {
            assert_eq!(budget.check(), Ok(()));
        }
        match budget.check() {
            // Four seats at one a second: the next relay is at most 250 ms away.
            Err(wait) => assert!(wait > Duration::ZERO && wait <= Duration::from_millis(250)),
            Ok(()) => panic!("the budget allowed more than its burst"),
        }
    }
}
