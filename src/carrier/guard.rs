//! Protection of Vietnam Post, per process: a request rate, a pause on
//! `Retry-After`, and a circuit breaker.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::telemetry::Metrics;
use crate::telemetry::metrics::UpstreamLabels;

/// The longest pause a `Retry-After` imposes: Vietnam Post's header is read
/// as given (seconds or a date), and a value too large for the clock must
/// not crash the guard (nor stop postal calls for years).
pub const MAX_PAUSE: Duration = Duration::from_secs(24 * 3600);

/// When the breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Consecutive transient failures that open the breaker.
    pub failures_to_open: u32,
    /// How long it stays open before one probe is let through.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures_to_open: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaker {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct State {
    breaker: Breaker,
    paused_until: Option<Instant>,
    tokens: f64,
    refilled_at: Instant,
}

/// How a call went, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// Vietnam Post answered (an order, a listing, or a refusal).
    Answered,
    /// A transient failure; `retry_after` pauses every call of the process.
    Failed { retry_after: Option<Duration> },
}

/// The gate every postal call passes.
#[derive(Debug)]
pub struct PostalGuard {
    state: Mutex<State>,
    per_second: f64,
    breaker: BreakerSettings,
    metrics: Arc<Metrics>,
}

impl PostalGuard {
    pub fn new(per_second: u32, breaker: BreakerSettings, metrics: Arc<Metrics>) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self {
            state: Mutex::new(State {
                breaker: Breaker::Closed { failures: 0 },
                paused_until: None,
                tokens: per_second,
                refilled_at: Instant::now(),
            }),
            per_second,
            breaker,
            metrics,
        }
    }

    /// Waits until a call may be made: no pause, breaker closed (or this is
    /// the half-open probe), and a token of the rate available. The permit
    /// records the call's result; dropped unrecorded (the call was not made),
    /// it gives the half-open probe back.
    pub async fn permit(&self) -> Permit<'_> {
        loop {
            match self.try_permit(Instant::now()) {
                Ok(probe) => {
                    return Permit {
                        guard: self,
                        probe,
                        recorded: false,
                    };
                }
                Err(d) => tokio::time::sleep(d).await,
            }
        }
    }

    /// Waits while calls are paused or the breaker is open, without taking
    /// anything: workers wait here before claiming work, so their leases do
    /// not run down while Vietnam Post is unavailable.
    pub async fn ready(&self) {
        loop {
            let wait = {
                let s = self.state.lock().expect("guard lock");
                let now = Instant::now();
                let paused = s.paused_until.filter(|u| now < *u).map(|u| u - now);
                let open = match s.breaker {
                    Breaker::Open { until } if now < until => Some(until - now),
                    Breaker::HalfOpen { probing: true } => Some(Duration::from_millis(100)),
                    _ => None,
                };
                paused.max(open)
            };
            match wait {
                None => return,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }

    fn release_probe(&self) {
        let mut s = self.state.lock().expect("guard lock");
        if let Breaker::HalfOpen { probing: true } = s.breaker {
            s.breaker = Breaker::HalfOpen { probing: false };
        }
    }

    /// `Ok(is_probe)` when the call may go now, else how long to wait.
    fn try_permit(&self, now: Instant) -> Result<bool, Duration> {
        let mut s = self.state.lock().expect("guard lock");
        if let Some(until) = s.paused_until {
            if now < until {
                return Err(until - now);
            }
            s.paused_until = None;
        }
        match s.breaker {
            Breaker::Open { until } if now < until => return Err(until - now),
            Breaker::Open { .. } => s.breaker = Breaker::HalfOpen { probing: false },
            Breaker::HalfOpen { probing: true } => return Err(Duration::from_millis(100)),
            _ => {}
        }
        let elapsed = now.saturating_duration_since(s.refilled_at).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.per_second).min(self.per_second);
        s.refilled_at = now;
        if s.tokens < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - s.tokens) / self.per_second));
        }
        s.tokens -= 1.0;
        if let Breaker::HalfOpen { probing: false } = s.breaker {
            s.breaker = Breaker::HalfOpen { probing: true };
            return Ok(true);
        }
        Ok(false)
    }

    /// Records how a permitted call went.
    fn record(&self, result: CallResult) {
        let now = Instant::now();
        let mut s = self.state.lock().expect("guard lock");
        match result {
            CallResult::Answered => s.breaker = Breaker::Closed { failures: 0 },
            CallResult::Failed { retry_after } => {
                if let Some(d) = retry_after {
                    let until = now + d.min(MAX_PAUSE);
                    s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
                }
                s.breaker = match s.breaker {
                    Breaker::Closed { failures }
                        if failures + 1 < self.breaker.failures_to_open =>
                    {
                        Breaker::Closed {
                            failures: failures + 1,
                        }
                    }
                    Breaker::Open { until } => Breaker::Open { until },
                    _ => Breaker::Open {
                        until: now + self.breaker.open_for,
                    },
                };
            }
        }
        let open = matches!(s.breaker, Breaker::Open { .. } | Breaker::HalfOpen { .. });
        self.metrics
            .circuit_open
            .get_or_create(&UpstreamLabels { upstream: "postal" })
            .set(i64::from(open));
    }

    /// True while the breaker is not closed.
    pub fn is_open(&self) -> bool {
        !matches!(
            self.state.lock().expect("guard lock").breaker,
            Breaker::Closed { .. }
        )
    }
}

/// Leave to make one postal call; see [`PostalGuard::permit`].
#[must_use = "a permit records the call's result"]
pub struct Permit<'a> {
    guard: &'a PostalGuard,
    probe: bool,
    recorded: bool,
}

impl Permit<'_> {
    /// Records how the call went.
    pub fn record(mut self, result: CallResult) {
        self.recorded = true;
        self.guard.record(result);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            self.guard.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(per_second: u32) -> PostalGuard {
        PostalGuard::new(
            per_second,
            BreakerSettings {
                failures_to_open: 3,
                open_for: Duration::from_secs(10),
            },
            Arc::new(Metrics::new()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_consecutive_failures_probes_and_closes() {
        let g = guard(1000);
        for _ in 0..3 {
            assert_eq!(g.try_permit(Instant::now()), Ok(false));
            g.record(CallResult::Failed { retry_after: None });
        }
        assert!(g.is_open());
        assert!(g.try_permit(Instant::now()).is_err(), "open: no calls");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(g.try_permit(Instant::now()), Ok(true), "one probe");
        assert!(g.try_permit(Instant::now()).is_err(), "only one probe");
        g.record(CallResult::Failed { retry_after: None });
        assert!(
            g.try_permit(Instant::now()).is_err(),
            "a failed probe reopens"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(g.try_permit(Instant::now()), Ok(true));
        g.record(CallResult::Answered);
        assert!(!g.is_open());
        assert_eq!(g.try_permit(Instant::now()), Ok(false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_not_made_is_given_back() {
        let g = guard(1000);
        for _ in 0..3 {
            g.record(CallResult::Failed { retry_after: None });
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        let permit = g.permit().await;
        assert!(g.try_permit(Instant::now()).is_err(), "the probe is out");
        drop(permit);
        // Another worker may probe now; without the give-back every worker
        // would wait for a probe that never reports.
        let again = tokio::time::timeout(Duration::from_secs(1), g.permit()).await;
        assert!(
            again.is_ok(),
            "the breaker stayed half-open with no probe in flight"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ready_waits_out_an_open_breaker_without_taking_the_probe() {
        let g = guard(1000);
        for _ in 0..3 {
            g.record(CallResult::Failed { retry_after: None });
        }
        let waited = tokio::time::timeout(Duration::from_secs(5), g.ready()).await;
        assert!(waited.is_err(), "ready while open");
        tokio::time::advance(Duration::from_secs(10)).await;
        g.ready().await;
        assert_eq!(
            g.try_permit(Instant::now()),
            Ok(true),
            "the probe is still there to take"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_every_call() {
        let g = guard(1000);
        g.record(CallResult::Failed {
            retry_after: Some(Duration::from_secs(7)),
        });
        let wait = g.try_permit(Instant::now()).expect_err("paused");
        assert!(wait > Duration::from_secs(6));
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(g.try_permit(Instant::now()), Ok(false));
    }

    /// Found by fuzzing: `Retry-After: 18446744073709551615` overflowed the
    /// clock, panicking with the guard's lock held (every later call panicked).
    #[tokio::test(start_paused = true)]
    async fn a_huge_retry_after_pauses_for_at_most_a_day() {
        let g = guard(1000);
        g.record(CallResult::Failed {
            retry_after: Some(Duration::from_secs(u64::MAX)),
        });
        let wait = g.try_permit(Instant::now()).expect_err("paused");
        assert!(wait <= MAX_PAUSE && wait > MAX_PAUSE - Duration::from_secs(1));
        tokio::time::advance(MAX_PAUSE).await;
        assert_eq!(g.try_permit(Instant::now()), Ok(false));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_holds_one_second_of_calls() {
        let g = guard(5);
        for _ in 0..5 {
            assert_eq!(g.try_permit(Instant::now()), Ok(false));
        }
        assert!(g.try_permit(Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(g.try_permit(Instant::now()), Ok(false));
    }
}
