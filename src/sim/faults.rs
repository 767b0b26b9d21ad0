//! The faults the simulator injects, changeable while it runs, and the counts
//! of what it did.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Injected faults. Rates are probabilities from 0.0 to 1.0; missing JSON
/// keys take the defaults (no faults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// HTTP 500 before doing anything.
    pub error_rate: f64,
    /// HTTP 429 with `Retry-After: 1` before doing anything.
    pub rate_limit_rate: f64,
    /// Added to every answer.
    pub latency_ms: u64,
    /// A uniform random extra of up to this much on top of `latency_ms`.
    pub latency_jitter_ms: u64,
    /// CreateOrder creates the order, then answers 500 or drops the connection.
    pub lost_answer_rate: f64,
    /// The connection is reset once the request is read, before any byte of
    /// the answer. CreateOrder creates the order first; other calls do nothing.
    pub reset_rate: f64,
    /// The status line and headers are written, then the connection closes
    /// with none of the body that `Content-Length` promised. CreateOrder
    /// creates the order first; other calls do nothing.
    pub half_answer_rate: f64,
    /// The call does its work and answers normally, `slow_answer_ms` late.
    pub slow_answer_rate: f64,
    /// How late a slow answer comes; above the client's timeout, it has gone.
    pub slow_answer_ms: u64,
    /// A 200 whose body is a proxy's HTML page, not JSON. CreateOrder creates
    /// the order first; other calls do nothing.
    pub garbage_answer_rate: f64,
    /// A new order appears in GetListOrder after a uniform random delay of up
    /// to this much, on top of [`SimConfig::list_lag`](super::SimConfig::list_lag).
    pub listing_delay_ms: u64,
    /// How long a token is accepted after login.
    pub token_ttl_ms: u64,
    /// A delivered webhook POST is sent once more, identical.
    pub duplicate_webhook_rate: f64,
    /// A webhook record is held back and sent after the next POST.
    pub reorder_webhook_rate: f64,
    /// A webhook record spells `orderHdrId`/`originalId`; tracking entries
    /// spell `createHour`.
    pub key_variant_rate: f64,
    /// Most records (possibly of several orders) in one webhook POST.
    pub batch_size: usize,
    /// When false, status changes are never posted (only polling sees them).
    pub webhooks_enabled: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            latency_ms: 0,
            latency_jitter_ms: 0,
            lost_answer_rate: 0.0,
            reset_rate: 0.0,
            half_answer_rate: 0.0,
            slow_answer_rate: 0.0,
            slow_answer_ms: 3000,
            garbage_answer_rate: 0.0,
            listing_delay_ms: 0,
            token_ttl_ms: 3_600_000,
            duplicate_webhook_rate: 0.0,
            reorder_webhook_rate: 0.0,
            key_variant_rate: 0.0,
            batch_size: 1,
            webhooks_enabled: true,
        }
    }
}

impl Faults {
    /// What is wrong with these faults, naming the field.
    pub fn check(&self) -> Result<(), String> {
        for (name, rate) in self.rates() {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0.0 and 1.0"));
            }
        }
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if self.token_ttl_ms == 0 {
            return Err("token_ttl_ms must be at least 1".into());
        }
        Ok(())
    }

    /// The same faults with every value brought into its range.
    pub fn normalized(mut self) -> Self {
        for rate in [
            &mut self.error_rate,
            &mut self.rate_limit_rate,
            &mut self.lost_answer_rate,
            &mut self.reset_rate,
            &mut self.half_answer_rate,
            &mut self.slow_answer_rate,
            &mut self.garbage_answer_rate,
            &mut self.duplicate_webhook_rate,
            &mut self.reorder_webhook_rate,
            &mut self.key_variant_rate,
        ] {
            *rate = if rate.is_nan() {
                0.0
            } else {
                rate.clamp(0.0, 1.0)
            };
        }
        self.batch_size = self.batch_size.max(1);
        self.token_ttl_ms = self.token_ttl_ms.max(1);
        self
    }

    /// How long a token lives.
    pub fn token_ttl(&self) -> Duration {
        Duration::from_millis(self.token_ttl_ms)
    }

    /// How long a slow answer is held back.
    pub fn slow_answer(&self) -> Duration {
        Duration::from_millis(self.slow_answer_ms)
    }

    fn rates(&self) -> [(&'static str, f64); 10] {
        [
            ("error_rate", self.error_rate),
            ("rate_limit_rate", self.rate_limit_rate),
            ("lost_answer_rate", self.lost_answer_rate),
            ("reset_rate", self.reset_rate),
            ("half_answer_rate", self.half_answer_rate),
            ("slow_answer_rate", self.slow_answer_rate),
            ("garbage_answer_rate", self.garbage_answer_rate),
            ("duplicate_webhook_rate", self.duplicate_webhook_rate),
            ("reorder_webhook_rate", self.reorder_webhook_rate),
            ("key_variant_rate", self.key_variant_rate),
        ]
    }
}

/// What the simulator has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Calls per endpoint (`CreateOrder`, `GetListOrder`, …), faults included.
    pub calls: BTreeMap<String, u64>,
    /// Answers replaced by an injected 500.
    pub errors_injected: u64,
    /// Answers replaced by an injected 429.
    pub rate_limits_injected: u64,
    /// Orders created whose answer was lost.
    pub lost_answers_injected: u64,
    /// Connections reset after the request was read, before any answer byte.
    pub resets_injected: u64,
    /// Answers cut after their headers.
    pub half_answers_injected: u64,
    /// Answers held back by `slow_answer_ms`.
    pub slow_answers_injected: u64,
    /// 200 answers whose body was an HTML page instead of JSON.
    pub garbage_answers_injected: u64,
    /// Orders created with a non-zero random listing delay.
    pub listing_delays_injected: u64,
    /// GetListOrder answers that left out an existing order not yet listed.
    pub listings_missing_orders: u64,
    /// Calls refused with 401 for a missing, unknown or expired token.
    pub unauthorized: u64,
    /// Logins refused for wrong credentials.
    pub logins_refused: u64,
    /// Orders created.
    pub orders_created: u64,
    /// Webhook POSTs attempted, retries and duplicates included.
    pub webhook_posts: u64,
    /// Records in webhook POSTs the receiver accepted (2xx).
    pub webhook_records: u64,
    /// Webhook POSTs that failed (non-2xx or no answer) and were retried.
    pub webhook_failures: u64,
    /// Records never posted because webhooks were off.
    pub webhooks_dropped: u64,
    /// Webhook POSTs sent a second time.
    pub duplicates_injected: u64,
    /// Records held back and sent after a later POST.
    pub reorders_injected: u64,
    /// Records sent with the variant key spellings.
    pub key_variants_injected: u64,
}

/// How an answer is spoilt, drawn once per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerFault {
    Reset,
    HalfAnswer,
    Garbage,
    Slow(Duration),
}

impl AnswerFault {
    /// Whether the endpoint does its work before the answer is spoilt; a
    /// CreateOrder always does, so its answer is ambiguously lost.
    pub fn lets_work_happen(self, endpoint: &str) -> bool {
        matches!(self, Self::Slow(_)) || endpoint == "CreateOrder"
    }

    /// Counts the fault in the stats.
    pub fn count(self, stats: &mut SimStats) {
        match self {
            Self::Reset => stats.resets_injected += 1,
            Self::HalfAnswer => stats.half_answers_injected += 1,
            Self::Garbage => stats.garbage_answers_injected += 1,
            Self::Slow(_) => stats.slow_answers_injected += 1,
        }
    }
}

impl SimStats {
    /// Calls made to `endpoint` (e.g. `"CreateOrder"`).
    pub fn calls_to(&self, endpoint: &str) -> u64 {
        self.calls.get(endpoint).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_fault_rates_are_checked_and_normalized() {
        let faults = Faults {
            reset_rate: 1.5,
            half_answer_rate: -0.1,
            slow_answer_rate: f64::NAN,
            garbage_answer_rate: 2.0,
            ..Faults::default()
        };
        assert_eq!(
            faults.check(),
            Err("reset_rate must be between 0.0 and 1.0".into())
        );
        let n = faults.normalized();
        assert_eq!(
            (
                n.reset_rate,
                n.half_answer_rate,
                n.slow_answer_rate,
                n.garbage_answer_rate
            ),
            (1.0, 0.0, 0.0, 1.0)
        );
        assert_eq!(n.check(), Ok(()));
    }

    #[test]
    fn missing_keys_take_no_network_faults() {
        let f: Faults = serde_json::from_str(r#"{"reset_rate": 0.5}"#).unwrap();
        assert_eq!(f.reset_rate, 0.5);
        assert_eq!(
            (
                f.half_answer_rate,
                f.slow_answer_rate,
                f.garbage_answer_rate
            ),
            (0.0, 0.0, 0.0)
        );
        assert_eq!((f.slow_answer_ms, f.listing_delay_ms), (3000, 0));
    }

    #[test]
    fn only_a_slow_answer_lets_calls_other_than_create_order_work() {
        for fault in [
            AnswerFault::Reset,
            AnswerFault::HalfAnswer,
            AnswerFault::Garbage,
        ] {
            assert!(fault.lets_work_happen("CreateOrder"));
            assert!(!fault.lets_work_happen("orderCancel"));
        }
        let slow = AnswerFault::Slow(Duration::from_secs(1));
        assert!(slow.lets_work_happen("orderCancel"));
        let mut stats = SimStats::default();
        slow.count(&mut stats);
        AnswerFault::Reset.count(&mut stats);
        assert_eq!((stats.slow_answers_injected, stats.resets_injected), (1, 1));
    }
}
