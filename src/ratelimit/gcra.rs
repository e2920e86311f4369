//! GCRA, the generic cell rate algorithm (docs/rate-limits.md, "Algorithm"): a
//! bucket is one number, its theoretical arrival time (TAT). Pure: time comes
//! in as an argument, in microseconds, so tests decide at exact instants and
//! the Redis script (`global.rs`) computes the same thing from the same inputs.
//!
//! With `T` the emission interval (the period divided by the rate) and `τ =
//! (burst - 1)·T` the tolerance, a request at `now` is allowed when `now ≥
//! max(TAT, now) - τ`, and then `TAT = max(TAT, now) + T`. A fresh bucket
//! allows `burst` requests at one instant, then one every `T`.

use crate::policy::RateLimit;

/// The parameters of one limit, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// `T`: the time one request costs.
    interval: u64,
    /// `τ = (burst - 1)·T`: how far ahead of `now` the TAT may run.
    tolerance: u64,
    burst: u32,
}

/// What a bucket says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; `remaining` more would be allowed at this instant, and the
    /// bucket is full again after `reset` µs.
    Allowed { remaining: u32, reset: u64 },
    /// Over the limit: the next request is allowed after `retry_after` µs, the
    /// bucket is full again after `reset` µs.
    Limited { retry_after: u64, reset: u64 },
}

impl Gcra {
    pub fn new(interval_micros: u64, burst: u32) -> Gcra {
        let interval = interval_micros.max(1);
        let burst = burst.max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst - 1)),
            burst,
        }
    }

    pub fn of(limit: &RateLimit) -> Gcra {
        Gcra::new(limit.rate.interval_micros(), limit.burst)
    }

    pub fn interval(&self) -> u64 {
        self.interval
    }

    pub fn tolerance(&self) -> u64 {
        self.tolerance
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The time a whole burst takes to come back: `burst·T` µs (the `w` of
    /// `RateLimit-Policy`).
    pub fn window(&self) -> u64 {
        self.tolerance.saturating_add(self.interval)
    }

    /// Decides a request at `now` (µs) against a bucket whose TAT is `tat`
    /// (`None`: a fresh bucket). Returns the verdict and the TAT to store, if
    /// any: the new one when allowed; when refused, none (a refused request
    /// costs nothing) unless the stored one was beyond the window, which is
    /// then stored clamped, so the bucket refills from there.
    pub fn check(&self, stored: Option<u64>, now: u64) -> (Verdict, Option<u64>) {
        let tat = self.clamp(stored, now);
        let allow_at = tat.saturating_sub(self.tolerance);
        if now < allow_at {
            let verdict = Verdict::Limited {
                retry_after: allow_at - now,
                reset: tat - now,
            };
            return (verdict, Some(tat).filter(|_| stored > Some(tat)));
        }
        let new_tat = tat.saturating_add(self.interval);
        (self.allowed(new_tat - now), Some(new_tat))
    }

    /// A stored TAT as this limit reads it at `now`: never before `now` (an
    /// idle bucket is full, not fuller) and never more than a window ahead —
    /// what no request under this limit can have left behind, so a TAT written
    /// under a slower rate (before a reload) or at a clock that since stepped
    /// back is read as an empty bucket, not as a lock-out. The Redis script
    /// does the same.
    pub fn clamp(&self, tat: Option<u64>, now: u64) -> u64 {
        tat.map_or(now, |tat| tat.clamp(now, now.saturating_add(self.window())))
    }

    /// The verdict of an allow that left the bucket full again after `reset`
    /// µs (what the Redis script answers; clamped to the window, whatever
    /// Redis said).
    pub fn allowed(&self, reset: u64) -> Verdict {
        let reset = reset.min(self.window());
        let remaining = self.window().saturating_sub(reset) / self.interval;
        Verdict::Allowed {
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset,
        }
    }

    /// The verdict of a refusal as Redis reported it, clamped: the wait is
    /// never more than one interval, the reset never more than the window.
    pub fn limited(&self, retry_after: u64, reset: u64) -> Verdict {
        Verdict::Limited {
            retry_after: retry_after.min(self.interval),
            reset: reset.min(self.window()),
        }
    }
}

/// Whole seconds, rounded up: `Retry-After` and the `t`/`w` of the headers.
pub fn ceil_secs(micros: u64) -> u64 {
    micros.div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Rate, RatePeriod};

    const MS: u64 = 1_000;
    const S: u64 = 1_000_000;
    /// An arbitrary instant (µs), far from zero.
    const T0: u64 = 1_700_000_000 * S;

    /// Runs requests at the given instants (ms after T0) and returns which were allowed.
    fn run(gcra: &Gcra, at_ms: &[u64]) -> Vec<bool> {
        let mut tat = None;
        at_ms
            .iter()
            .map(|ms| {
                let (verdict, new_tat) = gcra.check(tat, T0 + ms * MS);
                tat = new_tat.or(tat);
                matches!(verdict, Verdict::Allowed { .. })
            })
            .collect()
    }

    #[test]
    fn a_burst_at_one_instant_then_the_steady_rate() {
        // 20/s, burst 40: 40 at once, the 41st refused; one more every 50 ms.
        let gcra = Gcra::new(50 * MS, 40);
        let mut tat = None;
        for i in 0..40 {
            let (verdict, new_tat) = gcra.check(tat, T0);
            assert_eq!(
                verdict,
                Verdict::Allowed {
                    remaining: 39 - i,
                    reset: u64::from(i + 1) * 50 * MS
                }
            );
            tat = new_tat;
        }
        let (verdict, unchanged) = gcra.check(tat, T0);
        assert_eq!(
            verdict,
            Verdict::Limited {
                retry_after: 50 * MS,
                reset: 2 * S
            }
        );
        assert_eq!(unchanged, None, "a refused request costs nothing");
        // One millisecond early is still too early; at 50 ms exactly, one more.
        assert!(matches!(
            gcra.check(tat, T0 + 49 * MS).0,
            Verdict::Limited {
                retry_after: 1_000,
                ..
            }
        ));
        let (verdict, tat) = gcra.check(tat, T0 + 50 * MS);
        assert_eq!(
            verdict,
            Verdict::Allowed {
                remaining: 0,
                reset: 2 * S
            }
        );
        assert!(matches!(
            gcra.check(tat, T0 + 50 * MS).0,
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn steady_rate_to_the_millisecond() {
        // 10/s, burst 1: one every 100 ms, never at 99.
        let gcra = Gcra::new(100 * MS, 1);
        assert_eq!(
            run(&gcra, &[0, 99, 100, 199, 200, 300, 301, 400]),
            [true, false, true, false, true, true, false, true]
        );
    }

    #[test]
    fn an_idle_bucket_fills_up_to_its_burst_and_no_further() {
        let gcra = Gcra::new(100 * MS, 3);
        // Three at 0, then idle for 10 s: three again (not 100), then refused.
        assert_eq!(
            run(&gcra, &[0, 0, 0, 0, 10_000, 10_000, 10_000, 10_000]),
            [true, true, true, false, true, true, true, false]
        );
        // Half refilled: at 150 ms after a burst of three, one token back (100 ms), not two.
        assert_eq!(
            run(&gcra, &[0, 0, 0, 150, 150]),
            [true, true, true, true, false]
        );
    }

    #[test]
    fn retry_after_and_reset_round_up_to_whole_seconds() {
        // 1/m, burst 1: after one request, 60 s to wait; 1 ms later, 59.999 s → 60.
        let gcra = Gcra::new(60 * S, 1);
        let (_, tat) = gcra.check(None, T0);
        let (verdict, _) = gcra.check(tat, T0 + MS);
        assert_eq!(
            verdict,
            Verdict::Limited {
                retry_after: 60 * S - MS,
                reset: 60 * S - MS
            }
        );
        assert_eq!(ceil_secs(60 * S - MS), 60);
        assert_eq!(ceil_secs(60 * S), 60);
        assert_eq!(ceil_secs(60 * S + 1), 61);
        assert_eq!(ceil_secs(1), 1, "a microsecond is a whole second to wait");
        assert_eq!(ceil_secs(0), 0);
    }

    #[test]
    fn rates_and_default_bursts() {
        let rate = |text| Rate::parse(text).unwrap();
        assert_eq!(rate("20/s").interval_micros(), 50 * MS);
        assert_eq!(rate("3/s").interval_micros(), 333_334, "rounded up");
        assert_eq!(rate("5/m").interval_micros(), 12 * S);
        assert_eq!(rate("100/h").interval_micros(), 36 * S);
        assert_eq!(rate("20/s").default_burst(), 20);
        assert_eq!(rate("90/m").default_burst(), 1, "1.5/s rounds down");
        assert_eq!(rate("120/m").default_burst(), 2);
        assert_eq!(rate("5/h").default_burst(), 1, "at least 1");
        assert_eq!(
            rate("1000000/s").interval_micros(),
            1,
            "one per microsecond"
        );
        // 3/s never lets a fourth through within one second: 333.334 ms apart
        // at least (each allow at a whole millisecond restarts from there).
        let gcra = Gcra::new(rate("3/s").interval_micros(), 1);
        assert_eq!(
            run(&gcra, &[0, 333, 334, 667, 668, 1001, 1002]),
            [true, false, true, false, true, false, true]
        );
        assert_eq!(rate("7/s").period, RatePeriod::Second);
    }

    #[test]
    fn the_window_is_a_whole_burst() {
        assert_eq!(Gcra::new(50 * MS, 40).window(), 2 * S);
        assert_eq!(Gcra::new(100 * MS, 10).window(), S);
        assert_eq!(Gcra::new(12 * S, 1).window(), 12 * S);
    }

    #[test]
    fn a_tat_beyond_the_window_is_read_as_an_empty_bucket() {
        // Written under 1/h (a TAT an hour ahead), read after a reload to 10/s
        // burst 2: refused only until the new window allows, not for an hour.
        let gcra = Gcra::new(100 * MS, 2);
        let stale = Some(T0 + 3_600 * S);
        assert_eq!(
            gcra.check(stale, T0).0,
            Verdict::Limited {
                retry_after: 100 * MS,
                reset: 200 * MS
            }
        );
        let clamped = gcra.check(stale, T0).1;
        assert_eq!(clamped, Some(T0 + 200 * MS), "stored clamped");
        let (verdict, tat) = gcra.check(clamped, T0 + 100 * MS);
        assert_eq!(
            verdict,
            Verdict::Allowed {
                remaining: 0,
                reset: 200 * MS
            }
        );
        assert_eq!(tat, Some(T0 + 300 * MS));
        // Garbage far ahead (a clock that stepped back by a day): the same.
        assert_eq!(gcra.clamp(Some(u64::MAX), T0), T0 + 200 * MS);
        assert_eq!(
            gcra.clamp(Some(T0 - S), T0),
            T0,
            "a past TAT is a full bucket"
        );
        assert_eq!(gcra.clamp(None, T0), T0);
    }

    #[test]
    fn what_redis_reports_is_clamped_to_the_window() {
        let gcra = Gcra::new(100 * MS, 2);
        assert_eq!(
            gcra.limited(9_000_000_000_000 * S, 9_000_000_000_000 * S),
            Verdict::Limited {
                retry_after: 100 * MS,
                reset: 200 * MS
            }
        );
        assert_eq!(
            gcra.allowed(u64::MAX),
            Verdict::Allowed {
                remaining: 0,
                reset: 200 * MS
            }
        );
    }

    #[test]
    fn a_clock_that_goes_back_never_adds_tokens() {
        let gcra = Gcra::new(100 * MS, 2);
        let (_, tat) = gcra.check(None, T0 + S);
        let (_, tat) = gcra.check(tat, T0 + S);
        // A replica whose clock is a second behind sees the bucket as emptier, not fuller.
        assert!(matches!(gcra.check(tat, T0).0, Verdict::Limited { .. }));
    }
}
