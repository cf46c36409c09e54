//! Limits on what one client can take: connections in total and per address,
//! and a per-connection message rate.

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
/// Longest a rate-limited connection goes unread after a strike.
pub const MAX_READ_PAUSE: Duration = Duration::from_millis(50);

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerAddress,
}

impl Refused {
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
    /// [`MAX_READ_PAUSE`]): a flood then waits in the client's socket
    /// instead of costing the server a parse and an answer per message.
    Limited(Duration),
    /// Over the rate too often: close the connection with 1008.
    Abuse,
}

/// The clock of every connection's bucket. Making a `QuantaClock` runs
/// `cpuid`, which traps to the hypervisor on a VM: once per process, not
/// once per connection (it was 4.6% of the server's CPU under churn).
static CLOCK: LazyLock<QuantaClock> = LazyLock::new(QuantaClock::default);

/// A per-connection token bucket plus a count of recent violations.
pub struct Throttle {
    bucket: DefaultDirectRateLimiter,
    strikes: u32,
    window_start: Instant,
}

impl Throttle {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second.max(1)).expect("non-zero");
        let burst = NonZeroU32::new(burst.max(1)).expect("non-zero");
        Throttle {
            bucket: RateLimiter::direct_with_clock(
                Quota::per_second(per_second).allow_burst(burst),
                CLOCK.clone(),
            ),
            strikes: 0,
            window_start: Instant::now(),
        }
    }

    pub fn check(&mut self) -> Verdict {
        let wait = match self.bucket.check() {
            Ok(()) => return Verdict::Allow,
            Err(not_until) => not_until.wait_time_from(self.bucket.clock().now()),
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
            Verdict::Limited(wait.min(MAX_READ_PAUSE))
        }
    }
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
            assert_eq!(t.check(), Verdict::Allow);
        }
        for _ in 0..ABUSE_STRIKES {
            match t.check() {
                Verdict::Limited(pause) => {
                    assert!(pause > Duration::ZERO && pause <= MAX_READ_PAUSE)
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(t.check(), Verdict::Abuse);
    }
}
