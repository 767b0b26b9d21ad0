//! The durable retry schedule: a pure function of the attempt number, the
//! clock, randomness and the upstream's `Retry-After`.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// `[retry]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub deadline: Duration,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time.
    RetryAt(Timestamp),
    /// The next attempt would fall after the deadline: give up.
    GiveUp,
}

impl RetryPolicy {
    /// Upper bound of the jittered wait after the `failed_attempts`-th failure:
    /// `min(max, initial × 2^(n-1))`.
    pub fn bound(&self, failed_attempts: u32) -> Duration {
        let exp = failed_attempts.saturating_sub(1).min(63);
        let factor = 1u64 << exp;
        let initial_ms = u64::try_from(self.initial.as_millis()).unwrap_or(u64::MAX);
        let max_ms = u64::try_from(self.max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(initial_ms.saturating_mul(factor).min(max_ms))
    }

    /// When to try again after the `failed_attempts`-th failure.
    ///
    /// `unit_random` is a sample of `[0, 1)`; the wait is
    /// `unit_random × bound`, but at least `retry_after`. The deadline runs from
    /// `started_at` (a job's first attempt, a callback's arrival at the head of
    /// its queue); an attempt that would fall after it is not made.
    pub fn next(
        &self,
        failed_attempts: u32,
        started_at: Timestamp,
        now: Timestamp,
        retry_after: Option<Duration>,
        unit_random: f64,
    ) -> Next {
        let unit = if unit_random.is_finite() {
            unit_random.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let jittered = self.bound(failed_attempts).mul_f64(unit);
        let wait = retry_after.map_or(jittered, |ra| jittered.max(ra));
        let Some(at) = add(now, wait) else {
            return Next::GiveUp;
        };
        match add(started_at, self.deadline) {
            Some(deadline) if at <= deadline => Next::RetryAt(at),
            _ => Next::GiveUp,
        }
    }
}

fn add(ts: Timestamp, d: Duration) -> Option<Timestamp> {
    let d = SignedDuration::try_from(d).ok()?;
    ts.checked_add(d).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(5_000),
            max: Duration::from_millis(3_600_000),
            deadline: Duration::from_secs(172_800),
        }
    }

    fn t0() -> Timestamp {
        Timestamp::from_second(1_764_000_000).unwrap()
    }

    #[test]
    fn bound_doubles_from_initial_to_the_cap() {
        let p = policy();
        assert_eq!(p.bound(1), Duration::from_secs(5));
        assert_eq!(p.bound(2), Duration::from_secs(10));
        assert_eq!(p.bound(3), Duration::from_secs(20));
        assert_eq!(p.bound(10), Duration::from_secs(2560));
        assert_eq!(p.bound(11), Duration::from_secs(3600));
        assert_eq!(p.bound(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn an_attempt_after_the_deadline_is_not_made() {
        let p = policy();
        let late = t0() + SignedDuration::from_secs(172_799);
        assert_eq!(p.next(30, t0(), late, None, 0.99), Next::GiveUp);
        assert_eq!(
            p.next(30, t0(), late, None, 0.0),
            Next::RetryAt(late),
            "a zero wait still fits"
        );
    }

    proptest! {
        #[test]
        fn waits_stay_within_the_bound(n in 1u32..80, elapsed in 0i64..100_000, unit in 0.0f64..1.0) {
            let p = policy();
            let now = t0() + SignedDuration::from_secs(elapsed);
            match p.next(n, t0(), now, None, unit) {
                Next::RetryAt(at) => {
                    let wait = at.duration_since(now);
                    prop_assert!(wait >= SignedDuration::ZERO);
                    prop_assert!(wait.unsigned_abs() <= p.bound(n));
                }
                Next::GiveUp => {
                    // Only when even this wait would cross the deadline.
                    let deadline = t0() + SignedDuration::from_secs(172_800);
                    prop_assert!(now + SignedDuration::try_from(p.bound(n).mul_f64(unit)).unwrap() > deadline);
                }
            }
        }

        #[test]
        fn bound_never_shrinks_and_never_exceeds_the_cap(n in 1u32..200) {
            let p = policy();
            prop_assert!(p.bound(n) <= p.bound(n + 1));
            prop_assert!(p.bound(n) <= p.max);
        }

        #[test]
        fn retry_after_is_honoured_even_beyond_the_cap(n in 1u32..40, ra in 0u64..10_000, unit in 0.0f64..1.0) {
            let p = policy();
            let ra = Duration::from_secs(ra);
            if let Next::RetryAt(at) = p.next(n, t0(), t0(), Some(ra), unit) {
                prop_assert!(at.duration_since(t0()).unsigned_abs() >= ra);
            } else {
                prop_assert!(ra > p.deadline);
            }
        }

        #[test]
        fn nothing_is_scheduled_after_the_deadline(n in 1u32..80, elapsed in 0i64..400_000,
                                                   unit in 0.0f64..1.0, ra in proptest::option::of(0u64..400_000)) {
            let p = policy();
            let now = t0() + SignedDuration::from_secs(elapsed);
            if let Next::RetryAt(at) = p.next(n, t0(), now, ra.map(Duration::from_secs), unit) {
                prop_assert!(at <= t0() + SignedDuration::from_secs(172_800));
            }
        }
    }
}
