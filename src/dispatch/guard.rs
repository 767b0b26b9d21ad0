//! Protection of Vietnam Post, per process: a request rate, a pause on
//! `Retry-After`, and a circuit breaker.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::telemetry::Metrics;
use crate::telemetry::metrics::UpstreamLabels;

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
    /// the half-open probe), and a token of the rate available.
    pub async fn permit(&self) {
        loop {
            let wait = self.try_permit(Instant::now());
            match wait {
                None => return,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }

    /// `None` when the call may go now, else how long to wait before asking again.
    fn try_permit(&self, now: Instant) -> Option<Duration> {
        let mut s = self.state.lock().expect("guard lock");
        if let Some(until) = s.paused_until {
            if now < until {
                return Some(until - now);
            }
            s.paused_until = None;
        }
        match s.breaker {
            Breaker::Open { until } if now < until => return Some(until - now),
            Breaker::Open { .. } => s.breaker = Breaker::HalfOpen { probing: false },
            Breaker::HalfOpen { probing: true } => return Some(Duration::from_millis(100)),
            _ => {}
        }
        let elapsed = now.saturating_duration_since(s.refilled_at).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.per_second).min(self.per_second);
        s.refilled_at = now;
        if s.tokens < 1.0 {
            return Some(Duration::from_secs_f64((1.0 - s.tokens) / self.per_second));
        }
        s.tokens -= 1.0;
        if let Breaker::HalfOpen { probing: false } = s.breaker {
            s.breaker = Breaker::HalfOpen { probing: true };
        }
        None
    }

    /// Records how a permitted call went.
    pub fn record(&self, result: CallResult) {
        let now = Instant::now();
        let mut s = self.state.lock().expect("guard lock");
        match result {
            CallResult::Answered => s.breaker = Breaker::Closed { failures: 0 },
            CallResult::Failed { retry_after } => {
                if let Some(d) = retry_after {
                    let until = now + d;
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
            assert_eq!(g.try_permit(Instant::now()), None);
            g.record(CallResult::Failed { retry_after: None });
        }
        assert!(g.is_open());
        assert!(g.try_permit(Instant::now()).is_some(), "open: no calls");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(g.try_permit(Instant::now()), None, "one probe");
        assert!(g.try_permit(Instant::now()).is_some(), "only one probe");
        g.record(CallResult::Failed { retry_after: None });
        assert!(
            g.try_permit(Instant::now()).is_some(),
            "a failed probe reopens"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(g.try_permit(Instant::now()), None);
        g.record(CallResult::Answered);
        assert!(!g.is_open());
        assert_eq!(g.try_permit(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_every_call() {
        let g = guard(1000);
        g.record(CallResult::Failed {
            retry_after: Some(Duration::from_secs(7)),
        });
        let wait = g.try_permit(Instant::now()).expect("paused");
        assert!(wait > Duration::from_secs(6));
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(g.try_permit(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_holds_one_second_of_calls() {
        let g = guard(5);
        for _ in 0..5 {
            assert_eq!(g.try_permit(Instant::now()), None);
        }
        assert!(g.try_permit(Instant::now()).is_some());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(g.try_permit(Instant::now()), None);
    }
}
